# SPDX-License-Identifier: Apache-2.0
"""The TensorRT backend's build and run sequence against a recording test double of ``tensorrt``.

The double (test/trt_double.py) has exactly the API names of a real TensorRT version's binding
module (8.6.1, 10.3.0, 10.16.1, 11.4.0), so a call the real version lacks fails here too; a CPU
double of the CUDA operations stands in for the GPU. What this cannot show: that TensorRT builds a
correct or fast engine (a GPU run does; test_inference_trt.py, marked gpu).
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch
from trt_double import CpuCudaDouble, TensorRTTestDouble, api_versions

from offline_adapt.export.onnx_export import export_onnx
from xview_loc_ros.inference import InputShapeError, open_backend
from xview_loc_ros.inference import trt_backend as tb
from xview_loc_ros.inference.engine_cache import cached_engine_path, timing_cache_path
from xview_loc_ros.inference.modelfile import sidecar_path
from xview_loc_ros.inference.ort_backend import OrtBackend
from xview_loc_ros.inference.select import backend_availability
from xview_loc_ros.models import build_model

ALL_USABLE = {"tensorrt": None, "onnxruntime": None, "torch": None}
VERSIONS = api_versions()
BY_MAJOR = {int(v.split(".")[0]): v for v in VERSIONS}  # the newest fixture of each major


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("double") / "small.onnx"
    export_onnx(build_model("small"), out)
    return out


def install(monkeypatch, version: str) -> tuple:
    """The tensorrt double for ``version`` in sys.modules and the CPU CUDA double as the backend's
    CUDA operations; (trt double, cuda double)."""
    double = TensorRTTestDouble(version)
    cuda = CpuCudaDouble(double)
    monkeypatch.setitem(sys.modules, "tensorrt", double.module)
    monkeypatch.setattr(tb, "cuda_ops", lambda: cuda)
    return double, cuda


def opened(path, backend, **kwargs):
    """open_backend with TensorRT counted as usable (backend_availability asks torch for a GPU)."""
    return open_backend(path, backend, availability=ALL_USABLE, **kwargs)


def matcher_float_nodes(onnx_path) -> set:
    """Names of the ONNX nodes in the matcher scope or of a norm's ops whose outputs are all float32
    (an independent statement of what the backend must pin)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    elem = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    out = set()
    for n in model.graph.node:
        kinds = [n.attribute[0].t.data_type if n.op_type == "Constant" else elem.get(o) for o in n.output]
        sensitive = "/matchers." in n.name or n.op_type in ("ReduceL2", "Clip", "Sqrt", "Expand", "Div")
        if sensitive and all(k == onnx.TensorProto.FLOAT for k in kinds):
            out.add(n.name)
    return out


def _inputs(config, batch=1):
    h, w = config["ground_size"]
    s = config["aerial_size"]
    return np.zeros((batch, 3, h, w), np.float32), np.zeros((batch, 3, s, s), np.float32)


@pytest.mark.parametrize("version", VERSIONS)
def test_fp32_build_and_run_in_order(onnx_file, tmp_path, monkeypatch, version):
    double, _ = install(monkeypatch, version)
    b = opened(onnx_file, "tensorrt", device="cuda:1", cache_dir=tmp_path, max_batch=2)
    order = [
        "cuda.select",
        "Builder",
        "Builder.create_network",
        "OnnxParser",
        "OnnxParser.parse_from_file",
        "Builder.create_builder_config",
        "IBuilderConfig.clear_flag",
        "IBuilderConfig.add_optimization_profile",
        "IBuilderConfig.set_timing_cache",
        "Builder.build_serialized_network",
        "ITimingCache.serialize",
        "Runtime",
        "Runtime.deserialize_cuda_engine",
        "ICudaEngine.create_execution_context",
    ]
    positions = [double.index(w) for w in order]
    assert positions == sorted(positions), list(zip(order, positions))
    # explicit batch below 10 (the parser refuses implicit batch), nothing on 10, strong typing on 11
    expected_flags = {8: ["EXPLICIT_BATCH"], 10: [], 11: ["STRONGLY_TYPED"]}[double.major]
    assert double.called("Builder.create_network") == [expected_flags]
    assert double.called("IBuilderConfig.clear_flag") == ["TF32"]
    assert double.called("IBuilderConfig.set_flag") == []
    assert double.called("IOptimizationProfile.set_shape") == [
        ("ground", (1, 3, 64, 256), (1, 3, 64, 256), (2, 3, 64, 256)),
        ("aerial", (1, 3, 128, 128), (1, 3, 128, 128), (2, 3, 128, 128)),
    ]
    # every device step on cuda:1, the one asked for: build, deserialize, run
    assert set(double.called("cuda.select")) == {1}
    g, a = _inputs(b.config, 2)
    out = b.infer(g, a)
    assert out.shape == (2, 1, 128, 128) and np.all(out == 1.0)  # what the double's kernel wrote
    assert double.called("cuda.scope") == [1001]
    assert double.called("IExecutionContext.execute_async_v3") == [1001]
    assert "tensorrt" in b.describe() and "Test Double GPU" in b.describe() and "fp32" in b.describe()


