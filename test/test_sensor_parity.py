# SPDX-License-Identifier: Apache-2.0
"""One set of sensor rules for the vehicle and for training: the same good and hostile messages go
through the node's path (rclpy messages, the functions ``node.py`` calls) and the extractor's path
(the same messages as a bag holds them: CDR bytes deserialised by ``rosbags`` with the Humble type
store, the functions ``extract.py`` calls). Decisions, reason names, values and pixels must match.
The one deliberate difference: the extractor decodes JPEG strictly (damaged entropy-coded data is
refused as ``image_corrupt_jpeg``), the node leniently (a damaged frame beats none on a vehicle)."""

from __future__ import annotations

import math
from typing import Any, Callable, Tuple

import cv2
import numpy as np
import pytest
from hostile_images import jpeg_declaring, png_declaring
from nav_msgs.msg import Odometry
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix, NavSatStatus

from offline_adapt.data.dataset import read_rgb
from offline_adapt.data.extract import fix_sample, ground_image, imu_yaw_sample
from xview_loc_ros import ros_msgs as rm
from xview_loc_ros.geo import enu_yaw_to_compass
from xview_loc_ros.sensors import (
    DEFAULT_MAX_IMAGE_PIXELS,
    REASONS,
    SensorRejected,
    camera_intrinsics,
    decode_image,
    odometry_twist,
)

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
DEFAULT_STD_M = 10.0
DEFAULT_VAR = 0.01
# The node decodes a JPEG at reduced scale only when it is more than twice the model's ground input;
# these test frames are smaller than this, so both paths decode at full size.
NODE_MIN_SIZE = (128, 512)


def as_recorded(msg: Any) -> Any:
    """The rclpy message as the extractor reads it from a bag: CDR bytes -> rosbags message."""
    typename = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
    return TYPESTORE.deserialize_cdr(serialize_message(msg), typename)


# -- the messages -----------------------------------------------------------------------------------
def _fix(
    lat: float = 52.0,
    lon: float = 4.0,
    alt: float = 3.0,
    status: int = NavSatStatus.STATUS_FIX,
    cov_type: int = 2,
    cov_en: Tuple[float, float, float] = (4.0, 0.0, 9.0),
) -> NavSatFix:
    ee, en, nn = cov_en
    m = NavSatFix(
        latitude=lat,
        longitude=lon,
        altitude=alt,
        position_covariance=[ee, en, 0, en, nn, 0, 0, 0, 1.0],
        position_covariance_type=cov_type,
    )
    m.status.status = status
    return m


def _imu(x: float, y: float, z: float, w: float, cov0: float = 0.0) -> Imu:
    m = Imu()
    m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w = x, y, z, w
    m.orientation_covariance[0], m.orientation_covariance[8] = cov0, 0.02
    return m


def _info(width: int = 640, height: int = 480, fx: float = 320.0) -> CameraInfo:
    return CameraInfo(width=width, height=height, k=[fx, 0, 320, 0, fx, 240, 0, 0, 1], distortion_model="plumb_bob")


