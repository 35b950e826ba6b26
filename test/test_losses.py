# SPDX-License-Identifier: Apache-2.0
"""Targets and losses against small hand-computed cases."""

import math

import pytest
import torch

from offline_adapt.train.losses import (
    LossWeights,
    ccvpe_total_loss,
    orientation_loss,
    soft_cross_entropy,
    weighted_infonce,
)
from offline_adapt.train.targets import gaussian_map, level_targets, orientation_weights
from xview_loc_ros.models import ModelOutput


def test_gaussian_map_peak_at_continuous_centre():
    g = gaussian_map(8, torch.tensor([[2.5, 5.5], [4.0, 4.0]]), sigma_px=1.0)
    assert g.shape == (2, 8, 8)
    assert g[0, 5, 2] == pytest.approx(1.0)  # cell (row 5, col 2) has centre (2.5, 5.5)
    assert g[0, 5, 3] == pytest.approx(math.exp(-0.5))
    assert g[1, 3, 3] == pytest.approx(math.exp(-0.25)) and g[1, 4, 4] == pytest.approx(math.exp(-0.25))
    with pytest.raises(ValueError, match="centers_uv"):
        gaussian_map(8, torch.zeros(3))


def test_orientation_weights_two_bin_interpolation():
    w = orientation_weights(torch.tensor([0.0, 27.0, 355.5, -9.0]), 20)
    assert w[0, 0] == 1 and w[0].sum() == 1
    assert w[1, 1] == pytest.approx(0.5) and w[1, 2] == pytest.approx(0.5)
    assert w[2, 19] == pytest.approx(0.25) and w[2, 0] == pytest.approx(0.75)
    assert w[3, 19] == pytest.approx(0.5) and w[3, 0] == pytest.approx(0.5)


def test_level_targets_max_sum_and_orientation_lift():
    fine = torch.zeros(1, 4, 4)
    fine[0, 0, 1], fine[0, 1, 0], fine[0, 3, 3] = 0.5, 0.25, 1.0
    levels = [[2, 4], [4, 1]]
    mx = level_targets(fine, levels, torch.tensor([45.0]), mode="max")
    assert mx[0].shape == (1, 4, 2, 2) and mx[1].shape == (1, 1, 4, 4)
    assert torch.allclose(mx[0][0, 0], torch.tensor([[0.25, 0.0], [0.0, 0.5]]))  # 45 deg: half in bin 0, half in bin 1
    assert torch.allclose(mx[0][0, 1], mx[0][0, 0]) and mx[0][0, 2:].abs().sum() == 0
    assert torch.equal(mx[1][0, 0], fine[0])
    sm = level_targets(fine, levels, None, mode="sum")
    assert torch.allclose(sm[0][0, 0], torch.tensor([[0.75, 0.0], [0.0, 1.0]]) / 4)  # marginal spread over 4 bins
    assert sm[0].sum() == pytest.approx(float(fine.sum()))
    with pytest.raises(ValueError, match="mode"):
        level_targets(fine, levels, mode="mean")
    with pytest.raises(ValueError, match="does not divide"):
        level_targets(fine, [[3, 1]])


def test_weighted_infonce_hand_computed():
    scores = torch.tensor([0.0, 0.1, 0.2, 0.05]).view(1, 1, 1, 4)
    weights = torch.tensor([0.0, 1.0, 0.5, 0.005]).view(1, 1, 1, 4)  # 0.005 is below the 0.01 positive threshold
    z = [0.0, 1.0, 2.0, 0.5]
    logz = math.log(sum(math.exp(x) for x in z))
    expected = -(1.0 * (1.0 - logz) + 0.5 * (2.0 - logz)) / 1.5
    assert float(weighted_infonce(scores, weights)) == pytest.approx(expected, rel=1e-6)
    # batch sums: the normaliser is the total positive weight over the batch
    s2 = torch.cat([scores, scores]).view(2, 1, 1, 4)
    w2 = torch.cat([weights, weights * 0]).view(2, 1, 1, 4)
    assert float(weighted_infonce(s2, w2)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        weighted_infonce(scores, weights[..., :2])


def test_soft_cross_entropy_and_orientation_loss_hand_computed():
    logits = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    target = torch.tensor([[0.0, 2.0], [2.0, 0.0]]).view(1, 2, 2)
    logz = math.log(1 + math.e + math.e**2 + math.e**3)
    assert float(soft_cross_entropy(logits, target)) == pytest.approx(-0.5 * ((1 - logz) + (2 - logz)), rel=1e-6)
    ori = torch.zeros(1, 2, 1, 2)
    ori[0, 0] = 1.0  # (cos, sin) = (1, 0): heading 0 everywhere
    w = torch.tensor([[[1.0, 2.0]]])
    # true heading 90 (east): a = -90 deg -> (0, -1); squared error |(1,0)-(0,-1)|^2 = 2 per pixel
    assert float(orientation_loss(ori, torch.tensor([90.0]), w)) == pytest.approx(2 * 3.0, rel=1e-6)


def test_total_loss_weights_and_level_selection():
    torch.manual_seed(0)
    levels = [[2, 4], [4, 4], [8, 1]]
    out = ModelOutput(
        heatmaps=[torch.randn(2, 4, 2, 2), torch.randn(2, 4, 4, 4), torch.randn(2, 1, 8, 8)],
        orientation=torch.nn.functional.normalize(torch.randn(2, 2, 8, 8), dim=1),
    )
    fine = gaussian_map(8, torch.tensor([[3.0, 4.0], [6.0, 2.0]]), 1.0)
    heading = torch.tensor([10.0, 200.0])
    total, parts = ccvpe_total_loss(out, fine, levels, heading)
    tg = level_targets(fine, levels, heading)
    nce = [float(weighted_infonce(out.heatmaps[k], tg[k])) for k in range(2)]
    ce = float(soft_cross_entropy(out.heatmaps[-1], fine))
    ori = float(orientation_loss(out.orientation, heading, fine))
    assert float(total) == pytest.approx(ce + 1e4 * (nce[0] + nce[1]) / 2 + 10 * ori, rel=1e-5)
    coarse, parts1 = ccvpe_total_loss(out, fine, levels, heading, LossWeights(ce=0, ori=0, supervise_levels=[0]))
    assert float(coarse) == pytest.approx(1e4 * nce[0], rel=1e-5) and set(parts1) == {"nce0", "total"}
    with pytest.raises(ValueError, match="supervise_levels"):
        ccvpe_total_loss(out, fine, levels, heading, LossWeights(supervise_levels=[2]))
