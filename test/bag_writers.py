# SPDX-License-Identifier: Apache-2.0
"""Test fixtures for bag extraction: small drives written as real rosbag2 files (rosbags writer,
SQLite 3 and MCAP) or with the independent mcap-ros2-support writer, and a tiny XYZ tile folder.

The drive: the vehicle starts at (LAT0, LON0) and drives straight at ``speed`` m/s along compass
``heading_deg``; GNSS fixes at ``fix_hz`` are the true position plus a constant ``fix_offset_m``
(east, north), the ground truth topic carries the true position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from xview_loc_ros.geo import LocalENU, compass_to_enu_yaw, latlon_to_tile, quaternion_from_yaw

LAT0, LON0 = 52.0116, 4.3571  # Delft
T0_NS = 1_700_000_000_000_000_000


@dataclass
class DriveSpec:
    frames: int = 12
    rate_hz: float = 2.0
    fix_hz: float = 5.0
    speed: float = 5.0
    heading_deg: float = 30.0
    stop_after_s: Optional[float] = None  # vehicle stands still after this time
    fix_offset_m: Tuple[float, float] = (6.0, -4.0)
    image: str = "jpeg"  # jpeg | png | rgb8 | bgr8 | mono8 | bayer_rggb8
    size_hw: Tuple[int, int] = (32, 64)
    imu: bool = True
    camera_info: bool = False
    gt: bool = True
    # hooks to corrupt single messages: (kind, index) -> replacement fields
    fix_override: Dict[int, Dict] = field(default_factory=dict)
    image_override: Dict[int, Dict] = field(default_factory=dict)

    def true_enu(self, t: float) -> Tuple[float, float]:
        if self.stop_after_s is not None:
            t = min(t, self.stop_after_s)
        yaw = float(compass_to_enu_yaw(self.heading_deg))
        return self.speed * t * math.cos(yaw), self.speed * t * math.sin(yaw)

    def true_latlon(self, t: float) -> Tuple[float, float]:
        e, n = self.true_enu(t)
        lat, lon, _ = LocalENU(LAT0, LON0).to_latlon(e, n, 0.0)
        return float(lat), float(lon)

    @property
    def duration_s(self) -> float:
        return (self.frames - 1) / self.rate_hz


def frame_image(i: int, spec: DriveSpec) -> np.ndarray:
    """Smooth random colour texture (camera-like JPEG sizes), different for every frame."""
    rng = np.random.default_rng(i)
    h, w = spec.size_hw
    base = rng.integers(0, 255, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)


def _stamp(ts, ns: int):
    Time = ts.types["builtin_interfaces/msg/Time"]
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ts, ns: int, frame: str):
    Header = ts.types["std_msgs/msg/Header"]
    if "seq" in Header.__dataclass_fields__:  # ROS 1
        return Header(seq=0, stamp=_stamp(ts, ns), frame_id=frame)
    return Header(stamp=_stamp(ts, ns), frame_id=frame)


def build_messages(ts, spec: DriveSpec) -> List[Tuple[str, str, int, object]]:
    """(topic, msgtype, log ns, message) of the whole drive, time-ordered."""
    T = ts.types
    out: List[Tuple[str, str, int, object]] = []
    dur = spec.duration_s
    n_fix = int(math.floor((dur + 1.0) * spec.fix_hz)) + 1
    for k in range(n_fix):
        t = -0.5 + k / spec.fix_hz
        ns = T0_NS + int(round(t * 1e9))
        lat, lon = spec.true_latlon(max(t, 0.0))
        e, n = spec.true_enu(max(t, 0.0))
        flat, flon, _ = LocalENU(LAT0, LON0).to_latlon(e + spec.fix_offset_m[0], n + spec.fix_offset_m[1], 0.0)
        fields = dict(latitude=float(flat), longitude=float(flon), status=0, cov_type=2)
        fields.update(spec.fix_override.get(k, {}))
        fix = T["sensor_msgs/msg/NavSatFix"](
            header=_header(ts, ns, "gnss"),
            status=T["sensor_msgs/msg/NavSatStatus"](status=fields["status"], service=1),
            latitude=fields["latitude"],
            longitude=fields["longitude"],
            altitude=10.0,
            position_covariance=np.array([9.0, 0, 0, 0, 9.0, 0, 0, 0, 25.0]),
            position_covariance_type=fields["cov_type"],
        )
        out.append(("/gnss/fix", "sensor_msgs/msg/NavSatFix", ns, fix))
        if spec.gt:
            gt = T["sensor_msgs/msg/NavSatFix"](
                header=_header(ts, ns, "base_link"),
                status=T["sensor_msgs/msg/NavSatStatus"](status=2, service=1),
                latitude=lat,
                longitude=lon,
                altitude=10.0,
                position_covariance=np.zeros(9),
                position_covariance_type=0,
            )
            out.append(("/ground_truth/fix", "sensor_msgs/msg/NavSatFix", ns, gt))
        if spec.imu:
            x, y, z, w = quaternion_from_yaw(float(compass_to_enu_yaw(spec.heading_deg)))
            imu = T["sensor_msgs/msg/Imu"](
                header=_header(ts, ns + 1000, "imu"),
                orientation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
                orientation_covariance=np.full(9, 0.01),
                angular_velocity=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                angular_velocity_covariance=np.zeros(9),
                linear_acceleration=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=9.81),
                linear_acceleration_covariance=np.zeros(9),
            )
            out.append(("/imu/data", "sensor_msgs/msg/Imu", ns + 1000, imu))
    h, w = spec.size_hw
    for i in range(spec.frames):
        ns = T0_NS + int(round(i / spec.rate_hz * 1e9))
        rgb = frame_image(i, spec)
        ov = spec.image_override.get(i, {})
        if spec.image in ("jpeg", "png"):
            ok, buf = cv2.imencode(".jpg" if spec.image == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            data = ov.get("data", np.frombuffer(buf.tobytes(), np.uint8))
            msg = T["sensor_msgs/msg/CompressedImage"](header=_header(ts, ns, "camera"), format=spec.image, data=data)
            out.append(("/camera/image/compressed", "sensor_msgs/msg/CompressedImage", ns, msg))
        else:
            enc = ov.get("encoding", spec.image)
            arr = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb[:, :, 1]}.get(spec.image)
            if arr is None:  # bayer_rggb8 mosaic
                arr = np.zeros((h, w), np.uint8)
                arr[0::2, 0::2] = rgb[0::2, 0::2, 0]
                arr[0::2, 1::2] = rgb[0::2, 1::2, 1]
                arr[1::2, 0::2] = rgb[1::2, 0::2, 1]
                arr[1::2, 1::2] = rgb[1::2, 1::2, 2]
            ch = 1 if arr.ndim == 2 else 3
            msg = T["sensor_msgs/msg/Image"](
                header=_header(ts, ns, "camera"),
                height=h,
                width=w,
                encoding=enc,
                is_bigendian=0,
                step=w * ch,
                data=np.ascontiguousarray(arr).reshape(-1),
            )
            out.append(("/camera/image", "sensor_msgs/msg/Image", ns, msg))
        if spec.camera_info:
            f = (w / 2) / math.tan(math.radians(45))
            info = T["sensor_msgs/msg/CameraInfo"](
                header=_header(ts, ns, "camera"),
                height=h,
                width=w,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=np.array([f, 0, w / 2, 0, f, h / 2, 0, 0, 1.0]),
                r=np.eye(3).reshape(-1),
                p=np.array([f, 0, w / 2, 0, 0, f, h / 2, 0, 0, 0, 1.0, 0]),
                binning_x=0,
                binning_y=0,
                roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            out.append(("/camera/camera_info", "sensor_msgs/msg/CameraInfo", ns, info))
    out.sort(key=lambda m: m[2])
    return out


def write_rosbags(path: Path, spec: DriveSpec, storage: str = "mcap") -> Path:
    """rosbag2 folder written with rosbags (``storage`` 'mcap' or 'sqlite3')."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    msgs = build_messages(ts, spec)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for topic, typ, ns, msg in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=ts)
            w.write(conns[topic], ns, ts.serialize_cdr(msg, typ))
    return path


