# SPDX-License-Identifier: Apache-2.0
"""The ROS-free localizer core: parameters, fix/heading buffers, covariance, gating, full frames."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from localizer_testbed import LAT, LON, model_and_patches, panorama, write_small_checkpoint, write_tiles

from xview_loc_ros.geo import LocalENU
from xview_loc_ros.localizer import (
    Fix,
    FixBuffer,
    FrameRejected,
    Heading,
    HeadingBuffer,
    Localizer,
    gate,
    mahalanobis2,
    pixel_cov_to_enu,
)
from xview_loc_ros.params import LocalizerParams, ParameterError
from xview_loc_ros.sensors import fix_covariance_en

ROOT = Path(__file__).resolve().parents[1]


def _fix(t, lat=LAT, lon=LON, std=5.0):
    return Fix(t, lat, lon, 10.0, np.eye(2) * std**2, "gps")


# -- parameters ---------------------------------------------------------------------------------------
def test_yaml_mirrors_parameter_defaults():
    doc = yaml.safe_load((ROOT / "config" / "localizer.yaml").read_text())
    values = doc["xview_localizer"]["ros__parameters"]
    defaults = LocalizerParams().to_dict()
    assert values == defaults
    assert {k: type(v) for k, v in values.items()} == {k: type(v) for k, v in defaults.items()}


def _valid(**kw):
    return LocalizerParams(model_path="m.pt", tile_source="xyz:/tiles", **kw)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(model_path=""), "model_path"),
        (dict(tile_source=""), "tile_source"),
        (dict(backend="cuda"), "backend"),
        (dict(heading_source="gps"), "heading_source"),
        (dict(fix_max_age_s=0.0), "fix_max_age_s"),
        (dict(max_image_pixels=0), "max_image_pixels"),
        (dict(gate_chi2=-1.0), "gate_chi2"),
        (dict(threads="4"), "threads"),
        (dict(fp16=1), "fp16"),
        (dict(max_missing_fraction=1.5), "max_missing_fraction"),
        (dict(min_std_m=float("nan")), "min_std_m"),
        (dict(compressed_image_topic=""), "compressed_image_topic"),
        (dict(image_transport="raw", image_topic=""), "image_topic"),
        (dict(image_transport="theora"), "image_transport"),
        (dict(viz_max_rate_hz=-1.0), "viz_max_rate_hz"),
        (dict(tile_zoom=30), "tile_zoom"),
        (dict(datum_from_first_fix=False, datum_lat=95.0), "datum_lat"),
        (dict(fusion="kalman"), "fusion"),
        (dict(filter_cell_m=0.0), "filter_cell_m"),
        (dict(filter_window_m=2.0), "filter_window_m"),
        (dict(filter_window_m=2000.0, filter_cell_m=0.5), "filter_window_m"),
        (dict(filter_gnss_outlier_weight=0.0), "filter_gnss_outlier_weight"),
        (dict(filter_heatmap_floor=1.0), "filter_heatmap_floor"),
        (dict(heatmap_temperature=-0.5), "heatmap_temperature"),
        (dict(filter_odom_noise_m_per_sqrt_m=-0.1), "filter_odom_noise_m_per_sqrt_m"),
        (dict(filter_lost_updates=0), "filter_lost_updates"),
        (dict(filter_max_gap_s=float("inf")), "filter_max_gap_s"),
        (dict(odom_max_age_s=0.0), "odom_max_age_s"),
    ],
)
def test_invalid_parameters_name_the_parameter(kw, name):
    p = _valid()
    for k, v in kw.items():
        setattr(p, k, v)
    with pytest.raises(ParameterError, match=f"parameter '{name}'"):
        p.validate()


def test_parameters_accept_integers_for_floats_and_reject_unknown_names():
    p = _valid(gate_chi2=9)
    assert p.validate().gate_chi2 == 9.0 and isinstance(p.gate_chi2, float)
    with pytest.raises(ParameterError, match="'patch_px'"):
        LocalizerParams.from_mapping({"patch_px": 3})


def test_parameters_checked_against_the_model_config():
    cfg = {"aerial_size": 128, "mpp": 0.5, "known_orientation": True}
    _valid(patch_size_px=128, patch_mpp=0.5).check_model(cfg)
    with pytest.raises(ParameterError, match="'patch_size_px'"):
        _valid(patch_size_px=256).check_model(cfg)
    with pytest.raises(ParameterError, match="'patch_mpp'"):
        _valid(patch_mpp=0.25).check_model(cfg)
    with pytest.raises(ParameterError, match="'heading_source'"):
        _valid(heading_source="none").check_model(cfg)


# -- buffers ------------------------------------------------------------------------------------------
def test_fix_interpolated_at_the_image_stamp_and_limits():
    buf = FixBuffer(max_age_s=1.0, max_gap_s=2.0)
    with pytest.raises(FrameRejected) as e:
        buf.at(0.0)
    assert e.value.reason == "no_fix"
    buf.add(_fix(10.0, LAT, LON, std=4.0))
    buf.add(_fix(11.0, LAT + 1e-4, LON + 2e-4, std=6.0))
    f = buf.at(10.25)
    assert f.lat == pytest.approx(LAT + 0.25e-4, abs=1e-12) and f.lon == pytest.approx(LON + 0.5e-4, abs=1e-12)
    assert f.cov_en[0, 0] == pytest.approx(0.75 * 16 + 0.25 * 36)
    assert buf.at(11.9).lat == LAT + 1e-4  # held (within max age)
    with pytest.raises(FrameRejected) as e:
        buf.at(12.5)
    assert e.value.reason == "fix_too_old"
    buf.add(_fix(14.0))
    with pytest.raises(FrameRejected) as e:
        buf.at(12.5)
    assert e.value.reason == "fix_gap"
    buf.add(_fix(1.0))  # time jumped back (bag looped): old fixes must not be interpolated across
    assert buf.latest().stamp == 1.0 and buf.at(1.2).stamp == 1.0


def test_fix_velocity_east_north():
    buf = FixBuffer(1.0, 2.0)
    enu = LocalENU(LAT, LON)
    for t in range(4):
        lat, lon, _ = enu.to_latlon(3.0 * t, -4.0 * t, 0.0)
        buf.add(_fix(float(t), float(lat), float(lon)))
    ve, vn = buf.velocity_en()
    assert ve == pytest.approx(3.0, abs=0.01) and vn == pytest.approx(-4.0, abs=0.01)


def test_heading_buffer_returns_the_nearest_recent_heading():
    east = Heading(90.0, 0.5)
    hb = HeadingBuffer(max_age_s=0.2)
    hb.add(1.0, east)
    assert hb.at(1.1) is east
    with pytest.raises(FrameRejected) as e:
        hb.at(1.5)
    assert e.value.reason == "heading_too_old"


# -- covariance, gating ---------------------------------------------------------------------------------
def test_pixel_covariance_to_enu_flips_the_row_axis():
    cov = pixel_cov_to_enu(np.array([[4.0, 1.0], [1.0, 9.0]]), 0.5)
    np.testing.assert_allclose(cov, [[1.0, -0.25], [-0.25, 2.25]])


def test_gate_reasons():
    p = _valid(min_confidence=0.2, max_ambiguity=0.5, gate_chi2=13.8)
    assert gate(0.5, 0.1, 3.0, p) == ""
    assert gate(0.1, 0.1, 3.0, p) == "low_confidence"
    assert gate(0.5, 0.9, 3.0, p) == "ambiguous"
    assert gate(0.5, 0.1, 20.0, p) == "gnss_gate"
    assert gate(float("nan"), 0.1, 3.0, p) == "low_confidence"
    assert mahalanobis2(np.array([3.0, 4.0]), np.eye(2) * 25.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "cov2", [[[1.0, 50.0], [50.0, 1.0]], [[4.0, 0.0], [0.0, float("inf")]], [[4.0, float("nan")], [float("nan"), 9.0]]]
)
def test_known_but_indefinite_or_non_finite_fix_covariance_is_unknown(cov2):
    """A KNOWN covariance [[1, 50], [50, 1]] (eigenvalues 51 and -49) gave a negative Mahalanobis
    distance: an estimate 424 m south-east of the fix passed the gate."""
    cov9 = [cov2[0][0], cov2[0][1], 0.0, cov2[1][0], cov2[1][1], 0.0, 0.0, 0.0, 1.0]
    assert fix_covariance_en(cov9, 3) is None  # unknown: the node falls back to its default std
    cov_en = np.eye(2) * 25.0
    est_cov = np.eye(2) * 1.0  # the estimate's own covariance, as Localizer.process adds it
    delta = np.array([300.0, -300.0])  # 424 m along the negative eigenvector
    d2 = mahalanobis2(delta, est_cov + cov_en)
    assert d2 == pytest.approx(180000.0 / 26.0)
    assert gate(0.9, 0.0, d2, _valid(gate_chi2=13.8)) == "gnss_gate"


def test_gate_rejects_a_negative_or_nan_distance():
    p = _valid(min_confidence=0.2, max_ambiguity=0.5, gate_chi2=13.8)
    assert gate(0.5, 0.1, -3.0, p) == "gnss_gate"
    assert gate(0.5, 0.1, float("nan"), p) == "gnss_gate"
    assert gate(0.5, 0.1, 0.0, p) == ""


# -- whole frames with a real model and real tiles -------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("loc")
    with model_and_patches(write_small_checkpoint(d / "small.pt"), write_tiles(d / "tiles", hole=(2, 2))) as stack:
        yield stack


def test_frame_estimate_is_geo_consistent(stack):
    backend, builder = stack
    p = _valid(heading_source="fixed", fixed_heading_deg=30.0, gate_chi2=1e9, min_confidence=0.0, max_ambiguity=1e9)
    loc = Localizer(p, backend, builder)
    loc.add_fix(_fix(100.0, LAT, LON, std=5.0))
    loc.add_fix(_fix(101.0, LAT + 2e-5, LON, std=5.0))
    est = loc.process(100.5, panorama())
    s, mpp = backend.config["aerial_size"], backend.config["mpp"]
    assert est.accepted and est.stamp == 100.5
    assert est.fix_u == pytest.approx(s / 2, abs=1e-6) and est.fix_v == pytest.approx(s / 2, abs=1e-6)
    lat, lon = est.georef.pixel_to_latlon(est.u, est.v)
    assert (est.lat, est.lon) == pytest.approx((float(lat), float(lon)), abs=1e-12)
    # map frame anchored at the first fix: the estimate's ENU is its offset from there
    e, n, _ = LocalENU(LAT, LON, 10.0).to_enu(est.lat, est.lon, est.alt)
    assert (est.east, est.north) == pytest.approx((float(e), float(n)), abs=1e-3)
    off_e, off_n = (est.u - s / 2) * mpp, (s / 2 - est.v) * mpp
    assert est.east == pytest.approx(off_e, abs=0.05) and est.north == pytest.approx(off_n + 1e-5 * 111_250, abs=0.1)
    assert np.all(np.linalg.eigvalsh(est.cov_en) >= p.min_std_m**2 - 1e-12)
    assert est.prob.shape == (s, s) and est.prob.sum() == pytest.approx(1.0)
    assert set(est.timings) == {"patch", "preprocess", "inference", "decode"}
    assert est.yaw == pytest.approx(math.radians(60.0)) and est.yaw_var == pytest.approx(math.radians(5.0) ** 2)


def test_frame_rejections_missing_tiles_and_no_fix(stack):
    backend, builder = stack
    loc = Localizer(_valid(heading_source="fixed"), backend, builder)
    with pytest.raises(FrameRejected) as e:
        loc.process(1.0, panorama())
    assert e.value.reason == "no_fix"
    far = _fix(1.0, LAT + 0.01, LON)  # 1 km north: no tiles there
    loc.add_fix(far)
    with pytest.raises(FrameRejected) as e:
        loc.process(1.0, panorama())
    assert e.value.reason == "tiles_missing"


def test_known_orientation_needs_a_heading(stack):
    backend, builder = stack
    loc = Localizer(_valid(heading_source="imu"), backend, builder)
    loc.add_fix(_fix(5.0))
    with pytest.raises(FrameRejected) as e:
        loc.process(5.0, panorama())
    assert e.value.reason == "no_heading"
    loc.add_heading(5.0, Heading(90.0, 0.01))
    assert loc.process(5.0, panorama()).yaw == pytest.approx(0.0, abs=1e-9)


def test_prefetch_runs_ahead_along_the_motion(stack):
    backend, builder = stack
    loc = Localizer(_valid(heading_source="fixed", prefetch_ahead_s=2.0), backend, builder)
    enu = LocalENU(LAT, LON)
    for t in range(3):
        lat, lon, _ = enu.to_latlon(0.0, 20.0 * t, 0.0)
        loc.add_fix(_fix(float(t), float(lat), float(lon)))
    deadline = time.time() + 20
    while sum(loc.prefetch_counts().values()) == 0 and time.time() < deadline:
        time.sleep(0.05)
    counts = loc.prefetch_counts()
    assert counts.get("loaded", 0) >= 4  # the tiles around and ahead of the fixes


def test_unknown_orientation_model_gives_yaw_from_its_orientation_field(tmp_path, stack):
    import torch

    from xview_loc_ros.heatmap import heading_from_orientation
    from xview_loc_ros.inference import open_backend
    from xview_loc_ros.models import build_model, save_checkpoint

    _, builder = stack
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "unknown.pt", build_model("small", known_orientation=False))
    backend = open_backend(tmp_path / "unknown.pt", "torch", device="cpu", threads=1)
    loc = Localizer(
        _valid(heading_source="none", gate_chi2=1e9, min_confidence=0.0, max_ambiguity=1e9), backend, builder
    )
    loc.add_fix(_fix(3.0))
    est = loc.process(3.0, panorama())
    ori = backend.infer_outputs(*_inputs(backend, est), ["orientation"])["orientation"][0]
    expected = math.radians(90.0 - heading_from_orientation(ori, est.u, est.v))
    assert math.cos(est.yaw - expected) == pytest.approx(1.0, abs=1e-6)
    assert est.yaw_var == pytest.approx(math.radians(5.0) ** 2)


def _inputs(backend, est):
    from xview_loc_ros.preprocess import prepare_aerial, prepare_ground

    return prepare_ground(panorama(), None, backend.config)[None], prepare_aerial(est.patch, backend.config)[None]


def test_overlay_marks_fix_and_estimate_and_grid_rows_run_south_to_north():
    from xview_loc_ros.overlay import ESTIMATE_COLOUR, FIX_COLOUR, heatmap_overlay, occupancy_values

    patch = np.full((128, 128, 3), 60, np.uint8)
    logits = np.full((128, 128), -20.0)
    logits[20, 100] = 10.0  # a sharp peak at row 20 (north), column 100 (east)
    out = heatmap_overlay(patch, logits, fix_px=(64.0, 64.0), estimate_px=(30.0, 90.0))
    assert out.shape == patch.shape and out.dtype == np.uint8
    assert tuple(out[64, 64]) == FIX_COLOUR
    assert tuple(out[90, 30 + 2]) == ESTIMATE_COLOUR or tuple(out[90 + 2, 30]) == ESTIMATE_COLOUR
    assert np.abs(out[20, 100].astype(int) - 60).sum() > 60 and np.abs(out[110, 10].astype(int) - 60).max() <= 1
    prob = np.zeros((4, 4))
    prob[0, 3] = 0.5  # north-east cell
    prob[3, 0] = 0.25
    cells = occupancy_values(prob)
    assert cells.dtype == np.int8 and cells[3, 3] == 100 and cells[0, 0] == 50  # row 0 = south


# -- over the drive (fusion: filter) --------------------------------------------------------------------
class _NoBackend:
    config = {"aerial_size": 128, "mpp": 0.5, "ground_size": [64, 256], "known_orientation": False}


def _north_drive(loc, n=30, speed=5.0, dt=0.1, odom=True):
    """Fixes every dt moving north at ``speed``; IMU heading north; odometry if ``odom``."""
    frame = LocalENU(LAT, LON, 10.0)
    for k in range(n):
        lat, lon, _ = frame.to_latlon(0.0, speed * k * dt, 10.0)
        loc.add_fix(_fix(k * dt, float(lat), float(lon), std=3.0))
        loc.add_heading(k * dt, Heading(0.0, 1e-4))
        if odom:
            loc.add_odometry(k * dt, speed * 1.01, 0.0)


def test_motion_prefers_odometry_then_fix_speed_then_fix_velocity():
    loc = Localizer(_valid(prefetch_ahead_s=0.0), _NoBackend(), None)
    _north_drive(loc)
    (de, dn), src = loc.motion(1.0, 2.0)
    assert src == "odom" and de == pytest.approx(0.0, abs=1e-9) and dn == pytest.approx(5.05, abs=1e-6)
    loc = Localizer(_valid(prefetch_ahead_s=0.0), _NoBackend(), None)
    _north_drive(loc, odom=False)
    (de, dn), src = loc.motion(1.0, 2.0)
    assert src == "fix_speed" and (de, dn) == pytest.approx((0.0, 5.0), abs=0.01)
    loc = Localizer(_valid(heading_source="none", prefetch_ahead_s=0.0), _NoBackend(), None)
    _north_drive(loc, odom=True)  # odometry needs a heading to integrate along: none here
    (de, dn), src = loc.motion(1.0, 2.0)
    assert src == "fix_velocity" and (de, dn) == pytest.approx((0.0, 5.0), abs=0.01)
    empty = Localizer(_valid(heading_source="none", prefetch_ahead_s=0.0), _NoBackend(), None)
    assert empty.motion(1.0, 2.0) == ((0.0, 0.0), "none")


def test_one_multipath_fix_does_not_make_a_speed():
    loc = Localizer(_valid(odom_topic="", prefetch_ahead_s=0.0), _NoBackend(), None)
    _north_drive(loc, odom=False)
    lat, lon, _ = LocalENU(LAT, LON, 10.0).to_latlon(30.0, 5.0 * 3.0, 10.0)
    loc.add_fix(_fix(3.0, float(lat), float(lon)))  # 30 m east for one fix
    (de, dn), src = loc.motion(2.5, 2.9)
    assert src == "fix_speed" and dn == pytest.approx(2.0, abs=0.1)


def test_track_follows_the_fixes_without_heat_maps_and_frame_mode_does_not_track():
    loc = Localizer(_valid(prefetch_ahead_s=0.0), _NoBackend(), None)
    _north_drive(loc)
    out = [loc.track(0.5 + 0.1 * k, None) for k in range(20)]
    assert all(o is not None for o in out)
    last = out[-1]
    assert last.motion == "odom" and last.state == "reinitialised" and last.fix is not None
    assert last.north == pytest.approx(5.0 * 2.4, abs=3.0) and abs(last.east) < 3.0
    assert np.all(np.linalg.eigvalsh(last.cov_en) >= 0.25**2 - 1e-12)
    e, n, _ = LocalENU(LAT, LON, 10.0).to_enu(last.lat, last.lon, 10.0)
    assert (float(e), float(n)) == pytest.approx((last.east, last.north), abs=1e-3)
    assert last.yaw == pytest.approx(math.pi / 2)
    frame = Localizer(_valid(fusion="frame", prefetch_ahead_s=0.0), _NoBackend(), None)
    _north_drive(frame)
    assert frame.filter is None and frame.track(1.0, None) is None


def test_patch_centre_follows_a_tracking_belief_not_a_jumped_fix():
    """While the filter tracks (a tight belief), the patch is cut at its predicted position: a fix 40 m off does not
    move the patch off the vehicle; with patch_centre: fix, an untracked or a wide belief, the fix is the centre."""
    from xview_loc_ros.drive_filter import FilterState

    loc = Localizer(_valid(prefetch_ahead_s=0.0), _NoBackend(), None)
    _north_drive(loc)
    for k in range(20):
        loc.track(0.5 + 0.1 * k, None)
    f = loc.filter
    assert f is not None
    frame = LocalENU(LAT, LON, 10.0)
    jumped = _fix(2.5, *(float(x) for x in frame.to_latlon(40.0, 5.0 * 2.5, 10.0)[:2]))
    assert loc.patch_centre(2.5, jumped) == (jumped.lat, jumped.lon)  # not tracking yet: no heat map applied
    f.state = FilterState.TRACKING
    lat, lon = loc.patch_centre(2.5, jumped)
    e, n, _ = frame.to_enu(lat, lon, 10.0)
    b = f.estimate()
    assert abs(float(e) - b.east) < 1.0 and float(n) == pytest.approx(b.north + 5.0 * (2.5 - f.stamp), abs=1.5)
    assert abs(float(e) - 40.0) > 30.0
    loc.params = _valid(prefetch_ahead_s=0.0, patch_centre="fix")
    assert loc.patch_centre(2.5, jumped) == (jumped.lat, jumped.lon)
    loc.params = _valid(prefetch_ahead_s=0.0, patch_centre_max_std_m=0.01)
    assert loc.patch_centre(2.5, jumped) == (jumped.lat, jumped.lon)
