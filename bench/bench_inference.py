# SPDX-License-Identifier: Apache-2.0
"""Inference latency per backend (issue 7): median of many batch-1 runs after warm-up.

CPU (default): each model config on torch eager and ONNX Runtime, both limited to --threads
threads, taking turns in blocks of runs in one process so that machine load hits both alike; the
ratio is taken from that one run. GPU (--device cuda): torch fp32, fp16 autocast, CUDA graphs
(fp16), and TensorRT fp32/fp16 where TensorRT imports. Latency is inference only: normalised
input arrays in, float32 finest-level logits out (host->device and device->host copies included).

Usage: python bench/bench_inference.py [--models small ccvpe-vigor] [--runs 100] [--threads 2]
       [--device cpu|cuda] [--record bench/RESULTS.md] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402

SECTION = "## Inference backends (issue 7)"
INTRO = (
    "Batch 1, median of many runs after warm-up; backends take turns in blocks of 10 runs in one process. "
    "Inference only: normalised arrays in, finest-level logits out (host/device copies included). "
    "Weights are random (latency does not depend on them). Produced by `bench/bench_inference.py`."
)


def prepare(spec: str, folder: Path) -> Tuple[Path, Path]:
    """Random-initialised checkpoint and its ONNX export (latency does not depend on the weights).
    ``spec``: a config name, optionally with integer overrides, e.g. ``small:width=2``."""
    import torch

    from offline_adapt.export.onnx_export import export_onnx
    from xview_loc_ros.models import build_model, save_checkpoint

    arch, _, rest = spec.partition(":")
    overrides = {k: int(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv)}
    torch.manual_seed(0)
    model = build_model(arch, **overrides)
    name = spec.replace(":", "_").replace("=", "").replace(",", "_")
    ckpt, onnx_path = folder / f"{name}.pt", folder / f"{name}.onnx"
    save_checkpoint(ckpt, model)
    export_onnx(model, onnx_path)
    return ckpt, onnx_path


def variants(ckpt: Path, onnx_path: Path, device: str, threads: int, cache: Path) -> Dict[str, dict]:
    """label -> open_backend keyword arguments."""
    from xview_loc_ros.inference import backend_availability

    if device == "cpu":
        return {
            "torch fp32": dict(model_path=ckpt, backend="torch", device="cpu", threads=threads),
            "onnxruntime fp32": dict(model_path=onnx_path, backend="onnxruntime", device="cpu", threads=threads),
        }
    out = {
        "torch fp32": dict(model_path=ckpt, backend="torch", device=device),
        "torch fp16": dict(model_path=ckpt, backend="torch", device=device, fp16=True),
        "torch fp16 + CUDA graphs": dict(model_path=ckpt, backend="torch", device=device, fp16=True, cuda_graphs=True),
    }
    if backend_availability()["tensorrt"] is None:
        for prec in ("fp32", "fp16"):
            out[f"tensorrt {prec}"] = dict(
                model_path=onnx_path, backend="tensorrt", device=device, fp16=prec == "fp16", cache_dir=cache
            )
    return out


def measure(
    backends: Dict[str, object], runs: int, warmup: int, budget_s: float, block: int = 10
) -> Tuple[Dict[str, float], int]:
    """(median milliseconds per backend, runs each): at most ``runs`` runs, fewer when the slowest
    backend would exceed ``budget_s`` seconds in all (at least ``block``). Backends take turns in blocks of ``block`` runs: single
    runs alternating would make each backend's thread pool (which spins after a run) compete with
    the next backend's on the same cores, which measures neither."""
    from xview_loc_ros.inference import input_shapes

    first = next(iter(backends.values()))
    g_shape, a_shape = input_shapes(first.config)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((1, *g_shape)).astype(np.float32)
    a = rng.standard_normal((1, *a_shape)).astype(np.float32)
    slowest = max(b.warmup(warmup) for b in backends.values())
    runs = max(block, min(runs, int(budget_s / (len(backends) * slowest))))
    times: Dict[str, List[float]] = {k: [] for k in backends}
    while min(len(v) for v in times.values()) < runs:
        for label, b in backends.items():
            b.infer(g, a)  # first run of a block: the other backend's threads may still spin
            for _ in range(block):
                t0 = time.perf_counter()
                b.infer(g, a)
                times[label].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in times.items()}, min(len(v) for v in times.values())


