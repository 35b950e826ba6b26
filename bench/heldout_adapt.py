# SPDX-License-Identifier: Apache-2.0
"""Adaptation measured as a team would use it (issue 17): recorded drives in one district of a new city ->
``xview-adapt extract`` (no ground-truth topic) -> ``xview-adapt adapt`` -> tested on drives in a held-out district
and on a new drive over the adaptation district's streets.

Per target city (600 m, a target style; the teacher never saw it): the west district (x < -60 m) is driven
``adapt_drives`` times (seeds 1..), the east district (x > +60 m) once for the held-out test, the west once more
for the same-streets test. Every model is evaluated on the test drives' frames (extracted with the GT topic):
per-frame error of the raw model in metres, and the centre guess (= the GNSS fix) beside it. The smallest distance
from each held-out test position to any adaptation position is printed (the districts are 120 m apart).

Rows: teacher; BN re-estimation (all layers; label-free control); adapted students, label-free epoch selection
(``--select pseudo``), over ``--seeds``: the headline; the same with GT selection (a reference: uses target
labels); the oracle (GT fine-tune of the teacher on the adaptation drives, a reference). ``--variant NAME=FLAGS``
adds student rows (flags of ``xview-adapt adapt``). Steps are cached (re-running resumes).

    python bench/heldout_adapt.py --teacher models/teacher.pt --city val:oldtown:401 --city t1:downtown:402 \
        --out bench/out/heldout [--seeds 0 1 2] [--variant "vehicle=--recipe vehicle"] [--record]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from offline_adapt.data.dataset import PairDataset  # noqa: E402
from xview_loc_ros.geo import LocalENU  # noqa: E402
from xview_testbed.steps import StepRunner  # noqa: E402

SECTION = "## Adaptation on held-out districts, product path (issue 17)"
SIZE_M, INNER_M, GAP_M = 600.0, 270.0, 60.0
WEST = f"{-INNER_M:g},{-INNER_M:g},{-GAP_M:g},{INNER_M:g}"
EAST = f"{GAP_M:g},{-INNER_M:g},{INNER_M:g},{INNER_M:g}"


def positions(data: Path) -> np.ndarray:
    """Ground-truth positions (east, north metres in one local frame) of every pair of a data set."""
    recs = [r for r in PairDataset(data).split(None) if r.has_gt]
    lat = np.array([r.gt_lat for r in recs])
    lon = np.array([r.gt_lon for r in recs])
    e, n, _ = LocalENU(37.7749, -122.4194).to_enu(lat, lon, 0.0)
    return np.stack([e, n], -1)


def nearest_m(test: np.ndarray, ref: np.ndarray) -> np.ndarray:
    d = np.hypot(test[:, None, 0] - ref[None, :, 0], test[:, None, 1] - ref[None, :, 1])
    return d.min(axis=1)


class City:
    """One target city: its drives and data sets (made or reused)."""

    def __init__(self, r: StepRunner, out: Path, name: str, style: str, seed: int, args: argparse.Namespace) -> None:
        self.r, self.name = r, name
        self.dir = out / name
        d = self.dir
        self.city = r.run(
            d / "city", "xview-loc", "synth", "city", "--style", style, "--seed", seed, "--size-m", SIZE_M,
            "--zooms", "16-18", "--out", d / "city",
        )  # fmt: skip
        self.tiles = f"xyz:{self.city / 'tiles'}"
        bags = [
            self.drive(f"adapt{k}", WEST, k, args.adapt_frames) for k in range(1, args.adapt_drives + 1)
        ]  # fmt: skip
        # the patch geometry of the `small` configs (not --model: the data must not depend on which teacher)
        ex = ["--tiles", self.tiles, "--size", 128, "--mpp", 0.5, "--ground-type", "panorama"]
        ex += ["--ground-size", 64, 256, "--no-progress"]
        self.bags, self.extract_args = bags, ex
        self.unlabelled = r.run(
            d / "adapt_pairs", "xview-adapt", "extract", "--bag", *bags, *ex, "--out", d / "adapt_pairs"
        )
        self.labelled = r.run(
            d / "adapt_pairs_gt", "xview-adapt", "extract", "--bag", *bags, *ex, "--gt-topic", "/ground_truth/fix",
            "--split", "90,10,0", "--out", d / "adapt_pairs_gt",
        )  # fmt: skip
        self.tests = {}
        for test, region, seed_ in (("held-out district", EAST, 11), ("same streets, new drive", WEST, 12)):
            key = "heldout" if region == EAST else "same"
            bag = self.drive(f"drive_test_{key}", region, seed_, args.test_frames)
            self.tests[test] = r.run(
                d / f"test_{key}", "xview-adapt", "extract", "--bag", bag, *ex, "--gt-topic", "/ground_truth/fix",
                "--out", d / f"test_{key}",
            )  # fmt: skip

    def drive(self, name: str, region: str, seed: int, frames: int) -> Path:
        return self.r.run(
            self.dir / name, "xview-loc", "synth", "drive", "--city", self.city, "--out", self.dir / name,
            "--frames", frames, "--rate", 2, "--seed", seed, f"--region={region}",
        )  # fmt: skip


def evaluate(r: StepRunner, model: Path, data: Path, out: Path, threads: int) -> dict:
    r.run(
        out, "xview-adapt", "evaluate", "--model", model, "--data", data, "--split", "all", "--out", out,
        "--threads", threads, "--grid", 0,
    )  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def models_of(r: StepRunner, c: City, teacher: Path, args) -> Dict[str, List[Path]]:
    """row label -> checkpoints (one per seed)."""
    d, th = c.dir, ["--threads", args.threads]
    rows: Dict[str, List[Path]] = {"teacher": [teacher]}
    bn = r.run(
        d / "bn_all", "xview-adapt", "adapt", "--teacher", teacher, "--data", c.unlabelled, "--out", d / "bn_all",
        "--bn-reestimate-only", *th,
    )  # fmt: skip
    rows["BN re-estimation, all layers"] = [bn / "student.pt"]
    # every student row states its recipe: variants are flags on top of the paper's setting
    variants = {"paper, label-free selection": ["--recipe", "paper", "--select", "pseudo"]}
    for spec in args.variant:
        label, _, flags = spec.partition("=")
        variants[label] = ["--recipe", "paper", "--select", "pseudo", *shlex.split(flags)]
    for label, flags in variants.items():
        key = "".join(ch if ch.isalnum() else "_" for ch in label)
        rows[label] = []
        for s in args.seeds:
            run = r.run(
                d / f"{key}_s{s}", "xview-adapt", "adapt", "--teacher", teacher, "--data", c.unlabelled,
                "--out", d / f"{key}_s{s}", "--seed", s, *flags, *th,
            )  # fmt: skip
            rows[label].append(run / "student.pt")
    gt = r.run(
        d / "paper_gtselect", "xview-adapt", "adapt", "--teacher", teacher, "--data", c.labelled, "--split",
        "train", "--recipe", "paper", "--select", "gt", "--out", d / "paper_gtselect", *th,
    )  # fmt: skip
    rows["paper, GT selection (reference)"] = [gt / "student.pt"]
    oracle = r.run(
        d / "oracle", "xview-adapt", "train", "--data", c.labelled, "--config", "small", "--init", teacher,
        "--out", d / "oracle", "--epochs", 3, "--lr", "1e-4", "--lr-schedule", "constant", "--photometric", 0, *th,
    )  # fmt: skip
    rows["oracle (GT fine-tune, reference)"] = [oracle / "best.pt"]
    return rows


def city_table(r: StepRunner, c: City, title: str, teacher: Path, args: argparse.Namespace) -> str:
    """The city's Markdown table: every row of :func:`models_of` on both tests (steps cached)."""
    near = nearest_m(positions(c.tests["held-out district"]), positions(c.labelled))
    lines = [
        f"{title}: held-out test frame to nearest adaptation frame: min "
        f"{near.min():.0f} m, median {np.median(near):.0f} m, p90 {np.percentile(near, 90):.0f} m "
        f"({len(PairDataset(c.unlabelled).split(None))} unlabelled adaptation pairs).",
        "",
        "| model | " + " | ".join(f"{t}: mean / median (m)" for t in c.tests) + " |",
        "|---|" + "---|" * len(c.tests),
    ]
    rows = models_of(r, c, teacher, args)
    centre = []
    table: Dict[str, Dict[str, Tuple[List[float], List[float]]]] = {}
    for label, ckpts in rows.items():
        table[label] = {}
        for test, data in c.tests.items():
            ms = [evaluate(r, ck, data, c.dir / f"eval_{ck.parent.name}_{data.name}", args.threads) for ck in ckpts]
            table[label][test] = ([m["mean_m"] for m in ms], [m["median_m"] for m in ms])
            if label == "teacher":
                centre.append((ms[0]["prior_mean_m"], ms[0]["count"]))
    lines.append(
        "| centre guess (GNSS fix) | " + " | ".join(f"{m:.2f} ({n} frames)" for m, n in centre) + " |"
    )  # fmt: skip
    for label, per in table.items():
        lines.append(f"| {label} | " + " | ".join(f"{fmt(a)} / {fmt(b)}" for a, b in per.values()) + " |")
    return "\n".join(lines)


def fmt(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--city", action="append", required=True, metavar="NAME:STYLE:SEED", help="a target city")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "heldout")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="adaptation seeds")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS", help="more student rows")
    ap.add_argument("--adapt-drives", type=int, default=3)
    ap.add_argument("--adapt-frames", type=int, default=160)
    ap.add_argument("--test-frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--prepare-only", action="store_true", help="make the cities, drives and data sets, then stop")
    args = ap.parse_args(argv)
    teacher = args.teacher.resolve()
    r = StepRunner(args.out)
    text = []
    for spec in args.city:
        name, style, seed = spec.split(":")
        c = City(r, args.out, name, style, int(seed), args)
        if args.prepare_only:
            continue
        text.append(city_table(r, c, f"**{name}** (`{style}` seed {seed})", teacher, args))
        print(text[-1], flush=True)
    body = "\n\n".join(text)
    (args.out / "table.md").write_text(body + "\n")
    if args.record:
        results.record(SECTION, body, command="python " + " ".join(["bench/heldout_adapt.py", *argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
