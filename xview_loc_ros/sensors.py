# SPDX-License-Identifier: Apache-2.0
"""Sensor messages -> plain values: the one set of accept/reject rules for the vehicle node and the extractor.

A model adapted on what the extractor accepted runs on what the node accepts; both therefore parse
``sensor_msgs`` NavSatFix, Imu, CameraInfo, Image and CompressedImage here (and ``nav_msgs``
Odometry, which only the node's drive filter reads). Messages are read by
field name, so rclpy messages, ``rosbags`` messages (ROS 2) and ROS 1 spellings (``K``) go through
the same code. Every refusal raises :class:`SensorRejected` with a short ``reason`` (see
:data:`REASONS`): the node counts it as ``bad_input_<reason>`` in its diagnostics, the extractor in
its summary.

Units and frames: latitude/longitude degrees WGS84, altitude metres above the WGS84 ellipsoid
(NaN = unknown, as NavSatFix defines it); position covariance m^2 in ENU (east, north, up);
IMU orientation in ENU (REP-103, REP-145), turned into an ENU yaw in radians (0 = east,
counter-clockwise); compass headings come only from :func:`xview_loc_ros.geo.enu_yaw_to_compass`;
images are RGB uint8 (height, width, 3) arrays; odometry is the twist in the child (vehicle) frame:
forward speed m/s (x forward, REP-103) and yaw rate rad/s (counter-clockwise about z up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import cv2
import numpy as np

from xview_loc_ros.geo import enu_yaw_to_compass, yaw_from_quaternion
from xview_loc_ros.imageheader import ImageHeaderError, image_kind, image_size

#: reason -> what it means. The node's diagnostics keys are ``bad_input_<reason>``.
REASONS = {
    "fix_no_fix": "NavSatFix status below STATUS_FIX (NO_FIX, or Jazzy's STATUS_UNKNOWN)",
    "fix_invalid": "NavSatFix latitude or longitude not finite",
    "fix_bad_latitude": "NavSatFix latitude at or beyond a pole (|latitude| >= 90 degrees)",
    "fix_bad_longitude": "NavSatFix longitude outside [-180, 180] degrees",
    "fix_bad_altitude": "NavSatFix altitude infinite or beyond 100 km of the ellipsoid (NaN = unknown is accepted)",
    "imu_no_orientation": "Imu orientation_covariance[0] = -1: the IMU reports no orientation",
    "imu_invalid": "Imu orientation is not a unit quaternion (zero, non-finite, norm off by >= 0.1)",
    "camera_info_invalid": "CameraInfo without a positive size and finite positive focal lengths",
    "odom_invalid": "Odometry forward speed or yaw rate not finite",
    "odom_bad_speed": "Odometry forward speed beyond 100 m/s either way",
    "odom_bad_yaw_rate": "Odometry yaw rate beyond 10 rad/s either way",
    "odom_lateral": "Odometry lateral speed larger than the forward speed plus 1 m/s (twist not in the vehicle frame)",
    "image_encoding": "Image encoding not supported, or CompressedImage holding depth",
    "image_empty": "an image with no pixels or no data",
    "image_size": "Image data/step too short for its declared height and width",
    "image_format": "CompressedImage that is neither JPEG nor PNG",
    "image_too_many_pixels": "an image declaring more pixels than the cap (max_image_pixels), refused before decoding",
    "image_corrupt": "CompressedImage whose header or data cannot be decoded",
    "image_corrupt_jpeg": "JPEG that decodes only with libjpeg warnings (damaged entropy data); strict decoding only",
}

#: Camera frames above this many pixels are refused from their header, before any decoder allocates
#: (a 631-byte JPEG can declare 20000 x 20000 px: 1.2 GB per copy). 50 Mpx holds an 8K equirectangular
#: panorama (7680 x 3840 = 29.5 Mpx) and every automotive camera with room to spare.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# |altitude| beyond 100 km of the ellipsoid is no vehicle's: the receiver's output is garbage
MAX_ALTITUDE_M = 100_000.0

NAVSAT_STATUS_FIX = 0  # sensor_msgs/NavSatStatus: NO_FIX = -1 (Jazzy adds UNKNOWN = -2), FIX = 0, SBAS, GBAS
COVARIANCE_TYPE_UNKNOWN = 0
COVARIANCE_TYPE_DIAGONAL_KNOWN = 2  # APPROXIMATED (1) and DIAGONAL_KNOWN (2): off-diagonals carry nothing
# |forward speed| beyond 100 m/s (360 km/h) or |yaw rate| beyond 10 rad/s (a full turn in 0.6 s) is no
# road vehicle's: the odometry is garbage (or in the wrong units)
MAX_ODOM_SPEED_MPS = 100.0
MAX_ODOM_YAW_RATE_RPS = 10.0
IMU_NO_ORIENTATION = -1.0  # orientation_covariance[0] of an IMU without orientation (sensor_msgs/Imu)


class SensorRejected(ValueError):
    """A sensor message that is refused; ``reason`` is a key of :data:`REASONS`, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- GNSS -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GnssFix:
    """A usable NavSatFix: ``lat``/``lon`` degrees WGS84, ``alt`` metres above the ellipsoid (NaN =
    unknown), ``cov_en`` the 2x2 east/north covariance in m^2 (None = not reported), ``frame_id``
    the antenna frame."""

    lat: float
    lon: float
    alt: float
    cov_en: Optional[np.ndarray]
    frame_id: str

    def cov_en_or(self, default_std_m: float) -> np.ndarray:
        """``cov_en``, or ``default_std_m``^2 isotropic when the receiver did not report one."""
        return self.cov_en if self.cov_en is not None else np.eye(2) * default_std_m**2

    @property
    def std_m(self) -> float:
        """1-sigma horizontal error in metres (root of the mean east/north variance); NaN when unknown."""
        if self.cov_en is None:
            return math.nan
        return math.sqrt(0.5 * float(self.cov_en[0, 0] + self.cov_en[1, 1]))


