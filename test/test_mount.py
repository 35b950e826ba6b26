# SPDX-License-Identifier: Apache-2.0
"""The camera's mount on the vehicle (xview_loc_ros.mount) and what the localizer does with it and with
the heading offsets: ~/pose is base_frame's (REP-103/105)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from localizer_testbed import LAT, LON, model_and_patches, panorama, write_small_checkpoint, write_tiles

from xview_loc_ros.geo import LocalENU
from xview_loc_ros.localizer import Fix, FrameRejected, Heading, Localizer
from xview_loc_ros.mount import CameraMount, mount_from_transforms
from xview_loc_ros.params import LocalizerParams, ParameterError


def _q_yaw(deg):
    a = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(a), math.cos(a))


# a camera_link 1.5 m forward, 0.2 m left, 1.8 m up, turned 90 deg left; its optical frame per REP-103
# (z forward, x right, y down: the usual rotation from the body-style link)
OPTICAL = (-0.5, 0.5, -0.5, 0.5)
TREE = [
    ("base_link", "camera_link", (1.5, 0.2, 1.8), _q_yaw(90.0)),
    ("camera_link", "camera_optical_frame", (0.0, 0.0, 0.0), OPTICAL),
    ("base_link", "imu_link", (0.0, 0.0, 0.3), _q_yaw(0.0)),
]


def test_mount_from_a_direct_transform_and_through_an_optical_frame():
    m = mount_from_transforms(TREE, "base_link", "camera_link")
    assert m is not None and m.source == "tf_static"
    assert m.lever_arm_m == pytest.approx((1.5, 0.2, 1.8)) and m.yaw_offset_deg == pytest.approx(90.0)
    # the optical frame looks along its z, which is camera_link's x: the same forward direction
    m = mount_from_transforms(TREE, "/base_link", "camera_optical_frame")
    assert m.lever_arm_m == pytest.approx((1.5, 0.2, 1.8)) and m.yaw_offset_deg == pytest.approx(90.0)


def test_mount_walks_edges_backwards_and_refuses_unconnected_frames():
    # base_link as a child: the camera hangs off a sensor plate that is base_link's parent here
    tree = [("plate", "base_link", (-1.0, 0.0, 0.0), _q_yaw(0.0)), ("plate", "cam", (0.5, 0.0, 1.0), _q_yaw(-30.0))]
    m = mount_from_transforms(tree, "base_link", "cam")
    assert m.lever_arm_m == pytest.approx((1.5, 0.0, 1.0)) and m.yaw_offset_deg == pytest.approx(-30.0)
    assert mount_from_transforms(TREE, "base_link", "other_camera") is None
    assert mount_from_transforms([], "base_link", "camera_link") is None
    with pytest.raises(ValueError, match="not a rotation"):
        mount_from_transforms([("a", "b", (0, 0, 0), (0.0, 0.0, 0.0, 0.0))], "a", "b")


def test_offset_rotates_the_lever_arm_with_the_vehicle_yaw():
    m = CameraMount((2.0, 1.0, 1.5), 0.0)
    assert m.offset_en(0.0) == pytest.approx((2.0, 1.0))  # facing east: forward is east, left is north
    assert m.offset_en(math.pi / 2) == pytest.approx((-1.0, 2.0))  # facing north: forward north, left west
    assert CameraMount().offset_en(None) == (0.0, 0.0)
    with pytest.raises(ValueError):
        m.offset_en(None)


def test_lever_arm_parameters_are_checked():
    ok = dict(model_path="m.onnx", tile_source="xyz:/t")
    assert LocalizerParams(**ok, camera_lever_arm_m=[1, 0.5, 2]).validate().camera_lever_arm_m == (1.0, 0.5, 2.0)
    for bad in ([1.0, 2.0], [1.0, float("nan"), 0.0], "1 2 3", [0.0, 0.0, 500.0]):
        with pytest.raises(ParameterError, match="camera_lever_arm_m"):
            LocalizerParams(**ok, camera_lever_arm_m=bad).validate()
    with pytest.raises(ParameterError, match="camera_lever_arm_m"):
        LocalizerParams(**ok, heading_source="none", camera_lever_arm_m=[1.0, 0.0, 0.0]).validate()
    assert LocalizerParams(**ok).to_dict()["camera_lever_arm_m"] == [0.0, 0.0, 0.0]  # a ROS double array


# -- the localizer with a real model and tiles ---------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("mount")
    with model_and_patches(write_small_checkpoint(d / "small.pt"), write_tiles(d / "tiles")) as stack:
        yield stack


def _loc(stack, **kw):
    p = LocalizerParams(
        model_path="m.pt",
        tile_source="xyz:/t",
        gate_chi2=1e9,
        min_confidence=0.0,
        max_ambiguity=1e9,
        prefetch_ahead_s=0.0,
        **kw,
    ).validate()
    loc = Localizer(p, *stack)
    loc.add_fix(Fix(10.0, LAT, LON, 10.0, np.eye(2) * 25.0, "gps"))
    return loc


def test_the_estimate_is_base_frames_the_camera_sits_the_lever_arm_ahead(stack):
    ref = _loc(stack, heading_source="fixed", fixed_heading_deg=0.0).process(10.0, panorama())
    loc = _loc(stack, heading_source="fixed", fixed_heading_deg=0.0, camera_lever_arm_m=[3.0, 1.0, 1.6])
    est = loc.process(10.0, panorama())
    # same image, same heat map: the camera is where ref says; facing north, forward = north, left = west
    assert (est.u, est.v) == (ref.u, ref.v) and est.camera_offset_en == pytest.approx((-1.0, 3.0))
    assert est.east == pytest.approx(ref.east + 1.0, abs=1e-3) and est.north == pytest.approx(ref.north - 3.0, abs=1e-3)
    e, n, _ = LocalENU(LAT, LON, 10.0).to_enu(est.lat, est.lon, est.alt)
    assert (float(e), float(n)) == pytest.approx((est.east, est.north), abs=1e-3)
    # the Mahalanobis distance is base_frame's to the fix
    d = np.array([est.east, est.north])
    assert est.mahalanobis2 == pytest.approx(float(d @ np.linalg.solve(est.cov_en + np.eye(2) * 25.0, d)), rel=1e-3)
    # the filter tracks base_frame too: the heat map goes in geo-referenced where base_frame would be
    tloc = _loc(stack, heading_source="fixed", fixed_heading_deg=0.0, camera_lever_arm_m=[30.0, 0.0, 0.0])
    got = []
    update = tloc.filter.update_heatmap
    tloc.filter.update_heatmap = lambda stamp, prob, g, datum, fix_en: (
        got.append(g) or update(stamp, prob, g, datum, fix_en)
    )
    est = tloc.process(10.0, panorama())
    assert tloc.track(10.0, est) is not None and len(got) == 1
    e, n, _ = est.georef.frame.to_enu(got[0].center_lat, got[0].center_lon, 0.0)
    assert (float(e), float(n)) == pytest.approx((0.0, -30.0), abs=1e-3)  # the camera is 30 m ahead (north)
    assert (got[0].mpp, got[0].size_px) == (est.georef.mpp, est.georef.size_px)


def test_camera_yaw_offset_turns_the_panorama_and_imu_offset_the_heading(stack):
    from xview_loc_ros.preprocess import prepare_ground

    backend, _ = stack
    seen = []

    class Spy:
        config = backend.config

        def infer(self, ground, aerial):
            seen.append(ground[0].copy())
            return backend.infer(ground, aerial)

    builder = stack[1]
    for kw in (dict(fixed_heading_deg=100.0), dict(fixed_heading_deg=130.0, camera_yaw_offset_deg=30.0)):
        p = LocalizerParams(model_path="m.pt", tile_source="xyz:/t", heading_source="fixed", **kw).validate()
        loc = Localizer(p, Spy(), builder)
        loc.add_fix(Fix(10.0, LAT, LON, 10.0, np.eye(2) * 25.0, "gps"))
        est = loc.process(10.0, panorama())
        assert est.yaw == pytest.approx(math.radians(90.0 - kw["fixed_heading_deg"]))  # the vehicle's yaw
    # the camera looks 30 deg left of a vehicle heading 130: compass 100 both times, the same model input
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], prepare_ground(panorama(), 100.0, backend.config))

    p = LocalizerParams(model_path="m.pt", tile_source="xyz:/t", imu_yaw_offset_deg=-2.5).validate()
    loc = Localizer(p, backend, builder)
    loc.add_heading(10.0, Heading(50.0, 0.01))  # a magnetic-north IMU, declination 2.5 deg east
    assert loc.heading_at(10.0).compass_deg == pytest.approx(52.5)


def test_distorted_pinhole_cameras_are_refused_unless_rectified(stack):
    loc = _loc(stack, heading_source="fixed")
    loc.camera_distorted = True
    loc.config = dict(loc.config, ground_type="pinhole", fov_deg=0.0)
    with pytest.raises(FrameRejected) as e:
        loc.process(10.0, panorama())
    assert e.value.reason == "camera_distorted" and "images_rectified" in e.value.detail
    loc.params.images_rectified = True
    loc.config = dict(loc.config, ground_type="panorama")  # back to what the model takes
    assert loc.process(10.0, panorama()).accepted
