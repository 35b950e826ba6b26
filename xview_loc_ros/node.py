# SPDX-License-Identifier: Apache-2.0
"""The rclpy node ``localizer_node`` (default name ``xview_localizer``).

Subscriptions (sensor-data QoS) only store inputs; camera frames go to a latest-frame slot (a queue
of one: an unprocessed frame is replaced and counted as dropped) that a worker thread drains, so
inference never blocks the executor and diagnostics stay on time. The worker publishes ``~/pose``,
``~/fix`` and ``~/frame_pose`` and hands the RViz outputs (overlay image, heat-map grid, markers,
belief grid) to a second thread through another slot of one, rate-limited by ``viz_max_rate_hz``:
the pose path never waits on visualization (on a loaded 2-core machine drawing and publishing them took
28 ms median, 60 ms p95 per frame of which about 4 ms was CPU: the rest was waiting for the GIL and
the cores, and it delayed the next frame's pose). Bad messages are logged (throttled per
reason), counted and dropped. Parameters carry descriptors (``ros2 param describe``); those marked
runtime in :mod:`xview_loc_ros.params` apply when set, the others are read-only. See README "The ROS 2
node" for topics and parameters.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import threading
import time
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

try:  # tf2_msgs is part of every ROS install but not of the PyPI wheels: then the mount comes from parameters
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the install
    TFMessage = None

from xview_loc_ros import ros_msgs as rm
from xview_loc_ros.geo import LocalENU
from xview_loc_ros.inference import open_backend
from xview_loc_ros.localizer import (
    GATE_REASONS,
    STAGES,
    Estimate,
    FrameRejected,
    Localizer,
    TrackedPose,
    stage_summary,
)
from xview_loc_ros.mount import mount_from_transforms
from xview_loc_ros.overlay import heatmap_overlay
from xview_loc_ros.params import NODE_NAME, LocalizerParams, ParameterError, ParamInfo, param_info
from xview_loc_ros.params_file import check_ros_args
from xview_loc_ros.relocalize import RelocOutcome, RelocUnavailable, open_index
from xview_loc_ros.relocalize import summary as reloc_summary
from xview_loc_ros.sensors import SensorRejected, decode_image
from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source

_WINDOW = 200  # frames kept for latency / stage statistics
FILTERED_RGBA = (0.1, 0.4, 1.0, 0.6)  # the filtered pose's ellipse in ~/marker (id 2)
_DOUBLE_MAX = sys.float_info.max  # an unbounded side of a documented range (rcl ranges are finite doubles)


def parameter_descriptor(name: str, default: Any, info: ParamInfo) -> ParameterDescriptor:
    """The ROS descriptor of a LocalizerParams field: description with its unit, the documented range
    (validate() may be stricter, e.g. > 0), read-only unless the running node applies changes. Dynamic
    typing: a YAML integer for a float parameter is accepted; validate() checks the types."""
    unit = f" [{info.unit}]" if info.unit else ""
    d = ParameterDescriptor(
        name=name,
        description=f"{info.description}{unit}",
        read_only=not info.runtime,
        dynamic_typing=True,
        additional_constraints="" if info.runtime else "needs a restart",
    )
    rng = info.range
    if rng is not None and isinstance(default, float):
        lo, hi = (max(min(x, _DOUBLE_MAX), -_DOUBLE_MAX) for x in rng)
        d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    elif rng is not None and isinstance(default, int) and not isinstance(default, bool):
        d.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=1)]
    return d


class RateGate:
    """Lets events through at ``rate_hz`` on average at most (0 = every event). An event up to a quarter
    period early passes (camera and worker timing jitter), and the schedule then continues from it, so
    a camera at exactly the limit is not halved by jitter."""

    def __init__(self) -> None:
        self._next = -math.inf  # monotonic seconds from which the next event passes

    def allow(self, now: float, rate_hz: float) -> bool:
        """True when an event at ``now`` (monotonic seconds) passes."""
        if rate_hz <= 0:
            return True
        period = 1.0 / rate_hz
        if now < self._next - 0.25 * period:
            return False
        self._next = max(self._next, now - 0.25 * period) + period
        return True


@dataclasses.dataclass
class VizJob:
    """What the visualization thread needs of one frame: taken on the worker after the pose is out
    (``belief``: a copy of the filter's grid, since the worker moves on with the filter)."""

    header: Header  # stamp of the image, frame_id map_frame
    est: Optional[Estimate]
    tracked: Optional[TrackedPose]
    datum: Optional[LocalENU]
    belief: Optional[Tuple[np.ndarray, float, float, float]]  # drive_filter.DriveFilter.belief_grid()


def diagnostic_summary(
    counts: Mapping[str, int], prev: Mapping[str, int], filtering: bool, period_s: float
) -> Tuple[int, str]:
    """Level (0 OK, 1 WARN) and message of the node's status from the counters now (``counts``) and at the
    previous status (``prev``): ``frames_dropped`` (replaced in the one-frame slot while the worker was
    busy), ``gated_<reason>`` (an estimate the gate refused; with the filter its heat map was still used),
    ``rejected_<reason>`` (a frame that gave no estimate), ``bad_<reason>`` (a malformed input message),
    ``published`` (poses out). WARN when nothing was published since the start, or when frames were
    rejected or messages refused in the last period; drops and gating alone are reported, not warned."""

    def new(prefix: str) -> Dict[str, int]:
        out = {}
        for k, v in counts.items():
            if k.startswith(prefix) and v - prev.get(k, 0) > 0:
                out[k[len(prefix) :]] = v - prev.get(k, 0)
        return out

    def listed(d: Dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))

    dropped = counts.get("frames_dropped", 0) - prev.get("frames_dropped", 0)
    gated, rejected, bad = new("gated_"), new("rejected_"), new("bad_")
    published = counts.get("published", 0)
    parts = []
    if rejected:
        n = sum(rejected.values())
        parts.append(f"{n} frame{'s' * (n != 1)} rejected, no estimate ({listed(rejected)})")
    if bad:
        n = sum(bad.values())
        parts.append(f"{n} input message{'s' * (n != 1)} refused ({listed(bad)})")
    if gated:
        n = sum(gated.values())
        use = "heat map still used by the filter" if filtering else "no pose published"
        parts.append(f"{n} frame{'s' * (n != 1)} gated, {use} ({listed(gated)})")
    if dropped > 0:
        parts.append(f"{dropped} frame{'s' * (dropped != 1)} dropped while busy (queue of one)")
    level = 1 if (not published or rejected or bad) else 0
    head = "localizing" if published else "no pose yet"
    window = f" in the last {period_s:g} s" if parts else ""
    return level, head + (f"; {'; '.join(parts)}{window}" if parts else "")


