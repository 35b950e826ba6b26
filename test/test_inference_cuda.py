# SPDX-License-Identifier: Apache-2.0
"""torch backend on CUDA: fp16 autocast and CUDA graphs agree with fp32 eager (needs a GPU)."""

import numpy as np
import pytest
import torch

from offline_adapt.export.onnx_export import compare_heatmaps
from xview_loc_ros.inference.torch_backend import TorchBackend
from xview_loc_ros.models import build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_fp16_and_cuda_graphs_agree_with_fp32(tmp_path):
    torch.manual_seed(0)
    model = build_model("small")
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2, 3, 64, 256)).astype(np.float32)
    a = rng.standard_normal((2, 3, 128, 128)).astype(np.float32)
    ref = TorchBackend(model, tmp_path / "m.pt", device="cpu").infer(g, a)
    fp32 = TorchBackend(model, tmp_path / "m.pt", device="cuda")
    graphs = TorchBackend(model, tmp_path / "m.pt", device="cuda", cuda_graphs=True)
    fp16 = TorchBackend(model, tmp_path / "m.pt", device="cuda", fp16=True)
    assert compare_heatmaps(ref, fp32.infer(g, a))[1] <= 1e-3
    first = graphs.infer(g, a)
    assert compare_heatmaps(ref, first)[1] <= 1e-3
    # replay with new inputs must not return the captured run's values
    second = graphs.infer(g[::-1].copy(), a[::-1].copy())
    np.testing.assert_allclose(second[::-1], first, rtol=1e-4, atol=1e-5)
    assert compare_heatmaps(ref, fp16.infer(g, a))[1] <= 2e-2
    assert "CUDA graphs" in graphs.describe() and "fp16 autocast" in fp16.describe()
