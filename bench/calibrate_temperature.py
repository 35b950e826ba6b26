# SPDX-License-Identifier: Apache-2.0
"""Calibrate the drive filter's ``heatmap_temperature`` on held-out pairs (issue 16).

The filter multiplies its belief by the model's position probabilities raised to one exponent tau,
floored at ``filter_heatmap_floor`` x the peak (xview_loc_ros.drive_filter). A heat map trained with
sharp Gaussian targets is over-confident: tau < 1 widens it. This picks the tau that maximises the mean
log-likelihood of the TRUE position under the tempered, floored, renormalised heat map (a proper
scoring rule: the best tau makes the heat map's spread match its errors), over a grid of exponents.

    xview-loc synth city --style suburb --seed 7 --size-m 400 --res-m 0.25 --zooms 18-19 --out city_val
    xview-loc synth pairs --city city_val --n 100 --seed 7 --like-drive --out pairs_val
    .venv/bin/python bench/calibrate_temperature.py --model models/teacher.pt \\
        --pairs pairs_val --split all [--out cal.json]

``--split all`` uses every pair of a city the model never saw (a held-out city); a training data set's
``val`` split works too. Prints one JSON document (per-tau mean log-likelihood in log(1/m^2), the best
tau, and the untempered model's localisation errors for context).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from xview_loc_ros.heatmap import softmax_all

DEFAULT_TEMPS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5)


def tempered_loglik(prob: np.ndarray, gt_px: Sequence[float], temperature: float, floor: float, cell_m: float) -> float:
    """log density (1/m^2) of the true position ``gt_px`` (patch pixels u, v; heat-map cells of
    ``cell_m`` metres) under the heat map ``prob`` raised to ``temperature``, floored at ``floor`` x its
    peak and renormalised, as the filter uses it (nearest cell: the filter's grid has the same cells)."""
    p = np.asarray(prob, dtype=np.float64)
    lik = np.maximum((p / p.max()) ** temperature, floor)
    s = p.shape[0]
    j = int(np.clip(math.floor(gt_px[0]), 0, s - 1))
    i = int(np.clip(math.floor(gt_px[1]), 0, s - 1))
    return float(math.log(lik[i, j] / lik.sum()) - 2.0 * math.log(cell_m))


def heatmaps(model: str, pairs: str, split: Optional[str], n: int, threads: int = 1) -> List[Dict[str, Any]]:
    """The model's finest position probabilities (S, S) and the true pixel of up to ``n`` pairs."""
    from offline_adapt.data.torch_data import open_split
    from offline_adapt.evaluation.evaluate import backend_runner
    from xview_loc_ros.inference import open_backend

    be = open_backend(model, backend="torch", device="cpu", threads=threads)
    tds = open_split(pairs, split, be.config)
    run = backend_runner(be)
    size = int(be.config["aerial_size"])
    out = []
    for start in range(0, min(n, len(tds)), 8):
        items = [tds[i] for i in range(start, min(start + 8, n, len(tds)))]
        logits, _ = run(
            np.stack([it["ground"].numpy() for it in items]), np.stack([it["aerial"].numpy() for it in items])
        )
        for b, it in enumerate(items):
            rec = tds.records[it["index"]]
            prob = softmax_all(np.asarray(logits[b])).sum(axis=0)
            scale = prob.shape[0] / size  # heat-map cells per patch pixel
            gu, gv = rec.gt_pixel()
            k = int(np.argmax(prob))
            mode = ((k % prob.shape[1] + 0.5) / scale, (k // prob.shape[1] + 0.5) / scale)
            out.append(
                {
                    "prob": prob,
                    "gt": (gu * scale, gv * scale),
                    "cell_m": rec.georef.mpp / scale,
                    "err_m": math.hypot(mode[0] - gu, mode[1] - gv) * rec.georef.mpp,
                }
            )
    return out


def calibrate(maps: List[Dict[str, Any]], temps: Sequence[float], floor: float) -> Dict[str, Any]:
    """Mean log-likelihood of the truth per temperature; the best temperature."""
    ll = {
        float(t): float(np.mean([tempered_loglik(m["prob"], m["gt"], t, floor, m["cell_m"]) for m in maps]))
        for t in temps
    }
    best = max(ll, key=lambda t: ll[t])
    errs = np.array([m["err_m"] for m in maps])
    return {
        "pairs": len(maps),
        "floor": floor,
        "mean_loglik_per_temperature": ll,
        "best_temperature": best,
        "argmax_error_m": {
            "median": float(np.median(errs)),
            "mean": float(errs.mean()),
            "p90": float(np.percentile(errs, 90)),
        },
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint / ONNX of the model the node runs")
    ap.add_argument("--pairs", required=True, help="pair data set (xview-loc synth pairs, or extracted)")
    ap.add_argument("--split", default="val", help="split to use, or 'all' (default val)")
    ap.add_argument("--n", type=int, default=100, help="at most this many pairs (default 100)")
    ap.add_argument("--temps", default=",".join(str(t) for t in DEFAULT_TEMPS), help="comma-separated exponents")
    ap.add_argument("--floor", type=float, default=1e-3, help="filter_heatmap_floor of the node (default 0.001)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    maps = heatmaps(args.model, args.pairs, None if args.split == "all" else args.split, args.n, args.threads)
    res = calibrate(maps, [float(t) for t in args.temps.split(",")], args.floor)
    res.update(model=args.model, pairs_dir=args.pairs, split=args.split, seconds=time.perf_counter() - t0)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
