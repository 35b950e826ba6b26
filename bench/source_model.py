# SPDX-License-Identifier: Apache-2.0
"""Source model benchmark (issue 15): the node's per-frame error on drives through cities never trained on.

For every test city (source styles and target styles/seasons, seeds outside the teacher's recipe): a city, a
recorded drive (GNSS with the style's bias, noise and multipath) and a labelled pair set like the drive's frames.
Each model is played through the real node over DDS (``xview-loc replay``, lock-step; the per-frame estimate,
``~/frame_pose``, is what is scored, whatever the node's fusion mode) and evaluated on the pairs (``xview-adapt evaluate``). Errors: horizontal metres vs ground
truth. The node publishes nothing for a gated frame; the "node or GNSS" columns count those frames at the fix's
error (what a consumer that falls back to GNSS gets), the "localized" columns only the published frames.

    python bench/source_model.py --model new=models/teacher.pt --model old=OLD.pt --out bench/out/source_model \
        [--record]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from xview_testbed.replay import error_stats, read_jsonl  # noqa: E402
from xview_testbed.steps import StepRunner  # noqa: E402

PARAMS = ROOT / "config" / "localizer.yaml"
SECTION = "## Source model on drives in new cities (issue 15)"
# (name, style preset, season override or "", city seed, drive seed, split): seeds never used by the recipe
TESTS: Tuple[Tuple[str, str, str, int, int, str], ...] = (
    ("suburb", "suburb", "", 211, 11, "source"),
    ("industrial", "industrial", "", 212, 12, "source"),
    ("downtown", "downtown", "", 213, 13, "target"),
    ("oldtown", "oldtown", "", 214, 14, "target"),
    ("suburb, winter", "suburb", "winter", 215, 15, "target season"),
)


def _style(out: Path, preset: str, season: str) -> str:
    """A preset, or a preset moved into another season (a style YAML on the preset's base)."""
    if not season:
        return preset
    path = out / f"style_{preset}_{season}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"name": f"{preset}-{season}", "base": preset, "appearance": {"season": season}}))
    return str(path)


def build_tests(r: StepRunner, out: Path, frames: int, pairs: int) -> Dict[str, Tuple[Path, Path, Path]]:
    made = {}
    for name, preset, season, city_seed, drive_seed, _ in TESTS:
        key = name.replace(", ", "_")
        city = r.run(
            out / f"city_{key}", "xview-loc", "synth", "city", "--style", _style(out, preset, season),
            "--seed", city_seed, "--size-m", 600, "--zooms", "16-18", "--out", out / f"city_{key}",
        )  # fmt: skip
        bag = r.run(
            out / f"drive_{key}", "xview-loc", "synth", "drive", "--city", city, "--out", out / f"drive_{key}",
            "--frames", frames, "--rate", 2, "--seed", drive_seed,
        )  # fmt: skip
        data = r.run(
            out / f"pairs_{key}", "xview-loc", "synth", "pairs", "--city", city, "--n", pairs, "--seed", city_seed,
            "--like-drive", "--out", out / f"pairs_{key}",
        )  # fmt: skip
        made[name] = (city, bag, data)
    return made


def per_frame(rec: dict) -> Optional[float]:
    """The per-frame estimate's error (the node's ~/frame_pose; with fusion: frame also its ~/pose), None when
    gated: the source model is judged frame by frame, whatever the node's fusion mode."""
    if "frame_err_m" in rec:
        return rec["frame_err_m"] if rec.get("frame_localized") else None
    return rec["est_err_m"] if rec["localized"] else None


def measure(r: StepRunner, out: Path, models: Dict[str, Path], tests, threads: int) -> Dict[str, Dict[str, dict]]:
    table: Dict[str, Dict[str, dict]] = {}
    for name, (city, bag, data) in tests.items():
        key = name.replace(", ", "_")
        row: Dict[str, dict] = {}
        for label, model in models.items():
            rep = out / f"replay_{label}_{key}.jsonl"
            r.run(
                rep, "xview-loc", "replay", "--bag", bag, "--params-file", PARAMS, "--model", model,
                "--tile-source", f"xyz:{city / 'tiles'}", "--out", rep, "--no-progress",
                "--ros-args", "-p", f"threads:={threads}",
            )  # fmt: skip
            recs = read_jsonl(rep)
            if "gnss" not in row:
                row["gnss"] = error_stats([x["gnss_err_m"] for x in recs], len(recs))
            loc = [per_frame(x) for x in recs if per_frame(x) is not None]
            fallback = [x["gnss_err_m"] if per_frame(x) is None else per_frame(x) for x in recs]
            ev = out / f"eval_{label}_{key}"
            r.run(
                ev, "xview-adapt", "evaluate", "--model", model, "--data", data, "--split", "all", "--out", ev,
                "--threads", threads, "--grid", 0,
            )  # fmt: skip
            m = json.loads((ev / "metrics.json").read_text())
            row[label] = {
                "frames": len(recs),
                "localized": error_stats(loc, len(recs)),
                "fallback": error_stats(fallback, len(recs)),
                "pairs": {"n": m["count"], "mean": m["mean_m"], "median": m["median_m"], "centre": m["prior_mean_m"]},
            }
        table[name] = row
    return table


def format_table(table: Dict[str, Dict[str, dict]], models: Sequence[str]) -> str:
    split = {t[0]: t[5] for t in TESTS}
    lines = [
        "| city (never trained on) | split | model | node or GNSS: mean / median / p95 / % > 10 m | localized frames | "
        "localized: mean / median / p95 / % > 10 m | pairs: mean / median (centre guess mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        g = row["gnss"]
        lines.append(
            f"| {name} | {split[name]} | GNSS fix | {g['mean_m']:.2f} / {g['median_m']:.2f} / {g['p95_m']:.2f} / "
            f"{g['over_10m_pct']:.0f} % | {g['frames']}/{g['frames']} | | |"
        )
        for label in models:
            c = row[label]
            f, lo, p = c["fallback"], c["localized"], c["pairs"]
            loc = (
                f"{lo['mean_m']:.2f} / {lo['median_m']:.2f} / {lo['p95_m']:.2f} / {lo['over_10m_pct']:.0f} %"
                if lo["frames"]
                else "none"
            )
            lines.append(
                f"| {name} | {split[name]} | {label} | {f['mean_m']:.2f} / {f['median_m']:.2f} / {f['p95_m']:.2f} / "
                f"{f['over_10m_pct']:.0f} % | {lo['frames']}/{c['frames']} | {loc} | {p['mean']:.2f} / {p['median']:.2f} "
                f"({p['centre']:.2f}) |"
            )
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=PATH", help="a model to measure")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "source_model")
    ap.add_argument("--frames", type=int, default=240, help="camera frames per drive (2 Hz)")
    ap.add_argument("--pairs", type=int, default=200, help="labelled pairs per test city")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md")
    args = ap.parse_args(argv)
    models = {}
    for spec in args.model:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--model {spec!r}: expected LABEL=PATH of an existing checkpoint")
        models[label] = Path(path).resolve()
    r = StepRunner(args.out)
    table = measure(r, args.out, models, build_tests(r, args.out, args.frames, args.pairs), args.threads)
    (args.out / "table.json").write_text(json.dumps(table, indent=1))
    text = format_table(table, list(models))
    print(text)
    if args.record:
        results.record(SECTION, text, command="python " + " ".join(["bench/source_model.py", *argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
