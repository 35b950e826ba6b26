# SPDX-License-Identifier: Apache-2.0
"""Recorded drives (rosbag2) -> unlabeled target-area pair data set.

Per bag: read the GNSS fixes (and IMU, ground truth, camera info) first, then walk the camera
frames in recording order. For every frame:

1. position = GNSS fix linearly interpolated at the image stamp; the frame is skipped when the
   bracketing fixes are further apart than ``max_fix_gap_s`` or the stamp is outside the fixes;
   fixes refused by :mod:`xview_loc_ros.sensors` (NO_FIX, non-WGS84 positions) are dropped before
   interpolation, by the same rules as the vehicle node; the pair keeps the fix's 1-sigma error and
   east/north covariance (``fix_std_m``, ``fix_cov_en``: NavSatFix position_covariance as the node
   reads it, interpolated like the node's fix buffer) for the adaptation's GNSS prior;
2. thinning: kept only when the vehicle moved at least ``min_spacing_m`` metres since the last
   kept frame of the same bag (so a stationary vehicle adds nothing), measured on the fix track
   smoothed by a local straight-line fit over ±``smooth_s`` seconds (GNSS noise of a few metres
   between fixes would otherwise pass for motion);
3. heading (compass degrees): IMU orientation (ENU, REP-145) interpolated at the stamp, else the
   course over ground of the smoothed track ±``cog_window_s`` around the stamp when the speed is at least
   ``min_cog_speed_mps``, else the fixed ``heading_deg``, else unknown (None);
4. the image is decoded by :mod:`xview_loc_ros.sensors` (a refused frame is counted as ``bad_image``
   and by its reason, and skipped) and the north-up aerial patch is
   cut centred on the *coarse* fix, exactly as the vehicle would see it at run time;
5. with ``odom_topic`` (``--odom-topic``; off by default, like the node's): the wheel odometry (parsed by
   :func:`xview_loc_ros.sensors.odometry_twist`, the node's rules) integrated between kept frames by the
   node's :class:`~xview_loc_ros.drive_filter.OdometryBuffer` from each frame's heading, stored per pair as
   ``extra["odom_en"]`` (east, north metres) and ``extra["odom_segment"]`` (a new segment at an odometry or
   heading gap): the drive smoother's motion between pairs (offline_adapt.adapt.drive_smooth). Data sets
   without them fall back to the motion of the fixes.

Every pair records the bag it came from (``extra["bag"]``): the drive it belongs to.

Stamps are header (sensor) times, the log time when a header is unset. Output is written by
:class:`~offline_adapt.data.dataset.DatasetWriter`: nothing appears at ``out`` until the run finishes;
an interrupted run leaves ``out.partial`` which ``resume=True`` continues.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Type

import cv2
import numpy as np

from offline_adapt.data.bags import (
    CAMERA_INFO_TYPES,
    FIX_TYPES,
    IMAGE_TYPES,
    IMU_TYPES,
    ODOM_TYPES,
    Bag,
    BagError,
    TopicError,
    header_stamp_ns,
)
from offline_adapt.data.dataset import GROUND_TYPES, SPLITS, DatasetMeta, DatasetWriter, PairRecord, write_rgb
from xview_loc_ros.drive_filter import OdometryBuffer
from xview_loc_ros.geo import LocalENU, compass_to_enu_yaw, enu_yaw_to_compass
from xview_loc_ros.sensors import (
    DEFAULT_MAX_IMAGE_PIXELS,
    SensorRejected,
    camera_intrinsics,
    decode_image,
    gnss_fix,
    image_shape,
    imu_yaw,
    odometry_twist,
    recorded_jpeg,
)
from xview_loc_ros.tiles import AerialPatchBuilder, TileDecodeError, TileNotFound, open_tile_source

log = logging.getLogger(__name__)

#: Skip reasons, in the order the summary prints them.
SKIP_REASONS = ("no_fix", "fix_gap", "spacing", "bad_image", "aerial_missing")


@dataclass
class ExtractOptions:
    """What to extract and how. Distances metres, times seconds, angles compass degrees.

    ``size_px``/``mpp``: aerial patch side (pixels) and resolution (metres per pixel).
    ``ground_size``: (height, width) pixels of the stored ground images; None takes the size most
    frames of the bags have (not the first frame's: one odd frame must not resize a whole data set).
    ``max_image_pixels``: camera frames declaring more pixels are refused before decoding.
    ``fov_deg``: horizontal FOV for pinhole cameras without a CameraInfo topic.
    ``split``: (train, val, test) fractions assigned by drive segment of ``segment_s`` seconds;
    None puts every pair in "train". ``max_missing``: largest fraction of a patch allowed to lack
    imagery (0 = any hole skips the pair).
    """

    size_px: int
    mpp: float
    ground_type: str = "panorama"
    ground_size: Optional[Tuple[int, int]] = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    fov_deg: Optional[float] = None
    image_topic: Optional[str] = None
    fix_topic: Optional[str] = None
    heading_topic: Optional[str] = None
    gt_topic: Optional[str] = None
    camera_info_topic: Optional[str] = None
    odom_topic: Optional[str] = None  # nav_msgs/Odometry; None = not read (the pairs then carry no odom_en)
    max_fix_gap_s: float = 2.0
    min_spacing_m: float = 3.0
    min_cog_speed_mps: float = 2.0
    cog_window_s: float = 1.0
    smooth_s: float = 1.0
    heading_deg: Optional[float] = None
    split: Optional[Tuple[float, float, float]] = None
    segment_s: float = 30.0
    max_missing: float = 0.0
    zoom: Optional[int] = None
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if int(self.size_px) <= 0 or not float(self.mpp) > 0:
            raise ValueError(f"aerial patch size and m/px must be > 0, got {self.size_px!r} px, {self.mpp!r} m/px")
        if self.ground_type not in GROUND_TYPES:
            raise ValueError(f"ground type must be one of {GROUND_TYPES}, got {self.ground_type!r}")
        if self.ground_size is not None and (len(self.ground_size) != 2 or min(self.ground_size) <= 0):
            raise ValueError(f"ground size must be HEIGHT WIDTH > 0 pixels, got {self.ground_size!r}")
        if not int(self.max_image_pixels) > 0:
            raise ValueError(f"max image pixels must be > 0, got {self.max_image_pixels!r}")
        for name in ("max_fix_gap_s", "segment_s", "cog_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if not self.smooth_s >= 0:
            raise ValueError(f"smoothing half-window must be >= 0 seconds, got {self.smooth_s!r}")
        if not self.min_spacing_m >= 0 or not self.min_cog_speed_mps >= 0:
            raise ValueError("min spacing (m) and course-over-ground speed threshold (m/s) must be >= 0")
        if not 0.0 <= self.max_missing < 1.0:
            raise ValueError(f"max missing fraction must be in [0, 1), got {self.max_missing!r}")
        if self.heading_deg is not None and not math.isfinite(self.heading_deg):
            raise ValueError(f"fixed heading must be a finite compass angle in degrees, got {self.heading_deg!r}")
        if self.fov_deg is not None and not 0 < self.fov_deg < 180:
            raise ValueError(f"pinhole horizontal FOV must be in (0, 180) degrees, got {self.fov_deg!r}")
        if self.split is not None:
            self.split = parse_split(self.split)
        self.size_px = int(self.size_px)
        if self.ground_size is not None:
            self.ground_size = (int(self.ground_size[0]), int(self.ground_size[1]))


def parse_split(spec: str | Sequence[float]) -> Tuple[float, float, float]:
    """'70,10,20' (or three numbers) -> train/val/test fractions summing to 1."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        vals = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"split must be three numbers TRAIN,VAL,TEST (e.g. 70,10,20), got {spec!r}") from None
    if len(vals) != 3 or min(vals) < 0 or not sum(vals) > 0 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"split must be three non-negative numbers TRAIN,VAL,TEST (e.g. 70,10,20), got {spec!r}")
    total = sum(vals)
    return (vals[0] / total, vals[1] / total, vals[2] / total)


