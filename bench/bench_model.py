# SPDX-License-Identifier: Apache-2.0
"""Model benchmark (issue 4): small-model throughput, CCVPE full-size inference latency, and the
cross-area drop of a small teacher (trained on one synthetic style, tested on the same style and on
another). Prints one JSON document; `--out FILE` also writes it.

    .venv/bin/python bench/bench_model.py --work /tmp/bench_model [--parts throughput,ccvpe,teacher]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Dict

import torch


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{name}; torch {torch.__version__}; {torch.get_num_threads()} threads; {gpu}"


def throughput_small(device: torch.device, batch: int = 16, steps: int = 10) -> Dict[str, Any]:
    """Training and inference pairs/s of `small` (128^2 aerial, 64x256 panorama) on random tensors."""
    from offline_adapt.train.losses import ccvpe_total_loss
    from offline_adapt.train.targets import gaussian_map
    from xview_loc_ros.models import build_model

    res: Dict[str, Any] = {}
    for known in (True, False):
        torch.manual_seed(0)
        model = build_model("small", known_orientation=known).to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        g, a = torch.randn(batch, 3, 64, 256, device=device), torch.randn(batch, 3, 128, 128, device=device)
        fine = gaussian_map(128, torch.rand(batch, 2) * 128).to(device)
        heading = torch.rand(batch, device=device) * 360
        times = []
        for i in range(steps + 2):
            t0 = time.perf_counter()
            out = model(g, a)
            loss, _ = ccvpe_total_loss(out, fine, model.config["levels"], heading)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        model.eval()
        inf = []
        with torch.inference_mode():
            for i in range(steps + 2):
                t0 = time.perf_counter()
                model(g, a)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 2:
                    inf.append(time.perf_counter() - t0)
            one = []
            for i in range(steps + 2):
                t0 = time.perf_counter()
                model(g[:1], a[:1])
                if i >= 2:
                    one.append(time.perf_counter() - t0)
        key = "known_orientation" if known else "unknown_orientation"
        res[key] = {
            "train_pairs_per_s": batch / statistics.median(times),
            "infer_pairs_per_s": batch / statistics.median(inf),
            "infer_latency_b1_ms": 1000 * statistics.median(one),
            "batch": batch,
        }
    return res


def ccvpe_latency(device: torch.device, runs: int = 5) -> Dict[str, Any]:
    """Batch-1 inference latency of the full-size CCVPE models (random weights, eval, inference_mode)."""
    from xview_loc_ros.models import build_model

    res = {}
    for arch, gsize in (("ccvpe-vigor", (320, 640)), ("ccvpe-kitti", (256, 1024))):
        model = build_model(arch).to(device).eval()
        g, a = torch.randn(1, 3, *gsize, device=device), torch.randn(1, 3, 512, 512, device=device)
        ts = []
        with torch.inference_mode():
            for i in range(runs + 1):
                t0 = time.perf_counter()
                model(g, a)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    ts.append(time.perf_counter() - t0)
        res[arch] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "runs": runs}
        del model
    return res


def teacher_cross_area(
    work: Path, n_pairs: int, epochs: int, styles: tuple, seed: int, city_m: float, threads: int
) -> Dict[str, Any]:
    """Train `small` on style A pairs (train split, val for selection) and evaluate on A's and B's test splits."""
    from offline_adapt.cli import main as adapt
    from xview_testbed.synth import make_city, make_pairs

    sets = {}
    for k, style in enumerate(styles):
        city = work / f"city_{style}"
        if not city.exists():
            make_city(style, seed + k, city, size_m=city_m)
        data = work / f"pairs_{style}"
        if not data.exists():
            make_pairs(city, data, n_pairs, seed + k, preset="small", ground="panorama", workers=threads)
        sets[style] = data
    src, tgt = styles
    run = work / f"teacher_{src}"
    t0 = time.perf_counter()
    rc = adapt(
        [
            "train",
            "--data",
            str(sets[src]),
            "--config",
            "small",
            "--out",
            str(run),
            "--epochs",
            str(epochs),
            "--batch",
            "16",
            "--lr",
            "1e-3",
            "--seed",
            str(seed),
            "--resume",
            "--threads",
            str(threads),
        ]
    )
    train_s = time.perf_counter() - t0
    if rc:
        raise RuntimeError(f"training failed with exit code {rc}")
    out: Dict[str, Any] = {
        "train_seconds": train_s,
        "epochs": epochs,
        "pairs_per_style": n_pairs,
        "city_m": city_m,
        "lr": 1e-3,
        "batch": 16,
    }
    for name, style in (("same_area", src), ("cross_area", tgt)):
        ev = work / f"eval_{src}_on_{style}"
        rc = adapt(
            [
                "evaluate",
                "--model",
                str(run / "best.pt"),
                "--data",
                str(sets[style]),
                "--split",
                "test",
                "--out",
                str(ev),
                "--threads",
                str(threads),
            ]
        )
        if rc:
            raise RuntimeError(f"evaluation failed with exit code {rc}")
        m = json.loads((ev / "metrics.json").read_text())
        out[name] = {
            k: m[k] for k in ("count", "mean_m", "median_m", "mean_m_argmax", "median_m_argmax", "prior_mean_m")
        }
        out[name]["style"] = style
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/bench_model", help="scratch folder (cities, pairs, runs)")
    ap.add_argument("--parts", default="throughput,ccvpe,teacher")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=400, help="pairs per style (70/10/20 split by the generator)")
    ap.add_argument("--city-m", type=float, default=400.0, help="side of each synthetic city in metres")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--styles", default="downtown,suburb", help="source,target styles")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    res: Dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": str(device),
    }
    if "throughput" in parts:
        res["small_throughput"] = throughput_small(device)
    if "ccvpe" in parts:
        res["ccvpe_latency"] = ccvpe_latency(device)
    if "teacher" in parts:
        res["teacher"] = teacher_cross_area(
            work, args.pairs, args.epochs, tuple(args.styles.split(",")), args.seed, args.city_m, args.threads
        )
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
