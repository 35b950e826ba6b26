# SPDX-License-Identifier: Apache-2.0
"""Inference runtime: torch vs ONNX Runtime parity, backend choice, config and file checks.

Real parts only: real checkpoints, real ONNX exports, real ONNX Runtime sessions. Absence of
TensorRT / onnxruntime is simulated by the ``availability`` argument or by hiding a module from
``sys.modules`` (named fakes of what cannot be installed or removed here).
"""

import json
import logging
import sys

import numpy as np
import pytest
import torch

from offline_adapt.export.onnx_export import compare_heatmaps, export_onnx
from xview_loc_ros.inference import InputShapeError, ModelFileError, backend_availability, choose_backend, open_backend
from xview_loc_ros.inference.modelfile import sidecar_path
from xview_loc_ros.inference.ort_backend import OrtBackend, choose_providers
from xview_loc_ros.models import build_model, save_checkpoint

ALL_USABLE = {"tensorrt": None, "onnxruntime": None, "torch": None}


def _inputs(config, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    h, w = config["ground_size"]
    s = config["aerial_size"]
    return (
        rng.standard_normal((batch, 3, h, w)).astype(np.float32),
        rng.standard_normal((batch, 3, s, s)).astype(np.float32),
    )


def _export(arch, folder, **overrides):
    torch.manual_seed(0)
    model = build_model(arch, **overrides)
    ckpt, onnx_path = folder / f"{arch}.pt", folder / f"{arch}.onnx"
    save_checkpoint(ckpt, model)
    export_onnx(model, onnx_path)
    return ckpt, onnx_path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _export("small", tmp_path_factory.mktemp("small"))


def _assert_parity(ckpt, onnx_path, batch):
    ref_b = open_backend(ckpt, "torch", device="cpu")
    ort_b = open_backend(onnx_path, "onnxruntime", device="cpu")
    assert ref_b.config == ort_b.config
    g, a = _inputs(ref_b.config, batch)
    ref, got = ref_b.infer(g, a), ort_b.infer(g, a)
    s = ref_b.config["aerial_size"]
    assert ref.shape == got.shape == (batch, 1, s, s) and got.dtype == np.float32
    max_abs, max_rel, same = compare_heatmaps(ref, got)
    assert max_rel <= 1e-4, (max_abs, max_rel)
    assert same
    # every level is exported and agrees (untrained coarse levels can be flat, so no argmax check there)
    levels_ref, levels_ort = ref_b.infer_levels(g, a), ort_b.infer_levels(g, a)
    assert [x.shape for x in levels_ort] == [(batch, n_ori, c, c) for c, n_ori in ref_b.config["levels"]]
    for r, o in zip(levels_ref, levels_ort):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)
    assert ref_b.outputs == ort_b.outputs


def test_ort_matches_torch_small(small):
    _assert_parity(*small, batch=2)


@pytest.mark.parametrize("arch", ["ccvpe-vigor", pytest.param("ccvpe-kitti", marks=pytest.mark.slow)])
def test_ort_matches_torch_ccvpe_official_size(arch, tmp_path):
    ckpt, onnx_path = _export(arch, tmp_path)
    _assert_parity(ckpt, onnx_path, batch=1)
    if arch == "ccvpe-kitti":  # unknown orientation: the orientation field is exported too
        b = open_backend(onnx_path, "onnxruntime")
        assert "orientation" in b.outputs
        o = b.infer_outputs(*_inputs(b.config, 1), names=["orientation"])["orientation"]
        np.testing.assert_allclose(np.linalg.norm(o, axis=1), 1.0, atol=1e-4)


