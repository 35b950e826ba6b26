# SPDX-License-Identifier: Apache-2.0
"""Networks: CCVPE key/shape compatibility and forward shapes, small variants, equivariance of the
orientation rolls, checkpoints."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from offline_adapt.train.supervised import build_initial_model
from xview_loc_ros.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from xview_loc_ros.models.checkpoint import import_adapting_cvl, import_ccvpe_official
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


def _shape(text):
    return tuple(int(x) for x in text.strip("()").split(",") if x.strip())


def _their_state_dict(model):
    """``model``'s weights under the key names of Adapting_CVL's CVM_VIGOR (models.py): its attributes
    are CCVPE's CVM_VIGOR's, its padding layers have no parameters, so the reference list applies."""
    ref = reference_keys("vigor")
    ours = model.state_dict()
    assert [(k, str(tuple(v.shape))) for k, v in ours.items()] == ref
    return {key: ours[key].clone() for key, _ in ref}


def test_import_adapting_cvl_their_key_names_same_outputs(tmp_path, vigor_reflect):
    path = tmp_path / "final_student.pt"
    torch.save(_their_state_dict(vigor_reflect), path)  # train_CCVPE_on_VIGOR.py: state_dict(), no prefix
    model = import_adapting_cvl(path, "ccvpe-vigor").eval()
    assert model.config["padding_mode"] == "reflect"
    zero = import_ccvpe_official(path, "ccvpe-vigor").eval()  # same weights, CCVPE's zero padding
    assert zero.config["padding_mode"] == "zeros"
    torch.manual_seed(2)
    g, a = torch.randn(1, 3, 320, 640), torch.randn(1, 3, 512, 512)
    with torch.inference_mode():
        ref, got, z = vigor_reflect(g, a), model(g, a), zero(g, a)
    for r, o in zip(ref.heatmaps, got.heatmaps):
        assert torch.equal(r, o)
    assert torch.equal(ref.orientation, got.orientation)
    assert (z.heatmaps[-1] - got.heatmaps[-1]).abs().max() > 1e-3
    assert (z.orientation - got.orientation).abs().max() > 1e-3
    # the padding travels in the checkpoint config; a ccvpe checkpoint without the key is CCVPE's
    save_checkpoint(tmp_path / "teacher.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "teacher.pt")
    assert loaded.config == model.config and _pads(loaded.sat_efficientnet, nn.ReflectionPad2d)
    raw = torch.load(tmp_path / "teacher.pt", weights_only=True)
    del raw["config"]["padding_mode"]
    torch.save(raw, tmp_path / "old.pt")
    old, _ = load_checkpoint(tmp_path / "old.pt")
    assert old.config["padding_mode"] == "zeros" and _head_3x3_modes(old) == ["zeros"] * 24
    # train --init
    init = build_initial_model("ccvpe-vigor", {"known_orientation": True}, f"adapting-cvl:{path}")
    assert init.config["padding_mode"] == "reflect"
    assert all(torch.equal(v, vigor_reflect.state_dict()[k]) for k, v in init.state_dict().items())
    for arch in ("small", "ccvpe-kitti"):
        with pytest.raises(ValueError, match="--init adapting-cvl: needs --config ccvpe-vigor"):
            build_initial_model(arch, {}, f"adapting-cvl:{path}")


def test_import_adapting_cvl_refuses_wrong_files(tmp_path, vigor_reflect):
    theirs = _their_state_dict(vigor_reflect)
    bad = dict(theirs)
    del bad["sat_feature_to_descriptors.1.bias"]
    bad["grd_efficientnet._fc.extra"] = torch.zeros(1)
    bad["conv1.2.weight"] = torch.zeros(2, 16, 3, 3)  # a 2-channel output conv
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        import_adapting_cvl(tmp_path / "bad.pt", "ccvpe-vigor")
    msg = str(e.value)
    assert "bad.pt: does not match ccvpe-vigor (Adapting_CVL state_dict; " in msg
    assert "1 missing keys: sat_feature_to_descriptors.1.bias" in msg
    assert "1 unexpected keys: grd_efficientnet._fc.extra" in msg
    assert "1 shape mismatches (file vs ccvpe-vigor): conv1.2.weight (2, 16, 3, 3) vs (1, 16, 3, 3)" in msg
    kitti = {k: torch.zeros(_shape(shape)) for k, shape in reference_keys("kitti")}  # CCVPE's KITTI network
    torch.save(kitti, tmp_path / "kitti.pt")
    with pytest.raises(CheckpointError, match=r"kitti.pt: does not match ccvpe-vigor .* shape mismatches"):
        import_adapting_cvl(tmp_path / "kitti.pt", "ccvpe-vigor")
    with pytest.raises(CheckpointError, match="Adapting_CVL released no ccvpe-kitti network"):
        import_adapting_cvl(tmp_path / "kitti.pt", "ccvpe-kitti")
    save_checkpoint(tmp_path / "ours.pt", build_model("small"))
    with pytest.raises(CheckpointError, match="ours.pt: already an xview_loc_ros checkpoint"):
        import_adapting_cvl(tmp_path / "ours.pt", "ccvpe-vigor")
    torch.save({"epoch": 3, "model": theirs}, tmp_path / "nested.pt")
    with pytest.raises(CheckpointError, match="nested.pt: not a state_dict"):
        import_adapting_cvl(tmp_path / "nested.pt", "ccvpe-vigor")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable Adapting_CVL state_dict"):
        import_adapting_cvl(tmp_path / "junk.pt", "ccvpe-vigor")
    torch.save(theirs, tmp_path / "ok.pt")
    with pytest.raises(CheckpointError, match="Adapting_CVL networks need"):
        import_adapting_cvl(tmp_path / "ok.pt", "ccvpe-vigor", padding_mode="zeros")
    with pytest.raises(CheckpointError, match="CCVPE networks need"):
        import_ccvpe_official(tmp_path / "ok.pt", "ccvpe-vigor", padding_mode="reflect")


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