def gnss_fix(msg: Any) -> GnssFix:
    """NavSatFix -> :class:`GnssFix`. Raises :class:`SensorRejected` for NO_FIX/unknown status
    (``fix_no_fix``), a non-finite latitude or longitude (``fix_invalid``), a latitude at a pole, where
    east and north and the aerial patch's orientation are undefined (``fix_bad_latitude``), a longitude
    outside [-180, 180] (``fix_bad_longitude``) and an infinite or absurd altitude (``fix_bad_altitude``)."""
    status = int(msg.status.status)
    if status < NAVSAT_STATUS_FIX:
        raise SensorRejected("fix_no_fix", f"status {status} (NO_FIX or unknown)")
    lat, lon, alt = float(msg.latitude), float(msg.longitude), float(msg.altitude)
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise SensorRejected("fix_invalid", f"latitude {lat}, longitude {lon} are not a WGS84 position")
    if not abs(lat) < 90.0:
        raise SensorRejected("fix_bad_latitude", f"latitude {lat} degrees is at or beyond a pole")
    if not abs(lon) <= 180.0:
        raise SensorRejected("fix_bad_longitude", f"longitude {lon} degrees is outside [-180, 180]")
    if not (math.isnan(alt) or abs(alt) <= MAX_ALTITUDE_M):
        raise SensorRejected(
            "fix_bad_altitude",
            f"altitude {alt} m is neither unknown (NaN) nor within {MAX_ALTITUDE_M:.0f} m of the ellipsoid",
        )
    return GnssFix(
        lat,
        lon,
        alt,
        fix_covariance_en(msg.position_covariance, int(msg.position_covariance_type)),
        str(msg.header.frame_id),
    )


def fix_covariance_en(cov9: Any, cov_type: int) -> Optional[np.ndarray]:
    """NavSatFix ``position_covariance`` (row-major 3x3 ENU, m^2) and its type -> 2x2 east/north
    covariance; None (unknown) for type UNKNOWN, a wrong length, a non-finite entry, or a matrix that
    is not positive-definite."""
    c = np.asarray(cov9, dtype=float).ravel()
    if cov_type == COVARIANCE_TYPE_UNKNOWN or c.size != 9:
        return None
    c = c.reshape(3, 3)[:2, :2]
    if not np.all(np.isfinite(c)):
        return None
    if cov_type <= COVARIANCE_TYPE_DIAGONAL_KNOWN:
        c = np.diag(np.diag(c))
    c = 0.5 * (c + c.T)
    # A "known" covariance that is not positive-definite (e.g. [[1, 50], [50, 1]]) gives negative
    # Mahalanobis distances, which pass any gate: it is no covariance.
    if np.linalg.eigvalsh(c)[0] <= 0:
        return None
    return c