@pytest.mark.slow
def test_ort_matches_torch_ccvpe_reflect_padding(tmp_path):
    # Adapting_CVL's padding (adapting-cvl: imports): ReflectionPad2d and Conv2d(padding_mode="reflect")
    # export as ONNX Pad mode=reflect
    import onnx

    ckpt, onnx_path = _export("ccvpe-vigor", tmp_path, padding_mode="reflect")
    pads = [n for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Pad"]
    modes = [a.s.decode() for n in pads for a in n.attribute if a.name == "mode"]
    assert modes.count("reflect") >= 17 + 24  # aerial backbone + decoders
    assert open_backend(onnx_path, "onnxruntime").config["padding_mode"] == "reflect"
    _assert_parity(ckpt, onnx_path, batch=1)


@pytest.mark.parametrize(
    "path, availability, expected, reason_part",
    [
        ("m.onnx", ALL_USABLE, "tensorrt", "tensorrt is usable"),
        ("m.onnx", dict(ALL_USABLE, tensorrt="no CUDA GPU"), "onnxruntime", "tensorrt skipped: no CUDA GPU"),
        ("m.plan", dict(ALL_USABLE, onnxruntime="gone"), "tensorrt", "engine"),
        ("m.engine", ALL_USABLE, "tensorrt", "engine"),
        ("m.pt", ALL_USABLE, "torch", "checkpoint"),
        ("m.pt", dict(ALL_USABLE, tensorrt="x", onnxruntime="y"), "torch", "checkpoint"),
    ],
)
def test_auto_choice_under_each_availability(path, availability, expected, reason_part):
    choice = choose_backend(path, "auto", availability)
    assert choice.backend == expected
    assert reason_part in choice.reason


@pytest.mark.parametrize(
    "path, requested, availability, message",
    [
        ("m.onnx", "auto", dict(ALL_USABLE, tensorrt="no GPU", onnxruntime="not installed"), "no usable backend"),
        ("m.plan", "auto", dict(ALL_USABLE, tensorrt="`import tensorrt` failed"), "import tensorrt"),
        ("m.pt", "auto", dict(ALL_USABLE, torch="broken"), "torch skipped: broken"),
        ("m.pt", "onnxruntime", ALL_USABLE, "cannot run a checkpoint"),
        ("m.onnx", "torch", ALL_USABLE, "cannot run a onnx"),
        ("m.onnx", "tensorrt", dict(ALL_USABLE, tensorrt="no CUDA GPU"), "not usable here: no CUDA GPU"),
        ("m.onnx", "openvino", ALL_USABLE, "expected one of"),
        ("m.bin", "auto", ALL_USABLE, "unknown model file type"),
    ],
)
def test_choice_refused_with_reason(path, requested, availability, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        choose_backend(path, requested, availability)


def test_auto_opens_onnxruntime_here_and_logs_why(small, caplog):
    ckpt, onnx_path = small
    if backend_availability()["tensorrt"] is None:
        pytest.skip("TensorRT is usable on this machine; auto would build an engine")
    with caplog.at_level(logging.INFO, logger="xview_loc_ros.inference"):
        b = open_backend(onnx_path, threads=1)
    assert b.name == "onnxruntime" and isinstance(b, OrtBackend)
    assert any("onnxruntime" in r.message and "tensorrt skipped" in r.message for r in caplog.records)
    assert b.session.get_session_options().intra_op_num_threads == 1
    assert "onnxruntime" in b.describe() and "128x128 px at 0.5 m/px" in b.describe()
    assert b.warmup(2) > 0


def test_auto_without_onnxruntime_importable(small, monkeypatch):
    """Named fake: onnxruntime hidden from imports (None in sys.modules makes `import` fail)."""
    ckpt, onnx_path = small
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    avail = backend_availability()
    assert avail["onnxruntime"] is not None and avail["tensorrt"] is not None and avail["torch"] is None
    with pytest.raises(ValueError, match="no usable backend for a onnx file"):
        open_backend(onnx_path)
    assert open_backend(ckpt).name == "torch"


def test_shape_mismatch_refused_with_expected_and_got(small):
    ckpt, onnx_path = small
    for b in (open_backend(ckpt, "torch"), open_backend(onnx_path, "onnxruntime")):
        g, a = _inputs(b.config, 1)
        with pytest.raises(
            InputShapeError, match=r"aerial: model small expects shape \(B,3,128,128\).*got \(1, 3, 256, 256\)"
        ):
            b.infer(g, np.zeros((1, 3, 256, 256), np.float32))
        with pytest.raises(InputShapeError, match=r"ground: .*\(B,3,64,256\).*got \(3, 64, 256\)"):
            b.infer(g[0], a)
        with pytest.raises(InputShapeError, match="batch sizes: ground has 1, aerial has 2"):
            b.infer(g, np.concatenate([a, a]))
        with pytest.raises(InputShapeError, match="dtype uint8"):
            b.infer(g.astype(np.uint8), a)


def test_model_whose_config_disagrees_with_graph_is_refused(small, tmp_path):
    import onnx

    _, onnx_path = small
    proto = onnx.load(str(onnx_path))
    cfg = json.loads(proto.metadata_props[0].value)
    cfg["aerial_size"] = 256
    proto.metadata_props[0].value = json.dumps(cfg)
    bad = tmp_path / "lying.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ModelFileError, match=r"lying.onnx: input aerial has shape .* config says \(B,3,256,256\)"):
        open_backend(bad, "onnxruntime")
    # embedded config and sidecar disagreeing is refused too
    sidecar_path(bad).write_text(sidecar_path(onnx_path).read_text())
    with pytest.raises(
        ModelFileError, match=r"embedded config and sidecar lying.onnx.json disagree on \['aerial_size'\]"
    ):
        open_backend(bad, "onnxruntime")


def test_onnx_without_config_is_refused(small, tmp_path):
    import onnx

    proto = onnx.load(str(small[1]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelFileError, match="bare.onnx: carries no preprocessing config"):
        open_backend(bare, "onnxruntime")
    # the sidecar alone is enough
    sidecar_path(bare).write_text(sidecar_path(small[1]).read_text())
    assert open_backend(bare, "onnxruntime").config["aerial_size"] == 128


def test_corrupt_and_missing_files_are_clear_errors(small, tmp_path):
    _, onnx_path = small
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf" * 100)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
    for bad in (garbage, truncated):
        with pytest.raises(ModelFileError, match=f"{bad.name}: ONNX Runtime cannot load it"):
            open_backend(bad, "auto", availability=dict(ALL_USABLE, tensorrt="absent"))
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ModelFileError, match="broken.pt: not a readable checkpoint"):
        open_backend(ckpt)
    with pytest.raises(ModelFileError, match="nothere.onnx: model file not found"):
        open_backend(tmp_path / "nothere.onnx")
    engine = tmp_path / "x.plan"
    engine.write_bytes(b"junk")
    with pytest.raises(ValueError, match="tensorrt skipped: no GPU"):
        open_backend(engine, availability=dict(ALL_USABLE, tensorrt="no GPU"))


def test_gpu_only_options_refused_on_cpu(small):
    ckpt, onnx_path = small
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        open_backend(ckpt, "torch", device="cpu", fp16=True)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        open_backend(ckpt, "torch", device="cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="fp16 with onnxruntime needs its TensorRT execution provider"):
        open_backend(onnx_path, "onnxruntime", device="cpu", fp16=True)
    with pytest.raises(ValueError, match="cuda_graphs applies to the torch backend only"):
        open_backend(onnx_path, "onnxruntime", cuda_graphs=True)


def test_provider_order_and_device_selection():
    every = ["CPUExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider", "TensorrtExecutionProvider"]
    got = choose_providers(every, fp16=True, trt_cache_dir="/tmp/c")
    assert [p[0] if isinstance(p, tuple) else p for p in got] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert got[0][1] == {
        "device_id": 0,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": "/tmp/c",
    }
    assert choose_providers(every, device="cpu") == ["CPUExecutionProvider"]
    assert choose_providers(every, device="cuda:1")[1] == ("CUDAExecutionProvider", {"device_id": 1})
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="no GPU provider"):
        choose_providers(["CPUExecutionProvider"], device="cuda")
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        choose_providers(every, device="gpu0")
