# SPDX-License-Identifier: Apache-2.0
"""Median time to build aerial patches (issue 2): warm cache (tiles decoded in memory) and cold local
XYZ folder (every tile read and decoded from disk), 512x512 and 128x128, on synthetic textured tiles.

Usage: python bench/bench_patch.py [--repeats N] [--record bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.results, when run as a script

from bench import results  # noqa: E402
from xview_loc_ros.geo import LocalENU, ground_resolution  # noqa: E402
from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source  # noqa: E402
from xview_loc_ros.tiles.coverage import tiles_around  # noqa: E402

LAT, LON, ZOOM = 47.6062, -122.3321, 19  # Seattle, VIGOR-like zoom
SECTION = "## Aerial patch builder (issue 2)"


def make_folder(root: Path, keys) -> None:
    rng = np.random.default_rng(0)
    for z, x, y in keys:
        img = rng.integers(0, 255, (256, 256, 3), np.uint8)  # noise: worst case for PNG decoding
        img = cv2.GaussianBlur(img, (5, 5), 1.5)
        p = root / str(z) / str(x) / f"{y}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img)


def positions(n: int, mpp: float):
    """A drive: n positions 1.3 m apart heading north-east (sub-pixel offsets, as on a vehicle)."""
    frame = LocalENU(LAT, LON)
    for i in range(n):
        lat, lon, _ = frame.to_latlon(0.9 * i, 0.94 * i)
        yield float(lat), float(lon)


def times_ms(fn, pts) -> list:
    times = []
    for lat, lon in pts:
        t0 = time.perf_counter()
        fn(lat, lon)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def p10(values) -> float:
    return float(np.percentile(values, 10))


def run(repeats: int) -> dict:
    mpp = ground_resolution(LAT, ZOOM) * 1.25  # 512 px ~ 97 m: a VIGOR-sized patch
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pts = list(positions(repeats, mpp))
        keys = set()
        for lat, lon in pts:
            keys |= tiles_around(lat, lon, 512 * mpp, ZOOM)
        make_folder(root, keys)
        for size in (512, 128):
            with open_tile_source(f"xyz:{root}", lru_tiles=4096) as src:
                b = AerialPatchBuilder(src, size, mpp, zoom=ZOOM)
                for lat, lon in pts:
                    b.build(lat, lon)  # warm: every tile decoded in the LRU
                warm = times_ms(b.build, pts)
            cold = []
            for lat, lon in pts[: max(5, repeats // 5)]:
                with open_tile_source(f"xyz:{root}", lru_tiles=4096) as src:  # new source: empty memory cache
                    b = AerialPatchBuilder(src, size, mpp, zoom=ZOOM)
                    cold += times_ms(b.build, [(lat, lon)])
            out[f"warm {size}"], out[f"warm {size} p10"] = statistics.median(warm), p10(warm)
            out[f"cold {size}"], out[f"cold {size} p10"] = statistics.median(cold), p10(cold)
    out["mpp"] = mpp
    out["load"] = os.getloadavg()[0]
    return out


def record(path: Path, res: dict, command: str) -> None:
    body = (
        f"Wall time of `AerialPatchBuilder.build` at zoom {ZOOM} near Seattle, {res['mpp']:.4f} m/px, "
        f"PNG tiles in an XYZ folder (blurred noise). Warm: every tile already decoded in the memory LRU "
        f"(a vehicle driving; includes the control-grid pyproj mapping, mosaic and cv2.remap). Cold: a new "
        f"source per patch, so each needed tile is read from disk and PNG-decoded (OS file cache warm).\n\n"
        f"| patch | warm median (ms) | warm 10th pct (ms) | cold local folder median (ms) | cold 10th pct (ms) |\n"
        f"|---|---|---|---|---|\n"
        + "".join(
            f"| {n}x{n} | {res[f'warm {n}']:.2f} | {res[f'warm {n} p10']:.2f} | {res[f'cold {n}']:.2f} | "
            f"{res[f'cold {n} p10']:.2f} |\n"
            for n in (512, 128)
        )
        + "\nThe 10th percentile shows the cost when the run was least disturbed by other processes.\n\n"
        f"Goal: warm 512x512 <= 5 ms on 2 cores. 1-minute load average during the run: {res['load']:.1f} "
        f"(above 2, other processes share the cores and the figures grow accordingly)."
    )
    results.record(SECTION, body, command=command, path=path, machine_extra=[f"OpenCV {cv2.__version__}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50, help="patches per measurement (default 50)")
    ap.add_argument("--record", type=Path, help="write the figures into this RESULTS.md section")
    args = ap.parse_args()
    res = run(args.repeats)
    for k in ("warm 512", "cold 512", "warm 128", "cold 128"):
        print(f"{k}: median {res[k]:.2f} ms, 10th percentile {res[k + ' p10']:.2f} ms")
    print(f"load average {res['load']:.1f}")
    if args.record:
        record(args.record, res, "python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
