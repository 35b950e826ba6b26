# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt export`: checkpoint -> ONNX (config embedded + sidecar, parity-checked) [-> TensorRT engine].

The ONNX has fixed per-sample sizes from the checkpoint config and a symbolic batch dimension;
inputs ``ground`` (B,3,H,W) and ``aerial`` (B,3,S,S) are normalised NCHW float32; the first output
``heatmap`` is the finest level's logits (B,1,S,S), followed by the coarser levels
(``heatmap_level{i}``, coarse first), ``orientation`` when the model predicts it, and
``ground_descriptor``, ``aerial_descriptor`` (B,D) when it has a retrieval head (config ``retrieval_dim``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from offline_adapt.data.dataset import PairDataset
from xview_loc_ros import preprocess
from xview_loc_ros.fsutil import atomic_path, file_sha256
from xview_loc_ros.inference.base import (
    INPUT_AERIAL,
    INPUT_GROUND,
    OUTPUT_FINEST,
    OUTPUT_ORIENTATION,
    RETRIEVAL_OUTPUTS,
    Backend,
    level_output_name,
    output_names,
)
from xview_loc_ros.inference.modelfile import CONFIG_METADATA_KEY, write_sidecar
from xview_loc_ros.inference.ort_backend import OrtBackend

log = logging.getLogger(__name__)
DEFAULT_OPSET = 17


# Engine parity tolerances, relative to the logit range: FP32 TensorRT picks other kernels than
# PyTorch (summation order), FP16 also rounds activations to 11 bits.
ENGINE_TOLERANCE_FP32 = 1e-3
ENGINE_TOLERANCE_FP16 = 2e-2


@dataclass
class ParityReport:
    """A backend vs PyTorch on the finest level. ``max_rel``: max abs error divided by the range
    (max - min) of the PyTorch logits of the same sample (element-wise relative error is
    meaningless for logits near zero). ``same_argmax``: every sample's peak cell agrees.
    ``finite``: no NaN/inf in the backend's heat maps. ``backend``: what was compared."""

    n: int
    inputs: str
    max_abs: float
    max_rel: float
    same_argmax: bool
    finite: bool = True
    backend: str = "ONNX Runtime"

    def line(self) -> str:
        finite = "" if self.finite else ", NON-FINITE values"
        return (
            f"parity {self.backend} vs PyTorch on {self.n} {self.inputs} pair(s): max abs {self.max_abs:.3g}, "
            f"max rel {self.max_rel:.3g} (of logit range), argmax {'same' if self.same_argmax else 'DIFFERS'}{finite}"
        )

    def problem(self, tolerance: float) -> Optional[str]:
        """Why this backend must not reach a vehicle, or None when it agrees within ``tolerance``."""
        if not self.finite:
            return f"{self.backend} produced NaN/inf in the heat map"
        if not self.same_argmax:
            return f"{self.backend} puts the heat-map peak elsewhere than PyTorch"
        if self.max_rel > tolerance:
            return f"{self.backend} differs from PyTorch by {self.max_rel:.3g} of the logit range (tolerance {tolerance:g})"
        return None


def compare_heatmaps(ref: np.ndarray, got: np.ndarray) -> Tuple[float, float, bool]:
    """(max abs, max abs / logit range of ``ref`` per sample, all argmax equal) for (B,...) arrays."""
    if ref.shape != got.shape:
        raise ValueError(f"heat map shapes differ: {ref.shape} vs {got.shape}")
    b = ref.shape[0]
    r, g = ref.reshape(b, -1).astype(np.float64), got.reshape(b, -1).astype(np.float64)
    err = np.abs(r - g).max(axis=1)
    span = np.maximum(r.max(axis=1) - r.min(axis=1), 1e-12)
    same = bool(np.all(r.argmax(axis=1) == g.argmax(axis=1)))
    return float(err.max()), float((err / span).max()), same


class _OnnxWrapper:
    """Builds a torch Module returning the outputs as a flat tuple in export order."""

    @staticmethod
    def wrap(model: Any) -> Any:
        from torch import nn

        class Wrapped(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, ground, aerial):
                out = self.inner(ground, aerial)
                extra = () if out.orientation is None else (out.orientation,)
                if out.ground_descriptor is not None:
                    extra = (*extra, out.ground_descriptor, out.aerial_descriptor)
                return (out.heatmaps[-1], *out.heatmaps[:-1], *extra)

        return Wrapped(model).eval()


def export_onnx(model: Any, out: str | os.PathLike, opset: int = DEFAULT_OPSET, **sidecar_extra: Any) -> Path:
    """Export ``model`` (a CrossViewModel with ``.config``) to ``out`` atomically, with the config in
    metadata_props and in ``out.json``; onnx.checker must pass."""
    import onnx
    import torch

    config = dict(model.config)
    h, w = config["ground_size"]
    s = config["aerial_size"]
    model = model.cpu().eval()
    with torch.inference_mode():
        has_ori = model(torch.zeros(1, 3, h, w), torch.zeros(1, 3, s, s)).orientation is not None
    names = output_names(config, has_ori)
    out = Path(out)
    with tempfile.TemporaryDirectory() as td, warnings.catch_warnings():
        # the legacy exporter notes that strided Slices are not constant-folded: harmless, and noisy
        warnings.filterwarnings("ignore", message="Constant folding")
        # the TorchScript exporter is chosen on purpose (fixed shapes, mature op coverage); its
        # deprecation notices are not news to the user
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        raw = Path(td) / "raw.onnx"
        torch.onnx.export(
            _OnnxWrapper.wrap(model),
            (torch.zeros(1, 3, h, w), torch.zeros(1, 3, s, s)),
            str(raw),
            input_names=[INPUT_GROUND, INPUT_AERIAL],
            output_names=names,
            opset_version=int(opset),
            dynamic_axes={n: {0: "batch"} for n in [INPUT_GROUND, INPUT_AERIAL, *names]},
            dynamo=False,
        )
        proto = onnx.load(str(raw))
    _set_output_shapes(proto, config, names)
    meta = proto.metadata_props.add()
    meta.key, meta.value = CONFIG_METADATA_KEY, json.dumps(config, sort_keys=True)
    proto.doc_string = f"xview_loc_ros cross-view localizer {config['arch']}; outputs {names}"
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    write_sidecar(out, config, outputs=names, opset=int(opset), onnx_sha256=file_sha256(out), **sidecar_extra)
    return out


def _set_output_shapes(proto: Any, config: Dict[str, Any], names: list) -> None:
    """Write the known output shapes (the exporter leaves symbolic names where the batch is dynamic)."""
    s = int(config["aerial_size"])
    levels = config["levels"]
    shapes: Dict[str, Tuple[int, ...]] = {OUTPUT_FINEST: (1, s, s), OUTPUT_ORIENTATION: (2, s, s)}
    shapes.update({n: (int(config.get("retrieval_dim") or 0),) for n in RETRIEVAL_OUTPUTS})
    shapes.update({level_output_name(i): (int(n_ori), int(c), int(c)) for i, (c, n_ori) in enumerate(levels[:-1])})
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for d, value in zip(dims[1:], shapes[out.name]):
            d.ClearField("dim_param")
            d.dim_value = value


def parity_inputs(
    config: Dict[str, Any], data: Optional[str] = None, n: int = 2, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray, str]:
    """(ground, aerial, description) batches of ``n`` prepared pairs: from the data set ``data``
    when given, else (with a note) random normal inputs."""
    if data is not None:
        ds = PairDataset(data)
        preprocess.check_pair_config(config, ds.meta)
        recs = list(ds.split(None))[:n]
        if not recs:
            raise ValueError(f"{data}: data set has no pairs")
        g = np.stack([preprocess.prepare_ground(ds.load_ground(r), r.heading_deg, config) for r in recs])
        a = np.stack([preprocess.prepare_aerial(ds.load_aerial(r), config) for r in recs])
        return g, a, f"data-set ({data})"
    log.warning(
        "no data set given (--data): parity is checked on random normalised inputs; "
        "pass --data to check it on real pairs"
    )
    rng = np.random.default_rng(seed)
    h, w = config["ground_size"]
    s = config["aerial_size"]
    return (
        rng.standard_normal((n, 3, h, w)).astype(np.float32),
        rng.standard_normal((n, 3, s, s)).astype(np.float32),
        "random",
    )


def check_parity(
    model: Any,
    onnx_path: str | os.PathLike,
    ground: np.ndarray,
    aerial: np.ndarray,
    inputs: str,
    threads: Optional[int] = None,
) -> ParityReport:
    """Run the same batch through PyTorch (fp32, CPU) and ONNX Runtime (CPU) and compare."""
    return check_backend_parity(model, OrtBackend(onnx_path, device="cpu", threads=threads), ground, aerial, inputs)


def reference_heatmaps(model: Any, ground: np.ndarray, aerial: np.ndarray) -> np.ndarray:
    """PyTorch's finest-level logits (fp32, CPU) for the batch: the reference of every parity check."""
    import torch

    with torch.inference_mode():
        return model.cpu().eval()(torch.from_numpy(ground), torch.from_numpy(aerial)).heatmaps[-1].numpy()


def check_backend_parity(
    model: Any, backend: Backend, ground: np.ndarray, aerial: np.ndarray, inputs: str, label: Optional[str] = None
) -> ParityReport:
    """Compare ``backend`` with PyTorch on the batch, one pair at a time (an engine's max batch may
    be 1). Non-finite outputs are reported as such (and as infinite errors)."""
    ref = reference_heatmaps(model, ground, aerial)
    got = np.concatenate([backend.infer(ground[i : i + 1], aerial[i : i + 1]) for i in range(len(ground))])
    finite = bool(np.isfinite(got).all())
    if finite:
        max_abs, max_rel, same = compare_heatmaps(ref, got)
    else:
        max_abs, max_rel, same = float("inf"), float("inf"), False
    name = label or {"onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT"}.get(backend.name, backend.name)
    return ParityReport(len(ground), inputs, max_abs, max_rel, same, finite, name)
