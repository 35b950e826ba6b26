# SPDX-License-Identifier: Apache-2.0
"""ROS message <-> plain Python/numpy conversions for the localizer node.

Input parsers apply :mod:`xview_loc_ros.sensors` (its :class:`~xview_loc_ros.sensors.SensorRejected`
carries the reason the node counts in diagnostics) and add the header stamp. Output builders take
the ROS-free results of :mod:`xview_loc_ros.localizer`.
Covariances: 6x6 row-major (x, y, z, rot x, rot y, rot z) for poses, 3x3 ENU m^2 for NavSatFix.
"""

from __future__ import annotations

import array
import math
from typing import Any, Dict, List, Mapping, Tuple, Union

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from sensor_msgs.msg import CameraInfo, Image, Imu, NavSatFix, NavSatStatus
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from xview_loc_ros.geo import LocalENU, quaternion_from_yaw
from xview_loc_ros.localizer import Estimate, Fix, Heading, TrackedPose
from xview_loc_ros.mount import StaticTransform
from xview_loc_ros.overlay import occupancy_values
from xview_loc_ros.sensors import OdometryTwist, camera_intrinsics, gnss_fix, imu_yaw, odometry_twist

#: a pose to publish: one frame's estimate or the drive filter's belief
Pose = Union[Estimate, TrackedPose]


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    nanosec = min(int(round((t - sec) * 1e9)), 999_999_999)
    return Time(sec=int(sec), nanosec=nanosec)


# -- inputs (the rules are xview_loc_ros.sensors', shared with the extractor) ----------------------
def fix_from_msg(msg: NavSatFix, default_std_m: float) -> Fix:
    """NavSatFix -> Fix stamped in seconds; a covariance the receiver did not report becomes
    ``default_std_m``^2 isotropic. Refused fixes raise :class:`~xview_loc_ros.sensors.SensorRejected`."""
    f = gnss_fix(msg)
    return Fix(stamp_to_sec(msg.header.stamp), f.lat, f.lon, f.alt, f.cov_en_or(default_std_m), f.frame_id)


def heading_from_msg(msg: Imu, default_var: float) -> Tuple[float, Heading]:
    """Imu (orientation in ENU) -> (stamp s, Heading); the variance is ``default_var`` (rad^2) when the
    IMU reports none. Refused messages raise :class:`~xview_loc_ros.sensors.SensorRejected`."""
    y = imu_yaw(msg)
    return stamp_to_sec(msg.header.stamp), Heading(y.compass_deg, y.var_rad2 if y.var_rad2 is not None else default_var)


def odometry_from_msg(msg: Odometry) -> Tuple[float, OdometryTwist]:
    """Odometry -> (stamp s, forward speed and yaw rate in the child frame). Refused messages raise
    :class:`~xview_loc_ros.sensors.SensorRejected`."""
    return stamp_to_sec(msg.header.stamp), odometry_twist(msg)


def hfov_from_camera_info(msg: CameraInfo) -> float:
    """CameraInfo -> horizontal field of view (degrees)."""
    return camera_intrinsics(msg).hfov_deg


def camera_from_msg(msg: CameraInfo) -> Tuple[float, bool]:
    """CameraInfo -> (horizontal field of view in degrees, whether any distortion coefficient is non-zero)."""
    c = camera_intrinsics(msg)
    return c.hfov_deg, c.distorted


def static_transforms(msg: Any) -> List[StaticTransform]:
    """tf2_msgs/TFMessage -> (parent, child, translation m, quaternion x y z w) per transform."""
    out = []
    for t in msg.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        out.append(
            (
                str(t.header.frame_id),
                str(t.child_frame_id),
                (float(tr.x), float(tr.y), float(tr.z)),
                (float(q.x), float(q.y), float(q.z), float(q.w)),
            )
        )
    return out


# -- outputs --------------------------------------------------------------------------------------
def image_from_rgb(rgb: np.ndarray, header: Header) -> Image:
    """RGB uint8 HxWx3 -> Image rgb8."""
    h, w = rgb.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def pose_msg(est: Pose, header: Header, unobserved_variance: float) -> PoseWithCovarianceStamped:
    """Estimate or TrackedPose -> PoseWithCovarianceStamped in the map frame (x east, y north, z up; yaw
    ENU). x/y covariance from the heat map or the belief; z, roll, pitch get ``unobserved_variance``; yaw
    its own."""
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


def datum_msg(datum: LocalENU, header: Header) -> NavSatFix:
    """The node's datum, the origin of ``map`` (ENU tangent plane, REP-105), as a NavSatFix: latitude,
    longitude (degrees WGS84) and altitude (metres above the ellipsoid) of the origin, header frame_id
    the map frame, status FIX, covariance UNKNOWN (a definition, not a measurement)."""
    msg = NavSatFix(header=header)
    msg.status.status = NavSatStatus.STATUS_FIX
    msg.status.service = NavSatStatus.SERVICE_GPS
    msg.latitude, msg.longitude, msg.altitude = float(datum.lat0), float(datum.lon0), float(datum.h0)
    msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_UNKNOWN
    return msg


