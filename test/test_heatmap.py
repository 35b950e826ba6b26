# SPDX-License-Identifier: Apache-2.0
"""Heat-map decoding against known inputs; preprocessing conventions."""

import numpy as np
import pytest

from xview_loc_ros.heatmap import decode_heatmap, heading_from_orientation, overlay_heatmap, softmax_all
from xview_loc_ros.models import build_model
from xview_loc_ros.preprocess import PreprocessError, check_pair_config, prepare_aerial, prepare_ground


def gaussian_logits(size, u0, v0, cov):
    """log of an (unnormalised) Gaussian density evaluated at cell centres, cov in px^2."""
    jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    d = np.stack([jj - u0, ii - v0], -1)
    inv = np.linalg.inv(cov)
    return -0.5 * np.einsum("...i,ij,...j->...", d, inv, d)


@pytest.mark.parametrize("seed", range(5))
def test_subpixel_peak_recovered(seed):
    rng = np.random.default_rng(seed)
    u0, v0 = rng.uniform(20, 108, 2)
    s = rng.uniform(1.5, 6)
    est = decode_heatmap(gaussian_logits(128, u0, v0, np.diag([s**2, s**2])), 128)
    assert abs(est.u - u0) < 0.1 and abs(est.v - v0) < 0.1
    # the integer estimate is the centre of the argmax cell
    assert est.u_int == np.floor(u0 - 0.5) + 0.5 or est.u_int == np.floor(u0) + 0.5
    assert abs(est.u_int - u0) <= 0.5 + 1e-9 and abs(est.v_int - v0) <= 0.5 + 1e-9


def test_anisotropic_covariance_recovered():
    cov = np.array([[9.0, 6.0], [6.0, 25.0]])  # correlated, sigmas 3 and 5 px
    est = decode_heatmap(gaussian_logits(128, 60.3, 70.7, cov), 128)
    assert np.allclose(est.cov_px, cov, rtol=0.1, atol=0.5)
    assert est.ambiguity < 1e-3 and est.mass > 0.99 and est.confidence == est.mass


def test_covariance_floor_is_cell_quantisation():
    x = np.full((8, 8), -50.0)
    x[3, 5] = 0.0  # all mass in one cell of a coarse 8x8 level over a 512 px patch
    est = decode_heatmap(x, 512)
    assert (est.u_int, est.v_int) == (5.5 * 64, 3.5 * 64)
    assert np.allclose(np.diag(est.cov_px), 64**2 / 12)


def test_two_modes_ambiguity_is_mass_ratio():
    size = 128
    a = gaussian_logits(size, 30.0, 30.0, np.eye(2) * 9)
    b = gaussian_logits(size, 95.0, 90.0, np.eye(2) * 9)
    logits = np.logaddexp(a, b + np.log(0.35))
    est = decode_heatmap(logits, size)
    assert abs(est.u - 30) < 0.2 and abs(est.v - 30) < 0.2
    assert est.ambiguity == pytest.approx(0.35, rel=0.05)
    assert (est.second_u, est.second_v) == (95.5, 90.5) or np.hypot(est.second_u - 95, est.second_v - 90) < 1.5
    assert est.mass == pytest.approx(1 / 1.35, rel=0.02)


def test_orientation_bins_give_heading():
    n, size = 16, 32
    base = gaussian_logits(size, 10.2, 20.8, np.eye(2) * 2)
    bins = np.full(n, -30.0)
    bins[3], bins[4] = 0.0, np.log(0.5)  # mass 2:1 between 67.5 and 90 degrees
    est = decode_heatmap(base[None] + bins[:, None, None], 128)
    expected = np.degrees(
        np.arctan2(
            np.sin(np.radians(67.5)) + 0.5 * np.sin(np.radians(90)),
            np.cos(np.radians(67.5)) + 0.5 * np.cos(np.radians(90)),
        )
    )
    assert est.heading_deg == pytest.approx(expected, abs=0.1)
    assert est.u == pytest.approx(10.2 * 4, abs=0.4) and est.v == pytest.approx(20.8 * 4, abs=0.4)
    assert softmax_all(np.zeros((2, 3))).sum() == pytest.approx(1.0)


