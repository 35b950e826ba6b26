# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt export`: checkpoint -> ONNX (parity-checked) -> TensorRT engine."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from offline_adapt.export.onnx_export import (
    DEFAULT_OPSET,
    ENGINE_TOLERANCE_FP16,
    ENGINE_TOLERANCE_FP32,
    check_backend_parity,
    check_parity,
    export_onnx,
    parity_inputs,
)
from xview_loc_ros.cli import non_negative_float, positive_int
from xview_loc_ros.fsutil import atomic_write_json, file_sha256
from xview_loc_ros.inference.base import ModelFileError
from xview_loc_ros.inference.modelfile import read_sidecar, sidecar_path
from xview_loc_ros.inference.select import backend_availability
from xview_loc_ros.inference.trt_backend import TensorRTBackend, build_engine, device_index


def _handler(args: argparse.Namespace) -> int:
    from xview_loc_ros.models import CheckpointError, load_checkpoint

    if args.engine:  # refuse before spending minutes on the export
        device_index(args.device)  # a bad --device fails now, not after the export
        why_not = backend_availability()["tensorrt"]
        if why_not is not None:
            raise RuntimeError(f"--engine needs TensorRT and a CUDA GPU: {why_not}")
    try:
        model, _ = load_checkpoint(args.model)
    except CheckpointError as e:  # torch's load errors span lines; the CLI prints one
        raise ModelFileError(str(e).splitlines()[0]) from e
    g, a, desc = parity_inputs(model.config, args.data, args.parity_pairs)  # before exporting: fail fast
    onnx_path = export_onnx(
        model, args.onnx, args.opset, source_checkpoint=str(args.model), source_sha256=file_sha256(args.model)
    )
    print(f"wrote {onnx_path} (+ {onnx_path.name}.json): {model.config['arch']}, opset {args.opset}")
    report = check_parity(model, onnx_path, g, a, desc)
    print(report.line())
    side = read_sidecar(onnx_path) or {}
    atomic_write_json(sidecar_path(onnx_path), dict(side, parity=asdict(report)))
    if report.problem(args.tolerance) is not None:
        # a model that disagrees with its checkpoint must not reach a vehicle: remove it
        onnx_path.unlink()
        sidecar_path(onnx_path).unlink()
        print(
            f"xview-adapt: error: ONNX output differs from PyTorch beyond tolerance {args.tolerance:g} "
            f"(relative to the logit range) or in argmax; {onnx_path} removed",
            file=sys.stderr,
        )
        return 1
    if args.engine:
        device = device_index(args.device)
        engine = build_engine(onnx_path, args.engine, fp16=args.fp16, max_batch=args.max_batch, device=device)
        print(f"wrote {engine} (+ {engine.name}.json), {'fp16' if args.fp16 else 'fp32'}, max batch {args.max_batch}")
        # the engine, not only the ONNX, must agree with PyTorch on the same pairs: FP16 can turn
        # the heat map into NaN/inf or move its peak
        engine_report = check_backend_parity(model, TensorRTBackend(engine, args.device), g, a, desc)
        print(engine_report.line())
        tolerance = args.engine_tolerance
        if tolerance is None:
            tolerance = ENGINE_TOLERANCE_FP16 if args.fp16 else ENGINE_TOLERANCE_FP32
        problem = engine_report.problem(tolerance)
        if problem is not None:
            engine.unlink()
            sidecar_path(engine).unlink()
            print(f"xview-adapt: error: {problem}; {engine} removed (the ONNX is kept)", file=sys.stderr)
            return 1
        atomic_write_json(sidecar_path(engine), dict(read_sidecar(engine), parity=asdict(engine_report)))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (and a TensorRT engine)",
        description="Export a checkpoint to ONNX with fixed input sizes from its config (inputs 'ground' (B,3,H,W) and "
        "'aerial' (B,3,S,S), normalised NCHW float32; first output 'heatmap' = finest-level logits "
        "(B,1,S,S) over aerial-patch pixels). The config (sizes in px, m/px, mean/std, camera type, FOV) "
        "is embedded in the ONNX metadata and written to OUT.onnx.json. Parity against PyTorch is "
        "checked and printed. With --engine, also build a TensorRT engine (needs TensorRT and a GPU) and check "
        "it against PyTorch on the same pairs (removed when non-finite, off-peak or beyond --engine-tolerance).",
    )
    p.add_argument("--model", required=True, help="checkpoint (.pt) to export")
    p.add_argument("--onnx", required=True, help="output ONNX file (OUT.onnx; sidecar OUT.onnx.json)")
    p.add_argument("--engine", help="also build a TensorRT engine here (OUT.plan; sidecar OUT.plan.json)")
    p.add_argument("--fp16", action="store_true", help="build the TensorRT engine with FP16 kernels allowed")
    p.add_argument(
        "--max-batch", type=positive_int, default=1, help="largest batch the TensorRT engine accepts (default 1)"
    )
    p.add_argument(
        "--engine-tolerance",
        type=non_negative_float,
        default=None,
        help="max engine-vs-PyTorch error, relative to the finest logits' range "
        f"(default {ENGINE_TOLERANCE_FP32:g} fp32, {ENGINE_TOLERANCE_FP16:g} fp16); a non-finite heat map or "
        "another peak always fails",
    )
    p.add_argument("--device", default="cuda", help="CUDA device that builds and checks the engine (cuda or cuda:N)")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--data", help="pair data set whose first pairs feed the parity check (default: synthetic pairs)")
    p.add_argument("--parity-pairs", type=positive_int, default=2, help="pairs in the parity check (default 2)")
    p.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=1e-4,
        help="max parity error, relative to the finest logits' range (default 1e-4)",
    )
    p.set_defaults(func=_handler)
