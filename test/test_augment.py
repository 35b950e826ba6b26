# SPDX-License-Identifier: Apache-2.0
"""Photometric augmentation: reproducible draws, identity at strength 0, real variation in colour
and brightness at strength 1, geometry and labels untouched, clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pairs_testdata import write_random_pairs

from offline_adapt.data.augment import Photometric
from offline_adapt.data.dataset import PairDataset
from offline_adapt.data.torch_data import PairTorchDataset
from xview_loc_ros.models import build_model


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 210, 64, dtype=np.float32)[None, :, None]  # a horizontal ramp, three tints
    return np.clip(base * np.array([1.0, 0.8, 0.6]) + rng.normal(0, 5, (48, 64, 3)), 0, 255).astype(np.uint8)


def test_strength_zero_is_identity_and_draws_are_reproducible():
    img = _image()
    assert np.array_equal(Photometric(strength=0.0)(img), img)
    aug = Photometric()
    torch.manual_seed(7)
    a = aug(img)
    torch.manual_seed(7)
    b = aug(img)
    torch.manual_seed(8)
    c = aug(img)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_draws_change_colour_balance_and_brightness_but_not_geometry():
    img = _image()
    aug = Photometric(p_blur=0.0, p_jpeg=0.0, p_noise=0.0)
    torch.manual_seed(0)
    outs = np.stack([aug(img).astype(np.float32) for _ in range(200)])
    means = outs.mean(axis=(1, 2))  # (200, 3) per-channel means
    ratio = means[:, 0] / means[:, 2]
    assert ratio.std() > 0.05 * ratio.mean()  # colour balance varies
    assert means.mean(axis=1).std() > 5.0  # brightness varies by several grey levels
    assert abs(means.mean() - img.mean()) < 0.1 * img.mean()  # centred on the original
    # without blur a pixel-wise monotone map keeps the ramp's order along every row
    for o in outs[:20]:
        grey = o.mean(axis=2)
        cols = grey.mean(axis=0)
        assert np.corrcoef(cols, np.arange(cols.size))[0, 1] > 0.9


def test_blur_noise_and_jpeg_happen_at_their_rates():
    img = _image()
    torch.manual_seed(1)
    aug = Photometric(gain=0.0, brightness=0.0, saturation=0.0, gamma=0.0, p_blur=1.0, p_noise=0.0, p_jpeg=0.0)
    blurred = aug(img)
    hf = lambda x: np.abs(np.diff(x.astype(np.float32), axis=1)).mean()  # noqa: E731
    assert hf(blurred) < hf(img)
    aug = Photometric(
        gain=0.0,
        brightness=0.0,
        saturation=0.0,
        gamma=0.0,
        p_blur=0.0,
        p_noise=0.0,
        p_jpeg=1.0,
        jpeg_quality=5,
        strength=1.0,
    )
    changed = sum(not np.array_equal(aug(img), img) for _ in range(20))
    assert changed >= 15


@pytest.mark.parametrize(
    "kw, word", [({"strength": -1}, "strength"), ({"p_blur": 2}, "p_blur"), ({"jpeg_quality": 0}, "jpeg_quality")]
)
def test_bad_settings_are_refused_by_name(kw, word):
    with pytest.raises(ValueError, match=word):
        Photometric(**kw)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Photometric()(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Photometric()(np.zeros((4, 4, 3), np.float32))


def test_training_items_keep_their_labels(tmp_path):
    data = PairDataset(write_random_pairs(tmp_path / "pairs", n=4))
    cfg = build_model("small").config
    plain = PairTorchDataset(data, data.split(None), cfg)
    aug = PairTorchDataset(data, data.split(None), cfg, photometric=Photometric())
    torch.manual_seed(3)
    for i in range(4):
        a, b = plain[i], aug[i]
        assert torch.equal(a["gt_uv"], b["gt_uv"])
        assert torch.equal(a["heading_deg"], b["heading_deg"]) or (
            a["heading_deg"].isnan() and b["heading_deg"].isnan()
        )
        assert a["ground"].shape == b["ground"].shape and not torch.equal(a["ground"], b["ground"])
