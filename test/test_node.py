# SPDX-License-Identifier: Apache-2.0
"""The localizer node over real DDS (rclpy, random ROS_DOMAIN_ID): outputs, bad input, overload."""

from __future__ import annotations

import math
import resource
import time

import numpy as np
import pytest
import rclpy
from hostile_images import jpeg_declaring, png_declaring
from localizer_testbed import LAT, LON, panorama, write_small_checkpoint, write_tiles
from node_harness import Harness, fix_msg, imu_msg, jpeg_msg, raw_msg
from sensor_msgs.msg import CompressedImage, NavSatStatus

from xview_loc_ros.geo import LocalENU
from xview_loc_ros.ros_msgs import stamp_to_sec

T0 = 1_700_000_000.0
ENU = LocalENU(LAT, LON, 10.0)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    d = tmp_path_factory.mktemp("node")
    ckpt = write_small_checkpoint(d / "small.pt")
    tiles = write_tiles(d / "tiles", radius=2)
    rclpy.init()
    yield {"model_path": str(ckpt), "tile_source": f"xyz:{tiles}", "backend": "torch", "device": "cpu", "threads": 1}
    rclpy.shutdown()


def _open(bed, **kw):
    # an untrained model: gating off so that every frame publishes (gating has its own tests); the
    # per-frame path (fusion: frame), whose ~/pose is the frame's estimate (the filter: test_node_filter.py)
    params = dict(
        bed,
        gate_chi2=1e9,
        min_confidence=0.0,
        max_ambiguity=1e9,
        diagnostics_period_s=0.3,
        prefetch_ahead_s=0.0,
        fusion="frame",
    )
    params.update(kw)
    return Harness(params)


def _drive(h, t0, n_images, north_m_per_s=2.0, image_hz=5.0, image=lambda t: jpeg_msg):
    """Fixes at 10 Hz, IMU at 10 Hz (heading north) and images at ``image_hz`` moving north."""
    t = t0
    end = t0 + n_images / image_hz
    next_image = t0 + 0.05
    while t <= end:
        lat, lon, _ = ENU.to_latlon(0.0, north_m_per_s * (t - T0), 0.0)
        h.publish("fix", fix_msg(t, float(lat), float(lon)))
        h.publish("imu", imu_msg(t, 0.0))
        if t >= next_image:
            h.publish("jpeg", jpeg_msg(t - 0.05, panorama(int(t * 10) % 7)))
            next_image += 1.0 / image_hz
        time.sleep(0.1)
        t += 0.1


def test_outputs_are_stamped_geo_referenced_and_sized(bed):
    h = _open(bed)
    try:
        _drive(h, T0, 6)
        assert h.wait_for(lambda: h.count("pose") >= 4 and h.count("heatmap_grid") >= 1, 20.0), (
            h.node.diagnostics_values()
        )
        pose = h.received["pose"][-1]
        assert pose.header.frame_id == "map"
        d = h.node.diagnostics_values()
        assert (
            d["tile_cache_misses"] >= 1 and d["tile_cache_hits"] >= 0
        )  # tiles were loaded once; later frames reuse the mosaic
        t = stamp_to_sec(pose.header.stamp)
        assert T0 < t < T0 + 2.0 and ((t - T0) * 10) % 1.0 == pytest.approx(
            0.5, abs=1e-3
        )  # an image stamp (fix stamp - 0.05 s)
        cov = np.array(pose.pose.covariance).reshape(6, 6)
        assert 0.25**2 - 1e-9 <= cov[0, 0] < 1e4 and 0.25**2 - 1e-9 <= cov[1, 1] < 1e4
        assert cov[2, 2] == cov[3, 3] == cov[4, 4] == 1e6
        assert cov[5, 5] == pytest.approx(math.radians(2.0) ** 2)
        assert pose.pose.pose.orientation.z == pytest.approx(math.sin(math.pi / 4))  # yaw +90 deg: north
        # within the patch (64 m) around the fix at that stamp; map datum = first fix
        assert abs(pose.pose.pose.position.x) <= 32.5 and abs(pose.pose.pose.position.y - 2.0 * (t - T0)) <= 32.5
        fix = h.received["fix"][-1]
        assert fix.status.status == NavSatStatus.STATUS_FIX and fix.position_covariance_type == 3
        assert fix.header.frame_id == "gnss" and abs(fix.latitude - LAT) < 1e-3
        img = h.received["heatmap"][-1]
        assert (img.height, img.width, img.encoding, img.step) == (128, 128, "rgb8", 384) and len(img.data) == 128 * 384
        grid = h.received["heatmap_grid"][-1]
        g = stamp_to_sec(grid.header.stamp)
        assert grid.header.frame_id == "map" and (grid.info.width, grid.info.height) == (128, 128)
        assert grid.info.resolution == pytest.approx(0.5)
        # the grid is centred on the fix used for that frame (fix interpolated at the image stamp)
        cx = grid.info.origin.position.x + 32.0
        cy = grid.info.origin.position.y + 32.0
        assert cx == pytest.approx(0.0, abs=0.05) and cy == pytest.approx(2.0 * (g - T0), abs=0.05)
        cells = np.array(grid.data, dtype=np.int8)
        assert cells.max() == 100 and cells.min() >= 0
        assert h.count("marker") >= 2
        est, gnss = sorted(h.received["marker"][-2:], key=lambda m: m.id)
        assert (est.id, gnss.id) == (0, 1) and est.header.frame_id == gnss.header.frame_id == "map"
        assert gnss.pose.position.x == pytest.approx(0.0, abs=0.05)
        assert gnss.scale.x == pytest.approx(4 * 5.0)  # 2 sigma radius of the 5 m GNSS std
        assert h.wait_for(lambda: (h.last_diagnostics() or {}).get("count_poses", "0") != "0", 5.0)
        diag = h.last_diagnostics()
        for k in (
            "rate_image_hz",
            "latency_ms_median",
            "latency_ms_p95",
            "frames_dropped",
            "stage_inference_ms_median",
            "stage_patch_ms_p95",
            "stage_publish_ms_median",
            "stage_visualize_ms_median",
            "backend",
        ):
            assert k in diag, k
        assert "torch" in diag["backend"]
    finally:
        h.close()