# ---------------------------------------------------------------------------------------------
# Time series: fixes and yaw
# ---------------------------------------------------------------------------------------------
@dataclass
class FixTrack:
    """Usable GNSS fixes of one topic, sorted by stamp. ``t`` seconds; ``east``/``north`` metres in
    the ENU frame at the first fix, ``east_s``/``north_s`` the same smoothed (see :func:`smooth_track`);
    ``std_m`` 1-sigma horizontal error (NaN when not reported); ``cov`` (N, 3) the east/north
    covariance entries (ee, en, nn) in m^2 (NaN when not reported)."""

    t: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    east: np.ndarray
    north: np.ndarray
    east_s: np.ndarray
    north_s: np.ndarray
    std_m: np.ndarray
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    dropped: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_samples(
        cls, samples: Sequence[Tuple[float, ...]], dropped: Dict[str, int], smooth_s: float = 1.0
    ) -> "FixTrack":
        """``samples``: (t s, lat deg, lon deg, std m or NaN[, cov ee, en, nn m^2 or NaN]) of usable
        fixes (:func:`fix_sample`), any order; without covariance entries the covariance is unknown."""
        if not samples:
            e = np.zeros(0)
            return cls(e, e, e, e, e, e, e, e, np.zeros((0, 3)), dropped)
        rows = [tuple(s) + (math.nan,) * (7 - len(s)) for s in samples]
        arr = np.array(sorted(rows, key=lambda s: s[0]), dtype=np.float64)
        keep = np.concatenate([[True], np.diff(arr[:, 0]) > 0])  # duplicate stamps: first one wins
        arr = arr[keep]
        t, lat, lon, std = arr[:, :4].T
        east, north, _ = LocalENU(float(lat[0]), float(lon[0])).to_enu(lat, lon, 0.0)
        east, north = np.asarray(east, float), np.asarray(north, float)
        return cls(
            t,
            lat,
            lon,
            east,
            north,
            smooth_track(t, east, smooth_s),
            smooth_track(t, north, smooth_s),
            std,
            arr[:, 4:7],
            dropped,
        )

    def __len__(self) -> int:
        return int(self.t.size)

    def bracket(self, t: float, max_gap_s: float) -> Tuple[Optional[Tuple[int, int, float]], str]:
        """(i, j, w) with value = (1-w)*x[i] + w*x[j] at time t, or (None, reason)."""
        if len(self) == 0 or t < self.t[0] or t > self.t[-1]:
            return None, "no_fix"
        j = int(np.searchsorted(self.t, t, side="left"))
        if self.t[j] == t:
            return (j, j, 0.0), ""
        i = j - 1
        if self.t[j] - self.t[i] > max_gap_s:
            return None, "fix_gap"
        return (i, j, float((t - self.t[i]) / (self.t[j] - self.t[i]))), ""

    def at(self, t: float, max_gap_s: float) -> Tuple[Optional[Dict[str, Any]], str]:
        """Interpolated fix at time ``t`` s: dict(lat, lon, east, north, east_s, north_s, std_m,
        cov_en) or (None, skip reason). ``cov_en``: [[ee, en], [en, nn]] m^2 interpolated linearly
        like the node's fix buffer (a convex mix of covariances is one), None when either bracketing
        fix lacks it."""
        b, reason = self.bracket(t, max_gap_s)
        if b is None:
            return None, reason
        i, j, w = b
        out: Dict[str, Any] = {
            k: float((1 - w) * getattr(self, k)[i] + w * getattr(self, k)[j])
            for k in ("lat", "lon", "east", "north", "east_s", "north_s")
        }
        out["std_m"] = float(max(self.std_m[i], self.std_m[j]))
        c = (1 - w) * self.cov[i] + w * self.cov[j] if len(self.cov) else np.full(3, math.nan)
        out["cov_en"] = [[float(c[0]), float(c[1])], [float(c[1]), float(c[2])]] if np.all(np.isfinite(c)) else None
        return out, ""

    def course_at(self, t: float, window_s: float, max_gap_s: float, min_speed: float) -> Optional[float]:
        """Compass course over ground (degrees) from the smoothed positions at t ± window_s; None when
        either end is not covered or the speed is below ``min_speed`` m/s (course is noise there)."""
        a, _ = self.at(t - window_s, max_gap_s)
        b, _ = self.at(t + window_s, max_gap_s)
        if a is None or b is None:
            return None
        de, dn = b["east_s"] - a["east_s"], b["north_s"] - a["north_s"]
        if math.hypot(de, dn) / (2.0 * window_s) < max(min_speed, 1e-6):
            return None
        return float(enu_yaw_to_compass(math.atan2(dn, de)))


