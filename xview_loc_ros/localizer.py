# SPDX-License-Identifier: Apache-2.0
"""The localizer core, free of ROS: GNSS fix + heading + camera image -> refined pose with covariance.

Per frame: fix interpolated at the image stamp -> heading at the stamp -> aerial patch around the fix
(tile fetcher; prefetch ahead along the motion) -> preprocessing -> inference backend -> heat-map
decode -> patch pixel -> ENU (``map`` frame at the datum) and WGS84 -> covariance px^2 -> m^2 ->
gating. Every rejection raises :class:`FrameRejected` with a short reason key that the node counts.

Over the drive (``fusion: filter``): :meth:`Localizer.track` moves the drive filter
(:mod:`xview_loc_ros.drive_filter`) to each image stamp with the motion since the previous one
(odometry + IMU heading, else fix speed + IMU heading, else fix velocity), applies the fix and the
frame's heat map, and returns the belief as a :class:`TrackedPose`.

Frames: ``map`` is local ENU (x east, y north, metres) at the datum; yaw is ENU (radians, 0 = east,
counter-clockwise); headings at the edges are compass degrees (0 = north, clockwise). Positions and
yaw are those of ``base_frame``: the model localizes the camera, which sits ``mount`` (a
:class:`~xview_loc_ros.mount.CameraMount`: parameters, or /tf_static through the node) from it; the
heading sources give the vehicle's heading (the IMU's corrected by ``imu_yaw_offset_deg``), the camera
looks ``camera_yaw_offset_deg`` counter-clockwise of it.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

import numpy as np

from xview_loc_ros.drive_filter import DriveFilter, FilterEstimate, FilterState, Innovation, OdometryBuffer
from xview_loc_ros.geo import LocalENU, PatchGeoref, compass_to_enu_yaw
from xview_loc_ros.heatmap import HeatmapEstimate, decode_heatmap, heading_from_orientation, softmax_all
from xview_loc_ros.inference.base import OUTPUT_AERIAL_DESCRIPTOR, OUTPUT_FINEST
from xview_loc_ros.mount import CameraMount
from xview_loc_ros.params import LocalizerParams
from xview_loc_ros.preprocess import prepare_aerial, prepare_ground
from xview_loc_ros.relocalize import (
    GROUND_DESCRIPTOR,
    RelocOutcome,
    RelocParams,
    RelocTrigger,
    candidates,
    choose,
    fix_std_m,
    search_centre,
)
from xview_loc_ros.retrieval import CityIndex
from xview_loc_ros.tiles import TileError

STAGES = ("patch", "preprocess", "inference", "decode")
#: reasons of :func:`gate`: the frame has an estimate (and a heat map), it is only not published alone
GATE_REASONS = ("low_confidence", "ambiguous", "gnss_gate")


class FrameRejected(Exception):
    """A frame that produced no estimate; ``reason`` is a short key counted in diagnostics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Fix:
    """A GNSS fix. ``stamp`` seconds; lat/lon degrees WGS84; ``alt`` metres above the ellipsoid
    (NaN = unknown); ``cov_en`` 2x2 horizontal covariance (m^2) in east/north."""

    stamp: float
    lat: float
    lon: float
    alt: float
    cov_en: np.ndarray
    frame_id: str = ""


@dataclass(frozen=True)
class Heading:
    """Camera heading: compass degrees (clockwise from north) and its variance (rad^2)."""

    compass_deg: float
    var_rad2: float


def fix_motion(
    fixes: "FixBuffer", t0: float, t1: float, compass_deg: Optional[float]
) -> Tuple[Tuple[float, float], str]:
    """(east, north) metres driven from ``t0`` to ``t1`` from the fixes alone and its source: the median fix
    speed (:meth:`FixBuffer.motion_at` at ``t1``) along the heading ``compass_deg`` (the IMU's at the middle of
    the step; "fix_speed"), else the median fix velocity ("fix_velocity"), else nothing ("none"). The node's
    rule without odometry (:meth:`Localizer.motion`), and the offline smoother's (offline_adapt)."""
    dt = t1 - t0
    if dt <= 0:
        return (0.0, 0.0), "none"
    m = fixes.motion_at(t1)
    if m is None:
        return (0.0, 0.0), "none"
    speed, ve, vn = m
    if compass_deg is not None:
        yaw = float(compass_to_enu_yaw(compass_deg))
        return (speed * dt * math.cos(yaw), speed * dt * math.sin(yaw)), "fix_speed"
    return (ve * dt, vn * dt), "fix_velocity"


