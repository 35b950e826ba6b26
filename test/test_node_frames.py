# SPDX-License-Identifier: Apache-2.0
"""The node's frames over real DDS (REP-103/105): ~/datum latched for consumers, and the arithmetic of
fusing ~/pose in an EKF whose map shares the datum (robot_localization's navsat_transform with
use_local_cartesian and the same datum): ~/pose in map equals the local-Cartesian ENU of ~/fix at
the datum."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import rclpy
from localizer_testbed import LAT, LON, panorama, write_small_checkpoint, write_tiles
from node_harness import Harness, fix_msg, imu_msg, jpeg_msg
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import NavSatFix

from xview_loc_ros.ros_msgs import stamp_to_sec

T0 = 1_700_000_000.0
DATUM = (LAT - 2e-4, LON + 3e-4, 12.0)  # the shared datum, ~30 m from where the vehicle drives


def local_cartesian(lat, lon, h, lat0, lon0, h0):
    """WGS84 -> ENU at (lat0, lon0, h0) through ECEF (what GeographicLib's LocalCartesian computes),
    written here independently of the node's pyproj pipeline."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)

    def ecef(lat, lon, h):
        p, lam = math.radians(lat), math.radians(lon)
        n = a / math.sqrt(1 - e2 * math.sin(p) ** 2)
        return np.array(
            [
                (n + h) * math.cos(p) * math.cos(lam),
                (n + h) * math.cos(p) * math.sin(lam),
                (n * (1 - e2) + h) * math.sin(p),
            ]
        )

    d = ecef(lat, lon, h) - ecef(lat0, lon0, h0)
    p, lam = math.radians(lat0), math.radians(lon0)
    east = -math.sin(lam) * d[0] + math.cos(lam) * d[1]
    north = -math.sin(p) * math.cos(lam) * d[0] - math.sin(p) * math.sin(lam) * d[1] + math.cos(p) * d[2]
    return east, north


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    ckpt = write_small_checkpoint(d / "small.pt")
    tiles = write_tiles(d / "tiles", radius=2)
    rclpy.init()
    yield {"model_path": str(ckpt), "tile_source": f"xyz:{tiles}", "backend": "torch", "device": "cpu", "threads": 1}
    rclpy.shutdown()


def _late_datum(h):
    """A subscriber that joins after the node published the datum (transient local gets it)."""
    got = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    h.tester.create_subscription(NavSatFix, "/xview_localizer/datum", got.append, qos)
    return got


@pytest.mark.parametrize("fusion", ["frame", "filter"])
def test_pose_in_map_is_the_enu_of_the_fix_at_the_shared_datum(bed, fusion):
    params = dict(
        bed,
        gate_chi2=1e9,
        min_confidence=0.0,
        max_ambiguity=1e9,
        prefetch_ahead_s=0.0,
        diagnostics_period_s=0.3,
        fusion=fusion,
        datum_from_first_fix=False,
        datum_lat=DATUM[0],
        datum_lon=DATUM[1],
        datum_alt=DATUM[2],
        camera_lever_arm_m=[1.5, 0.3, 1.8],  # the outputs are base_link's, both of them
    )
    h = Harness(params)
    try:
        time.sleep(0.5)
        datum = _late_datum(h)
        assert h.wait_for(lambda: len(datum) == 1, 10.0)
        m = datum[0]
        assert (m.latitude, m.longitude, m.altitude) == DATUM and m.header.frame_id == "map"
        assert m.position_covariance_type == NavSatFix.COVARIANCE_TYPE_UNKNOWN
        for i in range(4):
            t = T0 + 0.3 * i
            h.publish("fix", fix_msg(t - 0.05, LAT, LON))
            h.publish("fix", fix_msg(t + 0.05, LAT + 1e-6, LON))
            h.publish("imu", imu_msg(t, 30.0))
            time.sleep(0.1)
            h.publish("jpeg", jpeg_msg(t, panorama(i)))
            time.sleep(0.4)
        assert h.wait_for(lambda: h.count("pose") >= 3 and h.count("fix") >= 3, 15.0), h.node.diagnostics_values()
        fixes = {round(stamp_to_sec(f.header.stamp), 6): f for f in h.received["fix"]}
        for pose in h.received["pose"]:
            f = fixes[round(stamp_to_sec(pose.header.stamp), 6)]
            e, n = local_cartesian(f.latitude, f.longitude, f.altitude, *DATUM)
            p = pose.pose.pose.position
            assert (p.x, p.y) == pytest.approx((e, n), abs=0.01), (fusion, p, e, n)
            assert pose.header.frame_id == "map"
        d = h.node.diagnostics_values()
        assert d["camera_mount_source"] == "parameters" and d["camera_lever_arm_m"] == "1.500 0.300 1.800"
    finally:
        h.close()


def test_datum_from_the_first_fix_is_published_when_it_is_set(bed):
    h = Harness(dict(bed, diagnostics_period_s=0.3, prefetch_ahead_s=0.0))
    try:
        datum = _late_datum(h)
        time.sleep(0.5)
        assert datum == []  # no fix yet: no datum
        h.publish("fix", fix_msg(T0, LAT, LON))
        assert h.wait_for(lambda: len(datum) == 1, 10.0)
        assert (datum[0].latitude, datum[0].longitude, datum[0].altitude) == (LAT, LON, 10.0)
        h.publish("fix", fix_msg(T0 + 0.1, LAT + 1e-5, LON))
        time.sleep(0.5)
        assert len(datum) == 1  # the datum does not move
    finally:
        h.close()
