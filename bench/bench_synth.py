# SPDX-License-Identifier: Apache-2.0
"""Benchmark of the synthetic test bed: city build time and pairs per second (small and full presets).

    .venv/bin/python bench/bench_synth.py [--size-m 1000] [--pairs 200] [--full-pairs 20] [--workers 2] [--write]

Prints a Markdown table; ``--write`` also replaces the "## Synthetic test bed (issue 3)" section of
bench/RESULTS.md. Wall-clock times (the machine may be shared: CPU seconds of this process tree
are given beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from xview_testbed.synth import make_city, make_pairs  # noqa: E402

SECTION = "## Synthetic test bed (issue 3)"


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _timed(fn, *a, **kw):
    t, c = time.perf_counter(), _cpu()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t, _cpu() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-m", type=float, default=1000.0, help="city side, metres (default 1000 = 1 km^2)")
    ap.add_argument("--style", default="downtown")
    ap.add_argument("--pairs", type=int, default=200, help="small pairs to time")
    ap.add_argument("--full-pairs", type=int, default=20, help="full-size pairs to time")
    ap.add_argument("--workers", type=int, default=2, help="pair rendering processes")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    load_at_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        city, wall, cpu = _timed(make_city, args.style, 1, td / "city", size_m=args.size_m, zooms=(16, 17, 18, 19, 20))
        parts = json.loads((city / "city.json").read_text())["build_seconds"]
        tiles = sum(json.loads((city / "city.json").read_text())["tiles_per_zoom"].values())
        rows.append(
            (
                f"city build, {args.style}, {args.size_m:.0f} m square, zooms 16-20 ({tiles} tiles)",
                f"{wall:.1f} s",
                f"{cpu:.1f} s",
                ", ".join(f"{k} {v:.1f}" for k, v in parts.items()),
            )
        )
        for preset, ground, n in (
            ("small", "panorama", args.pairs),
            ("small", "pinhole", args.pairs // 2),
            ("full", "panorama", args.full_pairs),
            ("full", "pinhole", args.full_pairs),
        ):
            _, wall, cpu = _timed(
                make_pairs, city, td / f"{preset}_{ground}", n, 1, preset=preset, ground=ground, workers=args.workers
            )
            rows.append(
                (
                    f"pairs {preset} {ground}, {n} pairs, {args.workers} workers",
                    f"{n / wall:.1f} pairs/s",
                    f"{cpu / n * 1000:.0f} ms CPU/pair",
                    f"CPU-bound rate on {args.workers} idle cores: {args.workers * n / cpu:.0f} pairs/s",
                )
            )
    cmd = "python bench/bench_synth.py " + " ".join(sys.argv[1:])
    lines = [
        f"Wall times depend on the machine's load (shared CI hosts; load average {load_at_start:.1f} at the "
        "start); CPU seconds (all processes) do not.",
        "",
        "| what | wall | CPU | notes |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        results.record(SECTION, text, command=cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