class FixBuffer:
    """Recent fixes ordered by stamp; :meth:`at` interpolates linearly at an image stamp.

    ``max_age_s``: an image later than the newest fix by more than this is rejected (GNSS outage);
    ``max_gap_s``: the two fixes around the stamp must be at most this far apart. Images earlier than
    the oldest kept fix are rejected too. A time jump backwards (bag loop) clears the buffer.
    """

    def __init__(self, max_age_s: float, max_gap_s: float, maxlen: int = 256) -> None:
        self.max_age_s = max_age_s
        self.max_gap_s = max_gap_s
        self._fixes: Deque[Fix] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, fix: Fix) -> None:
        with self._lock:
            if self._fixes and fix.stamp < self._fixes[-1].stamp - self.max_gap_s:
                self._fixes.clear()  # time went backwards: a bag restarted or the clock jumped
            if self._fixes and fix.stamp <= self._fixes[-1].stamp:
                items = [f for f in self._fixes if f.stamp != fix.stamp] + [fix]
                items.sort(key=lambda f: f.stamp)
                self._fixes.clear()
                self._fixes.extend(items)
            else:
                self._fixes.append(fix)

    def latest(self) -> Optional[Fix]:
        with self._lock:
            return self._fixes[-1] if self._fixes else None

    def velocity_en(self, window_s: float = 2.0) -> Tuple[float, float]:
        """(east, north) velocity in m/s over the last ``window_s`` seconds of fixes; (0, 0) if unknown."""
        with self._lock:
            fixes = list(self._fixes)
        if len(fixes) < 2:
            return 0.0, 0.0
        last = fixes[-1]
        first = next((f for f in fixes if f.stamp >= last.stamp - window_s), fixes[-2])
        if first is last:
            first = fixes[-2]
        dt = last.stamp - first.stamp
        if dt <= 0:
            return 0.0, 0.0
        e1, n1, _ = _velocity_frame(first).to_enu(np.array([first.lat, last.lat]), np.array([first.lon, last.lon]), 0.0)
        return float(e1[1] - e1[0]) / dt, float(n1[1] - n1[0]) / dt

    def motion_at(self, stamp: float, window_s: float = 4.0) -> Optional[Tuple[float, float, float]]:
        """(speed m/s, east m/s, north m/s) over the fixes within ``window_s`` before ``stamp`` (and the
        first after it): medians over pairs of fixes at least half the window apart. The long baseline
        matters: a fix's white noise (metres) over one 0.5 s step is a speed error of several m/s, and the
        median of per-step speeds is biased upward by it; the median over pairs stays robust to one multipath
        jump. None with fewer than three fixes there."""
        with self._lock:
            # newest first, back to the window's start: the buffer holds up to maxlen fixes
            recent = list(itertools.takewhile(lambda f: stamp - window_s <= f.stamp, reversed(self._fixes)))
        fixes = recent[::-1]
        k = next((i for i, f in enumerate(fixes) if f.stamp > stamp), len(fixes))
        fixes = fixes[: k + 1]
        if len(fixes) < 3:
            return None
        frame = _velocity_frame(fixes[0])
        e, n, _ = frame.to_enu(np.array([f.lat for f in fixes]), np.array([f.lon for f in fixes]), 0.0)
        t = np.array([f.stamp for f in fixes])
        i, j = np.triu_indices(len(fixes), 1)
        span = t[j] - t[i]
        ok = span >= 0.5 * (t[-1] - t[0])
        if not ok.any() or not t[-1] - t[0] > 1e-3:
            return None
        i, j, span = i[ok], j[ok], span[ok]
        ve, vn = (e[j] - e[i]) / span, (n[j] - n[i]) / span
        return float(np.median(np.hypot(ve, vn))), float(np.median(ve)), float(np.median(vn))

    def at(self, stamp: float) -> Fix:
        """The fix interpolated at ``stamp`` seconds; raises FrameRejected('no_fix'|'fix_too_old'|'fix_gap')."""
        with self._lock:
            fixes = list(self._fixes)
        if not fixes:
            raise FrameRejected("no_fix", "no good GNSS fix received yet")
        newest = fixes[-1]
        if stamp >= newest.stamp:
            if stamp - newest.stamp > self.max_age_s:
                raise FrameRejected(
                    "fix_too_old",
                    f"newest fix is {stamp - newest.stamp:.2f} s older than the image (limit {self.max_age_s} s)",
                )
            return newest
        stamps = [f.stamp for f in fixes]
        k = bisect.bisect_left(stamps, stamp)
        if k == 0:
            if fixes[0].stamp - stamp > self.max_age_s:
                raise FrameRejected(
                    "fix_too_old", f"image is {fixes[0].stamp - stamp:.2f} s older than the oldest kept fix"
                )
            return fixes[0]
        a, b = fixes[k - 1], fixes[k]
        if b.stamp - a.stamp > self.max_gap_s:
            raise FrameRejected(
                "fix_gap", f"fixes around the image are {b.stamp - a.stamp:.2f} s apart (limit {self.max_gap_s} s)"
            )
        w = (stamp - a.stamp) / (b.stamp - a.stamp)
        return Fix(
            stamp,
            a.lat + w * (b.lat - a.lat),
            a.lon + w * (b.lon - a.lon),
            a.alt + w * (b.alt - a.alt),
            (1 - w) * a.cov_en + w * b.cov_en,
            b.frame_id,
        )


class HeadingBuffer:
    """Recent IMU headings; :meth:`at` returns the sample nearest to a stamp within ``max_age_s``."""

    def __init__(self, max_age_s: float, maxlen: int = 512) -> None:
        self.max_age_s = max_age_s
        self._items: Deque[Tuple[float, Heading]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, stamp: float, heading: Heading) -> None:
        with self._lock:
            if self._items and stamp < self._items[-1][0] - 1.0:
                self._items.clear()  # time jump backwards
            if self._items and stamp < self._items[-1][0]:  # slightly late: keep the stamps sorted
                items = list(self._items)
                bisect.insort(items, (stamp, heading), key=lambda it: it[0])
                self._items.clear()
                self._items.extend(items)
            else:
                self._items.append((stamp, heading))

    def at(self, stamp: float) -> Heading:
        with self._lock:
            items = list(self._items)
        if not items:
            raise FrameRejected("no_heading", "no IMU orientation received yet")
        # the samples are sorted by stamp: the nearest is one of the two around it (the earlier on a tie)
        k = bisect.bisect_left(items, stamp, key=lambda it: it[0])
        near = [it for it in items[max(k - 1, 0) : k + 1]]
        t, h = min(near, key=lambda it: abs(it[0] - stamp))
        if abs(t - stamp) > self.max_age_s:
            raise FrameRejected(
                "heading_too_old",
                f"nearest IMU sample is {abs(t - stamp):.2f} s from the image (limit {self.max_age_s} s)",
            )
        return h


@dataclass
class Estimate:
    """One localized frame. Positions: ``lat``/``lon`` degrees; ``east``/``north`` metres in ``map``;
    ``cov_en`` 2x2 m^2 (east, north); ``yaw`` ENU radians (None = unknown) with ``yaw_var`` rad^2;
    ``u``/``v`` and ``fix_u``/``fix_v`` patch pixels; ``logits`` the finest heat map (n, S, S) and
    ``prob`` its position probabilities (S, S); ``timings`` seconds per stage."""

    stamp: float
    lat: float
    lon: float
    alt: float
    east: float
    north: float
    cov_en: np.ndarray
    yaw: Optional[float]
    yaw_var: float
    confidence: float
    ambiguity: float
    mahalanobis2: float
    u: float
    v: float
    fix: Fix
    fix_u: float
    fix_v: float
    georef: PatchGeoref
    patch: np.ndarray
    logits: np.ndarray
    prob: np.ndarray
    accepted: bool
    reject_reason: str = ""
    timings: Dict[str, float] = field(default_factory=dict)
    camera_offset_en: Tuple[float, float] = (0.0, 0.0)  # camera minus base_frame position, ENU metres
    descriptor: Optional[np.ndarray] = None  # the ground image's retrieval descriptor (D,) while re-localizing
    similarity: Optional[float] = None  # a re-localization candidate's: cosine of ground and patch descriptors


