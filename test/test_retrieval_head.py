# SPDX-License-Identifier: Apache-2.0
"""The retrieval head (issue 20): config key ``retrieval_dim``, the two descriptor outputs in every backend
and in the ONNX export, unit norm, each descriptor depends on its own view only, and models without the head
(old checkpoints, the shipped teacher) are unchanged."""

from pathlib import Path

import numpy as np
import pytest
import torch

from offline_adapt.export.onnx_export import export_onnx
from xview_loc_ros.inference import (
    OUTPUT_AERIAL_DESCRIPTOR,
    OUTPUT_FINEST,
    OUTPUT_GROUND_DESCRIPTOR,
    has_retrieval,
    open_backend,
    output_names,
)
from xview_loc_ros.models import build_model, load_checkpoint, save_checkpoint

TEACHER = Path(__file__).resolve().parents[1] / "models" / "teacher.pt"


def _inputs(config, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    h, w = config["ground_size"]
    s = config["aerial_size"]
    return (
        rng.standard_normal((batch, 3, h, w)).astype(np.float32),
        rng.standard_normal((batch, 3, s, s)).astype(np.float32),
    )


@pytest.fixture(scope="module", params=["spatial", "gem"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"retr_{request.param}")
    torch.manual_seed(0)
    model = build_model("small", retrieval_dim=64, retrieval_pool=request.param)
    ckpt, onnx_path = folder / "m.pt", folder / "m.onnx"
    save_checkpoint(ckpt, model)
    export_onnx(model, onnx_path)
    return ckpt, onnx_path


def test_config_key_and_outputs_present_or_absent():
    plain = build_model("small")
    assert "retrieval_dim" not in plain.config and "retrieval_pool" not in plain.config
    assert not has_retrieval(plain.config) and not plain.has_retrieval
    assert build_model("small", retrieval_dim=0).config == plain.config
    names = output_names(plain.config, orientation=False)
    assert OUTPUT_GROUND_DESCRIPTOR not in names
    head = build_model("small", retrieval_dim=32)
    assert head.config["retrieval_dim"] == 32 and head.config["retrieval_pool"] == "spatial"
    assert build_model("small", known_orientation=False, ground_type="pinhole", fov_deg=90.0, ground_size=[64, 128],
                       retrieval_dim=8).config["retrieval_pool"] == "gem"  # fmt: skip
    assert has_retrieval(head.config)
    assert output_names(head.config, orientation=False)[-2:] == [OUTPUT_GROUND_DESCRIPTOR, OUTPUT_AERIAL_DESCRIPTOR]
    # the ground-branch convention: the ground head is a grd_ module, the aerial one is not
    assert head.grd_retrieval in head.ground_branch() and head.sat_retrieval not in head.ground_branch()


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(retrieval_dim=-1), "retrieval_dim"),
        (dict(retrieval_dim=1.5), "retrieval_dim"),
        (dict(retrieval_dim=True), "retrieval_dim"),
        (dict(retrieval_dim=16, retrieval_pool="max"), "retrieval_pool"),
        (dict(retrieval_pool="gem"), "without a retrieval_dim"),
    ],
)
def test_bad_retrieval_config_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_model("small", **overrides)


@pytest.mark.parametrize("pool", ["spatial", "gem"])
def test_descriptors_unit_norm_and_each_from_its_own_view(pool):
    torch.manual_seed(1)
    model = build_model("small", retrieval_dim=48, retrieval_pool=pool).eval()
    g, a = (torch.from_numpy(x) for x in _inputs(model.config))
    with torch.no_grad():
        out = model(g, a)
        g2, a2 = (torch.from_numpy(x) for x in _inputs(model.config, seed=5))
        other = model(g, a2)
        enc_g, enc_a = model.encode_ground(g), model.encode_aerial(a)
    assert out.ground_descriptor.shape == out.aerial_descriptor.shape == (3, 48)
    for d in (out.ground_descriptor, out.aerial_descriptor):
        assert d.dtype == torch.float32
        torch.testing.assert_close(d.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(enc_g, out.ground_descriptor)
    torch.testing.assert_close(enc_a, out.aerial_descriptor)
    torch.testing.assert_close(other.ground_descriptor, out.ground_descriptor)  # the aerial input does not matter
    assert not torch.allclose(other.aerial_descriptor, out.aerial_descriptor)
    del g2


def test_ccvpe_gets_the_head_too():
    model = build_model("ccvpe-kitti", retrieval_dim=16).eval()
    assert model.config["retrieval_pool"] == "gem"
    with torch.no_grad():
        a = model.encode_aerial(torch.zeros(1, 3, 512, 512))
    assert a.shape == (1, 16)


def test_torch_and_onnxruntime_agree_on_every_output(exported):
    ckpt, onnx_path = exported
    ref_b = open_backend(ckpt, "torch", device="cpu")
    ort_b = open_backend(onnx_path, "onnxruntime", device="cpu")
    assert ref_b.outputs == ort_b.outputs
    assert ref_b.outputs[0] == OUTPUT_FINEST and ref_b.outputs[-2:] == [
        OUTPUT_GROUND_DESCRIPTOR,
        OUTPUT_AERIAL_DESCRIPTOR,
    ]
    g, a = _inputs(ref_b.config)
    names = [OUTPUT_GROUND_DESCRIPTOR, OUTPUT_AERIAL_DESCRIPTOR]
    ref, got = ref_b.infer_outputs(g, a, names), ort_b.infer_outputs(g, a, names)
    for n in names:
        assert got[n].shape == (3, 64) and got[n].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got[n], axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(got[n], ref[n], atol=1e-5)
    np.testing.assert_allclose(ort_b.infer(g, a), ref_b.infer(g, a), rtol=1e-4, atol=1e-4)
    # the export declares the descriptor shape
    import onnx

    dims = {
        o.name: [d.dim_value for d in o.type.tensor_type.shape.dim[1:]] for o in onnx.load(str(onnx_path)).graph.output
    }
    assert dims[OUTPUT_GROUND_DESCRIPTOR] == dims[OUTPUT_AERIAL_DESCRIPTOR] == [64]


def test_checkpoint_round_trip_keeps_the_head(tmp_path):
    torch.manual_seed(2)
    model = build_model("small", retrieval_dim=32, retrieval_pool="gem").eval()
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == model.config
    g, a = (torch.from_numpy(x) for x in _inputs(model.config))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(g, a).aerial_descriptor, model(g, a).aerial_descriptor)


def test_old_checkpoint_loads_unchanged_without_the_head(tmp_path):
    """The shipped teacher (written before the head existed) has the same outputs and config as before."""
    raw = torch.load(TEACHER, weights_only=True)
    model, _ = load_checkpoint(TEACHER)
    assert not model.has_retrieval and "retrieval_dim" not in model.config
    assert {k: v for k, v in model.config.items() if k != "width"} == raw["config"]  # width: added since
    assert set(model.state_dict()) == set(raw["state_dict"])
    backend = open_backend(TEACHER, "torch", device="cpu")
    assert OUTPUT_GROUND_DESCRIPTOR not in backend.outputs
    out = export_onnx(model, tmp_path / "teacher.onnx")
    ort_b = open_backend(out, "onnxruntime", device="cpu")
    assert ort_b.outputs == backend.outputs
    with pytest.raises(ValueError, match="has no output"):
        ort_b.infer_outputs(*_inputs(ort_b.config, 1), [OUTPUT_GROUND_DESCRIPTOR])
