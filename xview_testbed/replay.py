# SPDX-License-Identifier: Apache-2.0
"""`xview-loc replay` / `xview-loc bag-crop`: a recorded drive played over real DDS into the localizer node.

The node is the same :class:`xview_loc_ros.node.LocalizerNode` that ``xview-loc node`` runs, started in
this process from the same parameters YAML. A second node publishes the bag's GNSS, IMU, camera and
CameraInfo and odometry messages (deserialised from the bag's CDR bytes, stamps untouched) on the
node's input topics, either at the recorded pace times ``rate`` or, with ``rate`` 0, in lock-step (each
camera frame is published once the node has finished the previous one, so no frame is dropped). It
records the node's ``~/fix``, ``~/pose`` and ``~/frame_pose`` and writes one JSON line per camera frame
with the bag's ground truth and GNSS fix at that frame's stamp and the errors in metres.

``est_*`` and ``localized`` are what the node publishes on ``~/fix``: the drive filter's belief with
``fusion: filter`` (the default), the gated per-frame estimate with ``fusion: frame``. ``frame_*`` are
always the per-frame estimate (``~/frame_pose``, the frames the gate accepted), so one replay compares
filter, frame and GNSS (``summarize_errors``; in the summary's ``errors``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from offline_adapt.data.bags import BagReadError, read_metadata
from xview_loc_ros.fsutil import atomic_path, atomic_write_bytes, atomic_write_json
from xview_loc_ros.geo import LocalENU
from xview_loc_ros.node_cli import ros_argv
from xview_loc_ros.sensors import decode_image

# bag topics by role; the camera is whichever image topic the bag has
DEFAULT_TOPICS = {
    "fix": "/gnss/fix",
    "imu": "/imu/data",
    "compressed": "/camera/image/compressed",
    "raw": "/camera/image",
    "info": "/camera/camera_info",
    "odom": "/odom",
    "gt": "/ground_truth/fix",
}
_STAMP_TOL_S = 0.02  # ground truth / GNSS sample taken as "at" a frame when this close to its stamp
_MARGIN_S = 1.0  # non-image messages kept this far outside a window of frames (fix interpolation)


class ReplayError(ValueError):
    """The bag, the window or the parameters cannot be replayed."""


@dataclass
class BagMessage:
    role: str  # key of DEFAULT_TOPICS
    stamp: float  # header stamp, seconds
    msg: Any  # rclpy message


@dataclass
class FrameRecord:
    """One camera frame of the replay. Positions WGS84 degrees; errors horizontal metres vs ground truth;
    ``map_x``/``map_y`` the node's pose in its map frame (ENU metres at its datum)."""

    frame: int  # index of the camera frame in the whole bag
    stamp: float
    gt_lat: Optional[float] = None
    gt_lon: Optional[float] = None
    gnss_lat: Optional[float] = None
    gnss_lon: Optional[float] = None
    gnss_err_m: Optional[float] = None
    localized: bool = False
    est_lat: Optional[float] = None
    est_lon: Optional[float] = None
    est_err_m: Optional[float] = None
    est_std_m: Optional[float] = None
    map_x: Optional[float] = None
    map_y: Optional[float] = None
    # the per-frame estimate (~/frame_pose: accepted by the gate) in both fusion modes
    frame_localized: bool = False
    frame_lat: Optional[float] = None
    frame_lon: Optional[float] = None
    frame_err_m: Optional[float] = None
    frame_std_m: Optional[float] = None
    frame_map_x: Optional[float] = None
    frame_map_y: Optional[float] = None
    heatmap: Optional[str] = None  # PNG of the node's ~/heatmap overlay, relative to the JSONL's folder


@dataclass
class ReplaySummary:
    out: Path
    frames: int
    localized: int
    wall_s: float
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    fusion: str = ""
    errors: Dict[str, Dict[str, Any]] = field(default_factory=dict)