@dataclass
class TrackedPose:
    """The drive filter's belief at an image stamp. ``lat``/``lon`` degrees, ``alt`` metres (the fix's,
    NaN = unknown); ``east``/``north`` the belief's mean in ``map`` (metres) with ``cov_en`` (2x2 m^2,
    from the belief, floored at min_std_m); ``map_east``/``map_north`` its most probable cell; ``yaw`` ENU
    radians (None = unknown) with ``yaw_var``; ``fix`` the fix applied at this stamp (None = none);
    ``state`` the filter state (xview_loc_ros.drive_filter.FilterState value); ``motion`` the source of
    the prediction; ``innovation`` the last measurement's (or None); ``seconds`` the filter's run time."""

    stamp: float
    lat: float
    lon: float
    alt: float
    east: float
    north: float
    cov_en: np.ndarray
    map_east: float
    map_north: float
    yaw: Optional[float]
    yaw_var: float
    fix: Optional[Fix]
    state: str
    motion: str
    innovation: Optional[Innovation]
    seconds: float


def pixel_cov_to_enu(cov_px: np.ndarray, mpp: float) -> np.ndarray:
    """Covariance of patch pixels (u east, v south; px^2) -> covariance of (east, north) in m^2."""
    j = np.array([[mpp, 0.0], [0.0, -mpp]])
    return j @ np.asarray(cov_px, dtype=float) @ j.T


def mahalanobis2(delta: np.ndarray, cov: np.ndarray) -> float:
    """Squared Mahalanobis distance of a 2-vector under a 2x2 covariance."""
    return float(delta @ np.linalg.solve(cov, delta))


def _velocity_frame(fix: Fix) -> LocalENU:
    """A tangent frame for fix-to-fix velocities near ``fix``: its origin rounded to 0.01 degree (about
    1 km), so the frame (a pyproj pipeline, ~0.4 ms to build) is reused from its cache instead of built
    per fix; differences of positions a few metres apart in a plane 1 km off are exact to ~1e-4."""
    return LocalENU(round(fix.lat, 2), round(fix.lon, 2))