def _scene(h: int = 48, w: int = 80) -> np.ndarray:
    """A smooth RGB scene (JPEG keeps it close) with distinct channels (a colour swap shows)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([(x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256]).astype(np.uint8)


def _raw(rgb: np.ndarray, encoding: str, pad: int = 0, **override: Any) -> Image:
    """``rgb`` stored in ``encoding`` (channel order, alpha, grey or a Bayer mosaic), rows padded by ``pad``."""
    conv = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "8uc3": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)]),
        "mono8": rgb[..., :1],
        "8uc1": rgb[..., :1],
    }
    if encoding.startswith("bayer_"):
        img = np.zeros(rgb.shape[:2] + (1,), np.uint8)
        for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            img[dy::2, dx::2, 0] = rgb[dy::2, dx::2, "rgb".index(encoding[6 + k])]
    else:
        img = np.ascontiguousarray(conv.get(encoding.lower(), rgb))  # unsupported encodings: any bytes
    h, w, c = img.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = img.reshape(h, w * c)
    fields = dict(height=h, width=w, encoding=encoding, step=w * c + pad, data=rows.tobytes())
    fields.update(override)
    return Image(**fields)


def _encoded(img: np.ndarray, ext: str, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def _jpeg(rgb: np.ndarray) -> bytes:
    return _encoded(rgb[..., ::-1], ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)


def corrupt_scan(jpeg: bytes) -> bytes:
    """Eight bytes in the middle of the entropy-coded scan flipped; every marker intact (no 0xFF
    byte is touched or created)."""
    sos = jpeg.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    out = bytearray(jpeg)
    mid = (start + len(jpeg)) // 2
    for k in range(mid, mid + 8):
        if 0xFF not in (out[k - 1], out[k], out[k] ^ 0x5A):
            out[k] ^= 0x5A
    return bytes(out)


def textured_jpeg(h: int = 192, w: int = 384) -> bytes:
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _scan_wiped(jpeg: bytes) -> bytes:
    """Entropy-coded data zeroed, markers kept."""
    sos = jpeg.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    return jpeg[:start] + bytes(len(jpeg) - start - 2) + jpeg[-2:]


RAW_ENCODINGS = (
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "8UC1",
    "8UC3",
    "bayer_rggb8",
    "bayer_bggr8",
    "bayer_gbrg8",
    "bayer_grbg8",
)
SCENE = _scene()
JPEG = _jpeg(SCENE)
TEXTURED_JPEG = textured_jpeg()
#: Frames the node uses and the extractor refuses (strict JPEG decoding, see the module docstring).
LENIENT_ON_THE_VEHICLE = {"JPEG with wiped scan data", "JPEG with a corrupted scan"}
FIXES = [
    ("valid, diagonal covariance", _fix()),
    ("valid, covariance unknown, SBAS", _fix(cov_type=0, status=NavSatStatus.STATUS_SBAS_FIX)),
    ("valid, full covariance", _fix(cov_type=3, cov_en=(4.0, 1.0, 9.0))),
    ("covariance KNOWN but indefinite", _fix(cov_type=3, cov_en=(1.0, 50.0, 1.0))),
    ("covariance with a NaN", _fix(cov_type=3, cov_en=(4.0, math.nan, 9.0))),
    ("NaN latitude", _fix(lat=math.nan)),
    ("infinite longitude", _fix(lon=math.inf)),
    ("status NO_FIX", _fix(status=NavSatStatus.STATUS_NO_FIX)),
    ("status unknown (-2)", _fix(status=-2)),
    ("latitude 95", _fix(lat=95.0)),
    ("latitude 90", _fix(lat=90.0)),
    ("latitude -89.99", _fix(lat=-89.99)),
    ("longitude 181", _fix(lon=181.0)),
    ("altitude unknown (NaN)", _fix(alt=math.nan)),
    ("altitude infinite", _fix(alt=math.inf)),
]
S = math.sqrt(0.5)
IMUS = [
    ("facing north", _imu(0.0, 0.0, S, S)),
    ("facing east, quaternion 4 % long", _imu(0.0, 0.0, 0.0, 1.04)),
    ("no orientation", _imu(0.0, 0.0, 0.0, 1.0, cov0=-1.0)),
    ("zero quaternion", _imu(0.0, 0.0, 0.0, 0.0)),
    ("NaN quaternion", _imu(math.nan, 0.0, 0.0, 1.0)),
    ("quaternion of norm 1.5", _imu(0.0, 0.0, 0.0, 1.5)),
]


def _odom(v: float, w: float, lateral: float = 0.0) -> Odometry:
    m = Odometry(child_frame_id="base_link")
    m.header.frame_id = "odom"
    m.header.stamp.sec, m.header.stamp.nanosec = 1_750_000_000, 500_000_000
    m.twist.twist.linear.x, m.twist.twist.linear.y, m.twist.twist.angular.z = v, lateral, w
    return m


ODOMS = [
    ("forward, turning left", _odom(12.5, 0.2)),
    ("reversing, turning right", _odom(-1.5, -0.3, 0.1)),
    ("standing", _odom(0.0, 0.0)),
    ("sliding a little", _odom(0.0, 0.0, 0.9)),
    ("NaN speed", _odom(math.nan, 0.0)),
    ("infinite yaw rate", _odom(1.0, math.inf)),
    ("NaN lateral speed", _odom(1.0, 0.0, math.nan)),
    ("400 km/h", _odom(111.2, 0.0)),
    ("reversing at 400 km/h", _odom(-111.2, 0.0)),
    ("yaw rate 12 rad/s", _odom(1.0, 12.0)),
    ("twist in the odom frame (driving north, heading east)", _odom(0.4, 0.0, 9.5)),
]

INFOS = [
    ("valid", _info()),
    ("zero width", _info(width=0)),
    ("zero height", _info(height=0)),
    ("zero fx", _info(fx=0.0)),
    ("NaN fx", _info(fx=math.nan)),
]
IMAGES = [
    *((f"raw {enc}", _raw(SCENE, enc)) for enc in RAW_ENCODINGS),
    ("raw rgb8, padded rows", _raw(SCENE, "rgb8", pad=5)),
    ("raw yuv422 (unsupported)", _raw(SCENE, "yuv422")),
    ("raw 32FC1 (not a camera frame)", _raw(SCENE, "32FC1")),
    ("raw step shorter than a row", _raw(SCENE, "rgb8", step=SCENE.shape[1] * 3 - 1)),
    ("raw truncated data", _raw(SCENE, "rgb8", data=SCENE.tobytes()[:-10])),
    ("raw zero height", _raw(SCENE, "rgb8", height=0)),
    ("raw empty", Image(encoding="rgb8")),
    ("PNG rgb", CompressedImage(format="png", data=_encoded(SCENE[..., ::-1], ".png"))),
    ("PNG grey", CompressedImage(format="png", data=_encoded(SCENE[..., 0], ".png"))),
    (
        "PNG with alpha",
        CompressedImage(format="png", data=_encoded(np.dstack([SCENE[..., ::-1], SCENE[..., :1]]), ".png")),
    ),
    ("JPEG", CompressedImage(format="jpeg", data=JPEG)),
    ("JPEG, image_transport format", CompressedImage(format="rgb8; jpeg compressed bgr8", data=JPEG)),
    ("JPEG without its last 20 bytes", CompressedImage(format="jpeg", data=JPEG[:-20])),
    ("JPEG cut in its header", CompressedImage(format="jpeg", data=JPEG[:40])),
    ("JPEG with wiped scan data", CompressedImage(format="jpeg", data=_scan_wiped(JPEG))),
    ("JPEG with a corrupted scan", CompressedImage(format="jpeg", data=corrupt_scan(TEXTURED_JPEG))),
    ("JPEG declaring 20000 x 20000 px", CompressedImage(format="jpeg", data=jpeg_declaring(20_000, 20_000))),
    ("PNG declaring 100000 x 100000 px", CompressedImage(format="png", data=png_declaring(100_000, 100_000))),
    (
        "garbage bytes",
        CompressedImage(format="jpeg", data=np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes()),
    ),
    ("JPEG magic then garbage", CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0garbage")),
    ("GIF", CompressedImage(format="gif", data=b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")),
    ("empty", CompressedImage(format="jpeg", data=b"")),
    ("compressed depth", CompressedImage(format="16UC1; compressedDepth png", data=_encoded(SCENE[..., 0], ".png"))),
]


# -- the two paths --------------------------------------------------------------------------------------------
def outcome(fn: Callable[[], Any]) -> Tuple[str, Any]:
    """('ok', value) or ('rejected', reason)."""
    try:
        return "ok", fn()
    except SensorRejected as e:
        assert e.reason in REASONS, e.reason
        return "rejected", e.reason


def extractor_sample(fn: Callable[[Any, float, dict], Any], msg: Any) -> Tuple[str, Any]:
    dropped: dict = {}
    sample = fn(as_recorded(msg), 1.0, dropped)
    if sample is None:
        assert len(dropped) == 1 and sum(dropped.values()) == 1, dropped
        return "rejected", next(iter(dropped))
    return "ok", sample


def _same_decision(node: Tuple[str, Any], extractor: Tuple[str, Any], name: str) -> None:
    if name in LENIENT_ON_THE_VEHICLE:
        assert node[0] == "ok" and extractor == ("rejected", "image_corrupt_jpeg"), (name, node, extractor)
        return
    assert node[0] == extractor[0], (name, node, extractor)
    if node[0] == "rejected":
        assert node[1] == extractor[1], (name, node, extractor)


@pytest.mark.parametrize("name,msg", FIXES, ids=[n for n, _ in FIXES])
def test_fix_parity(name: str, msg: NavSatFix) -> None:
    node = outcome(lambda: rm.fix_from_msg(msg, DEFAULT_STD_M))
    extractor = extractor_sample(fix_sample, msg)
    _same_decision(node, extractor, name)
    if node[0] == "ok":
        fix, (_, lat, lon, std, ee, en, nn) = node[1], extractor[1]
        assert (fix.lat, fix.lon) == (lat, lon)
        if math.isnan(std):  # no usable covariance: the node falls back to its default
            assert np.allclose(fix.cov_en, np.eye(2) * DEFAULT_STD_M**2)
            assert msg.position_covariance_type == 0 or name.startswith("covariance"), name
            assert math.isnan(ee) and math.isnan(en) and math.isnan(nn)
        else:
            assert std == pytest.approx(math.sqrt(0.5 * np.trace(fix.cov_en)))
            assert np.all(np.linalg.eigvalsh(fix.cov_en) > 0)
            assert np.array_equal([[ee, en], [en, nn]], fix.cov_en)  # the pairs store the node's covariance


@pytest.mark.parametrize("name,msg", IMUS, ids=[n for n, _ in IMUS])
def test_imu_parity(name: str, msg: Imu) -> None:
    node = outcome(lambda: rm.heading_from_msg(msg, DEFAULT_VAR))
    extractor = extractor_sample(imu_yaw_sample, msg)
    _same_decision(node, extractor, name)
    if node[0] == "ok":
        assert node[1][1].compass_deg == pytest.approx(float(enu_yaw_to_compass(extractor[1][1])), abs=1e-9)


@pytest.mark.parametrize("name,msg", ODOMS, ids=[n for n, _ in ODOMS])
def test_odometry_parity(name: str, msg: Odometry) -> None:
    """The node parses the rclpy message; a tool reading a bag gets the rosbags one: same decision."""
    node = outcome(lambda: rm.odometry_from_msg(msg))
    recorded = outcome(lambda: odometry_twist(as_recorded(msg)))
    _same_decision(node, recorded, name)
    if node[0] == "ok":
        stamp, twist = node[1]
        assert stamp == pytest.approx(1_750_000_000.5)
        assert twist == recorded[1]
        assert (twist.speed_mps, twist.yaw_rate_rps) == (msg.twist.twist.linear.x, msg.twist.twist.angular.z)


def test_imu_heading_is_compass() -> None:
    north = rm.heading_from_msg(IMUS[0][1], DEFAULT_VAR)[1]
    east = rm.heading_from_msg(IMUS[1][1], DEFAULT_VAR)[1]
    assert north.compass_deg % 360.0 == pytest.approx(0.0, abs=1e-9) and east.compass_deg == pytest.approx(90.0)


@pytest.mark.parametrize("name,msg", INFOS, ids=[n for n, _ in INFOS])
def test_camera_info_parity(name: str, msg: CameraInfo) -> None:
    node = outcome(lambda: rm.hfov_from_camera_info(msg))
    extractor = outcome(lambda: camera_intrinsics(as_recorded(msg)))
    _same_decision(node, extractor, name)
    if node[0] == "ok":
        assert node[1] == pytest.approx(90.0) and extractor[1].hfov_deg == node[1]


@pytest.mark.parametrize("name,msg", IMAGES, ids=[n for n, _ in IMAGES])
def test_image_parity(name: str, msg: Any, tmp_path: Any) -> None:
    node = outcome(lambda: decode_image(msg, DEFAULT_MAX_IMAGE_PIXELS, min_size=NODE_MIN_SIZE))
    recorded = as_recorded(msg)
    extractor = outcome(lambda: ground_image(recorded, None, DEFAULT_MAX_IMAGE_PIXELS))
    _same_decision(node, extractor, name)
    if node[0] != "ok" or extractor[0] != "ok":
        return
    jpeg, rgb = extractor[1]
    if jpeg is not None:  # stored as recorded: training reads these bytes back
        (tmp_path / "frame.jpg").write_bytes(jpeg)
        rgb = read_rgb(tmp_path / "frame.jpg")
    assert node[1].dtype == np.uint8 and node[1].shape == SCENE.shape
    assert np.array_equal(node[1], rgb), name
    # a frame stored at another size is decoded, with the same pixels
    _, resized_path_rgb = ground_image(recorded, (1, 1), DEFAULT_MAX_IMAGE_PIXELS)
    assert np.array_equal(node[1], resized_path_rgb), name


@pytest.mark.parametrize("encoding", RAW_ENCODINGS)
def test_raw_pixels_are_the_scene(encoding: str) -> None:
    out = decode_image(_raw(SCENE, encoding))
    if encoding.startswith("bayer_"):  # demosaicing interpolates: compare away from the border
        assert np.abs(out[4:-4, 4:-4].astype(int) - SCENE[4:-4, 4:-4]).mean() < 8, encoding
    elif encoding in ("mono8", "8UC1"):
        assert np.array_equal(out, np.repeat(SCENE[..., :1], 3, axis=2)), encoding
    else:
        assert np.array_equal(out, SCENE), encoding


@pytest.mark.parametrize(
    "encoding,layout",
    [("bayer_rggb8", "RGGB"), ("bayer_bggr8", "BGGR"), ("bayer_gbrg8", "GBRG"), ("bayer_grbg8", "GRBG")],
)
def test_bayer_patterns_give_the_right_colour(encoding: str, layout: str) -> None:
    # A flat colour mosaicked in the named pattern must demosaic back to that colour.
    colour = {"R": 200, "G": 90, "B": 30}
    mosaic = np.zeros((16, 16), np.uint8)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = colour[layout[k]]
    msg = Image(height=16, width=16, encoding=encoding, step=16, data=mosaic.tobytes())
    for out in (decode_image(msg), ground_image(as_recorded(msg), None, DEFAULT_MAX_IMAGE_PIXELS)[1]):
        assert np.allclose(out[4:12, 4:12].reshape(-1, 3).mean(axis=0), [200, 90, 30], atol=2), encoding


def test_jpeg_reduced_decoding_on_the_node() -> None:
    big = cv2.resize(SCENE, (640, 384), interpolation=cv2.INTER_LINEAR)
    msg = CompressedImage(format="jpeg", data=_jpeg(big))
    assert decode_image(msg, min_size=(96, 160)).shape == (96, 160, 3)  # 1/4 scale still covers 96 x 160
    assert decode_image(msg, min_size=(97, 160)).shape == (192, 320, 3)
    assert decode_image(msg).shape == (384, 640, 3)


def test_every_reason_is_exercised() -> None:
    seen = set()
    for cases, run in (
        (FIXES, lambda m: rm.fix_from_msg(m, 1.0)),
        (IMUS, lambda m: rm.heading_from_msg(m, 1.0)),
        (INFOS, rm.hfov_from_camera_info),
        (ODOMS, rm.odometry_from_msg),
        (IMAGES, lambda m: ground_image(as_recorded(m), None, DEFAULT_MAX_IMAGE_PIXELS)),
    ):
        for _, msg in cases:
            decision, reason = outcome(lambda run=run, msg=msg: run(msg))
            if decision == "rejected":
                seen.add(reason)
    assert seen == set(REASONS), set(REASONS) - seen


def test_recorded_jpeg_is_stored_as_is() -> None:
    msg = as_recorded(CompressedImage(format="jpeg", data=JPEG))
    jpeg, rgb = ground_image(msg, SCENE.shape[:2], DEFAULT_MAX_IMAGE_PIXELS)
    assert jpeg == JPEG and rgb is None
    jpeg, rgb = ground_image(msg, (10, 10), DEFAULT_MAX_IMAGE_PIXELS)  # stored at another size: decoded for resizing
    assert jpeg is None and rgb.shape == SCENE.shape