#: the estimates a replay compares: record key of the error, key of "has one"
ESTIMATES = {
    "node": ("est_err_m", "localized"),  # ~/fix: the filter (fusion: filter) or the gated frame (fusion: frame)
    "frame": ("frame_err_m", "frame_localized"),  # ~/frame_pose: the gated per-frame estimate
    "gnss": ("gnss_err_m", None),
}


def error_stats(errors: Sequence[float], frames: int) -> Dict[str, Any]:
    """mean, median, p95 (metres), % of frames above 5 m and 10 m (of those with an estimate), and
    coverage (frames with an estimate / ``frames``)."""
    a = np.asarray([e for e in errors if e is not None], dtype=float)
    if a.size == 0:
        return {"frames": 0, "coverage": 0.0}
    return {
        "frames": int(a.size),
        "coverage": float(a.size / max(frames, 1)),
        "mean_m": float(a.mean()),
        "median_m": float(np.median(a)),
        "p95_m": float(np.percentile(a, 95)),
        "over_5m_pct": float(100.0 * (a > 5.0).mean()),
        "over_10m_pct": float(100.0 * (a > 10.0).mean()),
    }


def summarize_errors(records: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Error statistics of the node's output, the per-frame estimate and the GNSS fix over the frames of
    a replay (records as in the JSONL; records without a key count as without that estimate)."""
    n = len(records)
    return {
        name: error_stats([r.get(err) for r in records if r.get(err) is not None and (not has or r.get(has))], n)
        for name, (err, has) in ESTIMATES.items()
    }


def _msg_class(msgtype: str) -> type:
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _stamp(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _check_metadata(bag: Path) -> None:
    """A rosbag2 folder's metadata.yaml must read, else an error naming it (rosbags' own names
    neither the file nor the bag)."""
    if bag.is_dir() and (bag / "metadata.yaml").is_file():
        try:
            read_metadata(bag)
        except BagReadError as e:
            raise ReplayError(f"--bag {bag}: {e}") from e


def read_bag(bag: str | Path, topics: Optional[Dict[str, str]] = None) -> List[BagMessage]:
    """The bag's messages on the replayed topics, in recording order, as rclpy messages."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    topics = {**DEFAULT_TOPICS, **(topics or {})}
    role_of = {t: r for r, t in topics.items() if t}
    bag = Path(bag)
    if not bag.exists():
        raise ReplayError(f"--bag {bag}: no such bag")
    _check_metadata(bag)
    out: List[BagMessage] = []
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic in role_of]
            classes = {c.id: _msg_class(c.msgtype) for c in conns}
            for conn, _t, raw in reader.messages(connections=conns):
                msg = deserialize_message(bytes(raw), classes[conn.id])
                out.append(BagMessage(role_of[conn.topic], _stamp(msg), msg))
    except ReplayError:
        raise
    except Exception as e:  # rosbags raises its own types for unreadable bags
        raise ReplayError(f"--bag {bag}: cannot read it as a rosbag2 ({e})") from e
    if not any(m.role in ("compressed", "raw") for m in out):
        raise ReplayError(f"--bag {bag}: no camera messages on {topics['compressed']} or {topics['raw']}")
    return out


def frame_window(n_frames: int, start_frac: float, end_frac: float) -> Tuple[int, int]:
    """Camera frame indices [first, stop) of the fraction window [start_frac, end_frac) of a drive."""
    if not 0.0 <= start_frac < end_frac <= 1.0:
        raise ReplayError(f"need 0 <= --start-frac < --end-frac <= 1, got {start_frac!r}, {end_frac!r}")
    first, stop = int(math.floor(start_frac * n_frames)), int(math.floor(end_frac * n_frames))
    if stop <= first:
        raise ReplayError(f"the window [{start_frac}, {end_frac}) of {n_frames} camera frames holds none")
    return first, stop


def _time_window(stamps: Sequence[float], start_frac: float, end_frac: float) -> Tuple[float, float, int]:
    first, stop = frame_window(len(stamps), start_frac, end_frac)
    return stamps[first], stamps[stop - 1], first


