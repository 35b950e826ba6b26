# SPDX-License-Identifier: Apache-2.0
"""Hostile sensor messages at the message boundary (issue 14): decompression bombs, corrupt JPEG
entropy data, positions at the poles and beyond. Real rclpy messages, the same messages as rosbags
reads them from a bag, real encoded bytes."""

from __future__ import annotations

import math
import resource
import time

import cv2
import numpy as np
import pytest
from hostile_images import jpeg_declaring, png_declaring
from sensor_msgs.msg import CompressedImage, NavSatFix, NavSatStatus
from test_sensor_parity import as_recorded, corrupt_scan, textured_jpeg

from offline_adapt.data.extract import ground_image
from xview_loc_ros import ros_msgs as rm
from xview_loc_ros.sensors import DEFAULT_MAX_IMAGE_PIXELS, SensorRejected, decode_image, gnss_fix

NODE_MIN_SIZE = (128, 512)


def _reason(fn) -> str:
    with pytest.raises(SensorRejected) as e:
        fn()
    return e.value.reason


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- decompression bombs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [jpeg_declaring(10_000, 10_000), png_declaring(100_000, 100_000)], ids=["jpeg", "png"])
def test_bombs_are_refused_from_their_header(data: bytes) -> None:
    # 100 and 10^4 megapixels declared in a few hundred bytes: refused before a decoder allocates
    msg = CompressedImage(format="jpeg" if data[:2] == b"\xff\xd8" else "png", data=data)
    rss, t0 = _max_rss_mb(), time.perf_counter()
    assert _reason(lambda: decode_image(msg, min_size=NODE_MIN_SIZE)) == "image_too_many_pixels"
    assert _reason(lambda: ground_image(as_recorded(msg), None, DEFAULT_MAX_IMAGE_PIXELS)) == "image_too_many_pixels"
    assert time.perf_counter() - t0 < 0.5 and _max_rss_mb() - rss < 50


def test_the_pixel_cap_is_a_parameter() -> None:
    msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", np.zeros((40, 60, 3), np.uint8))[1].tobytes())
    assert decode_image(msg, max_pixels=2400).shape == (40, 60, 3)
    assert _reason(lambda: decode_image(msg, max_pixels=2399)) == "image_too_many_pixels"
    raw = rm.Image(height=40, width=60, encoding="rgb8", step=180, data=bytes(40 * 180))
    assert _reason(lambda: decode_image(raw, max_pixels=2399)) == "image_too_many_pixels"
    assert _reason(lambda: ground_image(as_recorded(raw), None, 2399)) == "image_too_many_pixels"


def test_decoder_errors_are_typed_where_the_cap_allows_the_size() -> None:
    # OpenCV refuses 10^10 px itself (cv2.error): with the cap lifted that error must still be typed
    msg = CompressedImage(format="png", data=png_declaring(100_000, 100_000))
    assert _reason(lambda: decode_image(msg, max_pixels=10**11)) == "image_corrupt"
    assert _reason(lambda: ground_image(as_recorded(msg), None, 10**11)) == "image_corrupt"


# -- corrupt JPEG entropy data --------------------------------------------------------------------------------
def test_corrupt_jpeg_is_refused_as_training_data_but_kept_by_the_node() -> None:
    good = textured_jpeg()
    bad = corrupt_scan(good)
    assert bad != good and bad.count(b"\xff") == good.count(b"\xff")
    msg = CompressedImage(format="jpeg", data=bad)
    # the vehicle decodes leniently: a slightly damaged frame beats none, and the gate catches a bad estimate
    damaged = decode_image(msg)
    clean = decode_image(CompressedImage(format="jpeg", data=good))
    assert damaged.shape == clean.shape and (np.abs(damaged.astype(int) - clean).sum(axis=2) > 30).mean() > 0.1
    # a training pair must not be built on it, whether stored as recorded or decoded for resizing
    for store_hw in (None, (10, 10)):
        assert (
            _reason(lambda hw=store_hw: ground_image(as_recorded(msg), hw, DEFAULT_MAX_IMAGE_PIXELS))
            == "image_corrupt_jpeg"
        )
    assert (
        ground_image(as_recorded(CompressedImage(format="jpeg", data=good)), None, DEFAULT_MAX_IMAGE_PIXELS)[0] == good
    )


# -- positions that are no place to localize ------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("latitude", 90.0, "fix_bad_latitude"),
        ("latitude", -90.0, "fix_bad_latitude"),
        ("latitude", 95.0, "fix_bad_latitude"),
        ("longitude", 180.5, "fix_bad_longitude"),
        ("longitude", -1e9, "fix_bad_longitude"),
        ("altitude", math.inf, "fix_bad_altitude"),
        ("altitude", -math.inf, "fix_bad_altitude"),
        ("altitude", 1e300, "fix_bad_altitude"),
        ("latitude", math.nan, "fix_invalid"),
        ("longitude", math.inf, "fix_invalid"),
    ],
)
def test_positions_outside_the_earth_are_refused_with_their_own_reason(field: str, value: float, reason: str) -> None:
    msg = NavSatFix(latitude=52.0, longitude=4.0, altitude=10.0)
    msg.status.status = NavSatStatus.STATUS_FIX
    setattr(msg, field, value)
    assert _reason(lambda: rm.fix_from_msg(msg, 10.0)) == reason
    assert _reason(lambda: gnss_fix(as_recorded(msg))) == reason


def test_edge_positions_and_unknown_altitude_are_accepted() -> None:
    for lat, lon, alt in ((89.99, 180.0, math.nan), (-89.99, -180.0, -400.0), (0.0, 0.0, 8848.0)):
        msg = NavSatFix(latitude=lat, longitude=lon, altitude=alt)
        msg.status.status = NavSatStatus.STATUS_FIX
        f = gnss_fix(msg)
        assert (f.lat, f.lon) == (lat, lon) and (f.alt == alt or math.isnan(alt) and math.isnan(f.alt))