class Localizer:
    """Runs frames through patch -> model -> decode -> gating. ``backend``: an inference Backend
    (``.config``, ``.infer``); ``patch_builder``: an AerialPatchBuilder built at the model's size and
    m/px. Thread use: fixes/headings may be added from any thread while :meth:`process` runs."""

    def __init__(
        self, params: LocalizerParams, backend: Any, patch_builder: Any, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        params.check_model(backend.config)
        self.params = params
        self.backend = backend
        self.config = backend.config
        self.builder = patch_builder
        self.size_px = int(self.config["aerial_size"])
        self.mpp = float(self.config["mpp"])
        self.fixes = FixBuffer(params.fix_max_age_s, params.fix_max_gap_s)
        self.headings = HeadingBuffer(params.imu_max_age_s)
        self.datum: Optional[LocalENU] = None
        if not params.datum_from_first_fix:
            self.datum = LocalENU(params.datum_lat, params.datum_lon, params.datum_alt)
        self.camera_hfov_deg: Optional[float] = None
        self.camera_distorted = False  # CameraInfo has non-zero distortion coefficients (pinhole models)
        self.tf_mount: Optional[CameraMount] = None  # the camera's mount from /tf_static (the node sets it)
        self.odometry = OdometryBuffer(params.odom_max_age_s)
        self.filter: Optional[DriveFilter] = DriveFilter(params.filter_params()) if params.fusion == "filter" else None
        self._clock = clock
        self._last_prefetch: Optional[Tuple[float, float]] = None
        self._prefetched: Counter = Counter()  # tiles loaded / missing / failed by background prefetch
        self._prefetch_lock = threading.Lock()
        # re-localization (xview_loc_ros.relocalize): off until the node hands an index over
        self.reloc_index: Optional[CityIndex] = None
        self.reloc_trigger = RelocTrigger(params.reloc_params())
        self.reloc_counts: Counter = Counter()  # searches, candidates, reason_*, outcome_*, rate_limited
        self.last_reloc: Optional[RelocOutcome] = None
        self._last_good: Optional[Tuple[float, float, float, float]] = None  # stamp, dead-reckoned to, east, north
        self._lost_seen = 0  # the filter's lost re-initialisations already seen
        self._lost_pending = False  # one of them has not been searched for yet
        self._gnss_hold_until: Optional[float] = None  # fixes disagreeing with the belief are held out until then
        self._fix_disagrees = False  # the last fix was held out

    # -- inputs -----------------------------------------------------------------------------------
    def add_fix(self, fix: Fix) -> None:
        """A good fix (the caller has dropped NO_FIX / non-finite ones); anchors the datum if unset."""
        if self.datum is None:
            self.datum = LocalENU(fix.lat, fix.lon, fix.alt if math.isfinite(fix.alt) else 0.0)
        self.fixes.add(fix)
        self._maybe_prefetch(fix)

    def add_heading(self, stamp: float, heading: Heading) -> None:
        self.headings.add(stamp, heading)

    def add_odometry(self, stamp: float, speed_mps: float, yaw_rate_rps: float) -> None:
        """An odometry sample: forward speed (m/s) and yaw rate (rad/s, counter-clockwise) of the vehicle."""
        self.odometry.add(stamp, speed_mps, yaw_rate_rps)

    @property
    def mount(self) -> CameraMount:
        """The camera in base_frame: from /tf_static once the node found it there, else the parameters."""
        if self.tf_mount is not None:
            return self.tf_mount
        return CameraMount(self.params.camera_lever_arm_m, self.params.camera_yaw_offset_deg, "parameters")

    def heading_at(self, stamp: float) -> Optional[Heading]:
        """The vehicle's (base_frame's) heading for a frame per ``heading_source``; None when the source
        is 'none'. IMU headings get ``imu_yaw_offset_deg`` (ENU, counter-clockwise: compass minus)."""
        src = self.params.heading_source
        if src == "none":
            return None
        if src == "fixed":
            return Heading(self.params.fixed_heading_deg % 360.0, math.radians(self.params.heading_std_deg) ** 2)
        h = self.headings.at(stamp)
        offset = self.params.imu_yaw_offset_deg
        return h if offset == 0.0 else Heading((h.compass_deg - offset) % 360.0, h.var_rad2)

    def _maybe_prefetch(self, fix: Fix) -> None:
        ahead = self.params.prefetch_ahead_s
        if ahead <= 0:
            return
        ve, vn = self.fixes.velocity_en()
        dist = math.hypot(ve, vn) * ahead
        # refetch once the vehicle moved a quarter patch since the last request: the builder's
        # radius already covers a patch width around each point
        if self._last_prefetch is not None:
            e, n, _ = LocalENU(*self._last_prefetch).to_enu(fix.lat, fix.lon, 0.0)
            if math.hypot(float(e), float(n)) < 0.25 * self.size_px * self.mpp:
                return
        lat1, lon1, _ = LocalENU(fix.lat, fix.lon).to_latlon(ve * ahead, vn * ahead, 0.0)
        points = [(fix.lat, fix.lon)] + ([(float(lat1), float(lon1))] if dist > 1.0 else [])
        self.builder.prefetch(points).add_done_callback(self._count_prefetch)
        self._last_prefetch = (fix.lat, fix.lon)

    def _count_prefetch(self, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        s = future.result()
        with self._prefetch_lock:
            for k in ("loaded", "missing", "failed"):
                self._prefetched[k] += int(getattr(s, k))

    def prefetch_counts(self) -> Dict[str, int]:
        """Tiles the background prefetch loaded / found missing / failed on, since start."""
        with self._prefetch_lock:
            return dict(self._prefetched)

    # -- over the drive ---------------------------------------------------------------------------
    def _yaw_at(self, stamp: float) -> Optional[Heading]:
        try:
            return self.heading_at(stamp)
        except FrameRejected:
            return None

    def motion(self, t0: float, t1: float) -> Tuple[Tuple[float, float], str]:
        """(east, north) metres driven from ``t0`` to ``t1`` and the source (drive_filter.MOTION_SOURCES):
        odometry integrated from the IMU heading at ``t0``; else the median fix speed along the IMU
        heading at the middle of the step; else the median fix velocity; else nothing."""
        dt = t1 - t0
        if dt <= 0:
            return (0.0, 0.0), "none"
        h0 = self._yaw_at(t0)
        if self.params.odom_topic and h0 is not None:
            d = self.odometry.displacement(t0, t1, float(compass_to_enu_yaw(h0.compass_deg)))
            if d is not None:
                return d, "odom"
        h = self._yaw_at(0.5 * (t0 + t1))
        return fix_motion(self.fixes, t0, t1, None if h is None else h.compass_deg)

    def track(self, stamp: float, est: Optional[Estimate]) -> Optional[TrackedPose]:
        """Move the drive filter to the image ``stamp``, apply the fix there and the frame's heat map
        (``est``: the per-frame estimate, gated or not; None when the frame gave none) and return the
        belief; None in ``fusion: frame`` or while the filter has no belief (no fix yet)."""
        f = self.filter
        if f is None:
            return None
        t0 = self._clock()
        prev = f.stamp
        delta, source = self.motion(prev, stamp) if prev is not None else ((0.0, 0.0), "none")
        f.predict(stamp, delta, source)
        fix = self._frame_fix(est, stamp)
        datum = self.datum
        if datum is None:
            return None
        fix_en: Optional[Tuple[float, float]] = None
        if fix is not None:
            fe, fn, _ = (float(x) for x in datum.to_enu(fix.lat, fix.lon, datum.h0))
            fix_en = (fe, fn)
            if not self._hold_out_fix(stamp, fe, fn, fix.cov_en):
                f.update_gnss(stamp, fe, fn, fix.cov_en)
        if est is not None:
            g = est.georef
            oe, on = est.camera_offset_en
            if oe or on:  # the heat map says where the camera is; the filter tracks base_frame
                lat_c, lon_c, _ = g.frame.to_latlon(-oe, -on, 0.0)
                g = PatchGeoref(float(lat_c), float(lon_c), g.mpp, g.size_px)
            # the patch is built around the frame's fix: its centre in map is the fix's (saves a conversion)
            same = fix_en is not None and (g.center_lat, g.center_lon) == (est.fix.lat, est.fix.lon)
            f.update_heatmap(stamp, est.prob, g, datum, fix_en if same else None)
        b = f.estimate()
        if b is None:
            return None
        return self._tracked_pose(stamp, b, fix, est, source, self._clock() - t0)

    def _tracked_pose(
        self, stamp: float, b: FilterEstimate, fix: Optional[Fix], est: Optional[Estimate], source: str, seconds: float
    ) -> TrackedPose:
        """The filter's belief ``b`` as a TrackedPose (yaw from the frame's estimate, else the heading source)."""
        f = self.filter
        datum = self.datum
        assert f is not None and datum is not None
        alt = fix.alt if fix is not None else math.nan
        lat, lon, _ = (float(x) for x in datum.to_latlon(b.east, b.north, alt if math.isfinite(alt) else datum.h0))
        evals, evecs = np.linalg.eigh(b.cov_en)
        cov = evecs @ np.diag(np.maximum(evals, self.params.min_std_m**2)) @ evecs.T
        yaw, yaw_var = None, self.params.unobserved_variance
        if est is not None and est.yaw is not None:
            yaw, yaw_var = est.yaw, est.yaw_var
        else:
            h = self._yaw_at(stamp)
            if h is not None:
                yaw, yaw_var = float(compass_to_enu_yaw(h.compass_deg)), h.var_rad2
        return TrackedPose(
            stamp,
            lat,
            lon,
            alt,
            b.east,
            b.north,
            cov,
            b.map_east,
            b.map_north,
            yaw,
            yaw_var,
            fix,
            b.state.value,
            source,
            f.last_innovation,
            seconds,
        )

    def _gnss_held(self, stamp: float) -> bool:
        """Whether fixes that disagree with the belief are held out at ``stamp`` (see :meth:`_hold_out_fix`)."""
        until = self._gnss_hold_until
        return self.reloc_index is not None and until is not None and stamp <= until

    def _hold_out_fix(self, stamp: float, east: float, north: float, cov_en: np.ndarray) -> bool:
        """True when this fix must not reach the filter: a search has just kept a position the fixes disagreed
        with (``reloc_gnss_hold_s`` ago at most; each such search renews it) and this fix still disagrees with the
        belief beyond ``filter_lost_chi2``. A fix that agrees ends the hold. Counted as the filter's
        ``gnss_held_out``; the disagreement keeps triggering searches (reason ``lost``)."""
        self._fix_disagrees = False
        f = self.filter
        if f is None or not self._gnss_held(stamp):
            return False
        b = f.estimate()
        if b is None:
            return False
        d2 = mahalanobis2(np.array([east - b.east, north - b.north]), b.cov_en + np.asarray(cov_en, dtype=float))
        if d2 <= self.params.filter_lost_chi2:
            self._gnss_hold_until = None  # GNSS agrees again: the hold is over
            return False
        self._fix_disagrees = True
        f.counts["gnss_held_out"] += 1
        return True

    # -- per frame --------------------------------------------------------------------------------
    def patch_centre(self, stamp: float, fix: Fix) -> Tuple[float, float]:
        """(lat, lon) where the frame's aerial patch is cut: with ``patch_centre: belief`` the drive filter's
        position predicted to ``stamp`` while it tracks with a largest std under ``patch_centre_max_std_m``
        (so a GNSS jump or a large bias does not move the patch off the vehicle: the heat map keeps seeing
        it), else the fix. With re-localization on, also while the filter reports a lost track (std up to half
        the patch side) and right after a search set the belief."""
        f, p = self.filter, self.params
        if f is None or p.patch_centre != "belief" or self.datum is None:
            return fix.lat, fix.lon
        states = {FilterState.TRACKING}
        if self.reloc_index is not None:
            # re-localization recovers a wrong belief, so the fix is no longer the fallback while the two disagree;
            # a belief just set by a search is one
            states.add(FilterState.LOST)
            if f.last_reinit_reason == "reloc":
                states.add(FilterState.REINITIALISED)
        if f.state not in states:
            return fix.lat, fix.lon
        est = f.estimate()
        max_std = p.patch_centre_max_std_m
        if self.reloc_index is not None and (f.state == FilterState.LOST or self._gnss_held(stamp)):
            # the fix is the one known to be off: the belief centres the patch while the patch still covers its
            # spread (half the patch side), and the searches meanwhile check it
            max_std = max(max_std, 0.5 * self.size_px * self.mpp)
        if est is None or float(np.linalg.eigvalsh(est.cov_en)[-1]) > max_std**2:
            return fix.lat, fix.lon
        de, dn = 0.0, 0.0
        if f.stamp is not None and stamp > f.stamp:
            (de, dn), _ = self.motion(f.stamp, stamp)
        lat, lon, _ = self.datum.to_latlon(est.east + de, est.north + dn, self.datum.h0)
        return float(lat), float(lon)

    def process(self, stamp: float, rgb: np.ndarray) -> Estimate:
        """Localize one camera frame (``stamp`` seconds, RGB uint8 HxWx3). Returns an Estimate whose
        ``accepted`` is False when gating rejected it; raises FrameRejected when no estimate exists."""
        p = self.params
        if self.camera_hfov_deg is not None and self.config.get("ground_type") == "pinhole":
            model_fov = float(self.config.get("fov_deg") or 0.0)
            if model_fov and abs(self.camera_hfov_deg - model_fov) > 2.0:
                raise FrameRejected(
                    "camera_fov_mismatch",
                    f"camera_info gives {self.camera_hfov_deg:.1f} deg horizontal FOV, the model expects {model_fov:.1f} deg",
                )
        if self.camera_distorted and not p.images_rectified and self.config.get("ground_type") == "pinhole":
            raise FrameRejected(
                "camera_distorted",
                "camera_info has non-zero distortion coefficients and the model was trained on undistorted "
                "images: rectify them (image_proc) and set images_rectified: true",
            )
        fix = self.fixes.at(stamp)
        heading = self.heading_at(stamp)  # the vehicle's
        mount = self.mount
        # the camera looks yaw_offset counter-clockwise of the vehicle: its compass heading is that much less
        cam_heading = None if heading is None else (heading.compass_deg - mount.yaw_offset_deg) % 360.0
        timings: Dict[str, float] = {}

        t0 = self._clock()
        try:
            patch = self.builder.build(*self.patch_centre(stamp, fix))
        except TileError as e:
            raise FrameRejected("tiles", str(e)) from e
        if patch.missing_fraction > p.max_missing_fraction:
            raise FrameRejected(
                "tiles_missing",
                f"{patch.missing_fraction:.0%} of the aerial patch has no imagery (limit {p.max_missing_fraction:.0%})",
            )
        t1 = self._clock()
        timings["patch"] = t1 - t0

        ground = prepare_ground(rgb, cam_heading, self.config)
        aerial = prepare_aerial(patch.image, self.config)
        t2 = self._clock()
        timings["preprocess"] = t2 - t1

        names = self._output_names(heading)
        if names == [OUTPUT_FINEST]:
            logits = np.asarray(self.backend.infer(ground[None], aerial[None]))[0]
            out: Dict[str, Any] = {}
        else:
            out = self.backend.infer_outputs(ground[None], aerial[None], names)
            logits = np.asarray(out[OUTPUT_FINEST])[0]
        t3 = self._clock()
        timings["inference"] = t3 - t2
        orientation = np.asarray(out["orientation"])[0] if "orientation" in out else None
        descriptor = np.asarray(out[GROUND_DESCRIPTOR])[0] if GROUND_DESCRIPTOR in out else None
        est = self._decode(stamp, fix, heading, mount, patch.georef, patch.image, logits, orientation, True)
        est.descriptor = descriptor
        timings["decode"] = self._clock() - t3
        est.timings = timings
        return est

    def _output_names(self, heading: Optional[Heading]) -> List[str]:
        """The outputs a frame needs: the finest heat map; the orientation field for an unknown-orientation
        model without a heading; the ground descriptor while re-localization is on (the model computes it in
        the same pass)."""
        outputs = getattr(self.backend, "outputs", ())
        names = [OUTPUT_FINEST]
        if heading is None and "orientation" in outputs:
            names.append("orientation")  # unknown-orientation model: its orientation field gives the yaw
        if self.reloc_index is not None and GROUND_DESCRIPTOR in outputs:
            names.append(GROUND_DESCRIPTOR)
        return names

    def _decode(
        self,
        stamp: float,
        fix: Fix,
        heading: Optional[Heading],
        mount: CameraMount,
        georef: PatchGeoref,
        patch_image: np.ndarray,
        logits: np.ndarray,
        orientation: Optional[np.ndarray],
        gnss_gate: bool,
    ) -> Estimate:
        """Logits of the patch at ``georef`` -> an Estimate (gated; without the GNSS part when ``gnss_gate`` is
        False: re-localization candidates disagree with the fix by design)."""
        p = self.params
        if not np.all(np.isfinite(logits)):
            raise FrameRejected("model_output", "the model returned NaN or infinite logits")
        est: HeatmapEstimate = decode_heatmap(logits, self.size_px)
        prob = est.prob if est.prob is not None else softmax_all(logits).sum(axis=0)  # computed once
        yaw, yaw_var = (None, p.unobserved_variance)
        if heading is not None:
            yaw, yaw_var = float(compass_to_enu_yaw(heading.compass_deg)), heading.var_rad2
        elif orientation is not None:  # the camera's heading: the vehicle's is yaw_offset clockwise of it
            cam = heading_from_orientation(orientation, est.u, est.v)
            yaw = float(compass_to_enu_yaw((cam + mount.yaw_offset_deg) % 360.0))
            yaw_var = math.radians(p.heading_std_deg) ** 2
        try:
            oe, on = mount.offset_en(yaw)  # camera minus base_frame, ENU metres
        except ValueError as e:
            raise FrameRejected("no_heading_for_lever_arm", str(e)) from e
        assert self.datum is not None  # set by the first fix
        alt = fix.alt if math.isfinite(fix.alt) else self.datum.h0
        if oe or on:
            ce, cn = (float(x) for x in georef.pixel_to_enu(est.u, est.v))  # the camera, from the patch centre
            lat_b, lon_b, _ = georef.frame.to_latlon(ce - oe, cn - on, 0.0)
            lat, lon = float(lat_b), float(lon_b)
        else:
            lat, lon = (float(x) for x in georef.pixel_to_latlon(est.u, est.v))
        east, north, _ = (float(x) for x in self.datum.to_enu(lat, lon, alt))
        cov = pixel_cov_to_enu(est.cov_px, georef.mpp)
        evals, evecs = np.linalg.eigh(cov)
        cov = evecs @ np.diag(np.maximum(evals, p.min_std_m**2)) @ evecs.T
        fix_u, fix_v = (float(x) for x in georef.latlon_to_pixel(fix.lat, fix.lon))
        # base_frame vs the fix (the GNSS antenna's lever arm is not modelled: put the antenna near base_frame)
        delta = np.array([(est.u - fix_u) * georef.mpp - oe, (fix_v - est.v) * georef.mpp - on])
        d2 = mahalanobis2(delta, cov + fix.cov_en)

        reason = gate(est.confidence, est.ambiguity, d2 if gnss_gate else 0.0, p)
        return Estimate(
            stamp,
            lat,
            lon,
            alt,
            east,
            north,
            cov,
            yaw,
            yaw_var,
            float(est.confidence),
            float(est.ambiguity),
            d2,
            float(est.u),
            float(est.v),
            fix,
            fix_u,
            fix_v,
            georef,
            patch_image,
            logits,
            prob,
            not reason,
            reason,
            {},
            (oe, on),
        )

    # -- re-localization (xview_loc_ros.relocalize) -----------------------------------------------
    def enable_relocalization(self, index: CityIndex) -> None:
        """Search ``index`` when a trigger fires (the caller has checked the model's head and the index's hash)."""
        self.reloc_trigger = RelocTrigger(self.params.reloc_params())
        self.reloc_index = index

    def disable_relocalization(self) -> None:
        self.reloc_index = None

    def _advance_last_good(self, stamp: float) -> None:
        """Dead-reckon the last good position to ``stamp`` with the motion since its last update."""
        g = self._last_good
        if g is None:
            return
        t_good, t_dr, e, n = g
        if stamp > t_dr:
            (de, dn), _ = self.motion(t_dr, stamp)
            self._last_good = (t_good, stamp, e + de, n + dn)
        elif stamp < t_good:  # time went backwards (a bag restarted)
            self._last_good = None

    def _set_last_good(self, stamp: float, east: float, north: float) -> None:
        self._last_good = (stamp, stamp, east, north)

    def _note_frame(self, stamp: float, est: Optional[Estimate], tracked: Optional[TrackedPose]) -> None:
        """Keep the last good position: the filter's belief while it tracks with a small std and the frame's heat
        map is confident (``fusion: filter``); an accepted, confident per-frame estimate (``fusion: frame``); never
        from a frame whose fix is wider than ``reloc_fix_std_m`` (a frame that triggers a search is not good)."""
        self._advance_last_good(stamp)
        p = self.params
        if est is None or est.confidence < p.reloc_min_confidence or fix_std_m(est.fix.cov_en) > p.reloc_fix_std_m:
            return
        if self.filter is not None:
            if tracked is not None and tracked.state == FilterState.TRACKING.value:
                if float(np.linalg.eigvalsh(tracked.cov_en)[-1]) <= p.patch_centre_max_std_m**2:
                    self._set_last_good(stamp, tracked.east, tracked.north)
        elif est.accepted:
            self._set_last_good(stamp, est.east, est.north)

    def _frame_fix(self, est: Optional[Estimate], stamp: float) -> Optional[Fix]:
        """The fix a frame was localized with, else the buffered fix for its stamp, else None."""
        if est is not None and est.fix is not None:
            return est.fix
        try:
            return self.fixes.at(stamp)
        except FrameRejected:
            return None

    def relocalize(
        self, stamp: float, rgb: Optional[np.ndarray], est: Optional[Estimate], tracked: Optional[TrackedPose]
    ) -> Optional[RelocOutcome]:
        """After a frame (``est`` its estimate or None, ``tracked`` the filter's pose or None): search the city
        index when a trigger fires (None when re-localization is off or nothing fired). A kept candidate
        re-initialises the drive filter (``fusion: filter``; the outcome's ``tracked`` is the new pose) or is
        the outcome's ``estimate`` to publish (``fusion: frame``). Never raises for a frame's content: a
        failure is the outcome ``failed``."""
        index = self.reloc_index
        if index is None:
            return None
        rp = self.params.reloc_params()
        trigger = self.reloc_trigger
        trigger.p = rp
        self._note_frame(stamp, est, tracked)
        fix = self._frame_fix(est, stamp)
        f = self.filter
        lost = False
        if f is not None:
            # a restart at the fix because of a lost track stays a reason until a search has run (a rate-limited
            # frame must not swallow it: the filter then tracks the fix and reports nothing lost)
            self._lost_pending = self._lost_pending or f.counts["lost"] > self._lost_seen
            self._lost_seen = f.counts["lost"]
            lost = f.state == FilterState.LOST or self._lost_pending or (self._fix_disagrees and self._gnss_held(stamp))
        last_good = None
        g = self._last_good
        if g is not None and self.datum is not None and stamp - g[0] <= rp.last_good_max_age_s:
            la, lo, _ = self.datum.to_latlon(g[2], g[3], self.datum.h0)
            last_good = (float(la), float(lo))
        reason = trigger.observe(
            stamp,
            have_position=fix is not None or last_good is not None,
            lost=lost,
            fix_std_m=fix_std_m(fix.cov_en) if fix is not None else None,
            confidence=est.confidence if est is not None else None,
        )
        self.reloc_counts["rate_limited"] = trigger.counts["rate_limited"]
        if not reason:
            return None
        trigger.searched(stamp)
        self._lost_pending = False
        centre = search_centre(last_good, (fix.lat, fix.lon) if fix is not None else None)
        t0 = self._clock()
        try:
            out = self._search(stamp, rgb, est, fix, tracked, reason, centre, index, rp)
        except (FrameRejected, TileError, ValueError) as e:
            out = RelocOutcome(stamp, reason, "failed", centre, detail=f"{type(e).__name__}: {e}")
        out.seconds = self._clock() - t0
        c = self.reloc_counts
        c["searches"] += 1
        c[f"reason_{reason}"] += 1
        c[f"outcome_{out.outcome}"] += 1
        c["candidates"] += len(out.confidences)
        self.last_reloc = out
        return out

    def _search(
        self,
        stamp: float,
        rgb: Optional[np.ndarray],
        est: Optional[Estimate],
        fix: Optional[Fix],
        tracked: Optional[TrackedPose],
        reason: str,
        centre: Optional[Tuple[float, float]],
        index: CityIndex,
        rp: RelocParams,
    ) -> RelocOutcome:
        if rgb is None:
            raise FrameRejected("no_image", "no decoded camera frame to search with")
        heading = self.heading_at(stamp)
        mount = self.mount
        cam_heading = None if heading is None else (heading.compass_deg - mount.yaw_offset_deg) % 360.0
        ground = prepare_ground(rgb, cam_heading, self.config)
        desc = est.descriptor if est is not None else None
        if desc is None:  # the frame gave no estimate: the ground branch alone (the aerial input is a blank patch)
            blank = np.zeros((1, 3, self.size_px, self.size_px), np.float32)
            desc = np.asarray(self.backend.infer_outputs(ground[None], blank, [GROUND_DESCRIPTOR])[GROUND_DESCRIPTOR])[
                0
            ]
        cands = candidates(index, desc, rp, centre)
        where = "the whole index" if centre is None else f"{rp.radius_m:g} m around {centre[0]:.6f}, {centre[1]:.6f}"
        # the search centre (the last good position, else the fix) competes too: when the belief was right all
        # along, its own patch confirms it instead of a look-alike elsewhere replacing it
        centres = [(c.lat, c.lon) for c in cands] + ([centre] if centre is not None else [])
        if not centres:
            return RelocOutcome(stamp, reason, "no_candidates", centre, detail=f"no index entry within {where}")
        if self.datum is None:  # a cold start before any fix: map is anchored at the best-ranked candidate
            self.datum = LocalENU(centres[0][0], centres[0][1], 0.0)
        scored = self.score_centres(stamp, ground, heading, mount, centres, fix, desc)
        kept = [(i, e) for i, e in enumerate(scored) if e is not None]
        confs = [e.confidence for _, e in kept]
        at_centre = [j for j, (i, _) in enumerate(kept) if i == len(cands)]  # the centre's patch, when scored
        sims = [e.similarity if e.similarity is not None else math.nan for _, e in kept]
        k = choose(confs, [e.ambiguity for _, e in kept], rp, at_centre[0] if at_centre else None, sims)
        out = RelocOutcome(stamp, reason, "rejected", centre, cands, confs)
        best_conf = max(confs) if confs else math.nan
        if k is None:
            out.detail = (
                f"{len(kept)} of {len(centres)} patches ({len(cands)} index candidates within {where}, and the centre) "
                f"scored, best confidence {best_conf:.2f} (needs {rp.accept_confidence:g})"
            )
            return out
        i, best = kept[k]
        best.accepted, best.reject_reason = True, ""
        out.chosen, out.estimate, out.outcome = i, best, "relocalized"
        which = "the search centre" if i == len(cands) else f"candidate {i + 1} of {len(cands)}"
        score = "" if i == len(cands) else f"index score {cands[i].score:.2f}, "
        before = self._position_before(est, tracked, fix)
        if before is not None:
            out.moved_m = math.hypot(best.east - before[0], best.north - before[1])
        self._set_last_good(stamp, best.east, best.north)
        f = self.filter
        if f is not None:
            b0 = f.estimate()
            if b0 is not None and tracked is not None and b0.state != FilterState.REINITIALISED:
                d2 = mahalanobis2(np.array([best.east - b0.east, best.north - b0.north]), b0.cov_en + best.cov_en)
                if d2 <= self.params.filter_lost_chi2:  # the belief was right: keep it (and what it has learnt)
                    out.outcome = "confirmed"
            if fix is not None and self.datum is not None and rp.gnss_hold_s > 0:
                fe, fn, _ = (float(x) for x in self.datum.to_enu(fix.lat, fix.lon, self.datum.h0))
                d2_fix = mahalanobis2(np.array([fe - best.east, fn - best.north]), best.cov_en + fix.cov_en)
                if d2_fix > self.params.filter_lost_chi2:  # the camera contradicts the fix: hold such fixes out
                    self._gnss_hold_until = stamp + rp.gnss_hold_s
            if out.outcome == "relocalized":
                f.initialise(stamp, best.east, best.north, best.cov_en, "reloc")
            elif est is None and self.datum is not None:
                # confirmed, and the frame had no heat map of its own (no fix, tiles missing): the centre's is one
                g = best.georef
                oe, on = best.camera_offset_en
                if oe or on:  # the heat map says where the camera is; the filter tracks base_frame
                    lat_c, lon_c, _ = g.frame.to_latlon(-oe, -on, 0.0)
                    g = PatchGeoref(float(lat_c), float(lon_c), g.mpp, g.size_px)
                f.update_heatmap(stamp, best.prob, g, self.datum)
            if out.outcome == "relocalized" or est is None:
                b = f.estimate()
                if b is not None:
                    motion = tracked.motion if tracked is not None else "none"
                    out.tracked = self._tracked_pose(stamp, b, fix, best, motion, 0.0)
        out.detail = (
            f"{which} within {where} ({score}heat-map confidence {best.confidence:.2f}); "
            f"{out.outcome}, {out.moved_m:.1f} m from the position before"
        )
        return out

    def _position_before(
        self, est: Optional[Estimate], tracked: Optional[TrackedPose], fix: Optional[Fix]
    ) -> Optional[Tuple[float, float]]:
        if tracked is not None:
            return tracked.east, tracked.north
        if est is not None:
            return est.east, est.north
        if fix is not None and self.datum is not None:
            e, n, _ = self.datum.to_enu(fix.lat, fix.lon, self.datum.h0)
            return float(e), float(n)
        return None

    def score_centres(
        self,
        stamp: float,
        ground: np.ndarray,
        heading: Optional[Heading],
        mount: CameraMount,
        centres: List[Tuple[float, float]],
        fix: Optional[Fix],
        descriptor: Optional[np.ndarray] = None,
    ) -> List[Optional[Estimate]]:
        """Run the fine model on the patches around ``centres`` (lat, lon) with the prepared ``ground`` (C,H,W),
        batched (at most the backend's batch size at once): one Estimate per centre, gated without the GNSS part;
        None where the patch lacks more than ``max_missing_fraction`` of imagery or its tiles fail. ``fix``: the
        frame's (None on a cold start: a stand-in at each centre with an unbounded covariance). With the ground
        ``descriptor`` (D,) and a model with a retrieval head, each Estimate's ``similarity`` is its cosine with
        the patch's aerial descriptor (same pass)."""
        p = self.params
        patches: List[Any] = []
        for c in centres:
            try:
                patch = self.builder.build(*c)
            except TileError:
                patch = None
            patches.append(patch if patch is not None and patch.missing_fraction <= p.max_missing_fraction else None)
        todo = [i for i, x in enumerate(patches) if x is not None]
        out: List[Optional[Estimate]] = [None] * len(centres)
        if not todo:
            return out
        names = [OUTPUT_FINEST] + (["orientation"] if heading is None and "orientation" in self.backend.outputs else [])
        if descriptor is not None and OUTPUT_AERIAL_DESCRIPTOR in self.backend.outputs:
            names.append(OUTPUT_AERIAL_DESCRIPTOR)
            q = np.asarray(descriptor, dtype=np.float64).reshape(-1)
            q = q / max(float(np.linalg.norm(q)), 1e-12)
        step = int(getattr(self.backend, "max_batch", None) or len(todo))
        for s in range(0, len(todo), step):
            chunk = todo[s : s + step]
            aerial = np.stack([prepare_aerial(patches[i].image, self.config) for i in chunk])
            res = self.backend.infer_outputs(np.repeat(ground[None], len(chunk), axis=0), aerial, names)
            for j, i in enumerate(chunk):
                orientation = np.asarray(res["orientation"])[j] if "orientation" in res else None
                f = fix
                if f is None:
                    f = Fix(stamp, centres[i][0], centres[i][1], math.nan, np.eye(2) * 1e12, "")
                try:
                    est = self._decode(
                        stamp,
                        f,
                        heading,
                        mount,
                        patches[i].georef,
                        patches[i].image,
                        np.asarray(res[OUTPUT_FINEST])[j],
                        orientation,
                        False,
                    )
                except FrameRejected:
                    continue
                if OUTPUT_AERIAL_DESCRIPTOR in res:
                    a = np.asarray(res[OUTPUT_AERIAL_DESCRIPTOR])[j].astype(np.float64)
                    est.similarity = float(a @ q / max(float(np.linalg.norm(a)), 1e-12))
                out[i] = est
        return out


def gate(confidence: float, ambiguity: float, d2: float, p: LocalizerParams) -> str:
    """Why an estimate must not be published ("" = publish): low heat-map confidence, a competing
    mode (multi-modal), or a Mahalanobis distance ``d2`` to the GNSS fix beyond ``gate_chi2``."""
    if not confidence >= p.min_confidence:
        return "low_confidence"
    if not ambiguity <= p.max_ambiguity:
        return "ambiguous"
    if not 0.0 <= d2 <= p.gate_chi2:  # d2 < 0 only from an indefinite covariance: nothing to trust
        return "gnss_gate"
    return ""


def stage_summary(samples: Mapping[str, List[float]]) -> Dict[str, Tuple[float, float]]:
    """{stage: [seconds...]} -> {stage: (median ms, p95 ms)} for stages with samples."""
    out = {}
    for k, v in samples.items():
        if v:
            a = np.asarray(v) * 1e3
            out[k] = (float(np.median(a)), float(np.percentile(a, 95)))
    return out
