# SPDX-License-Identifier: Apache-2.0
"""Heat-map decoding, the one place: logits -> position (patch pixels), covariance, confidence.

Probabilities are a softmax over all cells (and orientation bins) of the level. The mode is the
argmax of the position marginal (orientation bins summed). Sub-pixel refinement fits a parabola to
the log-probability through the argmax and its two neighbours along each axis (exact for a
Gaussian-shaped peak; offset clipped to half a cell; skipped at the border). The covariance is the
second moment of the probability mass inside a square neighbourhood of the mode whose half-size
adapts to the peak's spread (3.5 standard deviations, at least 2 cells), floored at cell^2/12 per
eigenvalue (the quantisation variance of one cell). Patch pixel convention (COMMON): cell (i, j) of
an h x w level over an S-px patch has its centre at ((j + 0.5) S / w, (i + 0.5) S / h).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

_SPREAD_SIGMAS = 3.5


@dataclass
class HeatmapEstimate:
    """Decoded heat map. Positions are continuous patch pixels (u east, v south); ``cov_px`` is the
    2x2 covariance of (u, v) in px^2. ``mass``: probability inside the mode's neighbourhood
    (half-size ``radius_px``); ``confidence`` equals it (the probability that the position lies in
    the chosen mode). ``ambiguity``: mass of the best competing mode outside the neighbourhood
    divided by ``mass`` (0 = unimodal, 1 = a tie). ``heading_deg``: compass heading from the
    orientation bins at the mode (levels with n_ori > 1; bin c = c * 360 / n_ori)."""

    u: float
    v: float
    u_int: float
    v_int: float
    row: int
    col: int
    prob_peak: float
    mass: float
    cov_px: np.ndarray
    confidence: float
    ambiguity: float
    radius_px: float
    second_u: Optional[float] = None
    second_v: Optional[float] = None
    heading_deg: Optional[float] = None
    prob: Optional[np.ndarray] = None  # position probabilities (h, w), summed over orientation bins

    @property
    def std_px(self) -> float:
        """sqrt of the largest covariance eigenvalue (px)."""
        return float(np.sqrt(np.linalg.eigvalsh(self.cov_px)[-1]))


def softmax_all(logits: np.ndarray) -> np.ndarray:
    """Softmax over every entry of ``logits`` (float64 result, same shape)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def _window(i: int, j: int, r: int, h: int, w: int) -> Tuple[slice, slice]:
    return slice(max(i - r, 0), min(i + r + 1, h)), slice(max(j - r, 0), min(j + r + 1, w))


def _moments(p: np.ndarray, win: Tuple[slice, slice], cu: float, cv: float) -> Tuple[float, np.ndarray, np.ndarray]:
    sub = p[win]
    mass = float(sub.sum())
    rows = (np.arange(win[0].start, win[0].stop) + 0.5) * cv
    cols = (np.arange(win[1].start, win[1].stop) + 0.5) * cu
    if mass <= 0:
        return 0.0, np.zeros(2), np.zeros((2, 2))
    wr = sub.sum(axis=1) / mass
    wc = sub.sum(axis=0) / mass
    mu = np.array([wc @ cols, wr @ rows])
    du, dv = cols - mu[0], rows - mu[1]
    cuu = wc @ du**2
    cvv = wr @ dv**2
    cuv = float(du @ (sub.T @ dv)) / mass
    return mass, mu, np.array([[cuu, cuv], [cuv, cvv]])


def _parabola_offset(lm: float, l0: float, lp: float) -> float:
    denom = lm - 2.0 * l0 + lp
    if not np.isfinite(denom) or denom >= 0:
        return 0.0
    return float(np.clip(0.5 * (lm - lp) / denom, -0.5, 0.5))


