"""Heat-map pictures for people: a colour overlay on the aerial patch, and OccupancyGrid cell values.

Inputs are probability maps (h, w) over a north-up patch (row 0 at the north, see geo.PatchGeoref).
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

FIX_COLOUR = (255, 255, 255)  # RGB: the GNSS fix
ESTIMATE_COLOUR = (0, 255, 0)  # RGB: the refined estimate


def _normalised(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"heat map: expected a 2-D probability map, got shape {p.shape}")
    peak = p.max()
    return p / peak if peak > 0 else np.zeros_like(p)


def heatmap_overlay(patch_rgb: np.ndarray, prob: np.ndarray, fix_px: Optional[Tuple[float, float]] = None,
                    estimate_px: Optional[Tuple[float, float]] = None, alpha: float = 0.6) -> np.ndarray:
    """The aerial patch (RGB uint8 SxSx3) with ``prob`` (any h x w over the patch) as a colour ramp,
    blended in proportion to the probability relative to the peak (low probability leaves the photo
    visible); the GNSS fix drawn as a white cross and the estimate as a green circle, both in
    continuous patch pixels (u east, v south). Returns RGB uint8 SxSx3."""
    if patch_rgb.ndim != 3 or patch_rgb.shape[2] != 3 or patch_rgb.dtype != np.uint8:
        raise ValueError(f"aerial patch: expected RGB uint8 HxWx3, got {patch_rgb.dtype} {patch_rgb.shape}")
    h, w = patch_rgb.shape[:2]
    p = cv2.resize(_normalised(prob).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    ramp = cv2.applyColorMap(np.clip(p * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    ramp = cv2.cvtColor(ramp, cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * np.sqrt(p))[..., None]  # sqrt: keeps the tails of a sharp peak visible
    out = np.ascontiguousarray((patch_rgb.astype(np.float32) * (1 - a) + ramp * a).round().astype(np.uint8))
    size = max(6, h // 24)
    if fix_px is not None:
        cv2.drawMarker(out, (int(round(fix_px[0])), int(round(fix_px[1]))), FIX_COLOUR, cv2.MARKER_CROSS, size, 2)
    if estimate_px is not None:
        cv2.circle(out, (int(round(estimate_px[0])), int(round(estimate_px[1]))), size // 2, ESTIMATE_COLOUR, 2)
    return out


def occupancy_values(prob: np.ndarray) -> np.ndarray:
    """Probability map (h, w), row 0 at the north -> int8 (h, w) cells 0..100 relative to the peak,
    row 0 at the SOUTH (OccupancyGrid order: row-major from the origin at the south-west corner)."""
    return np.ascontiguousarray(np.flipud(np.rint(_normalised(prob) * 100.0)).astype(np.int8))