def fix_msg(est: Pose, header: Header) -> NavSatFix:
    """Accepted Estimate or TrackedPose -> NavSatFix (status FIX, service GPS, covariance KNOWN in ENU
    m^2)."""
    msg = NavSatFix(header=header)
    msg.status.status = NavSatStatus.STATUS_FIX
    msg.status.service = NavSatStatus.SERVICE_GPS
    msg.latitude, msg.longitude = est.lat, est.lon
    fix = est.fix
    msg.altitude = fix.alt if fix is not None and math.isfinite(fix.alt) else float("nan")
    cov = np.zeros((3, 3))
    cov[:2, :2] = est.cov_en
    # altitude is not observed by the model: carry the GNSS one with a wide variance
    horizontal = fix.cov_en if fix is not None else est.cov_en
    cov[2, 2] = max(float(np.max(np.diag(horizontal))), 1.0) * 4.0
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
    return occupancy_grid(est.prob, float(res), ce - half, cn - half, header)


def occupancy_grid(
    prob: np.ndarray, resolution_m: float, west_m: float, south_m: float, header: Header
) -> OccupancyGrid:
    """A probability map (rows north first, north-up) as an OccupancyGrid in the header's frame: cells
    0..100 relative to the peak, origin at the south-west corner (``west_m``, ``south_m``), metres."""
    h, w = prob.shape
    msg = OccupancyGrid(header=header)
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(resolution_m)
    msg.info.width, msg.info.height = int(w), int(h)
    msg.info.origin.position.x = float(west_m)
    msg.info.origin.position.y = float(south_m)
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", occupancy_values(prob).tobytes())
    return msg


def ellipse_marker(
    east: float,
    north: float,
    cov_en: np.ndarray,
    header: Header,
    marker_id: int,
    rgba: Tuple[float, float, float, float],
    ns: str = "xview_localizer",
) -> Marker:
    """The 2-sigma covariance ellipse of a position in the map frame: a flat cylinder whose axes are
    4 standard deviations (at least 0.5 m) along the covariance's eigenvectors."""
    evals, evecs = np.linalg.eigh(np.asarray(cov_en, dtype=float))
    yaw = math.atan2(float(evecs[1, 1]), float(evecs[0, 1]))  # major axis along the marker's x
    m = Marker(header=header, ns=ns, id=marker_id, type=Marker.CYLINDER, action=Marker.ADD)
    m.pose.position.x, m.pose.position.y, m.pose.position.z = float(east), float(north), 0.2
    qx, qy, qz, qw = quaternion_from_yaw(yaw)
    m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = qx, qy, qz, qw
    m.scale.x = max(4.0 * math.sqrt(max(float(evals[1]), 0.0)), 0.5)
    m.scale.y = max(4.0 * math.sqrt(max(float(evals[0]), 0.0)), 0.5)
    m.scale.z = 0.1
    m.color.r, m.color.g, m.color.b, m.color.a = rgba
    return m


def marker_msgs(est: Estimate, datum: LocalENU, header: Header, ns: str = "xview_localizer") -> Tuple[Marker, Marker]:
    """Flat discs in the map frame, 2 sigma (major axis) in radius: id 0 the estimate (green when
    accepted, red when gated), id 1 the GNSS fix used for the frame (white, translucent)."""
    fe, fn, _ = (float(x) for x in datum.to_enu(est.fix.lat, est.fix.lon, datum.h0))
    out = []
    for i, (e, n, cov, rgba) in enumerate(
        (
            (est.east, est.north, est.cov_en, (0.1, 0.9, 0.1, 0.8) if est.accepted else (0.9, 0.1, 0.1, 0.8)),
            (fe, fn, est.fix.cov_en, (1.0, 1.0, 1.0, 0.35)),
        )
    ):
        m = Marker(header=header, ns=ns, id=i, type=Marker.CYLINDER, action=Marker.ADD)
        m.pose.position.x, m.pose.position.y, m.pose.position.z = e, n, 0.1 * (1 - i)
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = max(4.0 * math.sqrt(float(np.linalg.eigvalsh(cov)[-1])), 0.5)
        m.scale.z = 0.1
        m.color.r, m.color.g, m.color.b, m.color.a = rgba
        out.append(m)
    return out[0], out[1]


def diagnostics_msg(
    header: Header, name: str, hardware_id: str, level: int, message: str, values: Mapping[str, object]
) -> DiagnosticArray:
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