def _neighbourhood(p: np.ndarray, i: int, j: int, cu: float, cv: float) -> Tuple[int, float, np.ndarray]:
    h, w = p.shape
    r_max = max(2, max(h, w) // 4)
    r = max(2, int(np.ceil(max(h, w) / 32)))
    for _ in range(3):  # grow/shrink the window to the spread it measures; converges in 2-3 steps
        mass, _, cov = _moments(p, _window(i, j, r, h, w), cu, cv)
        sd_cells = np.sqrt(max(np.linalg.eigvalsh(cov)[-1], 0.0)) / min(cu, cv)
        r_new = int(np.clip(np.ceil(_SPREAD_SIGMAS * sd_cells), 2, r_max))
        if r_new == r:
            break
        r = r_new
    mass, _, cov = _moments(p, _window(i, j, r, h, w), cu, cv)
    return r, mass, cov


def decode_heatmap(logits: np.ndarray, patch_size_px: float) -> HeatmapEstimate:
    """Decode one heat map: ``logits`` (h, w) or (n_ori, h, w) over an S = ``patch_size_px`` patch."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"heat map: expected logits (h, w) or (n_ori, h, w), got shape {np.shape(logits)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("heat map: logits contain NaN or infinity")
    n, h, w = x.shape
    cu, cv = float(patch_size_px) / w, float(patch_size_px) / h
    pj = softmax_all(x)
    p = pj.sum(axis=0)
    i, j = (int(k) for k in np.unravel_index(int(np.argmax(p)), p.shape))
    with np.errstate(divide="ignore"):
        lp = np.log(p)
    dj = _parabola_offset(lp[i, j - 1], lp[i, j], lp[i, j + 1]) if 0 < j < w - 1 else 0.0
    di = _parabola_offset(lp[i - 1, j], lp[i, j], lp[i + 1, j]) if 0 < i < h - 1 else 0.0
    r, mass, cov = _neighbourhood(p, i, j, cu, cv)
    evals, evecs = np.linalg.eigh(cov)
    cov = evecs @ np.diag(np.maximum(evals, max(cu, cv) ** 2 / 12.0)) @ evecs.T

    win = _window(i, j, r, h, w)
    rest = p.copy()
    rest[win] = 0.0
    i2, j2 = (int(k) for k in np.unravel_index(int(np.argmax(rest)), p.shape))
    mass2 = float(rest[_window(i2, j2, r, h, w)].sum())

    heading = None
    if n > 1:
        per_bin = pj[(slice(None),) + win].sum(axis=(1, 2))
        ang = np.deg2rad(np.arange(n) * 360.0 / n)
        heading = float(np.rad2deg(np.arctan2(per_bin @ np.sin(ang), per_bin @ np.cos(ang))) % 360.0)
    return HeatmapEstimate(
        u=(j + 0.5 + dj) * cu,
        v=(i + 0.5 + di) * cv,
        u_int=(j + 0.5) * cu,
        v_int=(i + 0.5) * cv,
        row=int(i),
        col=int(j),
        prob_peak=float(p[i, j]),
        mass=mass,
        cov_px=cov,
        confidence=mass,
        ambiguity=mass2 / mass if mass > 0 else float("inf"),
        radius_px=r * max(cu, cv),
        second_u=(j2 + 0.5) * cu,
        second_v=(i2 + 0.5) * cv,
        heading_deg=heading,
        prob=p,
    )


def heading_from_orientation(orientation: np.ndarray, u: float, v: float) -> float:
    """Compass heading (degrees, clockwise from north) read from a model's orientation field
    (2, S, S) = (cos a, sin a), a counter-clockwise from north, at patch pixel (u, v)."""
    o = np.asarray(orientation)
    s = o.shape[-1]
    col = int(np.clip(np.floor(u), 0, s - 1))
    row = int(np.clip(np.floor(v), 0, o.shape[-2] - 1))
    a = np.degrees(np.arctan2(o[1, row, col], o[0, row, col]))
    return float((-a) % 360.0)


def overlay_heatmap(aerial_rgb: np.ndarray, logits: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image: the aerial patch with the heat map's probabilities (sqrt-scaled, jet colour
    map, transparent where near zero) blended on top. ``logits`` (h, w) or (n, h, w)."""
    import cv2

    p = softmax_all(logits)
    if p.ndim == 3:
        p = p.sum(axis=0)
    s = aerial_rgb.shape[:2]
    q = np.sqrt(p / p.max())
    q = cv2.resize(q.astype(np.float32), (s[1], s[0]), interpolation=cv2.INTER_NEAREST)
    colour = cv2.applyColorMap((q * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    a = (alpha * q)[..., None]
    return (aerial_rgb.astype(np.float32) * (1 - a) + colour.astype(np.float32) * a).astype(np.uint8)