@pytest.mark.parametrize("version", [BY_MAJOR[8], *[v for v in VERSIONS if v.startswith("10.")]])
def test_fp16_below_11_pins_the_matcher_to_fp32(onnx_file, tmp_path, monkeypatch, version):
    double, _ = install(monkeypatch, version)
    opened(onnx_file, "tensorrt", fp16=True, cache_dir=tmp_path)
    assert double.called("IBuilderConfig.set_flag") == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    pinned = [name for name, _ in double.called("ILayer.precision=")]
    assert any("/matchers." in n for n in pinned)
    for op in ("Clip", "Sqrt", "ReduceL2", "Einsum", "Div"):  # the sensitive ops of every matcher
        assert any(n.endswith(f"/{op}") for n in pinned), op
    # exactly the matcher's float layers: index and axis constants keep their int type
    assert set(pinned) == matcher_float_nodes(onnx_file)
    outputs = double.called("ILayer.set_output_type")
    assert {name for name, _, _ in outputs} == set(pinned) and {t for _, _, t in outputs} == {"FLOAT"}
    build = double.called("Builder.build_serialized_network")[0]
    assert build["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"] and build["pinned"] == sorted(pinned)
    # the precision pins come after the flags and before the build
    assert double.index("IBuilderConfig.set_flag") < double.index("ILayer.precision=")
    assert double.index("ILayer.set_output_type") < double.index("Builder.build_serialized_network")


def test_fp16_on_11_refuses_an_fp32_onnx_naming_the_version(onnx_file, tmp_path, monkeypatch):
    double, _ = install(monkeypatch, BY_MAJOR[11])
    with pytest.raises(tb.UnsupportedPrecision, match=rf"TensorRT {BY_MAJOR[11]} has no FP16 builder flag"):
        opened(onnx_file, "tensorrt", fp16=True, cache_dir=tmp_path)
    assert double.builds == 0


def test_auto_falls_back_to_onnxruntime_when_fp16_cannot_be_built(onnx_file, tmp_path, monkeypatch, caplog):
    install(monkeypatch, BY_MAJOR[11])
    with caplog.at_level(logging.WARNING, logger="xview_loc_ros.inference"):
        b = opened(onnx_file, "auto", fp16=True, cache_dir=tmp_path)
    assert isinstance(b, OrtBackend) and "no FP16 builder flag" in (b.fallback_reason or "")


@pytest.mark.parametrize("version", [BY_MAJOR[10], BY_MAJOR[11]])
def test_auto_falls_back_to_onnxruntime_on_a_driver_mismatch(onnx_file, tmp_path, monkeypatch, caplog, version):
    """pybind11's "factory function returned nullptr" TypeError from trt.Builder: the driver is older
    than the CUDA runtime of the TensorRT build (CUDA 13 wheels on an older driver)."""
    double, _ = install(monkeypatch, version)
    double.fail_factories = True
    with caplog.at_level(logging.WARNING, logger="xview_loc_ros.inference"):
        b = opened(onnx_file, "auto", device="cuda:0", cache_dir=tmp_path)
    assert isinstance(b, OrtBackend)
    assert "TensorRTUnavailable" in b.fallback_reason and "driver is older than the CUDA runtime" in b.fallback_reason
    assert any("falling back to onnxruntime" in r.message and "nullptr" in r.message for r in caplog.records)
    assert b.infer(*_inputs(b.config)).shape == (1, 1, 128, 128)
    # asked for explicitly, the same failure is an error, not a silent switch
    with pytest.raises(tb.TensorRTUnavailable, match="could not create its builder"):
        opened(onnx_file, "tensorrt", cache_dir=tmp_path)


