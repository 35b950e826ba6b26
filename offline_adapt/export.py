"""`xview-adapt export`: checkpoint -> ONNX (config embedded + sidecar, parity-checked) [-> TensorRT engine].

The ONNX has fixed per-sample sizes from the checkpoint config and a symbolic batch dimension;
inputs ``ground`` (B,3,H,W) and ``aerial`` (B,3,S,S) are normalised NCHW float32; the first output
``heatmap`` is the finest level's logits (B,1,S,S), followed by the coarser levels
(``heatmap_level{i}``, coarse first) and ``orientation`` when the model predicts it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from xview_loc_ros.fsutil import atomic_path, atomic_write_json
from xview_loc_ros.inference.base import (INPUT_AERIAL, INPUT_GROUND, OUTPUT_FINEST, OUTPUT_ORIENTATION,
                                          level_output_name, output_names)
from xview_loc_ros.fsutil import file_sha256
from xview_loc_ros.inference.modelfile import CONFIG_METADATA_KEY, read_sidecar, sidecar_path, write_sidecar

log = logging.getLogger(__name__)
DEFAULT_OPSET = 17


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on the finest level. ``max_rel``: max abs error divided by the range
    (max - min) of the PyTorch logits of the same sample (element-wise relative error is
    meaningless for logits near zero). ``same_argmax``: every sample's peak cell agrees."""

    n: int
    inputs: str
    max_abs: float
    max_rel: float
    same_argmax: bool

    def line(self) -> str:
        return (f"parity ONNX Runtime vs PyTorch on {self.n} {self.inputs} pair(s): max abs {self.max_abs:.3g}, "
                f"max rel {self.max_rel:.3g} (of logit range), argmax {'same' if self.same_argmax else 'DIFFERS'}")


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
            _OnnxWrapper.wrap(model), (torch.zeros(1, 3, h, w), torch.zeros(1, 3, s, s)), str(raw),
            input_names=[INPUT_GROUND, INPUT_AERIAL], output_names=names, opset_version=int(opset),
            dynamic_axes={n: {0: "batch"} for n in [INPUT_GROUND, INPUT_AERIAL, *names]}, dynamo=False)
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
    shapes = {OUTPUT_FINEST: (1, s, s), OUTPUT_ORIENTATION: (2, s, s)}
    shapes.update({level_output_name(i): (int(n_ori), int(c), int(c)) for i, (c, n_ori) in enumerate(levels[:-1])})
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for d, value in zip(dims[1:], shapes[out.name]):
            d.ClearField("dim_param")
            d.dim_value = value


def parity_inputs(config: Dict[str, Any], data: Optional[str] = None, n: int = 2,
                  seed: int = 0) -> Tuple[np.ndarray, np.ndarray, str]:
    """(ground, aerial, description) batches of ``n`` prepared pairs: from the data set ``data``
    when given, else rendered by the synthetic test bed, else (with a note) random normal inputs."""
    from xview_loc_ros import preprocess

    if data is not None:
        from xview_loc_ros.dataset import PairDataset

        ds = PairDataset(data)
        preprocess.check_pair_config(config, ds.meta)
        recs = list(ds.split(None))[:n]
        if not recs:
            raise ValueError(f"{data}: data set has no pairs")
        g = np.stack([preprocess.prepare_ground(ds.load_ground(r), r.heading_deg, config) for r in recs])
        a = np.stack([preprocess.prepare_aerial(ds.load_aerial(r), config) for r in recs])
        return g, a, f"data-set ({data})"
    synth = _synth_inputs(config, n, seed)
    if synth is not None:
        return synth
    log.warning("no data set given (--data) and the synthetic test bed cannot render these inputs: "
                "parity is checked on random normalised inputs")
    rng = np.random.default_rng(seed)
    h, w = config["ground_size"]
    s = config["aerial_size"]
    return (rng.standard_normal((n, 3, h, w)).astype(np.float32),
            rng.standard_normal((n, 3, s, s)).astype(np.float32), "random")


def _synth_inputs(config: Dict[str, Any], n: int, seed: int) -> Optional[Tuple[np.ndarray, np.ndarray, str]]:
    """Pairs rendered by xview_loc_ros.synth at the model's geometry, or None if it is unavailable."""
    try:
        from xview_loc_ros import synth
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as td:
        try:
            city = synth.make_city("suburb", seed, Path(td) / "city", size_m=400.0)
            preset = "small" if config["arch"] == "small" else config["arch"]
            ds = synth.make_pairs(city, Path(td) / "pairs", n, seed, preset=preset, ground=config["ground_type"])
        except Exception as e:  # the test bed is optional here; say why and fall back
            log.warning("synthetic test bed could not render parity pairs (%s: %s)", type(e).__name__, e)
            return None
        try:
            g, a, _ = parity_inputs(config, str(ds), n, seed)
        except ValueError as e:
            log.warning("synthetic pairs do not fit the model (%s)", e)
            return None
    return g, a, "synthetic"