def profile_torch(ckpt: Path, threads: int, top: int = 12) -> str:
    """torch.profiler table of the eager model's operators (CPU self time)."""
    import torch

    from xview_loc_ros.inference import open_backend

    b = open_backend(ckpt, "torch", device="cpu", threads=threads)
    h, w = b.config["ground_size"]
    s = b.config["aerial_size"]
    g, a = torch.randn(1, 3, h, w), torch.randn(1, 3, s, s)
    with torch.inference_mode():
        for _ in range(5):
            b.model(g, a)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                b.model(g, a)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def library_versions() -> List[str]:
    import onnxruntime
    import torch

    return [f"torch {torch.__version__}", f"onnxruntime {onnxruntime.__version__}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", nargs="+", default=["small", "ccvpe-vigor"], help="configs, e.g. small small:width=2 ccvpe-vigor"
    )
    ap.add_argument("--runs", type=int, default=100, help="timed runs per backend (default 100)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument(
        "--budget-s",
        type=float,
        default=120.0,
        help="seconds of timed runs per model at most (fewer runs for slow models; default 120)",
    )
    ap.add_argument("--threads", type=int, default=2, help="CPU intra-op threads for torch and ONNX Runtime")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda[:N] for the GPU rows")
    ap.add_argument("--record", type=Path, help="write the table into this RESULTS.md section")
    ap.add_argument("--note", help="a paragraph recorded under the table (observations)")
    ap.add_argument("--profile", action="store_true", help="print the eager torch operator profile of each model")
    args = ap.parse_args()

    from xview_loc_ros.inference import open_backend

    rows = []
    with tempfile.TemporaryDirectory() as td:
        for arch in args.models:
            folder = Path(td) / arch
            folder.mkdir()
            ckpt, onnx_path = prepare(arch, folder)
            backends = {
                label: open_backend(**kw)
                for label, kw in variants(ckpt, onnx_path, args.device, args.threads, folder / "engines").items()
            }
            med, n = measure(backends, args.runs, args.warmup, args.budget_s)
            base = med["torch fp32"]
            for label, ms in med.items():
                rows.append((arch, label, n, ms, 1000.0 / ms, base / ms))
                print(
                    f"{arch:12s} {label:26s} {ms:9.2f} ms  {1000.0 / ms:7.1f} Hz  x{base / ms:.2f} vs torch fp32",
                    flush=True,
                )
            print("   ", "\n    ".join(b.describe() for b in backends.values()))
            if args.profile:
                print(profile_torch(ckpt, args.threads))
            del backends
    cmd = "python bench/bench_inference.py " + " ".join(sys.argv[1:])
    sub = "### CPU" if args.device == "cpu" else "### GPU"
    dev = f"{args.threads} threads each for torch and ONNX Runtime" if args.device == "cpu" else args.device
    table = "\n".join(f"| {a} | {lab} | {n} | {ms:.2f} | {hz:.1f} | {r:.2f} |" for a, lab, n, ms, hz, r in rows)
    body = (
        f"{dev}; up to {args.runs} runs after {args.warmup} warm-up runs.\n\n"
        "| model | backend | runs | median (ms) | rate (Hz) | speed-up vs torch fp32 |\n|---|---|---|---|---|---|\n"
        f"{table}\n"
    )
    if args.note:
        body += f"\n{args.note}\n"
    print(body)
    if args.record:
        results.record(
            SECTION, body, command=cmd, subsection=sub, intro=INTRO, machine_extra=library_versions(), path=args.record
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