def smooth_track(t: np.ndarray, x: np.ndarray, half_window_s: float) -> np.ndarray:
    """``x`` at each ``t`` from a least-squares straight line through the samples within
    ±``half_window_s`` seconds: removes white GNSS noise, exact on straight constant-speed
    stretches (also at the ends of the track, unlike a moving average)."""
    if t.size < 2 or half_window_s <= 0:
        return x.copy()
    tc = t - t.mean()
    lo = np.searchsorted(tc, tc - half_window_s, side="left")
    hi = np.searchsorted(tc, tc + half_window_s, side="right")

    def wsum(a: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(a)])
        return c[hi] - c[lo]

    n, st, stt, sx, stx = hi - lo, wsum(tc), wsum(tc * tc), wsum(x), wsum(tc * x)
    den = n * stt - st * st
    ok = den > 1e-12 * np.maximum(n * stt, 1.0)
    slope = np.where(ok, (n * stx - st * sx) / np.where(ok, den, 1.0), 0.0)
    return (sx - slope * st) / n + slope * tc


@dataclass
class YawTrack:
    """ENU yaw (radians, unwrapped) from an orientation topic, sorted by stamp ``t`` seconds."""

    t: np.ndarray
    yaw: np.ndarray

    @classmethod
    def from_samples(cls, samples: List[Tuple[float, float]]) -> "YawTrack":
        if not samples:
            return cls(np.zeros(0), np.zeros(0))
        arr = np.array(sorted(samples), dtype=np.float64)
        return cls(arr[:, 0], np.unwrap(arr[:, 1]))

    def compass_at(self, t: float, max_gap_s: float) -> Optional[float]:
        """Compass heading (degrees) at ``t`` interpolated between bracketing samples, None if not covered."""
        if self.t.size == 0 or t < self.t[0] or t > self.t[-1]:
            return None
        j = int(np.searchsorted(self.t, t, side="left"))
        if self.t[j] == t:
            return float(enu_yaw_to_compass(self.yaw[j]))
        i = j - 1
        if self.t[j] - self.t[i] > max_gap_s:
            return None
        w = (t - self.t[i]) / (self.t[j] - self.t[i])
        return float(enu_yaw_to_compass((1 - w) * self.yaw[i] + w * self.yaw[j]))