# -- IMU ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImuYaw:
    """Orientation of an Imu as ENU yaw (radians, 0 = east, counter-clockwise) and its variance
    (rad^2, from orientation_covariance[8]; None = not reported)."""

    yaw_rad: float
    var_rad2: Optional[float]

    @property
    def compass_deg(self) -> float:
        """Compass heading, degrees clockwise from north, in [0, 360)."""
        return float(enu_yaw_to_compass(self.yaw_rad))


def imu_yaw(msg: Any) -> ImuYaw:
    """Imu (orientation in ENU, REP-145) -> :class:`ImuYaw`; an IMU without orientation
    (``imu_no_orientation``) or a quaternion that is not a unit rotation (``imu_invalid``) raises."""
    cov = msg.orientation_covariance
    if float(cov[0]) == IMU_NO_ORIENTATION:
        raise SensorRejected("imu_no_orientation", "orientation_covariance[0] = -1: the IMU reports no orientation")
    q = msg.orientation
    x, y, z, w = float(q.x), float(q.y), float(q.z), float(q.w)
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    # drivers round their quaternions, but 10 % off a unit norm is no rotation any more
    if not (math.isfinite(norm) and abs(norm - 1.0) < 0.1):
        raise SensorRejected(
            "imu_invalid", f"orientation quaternion ({x}, {y}, {z}, {w}) is not a unit rotation (norm {norm:.3g})"
        )
    var = float(cov[8])
    return ImuYaw(
        yaw_from_quaternion(x / norm, y / norm, z / norm, w / norm), var if math.isfinite(var) and var > 0 else None
    )


# -- odometry -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OdometryTwist:
    """The motion an Odometry reports in its child (vehicle) frame: ``speed_mps`` forward (x, negative
    when reversing) and ``yaw_rate_rps`` counter-clockwise about z (up)."""

    speed_mps: float
    yaw_rate_rps: float


def odometry_twist(msg: Any) -> OdometryTwist:
    """nav_msgs/Odometry -> :class:`OdometryTwist` (``twist`` is in ``child_frame_id``, the vehicle).
    A non-finite forward speed, lateral speed or yaw rate (``odom_invalid``), an absurd speed
    (``odom_bad_speed``) or yaw rate (``odom_bad_yaw_rate``), and a lateral speed larger than the
    forward speed plus 1 m/s, which a wheeled vehicle does not drive and a twist published in the
    ``odom`` frame instead of the child frame shows in every turn (``odom_lateral``), raise."""
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    v, lateral, w = float(lin.x), float(lin.y), float(ang.z)
    if not (math.isfinite(v) and math.isfinite(lateral) and math.isfinite(w)):
        raise SensorRejected("odom_invalid", f"twist linear.x {v}, linear.y {lateral}, angular.z {w} are not finite")
    if not abs(v) <= MAX_ODOM_SPEED_MPS:
        raise SensorRejected("odom_bad_speed", f"forward speed {v} m/s is beyond {MAX_ODOM_SPEED_MPS:.0f} m/s")
    if not abs(w) <= MAX_ODOM_YAW_RATE_RPS:
        raise SensorRejected("odom_bad_yaw_rate", f"yaw rate {w} rad/s is beyond {MAX_ODOM_YAW_RATE_RPS:.0f} rad/s")
    if abs(lateral) > abs(v) + 1.0:
        raise SensorRejected(
            "odom_lateral",
            f"lateral speed {lateral} m/s exceeds the forward speed {v} m/s: is the twist in the child frame "
            f"({getattr(msg, 'child_frame_id', '?')!r})?",
        )
    return OdometryTwist(v, w)