class LocalizerNode(Node):
    """Wires ROS topics to :class:`xview_loc_ros.localizer.Localizer`. ``backend``/``patch_builder``
    may be injected (benchmarks, tests); otherwise they are opened from the parameters."""

    def __init__(
        self, node_name: str = NODE_NAME, backend: Any = None, patch_builder: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(node_name, **kwargs)
        self.params = self._read_params()
        self._tile_source = None
        if backend is None:
            backend = open_backend(
                self.params.model_path,
                self.params.backend,
                device=self.params.device or None,
                fp16=self.params.fp16,
                threads=self.params.threads or None,
            )
        if patch_builder is None:
            self._tile_source = open_tile_source(self.params.tile_source, cache_dir=self.params.tile_cache_dir or None)
            patch_builder = AerialPatchBuilder(
                self._tile_source,
                int(backend.config["aerial_size"]),
                float(backend.config["mpp"]),
                zoom=None if self.params.tile_zoom < 0 else self.params.tile_zoom,
                allow_missing=True,
            )
        self.backend = backend
        self.builder = patch_builder
        self.loc = Localizer(self.params, backend, patch_builder)
        self._reloc_status = "off"
        # at start-up a bad index is an error (RelocUnavailable, a ValueError, one line from main): fix the set-up
        if self.params.reloc_index:
            self._enable_relocalization(self.params.reloc_index)
        warmup = getattr(backend, "warmup", None)
        if callable(warmup):  # first-call allocations / autotuning / engine loading happen now, not on frame 1
            warmup(2)

        self._lock = threading.Lock()
        self.counts: Dict[str, int] = collections.Counter()  # inputs, outputs, drops
        self.rejects: Dict[str, int] = collections.Counter()  # frames with no published pose, by reason
        self.bad: Dict[str, int] = collections.Counter()  # malformed input messages, by reason
        self._last_log: Dict[str, float] = {}
        self._latency: Deque[float] = collections.deque(maxlen=_WINDOW)
        self._stages: Dict[str, Deque[float]] = {
            k: collections.deque(maxlen=_WINDOW)
            for k in ("image",) + STAGES + ("filter", "reloc", "publish", "visualize")
        }
        self._rate_mark: Tuple[float, Dict[str, int]] = (time.monotonic(), {})
        self._status_mark: Dict[str, int] = {}  # diagnostic_summary's counters at the previous status

        self._tracked: Optional[TrackedPose] = None  # the filter's last output, for diagnostics
        self._slot: Optional[Tuple[Any, float]] = None
        self._ground_h, self._ground_w = (int(x) for x in backend.config["ground_size"])
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._viz_gate = RateGate()
        self._viz_slot: Optional[VizJob] = None
        self._viz_cond = threading.Condition()

        p = self.params
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, "~/pose", 10)
        # the per-frame estimate (accepted by the gate), in both fusion modes: for debugging the filter
        self.pub_frame_pose = self.create_publisher(PoseWithCovarianceStamped, "~/frame_pose", 10)
        self.pub_fix = self.create_publisher(NavSatFix, "~/fix", 10)
        self.pub_overlay = self.create_publisher(Image, "~/heatmap", 1) if p.publish_overlay else None
        self.pub_grid = self.create_publisher(OccupancyGrid, "~/heatmap_grid", latched) if p.publish_grid else None
        self.pub_marker = self.create_publisher(Marker, "~/marker", 10) if p.publish_marker else None
        self.pub_belief = (
            self.create_publisher(OccupancyGrid, "~/belief_grid", latched)
            if p.publish_belief_grid and p.fusion == "filter"
            else None
        )
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # the origin of map_frame for consumers to check against their own datum (latched: late joiners get it)
        self.pub_datum = self.create_publisher(NavSatFix, "~/datum", latched)
        self._datum_sent: Optional[LocalENU] = None
        self._static: Dict[Tuple[str, str], Any] = {}  # (parent, child) -> transform, from /tf_static
        self._camera_frame = p.camera_frame  # "" until an image names it

        sensor = qos_profile_sensor_data
        frames = QoSProfile(
            depth=1, reliability=sensor.reliability, durability=sensor.durability, history=sensor.history
        )
        self.create_subscription(NavSatFix, p.fix_topic, self._on_fix, sensor)
        # one image topic: image_transport republishes a camera on both, and two subscriptions feeding the
        # one-frame slot would replace every other frame
        if p.image_transport == "raw":
            self.create_subscription(Image, p.image_topic, self._on_image, frames)
        else:
            self.create_subscription(CompressedImage, p.compressed_image_topic, self._on_image, frames)
        if p.heading_source == "imu":
            self.create_subscription(Imu, p.imu_topic, self._on_imu, sensor)
        if p.odom_topic and p.fusion == "filter":
            self.create_subscription(Odometry, p.odom_topic, self._on_odom, sensor)
        if p.camera_info_topic:
            self.create_subscription(CameraInfo, p.camera_info_topic, self._on_camera_info, sensor)
        if TFMessage is not None:
            # static_transform_publisher latches one message per publisher: transient local, and deep
            # enough to hold every publisher's
            tf_static = QoSProfile(
                depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
            self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, tf_static)
        self._publish_datum()
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)

        self._visualizing = any(
            x is not None for x in (self.pub_overlay, self.pub_grid, self.pub_marker, self.pub_belief)
        )
        self._worker = threading.Thread(target=self._work, name="xview_localizer_worker", daemon=True)
        self._worker.start()
        self._viz_worker = threading.Thread(target=self._visualize_loop, name="xview_localizer_viz", daemon=True)
        self._viz_worker.start()
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.get_logger().info(
            f"ready: {self.backend.describe()}; tiles {p.tile_source}; heading {p.heading_source}; fusion {p.fusion}"
        )

    # -- parameters -------------------------------------------------------------------------------
    def _read_params(self) -> LocalizerParams:
        defaults = LocalizerParams().to_dict()
        for name, value in defaults.items():
            try:
                self.declare_parameter(name, value, parameter_descriptor(name, value, param_info(name)))
            except ParameterException as e:  # an override outside the documented range: rclpy's message
                raise ParameterError(name, str(e)) from e
        values = {name: self.get_parameter(name).value for name in defaults}
        return LocalizerParams.from_mapping(values).validate()

    def _changes(self, params: List[Parameter]) -> Dict[str, Any]:
        fields = LocalizerParams.__dataclass_fields__
        return {p.name: p.value for p in params if p.name in fields}

    def _check_parameters(self, params: List[Parameter]) -> SetParametersResult:
        """Validate a set request as a whole (rclpy has checked read-only and the ranges): the result
        must pass LocalizerParams.validate(); the reason names the parameter."""
        changes = self._changes(params)
        for name in changes:
            if not param_info(name).runtime:  # read-only descriptors refuse first; this guards the rest
                return SetParametersResult(successful=False, reason=f"parameter '{name}': needs a restart")
        try:
            dataclasses.replace(self.params, **changes).validate()
        except ParameterError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: List[Parameter]) -> None:
        """Apply accepted changes: the localizer and the filter read their parameters per frame, so
        swapping the objects (one reference each) takes effect from the next frame."""
        changes = self._changes(params)
        if not changes:
            return
        new = dataclasses.replace(self.params, **changes).validate()
        self.params = new
        self.loc.params = new
        if self.loc.filter is not None:
            self.loc.filter.p = new.filter_params()  # cell_m and window_m, the grid's shape, are read-only
        if "reloc_index" in changes:  # a bad index at run time: logged, re-localization off, localizing goes on
            try:
                if new.reloc_index:
                    self._enable_relocalization(new.reloc_index)
                else:
                    self.loc.disable_relocalization()
                    self._reloc_status = "off"
            except RelocUnavailable as e:
                self._disable_relocalization(str(e))
        self.get_logger().info("parameters set: " + ", ".join(f"{k}={v!r}" for k, v in sorted(changes.items())))

    # -- re-localization ----------------------------------------------------------------------------
    def _enable_relocalization(self, path: str) -> None:
        """Load the city index for the model file the node runs (RelocUnavailable when it cannot be used)."""
        index = open_index(path, self.params.model_path, self.backend.config, self.backend.outputs)
        self.loc.enable_relocalization(index)
        self._reloc_status = f"on: {len(index)} entries, {index.grid.stride_m:g} m apart"
        self.get_logger().info(f"re-localization {self._reloc_status} ({path})")

    def _disable_relocalization(self, why: str) -> None:
        self.loc.disable_relocalization()
        self._reloc_status = f"off after an error: {why}"
        self.get_logger().error(f"re-localization disabled, localizing goes on without it: {why}")

    def _relocalize(
        self, stamp: float, rgb: Any, est: Optional[Estimate], tracked: Optional[TrackedPose]
    ) -> Optional[RelocOutcome]:
        """Run the localizer's re-localization step for a frame; any unexpected error turns it off (logged)."""
        try:
            out = self.loc.relocalize(stamp, rgb, est, tracked)
        except Exception as e:  # a broken index or backend must not stop localization
            self._disable_relocalization(f"{type(e).__name__}: {e}")
            return None
        if out is None:
            return None
        with self._lock:
            self._stages["reloc"].append(out.seconds)
        line = f"re-localization ({out.reason}): {out.outcome}, {out.seconds * 1e3:.0f} ms; {out.detail}"
        # one call site per severity: rclpy refuses a call site whose severity changes
        if out.outcome in ("relocalized", "confirmed"):
            self.get_logger().info(line)
        else:
            self.get_logger().warning(line)
        return out

    # -- bookkeeping ------------------------------------------------------------------------------
    def _count(self, table: Dict[str, int], reason: str, detail: str, what: str = "dropped") -> None:
        with self._lock:
            table[reason] += 1
            now = time.monotonic()
            last = self._last_log.get(reason, -math.inf)
            if now - last < self.params.log_throttle_s:
                return
            self._last_log[reason] = now
        self.get_logger().warning(f"{what} ({reason}): {detail} [{table[reason]} so far]")

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    # -- callbacks (executor thread: cheap only) --------------------------------------------------
    def _on_fix(self, msg: Any) -> None:
        self._bump("fix")
        try:
            fix = rm.fix_from_msg(msg, self.params.fix_default_std_m)
        except SensorRejected as e:
            self._count(self.bad, e.reason, str(e))
            return
        self.loc.add_fix(fix)
        if self._datum_sent is None:
            self._publish_datum()

    def _on_imu(self, msg: Any) -> None:
        self._bump("imu")
        try:
            stamp, heading = rm.heading_from_msg(msg, math.radians(self.params.heading_std_deg) ** 2)
        except SensorRejected as e:
            self._count(self.bad, e.reason, str(e))
            return
        self.loc.add_heading(stamp, heading)

    def _on_odom(self, msg: Any) -> None:
        self._bump("odom")
        try:
            stamp, twist = rm.odometry_from_msg(msg)
        except SensorRejected as e:
            self._count(self.bad, e.reason, str(e))
            return
        self.loc.add_odometry(stamp, twist.speed_mps, twist.yaw_rate_rps)

    def _on_camera_info(self, msg: Any) -> None:
        try:
            self.loc.camera_hfov_deg, self.loc.camera_distorted = rm.camera_from_msg(msg)
        except SensorRejected as e:
            self._count(self.bad, e.reason, str(e))

    def _on_tf_static(self, msg: Any) -> None:
        try:
            for t in rm.static_transforms(msg):
                self._static[(t[0], t[1])] = t
        except (AttributeError, TypeError, ValueError) as e:
            self._count(self.bad, "tf_static_invalid", str(e))
            return
        self._update_mount()

    def _update_mount(self) -> None:
        """The camera's mount from /tf_static once base_frame -> camera frame is connected there."""
        if not self._camera_frame or not self._static:
            return
        try:
            mount = mount_from_transforms(self._static.values(), self.params.base_frame, self._camera_frame)
        except ValueError as e:  # a quaternion that is not a rotation
            self._count(self.bad, "tf_static_invalid", str(e))
            return
        if mount is not None and mount != self.loc.tf_mount:
            self.loc.tf_mount = mount
            self.get_logger().info(
                f"camera mount from /tf_static {self.params.base_frame} -> {self._camera_frame}: lever arm "
                f"{tuple(round(x, 3) for x in mount.lever_arm_m)} m, yaw {mount.yaw_offset_deg:.1f} deg"
            )

    def _publish_datum(self) -> None:
        datum = self.loc.datum
        if datum is not None and datum != self._datum_sent:
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.params.map_frame)
            self.pub_datum.publish(rm.datum_msg(datum, header))
            self._datum_sent = datum

    def _on_image(self, msg: Any) -> None:
        self._bump("image")
        if not self._camera_frame and msg.header.frame_id:  # the camera frame for /tf_static: the images' own
            self._camera_frame = str(msg.header.frame_id)
            self._update_mount()
        with self._cond:
            if self._slot is not None:
                self._bump("frames_dropped")
            self._slot = (msg, time.monotonic())
            self._cond.notify()

    # -- worker -----------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while self._slot is None and not self._stop.is_set():
                    self._cond.wait(0.2)
                if self._stop.is_set():
                    return
                slot, self._slot = self._slot, None
            if slot is None:  # woken by stop
                return
            msg, received = slot
            try:
                self._handle(msg, received)
            except Exception as e:  # the node must outlive any one frame; the reason is counted
                self._count(self.rejects, "internal_error", f"{type(e).__name__}: {e}")

    def _handle(self, msg: Any, received: float) -> None:
        t_img = time.perf_counter()
        try:
            # a JPEG larger than the model's ground input decodes at 1/2, 1/4 or 1/8 scale
            # Lenient (no strict=True): a vehicle prefers a slightly damaged frame to none, and the gate
            # rejects what a damaged frame makes the model get wrong; training data is decoded strictly.
            rgb = decode_image(msg, self.params.max_image_pixels, min_size=(self._ground_h, self._ground_w))
        except SensorRejected as e:
            self._count(self.bad, e.reason, str(e))
            return
        t_img = time.perf_counter() - t_img
        stamp = rm.stamp_to_sec(msg.header.stamp)
        filtering = self.loc.filter is not None
        est: Optional[Estimate] = None
        try:
            est = self.loc.process(stamp, rgb)
        except FrameRejected as e:
            self._count(self.rejects, e.reason, e.detail)
        except ValueError as e:  # preprocessing / decoding refused this input
            self._count(self.rejects, "bad_frame", str(e))
        # Filter mode: every frame moves the filter to its stamp (prediction + the fix); a frame with a
        # heat map updates it with that heat map even when the gate refused the frame: low confidence
        # is a flat heat map (it tempers itself), a second mode is what the filter resolves with motion,
        # and disagreement with the fix is the filter's to weigh. Frames without a heat map (no fix,
        # tiles missing, NaN logits, wrong camera) only predict.
        tracked = self.loc.track(stamp, est) if filtering else None
        if self.loc.reloc_index is not None:
            # a search re-initialises the filter (its new pose is this frame's) or, per frame, is this frame's pose
            reloc = self._relocalize(stamp, rgb, est, tracked)
            if reloc is not None and reloc.outcome in ("relocalized", "confirmed"):
                if reloc.tracked is not None:  # restarted there, or the frame's only heat map
                    tracked = reloc.tracked
                elif not filtering and reloc.estimate is not None:
                    est = reloc.estimate
                self._publish_datum()  # a cold start anchors map at the search's answer
        if est is None and not filtering:
            return
        t0 = time.perf_counter()
        # consumers' outputs first (~/pose, ~/fix), then the debugging ~/frame_pose; RViz's come later,
        # from another thread
        p = self.params
        header = Header(stamp=msg.header.stamp, frame_id=p.map_frame)
        frame_pose = rm.pose_msg(est, header, p.unobserved_variance) if est is not None and est.accepted else None
        if tracked is not None:
            self.pub_pose.publish(rm.pose_msg(tracked, header, p.unobserved_variance))
            frame_id = p.fix_frame_id or (tracked.fix.frame_id if tracked.fix is not None else "")
            self.pub_fix.publish(rm.fix_msg(tracked, Header(stamp=msg.header.stamp, frame_id=frame_id)))
        elif est is not None and frame_pose is not None and not filtering:
            self.pub_pose.publish(frame_pose)
            fix_header = Header(stamp=msg.header.stamp, frame_id=p.fix_frame_id or est.fix.frame_id)
            self.pub_fix.publish(rm.fix_msg(est, fix_header))
        if frame_pose is not None:
            self.pub_frame_pose.publish(frame_pose)
        t1, pose_out = time.perf_counter(), time.monotonic()
        if est is not None and not est.accepted:
            self._count(
                self.rejects,
                est.reject_reason,
                f"confidence {est.confidence:.2f}, ambiguity {est.ambiguity:.2f}, d^2 vs GNSS {est.mahalanobis2:.1f}",
                "gated",
            )
        if self._visualizing:
            self._hand_to_visualization(header, est, tracked, pose_out)
        with self._lock:
            if est is not None:
                self.counts["poses" if est.accepted else "gated"] += 1
                for k, v in est.timings.items():
                    self._stages[k].append(v)
            if tracked is not None:
                self.counts["filtered"] += 1
                self._stages["filter"].append(tracked.seconds)
                self._tracked = tracked
            self._stages["image"].append(t_img)
            self._stages["publish"].append(t1 - t0)
            if est is not None or tracked is not None:
                self._latency.append(pose_out - received)  # receive -> pose and fix out

    # -- visualization (its own thread: the pose path never waits on it) ------------------------------
    def _hand_to_visualization(
        self, header: Header, est: Optional[Estimate], tracked: Optional[TrackedPose], now: float
    ) -> None:
        """Worker side: rate-limit, snapshot what the next frame would change (the datum, the belief),
        and replace any job the visualization thread has not started (counted: it is behind)."""
        if not self._viz_gate.allow(now, self.params.viz_max_rate_hz):
            self._bump("viz_skipped_rate")
            return
        belief = None
        # the belief grid only while someone listens: it is n x n cells of conversion
        if tracked is not None and self.pub_belief is not None and self.pub_belief.get_subscription_count() > 0:
            assert self.loc.filter is not None
            belief = self.loc.filter.belief_grid()  # a copy: the worker's next frame moves the filter
        job = VizJob(header, est, tracked, self.loc.datum, belief)
        with self._viz_cond:
            if self._viz_slot is not None:
                self._bump("viz_dropped_busy")
            self._viz_slot = job
            self._viz_cond.notify()

    def _visualize_loop(self) -> None:
        while not self._stop.is_set():
            with self._viz_cond:
                while self._viz_slot is None and not self._stop.is_set():
                    self._viz_cond.wait(0.2)
                job, self._viz_slot = self._viz_slot, None
            if job is None:  # woken by stop
                return
            t0 = time.perf_counter()
            try:
                self._visualize(job)
            except Exception as e:  # a drawing bug must not stop the pose path or this thread
                self._count(self.counts, "viz_error", f"{type(e).__name__}: {e}", "visualization failed")
                continue
            with self._lock:
                self._stages["visualize"].append(time.perf_counter() - t0)
                self.counts["viz_published"] += 1

    def _visualize(self, job: VizJob) -> None:
        """Overlay image, heat-map grid, markers, belief grid of one frame (visualization thread)."""
        est, tracked, datum, header = job.est, job.tracked, job.datum, job.header
        if est is not None:
            if self.pub_overlay is not None:
                img = heatmap_overlay(est.patch, est.logits, (est.fix_u, est.fix_v), (est.u, est.v))
                self.pub_overlay.publish(rm.image_from_rgb(img, Header(stamp=header.stamp, frame_id="aerial_patch")))
            if self.pub_grid is not None and datum is not None:
                self.pub_grid.publish(rm.grid_msg(est, datum, header))
            if self.pub_marker is not None and datum is not None:
                for marker in rm.marker_msgs(est, datum, header):
                    self.pub_marker.publish(marker)
        if tracked is not None and self.pub_marker is not None:
            self.pub_marker.publish(
                rm.ellipse_marker(tracked.east, tracked.north, tracked.cov_en, header, 2, FILTERED_RGBA)
            )
        if job.belief is not None and self.pub_belief is not None:
            prob, west, south, cell = job.belief
            self.pub_belief.publish(rm.occupancy_grid(prob, cell, west, south, header))

    # -- diagnostics ------------------------------------------------------------------------------
    def diagnostics_values(self) -> Dict[str, object]:
        """Counters and statistics published on /diagnostics (also used by tests and the benchmark)."""
        now = time.monotonic()
        with self._lock:
            counts = dict(self.counts)
            t_prev, prev = self._rate_mark
            self._rate_mark = (now, counts)
            lat = list(self._latency)
            stages = {k: list(v) for k, v in self._stages.items()}
            rejects, bad, tiles = dict(self.rejects), dict(self.bad), self.loc.prefetch_counts()
            tracked = self._tracked
            flt = self.loc.filter
            filter_counts = dict(flt.counts) if flt is not None else {}
        dt = max(now - t_prev, 1e-6)
        values: Dict[str, object] = {"backend": self.backend.describe()}
        for k in ("image", "fix", "imu", "odom"):
            values[f"rate_{k}_hz"] = (counts.get(k, 0) - prev.get(k, 0)) / dt
        for k in ("image", "fix", "imu", "odom", "frames_dropped", "poses", "gated", "filtered"):
            values[k if k == "frames_dropped" else f"count_{k}"] = counts.get(k, 0)
        for k in ("viz_published", "viz_skipped_rate", "viz_dropped_busy", "viz_error"):
            values[k] = counts.get(k, 0)
        if lat:
            summary = stage_summary({"latency": lat})["latency"]
            values["latency_ms_median"], values["latency_ms_p95"] = summary
        for k, (med, p95) in stage_summary(stages).items():
            values[f"stage_{k}_ms_median"], values[f"stage_{k}_ms_p95"] = med, p95
        values.update(rm.counts_as_values("reject_", rejects))
        values.update(rm.counts_as_values("bad_input_", bad))
        values.update(rm.counts_as_values("tiles_prefetched_", tiles))
        values["fusion"] = self.params.fusion
        mount = self.loc.mount
        values["camera_mount_source"] = mount.source
        values["camera_lever_arm_m"] = " ".join(f"{x:.3f}" for x in mount.lever_arm_m)
        values["camera_yaw_offset_deg"] = mount.yaw_offset_deg
        if flt is not None:
            values["filter_state"] = tracked.state if tracked is not None else flt.state.value
            values.update(rm.counts_as_values("filter_", filter_counts))
            if tracked is not None:
                values["filter_motion"] = tracked.motion
                values["filter_std_m"] = math.sqrt(0.5 * float(np.trace(tracked.cov_en)))
                if tracked.innovation is not None:
                    values["filter_innovation_source"] = tracked.innovation.source
                    values["filter_innovation_sigmas"] = tracked.innovation.sigmas
                    values["filter_innovation_log_lr"] = tracked.innovation.log_lr
        values["reloc"] = self._reloc_status
        if self.loc.reloc_index is not None or self.loc.reloc_counts:
            values.update(reloc_summary(self.loc.reloc_counts, self.loc.last_reloc))
        if self._tile_source is not None:
            values.update(rm.counts_as_values("tile_cache_", self._tile_source.cache_stats()))
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        filtering = self.loc.filter is not None
        gate = {f"reject_{r}" for r in GATE_REASONS}
        counts: Dict[str, int] = {}
        for k, v in values.items():
            if not isinstance(v, int):
                continue
            if k == "frames_dropped":
                counts[k] = v
            elif k == ("count_filtered" if filtering else "count_poses"):
                counts["published"] = v
            if k in gate:
                counts["gated_" + k[len("reject_") :]] = v
            elif k.startswith("reject_"):
                counts["rejected_" + k[len("reject_") :]] = v
            elif k.startswith("bad_input_"):
                counts["bad_" + k[len("bad_input_") :]] = v
        level, message = diagnostic_summary(counts, self._status_mark, filtering, self.params.diagnostics_period_s)
        self._status_mark = counts
        if "filter_state" in values:
            message += f"; filter {values['filter_state']}"
            if values["filter_state"] == "lost":
                level = max(level, 1)
        header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_diag.publish(
            rm.diagnostics_msg(
                header, f"{self.get_name()}: cross-view localizer", self.get_name(), level, message, values
            )
        )

    def close(self) -> None:
        """Stop the worker and release the tile fetcher."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        with self._viz_cond:
            self._viz_cond.notify_all()
        self._worker.join(timeout=10.0)
        self._viz_worker.join(timeout=10.0)
        close = getattr(self.builder, "close", None)
        if callable(close):
            close()
        if self._tile_source is not None:
            self._tile_source.close()


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of ``localizer_node`` (ros2 run / launch) and ``xview-loc node``."""
    # rclpy drops undeclared names, rcl fails on a missing file with a traceback and launch_ros only warns:
    # refuse all three with one line, before rcl parses the arguments
    try:
        check_ros_args(sys.argv if args is None else args)
    except ValueError as e:
        print(f"{NODE_NAME}: error: {e}", file=sys.stderr)
        return 2
    rclpy.init(args=args)
    node = None
    try:
        node = LocalizerNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterError, ValueError, OSError) as e:  # start-up errors: one clear line
        print(f"{NODE_NAME}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