def fix_sample(msg: Any, t: float, dropped: Dict[str, int]) -> Optional[Tuple[float, ...]]:
    """(t, lat, lon, std_m, cov_ee, cov_en, cov_nn) of a usable NavSatFix: std in metres and the
    east/north covariance in m^2 as :func:`xview_loc_ros.sensors.gnss_fix` reads position_covariance
    (NaN when not reported); None, counted in ``dropped`` under the :mod:`xview_loc_ros.sensors`
    reason, for a refused one."""
    try:
        f = gnss_fix(msg)
    except SensorRejected as e:
        dropped[e.reason] = dropped.get(e.reason, 0) + 1
        return None
    c = f.cov_en if f.cov_en is not None else np.full((2, 2), math.nan)
    return t, f.lat, f.lon, f.std_m, float(c[0, 0]), float(c[0, 1]), float(c[1, 1])


def imu_yaw_sample(msg: Any, t: float, dropped: Dict[str, int]) -> Optional[Tuple[float, float]]:
    """(t, ENU yaw rad) of an Imu message; None, counted in ``dropped`` under the
    :mod:`xview_loc_ros.sensors` reason, when it carries no usable orientation."""
    try:
        return t, imu_yaw(msg).yaw_rad
    except SensorRejected as e:
        dropped[e.reason] = dropped.get(e.reason, 0) + 1
        return None


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------
def assign_splits(
    records: Sequence[PairRecord], fractions: Tuple[float, float, float], segment_s: float
) -> Dict[str, str]:
    """Pair id -> split, by drive segment: each bag's pairs are cut into contiguous blocks of
    ``segment_s`` seconds; blocks, in recording order, go to the split furthest below its target
    share of pairs so far. Neighbouring frames (near-duplicates) thus share a split, and every
    split samples the whole recording period."""
    segments: Dict[Tuple[str, int], List[PairRecord]] = {}
    starts: Dict[str, float] = {}
    for r in records:
        bag = str(r.extra.get("bag", ""))
        starts[bag] = min(starts.get(bag, math.inf), float(r.stamp or 0.0))
    bag_order = {b: i for i, b in enumerate(dict.fromkeys(str(r.extra.get("bag", "")) for r in records))}
    for r in records:
        bag = str(r.extra.get("bag", ""))
        seg = int((float(r.stamp or 0.0) - starts[bag]) // segment_s)
        segments.setdefault((bag, seg), []).append(r)
    assigned = dict.fromkeys(SPLITS, 0)
    total = 0
    out: Dict[str, str] = {}
    for key in sorted(segments, key=lambda k: (bag_order[k[0]], k[1])):
        members = segments[key]
        total += len(members)
        name = max(SPLITS, key=lambda s: (fractions[SPLITS.index(s)] * total - assigned[s], -SPLITS.index(s)))
        assigned[name] += len(members)
        for r in members:
            out[r.id] = name
    return out


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
@dataclass
class BagPlan:
    """Topics and time series of one bag, read before its frames are walked."""

    path: Path
    image_topic: str
    image_count: int
    fix_topic: str
    fixes: FixTrack
    heading_topic: Optional[str] = None
    yaw: Optional[YawTrack] = None
    gt: Optional[FixTrack] = None
    camera_info: Optional[Dict[str, Any]] = None
    odom_topic: Optional[str] = None
    odom: Optional[OdometryBuffer] = None


@dataclass
class ExtractSummary:
    out: Path
    pairs: int
    counts: Dict[str, int]
    seconds: float
    heading_sources: Dict[str, int]
    splits: Dict[str, int]

    def format(self) -> str:
        c = self.counts
        refused = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k.startswith("image_"))  # bad_image by reason
        skipped = ", ".join(
            f"{r} {c.get(r, 0)}" + (f" ({refused})" if r == "bad_image" and refused else "") for r in SKIP_REASONS
        )
        fixes = ", ".join(f"{k[4:]} {v}" for k, v in c.items() if k.startswith("fix_") and k != "fix_gap") or "none"
        heads = ", ".join(f"{k} {v}" for k, v in sorted(self.heading_sources.items())) or "none"
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        rate = c.get("kept", 0) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.out}: {self.pairs} pairs ({c.get('kept', 0)} new, {c.get('resumed', 0)} resumed) "
            f"from {c.get('frames', 0)} frames in {self.seconds:.1f} s ({rate:.1f} pairs/s)\n"
            f"  frames skipped: {skipped}\n  fixes dropped: {fixes}\n  heading: {heads}\n  splits: {splits}"
        )


