# SPDX-License-Identifier: Apache-2.0
"""Localization over the whole drive: a grid-histogram Bayes filter of the vehicle position.

The belief is a probability per cell of a square window of the ground plane in the ``map`` frame
(local ENU at the datum: x east, y north, metres). Row 0 of the array is the NORTH edge and column 0
the WEST edge, as in the north-up aerial patch (u east, v south), so heat maps resample onto it by a
scale and a translation. The window re-centres on the belief's mean by whole cells when the mean
drifts more than an eighth of the window from its centre; mass pushed past the edge is dropped and
the rest renormalised (with a 96 m window the belief is metres wide: nothing of note is lost). The
window's centre is a continuous map position, not tied to a cell lattice: motion moves the window
itself, so the shift is exact to the millimetre with no resampling, and the cells only ever blur.

Steps, all stamped in seconds:

* :meth:`DriveFilter.predict` moves the belief by a displacement (east, north metres) between two
  stamps (odometry integrated by :class:`OdometryBuffer`, or fix speed x IMU heading; the caller
  chooses and says which) and blurs it with the process noise: variance added per step
  ``noise_per_sqrt_m^2 x distance + noise_per_sqrt_s^2 x dt`` (a random walk in distance and in time;
  std after d metres and t seconds = sqrt(a^2 d + b^2 t)). The shift moves the window (exact); the
  blur is a separable kernel with exactly the modelled variance (a 3-tap kernel below 0.6 cell^2,
  a sampled Gaussian above), so the spread after many small steps is what the model says.
* :meth:`DriveFilter.update_gnss`: the fix's likelihood, a mixture ``(1-w) N(fix, C) + w / area``
  (``w`` = ``gnss_outlier_weight``, area = the window's), so that a 30 m multipath jump is explained
  by the flat part and does not drag a confident belief. GNSS errors are correlated over seconds
  (multipath, atmosphere): ``C`` is the fix covariance x max(1, ``gnss_correlation_s`` / dt since
  the last GNSS update), so fixes within one correlation time add up to about one independent one.
* :meth:`DriveFilter.update_heatmap`: the model's position probabilities (S x S, north-up patch)
  raised to ``heatmap_temperature`` (calibrated: bench/calibrate_temperature.py), resampled onto the
  belief grid through the patch's geo-reference, floored at ``likelihood_floor`` x its peak so a
  wrong heat map never zeroes the truth; outside the patch the likelihood is flat (the tempered
  heat map's mean), i.e. the model says nothing there.

Lost track: when the belief's mean and the fix disagree beyond ``lost_chi2`` (squared Mahalanobis
distance under the sum of both covariances) on ``lost_updates`` consecutive GNSS updates spanning at
least ``lost_s`` seconds, the belief is re-initialised from the fix. A step of more than
``max_gap_s`` forward, or a stamp older than the belief by more than ``max_gap_s`` (a bag restarted),
also re-initialises it at the next fix; a slightly older stamp (out of order) is dropped and counted.

Smoothing a recorded drive (offline): :func:`smooth_drive` runs the same filter forward over a drive's
frames and a second one backward in time (negated stamps and displacements: the motion model is a shift and
a symmetric blur, so the reversed step is the same rule), and multiplies, per frame, the forward belief
(every measurement up to and including the frame) with the backward belief predicted to the frame (every
measurement after it): the two-filter smoother, p(x_t | all) ~ p(x_t | z_1..t) p(z_t+1..T | x_t). Every
likelihood (motion noise, GNSS mixture, tempered heat map) is this module's; :class:`BeliefGrid` is a
snapshot of a belief on its window.

numpy + cv2 only (no ROS): the node, the replay and the tests drive it with plain numbers.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum
from typing import Deque, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from xview_loc_ros.geo import LocalENU, PatchGeoref

#: motion sources of :meth:`DriveFilter.predict`, best first
MOTION_SOURCES = ("odom", "fix_speed", "fix_velocity", "none")


class FilterState(str, Enum):
    """Where the filter stands; the value is what diagnostics show."""

    UNINITIALISED = "uninitialised"  # no belief: waiting for a fix (start, after a time gap or a restart)
    REINITIALISED = "reinitialised"  # belief set from a fix, no heat map applied since
    TRACKING = "tracking"  # heat maps applied since the last (re)initialisation; belief agrees with the fix
    LOST = "lost"  # belief and fix disagree beyond lost_chi2 (re-initialised once that persists)


@dataclass(frozen=True)
class FilterParams:
    """Parameters of :class:`DriveFilter` (see the module docstring; metres, seconds)."""

    cell_m: float = 0.5  # grid cell side
    window_m: float = 96.0  # grid side; rounded to whole cells
    noise_odom_per_sqrt_m: float = 0.15  # m / sqrt(m): odometry + IMU heading random walk per metre driven
    noise_fix_speed_per_sqrt_m: float = 0.4  # m / sqrt(m): speed from successive fixes x IMU heading
    noise_fix_velocity_per_sqrt_m: float = 0.8  # m / sqrt(m): fix velocity vector (no heading available)
    noise_per_sqrt_s: float = 0.3  # m / sqrt(s): unmodelled motion, the only noise when motion is unknown
    no_motion_noise_per_sqrt_s: float = 3.0  # m / sqrt(s): no motion source at all (vehicle may move ~3 m/s)
    gnss_outlier_weight: float = 0.05  # mixture weight of the flat (outlier) part of the GNSS likelihood
    gnss_correlation_s: float = 5.0  # GNSS error correlation time: fix covariance x max(1, this / dt)
    heatmap_temperature: float = (
        2.5  # exponent on the heat map's probabilities (calibrated for models/teacher.pt); 0 = ignored
    )
    uniform_mix: float = 1e-3  # share of the belief spread evenly over the window before each heat map (recovery)
    gnss_init_only: bool = False  # ablation: fixes only (re-)initialise; afterwards heat maps and motion alone
    likelihood_floor: float = 1e-3  # heat-map likelihood floor, relative to its peak
    lost_chi2: float = 18.4  # d^2 of (belief mean - fix) beyond which they disagree; 18.4 = chi2(2) 99.99 %
    lost_updates: int = 10  # ... on this many consecutive GNSS updates
    lost_s: float = 3.0  # ... spanning at least this many seconds -> re-initialise from the fix
    max_gap_s: float = 5.0  # a step longer than this (or a stamp this much older) re-initialises
    out_of_order_s: float = 1e-6  # stamps older than the belief by more than this are out of order

    @property
    def cells(self) -> int:
        return max(8, int(round(self.window_m / self.cell_m)))


@dataclass(frozen=True)
class Innovation:
    """How a measurement compared with the predicted belief. ``sigmas``: distance between the
    measurement's position (fix, or heat-map mode) and the predicted mean in standard deviations
    (sqrt of the squared Mahalanobis distance under both covariances); ``log_lr``: log of the
    measurement's likelihood under the predicted belief relative to a flat belief (> 0: the belief
    expected it)."""

    source: str  # "gnss" | "heatmap"
    stamp: float
    sigmas: float
    log_lr: float


@dataclass(frozen=True)
class FilterEstimate:
    """The belief summarised: mean ``east``/``north`` and ``cov_en`` (2x2, m^2) in ``map``; the MAP
    cell's centre ``map_east``/``map_north``; the filter ``state``."""

    stamp: float
    east: float
    north: float
    cov_en: np.ndarray
    map_east: float
    map_north: float
    state: FilterState