def test_auto_with_a_plan_file_cannot_fall_back(onnx_file, tmp_path, monkeypatch):
    double, _ = install(monkeypatch, BY_MAJOR[10])
    opened(onnx_file, "tensorrt", cache_dir=tmp_path)
    plan = next(tmp_path.glob("*.plan"))
    double.fail_factories = True
    with pytest.raises(tb.TensorRTUnavailable, match="could not create its runtime"):
        opened(plan, "auto")


def test_unsupported_versions_are_refused_and_reported(monkeypatch):
    for version, ok in (
        ("8.5.3.1", False),
        ("8.6.2.3", True),
        ("9.3.0.1", True),
        ("10.3.0.30", True),
        ("12.0.0", False),
    ):
        if ok:
            assert tb.check_version(version)[0] == int(version.split(".")[0])
        else:
            with pytest.raises(tb.TensorRTUnavailable, match=f"TensorRT {version} is not supported"):
                tb.check_version(version)
    double = TensorRTTestDouble(BY_MAJOR[10])
    double.module.__version__ = "7.2.3.4"
    monkeypatch.setitem(sys.modules, "tensorrt", double.module)
    assert "TensorRT 7.2.3.4 is not supported" in backend_availability()["tensorrt"]


def test_corrupt_cached_plan_is_rebuilt_once(onnx_file, tmp_path, monkeypatch, caplog):
    double, _ = install(monkeypatch, BY_MAJOR[10])
    opened(onnx_file, "tensorrt", cache_dir=tmp_path)
    plan = next(tmp_path.glob("*.plan"))
    plan.write_bytes(plan.read_bytes()[:40])  # truncated; its sidecar still matches the machine
    with caplog.at_level(logging.WARNING, logger="xview_loc_ros.inference"):
        b = opened(onnx_file, "tensorrt", cache_dir=tmp_path)
    assert b.name == "tensorrt" and double.builds == 2
    assert double.called("Runtime.deserialize_cuda_engine") == [True, False, True]
    assert any("rebuilding it once" in r.message for r in caplog.records)

    double.refuse_every_plan = True  # a TensorRT that cannot load even a fresh engine
    with pytest.raises(tb.EngineDeserializeError, match="still cannot deserialize the new engine"):
        opened(onnx_file, "tensorrt", cache_dir=tmp_path)
    assert double.builds == 3  # exactly one rebuild, no loop


def test_cache_slots_by_content_and_timing_cache_reused(onnx_file, tmp_path, monkeypatch):
    double, cuda = install(monkeypatch, BY_MAJOR[10])
    other = tmp_path / "b" / "small.onnx"  # same file name, other weights
    other.parent.mkdir()
    torch.manual_seed(1)
    export_onnx(build_model("small"), other)
    cache = tmp_path / "engines"
    opened(onnx_file, "tensorrt", cache_dir=cache)
    opened(other, "tensorrt", cache_dir=cache)
    opened(onnx_file, "tensorrt", cache_dir=cache)  # still cached: no eviction by the namesake
    assert double.builds == 2 and len(list(cache.glob("small.*.fp32.b1.plan"))) == 2
    key = json.loads(sidecar_path(next(cache.glob("*.plan"))).read_text())["engine_key"]
    assert key["sm_count"] == 16 and "CUDA 12.6" in key["cuda_runtime"]
    assert double.called("IBuilderConfig.create_timing_cache")[0] == b""  # first build: empty
    assert double.called("IBuilderConfig.create_timing_cache")[1] == b"+timings"  # second: the saved one
    tc = list(cache.glob("timing.*.cache"))
    assert len(tc) == 1 and tc[0].read_bytes() == b"+timings+timings"
    # another Jetson module of the same name (fewer SMs) is another machine: rebuilt, own timing cache
    cuda.gpu = tb.GpuInfo(cuda.gpu.name, cuda.gpu.compute_capability, 8, cuda.gpu.cuda_runtime)
    opened(onnx_file, "tensorrt", cache_dir=cache)
    assert double.builds == 3 and len(list(cache.glob("timing.*.cache"))) == 2
    # the CUDA 13 build of the same TensorRT version is another machine too
    cuda.gpu = tb.GpuInfo(cuda.gpu.name, cuda.gpu.compute_capability, 8, "CUDA 13.0, tensorrt-cu13 10.16.1.11")
    opened(onnx_file, "tensorrt", cache_dir=cache)
    assert double.builds == 4


