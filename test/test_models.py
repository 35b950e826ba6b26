# SPDX-License-Identifier: Apache-2.0
"""Networks: CCVPE key/shape compatibility and forward shapes, small variants, equivariance of the
orientation rolls, checkpoints."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xview_loc_ros.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from xview_loc_ros.models.checkpoint import import_ccvpe_official
from xview_loc_ros.models.common import WidthCircularPad

DATA = Path(__file__).parent / "data"


def reference_keys(name):
    rows = []
    for line in (DATA / f"ccvpe_{name}_keys.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            rows.append((key, shape))
    return rows


@pytest.fixture(scope="module")
def vigor():
    torch.manual_seed(0)
    return build_model("ccvpe-vigor").eval()


@pytest.mark.parametrize("arch,name", [("ccvpe-vigor", "vigor"), ("ccvpe-kitti", "kitti")])
def test_ccvpe_state_dict_names_and_shapes_equal_reference(arch, name, vigor):
    model = vigor if arch == "ccvpe-vigor" else build_model(arch)
    ours = [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()]
    ref = reference_keys(name)
    assert len(ref) == 818
    assert ours == ref


def test_ccvpe_vigor_forward_shapes_and_roll_equivariance(vigor):
    torch.manual_seed(1)
    g = torch.randn(1, 3, 320, 640)
    a = torch.randn(1, 3, 512, 512)
    with torch.inference_mode():
        out = vigor(g, a)
        rolled = vigor(torch.roll(g, 32, dims=3), a)  # one feature column = 18 degrees
    assert [tuple(h.shape) for h in out.heatmaps] == [(1, 20, c, c) for c in (8, 16, 32, 64, 128, 256)] + [
        (1, 1, 512, 512)
    ]
    assert tuple(out.orientation.shape) == (1, 2, 512, 512)
    assert torch.allclose(out.orientation.norm(dim=1), torch.ones(1, 512, 512), atol=1e-4)
    assert vigor.config["levels"] == [[8, 20], [16, 20], [32, 20], [64, 20], [128, 20], [256, 20], [512, 1]]
    # wrap-around padding makes a one-column roll an exact permutation of the orientation bins:
    # the centre column now looks 18 degrees further left, so bin c takes the old bin c + 1
    assert torch.allclose(rolled.heatmaps[0], torch.roll(out.heatmaps[0], -1, dims=1), atol=1e-4)
    assert torch.allclose(rolled.heatmaps[-1], out.heatmaps[-1], atol=1e-3)


def test_ccvpe_kitti_forward_shapes():
    model = build_model("ccvpe-kitti").eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 256, 1024), torch.randn(1, 3, 512, 512))
    assert [tuple(h.shape) for h in out.heatmaps] == [(1, 16, c, c) for c in (8, 16, 32, 64, 128, 256)] + [
        (1, 1, 512, 512)
    ]
    assert tuple(out.orientation.shape) == (1, 2, 512, 512)


def test_import_official_state_dict_and_reject_mismatch(tmp_path, vigor):
    sd_path = tmp_path / "model.pt"
    torch.save({"module." + k: v for k, v in vigor.state_dict().items()}, sd_path)  # DataParallel-style prefix
    model = import_ccvpe_official(sd_path, "ccvpe-vigor")
    for k, v in vigor.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match="does not match ccvpe-kitti"):
        import_ccvpe_official(sd_path, "ccvpe-kitti")


@pytest.fixture(scope="module")
def vigor_reflect(vigor):
    model = build_model("ccvpe-vigor", padding_mode="reflect").eval()
    model.load_state_dict(vigor.state_dict())
    return model


def _pads(net, kind):
    return [m.padding for m in net.modules() if isinstance(m, kind)]


def _head_3x3_modes(model):
    """padding_mode of each 3x3 conv outside the backbones (the decoders: two per conv stage)."""
    return [
        m.padding_mode
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and not name.startswith(("grd_eff", "sat_eff"))
    ]


def test_adapting_cvl_padding_is_reflect_where_theirs_is(vigor, vigor_reflect):
    # Adapting_CVL (tudelft-iv/Adapting_CVL): efficientnet_pytorch/utils.py Conv2dStaticSamePadding pads
    # with ReflectionPad2d (CCVPE: ZeroPad2d), the circular variant (their ground branch) is unchanged;
    # models.py double_conv, conv1 and conv1_ori use padding_mode='reflect'
    zero_pads = _pads(vigor.sat_efficientnet, nn.ZeroPad2d)
    assert len(zero_pads) == 17
    assert _pads(vigor_reflect.sat_efficientnet, nn.ReflectionPad2d) == zero_pads  # same amounts, reflected
    assert _pads(vigor_reflect.sat_efficientnet, nn.ZeroPad2d) == []
    assert _pads(vigor_reflect.grd_efficientnet, WidthCircularPad) == _pads(vigor.grd_efficientnet, WidthCircularPad)
    assert _pads(vigor_reflect.grd_efficientnet, nn.ReflectionPad2d) == []
    assert _head_3x3_modes(vigor) == ["zeros"] * 24 and _head_3x3_modes(vigor_reflect) == ["reflect"] * 24
    # numbers, not only module types: the aerial stem (3x3, stride 2; TF-"same" for 224 px pads right/bottom
    # by one) and the final decoder conv reflect the border
    torch.manual_seed(3)
    x = torch.randn(1, 3, 32, 32)
    stem = vigor_reflect.sat_efficientnet._conv_stem
    with torch.no_grad():
        assert torch.allclose(
            stem(x), F.conv2d(F.pad(x, (0, 1, 0, 1), mode="reflect"), stem.weight, None, 2), atol=1e-5
        )
        y = torch.randn(1, 16, 8, 8)
        conv = vigor_reflect.conv1[0]
        ref = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias)
        assert torch.allclose(conv(y), ref, atol=1e-5)
        assert not torch.allclose(vigor.conv1[0](y), ref, atol=1e-3)


@pytest.mark.parametrize(
    "overrides,ground,n_ori,has_ori",
    [
        ({}, (64, 256), 1, False),
        ({"known_orientation": False}, (64, 256), 16, True),
        (
            {"known_orientation": False, "ground_type": "pinhole", "fov_deg": 90, "ground_size": [64, 192]},
            (64, 192),
            16,
            True,
        ),
        ({"aerial_size": 256, "known_orientation": False, "n_ori": 8}, (64, 256), 8, True),
        ({"width": 2}, (64, 256), 1, False),
        ({"width": 3, "known_orientation": False}, (64, 256), 16, True),
    ],
)
def test_small_shapes_and_levels(overrides, ground, n_ori, has_ori):
    model = build_model("small", **overrides)
    s = model.config["aerial_size"]
    out = model(torch.randn(2, 3, *ground), torch.randn(2, 3, s, s))
    levels = model.config["levels"]
    assert levels[-1] == [s, 1] and len(levels) == 6
    assert [l.cells for l in model.levels] == [s // 32 * 2**k for k in range(5)] + [s]
    for h, (cells, n) in zip(out.heatmaps, levels):
        assert tuple(h.shape) == (2, n, cells, cells)
    assert all(n == n_ori for _, n in levels[:-1])
    assert (out.orientation is not None) == has_ori


def test_small_panorama_roll_permutes_orientation_bins():
    torch.manual_seed(0)
    model = build_model("small", known_orientation=False).eval()
    g = torch.randn(1, 3, 64, 256)
    a = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        out = model(g, a)
        rolled = model(torch.roll(g, 16, dims=3), a)  # one 22.5-degree feature column
    for lvl in range(5):
        assert torch.allclose(rolled.heatmaps[lvl], torch.roll(out.heatmaps[lvl], -1, dims=1), atol=1e-5)
    assert torch.allclose(rolled.heatmaps[-1], out.heatmaps[-1], atol=1e-4)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"known_orientation": True, "ground_type": "pinhole", "fov_deg": 90}, "panoramas only"),
        ({"aerial_size": 100}, "multiple of 64"),
        ({"ground_type": "fisheye"}, "panorama or pinhole"),
        ({"bogus": 1}, "unknown config keys"),
        ({"width": 4}, "width must be 1, 2 or 3"),
        ({"width": 0}, "width must be 1, 2 or 3"),
    ],
)
def test_small_bad_config_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_model("small", **overrides)


def test_small_width_multiplies_channels_and_old_checkpoints_load_as_width_1(tmp_path):
    def n_params(m):
        return sum(p.numel() for p in m.parameters())

    base, wide = build_model("small"), build_model("small", width=2)
    assert base.config["width"] == 1 and wide.config["width"] == 2
    assert n_params(wide) > 2 * n_params(base)
    # a checkpoint written before the width key existed is the width-1 model
    save_checkpoint(tmp_path / "w1.pt", base)
    raw = torch.load(tmp_path / "w1.pt", weights_only=True)
    del raw["config"]["width"]
    torch.save(raw, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert loaded.config["width"] == 1 and n_params(loaded) == n_params(base)
    save_checkpoint(tmp_path / "w2.pt", wide)
    assert load_checkpoint(tmp_path / "w2.pt")[0].config["width"] == 2


def test_ccvpe_fixed_sizes_refused():
    with pytest.raises(ValueError, match="aerial_size is fixed"):
        build_model("ccvpe-vigor", aerial_size=256)
    with pytest.raises(ValueError, match="unknown model config"):
        build_model("resnet")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        build_model("ccvpe-kitti", padding_mode="circular")
    with pytest.raises(ValueError, match="unknown config keys"):
        build_model("small", padding_mode="reflect")


def test_checkpoint_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = build_model("small", known_orientation=False, mpp=0.3).eval()
    path = tmp_path / "run" / "m.pt"
    save_checkpoint(path, model, epoch=3, note="x")
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["mpp"] == 0.3 and raw["epoch"] == 3
    loaded, ckpt = load_checkpoint(path)
    g, a = torch.randn(1, 3, 64, 256), torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(g, a).heatmaps[-1], loaded.eval()(g, a).heatmaps[-1])
    assert loaded.config == model.config and ckpt["note"] == "x"
    with pytest.raises(CheckpointError, match="mpp: checkpoint 0.3 vs requested 0.5"):
        load_checkpoint(path, expect_config={"mpp": 0.5})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="ccvpe-official"):
        load_checkpoint(tmp_path / "plain.pt")