def _plan_bag(bag: Bag, opts: ExtractOptions) -> BagPlan:
    """Find the topics and read fixes, IMU yaw, ground truth and camera info of an open bag."""
    image = bag.find_topic(IMAGE_TYPES, "camera image", opts.image_topic, flag="--image-topic")
    gt = bag.find_topic(FIX_TYPES, "ground-truth fix", opts.gt_topic, flag="--gt-topic") if opts.gt_topic else None
    auto_excluded = {t for t in (gt,) if t} | {
        t.topic for t in bag.topics if "ground_truth" in t.topic or "groundtruth" in t.topic
    }
    fix = bag.find_topic(FIX_TYPES, "GNSS fix", opts.fix_topic, exclude=auto_excluded, flag="--fix-topic")
    heading = bag.find_topic(IMU_TYPES, "heading (IMU)", opts.heading_topic, required=False, flag="--heading-topic")
    odom = bag.find_topic(ODOM_TYPES, "odometry", opts.odom_topic, flag="--odom-topic") if opts.odom_topic else None
    assert image is not None and fix is not None  # required topics: find_topic raised when absent
    info = _camera_info_topic(bag, image, opts.camera_info_topic) if opts.ground_type == "pinhole" else None

    fix_samples: List[Tuple[float, ...]] = []
    gt_samples: List[Tuple[float, ...]] = []
    yaw_samples: List[Tuple[float, float]] = []
    odom_samples: List[Tuple[float, float, float]] = []
    dropped: Dict[str, int] = {}
    gt_dropped: Dict[str, int] = {}
    camera_info: Optional[Dict[str, Any]] = None
    topics = [t for t in (fix, gt, heading, info, odom) if t]
    for topic, log_ns, msg in bag.messages(topics):
        if isinstance(msg, BagError):
            dropped["fix_bad_message"] = dropped.get("fix_bad_message", 0) + 1
            continue
        t = header_stamp_ns(msg, log_ns) * 1e-9
        if topic == fix:
            s = fix_sample(msg, t, dropped)
            if s:
                fix_samples.append(s)
        if topic == gt:
            s = fix_sample(msg, t, gt_dropped)
            if s:
                gt_samples.append(s)
        if topic == heading:
            y = imu_yaw_sample(msg, t, dropped)
            if y:
                yaw_samples.append(y)
        if topic == odom:
            try:
                tw = odometry_twist(msg)  # the node's accept/reject rules
                odom_samples.append((t, tw.speed_mps, tw.yaw_rate_rps))
            except SensorRejected as e:
                dropped[e.reason] = dropped.get(e.reason, 0) + 1
        if topic == info and camera_info is None:
            try:
                camera_info = asdict(camera_intrinsics(msg))
            except SensorRejected as e:
                dropped[e.reason] = dropped.get(e.reason, 0) + 1
    fixes = FixTrack.from_samples(fix_samples, dropped, opts.smooth_s)
    if len(fixes) == 0:
        raise TopicError(f"{bag.path}: fix topic {fix!r} holds no usable fix (dropped: {dropped or 'none'})")
    return BagPlan(
        path=bag.path,
        image_topic=image,
        image_count=bag.topic_info(image).count,
        fix_topic=fix,
        fixes=fixes,
        heading_topic=heading if yaw_samples else None,
        yaw=YawTrack.from_samples(yaw_samples) if yaw_samples else None,
        gt=FixTrack.from_samples(gt_samples, gt_dropped) if gt else None,
        camera_info=camera_info,
        odom_topic=odom if odom_samples else None,
        odom=_odometry_buffer(odom_samples) if odom_samples else None,
    )


def _odometry_buffer(samples: List[Tuple[float, float, float]]) -> OdometryBuffer:
    """The bag's odometry in the node's buffer (each sample holds for the node's default 0.5 s)."""
    buf = OdometryBuffer(maxlen=len(samples) + 1)
    for t, v, w in sorted(samples):
        buf.add(t, v, w)
    return buf


class _OdometryTrack:
    """Dead reckoning over a bag's kept frames, for the drive smoother (offline_adapt.adapt.drive_smooth):
    each frame's position (east, north metres, in an arbitrary frame of its ``segment``) integrated from the
    previous kept frame's by :meth:`xview_loc_ros.drive_filter.OdometryBuffer.displacement` (the node's
    integration) from that frame's heading; a new segment starts where the odometry or the heading has a
    gap. Only differences within a segment mean anything."""

    def __init__(self, buf: OdometryBuffer) -> None:
        self.buf = buf
        self.prev: Optional[Tuple[float, Optional[float]]] = None  # stamp, compass heading of the last frame
        self.pos = (0.0, 0.0)
        self.segment = 0

    def at(self, t: float, heading: Optional[float]) -> Tuple[float, float, int]:
        if self.prev is not None:
            t0, h0 = self.prev
            d = None if h0 is None else self.buf.displacement(t0, t, float(compass_to_enu_yaw(h0)))
            if d is None:
                self.segment += 1
                self.pos = (0.0, 0.0)
            else:
                self.pos = (self.pos[0] + d[0], self.pos[1] + d[1])
        self.prev = (t, heading)
        return self.pos[0], self.pos[1], self.segment


def _camera_info_topic(bag: Bag, image_topic: str, override: Optional[str]) -> Optional[str]:
    if override:
        return bag.find_topic(CAMERA_INFO_TYPES, "camera info", override, flag="--camera-info-topic")
    infos = [t.topic for t in bag.topics if t.msgtype in CAMERA_INFO_TYPES and t.count > 0]
    # The camera_info of an image topic lives in the same namespace (image_transport convention).
    ns = image_topic
    while ns and len(infos) > 1:
        ns = ns.rsplit("/", 1)[0]
        same = [t for t in infos if t.startswith(ns + "/")]
        if len(same) == 1:
            return same[0]
    return infos[0] if len(infos) == 1 else None


