# SPDX-License-Identifier: Apache-2.0
"""Real-DDS harness for the node tests: the localizer node and a tester node in one process, spun by a
multi-threaded executor in a background thread; the tester publishes inputs and records outputs."""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, Imu, NavSatFix, NavSatStatus
from visualization_msgs.msg import Marker

from xview_loc_ros.geo import compass_to_enu_yaw, quaternion_from_yaw
from xview_loc_ros.ros_msgs import sec_to_stamp

OUTPUTS = {
    "pose": PoseWithCovarianceStamped,
    "frame_pose": PoseWithCovarianceStamped,
    "belief_grid": OccupancyGrid,
    "fix": NavSatFix,
    "heatmap": Image,
    "heatmap_grid": OccupancyGrid,
    "marker": Marker,
}


def fix_msg(t: float, lat: float, lon: float, std: float = 5.0, status: int = NavSatStatus.STATUS_FIX) -> NavSatFix:
    m = NavSatFix()
    m.header.stamp = sec_to_stamp(t)
    m.header.frame_id = "gnss"
    m.status.status = status
    m.status.service = NavSatStatus.SERVICE_GPS
    m.latitude, m.longitude, m.altitude = lat, lon, 10.0
    m.position_covariance = [std**2, 0.0, 0.0, 0.0, std**2, 0.0, 0.0, 0.0, (2 * std) ** 2]
    m.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    return m


def imu_msg(t: float, heading_deg: float) -> Imu:
    m = Imu()
    m.header.stamp = sec_to_stamp(t)
    qx, qy, qz, qw = quaternion_from_yaw(float(compass_to_enu_yaw(heading_deg)))
    m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w = qx, qy, qz, qw
    m.orientation_covariance[8] = math.radians(2.0) ** 2
    return m


def jpeg_msg(t: float, rgb: np.ndarray) -> CompressedImage:
    m = CompressedImage(format="jpeg")
    m.header.stamp = sec_to_stamp(t)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    m.data = buf.tobytes()
    return m


def raw_msg(t: float, rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    m = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 3)
    m.header.stamp = sec_to_stamp(t)
    m.data = np.ascontiguousarray(rgb).tobytes()
    return m


class Harness:
    """Starts the localizer node with ``params`` (plus optional injected backend) and a tester node."""

    def __init__(self, params: Dict[str, Any], backend: Any = None) -> None:
        from xview_loc_ros.node import LocalizerNode

        self.node = LocalizerNode(
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()], backend=backend
        )
        self.tester = Node("tester")
        self.received: Dict[str, List[Any]] = {k: [] for k in list(OUTPUTS) + ["diagnostics"]}
        self.arrival: Dict[str, List[float]] = {k: [] for k in self.received}
        self._lock = threading.Lock()
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        for name, typ in OUTPUTS.items():
            qos = latched if name in ("heatmap_grid", "belief_grid") else 10
            self.tester.create_subscription(typ, f"/xview_localizer/{name}", self._recorder(name), qos)
        self.tester.create_subscription(DiagnosticArray, "/diagnostics", self._recorder("diagnostics"), 10)
        self.pub = {
            "fix": self.tester.create_publisher(NavSatFix, "/gnss/fix", 10),
            "imu": self.tester.create_publisher(Imu, "/imu/data", 10),
            "jpeg": self.tester.create_publisher(CompressedImage, "/camera/image/compressed", 10),
            "raw": self.tester.create_publisher(Image, "/camera/image", 10),
            "odom": self.tester.create_publisher(Odometry, "/odom", 10),
        }
        raw = params.get("image_transport", "compressed") == "raw"
        listens = {
            "jpeg": not raw,
            "raw": raw,
            "imu": params.get("heading_source", "imu") == "imu",
            "odom": params.get("fusion", "filter") == "filter" and params.get("odom_topic", "odom") != "",
        }
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.wait_for(
            lambda: all(p.get_subscription_count() > 0 for k, p in self.pub.items() if listens.get(k, True)),
            10.0,
        )

    def _recorder(self, name: str) -> Callable[[Any], None]:
        def record(msg: Any) -> None:
            with self._lock:
                self.received[name].append(msg)
                self.arrival[name].append(time.monotonic())

        return record

    def publish(self, kind: str, msg: Any) -> None:
        self.pub[kind].publish(msg)

    def count(self, name: str) -> int:
        with self._lock:
            return len(self.received[name])

    @staticmethod
    def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.02)
        return cond()

    def last_diagnostics(self) -> Optional[Dict[str, str]]:
        with self._lock:
            if not self.received["diagnostics"]:
                return None
            st = self.received["diagnostics"][-1].status[0]
        return {kv.key: kv.value for kv in st.values}

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.close()
        self.node.destroy_node()
        self.tester.destroy_node()
        self._thread.join(timeout=5.0)


def read_drive(bag) -> List[tuple]:
    """(topic, stamp_s, rclpy message) of a synthetic drive bag, in bag order, read with rosbags and
    converted field by field to rclpy messages (the node's inputs and the ground-truth fix)."""
    from pathlib import Path

    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    def header(dst, src):
        dst.header.stamp.sec, dst.header.stamp.nanosec = int(src.header.stamp.sec), int(src.header.stamp.nanosec)
        dst.header.frame_id = src.header.frame_id
        return dst

    def navsat(m):
        out = header(NavSatFix(), m)
        out.status.status, out.status.service = int(m.status.status), int(m.status.service)
        out.latitude, out.longitude, out.altitude = float(m.latitude), float(m.longitude), float(m.altitude)
        out.position_covariance = [float(x) for x in m.position_covariance]
        out.position_covariance_type = int(m.position_covariance_type)
        return out

    def imu(m):
        out = header(Imu(), m)
        o = m.orientation
        out.orientation.x, out.orientation.y, out.orientation.z, out.orientation.w = (
            float(o.x),
            float(o.y),
            float(o.z),
            float(o.w),
        )
        out.orientation_covariance = [float(x) for x in m.orientation_covariance]
        return out

    def odom(m):
        out = header(Odometry(), m)
        out.child_frame_id = m.child_frame_id
        t, o = m.twist.twist, out.twist.twist
        o.linear.x, o.linear.y, o.angular.z = float(t.linear.x), float(t.linear.y), float(t.angular.z)
        out.twist.covariance = [float(x) for x in m.twist.covariance]
        return out

    def compressed(m):
        out = header(CompressedImage(), m)
        out.format = m.format
        out.data = bytes(m.data)
        return out

    convert = {
        "/gnss/fix": navsat,
        "/ground_truth/fix": navsat,
        "/imu/data": imu,
        "/odom": odom,
        "/camera/image/compressed": compressed,
    }
    items = []
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        conns = [c for c in reader.connections if c.topic in convert]
        for conn, t_ns, raw in reader.messages(connections=conns):
            items.append((conn.topic, t_ns * 1e-9, convert[conn.topic](reader.deserialize(raw, conn.msgtype))))
    return items


def play(h: "Harness", items: List[tuple], speed: float = 1.0) -> None:
    """Publish a drive's inputs at bag pace (``speed`` x real time)."""
    kinds = {"/gnss/fix": "fix", "/imu/data": "imu", "/odom": "odom", "/camera/image/compressed": "jpeg"}
    t_bag0, t_wall0 = items[0][1], time.monotonic()
    for topic, t, msg in items:
        if topic not in kinds:
            continue
        delay = (t - t_bag0) / speed - (time.monotonic() - t_wall0)
        if delay > 0:
            time.sleep(delay)
        h.publish(kinds[topic], msg)
