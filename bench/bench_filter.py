# SPDX-License-Identifier: Apache-2.0
"""Drive filter benchmark (issue 16). Prints one JSON document; ``--out FILE`` also writes it.

``--parts update``: the cost of one filter step (predict + GNSS + heat map, the small model's 128 x 128
heat map at 0.5 m) on several grids, median and p95 over ``--steps`` steps of a synthetic drive, and of
a particle filter with the same measurement models at the particle counts a multi-modal belief of the
same resolution would need (for the grid-vs-particles choice).

``--parts replay``: a bag played through the node (``xview-loc replay``, lock-step) with ``fusion:
filter``; the replay records the filtered pose (``~/pose``) and the per-frame one (``~/frame_pose``, what
``fusion: frame`` publishes on ``~/pose``), so one run compares filter, frame and GNSS errors (mean,
median, p95, % > 5 m, % > 10 m). Without ``--bag`` a synthetic drive is made (``--style``, ``--frames``).

    .venv/bin/python bench/bench_filter.py --parts update
    .venv/bin/python bench/bench_filter.py --parts replay --model models/teacher.pt \\
        --work /tmp/bench_filter [--bag BAG --tiles xyz:DIR] [--style suburb --frames 150]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from xview_loc_ros.drive_filter import DriveFilter, FilterParams
from xview_loc_ros.geo import LocalENU, PatchGeoref

DATUM = LocalENU(37.7749, -122.4194, 0.0)
S, MPP = 128, 0.5


def _heatmap(centre: np.ndarray, peak: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    xs = (np.arange(S) + 0.5 - S / 2) * MPP
    e, n = centre[0] + xs[None, :], centre[1] - xs[:, None]
    p = np.exp(-0.5 * ((e - peak[0]) ** 2 + (n - peak[1]) ** 2) / 1.5**2) + 1e-4 * rng.random((S, S))
    return (p / p.sum()).astype(np.float32)


def _georef(centre: np.ndarray) -> PatchGeoref:
    lat, lon, _ = DATUM.to_latlon(float(centre[0]), float(centre[1]), 0.0)
    return PatchGeoref(float(lat), float(lon), MPP, S)


def _drive(steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.cumsum(np.tile([[0.3, 1.0]], (steps, 1)), axis=0)
    fixes = truth + rng.normal(0, 4.0, truth.shape)
    maps = [(_heatmap(fixes[k], truth[k] + rng.normal(0, 1.0, 2), rng), _georef(fixes[k])) for k in range(steps)]
    return truth, fixes, maps


def bench_grid(cell_m: float, window_m: float, steps: int) -> Dict[str, Any]:
    truth, fixes, maps = _drive(steps)
    f = DriveFilter(FilterParams(cell_m=cell_m, window_m=window_m))
    times: List[float] = []
    errs = []
    for k in range(steps):
        t = 100.0 + 0.1 * k
        t0 = time.perf_counter()
        f.predict(t, tuple(truth[k] - truth[k - 1]) if k else (0.0, 0.0), "odom")
        f.update_gnss(t, fixes[k][0], fixes[k][1], np.eye(2) * 16.0)
        f.update_heatmap(t, maps[k][0], maps[k][1], DATUM, (fixes[k][0], fixes[k][1]))  # as the node: centre = fix
        est = f.estimate()
        times.append(time.perf_counter() - t0)
        assert est is not None
        errs.append(math.hypot(est.east - truth[k][0], est.north - truth[k][1]))
    a = np.asarray(times[10:]) * 1e3
    return {
        "cells": f.n,
        "cell_m": cell_m,
        "window_m": window_m,
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "median_error_m": float(np.median(errs[10:])),
    }


def bench_particles(n: int, steps: int) -> Dict[str, Any]:
    """A bootstrap particle filter with the same models: odometry shift + noise, GNSS mixture weights,
    heat-map weights by bilinear lookup (cv2.remap), systematic resampling every step."""
    truth, fixes, maps = _drive(steps)
    rng = np.random.default_rng(1)
    x = fixes[0] + rng.normal(0, 4.0, (n, 2))
    w = np.full(n, 1.0 / n)
    times = []
    for k in range(steps):
        t0 = time.perf_counter()
        if k:
            x += truth[k] - truth[k - 1] + rng.normal(0, 0.15, (n, 2))
        d2 = ((x - fixes[k]) ** 2).sum(1) / 16.0
        w *= 0.95 * np.exp(-0.5 * d2) / (2 * math.pi * 16.0) + 0.05 / 96.0**2
        prob, geo = maps[k]
        ce, cn, _ = DATUM.to_enu(geo.center_lat, geo.center_lon, 0.0)
        u = ((x[:, 0] - float(ce)) / MPP + S / 2 - 0.5).astype(np.float32)
        v = ((float(cn) - x[:, 1]) / MPP + S / 2 - 0.5).astype(np.float32)
        lik = np.power(prob / prob.max(), 1.25)
        look = cv2.remap(  # (n / 100, 100) maps: remap's sides must stay below 32767
            lik,
            u.reshape(-1, 100),
            v.reshape(-1, 100),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float(lik.mean()),
        )
        w *= np.maximum(look.ravel(), 1e-3)
        w /= w.sum()
        mean = w @ x
        idx = np.searchsorted(np.cumsum(w), (rng.random() + np.arange(n)) / n)
        x, w = x[np.minimum(idx, n - 1)], np.full(n, 1.0 / n)
        times.append(time.perf_counter() - t0)
        del mean
    a = np.asarray(times[10:]) * 1e3
    return {"particles": n, "median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95))}


def part_update(steps: int) -> Dict[str, Any]:
    grids = [(0.5, 96.0), (0.5, 128.0), (1.0, 128.0), (1.0, 96.0)]
    return {
        "grid": [bench_grid(c, w, steps) for c, w in grids],
        # a 0.5 m multi-modal belief over the area two modes 30 m apart span: ~60 x 60 m = 14 400 cells; a
        # particle filter needs several particles per occupied cell to keep both modes through resampling
        "particles": [bench_particles(n, steps) for n in (5_000, 20_000, 50_000)],
    }


def part_replay(args: argparse.Namespace) -> Dict[str, Any]:
    from xview_testbed.replay import replay

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bag, tiles = args.bag, args.tiles
    if not bag:
        from xview_testbed.synth import make_city, make_drive

        city = work / f"city_{args.style}_{args.seed}"
        if not (city / "city.json").exists():
            make_city(args.style, args.seed, city, size_m=args.city_size_m, zooms=(18, 19))
        bag = work / f"drive_{args.style}_{args.seed}_{args.frames}"
        if not bag.exists():
            make_drive(city, bag, frames=args.frames, seed=args.seed, rate_hz=args.rate_hz)
        tiles = f"xyz:{city / 'tiles'}"
    params = Path(__file__).resolve().parents[1] / "config" / "localizer.yaml"
    out: Dict[str, Any] = {"bag": str(bag)}
    for fusion in args.fusions.split(","):
        s = replay(
            bag,
            params,
            work / f"replay_{fusion}.jsonl",
            model=args.model,
            tile_source=tiles,
            ros_args=["-p", f"fusion:={fusion}", "-p", "threads:=1", "-p", "publish_overlay:=false"]
            + [a for kv in args.param for a in ("-p", kv)],
            progress=False,
        )
        d = s.diagnostics
        out[fusion] = {
            "frames": s.frames,
            "errors": s.errors,
            "filter_update_ms": [d.get("stage_filter_ms_median"), d.get("stage_filter_ms_p95")],
            "inference_ms": [d.get("stage_inference_ms_median"), d.get("stage_inference_ms_p95")],
            "filter_counts": {k: v for k, v in d.items() if k.startswith("filter_")},
            "wall_s": s.wall_s,
        }
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="update", help="comma-separated: update, replay")
    ap.add_argument("--steps", type=int, default=300, help="filter steps per grid (update)")
    ap.add_argument("--model", help="model for the replay")
    ap.add_argument("--bag", help="bag to replay (default: a synthetic drive)")
    ap.add_argument("--tiles", help="tile source of --bag")
    ap.add_argument("--work", default="/tmp/bench_filter")
    ap.add_argument("--style", default="suburb")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--rate-hz", type=float, default=5.0)
    ap.add_argument("--city-size-m", type=float, default=400.0)
    ap.add_argument("--fusions", default="filter", help="replays to run: filter (records frame too), frame")
    ap.add_argument("--param", action="append", default=[], help="extra node parameter NAME:=VALUE")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    res: Dict[str, Any] = {"cv2_threads": cv2.getNumThreads()}
    parts = args.parts.split(",")
    if "update" in parts:
        res["update"] = part_update(args.steps)
    if "replay" in parts:
        if not args.model:
            ap.error("--parts replay needs --model")
        res["replay"] = part_replay(args)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