def _pinhole_meta(
    opts: ExtractOptions, plans: Sequence[BagPlan], size_hw: Tuple[int, int]
) -> Tuple[List[float], float]:
    """(fx, fy, cx, cy) pixels at the stored size, and horizontal FOV degrees."""
    h, w = size_hw
    info = next((p.camera_info for p in plans if p.camera_info), None)
    if info:
        sx, sy = w / info["width"], h / info["height"]
        intr = [info["fx"] * sx, info["fy"] * sy, info["cx"] * sx, info["cy"] * sy]
    else:
        assert opts.fov_deg is not None  # pinhole runs without CameraInfo were refused without a FOV
        f = (w / 2.0) / math.tan(math.radians(float(opts.fov_deg)) / 2.0)
        intr = [f, f, w / 2.0, h / 2.0]
    fov = math.degrees(2.0 * math.atan((w / 2.0) / intr[0]))
    return intr, fov


def _bag_ids(paths: Sequence[Path]) -> List[str]:
    names = [p.stem if p.is_file() else p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{i:02d}_{n}" for i, n in enumerate(names)]


def extract(
    bags: Sequence[str | Path],
    tiles: str,
    out: str | Path,
    opts: ExtractOptions,
    resume: bool = False,
    overwrite: bool = False,
    cache_dir: Optional[str | Path] = None,
    progress: bool = True,
) -> ExtractSummary:
    """Extract (ground, aerial) pairs from ``bags`` into the data set ``out``; see the module docstring."""
    t_start = time.perf_counter()
    paths = [Path(b) for b in bags]
    if not paths:
        raise ValueError("no bag given")
    out = Path(out)
    plans: List[BagPlan] = []
    for p in paths:  # every bag is checked before anything is written
        with Bag(p) as bag:
            plans.append(_plan_bag(bag, opts))
            log.info(
                "%s: images %s (%d), fixes %s (%d usable), heading %s, ground truth %s",
                p,
                plans[-1].image_topic,
                plans[-1].image_count,
                plans[-1].fix_topic,
                len(plans[-1].fixes),
                plans[-1].heading_topic or "-",
                opts.gt_topic or "-",
            )
    if opts.ground_type == "pinhole" and not any(p.camera_info for p in plans) and opts.fov_deg is None:
        raise TopicError(
            f"{paths[0]}: pinhole ground images need camera intrinsics, but no CameraInfo topic was found "
            "(name it with --camera-info-topic, or give --fov-deg)"
        )

    size_hw = opts.ground_size or _majority_size(plans, opts.max_image_pixels)
    source = open_tile_source(tiles, cache_dir=cache_dir)
    builder = AerialPatchBuilder(source, opts.size_px, opts.mpp, zoom=opts.zoom, allow_missing=opts.max_missing > 0)
    meta = DatasetMeta(
        ground_type=opts.ground_type,
        ground_size=list(size_hw),
        fov_deg=360.0 if opts.ground_type == "panorama" else float(opts.fov_deg or 90.0),
        patch_size_px=opts.size_px,
        mpp=opts.mpp,
        name=out.name,
        source="rosbag2",
    )
    settings = {"bags": [str(p.resolve()) for p in paths], "tiles": tiles, "options": asdict(opts)}
    counts: Dict[str, int] = {"frames": 0, "kept": 0, "resumed": 0, **dict.fromkeys(SKIP_REASONS, 0)}
    for plan in plans:  # messages refused before interpolation (NO_FIX fixes, IMU without orientation, ...)
        for reason, n in plan.fixes.dropped.items():
            counts[reason] = counts.get(reason, 0) + n
    heading_sources: Dict[str, int] = {}
    writer = DatasetWriter(out, meta, resume=resume, overwrite=overwrite)
    try:
        with writer:
            _check_resume_settings(writer, settings)
            done = writer.done_ids
            for plan, bag_id in zip(plans, _bag_ids(paths)):
                if source.spec.startswith(("http://", "https://")):
                    # Network sources: fill the disk cache along the drive while frames are decoded.
                    step = max(1, len(plan.fixes) // 2000)
                    builder.prefetch(list(zip(plan.fixes.lat[::step], plan.fixes.lon[::step])))
                sink = _PairSink(writer, counts)
                try:
                    _walk_bag(
                        plan,
                        bag_id,
                        opts,
                        builder,
                        sink,
                        done,
                        counts,
                        heading_sources,
                        size_hw,
                        progress,
                        (TileNotFound, TileDecodeError),
                    )
                    sink.flush()
                finally:
                    sink.close()
            if not writer.records:
                raise ValueError(
                    f"no pairs extracted from {', '.join(map(str, paths))}: "
                    + ", ".join(f"{k} {v}" for k, v in counts.items())
                )
            if opts.ground_type == "pinhole":
                meta.intrinsics, meta.fov_deg = _pinhole_meta(opts, plans, size_hw)
            meta.extra = {
                "extract": settings,
                "counts": counts,
                "heading_sources": heading_sources,
                "camera_info": next((p.camera_info for p in plans if p.camera_info), None),
            }
            split_map = assign_splits(writer.records, opts.split, opts.segment_s) if opts.split else None
            writer.commit(split_map)
    except BagError:
        # A corrupt bag will be just as corrupt next time: leave nothing behind.
        shutil.rmtree(writer.tmp, ignore_errors=True)
        raise
    except BaseException:
        if writer.tmp.exists():
            log.error("stopped: partial output kept in %s; rerun with --resume to continue", writer.tmp)
        raise
    finally:
        builder.close()
        source.close()
    splits = {s: sum(r.split == s for r in writer.records) for s in SPLITS}
    return ExtractSummary(out, len(writer.records), counts, time.perf_counter() - t_start, heading_sources, splits)


def _check_resume_settings(writer: DatasetWriter, settings: Dict[str, Any]) -> None:
    path = writer.path("extract_settings.json")
    text = json.dumps(settings, sort_keys=True, default=str)
    if writer.records and path.is_file() and path.read_text() != text:
        raise ValueError(
            f"{writer.tmp}: --resume with different bags, tiles or options than the interrupted run "
            "(start afresh without --resume)"
        )
    path.write_text(text)


def _walk_bag(
    plan: BagPlan,
    bag_id: str,
    opts: ExtractOptions,
    builder: Any,
    sink: _PairSink,
    done: set,
    counts: Dict[str, int],
    heading_sources: Dict[str, int],
    size_hw: Tuple[int, int],
    progress: bool,
    tile_skips: Tuple[Type[BaseException], ...],
) -> None:
    from tqdm import tqdm

    last: Optional[Tuple[float, float]] = None
    min_sq = opts.min_spacing_m**2
    odo = _OdometryTrack(plan.odom) if plan.odom is not None else None
    bar = tqdm(total=plan.image_count, desc=bag_id, unit="frame", disable=not progress, leave=False)
    with Bag(plan.path) as bag:
        for _, log_ns, msg in bag.messages([plan.image_topic]):
            bar.update(1)
            counts["frames"] += 1
            if isinstance(msg, BagError):
                counts["bad_image"] += 1
                log.debug("%s", msg)
                continue
            stamp_ns = header_stamp_ns(msg, log_ns)
            t = stamp_ns * 1e-9
            fix, reason = plan.fixes.at(t, opts.max_fix_gap_s)
            if fix is None:
                counts[reason] += 1
                continue
            if last is not None and (fix["east_s"] - last[0]) ** 2 + (fix["north_s"] - last[1]) ** 2 < min_sq:
                counts["spacing"] += 1
                continue
            pair_id = f"{bag_id}_{stamp_ns}"
            if pair_id in done:
                counts["resumed"] += 1
                last = (fix["east_s"], fix["north_s"])
                if odo is not None:
                    odo.at(t, _heading(plan, t, opts)[0])
                continue
            try:
                raw_jpeg, rgb = ground_image(msg, size_hw, opts.max_image_pixels)
            except SensorRejected as e:
                counts["bad_image"] += 1
                counts[e.reason] = counts.get(e.reason, 0) + 1
                log.debug("%s %s at %d ns: %s", plan.path, plan.image_topic, stamp_ns, e)
                continue
            try:
                patch = builder.build(fix["lat"], fix["lon"])
            except tile_skips as e:
                counts["aerial_missing"] += 1
                log.debug("%s", e)
                continue
            if patch.missing_fraction > opts.max_missing:
                counts["aerial_missing"] += 1
                continue
            heading, source = _heading(plan, t, opts)
            heading_sources[source] = heading_sources.get(source, 0) + 1
            odom = odo.at(t, heading) if odo is not None else None
            sink.submit(
                _pair_record(pair_id, fix, heading, source, plan, stamp_ns, t, opts, odom),
                raw_jpeg,
                rgb,
                patch.image,
                size_hw,
                opts.jpeg_quality,
            )
            last = (fix["east_s"], fix["north_s"])
    bar.close()


def ground_image(
    msg: Any, store_hw: Optional[Tuple[int, int]], max_pixels: int
) -> Tuple[Optional[bytes], Optional[np.ndarray]]:
    """A camera frame as it will be stored: (JPEG bytes as recorded, None) for a complete JPEG of
    ``store_hw`` (height, width) pixels (None = any size): no full decode, no re-encode loss; else
    (None, RGB uint8 pixels). Refused frames raise :class:`~xview_loc_ros.sensors.SensorRejected`: the
    node's rules, plus strict JPEG decoding, since a frame with damaged entropy data (which the node
    still uses) must not become training data."""
    raw = recorded_jpeg(msg)
    if raw is not None and (store_hw is None or image_shape(msg, max_pixels) == store_hw):
        decode_image(
            msg, max_pixels, min_size=(1, 1), strict=True
        )  # the whole stream decodes cleanly; 1/8 scale is cheap
        return raw, None
    return None, decode_image(msg, max_pixels, strict=True)


def _majority_size(plans: Sequence[BagPlan], max_pixels: int) -> Tuple[int, int]:
    """(height, width) most camera frames of the bags declare (headers only, no decoding)."""
    sizes: Counter = Counter()
    for plan in plans:
        with Bag(plan.path) as bag:
            for _, _, msg in bag.messages([plan.image_topic]):
                if isinstance(msg, BagError):
                    continue
                try:
                    sizes[image_shape(msg, max_pixels)] += 1
                except SensorRejected:
                    continue  # counted when the frames are walked
    if not sizes:
        raise ValueError(
            f"no camera frame in {', '.join(str(p.path) for p in plans)} is usable "
            f"(unsupported, corrupt, or above the cap of {max_pixels} px)"
        )
    ((size, n),) = sizes.most_common(1)
    log.info(
        "ground images stored at %dx%d px (width x height), the size of %d of %d frames",
        size[1],
        size[0],
        n,
        sum(sizes.values()),
    )
    return size


def _heading(plan: BagPlan, t: float, opts: ExtractOptions) -> Tuple[Optional[float], str]:
    if plan.yaw is not None:
        h = plan.yaw.compass_at(t, opts.max_fix_gap_s)
        if h is not None:
            return h, "imu"
    h = plan.fixes.course_at(t, opts.cog_window_s, opts.max_fix_gap_s, opts.min_cog_speed_mps)
    if h is not None:
        return h, "course_over_ground"
    if opts.heading_deg is not None:
        return float(opts.heading_deg) % 360.0, "fixed"
    return None, "unknown"


def _write_images(
    writer: DatasetWriter,
    rec: PairRecord,
    raw_jpeg: Optional[bytes],
    rgb: Optional[np.ndarray],
    aerial: np.ndarray,
    size_hw: Tuple[int, int],
    jpeg_quality: int,
) -> None:
    """The pair's ground image (recorded JPEG bytes as-is, else encoded at ``size_hw``) and aerial PNG."""
    if raw_jpeg is not None:
        writer.path(rec.ground).write_bytes(raw_jpeg)
    elif rgb is not None:
        h, w = size_hw
        if rgb.shape[:2] != (h, w):
            shrink = rgb.shape[0] > h or rgb.shape[1] > w
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        write_rgb(writer.path(rec.ground), rgb, jpeg_quality)
    write_rgb(writer.path(rec.aerial), aerial)


def _pair_record(
    pair_id: str,
    fix: Dict[str, Any],
    heading: Optional[float],
    heading_source: str,
    plan: BagPlan,
    stamp_ns: int,
    t: float,
    opts: ExtractOptions,
    odom: Optional[Tuple[float, float, int]] = None,
) -> PairRecord:
    gt_lat = gt_lon = None
    if plan.gt is not None:
        g, _ = plan.gt.at(t, opts.max_fix_gap_s)
        if g is not None:
            gt_lat, gt_lon = g["lat"], g["lon"]
    std = fix["std_m"]
    return PairRecord(
        id=pair_id,
        ground=f"ground/{pair_id}.jpg",
        aerial=f"aerial/{pair_id}.png",
        center_lat=fix["lat"],
        center_lon=fix["lon"],
        mpp=opts.mpp,
        size_px=opts.size_px,
        heading_deg=heading,
        fix_lat=fix["lat"],
        fix_lon=fix["lon"],
        fix_std_m=std if math.isfinite(std) else None,
        fix_cov_en=fix["cov_en"],
        gt_lat=gt_lat,
        gt_lon=gt_lon,
        stamp=t,
        source="rosbag2",
        heading_source=heading_source,
        extra={
            "bag": str(plan.path),
            "topic": plan.image_topic,
            "stamp_ns": stamp_ns,
            "fix_topic": plan.fix_topic,
            # odometry dead reckoning (--odom-topic): east/north metres within its segment (_OdometryTrack)
            **({} if odom is None else {"odom_en": [odom[0], odom[1]], "odom_segment": odom[2]}),
        },
    )


class _PairSink:
    """Encodes and writes pairs' images on worker threads (OpenCV releases the GIL) while the main
    thread reads the next frames; records enter the index in recording order and only after their
    files exist, so an interrupted run never indexes a missing image."""

    def __init__(self, writer: DatasetWriter, counts: Dict[str, int], workers: int = 2, max_pending: int = 4) -> None:
        self.writer, self.counts, self.max_pending = writer, counts, max_pending
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="pair-writer")
        self.pending: Deque[Tuple[Future, PairRecord]] = deque()

    def submit(self, rec: PairRecord, *image_args: Any) -> None:
        self.pending.append((self.pool.submit(_write_images, self.writer, rec, *image_args), rec))
        self._drain(everything=False)

    def _drain(self, everything: bool) -> None:
        while self.pending and (everything or len(self.pending) > self.max_pending or self.pending[0][0].done()):
            fut, rec = self.pending.popleft()
            fut.result()
            self.writer.add(rec)
            self.counts["kept"] += 1

    def flush(self) -> None:
        self._drain(everything=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
