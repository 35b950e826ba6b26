# SPDX-License-Identifier: Apache-2.0
"""The rclpy node ``localizer_node`` (default name ``xview_localizer``).

Subscriptions (sensor-data QoS) only store inputs; camera frames go to a latest-frame slot (a queue
of one: an unprocessed frame is replaced and counted as dropped) that a worker thread drains, so
inference never blocks the executor and diagnostics stay on time. Bad messages are logged
(throttled per reason), counted and dropped. See README "The ROS 2 node" for topics and parameters.
"""

from __future__ import annotations

import collections
import math
import sys
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from xview_loc_ros import ros_msgs as rm
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
from xview_loc_ros.overlay import heatmap_overlay
from xview_loc_ros.params import NODE_NAME, LocalizerParams, ParameterError
from xview_loc_ros.params_file import check_ros_args
from xview_loc_ros.sensors import SensorRejected, decode_image
from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source

_WINDOW = 200  # frames kept for latency / stage statistics
FILTERED_RGBA = (0.1, 0.4, 1.0, 0.6)  # the filtered pose's ellipse in ~/marker (id 2)


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
            k: collections.deque(maxlen=_WINDOW) for k in ("image",) + STAGES + ("filter", "publish", "visualize")
        }
        self._rate_mark: Tuple[float, Dict[str, int]] = (time.monotonic(), {})

        self._tracked: Optional[TrackedPose] = None  # the filter's last output, for diagnostics
        self._slot: Optional[Tuple[Any, float]] = None
        self._ground_h, self._ground_w = (int(x) for x in backend.config["ground_size"])
        self._cond = threading.Condition()
        self._stop = threading.Event()

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

        sensor = qos_profile_sensor_data
        frames = QoSProfile(
            depth=1, reliability=sensor.reliability, durability=sensor.durability, history=sensor.history
        )
        self.create_subscription(NavSatFix, p.fix_topic, self._on_fix, sensor)
        if p.image_topic:
            self.create_subscription(Image, p.image_topic, self._on_image, frames)
        if p.compressed_image_topic:
            self.create_subscription(CompressedImage, p.compressed_image_topic, self._on_image, frames)
        if p.heading_source == "imu":
            self.create_subscription(Imu, p.imu_topic, self._on_imu, sensor)
        if p.odom_topic and p.fusion == "filter":
            self.create_subscription(Odometry, p.odom_topic, self._on_odom, sensor)
        if p.camera_info_topic:
            self.create_subscription(CameraInfo, p.camera_info_topic, self._on_camera_info, sensor)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="xview_localizer_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {self.backend.describe()}; tiles {p.tile_source}; heading {p.heading_source}; fusion {p.fusion}"
        )

    # -- parameters -------------------------------------------------------------------------------
    def _read_params(self) -> LocalizerParams:
        defaults = LocalizerParams().to_dict()
        # dynamic typing: a YAML integer for a float parameter is accepted; validate() checks types
        desc = ParameterDescriptor(dynamic_typing=True)
        for name, value in defaults.items():
            self.declare_parameter(name, value, desc)
        values = {name: self.get_parameter(name).value for name in defaults}
        return LocalizerParams.from_mapping(values).validate()

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
            self.loc.camera_hfov_deg = rm.hfov_from_camera_info(msg)
        except SensorRejected as e:
            self._count(self.bad, e.reason, str(e))

    def _on_image(self, msg: Any) -> None:
        self._bump("image")
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
        if est is None and not filtering:
            return
        # Filter mode: every frame moves the filter to its stamp (prediction + the fix); a frame with a
        # heat map updates it with that heat map even when the gate refused the frame: low confidence
        # is a flat heat map (it tempers itself), a second mode is what the filter resolves with motion,
        # and disagreement with the fix is the filter's to weigh. Frames without a heat map (no fix,
        # tiles missing, NaN logits, wrong camera) only predict.
        tracked = self.loc.track(stamp, est) if filtering else None
        t0 = time.perf_counter()
        header = Header(stamp=msg.header.stamp, frame_id=self.params.map_frame)
        if est is not None and est.accepted:
            frame_pose = rm.pose_msg(est, header, self.params.unobserved_variance)
            self.pub_frame_pose.publish(frame_pose)
            if not filtering:
                self.pub_pose.publish(frame_pose)
                fix_header = Header(stamp=msg.header.stamp, frame_id=self.params.fix_frame_id or est.fix.frame_id)
                self.pub_fix.publish(rm.fix_msg(est, fix_header))
        elif est is not None:
            self._count(
                self.rejects,
                est.reject_reason,
                f"confidence {est.confidence:.2f}, ambiguity {est.ambiguity:.2f}, d^2 vs GNSS {est.mahalanobis2:.1f}",
                "gated",
            )
        if tracked is not None:
            self.pub_pose.publish(rm.pose_msg(tracked, header, self.params.unobserved_variance))
            frame_id = self.params.fix_frame_id or (tracked.fix.frame_id if tracked.fix is not None else "")
            self.pub_fix.publish(rm.fix_msg(tracked, Header(stamp=msg.header.stamp, frame_id=frame_id)))
        t1, pose_out = time.perf_counter(), time.monotonic()
        datum = self.loc.datum  # set by the fix this frame was localized with
        if est is not None:
            if self.pub_overlay is not None:
                img = heatmap_overlay(est.patch, est.logits, (est.fix_u, est.fix_v), (est.u, est.v))
                self.pub_overlay.publish(
                    rm.image_from_rgb(img, Header(stamp=msg.header.stamp, frame_id="aerial_patch"))
                )
            if self.pub_grid is not None and datum is not None:
                self.pub_grid.publish(rm.grid_msg(est, datum, header))
            if self.pub_marker is not None and datum is not None:
                for marker in rm.marker_msgs(est, datum, header):
                    self.pub_marker.publish(marker)
        if tracked is not None:
            self._publish_belief(tracked, header)
        done = time.perf_counter()
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
            self._stages["visualize"].append(done - t1)
            if est is not None or tracked is not None:
                self._latency.append(pose_out - received)  # receive -> pose and fix out

    def _publish_belief(self, tracked: TrackedPose, header: Header) -> None:
        """The filtered pose's ellipse in ~/marker; the belief grid only while someone listens (the
        grid is n x n cells of conversion on the pose path)."""
        if self.pub_marker is not None:
            self.pub_marker.publish(
                rm.ellipse_marker(tracked.east, tracked.north, tracked.cov_en, header, 2, FILTERED_RGBA)
            )
        if self.pub_belief is None or self.pub_belief.get_subscription_count() == 0:
            return
        assert self.loc.filter is not None
        grid = self.loc.filter.belief_grid()
        if grid is not None:
            prob, west, south, cell = grid
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
        if lat:
            summary = stage_summary({"latency": lat})["latency"]
            values["latency_ms_median"], values["latency_ms_p95"] = summary
        for k, (med, p95) in stage_summary(stages).items():
            values[f"stage_{k}_ms_median"], values[f"stage_{k}_ms_p95"] = med, p95
        values.update(rm.counts_as_values("reject_", rejects))
        values.update(rm.counts_as_values("bad_input_", bad))
        values.update(rm.counts_as_values("tiles_prefetched_", tiles))
        values["fusion"] = self.params.fusion
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
        if self._tile_source is not None:
            values.update(rm.counts_as_values("tile_cache_", self._tile_source.cache_stats()))
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        # with the filter, a gated frame is not lost: its heat map updated the belief
        used = {f"reject_{r}" for r in GATE_REASONS} if self.loc.filter is not None else set()
        problems = sum(
            v
            for k, v in values.items()
            if k.startswith(("reject_", "bad_input_")) and k not in used and isinstance(v, int)
        )
        published = values.get("count_filtered" if self.loc.filter is not None else "count_poses", 0)
        level, message = (
            (0, "localizing")
            if published and not problems
            else (1, f"{problems} frames/messages dropped" if problems else "no pose yet")
        )
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
        self._worker.join(timeout=10.0)
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
