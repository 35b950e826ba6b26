# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt evaluate`: a model's localization error on a pair data set."""

from __future__ import annotations

import argparse

from offline_adapt.evaluation.evaluate import evaluate
from xview_loc_ros.cli import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="localization error of a model on a pair data set (metres)",
        description="Evaluate a model (checkpoint .pt or exported .onnx) on a pair data set. Writes "
        "OUT/metrics.json (mean_m/median_m: error in metres of the sub-pixel heat-map peak; *_argmax: "
        "integer argmax as in CCVPE; prior_mean_m: error of the patch centre = the coarse fix; pinhole "
        "longitudinal/lateral metres; orientation error in degrees when the model predicts it), "
        "OUT/predictions.jsonl, OUT/cdf.png (error CDF) and OUT/grid.png (ground / aerial + heat map, "
        "true = green circle, predicted = red cross).",
    )
    p.add_argument("--model", required=True, help="checkpoint (.pt) or ONNX model")
    p.add_argument("--data", required=True, help="pair data set folder")
    p.add_argument("--split", default="test", help="train|val|test|all (default test)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime", "tensorrt"],
        help="auto (default): the backend for the model file (torch for a checkpoint; TensorRT when usable, "
        "else ONNX Runtime, for an ONNX file)",
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: best available)")
    p.add_argument("--batch", type=positive_int, default=8, help="pairs per forward pass")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads")
    p.add_argument("--grid", type=non_negative_int, default=12, help="pairs shown in grid.png")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    m = evaluate(
        args.model,
        args.data,
        args.out,
        None if args.split == "all" else args.split,
        args.backend,
        args.batch,
        args.device,
        args.grid,
        args.threads,
    )
    keys = ("count", "mean_m", "median_m", "prior_mean_m", "mean_ori_err_deg", "mean_longitudinal_m", "mean_lateral_m")
    print(" ".join(f"{k}={m[k]:.3f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys if k in m))
    return 0