class DriveFilter:
    """The grid filter. Not thread-safe: one caller (the node's worker) drives it."""

    def __init__(self, params: FilterParams) -> None:
        self.p = params
        self.n = params.cells
        self.cell = float(params.cell_m)
        self.belief: Optional[np.ndarray] = None  # (n, n) float32, sums to 1; row 0 north
        self.centre = (0.0, 0.0)  # window centre, map east/north metres (moves with the motion)
        self.stamp: Optional[float] = None  # time of the belief
        self.state = FilterState.UNINITIALISED
        self.counts: Counter = Counter()
        self.last_innovation: Optional[Innovation] = None
        self.last_reinit_reason = ""
        self._last_gnss_stamp: Optional[float] = None
        self._disagree: Tuple[int, float] = (0, math.nan)  # consecutive disagreements, stamp of the first
        self._pending_reason = "first_fix"  # why the next fix (re)initialises
        self._cache: Optional[Tuple[float, float, np.ndarray]] = None  # moments of the current belief
        # cell-centre offsets from the window centre: east along columns, north along rows (row 0 north)
        offs = (np.arange(self.n) + 0.5 - self.n / 2.0) * self.cell
        self._x = offs.astype(np.float64)  # east offset of column j
        self._y = -offs.astype(np.float64)  # north offset of row i
        self._x1 = np.stack([np.ones(self.n), offs], axis=1).astype(np.float32)  # (n, 2) for row sums

    # -- state ------------------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return self.belief is not None

    def reset(self, reason: str) -> None:
        """Forget the belief; the next fix re-initialises it (``reason`` is counted then)."""
        self.belief = None
        self._cache = None
        self.state = FilterState.UNINITIALISED
        self._pending_reason = reason
        self._disagree = (0, math.nan)
        self._last_gnss_stamp = None

    def initialise(self, stamp: float, east: float, north: float, cov_en: np.ndarray, reason: str) -> None:
        """Belief = Gaussian at (east, north) with ``cov_en`` (m^2), window centred there."""
        self.centre = (float(east), float(north))
        cov = _regular(cov_en, self.cell)
        g = self._gaussian(east, north, cov)
        s = float(g.sum())
        self.belief = (g / s).astype(np.float32) if s > 0 else np.full((self.n, self.n), 1.0 / self.n**2, np.float32)
        self._cache = None
        self.stamp = stamp
        self.state = FilterState.REINITIALISED
        self.last_reinit_reason = reason
        self.counts[f"reinit_{reason}"] += 1
        self._disagree = (0, math.nan)
        self._last_gnss_stamp = stamp

    def _check_stamp(self, stamp: float, what: str) -> bool:
        """False (and counted) for a measurement older than the belief; resets on a restart."""
        if self.stamp is None or stamp >= self.stamp - self.p.out_of_order_s:
            return True
        if self.stamp - stamp > self.p.max_gap_s:
            self.counts["time_backwards"] += 1
            self.reset("time_backwards")
            self.stamp = None
            return True
        self.counts[f"dropped_out_of_order_{what}"] += 1
        return False

    # -- predict ----------------------------------------------------------------------------------
    def predict(self, stamp: float, delta_en: Tuple[float, float] = (0.0, 0.0), source: str = "none") -> bool:
        """Move the belief to ``stamp`` by ``delta_en`` (east, north metres driven since the belief's
        stamp) from motion ``source`` (one of :data:`MOTION_SOURCES`, which sets the process noise).
        False when nothing was predicted (uninitialised, out of order, or a time gap that re-initialises)."""
        if source not in MOTION_SOURCES:
            raise ValueError(f"motion source must be one of {MOTION_SOURCES}, got {source!r}")
        if not self._check_stamp(stamp, "predict"):
            return False
        if self.belief is None or self.stamp is None:
            self.stamp = stamp
            return False
        dt = stamp - self.stamp
        if dt > self.p.max_gap_s:
            self.counts["time_gap"] += 1
            self.reset("time_gap")
            self.stamp = stamp
            return False
        dt = max(dt, 0.0)
        de, dn = (float(x) for x in delta_en)
        if not (math.isfinite(de) and math.isfinite(dn)):
            de, dn, source = 0.0, 0.0, "none"
        dist = math.hypot(de, dn)
        p = self.p
        per_m = {
            "odom": p.noise_odom_per_sqrt_m,
            "fix_speed": p.noise_fix_speed_per_sqrt_m,
            "fix_velocity": p.noise_fix_velocity_per_sqrt_m,
            "none": 0.0,
        }[source]
        per_s = p.no_motion_noise_per_sqrt_s if source == "none" else p.noise_per_sqrt_s
        var = per_m**2 * dist + per_s**2 * dt  # m^2 per axis
        self._shift_blur(de, dn, var)
        self.stamp = stamp
        self.counts[f"predict_{source}"] += 1
        return True

    def _shift_blur(self, de: float, dn: float, var_m2: float) -> None:
        """Move the belief by (de, dn) metres and blur it by ``var_m2`` per axis. The grid's centre is a
        continuous map position: motion moves the grid (exact, no resampling); the cells only blur. The
        window re-centres on the mean by whole cells (an exact copy) when the mean drifts more than
        window/8 from the centre."""
        assert self.belief is not None
        me, mn, _ = self._moments()  # the blur keeps the mean (up to the edges): no need to recompute
        me, mn = me + de, mn + dn
        self.centre = (self.centre[0] + de, self.centre[1] + dn)
        self._cache = None
        k = _blur_kernel(var_m2 / self.cell**2)
        if k is not None:
            self.belief = cv2.sepFilter2D(self.belief, cv2.CV_32F, k, k, borderType=cv2.BORDER_CONSTANT)
        if not self._normalise("predict"):
            return
        ce, cn = self.centre
        eighth = self.n * self.cell / 8.0
        if abs(me - ce) > eighth or abs(mn - cn) > eighth:
            ix, iy = round((me - ce) / self.cell), round((mn - cn) / self.cell)
            # the window moves ix cells east and iy north: the content moves ix columns west, iy rows south
            self.belief = _shift_whole(self.belief, -ix, iy)
            self.centre = (ce + ix * self.cell, cn + iy * self.cell)
            self._normalise("predict")

    def _normalise(self, what: str, total: Optional[float] = None) -> bool:
        """Scale the belief to sum 1 (``total``: its sum when the caller knows it)."""
        assert self.belief is not None
        s = float(self.belief.sum(dtype=np.float64)) if total is None else total
        if not (s > 0 and math.isfinite(s)):
            # nothing of the belief is left in the window: start again from the next fix
            self.counts[f"degenerate_{what}"] += 1
            self.reset("degenerate")
            return False
        self.belief *= np.float32(1.0 / s)
        self._cache = None
        return True

    # -- updates ----------------------------------------------------------------------------------
    def update_gnss(self, stamp: float, east: float, north: float, cov_en: np.ndarray) -> bool:
        """Apply a fix at (``east``, ``north``) map metres with its 2x2 covariance ``cov_en`` (m^2, as
        the receiver reports it). Initialises an uninitialised filter. False when dropped."""
        if not self._check_stamp(stamp, "gnss"):
            return False
        cov = _regular(cov_en, self.cell)
        if self.belief is None:
            self.initialise(stamp, east, north, cov, self._pending_reason)
            return True
        if self.stamp is not None and stamp > self.stamp:
            self.predict(stamp)  # the caller skipped the prediction: time noise only
            if self.belief is None:  # that step was a time gap
                self.initialise(stamp, east, north, cov, self._pending_reason)
                return True
        me, mn, pc = self._moments()
        d2 = _mahalanobis2(np.array([east - me, north - mn]), pc + cov)
        if self.p.gnss_init_only:  # the ablation "no GNSS after initialisation": seen, not applied
            self.last_innovation = Innovation("gnss", stamp, math.sqrt(max(d2, 0.0)), math.nan)
            self.counts["gnss_ignored"] += 1
            return True
        # log likelihood ratio of the fix under the (Gaussian-approximated) belief vs a flat one
        s_ = pc + cov
        lr = -0.5 * d2 - math.log(2 * math.pi * math.sqrt(_det(s_))) + 2 * math.log(self.n * self.cell)
        self.last_innovation = Innovation("gnss", stamp, math.sqrt(max(d2, 0.0)), lr)
        if d2 > self.p.lost_chi2:
            n, first = self._disagree
            first = stamp if n == 0 else first
            self._disagree = (n + 1, first)
            self.counts["gnss_disagree"] += 1
            if n + 1 >= self.p.lost_updates and stamp - first >= self.p.lost_s:
                self.counts["lost"] += 1
                self.initialise(stamp, east, north, cov, "lost")
                return True
            self.state = FilterState.LOST
        else:
            self._disagree = (0, math.nan)
            if self.state == FilterState.LOST:
                self.state = FilterState.TRACKING
        # correlated GNSS errors: fixes within one correlation time weigh about as much as one
        last = self._last_gnss_stamp
        dt = stamp - last if last is not None else self.p.gnss_correlation_s
        inflate = max(1.0, self.p.gnss_correlation_s / max(dt, 1e-3))
        self._last_gnss_stamp = stamp
        # densities (1/m^2): the Gaussian part integrates to 1 - w over the plane, the flat part to w over
        # the window
        lik = self._gaussian(east, north, cov * inflate, 1.0 - self.p.gnss_outlier_weight)
        lik += np.float32(self.p.gnss_outlier_weight / (self.n * self.cell) ** 2)
        self.belief *= lik
        self.counts["gnss_updates"] += 1
        return self._normalise("gnss")

    def update_heatmap(
        self,
        stamp: float,
        prob: np.ndarray,
        georef: PatchGeoref,
        datum: LocalENU,
        centre_en: Optional[Tuple[float, float]] = None,
    ) -> bool:
        """Apply the model's position probabilities ``prob`` (S x S, row 0 north, over the north-up patch
        of ``georef``) as the likelihood, tempered by ``heatmap_temperature``. ``datum``: the ``map``
        frame. The patch centre is placed in ``map`` by the datum (the tangent-plane rotation between
        the patch centre and the datum is ignored: < 0.01 deg within 1 km); ``centre_en``: that centre
        in ``map`` metres when the caller has it already (a geodetic conversion is 0.1 ms of the
        budget). False when dropped."""
        if not self._check_stamp(stamp, "heatmap"):
            return False
        if self.belief is None:
            self.counts["heatmap_uninitialised"] += 1
            return False
        if self.p.heatmap_temperature == 0.0:  # the ablation "no heat map": a flat likelihood
            self.counts["heatmap_ignored"] += 1
            return False
        if self.stamp is not None and stamp > self.stamp:
            self.predict(stamp)
            if self.belief is None:
                return False
        if centre_en is None:
            pe, pn, _ = (float(x) for x in datum.to_enu(georef.center_lat, georef.center_lon, datum.h0))
        else:
            pe, pn = (float(x) for x in centre_en)
        lik, flat, mode_en, mode_cov = self._heatmap_likelihood(prob, georef.size_px * georef.mpp, pe, pn)
        if lik is None:
            self.counts["heatmap_invalid"] += 1
            return False
        # innovation: the heat map's mode against the predicted belief
        me, mn, pc = self._moments()
        if self.p.uniform_mix > 0:
            # a little prior mass everywhere before each heat map, so that consistent heat maps elsewhere win
            # against a confidently wrong belief (a wrong motion scale, a mode that looked right) within a few
            # frames; applied with the measurement, not the prediction, so it never piles up without one
            self.belief *= np.float32(1.0 - self.p.uniform_mix)
            self.belief += np.float32(self.p.uniform_mix / self.belief.size)
        d2 = _mahalanobis2(np.array([mode_en[0] - me, mode_en[1] - mn]), pc + mode_cov)
        r0, r1, c0, c1 = lik[1]
        sub = self.belief[r0:r1, c0:c1]  # a view: updated in place
        inside = float(sub.sum(dtype=np.float64))
        scaled = lik[0]
        scaled *= np.float32(1.0 / flat)
        # outside the patch the likelihood is flat (1 after scaling): the posterior's sum is the
        # measurement's likelihood under the predicted belief relative to a flat one (the innovation)
        expected = float(np.vdot(sub, scaled)) + (1.0 - inside)
        self.last_innovation = Innovation("heatmap", stamp, math.sqrt(max(d2, 0.0)), math.log(max(expected, 1e-300)))
        sub *= scaled
        self.counts["heatmap_updates"] += 1
        if d2 <= self.p.lost_chi2:
            # the camera confirms the belief: fixes that disagree meanwhile are a GNSS fault (multipath, a jump),
            # not a lost track
            self._disagree = (0, math.nan)
        if not self._normalise("heatmap", expected):
            return False
        if self.state == FilterState.REINITIALISED:
            self.state = FilterState.TRACKING
        return True

    def _heatmap_likelihood(
        self, prob: np.ndarray, extent_m: float, pe: float, pn: float
    ) -> Tuple[Optional[Tuple[np.ndarray, Tuple[int, int, int, int]]], float, Tuple[float, float], np.ndarray]:
        """((likelihood over the grid cells the patch covers, (row0, row1, col0, col1)), flat value
        outside, heat-map mode (east, north) in map, heat-map covariance m^2)."""
        p = np.asarray(prob, dtype=np.float32)
        none = (None, 1.0, (pe, pn), np.eye(2))
        peak = float(p.max()) if p.ndim == 2 and p.size else math.nan  # NaN / inf anywhere shows here
        if p.ndim != 2 or p.shape[0] != p.shape[1] or not (math.isfinite(peak) and peak > 0):
            return none
        s = p.shape[0]
        r = extent_m / s  # heat-map cell, metres
        # tempered, relative to its peak
        lik = np.power(p * np.float32(1.0 / peak), np.float32(self.p.heatmap_temperature))
        # mode and spread of the tempered heat map (for the innovation), before the floor: one product
        # gives the row sums, row-weighted east offsets and their squares
        xs = (np.arange(s) + 0.5 - s / 2.0) * r
        q = (lik @ np.stack([np.ones(s), xs, xs * xs], axis=1).astype(np.float32)).astype(np.float64)
        total = float(q[:, 0].sum())
        me, mn = float(q[:, 1].sum()) / total, float(q[:, 0] @ -xs) / total
        vx = float(q[:, 2].sum()) / total - me * me
        vy = float(q[:, 0] @ xs**2) / total - mn * mn
        k = int(np.argmax(p))
        mode = (pe + float(xs[k % s]), pn - float(xs[k // s]))
        cov = np.diag([max(vx, r * r), max(vy, r * r)])
        # floored so that no heat map zeroes a cell; outside the patch: the mean, "no information"
        np.maximum(lik, np.float32(self.p.likelihood_floor), out=lik)
        flat = float(lik.mean())
        if r < 0.75 * self.cell:  # heat map finer than the grid: average, not sample, onto it
            k_ = max(1, int(round(self.cell / r)))
            size = s // k_
            lik = cv2.resize(lik[: size * k_, : size * k_], (size, size), interpolation=cv2.INTER_AREA)
            s, r = size, r * k_
        # grid rows/cols that overlap the patch
        c = self.cell
        ce, cn = self.centre
        west, north = pe - extent_m / 2.0, pn + extent_m / 2.0
        gx0, gy0 = ce - self.n * c / 2.0, cn + self.n * c / 2.0  # grid west and north edges
        c0 = max(0, int(math.floor((west - gx0) / c)))
        c1 = min(self.n, int(math.ceil((west + extent_m - gx0) / c)))
        r0 = max(0, int(math.floor((gy0 - north) / c)))
        r1 = min(self.n, int(math.ceil((gy0 - north + extent_m) / c)))
        if c1 <= c0 or r1 <= r0:
            return (np.ones((0, 0), np.float32), (0, 0, 0, 0)), flat, mode, cov
        # heat-map pixel of sub-grid cell (j, i): x = (gx0 + (c0 + j + 0.5) c - west) / r - 0.5
        a = c / r
        bx = (gx0 + (c0 + 0.5) * c - west) / r - 0.5
        by = (north - (gy0 - (r0 + 0.5) * c)) / r - 0.5
        m = np.array([[a, 0.0, bx], [0.0, a, by]], np.float64)
        out = cv2.warpAffine(
            lik.astype(np.float32),
            m,
            (c1 - c0, r1 - r0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=flat,
        )
        return (out, (r0, r1, c0, c1)), flat, mode, cov

    # -- estimate ---------------------------------------------------------------------------------
    def _moments(self) -> Tuple[float, float, np.ndarray]:
        """Mean (east, north) and covariance (2x2 m^2) of the belief; the covariance is at least a
        cell's own (cell^2 / 12 per axis). Cached until the belief changes. Two small matrix products
        (BLAS): means first, then the central moments about them (no cancellation in float32)."""
        assert self.belief is not None
        if self._cache is None:
            b = self.belief
            r = b @ self._x1  # (n, 2): row sums, row-weighted east offsets
            py = r[:, 0].astype(np.float64)
            total = float(py.sum())
            mx = float(r[:, 1].sum(dtype=np.float64)) / total
            my = float(py @ self._y) / total
            dx = (self._x - mx).astype(np.float32)
            dy = self._y - my
            q = b @ np.stack([dx, dx * dx], axis=1)  # (n, 2): row-weighted dx, dx^2
            cxx = float(q[:, 1].sum(dtype=np.float64)) / total + self.cell**2 / 12.0
            cyy = float(py @ dy**2) / total + self.cell**2 / 12.0
            cxy = float(q[:, 0].astype(np.float64) @ dy) / total
            self._cache = (self.centre[0] + mx, self.centre[1] + my, np.array([[cxx, cxy], [cxy, cyy]]))
        me, mn, cov = self._cache
        return me, mn, cov.copy()

    def estimate(self) -> Optional[FilterEstimate]:
        """Mean, covariance and MAP cell of the belief; None when uninitialised."""
        if self.belief is None or self.stamp is None:
            return None
        me, mn, cov = self._moments()
        k = int(np.argmax(self.belief))
        i, j = divmod(k, self.n)
        return FilterEstimate(
            self.stamp, me, mn, cov, self.centre[0] + float(self._x[j]), self.centre[1] + float(self._y[i]), self.state
        )

    def belief_grid(self) -> Optional[Tuple[np.ndarray, float, float, float]]:
        """(probabilities (n, n) row 0 north, west edge east m, south edge north m, cell m) for display."""
        if self.belief is None:
            return None
        half = self.n * self.cell / 2.0
        return self.belief.copy(), self.centre[0] - half, self.centre[1] - half, self.cell

    def snapshot(self) -> Optional["BeliefGrid"]:
        """The belief on its window (a copy); None when uninitialised."""
        if self.belief is None or self.stamp is None:
            return None
        return BeliefGrid(self.belief.copy(), (float(self.centre[0]), float(self.centre[1])), self.cell, self.stamp)

    def _gaussian(self, east: float, north: float, cov: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """``scale`` x N((east, north), cov) at the cell centres (densities, 1/m^2; float32 (n, n)),
        separable unless the covariance has a cross term."""
        a, b, c = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
        det = max(a * c - b * b, 1e-300)
        ia, ib, ic = c / det, -b / det, a / det  # the inverse
        dx = (self.centre[0] + self._x - east).astype(np.float32)  # (n,) columns
        dy = (self.centre[1] + self._y - north).astype(np.float32)  # (n,) rows
        ex = np.exp(np.float32(-0.5 * ia) * dx * dx)
        ex *= np.float32(scale / (2 * math.pi * math.sqrt(det)))
        ey = np.exp(np.float32(-0.5 * ic) * dy * dy)
        g = np.multiply.outer(ey, ex)
        if abs(ib) > 1e-12:
            g *= np.exp(np.multiply.outer(np.float32(-ib) * dy, dx))
        return g


@dataclass(frozen=True)
class BeliefGrid:
    """A belief on its window: ``prob`` (n, n) sums to 1, row 0 north, column 0 west; ``centre`` the
    window centre (east, north) in ``map`` metres; ``cell`` metres; ``stamp`` seconds."""

    prob: np.ndarray
    centre: Tuple[float, float]
    cell: float
    stamp: float

    def offsets(self) -> Tuple[np.ndarray, np.ndarray]:
        """East offsets of the columns' and north offsets of the rows' centres from ``centre`` (m)."""
        n = self.prob.shape[0]
        offs = (np.arange(n) + 0.5 - n / 2.0) * self.cell
        return offs, -offs

    def moments(self) -> Tuple[float, float, np.ndarray]:
        """Mean (east, north) in ``map`` and covariance (2x2 m^2, at least a cell's own cell^2 / 12)."""
        p = self.prob.astype(np.float64)
        x, y = self.offsets()
        px, py = p.sum(axis=0), p.sum(axis=1)
        total = float(px.sum())
        mx, my = float(px @ x) / total, float(py @ y) / total
        dx, dy = x - mx, y - my
        cxx = float(px @ dx**2) / total + self.cell**2 / 12.0
        cyy = float(py @ dy**2) / total + self.cell**2 / 12.0
        cxy = float(dy @ p @ dx) / total
        return self.centre[0] + mx, self.centre[1] + my, np.array([[cxx, cxy], [cxy, cyy]])

    def map_cell(self) -> Tuple[float, float]:
        """The most probable cell's centre (east, north) in ``map``."""
        i, j = divmod(int(np.argmax(self.prob)), self.prob.shape[1])
        x, y = self.offsets()
        return self.centre[0] + float(x[j]), self.centre[1] + float(y[i])

    def resampled_to(self, other: "BeliefGrid") -> np.ndarray:
        """This belief's probabilities at the cells of ``other``'s window (bilinear; zero outside this
        window). Both grids must share the cell size."""
        if abs(self.cell - other.cell) > 1e-9 or self.prob.shape != other.prob.shape:
            raise ValueError("belief grids differ in cell size or shape")
        # other's cell (col j, row i) lies at column j + dx, row i + dy of this grid
        dx = (other.centre[0] - self.centre[0]) / self.cell
        dy = (self.centre[1] - other.centre[1]) / self.cell
        n = self.prob.shape[0]
        m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], np.float64)
        return cv2.warpAffine(
            self.prob.astype(np.float32),
            m,
            (n, n),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )


@dataclass(frozen=True)
class SmootherFrame:
    """One frame of a drive for :func:`smooth_drive`; positions in ``map`` metres.

    ``motion_en``: (east, north) metres driven from the previous frame's stamp to this one and its
    ``motion_source`` (:data:`MOTION_SOURCES`; ignored on the first frame). ``fix_en``/``fix_cov_en``: the
    GNSS fix and its 2x2 covariance (m^2), None = no fix. ``prob``: the heat map's probabilities (S x S,
    north-up, row 0 north) over the patch ``georef`` whose centre is ``centre_en`` in ``map``; None = no
    heat map."""

    stamp: float
    motion_en: Tuple[float, float] = (0.0, 0.0)
    motion_source: str = "none"
    fix_en: Optional[Tuple[float, float]] = None
    fix_cov_en: Optional[np.ndarray] = None
    prob: Optional[np.ndarray] = None
    georef: Optional[PatchGeoref] = None
    centre_en: Optional[Tuple[float, float]] = None


def _apply(f: DriveFilter, stamp: float, fr: SmootherFrame, datum: LocalENU) -> None:
    if fr.fix_en is not None and fr.fix_cov_en is not None:
        f.update_gnss(stamp, fr.fix_en[0], fr.fix_en[1], np.asarray(fr.fix_cov_en, float))
    if fr.prob is not None and fr.georef is not None:
        f.update_heatmap(stamp, fr.prob, fr.georef, datum, fr.centre_en)


def smooth_drive(frames: Sequence[SmootherFrame], params: FilterParams, datum: LocalENU) -> List[Optional[BeliefGrid]]:
    """Forward-backward smoothing of one drive (module docstring): per frame the smoothed belief, None
    where neither pass had one (no fix yet). ``frames`` strictly ordered by stamp; a step longer than
    ``params.max_gap_s`` re-initialises both passes there (callers split drives at gaps instead). Where
    the two passes do not overlap at all (a lost track), the forward belief stands."""
    stamps = [float(fr.stamp) for fr in frames]
    for k in range(1, len(stamps)):
        if not stamps[k] > stamps[k - 1]:
            raise ValueError(
                f"smooth_drive: frame {k} stamp {stamps[k]!r} is not after frame {k - 1}'s {stamps[k - 1]!r}"
            )
    for k, fr in enumerate(frames):
        if fr.motion_source not in MOTION_SOURCES:
            raise ValueError(
                f"smooth_drive: frame {k} motion source must be one of {MOTION_SOURCES}, got {fr.motion_source!r}"
            )
        if fr.fix_en is not None and fr.fix_cov_en is None:
            raise ValueError(f"smooth_drive: frame {k} has a fix without its covariance")
    fwd: List[Optional[BeliefGrid]] = []
    f = DriveFilter(params)
    for k, fr in enumerate(frames):
        if k:
            f.predict(fr.stamp, fr.motion_en, fr.motion_source)
        _apply(f, fr.stamp, fr, datum)
        fwd.append(f.snapshot())
    bwd: List[Optional[BeliefGrid]] = [None] * len(frames)
    b = DriveFilter(params)
    for k in range(len(frames) - 1, -1, -1):
        fr = frames[k]
        if k < len(frames) - 1:
            nxt = frames[k + 1]  # the motion from k to k + 1, driven backwards
            b.predict(-fr.stamp, (-nxt.motion_en[0], -nxt.motion_en[1]), nxt.motion_source)
            bwd[k] = b.snapshot()
        _apply(b, -fr.stamp, fr, datum)
    out: List[Optional[BeliefGrid]] = []
    for a, c in zip(fwd, bwd):
        if a is None or c is None:
            out.append(a)
            continue
        prod = a.prob * c.resampled_to(a)
        s = float(prod.sum(dtype=np.float64))
        if not (s > 0 and math.isfinite(s)):
            out.append(a)
            continue
        out.append(BeliefGrid((prod / s).astype(np.float32), a.centre, a.cell, a.stamp))
    return out


def _regular(cov_en: np.ndarray, cell: float) -> np.ndarray:
    """A symmetric 2x2 covariance with eigenvalues at least (cell/2)^2: finer than the grid is the grid."""
    c = np.asarray(cov_en, dtype=np.float64).reshape(2, 2)
    a, b, d = float(c[0, 0]), 0.5 * float(c[0, 1] + c[1, 0]), float(c[1, 1])
    floor = (cell / 2.0) ** 2
    half_tr, root = 0.5 * (a + d), math.hypot(0.5 * (a - d), b)
    lo = half_tr - root
    if lo >= floor:
        return np.array([[a, b], [b, d]])
    evals, evecs = np.linalg.eigh(np.array([[a, b], [b, d]]))
    return evecs @ np.diag(np.maximum(evals, floor)) @ evecs.T


def _det(c: np.ndarray) -> float:
    return max(float(c[0, 0] * c[1, 1] - c[0, 1] * c[1, 0]), 1e-300)


def _blur_kernel(var_cells: float) -> Optional[np.ndarray]:
    """Symmetric 1-D kernel that adds ``var_cells`` (cell^2) of variance: [a, 1 - 2a, a] with 2a = var
    (exact) up to 0.6 cell^2, a sampled Gaussian beyond (its variance is within 1 % of var there);
    None for nothing to add."""
    if var_cells <= 1e-6:
        return None
    if var_cells <= 0.6:
        a = 0.5 * var_cells
        return np.array([a, 1.0 - 2.0 * a, a], np.float32)
    r = int(math.ceil(3.5 * math.sqrt(var_cells)))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * t**2 / var_cells)
    return (g / g.sum()).astype(np.float32)


def _shift_whole(a: np.ndarray, ix: int, iy: int) -> np.ndarray:
    """``a`` moved by ``ix`` columns and ``iy`` rows; cells that enter are zero."""
    h, w = a.shape
    out = np.zeros_like(a)
    if abs(ix) >= w or abs(iy) >= h:
        return out
    out[max(iy, 0) : h + min(iy, 0), max(ix, 0) : w + min(ix, 0)] = a[
        max(-iy, 0) : h + min(-iy, 0), max(-ix, 0) : w + min(-ix, 0)
    ]
    return out


def _mahalanobis2(delta: np.ndarray, cov: np.ndarray) -> float:
    """delta^T cov^-1 delta of a 2-vector (closed form: numpy's solve costs more than the arithmetic)."""
    x, y = float(delta[0]), float(delta[1])
    a, b, d = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    det = a * d - b * b
    if not det > 0:
        return math.inf
    return (d * x * x - 2 * b * x * y + a * y * y) / det


# ---------------------------------------------------------------------------------------------
# Odometry between image stamps
# ---------------------------------------------------------------------------------------------
class OdometryBuffer:
    """Recent wheel/visual odometry samples: (stamp s, forward speed m/s in the child frame, yaw rate
    rad/s counter-clockwise). :meth:`displacement` integrates them between two stamps from a known ENU
    yaw. Thread-safe (samples arrive on the executor thread, the worker integrates)."""

    def __init__(self, max_gap_s: float = 0.5, maxlen: int = 2048) -> None:
        self.max_gap_s = max_gap_s  # a sample holds for at most this long: longer gaps are not covered
        self._items: Deque[Tuple[float, float, float]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, stamp: float, speed_mps: float, yaw_rate_rps: float) -> None:
        with self._lock:
            if self._items and stamp < self._items[-1][0] - 1.0:
                self._items.clear()  # time jump backwards: a bag restarted
            if self._items and stamp <= self._items[-1][0]:
                items = [it for it in self._items if it[0] != stamp] + [(stamp, speed_mps, yaw_rate_rps)]
                items.sort()
                self._items.clear()
                self._items.extend(items)
            else:
                self._items.append((stamp, speed_mps, yaw_rate_rps))

    def displacement(self, t0: float, t1: float, yaw0_rad: float) -> Optional[Tuple[float, float]]:
        """(east, north) metres driven from ``t0`` to ``t1`` starting at ENU yaw ``yaw0_rad``: each sample
        holds until the next (midpoint heading per piece). None when some part of [t0, t1] is further
        than ``max_gap_s`` from the sample that would hold there."""
        if t1 <= t0:
            return (0.0, 0.0)
        with self._lock:  # only the samples that can hold within [t0, t1], newest first: no full copy
            items = []
            for it in reversed(self._items):
                items.append(it)
                if it[0] <= t0:
                    break
        items.reverse()
        if not items:
            return None
        stamps = [it[0] for it in items]
        inner = stamps[bisect.bisect_right(stamps, t0) : bisect.bisect_left(stamps, t1)]
        bounds = [t0] + inner + [t1]
        e = n = 0.0
        yaw = yaw0_rad
        for a, b in zip(bounds[:-1], bounds[1:]):
            k = bisect.bisect_right(stamps, a) - 1
            if k < 0:
                if stamps[0] - a > self.max_gap_s:
                    return None
                k = 0
            elif b - stamps[k] > self.max_gap_s:
                return None
            _, v, w = items[k]
            dt = b - a
            mid = yaw + 0.5 * w * dt
            e += v * dt * math.cos(mid)
            n += v * dt * math.sin(mid)
            yaw += w * dt
        return (e, n)
