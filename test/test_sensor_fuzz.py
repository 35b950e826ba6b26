# SPDX-License-Identifier: Apache-2.0
"""Fuzzing the sensor module (hypothesis): random field values, random and mutated image bytes,
headers declaring any size, fed as real rclpy messages through the node's path and, as a bag holds
them, through the extractor's. Nothing may escape but SensorRejected, and memory stays bounded (the
pixel cap is checked on the header, before a decoder allocates)."""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable

import cv2
import numpy as np
from hostile_images import jpeg_declaring, png_declaring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix
from test_sensor_parity import as_recorded

from offline_adapt.data.extract import fix_sample, ground_image, imu_yaw_sample
from xview_loc_ros import ros_msgs as rm
from xview_loc_ros.sensors import (
    SUPPORTED_ENCODINGS,
    SensorRejected,
    camera_intrinsics,
    decode_image,
    odometry_twist,
)

# Decoded frames stay below 3 MB whatever a header declares; the cap is what bounds memory.
FUZZ_MAX_PIXELS = 1_000_000
PEAK_BYTES = 32 * 2**20  # per image message, both paths; one 20000 x 20000 bomb would be 1.2 GB
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

anything = st.floats(allow_nan=True, allow_infinity=True)
nine = st.lists(anything, min_size=9, max_size=9)
uint32 = st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1))
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)
GOOD = cv2.resize(np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8), (64, 48))
GOOD_JPEG = cv2.imencode(".jpg", GOOD)[1].tobytes()
GOOD_PNG = cv2.imencode(".png", GOOD)[1].tobytes()


def _survives(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except SensorRejected:
        pass


def _survives_in_bounded_memory(*fns: Callable[[], Any]) -> None:
    """Each call returns or raises SensorRejected; numpy buffers (OpenCV's outputs among them) peak
    below PEAK_BYTES."""
    tracemalloc.start()
    try:
        for fn in fns:
            _survives(fn)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, peak


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    """``data`` with random bytes overwritten, then possibly truncated."""
    out = bytearray(data)
    for pos, val in draw(st.lists(st.tuples(st.integers(0, len(out) - 1), st.integers(0, 255)), max_size=12)):
        out[pos] = val
    return bytes(out[: draw(st.integers(0, len(out)))])


compressed_data = st.one_of(
    st.binary(max_size=2048),
    mutated(GOOD_JPEG),
    mutated(GOOD_PNG),
    st.builds(jpeg_declaring, st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(png_declaring, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)


@FUZZ
@given(lat=anything, lon=anything, alt=anything, status=st.integers(-128, 127), cov=nine, cov_type=st.integers(0, 255))
def test_fix_fuzz(lat: float, lon: float, alt: float, status: int, cov: list, cov_type: int) -> None:
    msg = NavSatFix(
        latitude=lat, longitude=lon, altitude=alt, position_covariance=cov, position_covariance_type=cov_type
    )
    msg.status.status = status
    _survives(lambda: rm.fix_from_msg(msg, 10.0))
    fix_sample(as_recorded(msg), 0.0, {})


@FUZZ
@given(q=st.tuples(anything, anything, anything, anything), cov=nine)
def test_imu_fuzz(q: tuple, cov: list) -> None:
    msg = Imu(orientation_covariance=cov)
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = q
    _survives(lambda: rm.heading_from_msg(msg, 0.01))
    imu_yaw_sample(as_recorded(msg), 0.0, {})


@FUZZ
@given(v=anything, lateral=anything, w=anything, child=text)
def test_odometry_fuzz(v: float, lateral: float, w: float, child: str) -> None:
    """What passes is finite and within the bounds the drive filter relies on."""
    msg = Odometry(child_frame_id=child)
    msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.angular.z = v, lateral, w
    for parse in (lambda: rm.odometry_from_msg(msg)[1], lambda: odometry_twist(as_recorded(msg))):
        try:
            twist = parse()
        except SensorRejected:
            continue
        assert abs(twist.speed_mps) <= 100.0 and abs(twist.yaw_rate_rps) <= 10.0


@FUZZ
@given(width=uint32, height=uint32, k=nine, model=text)
def test_camera_info_fuzz(width: int, height: int, k: list, model: str) -> None:
    msg = CameraInfo(width=width, height=height, k=k, distortion_model=model)
    _survives(lambda: rm.hfov_from_camera_info(msg))
    _survives(lambda: camera_intrinsics(as_recorded(msg)))


@FUZZ
@given(
    height=uint32,
    width=uint32,
    step=uint32,
    data=st.binary(max_size=4096),
    encoding=st.one_of(st.sampled_from(SUPPORTED_ENCODINGS + ("RGB8", "yuv422", "32FC1", "16UC1", "")), text),
)
def test_raw_image_fuzz(height: int, width: int, step: int, data: bytes, encoding: str) -> None:
    msg = Image(height=height, width=width, step=step, encoding=encoding, data=data)
    recorded = as_recorded(msg)
    _survives_in_bounded_memory(
        lambda: decode_image(msg, FUZZ_MAX_PIXELS, min_size=(32, 64)),
        lambda: ground_image(recorded, None, FUZZ_MAX_PIXELS),
    )


@FUZZ
@given(
    data=compressed_data,
    fmt=st.one_of(st.sampled_from(("jpeg", "png", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth")), text),
)
def test_compressed_image_fuzz(data: bytes, fmt: str) -> None:
    msg = CompressedImage(format=fmt, data=data)
    recorded = as_recorded(msg)
    _survives_in_bounded_memory(
        lambda: decode_image(msg, FUZZ_MAX_PIXELS, min_size=(32, 64)),
        lambda: ground_image(recorded, None, FUZZ_MAX_PIXELS),
        lambda: ground_image(recorded, (48, 64), FUZZ_MAX_PIXELS),
    )
