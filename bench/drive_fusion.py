# SPDX-License-Identifier: Apache-2.0
"""Drive filter on whole drives (issue 16): GNSS, the per-frame estimate and the filtered one, through the node.

Per city (a folder from ``xview-loc synth city``; target styles, never trained on): two drives over the whole
city (seeds 21 and 22, ``--frames`` at 2 Hz, GNSS with the style's bias, noise and multipath, wheel odometry) and
one with a forced GNSS jump (seed 23, ``--jump-m`` east from ``--jump-start-s`` for ``--jump-s`` seconds). Each
model is replayed through the node (``xview-loc replay``, lock-step, ``fusion: filter``, which records the
per-frame estimate beside the filtered one). Ablations on the first drive with the teacher: no heat map
(``heatmap_temperature: 0``), no GNSS after initialisation (``filter_gnss_init_only``), no odometry
(``odom_topic: ''``: IMU + fixes). Errors: horizontal metres vs ground truth; the per-frame row counts only the
frames the gate let through (its coverage is given).

    python bench/drive_fusion.py --teacher models/teacher.pt \
        --city downtown=CITY_DIR --student downtown=STUDENT.pt ... --out bench/out/fusion [--record]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from xview_testbed.replay import read_jsonl, summarize_errors  # noqa: E402
from xview_testbed.steps import StepRunner  # noqa: E402

SECTION = "## Drive filter on whole drives (issue 16)"
PARAMS = ROOT / "config" / "localizer.yaml"
DRIVE_SEEDS = (21, 22)
JUMP_SEED = 23
ABLATIONS = {
    "no heat map (GNSS + motion)": ["heatmap_temperature:=0.0"],
    "no GNSS after initialisation (heat maps + motion)": ["filter_gnss_init_only:=true"],
    "no odometry (IMU + fixes)": ["odom_topic:=''"],
}


def replay(r: StepRunner, out: Path, bag: Path, city: Path, model: Path, params: Sequence[str], threads: int) -> Path:
    extra: List[str] = []
    for p in ["fusion:=filter", f"threads:={threads}", *params]:
        extra += ["-p", p]
    return r.run(
        out, "xview-loc", "replay", "--bag", bag, "--params-file", PARAMS, "--model", model,
        "--tile-source", f"xyz:{city / 'tiles'}", "--out", out, "--no-progress", "--ros-args", *extra,
    )  # fmt: skip


def summarize(path: Path) -> Dict[str, Any]:
    """The replay's error statistics (node = filtered, frame, gnss: xview_testbed.replay.summarize_errors) and the
    filter and inference stage times from its diagnostics."""
    diag = json.loads(Path(f"{path}.json").read_text())["diagnostics"]
    return {
        **summarize_errors(read_jsonl(path)),
        "filter_ms": (diag.get("stage_filter_ms_median"), diag.get("stage_filter_ms_p95")),
        "inference_ms": diag.get("stage_inference_ms_median"),
    }


def jump_summary(path: Path, start_s: float, length_s: float) -> Dict[str, Any]:
    """During the jump: share of frames with the filtered error > 10 m, its median, the GNSS error; after the jump
    ends: seconds until the filtered error stays below 5 m for 3 frames (None = not within the drive)."""
    recs = read_jsonl(path)
    t = np.array([x["stamp"] for x in recs]) - recs[0]["stamp"]
    err = np.array([x["est_err_m"] if x["localized"] else np.inf for x in recs])
    gnss = np.array([x["gnss_err_m"] for x in recs])
    end = start_s + length_s
    during = (t >= start_s) & (t < end)
    recover = None
    for k in np.flatnonzero(t >= end):
        if len(err[k : k + 3]) == 3 and np.all(err[k : k + 3] < 5.0):
            recover = float(t[k] - end)
            break
    return {
        "during_gt10_pct": float(100 * (err[during] > 10).mean()),
        "during_median_m": float(np.median(err[during])),
        "before_median_m": float(np.median(err[t < start_s])),
        "gnss_during_median_m": float(np.median(gnss[during])),
        "recovered_after_end_s": recover,
        "frames_during": int(during.sum()),
    }


def row(label: str, s: Dict[str, Any]) -> str:
    """A table row of xview_testbed.replay.error_stats."""
    if not s["frames"]:
        return f"| {label} | none | | | | |"
    return (
        f"| {label} | {s['coverage']:.0%} | {s['mean_m']:.2f} | {s['median_m']:.2f} | {s['p95_m']:.2f} | "
        f"{s['over_5m_pct']:.0f} % / {s['over_10m_pct']:.0f} % |"
    )


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--city", action="append", required=True, metavar="NAME=CITY_DIR")
    ap.add_argument("--student", action="append", default=[], metavar="NAME=CHECKPOINT", help="adapted to that city")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fusion")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--jump-m", type=float, default=40.0)
    ap.add_argument("--jump-start-s", type=float, default=40.0)
    ap.add_argument("--jump-s", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--prepare-only", action="store_true", help="make the drives, then stop")
    args = ap.parse_args(argv)
    cities = dict(c.split("=", 1) for c in args.city)
    students = dict(s.split("=", 1) for s in args.student)
    r = StepRunner(args.out)
    teacher = args.teacher.resolve()
    blocks, timing = [], []
    for name, city_dir in cities.items():
        city = Path(city_dir).resolve()
        d = args.out / name
        drives = {}
        for seed in DRIVE_SEEDS:
            drives[seed] = r.run(
                d / f"drive{seed}", "xview-loc", "synth", "drive", "--city", city, "--out", d / f"drive{seed}",
                "--frames", args.frames, "--rate", 2, "--seed", seed,
            )  # fmt: skip
        jump = r.run(
            d / "drive_jump", "xview-loc", "synth", "drive", "--city", city, "--out", d / "drive_jump", "--frames",
            int(2 * (args.jump_start_s + args.jump_s + 30)), "--rate", 2, "--seed", JUMP_SEED,
            f"--gnss-jump={args.jump_m:g},0,{args.jump_start_s:g},{args.jump_start_s + args.jump_s:g}",
        )  # fmt: skip
        if args.prepare_only:
            continue
        models = {"teacher": teacher}
        if name in students:
            models["adapted student"] = Path(students[name]).resolve()
        lines = [
            f"**{name}** (`{city.name}`; {args.frames} frames at 2 Hz per drive, seeds {DRIVE_SEEDS[0]} and "
            f"{DRIVE_SEEDS[1]}):",
            "",
            "| estimate | frames with an estimate | mean (m) | median (m) | p95 (m) | > 5 m / > 10 m |",
            "|---|---|---|---|---|---|",
        ]
        gnss_rows = []
        for label, model in models.items():
            for seed, bag in drives.items():
                s = summarize(
                    replay(r, d / f"{label.replace(' ', '_')}_{seed}.jsonl", bag, city, model, [], args.threads)
                )
                if label == "teacher":
                    gnss_rows.append(row(f"GNSS fix, drive {seed}", s["gnss"]))
                lines.append(row(f"{label}, per frame, drive {seed}", s["frame"]))
                lines.append(row(f"{label}, **filtered**, drive {seed}", s["node"]))
                timing.append((name, label, seed, s["filter_ms"], s["inference_ms"]))
        lines[4:4] = gnss_rows
        for label, params in ABLATIONS.items():
            key = "".join(ch if ch.isalnum() else "_" for ch in label)[:40]
            s = summarize(replay(r, d / f"ablation_{key}.jsonl", drives[DRIVE_SEEDS[0]], city, teacher, params,
                                 args.threads))  # fmt: skip
            lines.append(row(f"teacher, filtered, {label}, drive {DRIVE_SEEDS[0]}", s["node"]))
        for label, model in models.items():
            rep = replay(r, d / f"jump_{label.replace(' ', '_')}.jsonl", jump, city, model, [], args.threads)
            j = jump_summary(rep, args.jump_start_s, args.jump_s)
            rec = "not in the drive" if j["recovered_after_end_s"] is None else f"{j['recovered_after_end_s']:.1f} s"
            lines.append(
                f"| {label}, filtered, {args.jump_m:g} m GNSS jump for {args.jump_s:g} s (GNSS median "
                f"{j['gnss_during_median_m']:.1f} m during it) | {j['frames_during']} frames | | "
                f"{j['before_median_m']:.2f} before, {j['during_median_m']:.2f} during | | "
                f"{j['during_gt10_pct']:.0f} % > 10 m during; < 5 m for 3 frames {rec} after it ended |"
            )
        blocks.append("\n".join(lines))
        print(blocks[-1], flush=True)
    if args.prepare_only:
        return 0
    fms = [t[3][0] for t in timing if t[3][0] is not None]
    f95 = [t[3][1] for t in timing if t[3][1] is not None]
    inf = [t[4] for t in timing if t[4] is not None]
    blocks.append(
        f"Filter update inside the node (stage `filter`, per-replay medians over {len(fms)} replays): median of "
        f"medians {np.median(fms):.2f} ms, median of p95s {np.median(f95):.2f} ms; model inference (stage "
        f"`inference`, PyTorch, {args.threads} thread) median of medians {np.median(inf):.1f} ms: filter = "
        f"{100 * np.median(fms) / np.median(inf):.1f} % of inference."
    )
    body = "\n\n".join(blocks)
    (args.out / "table.md").write_text(body + "\n")
    print(blocks[-1])
    if args.record:
        results.record(SECTION, body, command="python " + " ".join(["bench/drive_fusion.py", *argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