def test_heading_from_orientation_field():
    ori = np.zeros((2, 4, 4))
    a = np.radians(-250.0)  # model convention: a = -compass heading
    ori[0], ori[1] = np.cos(a), np.sin(a)
    assert heading_from_orientation(ori, 1.5, 2.5) == pytest.approx(250.0)


def test_bad_heatmaps_rejected_and_overlay():
    with pytest.raises(ValueError, match="shape"):
        decode_heatmap(np.zeros(5), 10)
    with pytest.raises(ValueError, match="NaN"):
        decode_heatmap(np.full((4, 4), np.nan), 10)
    img = overlay_heatmap(np.zeros((16, 16, 3), np.uint8), gaussian_logits(8, 4, 4, np.eye(2)))
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8 and img[8, 8].sum() > img[0, 0].sum()


def test_prepare_ground_north_aligns_panorama():
    cfg = build_model("small").config  # known orientation, 64x256 panorama
    pano = np.zeros((64, 256, 3), np.uint8)
    # heading 90 (east): the centre column looks east, north is 90 deg = 64 columns left of centre
    pano[:, 128 - 64] = 255
    g = prepare_ground(pano, 90.0, cfg)
    assert g.shape == (3, 64, 256) and g.dtype == np.float32
    bright = np.flatnonzero(g[0, 0] > 0)
    assert list(bright) == [128]
    assert np.allclose(g[:, 0, 0], (0 - np.array(cfg["mean"])) / np.array(cfg["std"]), atol=1e-6)
    with pytest.raises(PreprocessError, match="heading"):
        prepare_ground(pano, None, cfg)
    big = prepare_ground(np.zeros((128, 512, 3), np.uint8), 0.0, cfg)
    assert big.shape == (3, 64, 256)


def test_prepare_aerial_and_pair_config_checks():
    cfg = build_model("small").config
    assert prepare_aerial(np.zeros((128, 128, 3), np.uint8), cfg).shape == (3, 128, 128)
    with pytest.raises(PreprocessError, match="expects 128x128"):
        prepare_aerial(np.zeros((64, 64, 3), np.uint8), cfg)
    with pytest.raises(PreprocessError, match="RGB uint8"):
        prepare_aerial(np.zeros((128, 128), np.float32), cfg)
    ok = dict(ground_type="panorama", ground_size=[256, 1024], fov_deg=360, patch_size_px=128, mpp=0.5)
    check_pair_config(cfg, ok)
    bad = dict(ok, ground_type="pinhole", fov_deg=90, mpp=0.6)
    with pytest.raises(PreprocessError) as e:
        check_pair_config(cfg, bad)
    msg = str(e.value)
    assert "ground camera type" in msg and "FOV" in msg and "0.6 m/px" in msg


def test_pair_config_accepts_the_public_data_sets_as_ccvpe_feeds_them():
    vigor, kitti = build_model("ccvpe-vigor").config, build_model("ccvpe-kitti").config
    # VIGOR cross-area target (SanFrancisco + Chicago): median m/px of 512-px resizes, 2.4 % off the nominal
    check_pair_config(
        vigor, dict(ground_type="panorama", ground_size=[1024, 2048], fov_deg=360, patch_size_px=512, mpp=0.1434)
    )
    # KITTI image_02: 375x1242 px, fx 721.5 px -> 81.4 deg, resized to 256x1024 by CCVPE
    check_pair_config(
        kitti, dict(ground_type="pinhole", ground_size=[375, 1242], fov_deg=81.44, patch_size_px=512, mpp=0.19583)
    )
    with pytest.raises(PreprocessError, match="aspect"):  # a 1:2 panorama into the small model's 1:4 input
        check_pair_config(
            build_model("small").config,
            dict(ground_type="panorama", ground_size=[512, 1024], fov_deg=360, patch_size_px=128, mpp=0.5),
        )
    with pytest.raises(PreprocessError, match="m/px"):
        check_pair_config(
            vigor, dict(ground_type="panorama", ground_size=[320, 640], fov_deg=360, patch_size_px=512, mpp=0.165)
        )