def test_bad_input_is_counted_and_never_published(bed):
    h = _open(bed)
    try:
        lat, lon = LAT, LON
        bad_fixes = [
            fix_msg(T0, float("nan"), lon),
            fix_msg(T0, lat, lon, status=NavSatStatus.STATUS_NO_FIX),
            fix_msg(T0, lat, lon, status=-2),
            fix_msg(T0, 90.0, lon),
        ]
        for m in bad_fixes:
            h.publish("fix", m)
        h.publish("imu", imu_msg(T0, 0.0))
        time.sleep(0.3)
        good = panorama()
        h.publish("jpeg", jpeg_msg(T0, good))  # no good fix yet -> rejected: no_fix
        time.sleep(0.6)
        h.publish("fix", fix_msg(T0, lat, lon))
        time.sleep(0.3)
        bad_images = [
            ("jpeg", CompressedImage(format="jpeg", data=b"")),
            ("jpeg", CompressedImage(format="jpeg", data=jpeg_msg(T0, good).data[:40])),
            ("jpeg", CompressedImage(format="jpeg", data=jpeg_declaring(20_000, 20_000))),
            ("jpeg", CompressedImage(format="png", data=png_declaring(100_000, 100_000))),
        ]
        for kind, m in bad_images:
            m.header.stamp = jpeg_msg(T0, good[:1]).header.stamp
            h.publish(kind, m)
            time.sleep(0.5)  # one at a time: the latest-frame slot would otherwise merge them
        expected = {
            "bad_input_fix_invalid": 1,
            "bad_input_fix_no_fix": 2,
            "bad_input_fix_bad_latitude": 1,
            "reject_no_fix": 1,
            "bad_input_image_empty": 1,
            "bad_input_image_corrupt": 1,
            "bad_input_image_too_many_pixels": 2,
        }
        assert h.wait_for(
            lambda: all(int((h.last_diagnostics() or {}).get(k, 0)) >= v for k, v in expected.items()), 10.0
        ), h.last_diagnostics()
        assert h.count("pose") == 0 and h.count("fix") == 0
        h.publish("jpeg", jpeg_msg(T0, good))  # the node survived: a good frame still localizes
        assert h.wait_for(lambda: h.count("pose") == 1, 15.0)
        assert h.received["diagnostics"][-1].status[0].level in (b"\x00", b"\x01")
    finally:
        h.close()


def test_raw_transport_subscribes_the_image_topic_only(bed):
    """image_transport: raw -> sensor_msgs/Image on image_topic, the compressed topic is not subscribed
    (a camera republished by image_transport on both would otherwise lose every other frame)."""
    h = _open(bed, image_transport="raw")
    try:
        assert h.pub["raw"].get_subscription_count() == 1 and h.pub["jpeg"].get_subscription_count() == 0
        h.publish("fix", fix_msg(T0, LAT, LON))
        h.publish("imu", imu_msg(T0, 0.0))
        time.sleep(0.3)
        good = panorama()
        for m in (raw_msg(T0, good, encoding="yuv422"), raw_msg(T0, good[:0], encoding="rgb8")):
            h.publish("raw", m)
            time.sleep(0.5)  # one at a time: the latest-frame slot would otherwise merge them
        expected = {"bad_input_image_encoding": 1, "bad_input_image_empty": 1}
        assert h.wait_for(
            lambda: all(int((h.last_diagnostics() or {}).get(k, 0)) >= v for k, v in expected.items()), 10.0
        ), h.last_diagnostics()
        h.publish("jpeg", jpeg_msg(T0, good))  # not subscribed
        h.publish("raw", raw_msg(T0, good))
        assert h.wait_for(lambda: h.count("pose") == 1, 15.0)
        time.sleep(0.5)
        assert h.count("pose") == 1 and h.node.diagnostics_values()["count_image"] == 3
    finally:
        h.close()