def test_cached_engine_path_is_the_content_hash_slot(onnx_file, tmp_path, monkeypatch):
    install(monkeypatch, BY_MAJOR[10])
    engine = tb.ensure_engine(onnx_file, tmp_path, fp16=False, max_batch=2)
    from xview_loc_ros.fsutil import file_sha256

    assert engine == cached_engine_path(tmp_path, onnx_file, file_sha256(onnx_file), False, 2)
    key = tb.engine_key(sys.modules["tensorrt"], CpuCudaDouble(TensorRTTestDouble(BY_MAJOR[10])).gpu)
    assert timing_cache_path(tmp_path, key).is_file()


@pytest.mark.parametrize(
    "switch, error, message",
    [
        ("build_returns_none", RuntimeError, "build_serialized_network returned None"),
        ("no_context", RuntimeError, "could not create an execution context on cuda:0"),
    ],
)
def test_none_from_tensorrt_is_a_clear_error(onnx_file, tmp_path, monkeypatch, switch, error, message):
    double, _ = install(monkeypatch, BY_MAJOR[10])
    setattr(double, switch, True)
    with pytest.raises(error, match=message):
        opened(onnx_file, "tensorrt", cache_dir=tmp_path)


@pytest.mark.parametrize(
    "switch, error, message",
    [
        ("refuse_input_shape", InputShapeError, "TensorRT refused input ground of shape"),
        ("execute_fails", RuntimeError, "execute_async_v3 failed"),
    ],
)
def test_refusals_while_running_are_clear_errors(onnx_file, tmp_path, monkeypatch, switch, error, message):
    double, _ = install(monkeypatch, BY_MAJOR[10])
    b = opened(onnx_file, "tensorrt", cache_dir=tmp_path)
    setattr(double, switch, True)
    with pytest.raises(error, match=message):
        b.infer(*_inputs(b.config))


def test_below_10_without_explicit_batch_the_parser_fails(onnx_file, tmp_path, monkeypatch):
    """The double's 8.6 parser refuses an implicit-batch network as the real one does; the backend's
    flag is what makes 8.6 work (test_fp32_build_and_run_in_order)."""
    double, _ = install(monkeypatch, BY_MAJOR[8])
    monkeypatch.setattr(tb, "network_flags", lambda trt, major: 0)
    with pytest.raises(tb.ModelFileError, match="hasImplicitBatchDimension"):
        opened(onnx_file, "tensorrt", cache_dir=tmp_path)


def test_the_matcher_scope_matches_the_exported_graph(onnx_file):
    """The FP32 rule follows the model: the matchers' nodes and F.normalize's (ReduceL2, Clip,
    Expand, Div) are sensitive, convolutions are not."""
    import onnx

    nodes = onnx.load(str(onnx_file)).graph.node
    sensitive = [n.name for n in nodes if n.op_type in ("Clip", "Sqrt", "ReduceL2", "Div", "Expand", "Einsum")]
    assert any("/matchers." in n for n in sensitive) and any("/matchers." not in n for n in sensitive)
    assert all(tb.is_precision_sensitive(n) for n in sensitive)
    assert not any(tb.is_precision_sensitive(n.name) for n in nodes if n.op_type in ("Conv", "ConvTranspose"))
    assert not tb.is_precision_sensitive("/inner/Divider/Conv") and not tb.is_precision_sensitive("/inner/Clipper")
    assert tb.is_precision_sensitive("(Unnamed Layer* 7) [Shuffle]", "[ONNX Layer: /inner/matchers.0/Einsum]")


def test_device_strings():
    assert tb.device_index(None) == tb.device_index("cuda") == 0 and tb.device_index("cuda:3") == 3
    for bad in ("cpu", "cuda:x", "gpu:1"):
        with pytest.raises(ValueError, match="TensorRT runs on CUDA devices only"):
            tb.device_index(bad)
