# SPDX-License-Identifier: Apache-2.0
"""TensorRT backend on a real GPU: engine build, cache reuse/rebuild, parity with ONNX Runtime.

Skips where TensorRT does not import (it cannot be installed on the development machines); the
cache logic itself is tested without TensorRT in test_inference_engine_cache.py.
"""

import json

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installable on this machine")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("TensorRT needs a CUDA GPU", allow_module_level=True)

from offline_adapt.export.onnx_export import compare_heatmaps, export_onnx  # noqa: E402
from xview_loc_ros.fsutil import file_sha256  # noqa: E402
from xview_loc_ros.inference import InputShapeError, ModelFileError, open_backend  # noqa: E402
from xview_loc_ros.inference.engine_cache import cached_engine_path  # noqa: E402
from xview_loc_ros.inference.modelfile import sidecar_path  # noqa: E402
from xview_loc_ros.models import build_model  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("trt") / "small.onnx"
    export_onnx(build_model("small"), out)
    return out


def _inputs(config, batch):
    rng = np.random.default_rng(1)
    h, w = config["ground_size"]
    s = config["aerial_size"]
    return (
        rng.standard_normal((batch, 3, h, w)).astype(np.float32),
        rng.standard_normal((batch, 3, s, s)).astype(np.float32),
    )


def test_engine_matches_onnxruntime_fp32(small_onnx, tmp_path):
    b = open_backend(small_onnx, "tensorrt", cache_dir=tmp_path, max_batch=2)
    assert b.name == "tensorrt" and "fp32" in b.describe()
    ref = open_backend(small_onnx, "onnxruntime", device="cpu")
    g, a = _inputs(b.config, 2)
    got, want = b.infer(g, a), ref.infer(g, a)
    assert got.shape == want.shape == (2, 1, 128, 128)
    _, rel, same = compare_heatmaps(want, got)
    assert rel <= 1e-4 and same
    for x, y in zip(b.infer_levels(g, a), ref.infer_levels(g, a)):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
    with pytest.raises(InputShapeError, match="exceeds this backend's maximum of 2"):
        b.infer(*_inputs(b.config, 3))


def test_fp16_engine_close_to_fp32(small_onnx, tmp_path):
    b16 = open_backend(small_onnx, "tensorrt", cache_dir=tmp_path, fp16=True)
    ref = open_backend(small_onnx, "onnxruntime", device="cpu")
    g, a = _inputs(b16.config, 1)
    _, rel, _ = compare_heatmaps(ref.infer(g, a), b16.infer(g, a))
    assert rel <= 2e-2


def test_engine_cache_reused_then_rebuilt_when_key_differs(small_onnx, tmp_path):
    open_backend(small_onnx, "tensorrt", cache_dir=tmp_path)
    engine = cached_engine_path(tmp_path, small_onnx, file_sha256(small_onnx), False, 1)
    first = engine.stat().st_mtime_ns
    open_backend(small_onnx, "tensorrt", cache_dir=tmp_path)
    assert engine.stat().st_mtime_ns == first  # reused
    side = json.loads(sidecar_path(engine).read_text())
    side["engine_key"]["trt_version"] = "0.0.0"  # as if built by another TensorRT
    sidecar_path(engine).write_text(json.dumps(side))
    open_backend(small_onnx, "tensorrt", cache_dir=tmp_path)
    assert engine.stat().st_mtime_ns != first
    assert json.loads(sidecar_path(engine).read_text())["engine_key"]["trt_version"] == trt.__version__


def test_engine_file_used_directly_and_corrupt_engine(small_onnx, tmp_path):
    open_backend(small_onnx, "tensorrt", cache_dir=tmp_path)
    engine = cached_engine_path(tmp_path, small_onnx, file_sha256(small_onnx), False, 1)
    assert open_backend(engine).name == "tensorrt"  # auto on a .plan
    engine.write_bytes(engine.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=f"{engine.name}: TensorRT .* cannot deserialize"):
        open_backend(engine)
    # from the ONNX, the damaged cached plan is rebuilt once and works
    b = open_backend(small_onnx, "tensorrt", cache_dir=tmp_path)
    assert b.name == "tensorrt" and np.isfinite(b.infer(*_inputs(b.config, 1))).all()


def test_fp16_engine_is_finite_and_on_peak(small_onnx, tmp_path):
    """The matcher and norms stay FP32: no NaN/inf from clamp_min(1e-24) or sums of squares."""
    b16 = open_backend(small_onnx, "tensorrt", cache_dir=tmp_path, fp16=True)
    ref = open_backend(small_onnx, "onnxruntime", device="cpu")
    g, a = _inputs(b16.config, 1)
    for scale in (1.0, 1e-6, 50.0):  # tiny and huge features: the under- and overflow cases
        got = b16.infer(g * scale, a * scale)
        assert np.isfinite(got).all(), scale
        assert compare_heatmaps(ref.infer(g * scale, a * scale), got)[2], scale


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_engine_built_and_run_on_the_requested_device(small_onnx, tmp_path):
    b = open_backend(small_onnx, "tensorrt", device="cuda:1", cache_dir=tmp_path)
    assert str(b.device) == "cuda:1"
    before = torch.cuda.memory_allocated(1)
    b.infer(*_inputs(b.config, 1))
    assert torch.cuda.memory_allocated(1) >= before