def test_compressed_transport_is_the_default_and_ignores_raw_images(bed):
    h = _open(bed)
    try:
        assert h.pub["jpeg"].get_subscription_count() == 1 and h.pub["raw"].get_subscription_count() == 0
    finally:
        h.close()


def test_missing_tiles_and_tile_server_down(bed):
    import socket

    with socket.socket() as s:  # a port nobody listens on: the tile server is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for spec, tile_lat in ((bed["tile_source"], LAT + 0.01), (f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png", LAT)):
        h = _open(bed, tile_source=spec)
        try:
            h.publish("fix", fix_msg(T0, tile_lat, LON))
            h.publish("imu", imu_msg(T0, 0.0))
            time.sleep(0.3)
            h.publish("jpeg", jpeg_msg(T0, panorama()))
            assert h.wait_for(
                lambda h=h: (
                    int((h.last_diagnostics() or {}).get("reject_tiles_missing", 0))
                    + int((h.last_diagnostics() or {}).get("reject_tiles", 0))
                    >= 1
                ),
                20.0,
            ), h.last_diagnostics()
            assert h.count("pose") == 0 and h.count("fix") == 0 and h.count("heatmap") == 0
        finally:
            h.close()


class SlowBackend:
    """Fake slowness only: the real small-model backend plus a fixed delay per call, standing in
    for a heavier model on a slower machine."""

    def __init__(self, backend, delay_s):
        self.backend, self.delay_s, self.config = backend, delay_s, backend.config

    def infer(self, ground, aerial):
        time.sleep(self.delay_s)
        return self.backend.infer(ground, aerial)

    def describe(self):
        return f"slow({self.delay_s}s) {self.backend.describe()}"


# Timing bounds are ratios to the node's own per-frame times (which a loaded machine stretches too);
# the RViz outputs, whose publishing once took 1-2 s per frame here under the burst, are off the pose
# path (their own thread, viz_max_rate_hz) and not part of the bounds.
def test_overload_bounded_latency_and_flat_memory(bed):
    from xview_loc_ros.inference import open_backend

    slow = SlowBackend(open_backend(bed["model_path"], "torch", device="cpu", threads=1), 0.25)
    params = dict(
        bed,
        gate_chi2=1e9,
        min_confidence=0.0,
        max_ambiguity=1e9,
        diagnostics_period_s=0.5,
        prefetch_ahead_s=0.0,
        fix_max_age_s=100.0,
        fusion="frame",
    )
    h = Harness(params, backend=slow)
    try:
        h.publish("fix", fix_msg(T0, LAT, LON))
        h.publish("imu", imu_msg(T0, 0.0))
        img = jpeg_msg(T0, panorama())

        def burst(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                h.publish("jpeg", img)
                time.sleep(1 / 30)

        burst(2.0)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        poses0 = h.count("pose")
        burst(4.0)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        d = h.node.diagnostics_values()
        # the node's own time per frame on the pose path (>= the 0.25 s backend), so the checks hold on a
        # busy machine and still catch a stall or a queue
        path = ("image", "patch", "preprocess", "inference", "decode", "publish")
        frame_ms = sum(d[f"stage_{k}_ms_median"] for k in path)
        frame_p95_ms = sum(d[f"stage_{k}_ms_p95"] for k in path)  # >= the p95 of the sum
        assert frame_ms >= 250
        # processing continues (a stall or a queue gives 0-2), the rest dropped; the bound leaves room for the GIL
        # that the publishing burst, the viz thread and the executor share on a busy 2-core machine (CI: 6 of 13.6)
        assert h.count("pose") - poses0 >= max(4, 0.3 * 4000 / frame_ms), d
        assert d["frames_dropped"] > 100
        # receive -> publish: at most one frame in service ahead of it, plus its own
        assert d["latency_ms_p95"] < 2.0 * frame_p95_ms + 50, d
        assert d["viz_published"] >= 1 and d["viz_published"] + d["viz_skipped_rate"] + d["viz_dropped_busy"] >= 4
        assert (rss1 - rss0) < 40_000, (rss0, rss1)  # KiB: no backlog grows
    finally:
        h.close()


def test_gated_frames_publish_no_pose_and_no_fix(bed):
    h = _open(bed, gate_chi2=1e-9)  # any distance from the fix fails the Mahalanobis gate
    try:
        _drive(h, T0, 3)
        assert h.wait_for(lambda: int((h.last_diagnostics() or {}).get("reject_gnss_gate", 0)) >= 2, 15.0), (
            h.last_diagnostics()
        )
        assert h.count("pose") == 0 and h.count("fix") == 0
        assert h.count("heatmap") >= 2  # the overlay still shows what the model saw
        assert all(m.color.r > 0.5 for m in h.received["marker"] if m.id == 0)  # estimate drawn red
        assert h.received["diagnostics"][-1].status[0].level == b"\x01"
    finally:
        h.close()
