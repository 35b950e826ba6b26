"""ROS message <-> plain Python/numpy conversions for the localizer node.

Input parsers raise :class:`BadMessage` (a ValueError) with a short ``reason`` key that the node
counts in diagnostics. Output builders take the ROS-free results of :mod:`xview_loc_ros.localizer`.
Covariances: 6x6 row-major (x, y, z, rot x, rot y, rot z) for poses, 3x3 ENU m^2 for NavSatFix.
"""
from __future__ import annotations

import array
import math
from typing import Dict, Mapping, Tuple

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix, NavSatStatus
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from xview_loc_ros.geo import LocalENU, quaternion_from_yaw
from xview_loc_ros.localizer import Estimate, Fix, Heading, camera_hfov_deg, fix_covariance_en, heading_from_imu
from xview_loc_ros.overlay import occupancy_values


class BadMessage(ValueError):
    """An input message the node drops; ``reason`` is the diagnostics key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    nanosec = min(int(round((t - sec) * 1e9)), 999_999_999)
    return Time(sec=int(sec), nanosec=nanosec)


# -- inputs ---------------------------------------------------------------------------------------
def fix_from_msg(msg: NavSatFix, default_std_m: float) -> Fix:
    """NavSatFix -> Fix; NO_FIX/unknown status and non-finite or out-of-range lat/lon are BadMessage."""
    if msg.status.status < NavSatStatus.STATUS_FIX:
        raise BadMessage("fix_no_fix", f"status {msg.status.status} (NO_FIX or unknown)")
    lat, lon = float(msg.latitude), float(msg.longitude)
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        raise BadMessage("fix_invalid", f"latitude {lat}, longitude {lon} are not a WGS84 position")
    return Fix(stamp_to_sec(msg.header.stamp), lat, lon, float(msg.altitude),
               fix_covariance_en(list(msg.position_covariance), msg.position_covariance_type, default_std_m),
               msg.header.frame_id)


def heading_from_msg(msg: Imu, default_var: float) -> Tuple[float, Heading]:
    """Imu (orientation in ENU) -> (stamp s, Heading); a missing orientation (covariance[0] = -1) or a
    non-unit quaternion is BadMessage."""
    if msg.orientation_covariance[0] == -1.0:
        raise BadMessage("imu_no_orientation", "orientation_covariance[0] = -1: the IMU reports no orientation")
    q = msg.orientation
    try:
        h = heading_from_imu(q.x, q.y, q.z, q.w, float(msg.orientation_covariance[8]), default_var)
    except ValueError as e:
        raise BadMessage("imu_invalid", str(e)) from e
    return stamp_to_sec(msg.header.stamp), h


_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def rgb_from_image(msg: Image) -> np.ndarray:
    """Image (rgb8, bgr8, rgba8, bgra8, mono8) -> RGB uint8 HxWx3; other encodings are BadMessage."""
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise BadMessage("image_encoding", f"unsupported encoding {msg.encoding!r} (rgb8, bgr8, rgba8, bgra8, mono8)")
    h, w, c = int(msg.height), int(msg.width), _CHANNELS[enc]
    if h <= 0 or w <= 0:
        raise BadMessage("image_empty", f"image is {w}x{h} px")
    if msg.step < w * c or len(msg.data) < msg.step * h:
        raise BadMessage("image_size", f"{len(msg.data)} bytes do not hold {h} rows of step {msg.step} ({w}x{c} bytes needed per row)")
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, np.ndarray)) else msg.data, np.uint8)
    img = buf[: msg.step * h].reshape(h, msg.step)[:, : w * c].reshape(h, w, c)
    if enc == "rgb8":
        return np.ascontiguousarray(img)
    code = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB}[enc]
    return cv2.cvtColor(img, code)


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def rgb_from_compressed(msg: CompressedImage, reduce: int = 1) -> np.ndarray:
    """CompressedImage (JPEG/PNG) -> RGB uint8 HxWx3, decoded at 1/``reduce`` size (1, 2, 4, 8; JPEG
    decodes that much faster when the model needs fewer pixels); empty or undecodable data is BadMessage."""
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, np.ndarray)) else msg.data, np.uint8)
    if data.size == 0:
        raise BadMessage("image_empty", "compressed image has no data")
    img = cv2.imdecode(data, _REDUCED[reduce])
    if img is None or img.size == 0:
        raise BadMessage("image_corrupt", f"cannot decode {data.size} bytes of format {msg.format!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def jpeg_reduction(width: int, height: int, need_w: int, need_h: int) -> int:
    """The largest decode reduction (1, 2, 4, 8) that keeps an image of width x height px at least
    need_w x need_h px (the model's ground input)."""
    r = 1
    while r < 8 and width // (2 * r) >= need_w and height // (2 * r) >= need_h:
        r *= 2
    return r


def hfov_from_camera_info(msg: CameraInfo) -> float:
    """CameraInfo -> horizontal field of view (degrees) from K[0] (fx) and the width."""
    try:
        return camera_hfov_deg(int(msg.width), float(msg.k[0]))
    except ValueError as e:
        raise BadMessage("camera_info_invalid", str(e)) from e


# -- outputs --------------------------------------------------------------------------------------
def image_from_rgb(rgb: np.ndarray, header: Header) -> Image:
    """RGB uint8 HxWx3 -> Image rgb8."""
    h, w = rgb.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def pose_msg(est: Estimate, header: Header, unobserved_variance: float) -> PoseWithCovarianceStamped:
    """Estimate -> PoseWithCovarianceStamped in the map frame (x east, y north, z up; yaw ENU).
    x/y covariance from the heat map; z, roll, pitch get ``unobserved_variance``; yaw its own."""
    msg = PoseWithCovarianceStamped(header=header)
    p = msg.pose.pose
    p.position.x, p.position.y = est.east, est.north
    p.position.z = 0.0
    qx, qy, qz, qw = quaternion_from_yaw(est.yaw if est.yaw is not None else 0.0)
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = qx, qy, qz, qw
    cov = np.zeros((6, 6))
    cov[:2, :2] = est.cov_en
    cov[2, 2] = cov[3, 3] = cov[4, 4] = unobserved_variance
    cov[5, 5] = est.yaw_var if est.yaw is not None else unobserved_variance
    msg.pose.covariance = [float(x) for x in cov.ravel()]
    return msg


def fix_msg(est: Estimate, header: Header) -> NavSatFix:
    """Accepted Estimate -> NavSatFix (status FIX, service GPS, covariance KNOWN in ENU m^2)."""
    msg = NavSatFix(header=header)
    msg.status.status = NavSatStatus.STATUS_FIX
    msg.status.service = NavSatStatus.SERVICE_GPS
    msg.latitude, msg.longitude = est.lat, est.lon
    msg.altitude = est.fix.alt if math.isfinite(est.fix.alt) else float("nan")
    cov = np.zeros((3, 3))
    cov[:2, :2] = est.cov_en
    # altitude is not observed by the model: carry the GNSS one with a wide variance
    cov[2, 2] = max(float(np.max(np.diag(est.fix.cov_en))), 1.0) * 4.0
    msg.position_covariance = [float(x) for x in cov.ravel()]
    msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_KNOWN
    return msg


def grid_msg(est: Estimate, datum: LocalENU, header: Header) -> OccupancyGrid:
    """The heat map as an OccupancyGrid in the map frame: one cell per heat-map cell, origin at the
    patch's south-west corner in map ENU (patch north-up; the tangent-plane rotation between the patch
    centre and the datum is ignored: < 0.01 deg within 1 km)."""
    h, w = est.prob.shape
    g = est.georef
    res = g.mpp * g.size_px / w
    ce, cn, _ = (float(x) for x in datum.to_enu(g.center_lat, g.center_lon, datum.h0))
    half = g.size_px * g.mpp / 2.0
    msg = OccupancyGrid(header=header)
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(res)
    msg.info.width, msg.info.height = int(w), int(h)
    msg.info.origin.position.x = ce - half
    msg.info.origin.position.y = cn - half
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", occupancy_values(est.prob).tobytes())
    return msg


def marker_msgs(est: Estimate, datum: LocalENU, header: Header, ns: str = "xview_localizer") -> Tuple[Marker, Marker]:
    """Flat discs in the map frame, 2 sigma (major axis) in radius: id 0 the estimate (green when
    accepted, red when gated), id 1 the GNSS fix used for the frame (white, translucent)."""
    fe, fn, _ = (float(x) for x in datum.to_enu(est.fix.lat, est.fix.lon, datum.h0))
    out = []
    for i, (e, n, cov, rgba) in enumerate((
            (est.east, est.north, est.cov_en, (0.1, 0.9, 0.1, 0.8) if est.accepted else (0.9, 0.1, 0.1, 0.8)),
            (fe, fn, est.fix.cov_en, (1.0, 1.0, 1.0, 0.35)))):
        m = Marker(header=header, ns=ns, id=i, type=Marker.CYLINDER, action=Marker.ADD)
        m.pose.position.x, m.pose.position.y, m.pose.position.z = e, n, 0.1 * (1 - i)
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = max(4.0 * math.sqrt(float(np.linalg.eigvalsh(cov)[-1])), 0.5)
        m.scale.z = 0.1
        m.color.r, m.color.g, m.color.b, m.color.a = rgba
        out.append(m)
    return out[0], out[1]


def diagnostics_msg(header: Header, name: str, hardware_id: str, level: int, message: str,
                    values: Mapping[str, object]) -> DiagnosticArray:
    """One DiagnosticStatus with key/values; ``level`` 0 OK, 1 WARN, 2 ERROR."""
    st = DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id)
    st.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
    return DiagnosticArray(header=header, status=[st])


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def counts_as_values(prefix: str, counts: Mapping[str, int]) -> Dict[str, int]:
    return {f"{prefix}{k}": v for k, v in sorted(counts.items())}