def crop_bag(
    src: str | Path,
    dst: str | Path,
    start_frac: float,
    end_frac: float,
    image_topics: Sequence[str] = (DEFAULT_TOPICS["compressed"], DEFAULT_TOPICS["raw"]),
) -> Path:
    """Copy the part of a drive between the fractions ``start_frac`` and ``end_frac`` of its camera frames
    (every topic; non-image messages also within 1 s around it) to a new bag with the same storage."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise ReplayError(f"--out {dst}: exists")
    _check_metadata(src)
    with Reader(src) as reader:
        img = [c for c in reader.connections if c.topic in image_topics]
        if not img:
            raise ReplayError(f"--bag {src}: no camera messages on {', '.join(image_topics)}")
        stamps = [t * 1e-9 for _c, t, _r in reader.messages(connections=img)]
        t0, t1, _ = _time_window(stamps, start_frac, end_frac)
        plugin = StoragePlugin.MCAP if any(src.glob("*.mcap")) else StoragePlugin.SQLITE3
        tmp = dst.with_name(f".{dst.name}.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        with Writer(tmp, version=9, storage_plugin=plugin) as writer:
            conns = {
                c.id: writer.add_connection(
                    c.topic,
                    c.msgtype,
                    msgdef=c.msgdef.data,
                    rihs01=c.digest,
                    serialization_format=c.ext.serialization_format,
                    offered_qos_profiles=c.ext.offered_qos_profiles,
                )
                for c in reader.connections
            }
            img_ids = {c.id for c in img}
            for conn, t, raw in reader.messages():
                s, margin = t * 1e-9, 0.0 if conn.id in img_ids else _MARGIN_S
                if t0 - margin - 1e-9 <= s <= t1 + margin + 1e-9:
                    writer.write(conns[conn.id], t, raw)
        os.replace(tmp, dst)
    return dst


def _nearest(samples: List[Tuple[float, Any]], t: float) -> Optional[Any]:
    if not samples:
        return None
    i = int(np.argmin([abs(s - t) for s, _ in samples]))
    return samples[i][1] if abs(samples[i][0] - t) <= _STAMP_TOL_S else None


def horizontal_error_m(lat: float, lon: float, ref_lat: float, ref_lon: float) -> float:
    """Horizontal distance, metres, between two WGS84 positions (local ENU at the reference)."""
    e, n, _ = LocalENU(ref_lat, ref_lon, 0.0).to_enu(lat, lon, 0.0)
    return float(math.hypot(float(e), float(n)))


class _Recorder:
    """Subscribes to the node's outputs and keeps them by stamp (seconds rounded to the microsecond)."""

    def __init__(self, node: Any, localizer_name: str, keep_heatmaps: bool) -> None:
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import Image, NavSatFix

        self.lock = threading.Lock()
        self.fix: Dict[float, Any] = {}
        self.pose: Dict[float, Any] = {}
        self.frame_pose: Dict[float, Any] = {}
        self.heatmap: Dict[float, Any] = {}
        node.create_subscription(NavSatFix, f"{localizer_name}/fix", self._keep(self.fix), 50)
        node.create_subscription(PoseWithCovarianceStamped, f"{localizer_name}/pose", self._keep(self.pose), 50)
        node.create_subscription(
            PoseWithCovarianceStamped, f"{localizer_name}/frame_pose", self._keep(self.frame_pose), 50
        )
        if keep_heatmaps:
            node.create_subscription(Image, f"{localizer_name}/heatmap", self._keep(self.heatmap), 50)

    def _keep(self, table: Dict[float, Any]):
        def keep(msg: Any) -> None:
            with self.lock:
                table[round(_stamp(msg), 6)] = msg

        return keep

    def count(self) -> int:
        with self.lock:
            return len(self.fix)


# reasons of xview_loc_ros.localizer.gate: such frames are also counted in count_gated, once fully handled
_GATE_REASONS = ("reject_low_confidence", "reject_ambiguous", "reject_gnss_gate")


