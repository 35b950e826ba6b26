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

from xview_loc_ros.drive_filter import DriveFilter, FilterState, Innovation, OdometryBuffer
from xview_loc_ros.geo import LocalENU, PatchGeoref, compass_to_enu_yaw
from xview_loc_ros.heatmap import HeatmapEstimate, decode_heatmap, heading_from_orientation, softmax_all
from xview_loc_ros.mount import CameraMount
from xview_loc_ros.params import LocalizerParams
from xview_loc_ros.preprocess import prepare_aerial, prepare_ground
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
        fix: Optional[Fix] = est.fix if est is not None else None
        if fix is None:
            try:
                fix = self.fixes.at(stamp)
            except FrameRejected:
                fix = None
        datum = self.datum
        if datum is None:
            return None
        fix_en: Optional[Tuple[float, float]] = None
        if fix is not None:
            fe, fn, _ = (float(x) for x in datum.to_enu(fix.lat, fix.lon, datum.h0))
            fix_en = (fe, fn)
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
            self._clock() - t0,
        )

    # -- per frame --------------------------------------------------------------------------------
    def patch_centre(self, stamp: float, fix: Fix) -> Tuple[float, float]:
        """(lat, lon) where the frame's aerial patch is cut: with ``patch_centre: belief`` the drive filter's
        position predicted to ``stamp`` while it tracks with a largest std under ``patch_centre_max_std_m``
        (so a GNSS jump or a large bias does not move the patch off the vehicle: the heat map keeps seeing
        it), else the fix."""
        f, p = self.filter, self.params
        if f is None or p.patch_centre != "belief" or self.datum is None or f.state != FilterState.TRACKING:
            return fix.lat, fix.lon
        est = f.estimate()
        if est is None or float(np.linalg.eigvalsh(est.cov_en)[-1]) > p.patch_centre_max_std_m**2:
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

        orientation = None
        if heading is None and "orientation" in getattr(self.backend, "outputs", ()):
            # unknown-orientation model: its orientation field gives the yaw at the estimate
            out = self.backend.infer_outputs(ground[None], aerial[None], ["heatmap", "orientation"])
            logits, orientation = np.asarray(out["heatmap"])[0], np.asarray(out["orientation"])[0]
        else:
            logits = np.asarray(self.backend.infer(ground[None], aerial[None]))[0]
        t3 = self._clock()
        timings["inference"] = t3 - t2

        if not np.all(np.isfinite(logits)):
            raise FrameRejected("model_output", "the model returned NaN or infinite logits")
        est: HeatmapEstimate = decode_heatmap(logits, self.size_px)
        prob = est.prob if est.prob is not None else softmax_all(logits).sum(axis=0)  # computed once
        georef = patch.georef
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

        reason = gate(est.confidence, est.ambiguity, d2, p)
        timings["decode"] = self._clock() - t3
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
            patch.image,
            logits,
            prob,
            not reason,
            reason,
            timings,
            (oe, on),
        )


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