def write_mcap_ros2(path: Path, spec: DriveSpec, chunk_size: int = 1024 * 1024) -> Path:
    """A single .mcap file written with the independent mcap-ros2-support writer (dict messages);
    ``chunk_size`` bytes of messages per compressed chunk."""
    from mcap_ros2.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    msgs = build_messages(ts, spec)
    schemas = {}
    with open(path, "wb") as f:
        w = Writer(f, chunk_size=chunk_size)
        for topic, typ, ns, msg in msgs:
            if typ not in schemas:
                schemas[typ] = w.register_msgdef(typ, ts.generate_msgdef(typ, ros_version=2)[0])
            w.write_message(topic=topic, schema=schemas[typ], message=_to_dict(msg), log_time=ns, publish_time=ns)
        w.finish()
    return path


def write_ros1(path: Path, spec: DriveSpec) -> Path:
    """A ROS 1 .bag written with rosbags (Noetic message definitions; no CameraInfo)."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    with Writer(path) as w:
        conns = {}
        for topic, typ, ns, msg in build_messages(ts, spec):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=ts)
            w.write(conns[topic], ns, ts.serialize_ros1(msg, typ))
    return path


def _to_dict(msg) -> object:
    if hasattr(msg, "__dataclass_fields__"):
        return {k: _to_dict(getattr(msg, k)) for k in msg.__dataclass_fields__ if k != "__msgtype__"}
    if isinstance(msg, np.ndarray):
        return msg.tobytes() if msg.dtype == np.uint8 else msg.tolist()
    return msg


def make_xyz_tiles(root: Path, zoom: int = 18, radius_m: float = 400.0) -> Path:
    """XYZ PNG tiles around (LAT0, LON0) with a fine random texture (so every patch is distinct)."""
    enu = LocalENU(LAT0, LON0)
    lat_n, lon_w, _ = enu.to_latlon(-radius_m, radius_m, 0.0)
    lat_s, lon_e, _ = enu.to_latlon(radius_m, -radius_m, 0.0)
    x0, y0 = (int(v) for v in latlon_to_tile(float(lat_n), float(lon_w), zoom))
    x1, y1 = (int(v) for v in latlon_to_tile(float(lat_s), float(lon_e), zoom))
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            rng = np.random.default_rng(x * 100003 + y)
            tile = cv2.resize(
                rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST
            )
            p = root / str(zoom) / str(x) / f"{y}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), tile)
    return root