def _frames_done(values: Dict[str, Any]) -> int:
    """Camera frames the node has finished with (outputs published), from its diagnostics: poses, gated
    frames, frames dropped unprocessed and frames rejected before estimation."""
    return sum(int(values.get(k, 0)) for k in ("count_poses", "count_gated", "frames_dropped")) + sum(
        int(v)
        for k, v in values.items()
        if k.startswith(("reject_", "bad_input_")) and k not in _GATE_REASONS and isinstance(v, int)
    )


def private_domain_id(pid: Optional[int] = None) -> int:
    """A ROS domain id for one replay process (101..200, from the process id): concurrent replays on one
    machine do not discover each other; ids 0..100 stay free for live systems."""
    return 101 + (os.getpid() if pid is None else pid) % 100


def _overlays_due(values: Dict[str, Any]) -> int:
    """~/heatmap overlays the node owes: one per frame with a heat map (published or gated)."""
    return sum(int(values.get(k, 0)) for k in ("count_poses", "count_gated"))


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def replay(
    bag: str | Path,
    params_file: str | Path,
    out: str | Path,
    model: Optional[str] = None,
    tile_source: Optional[str] = None,
    rate: float = 0.0,
    start_frac: float = 0.0,
    end_frac: float = 1.0,
    heatmap_dir: Optional[str | Path] = None,
    frame_timeout_s: float = 30.0,
    ros_args: Sequence[str] = (),
    topics: Optional[Dict[str, str]] = None,
    progress: bool = True,
    domain_id: Optional[int] = None,
) -> ReplaySummary:
    """Play the camera frames [start_frac, end_frac) of ``bag`` into a localizer node started from
    ``params_file`` (``model``/``tile_source`` override its parameters) and write ``out`` (JSONL, one line
    per frame, see :class:`FrameRecord`) and ``out``.json (summary, node diagnostics). ``rate``: multiple of
    the recorded pace (1 = real time); 0 = lock-step, as fast as the node keeps up. ``heatmap_dir``: also
    save the node's ~/heatmap overlays there as PNG (paths in the JSONL relative to ``out``'s folder).
    ``domain_id``: the ROS domain of the replay (default: a private one, :func:`private_domain_id`)."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node

    from xview_loc_ros.node import LocalizerNode

    if not rate >= 0:
        raise ReplayError(f"--rate must be >= 0 (0 = lock-step), got {rate!r}")
    if not Path(params_file).is_file():
        raise ReplayError(f"--params-file {params_file}: no such file")
    messages = read_bag(bag, topics)
    cam_role = "compressed" if any(m.role == "compressed" for m in messages) else "raw"
    cam_stamps = [m.stamp for m in messages if m.role == cam_role]
    t0, t1, first = _time_window(cam_stamps, start_frac, end_frac)
    window = [
        m
        for m in messages
        if (
            t0 <= m.stamp <= t1
            if m.role == cam_role
            else m.role != "gt" and t0 - _MARGIN_S <= m.stamp <= t1 + _MARGIN_S
        )
    ]
    frames: List[FrameRecord] = [
        FrameRecord(first + i, m.stamp) for i, m in enumerate(m for m in window if m.role == cam_role)
    ]
    truth = [(m.stamp, m.msg) for m in messages if m.role == "gt"]
    gnss = [(m.stamp, m.msg) for m in messages if m.role == "fix"]

    out = Path(out)
    hm_dir = Path(heatmap_dir) if heatmap_dir else None
    argv = ros_argv(
        argparse.Namespace(
            params_file=str(params_file), model_path=model, tile_source=tile_source, ros_args=list(ros_args)
        )
    )
    # the node subscribes one image topic (image_transport): the one this bag's camera is played on
    argv += ["--ros-args", "-p", f"image_transport:={cam_role}"]
    if hm_dir is not None:
        # every frame's overlay is wanted: no rate limit on the node's visualization thread
        argv += ["-p", "viz_max_rate_hz:=0.0"]
    context = rclpy.Context()
    # the node and the player live in this process: a DDS domain of their own keeps two replays (or a live
    # system on the same network) from reading each other's topics
    rclpy.init(args=argv, context=context, domain_id=private_domain_id() if domain_id is None else domain_id)
    t_start = time.monotonic()
    loc = player = executor = thread = None
    datum: Optional[LocalENU] = None
    fusion = ""
    try:
        loc = LocalizerNode(context=context)
        player = Node("xview_replay", context=context)
        rec = _Recorder(player, loc.get_fully_qualified_name(), hm_dir is not None)
        p = loc.params
        node_topic = {
            "fix": p.fix_topic,
            "imu": p.imu_topic if p.heading_source == "imu" else "",
            "compressed": p.compressed_image_topic,
            "raw": p.image_topic,
            "info": p.camera_info_topic,
            "odom": p.odom_topic if p.fusion == "filter" else "",
        }
        if not node_topic[cam_role]:
            raise ReplayError(
                f"the bag's camera is {cam_role} but the node's {cam_role} image topic parameter is empty"
            )
        pubs = {}
        for role, topic in node_topic.items():
            sample = next((m.msg for m in window if m.role == role), None)
            if topic and sample is not None:
                pubs[role] = player.create_publisher(type(sample), topic, 10)
        executor = MultiThreadedExecutor(num_threads=3, context=context)
        executor.add_node(loc)
        executor.add_node(player)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        linked = _wait(
            lambda: (
                all(pb.get_subscription_count() > 0 for pb in pubs.values())
                and player.count_publishers(f"{loc.get_fully_qualified_name()}/fix") > 0
            ),
            10.0,
        )
        if not linked:
            raise ReplayError("DDS discovery between the replay and the node did not complete in 10 s")

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(frames), desc="replay", unit="frame")
        sent = 0
        given = {k: 0 for k in ("fix", "imu", "odom") if k in pubs}  # messages published so far
        wall0, bag0 = time.monotonic(), window[0].stamp
        for m in window:
            if m.role not in pubs:
                continue
            if rate > 0:
                delay = (m.stamp - bag0) / rate - (time.monotonic() - wall0)
                if delay > 0:
                    time.sleep(delay)
            elif m.role == cam_role:
                # lock-step: the previous frame is finished and the node holds every fix / IMU sample sent
                # before this frame (the executor may otherwise take the image callback first)
                _wait(lambda sent=sent: _frames_done(loc.diagnostics_values()) >= sent, frame_timeout_s)
                _wait(
                    lambda: all(int(loc.diagnostics_values().get(f"count_{k}", 0)) >= n for k, n in given.items()), 2.0
                )
                if hm_dir is not None:  # ... and its overlay is out (visualization runs off the pose path)
                    _wait(lambda: len(rec.heatmap) >= _overlays_due(loc.diagnostics_values()), 5.0)
            pubs[m.role].publish(m.msg)
            if m.role in given:
                given[m.role] += 1
            if m.role == cam_role:
                sent += 1
                if bar is not None:
                    bar.n = min(_frames_done(loc.diagnostics_values()), len(frames))
                    bar.refresh()
        _wait(lambda: _frames_done(loc.diagnostics_values()) >= sent, frame_timeout_s)
        published = "count_filtered" if p.fusion == "filter" else "count_poses"
        _wait(lambda: rec.count() >= int(loc.diagnostics_values().get(published, 0)), 5.0)
        _wait(lambda: len(rec.frame_pose) >= int(loc.diagnostics_values().get("count_poses", 0)), 5.0)
        if hm_dir is not None:
            _wait(lambda: len(rec.heatmap) >= _overlays_due(loc.diagnostics_values()), 5.0)
        if bar is not None:
            bar.n = len(frames)
            bar.close()
        diagnostics = loc.diagnostics_values()
        datum = loc.loc.datum
        fusion = p.fusion
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if loc is not None:
            loc.close()
            loc.destroy_node()
        if player is not None:
            player.destroy_node()
        if thread is not None:
            thread.join(timeout=5.0)
        rclpy.try_shutdown(context=context)

    for f in frames:
        key = round(f.stamp, 6)
        g, fx = _nearest(truth, f.stamp), _nearest(gnss, f.stamp)
        if g is not None:
            f.gt_lat, f.gt_lon = float(g.latitude), float(g.longitude)
        if fx is not None:
            f.gnss_lat, f.gnss_lon = float(fx.latitude), float(fx.longitude)
            if g is not None:
                f.gnss_err_m = horizontal_error_m(f.gnss_lat, f.gnss_lon, f.gt_lat, f.gt_lon)
        est, pose = rec.fix.get(key), rec.pose.get(key)
        if est is not None:
            f.localized = True
            f.est_lat, f.est_lon = float(est.latitude), float(est.longitude)
            f.est_std_m = float(
                math.sqrt(max(est.position_covariance[0], 0.0) + max(est.position_covariance[4], 0.0)) / math.sqrt(2)
            )
            if g is not None:
                f.est_err_m = horizontal_error_m(f.est_lat, f.est_lon, f.gt_lat, f.gt_lon)
        if pose is not None:
            f.map_x, f.map_y = float(pose.pose.pose.position.x), float(pose.pose.pose.position.y)
        fp = rec.frame_pose.get(key)
        if fp is not None and datum is not None:
            f.frame_localized = True
            f.frame_map_x, f.frame_map_y = float(fp.pose.pose.position.x), float(fp.pose.pose.position.y)
            lat, lon, _ = datum.to_latlon(f.frame_map_x, f.frame_map_y, datum.h0)
            f.frame_lat, f.frame_lon = float(lat), float(lon)
            cov = fp.pose.covariance
            f.frame_std_m = float(math.sqrt(max(cov[0], 0.0) + max(cov[7], 0.0)) / math.sqrt(2))
            if g is not None:
                f.frame_err_m = horizontal_error_m(f.frame_lat, f.frame_lon, f.gt_lat, f.gt_lon)
        if hm_dir is not None and key in rec.heatmap:
            import cv2

            png = hm_dir / f"frame_{f.frame:05d}.png"
            atomic_write_bytes(
                png, cv2.imencode(".png", cv2.cvtColor(decode_image(rec.heatmap[key]), cv2.COLOR_RGB2BGR))[1].tobytes()
            )
            f.heatmap = os.path.relpath(png, out.parent)

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text("".join(json.dumps(asdict(f)) + "\n" for f in frames))
    localized = sum(f.localized for f in frames)
    records = [asdict(f) for f in frames]
    errors = summarize_errors(records)
    summary = ReplaySummary(out, len(frames), localized, time.monotonic() - t_start, diagnostics, fusion, errors)
    atomic_write_json(
        Path(f"{out}.json"),
        {
            "bag": str(bag),
            "params_file": str(params_file),
            "model": model,
            "tile_source": tile_source,
            "rate": rate,
            "start_frac": start_frac,
            "end_frac": end_frac,
            "frames": len(frames),
            "first_frame": first,
            "localized": localized,
            "fusion": fusion,
            "errors": errors,
            "wall_s": summary.wall_s,
            "diagnostics": diagnostics,
        },
    )
    return summary


def read_jsonl(path: str | Path) -> List[Dict[str, Any]]:
    """The frame records of a replay output."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