def check_parity(model: Any, onnx_path: str | os.PathLike, ground: np.ndarray, aerial: np.ndarray,
                 inputs: str, threads: Optional[int] = None) -> ParityReport:
    """Run the same batch through PyTorch (fp32, CPU) and ONNX Runtime (CPU) and compare."""
    import torch

    from xview_loc_ros.inference.ort_backend import OrtBackend

    with torch.inference_mode():
        ref = model.cpu().eval()(torch.from_numpy(ground), torch.from_numpy(aerial)).heatmaps[-1].numpy()
    got = OrtBackend(onnx_path, device="cpu", threads=threads).infer(ground, aerial)
    max_abs, max_rel, same = compare_heatmaps(ref, got)
    return ParityReport(len(ground), inputs, max_abs, max_rel, same)


def _handler(args: argparse.Namespace) -> int:
    from xview_loc_ros.inference.base import ModelFileError
    from xview_loc_ros.inference.select import backend_availability
    from xview_loc_ros.models import CheckpointError, load_checkpoint

    if args.engine:  # refuse before spending minutes on the export
        why_not = backend_availability()["tensorrt"]
        if why_not is not None:
            raise RuntimeError(f"--engine needs TensorRT and a CUDA GPU: {why_not}")
    try:
        model, _ = load_checkpoint(args.model)
    except CheckpointError as e:  # torch's load errors span lines; the CLI prints one
        raise ModelFileError(str(e).splitlines()[0]) from e
    g, a, desc = parity_inputs(model.config, args.data, args.parity_pairs)  # before exporting: fail fast
    onnx_path = export_onnx(model, args.onnx, args.opset, source_checkpoint=str(args.model),
                            source_sha256=file_sha256(args.model))
    print(f"wrote {onnx_path} (+ {onnx_path.name}.json): {model.config['arch']}, opset {args.opset}")
    report = check_parity(model, onnx_path, g, a, desc)
    print(report.line())
    side = read_sidecar(onnx_path)
    atomic_write_json(sidecar_path(onnx_path), dict(side, parity=asdict(report)))
    if not report.same_argmax or report.max_rel > args.tolerance:
        # a model that disagrees with its checkpoint must not reach a vehicle: remove it
        onnx_path.unlink()
        sidecar_path(onnx_path).unlink()
        print(f"xview-adapt: error: ONNX output differs from PyTorch beyond tolerance {args.tolerance:g} "
              f"(relative to the logit range) or in argmax; {onnx_path} removed", file=sys.stderr)
        return 1
    if args.engine:
        from xview_loc_ros.inference.trt_backend import build_engine

        engine = build_engine(onnx_path, args.engine, fp16=args.fp16, max_batch=args.max_batch)
        print(f"wrote {engine} (+ {engine.name}.json), {'fp16' if args.fp16 else 'fp32'}, max batch {args.max_batch}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX (and a TensorRT engine)",
        description="Export a checkpoint to ONNX with fixed input sizes from its config (inputs 'ground' (B,3,H,W) and "
                    "'aerial' (B,3,S,S), normalised NCHW float32; first output 'heatmap' = finest-level logits "
                    "(B,1,S,S) over aerial-patch pixels). The config (sizes in px, m/px, mean/std, camera type, FOV) "
                    "is embedded in the ONNX metadata and written to OUT.onnx.json. Parity against PyTorch is "
                    "checked and printed. With --engine, also build a TensorRT engine (needs TensorRT and a GPU).")
    p.add_argument("--model", required=True, help="checkpoint (.pt) to export")
    p.add_argument("--onnx", required=True, help="output ONNX file (OUT.onnx; sidecar OUT.onnx.json)")
    p.add_argument("--engine", help="also build a TensorRT engine here (OUT.plan; sidecar OUT.plan.json)")
    p.add_argument("--fp16", action="store_true", help="build the TensorRT engine with FP16 kernels allowed")
    p.add_argument("--max-batch", type=int, default=1, help="largest batch the TensorRT engine accepts (default 1)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--data", help="pair data set whose first pairs feed the parity check (default: synthetic pairs)")
    p.add_argument("--parity-pairs", type=int, default=2, help="pairs in the parity check (default 2)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max parity error, relative to the finest logits' range (default 1e-4)")
    p.set_defaults(func=_handler)