# -- camera info ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of a CameraInfo: image ``width``/``height`` and ``fx``, ``fy``, ``cx``,
    ``cy`` in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str
    distortion: Tuple[float, ...] = ()  # the D coefficients (plumb_bob: k1 k2 t1 t2 k3)

    @property
    def distorted(self) -> bool:
        """Any non-zero distortion coefficient: the images are not rectified."""
        return any(x != 0.0 for x in self.distortion)

    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view, degrees."""
        return math.degrees(2.0 * math.atan(self.width / 2.0 / self.fx))


def camera_intrinsics(msg: Any) -> CameraIntrinsics:
    """CameraInfo (ROS 2 ``k``, ROS 1 ``K``) -> :class:`CameraIntrinsics`; raises ``camera_info_invalid``
    unless width, height, fx and fy are positive and the matrix is finite."""
    k = np.asarray(msg.k if hasattr(msg, "k") else msg.K, dtype=float).ravel()
    width, height = int(msg.width), int(msg.height)
    if k.size != 9 or not np.all(np.isfinite(k)) or width <= 0 or height <= 0 or not (k[0] > 0 and k[4] > 0):
        raise SensorRejected(
            "camera_info_invalid", f"{width}x{height} px with K {k.tolist()}: size, fx and fy must be positive"
        )
    d = np.asarray(msg.d if hasattr(msg, "d") else getattr(msg, "D", ()), dtype=float).ravel()
    if not np.all(np.isfinite(d)):
        raise SensorRejected("camera_info_invalid", f"distortion coefficients {d.tolist()} are not finite")
    return CameraIntrinsics(
        width,
        height,
        float(k[0]),
        float(k[4]),
        float(k[2]),
        float(k[5]),
        str(msg.distortion_model),
        tuple(float(x) for x in d),
    )


# -- images ---------------------------------------------------------------------------------------
# ROS Bayer names give the colour order of the top-left 2x2 block; OpenCV names its codes after
# the second row's second and third pixels, hence the shifted names (same mapping as cv_bridge).
_BAYER = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
# encoding -> (channels, conversion to RGB or None when already RGB)
_PLAIN = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, cv2.COLOR_BGR2RGB),  # OpenCV's native order, as cv_bridge writes it
}
SUPPORTED_ENCODINGS = tuple(sorted(set(_PLAIN) | set(_BAYER)))
_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# Pixels as the camera wrote them: an EXIF rotation would make the decoded size differ from the
# header's, and the node and the stored training JPEG must see the same pixels.
_IGNORE_ORIENTATION = cv2.IMREAD_IGNORE_ORIENTATION


def _is_compressed(msg: Any) -> bool:
    return not hasattr(msg, "encoding") and hasattr(msg, "format")


def _u8(data: Any) -> np.ndarray:
    """A message's ``data`` (bytes, array.array('B'), numpy uint8) as a flat uint8 array, without a copy."""
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def image_shape(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Tuple[int, int]:
    """(height, width) pixels an Image or CompressedImage declares, checked without decoding the pixels
    (Image: encoding, step and data length; CompressedImage: JPEG/PNG header; both: at most
    ``max_pixels``)."""
    if _is_compressed(msg):
        return _compressed_header(msg, max_pixels)[1]
    return _raw_layout(msg, max_pixels)[:2]


def _check_pixels(h: int, w: int, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise SensorRejected(
            "image_too_many_pixels", f"{w}x{h} px = {h * w / 1e6:.1f} Mpx is above the cap of {max_pixels / 1e6:g} Mpx"
        )


def _raw_layout(msg: Any, max_pixels: int) -> Tuple[int, int, int, int]:
    enc = str(msg.encoding).strip().lower()
    if enc in _BAYER:
        channels = 1
    elif enc in _PLAIN:
        channels = _PLAIN[enc][0]
    else:
        raise SensorRejected(
            "image_encoding", f"unsupported encoding {msg.encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise SensorRejected("image_empty", f"image is {w}x{h} px")
    _check_pixels(h, w, max_pixels)
    n = len(_u8(msg.data))
    if step < w * channels or n < step * h:
        raise SensorRejected(
            "image_size", f"{n} bytes do not hold {h} rows of step {step} ({w}x{channels} bytes needed per row)"
        )
    return h, w, step, channels


def _compressed_header(msg: Any, max_pixels: int) -> Tuple[str, Tuple[int, int]]:
    """(kind 'jpg' | 'png', (height, width)) of a CompressedImage from its header."""
    if "compresseddepth" in str(msg.format).lower():
        raise SensorRejected("image_encoding", f"compressed depth images are not camera frames (format {msg.format!r})")
    data = _u8(msg.data)
    if data.size == 0:
        raise SensorRejected("image_empty", "compressed image has no data")
    head = data.tobytes()
    kind = image_kind(head)
    # compressed_image_transport writes JPEG or PNG; anything else is not a camera frame
    if kind not in ("jpg", "png"):
        raise SensorRejected(
            "image_format",
            f"compressed image (format {msg.format!r}) is neither JPEG nor PNG (starts with {head[:8]!r})",
        )
    try:
        size = image_size(head)
    except ImageHeaderError as e:
        raise SensorRejected("image_corrupt", f"{kind.upper()} header: {e}") from e
    assert size is not None  # kind is known
    _check_pixels(size[1], size[0], max_pixels)
    return kind, (size[1], size[0])


def decode_image(
    msg: Any,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    min_size: Optional[Tuple[int, int]] = None,
    strict: bool = False,
) -> np.ndarray:
    """Image (``SUPPORTED_ENCODINGS``) or CompressedImage (JPEG, PNG) -> RGB uint8 (H, W, 3).

    Frames declaring more than ``max_pixels`` are refused before decoding. ``min_size`` (height,
    width): a JPEG larger than that is decoded at 1/2, 1/4 or 1/8 scale (:func:`jpeg_reduction`),
    which is that much faster when the model needs fewer pixels. ``strict``: a JPEG that libjpeg
    decodes only with warnings (damaged entropy-coded data) is refused (``image_corrupt_jpeg``);
    the pixels are the same as without ``strict``.
    """
    if _is_compressed(msg):
        return _decode_compressed(msg, max_pixels, min_size, strict)
    h, w, step, channels = _raw_layout(msg, max_pixels)
    rows = _u8(msg.data)[: step * h].reshape(h, step)[:, : w * channels]
    img = np.ascontiguousarray(rows.reshape(h, w, channels) if channels > 1 else rows)
    enc = str(msg.encoding).strip().lower()
    code = _BAYER[enc] if enc in _BAYER else _PLAIN[enc][1]
    return img if code is None else cv2.cvtColor(img, code)


def _decode_compressed(msg: Any, max_pixels: int, min_size: Optional[Tuple[int, int]], strict: bool) -> np.ndarray:
    kind, (h, w) = _compressed_header(msg, max_pixels)
    data = _u8(msg.data)
    reduce = jpeg_reduction(w, h, min_size[1], min_size[0]) if kind == "jpg" and min_size else 1
    try:
        img = cv2.imdecode(data, _REDUCED[reduce] | _IGNORE_ORIENTATION)
    except cv2.error as e:  # OpenCV's own limits and libpng/libjpeg errors: a refused frame, not a crash
        raise SensorRejected("image_corrupt", f"{kind.upper()} {w}x{h} px: {str(e).strip().splitlines()[-1]}") from e
    if img is None or img.shape[:2] != (-(-h // reduce), -(-w // reduce)):
        raise SensorRejected(
            "image_corrupt", f"cannot decode {data.size} bytes of {kind.upper()} {w}x{h} px (format {msg.format!r})"
        )
    if strict and kind == "jpg":  # after the lenient decode: what both refuse gets the same reason
        _check_jpeg_strictly(data)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _check_jpeg_strictly(data: np.ndarray) -> None:
    """Refuse a JPEG whose entropy-coded data libjpeg decodes only with warnings ("corrupt JPEG data:
    premature end of data segment", "extraneous bytes before marker", bad Huffman codes). OpenCV and
    Pillow pass such frames on with grey or smeared blocks. The whole stream is decoded at 1/8 scale
    (every coefficient is still entropy-decoded, so nothing is skipped). JPEG carries no checksum: a
    flipped bit that keeps the Huffman stream in step is not detectable by any decoder."""
    import simplejpeg  # workstation only: the vehicle decodes leniently and never needs it

    try:
        simplejpeg.decode_jpeg(data.tobytes(), colorspace="RGB", strict=True, min_height=1, min_width=1)
    except ValueError as e:
        raise SensorRejected("image_corrupt_jpeg", str(e)) from e


def jpeg_reduction(width: int, height: int, need_w: int, need_h: int) -> int:
    """The largest decode reduction (1, 2, 4, 8) that keeps an image of width x height px at least
    need_w x need_h px (the model's ground input)."""
    r = 1
    while r < 8 and width // (2 * r) >= need_w and height // (2 * r) >= need_h:
        r *= 2
    return r


def recorded_jpeg(msg: Any) -> Optional[bytes]:
    """The bytes of a CompressedImage holding one complete JPEG (SOI ... EOI), to store as recorded
    (no re-encode loss); None for any other message."""
    if not _is_compressed(msg):
        return None
    data = _u8(msg.data)
    if data.size < 4 or data[:3].tobytes() != b"\xff\xd8\xff" or data[-2:].tobytes() != b"\xff\xd9":
        return None
    return data.tobytes()