HELP = """Play a recorded drive (rosbag2: GNSS NavSatFix, IMU, camera Image/CompressedImage, optional
CameraInfo and Odometry, ground truth NavSatFix) over real DDS into the localizer node (the same node as
`xview-loc node`, started in this process from --params-file) and write one JSON line per camera frame: the
node's estimate (est_*: ~/fix, WGS84 degrees, the drive filter with fusion: filter; ~/pose in the map frame, ENU
metres at the datum), the per-frame estimate (frame_*: ~/frame_pose), the bag's GNSS fix and ground truth at
that stamp, and horizontal errors in metres. OUT.json gets a summary (errors of node, frame and GNSS: mean,
median, p95, % > 5 m, % > 10 m) and the node's diagnostics."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="play a bag into the localizer node over DDS; per-frame errors as JSONL",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bag", required=True, help="rosbag2 folder (MCAP or SQLite 3)")
    p.add_argument("--params-file", required=True, help="node parameters YAML (e.g. config/localizer.yaml)")
    p.add_argument("--model", help="override model_path: checkpoint .pt, .onnx or TensorRT engine")
    p.add_argument("--tile-source", help="override tile_source (xyz:DIR, mbtiles:FILE, ...)")
    p.add_argument("--out", required=True, help="output JSONL (OUT.json: summary)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="playback speed as a multiple of the recorded pace (1 = real time; frames the node cannot keep up "
        "with are dropped as on a vehicle); 0 = lock-step, each frame after the node finished the last (default)",
    )
    p.add_argument(
        "--start-frac", type=float, default=0.0, help="first camera frame, as a fraction of the drive (default 0)"
    )
    p.add_argument(
        "--end-frac", type=float, default=1.0, help="end of the window (exclusive), fraction of the drive (default 1)"
    )
    p.add_argument("--heatmap-dir", help="also save the node's ~/heatmap overlays here as PNG")
    p.add_argument("--frame-timeout", type=float, default=30.0, help="seconds to wait for the node on one frame")
    for role, topic in DEFAULT_TOPICS.items():
        p.add_argument(f"--{role}-topic", default=topic, help=f"bag topic of the {role} messages (default {topic})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--ros-args",
        dest="ros_args",
        nargs=argparse.REMAINDER,
        default=[],
        help="everything after it goes to the node's ROS arguments (-p NAME:=VALUE)",
    )
    p.set_defaults(func=_run_replay)

    c = subparsers.add_parser(
        "bag-crop",
        help="copy a fraction of a drive (by camera frames) to a new bag",
        description="Copy the camera frames [--start-frac, --end-frac) of a drive, with every "
        "other topic within 1 s around them, to a new rosbag2 of the same storage.",
    )
    c.add_argument("--bag", required=True, help="input rosbag2 folder")
    c.add_argument("--out", required=True, help="output rosbag2 folder (must not exist)")
    c.add_argument("--start-frac", type=float, default=0.0, help="fraction of the camera frames where the copy starts")
    c.add_argument("--end-frac", type=float, default=1.0, help="fraction where it ends (exclusive)")
    c.set_defaults(func=_run_crop)


def _run_replay(args: argparse.Namespace) -> int:
    topics = {role: getattr(args, f"{role}_topic") for role in DEFAULT_TOPICS}
    s = replay(
        args.bag,
        args.params_file,
        args.out,
        model=args.model,
        tile_source=args.tile_source,
        rate=args.rate,
        start_frac=args.start_frac,
        end_frac=args.end_frac,
        heatmap_dir=args.heatmap_dir,
        frame_timeout_s=args.frame_timeout,
        ros_args=args.ros_args,
        topics=topics,
        progress=not args.no_progress,
    )
    errs = [r["est_err_m"] for r in read_jsonl(s.out) if r["est_err_m"] is not None]
    med = f", median error {np.median(errs):.2f} m" if errs else ""
    print(f"replay ({s.fusion}): {s.localized}/{s.frames} frames localized{med}; {s.out} ({s.wall_s:.1f} s)")
    for name, st in s.errors.items():
        if st.get("frames"):
            print(
                f"  {name:5s}: {st['frames']}/{s.frames} frames, mean {st['mean_m']:.2f} m, median {st['median_m']:.2f} m, "
                f"p95 {st['p95_m']:.2f} m, > 5 m {st['over_5m_pct']:.0f} %, > 10 m {st['over_10m_pct']:.0f} %"
            )
    return 0


def _run_crop(args: argparse.Namespace) -> int:
    out = crop_bag(args.bag, args.out, args.start_frac, args.end_frac)
    print(f"bag-crop: {out}")
    return 0
