# SPDX-License-Identifier: Apache-2.0
"""Message conversions on the node's path (xview_loc_ros.ros_msgs, xview_loc_ros.sensors) with real ROS message classes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix, NavSatStatus
from std_msgs.msg import Header

from xview_loc_ros import ros_msgs as rm
from xview_loc_ros.geo import LocalENU, PatchGeoref
from xview_loc_ros.localizer import Estimate, Fix
from xview_loc_ros.sensors import SensorRejected, decode_image, jpeg_reduction


def _img(rgb, enc, pad=0):
    h, w, c = rgb.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = rgb.reshape(h, w * c)
    return Image(height=h, width=w, encoding=enc, step=w * c + pad, data=rows.tobytes())


def test_raw_images_in_every_supported_encoding_become_rgb():
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(_img(rgb, "rgb8", pad=3)), rgb)
    np.testing.assert_array_equal(decode_image(_img(rgb[..., ::-1].copy(), "bgr8")), rgb)
    rgba = np.dstack([rgb, np.full((5, 7), 255, np.uint8)])
    np.testing.assert_array_equal(decode_image(_img(rgba[..., [2, 1, 0, 3]].copy(), "bgra8")), rgb)
    mono = decode_image(_img(rgb[..., :1].copy(), "mono8"))
    assert mono.shape == (5, 7, 3) and np.all(mono[..., 0] == rgb[..., 0])
    for msg, reason in (
        (_img(rgb, "yuv422"), "image_encoding"),
        (Image(encoding="rgb8"), "image_empty"),
        (Image(height=5, width=7, encoding="rgb8", step=21, data=b"\0" * 20), "image_size"),
    ):
        with pytest.raises(SensorRejected) as e:
            decode_image(msg)
        assert e.value.reason == reason


def test_jpeg_decode_full_and_reduced():
    rgb = cv2.resize(
        np.random.default_rng(1).integers(0, 255, (8, 16, 3), dtype=np.uint8),
        (512, 256),
        interpolation=cv2.INTER_NEAREST,
    )
    msg = CompressedImage(
        format="jpeg", data=cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes()
    )
    full = decode_image(msg)
    assert full.shape == (256, 512, 3) and np.abs(full.astype(int) - rgb).mean() < 3  # RGB order kept
    assert decode_image(msg, min_size=(64, 100)).shape == (64, 128, 3)  # 1/4 scale still covers 64 x 100
    assert decode_image(msg, min_size=(65, 100)).shape == (128, 256, 3)
    assert jpeg_reduction(512, 256, 256, 64) == 2 and jpeg_reduction(2048, 1024, 256, 64) == 8
    assert jpeg_reduction(200, 100, 256, 64) == 1
    with pytest.raises(SensorRejected) as e:
        decode_image(CompressedImage(format="jpeg", data=msg.data[:30]))
    assert e.value.reason == "image_corrupt"


def test_fix_and_imu_parsing():
    m = NavSatFix(
        latitude=52.0,
        longitude=4.0,
        altitude=3.0,
        position_covariance=[4.0, 0, 0, 0, 9.0, 0, 0, 0, 1.0],
        position_covariance_type=2,
    )
    m.status.status = NavSatStatus.STATUS_SBAS_FIX
    m.header.stamp.sec, m.header.stamp.nanosec = 10, 500_000_000
    f = rm.fix_from_msg(m, 10.0)
    assert f.stamp == 10.5 and np.allclose(f.cov_en, np.diag([4.0, 9.0]))
    m.position_covariance_type = 3  # KNOWN: off-diagonals count
    m.position_covariance[1] = m.position_covariance[3] = 1.0
    np.testing.assert_allclose(rm.fix_from_msg(m, 10.0).cov_en, [[4, 1], [1, 9]])
    m.position_covariance_type = 0  # UNKNOWN -> the default std
    np.testing.assert_allclose(rm.fix_from_msg(m, 10.0).cov_en, np.eye(2) * 100)
    m.position_covariance_type, m.position_covariance[0] = 3, 0.0  # a zero variance is no covariance
    np.testing.assert_allclose(rm.fix_from_msg(m, 7.0).cov_en, np.eye(2) * 49)
    m.status.status = -2  # Jazzy's STATUS_UNKNOWN default must not pass as a fix
    with pytest.raises(SensorRejected, match="fix_no_fix"):
        rm.fix_from_msg(m, 10.0)
    imu = Imu()
    imu.orientation.z, imu.orientation.w = math.sin(math.pi / 4), math.cos(math.pi / 4)
    _, h = rm.heading_from_msg(imu, 0.01)
    assert h.compass_deg % 360 == pytest.approx(0.0, abs=1e-9) and h.var_rad2 == 0.01
    imu.orientation.z, imu.orientation.w, imu.orientation_covariance[8] = 0.0, 1.0, 0.02  # ENU yaw 0 = facing east
    _, h = rm.heading_from_msg(imu, 0.01)
    assert h.compass_deg == pytest.approx(90.0) and h.var_rad2 == 0.02
    imu.orientation.w = 0.0
    with pytest.raises(SensorRejected, match="imu_invalid"):
        rm.heading_from_msg(imu, 0.01)
    imu.orientation_covariance[0] = -1.0
    with pytest.raises(SensorRejected, match="imu_no_orientation"):
        rm.heading_from_msg(imu, 0.01)
    assert rm.hfov_from_camera_info(
        CameraInfo(width=640, height=480, k=[320.0, 0, 320, 0, 320, 240, 0, 0, 1])
    ) == pytest.approx(90.0)
    assert rm.stamp_to_sec(rm.sec_to_stamp(1700000000.123456789)) == pytest.approx(1700000000.123456789, abs=2e-9)


def _estimate(accepted=True):
    g = PatchGeoref(52.0, 4.0, 0.5, 8)
    fix = Fix(1.0, 52.0, 4.0, 5.0, np.eye(2) * 25.0, "gnss")
    prob = np.full((8, 8), 1 / 64)
    return Estimate(
        1.0,
        52.00001,
        4.00002,
        5.0,
        1.37,
        1.11,
        np.array([[1.0, 0.2], [0.2, 2.0]]),
        0.5,
        0.01,
        0.9,
        0.1,
        0.3,
        4.2,
        3.8,
        fix,
        4.0,
        4.0,
        g,
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((1, 8, 8)),
        prob,
        accepted,
    )


def test_output_messages():
    est = _estimate()
    hdr = Header(frame_id="map")
    pose = rm.pose_msg(est, hdr, 1e6)
    cov = np.array(pose.pose.covariance).reshape(6, 6)
    np.testing.assert_allclose(cov[:2, :2], est.cov_en)
    assert cov[2, 2] == cov[3, 3] == cov[4, 4] == 1e6 and cov[5, 5] == 0.01
    assert pose.pose.pose.orientation.z == pytest.approx(math.sin(0.25))
    fix = rm.fix_msg(est, Header(frame_id="gnss"))
    assert (
        fix.status.status == NavSatStatus.STATUS_FIX and fix.position_covariance_type == NavSatFix.COVARIANCE_TYPE_KNOWN
    )
    assert fix.position_covariance[0] == 1.0 and fix.position_covariance[4] == 2.0 and fix.position_covariance[8] > 0
    datum = LocalENU(52.0, 4.0, 0.0)
    grid = rm.grid_msg(est, datum, hdr)
    assert (grid.info.width, grid.info.resolution) == (8, 0.5)
    assert grid.info.origin.position.x == pytest.approx(
        -2.0, abs=1e-6
    ) and grid.info.origin.position.y == pytest.approx(-2.0, abs=1e-6)
    assert list(grid.data) == [100] * 64
    m_est, m_fix = rm.marker_msgs(est, datum, hdr)
    assert (m_est.id, m_fix.id) == (0, 1) and m_est.color.g > m_est.color.r
    assert m_fix.scale.x == pytest.approx(20.0) and m_est.scale.x == pytest.approx(
        4 * math.sqrt(np.linalg.eigvalsh(est.cov_en)[-1])
    )
    assert rm.marker_msgs(_estimate(False), datum, hdr)[0].color.r > 0.5
    img = rm.image_from_rgb(np.zeros((8, 8, 3), np.uint8), hdr)
    assert (img.encoding, img.step, len(img.data)) == ("rgb8", 24, 192)


def test_filtered_pose_messages_grid_and_ellipse():
    """The drive filter's TrackedPose through the same builders: ~/pose, ~/fix without a fix at the stamp,
    the belief grid (rows north first -> OccupancyGrid rows south first) and the covariance ellipse."""
    from xview_loc_ros.localizer import TrackedPose

    cov = np.array([[9.0, 0.0], [0.0, 1.0]])
    tp = TrackedPose(
        1.5, 52.0, 4.0, math.nan, 3.0, -2.0, cov, 3.0, -2.0, 0.5, 0.01, None, "tracking", "odom", None, 0.001
    )
    h = Header(frame_id="map")
    pose = rm.pose_msg(tp, h, 1e6)
    c = np.array(pose.pose.covariance).reshape(6, 6)
    assert (pose.pose.pose.position.x, pose.pose.pose.position.y) == (3.0, -2.0) and np.allclose(c[:2, :2], cov)
    assert c[5, 5] == 0.01
    fix = rm.fix_msg(tp, h)
    assert (fix.latitude, fix.longitude) == (52.0, 4.0) and math.isnan(fix.altitude)
    assert fix.position_covariance[8] == pytest.approx(36.0)  # 4 x the largest horizontal variance
    prob = np.zeros((4, 6))
    prob[0, 5] = 1.0  # north-east corner
    grid = rm.occupancy_grid(prob, 0.5, 10.0, 20.0, h)
    cells = np.array(grid.data, dtype=np.int8).reshape(4, 6)
    assert (grid.info.width, grid.info.height, grid.info.resolution) == (6, 4, 0.5)
    assert (grid.info.origin.position.x, grid.info.origin.position.y) == (10.0, 20.0)
    assert cells[3, 5] == 100 and cells.sum() == 100  # the last OccupancyGrid row is the northern one
    m = rm.ellipse_marker(3.0, -2.0, np.array([[1.0, 0.0], [0.0, 4.0]]), h, 2, (0.0, 0.0, 1.0, 0.5))
    yaw = 2 * math.atan2(m.pose.orientation.z, m.pose.orientation.w)
    assert m.id == 2 and (m.scale.x, m.scale.y) == (8.0, 4.0)  # 2 sigma: major 2 m std, minor 1 m
    assert abs(math.cos(yaw)) < 1e-9  # the major axis points north
