# SPDX-License-Identifier: Apache-2.0
"""Drive consistency (issue 17): the teacher's heat maps smoothed along each adaptation drive by the node's drive
filter (``xview-adapt adapt --pseudo-labels drive-smooth``, ``--drive-consistency-m D``).

Two measurements on the cities of bench/heldout_adapt.py (same ``--out``: its cities, drives, data sets and runs
are reused):

* label error (diagnostics, ``--label-city``): on the adaptation drives' pairs extracted WITH ground truth
  (``adapt_pairs_gt``, every pair: ``--split all``), ``xview-adapt pseudo-label --pseudo-labels drive-smooth``;
  per pair the teacher's mode, the smoothed mean and the smoothed MAP cell against GT, and the teacher's modes /
  smoothed labels kept by the consistency filter at several D. GT is used for the errors only.
  With ``--odom-city`` (drives recorded with /odom), the same pairs extracted again with ``--odom-topic /odom`` (``adapt_pairs_gt_odom``): the
  smoother then moves by the wheel odometry, not by the fixes' speed.
* students (``--select-city``, the validation city only): bench/heldout_adapt.py's table with the ``--variant``
  rows (one seed), against the vehicle recipe's row.

    python bench/drive_consistency.py --teacher models/teacher.pt --out /work/exp/heldout \\
        --label-city val:oldtown:401 --label-city t1:downtown:402 --select-city val:oldtown:401 \\
        --variant "vehicle + drive-smooth labels=--fov-mask 90,180 --pseudo-labels drive-smooth" [--record]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from bench.heldout_adapt import SECTION, City, city_table  # noqa: E402
from offline_adapt.adapt.pipeline import drive_results  # noqa: E402
from offline_adapt.data.dataset import PairDataset  # noqa: E402
from xview_testbed.steps import StepRunner  # noqa: E402

SUBSECTION = "### Drive consistency: pseudo labels smoothed along the drives"
INTRO = (
    "The teacher's finest heat maps (the cached top-1024 probabilities) smoothed forward and backward along each "
    "adaptation drive by the node's drive filter (`xview_loc_ros.drive_filter.smooth_drive`, default "
    "`FilterParams`: heat maps tempered by 2.5, GNSS outlier mixture, 0.5 m cells) with each pair's fix (its std) "
    "and the motion between pairs: the fixes' median speed along the IMU heading (pairs extracted as the product "
    "path does, without `--odom-topic`), or the wheel odometry (`odometry motion` rows: the same frames extracted "
    "with `--odom-topic /odom`). Smoothed mean = the `--pseudo-labels drive-smooth` label; `teacher mode within D "
    "m of the track` = the pairs `--drive-consistency-m D` keeps. Every drive of these cities is one piece (no gap "
    "over 5 s)."
)
DS = (3.0, 5.0, 10.0)


def stats(e: np.ndarray) -> str:
    return f"{e.mean():.2f} / {np.median(e):.2f}" if e.size else "-"


def label_table(r: StepRunner, c: City, name: str, teacher: Path, threads: int, odom: bool = False) -> List[str]:
    """Rows of the label-error table; ``odom``: the same pairs extracted with --odom-topic /odom, so that the
    smoother moves by the wheel odometry instead of the fixes."""
    data, run = c.labelled, c.dir / "drive_labels"
    if odom:
        data = r.run(
            c.dir / "adapt_pairs_gt_odom", "xview-adapt", "extract", "--bag", *c.bags, *c.extract_args,
            "--gt-topic", "/ground_truth/fix", "--split", "90,10,0", "--odom-topic", "/odom",
            "--out", c.dir / "adapt_pairs_gt_odom",
        )  # fmt: skip
        run = c.dir / "drive_labels_odom"
    r.run(
        run, "xview-adapt", "pseudo-label", "--teacher", teacher, "--data", data, "--split", "all",
        "--pseudo-labels", "drive-smooth", "--out", run, "--threads", threads,
    )  # fmt: skip
    rows = drive_results(run)
    recs = {x.id: x for x in PairDataset(data).split(None)}
    fix = np.asarray(
        [np.hypot(*np.subtract(recs[x["id"]].gt_pixel(), recs[x["id"]].fix_pixel())) * recs[x["id"]].mpp for x in rows]
    )
    te = np.asarray([x["teacher_err_m"] for x in rows])
    se = np.asarray([x["smoothed_err_m"] for x in rows])
    me = np.asarray([x["smoothed_map_err_m"] for x in rows])
    d = np.asarray([x["teacher_dist_m"] for x in rows])
    out = [
        f"| {name} | all | {len(rows)} | {stats(fix)} | {stats(te)} | {stats(se)} | {stats(me)} |",
    ]
    for dm in DS:
        k = d <= dm
        out.append(
            f"| {name} | teacher mode within {dm:g} m of the track | {int(k.sum())} | {stats(fix[k])} | {stats(te[k])} | {stats(se[k])} | {stats(me[k])} |"
        )
    return out


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "heldout")
    ap.add_argument("--label-city", action="append", default=[], metavar="NAME:STYLE:SEED")
    ap.add_argument("--select-city", default=None, metavar="NAME:STYLE:SEED", help="the validation city")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS", help="student rows")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--adapt-drives", type=int, default=3)
    ap.add_argument("--adapt-frames", type=int, default=160)
    ap.add_argument("--test-frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--odom-city",
        action="append",
        default=[],
        metavar="NAME:STYLE:SEED",
        help="a --label-city whose drives record /odom: label rows with the wheel odometry as the motion, too",
    )
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--subsection", default=SUBSECTION, help="the RESULTS.md subsection --record writes")
    args = ap.parse_args(argv)
    teacher = args.teacher.resolve()
    r = StepRunner(args.out)
    cities: Dict[str, City] = {}

    def city(spec: str) -> City:
        if spec not in cities:
            name, style, seed = spec.split(":")
            cities[spec] = City(r, args.out, name, style, int(seed), args)
        return cities[spec]

    text = []
    if args.label_city:
        lines = [
            INTRO,
            "",
            "Pseudo-label error on the adaptation drives (every pair of `adapt_pairs_gt`; GT for the errors only), "
            "mean / median (m):",
            "",
            "| city | subset | pairs | GNSS fix | teacher mode | smoothed mean | smoothed MAP cell |",
            "|---|---|---|---|---|---|---|",
        ]
        for spec in args.label_city:
            name, style, seed = spec.split(":")
            lines += label_table(r, city(spec), f"{name} (`{style}` {seed})", teacher, args.threads)
            if spec in args.odom_city:
                lines += label_table(r, city(spec), f"{name}, odometry motion", teacher, args.threads, odom=True)
        text.append("\n".join(lines))
        print(text[-1], flush=True)
    if args.select_city:
        name, style, seed = args.select_city.split(":")
        c = city(args.select_city)
        text.append(
            city_table(
                r,
                c,
                f"Students, **{name}** (`{style}` seed {seed}; adaptation seed {', '.join(map(str, args.seeds))})",
                teacher,
                args,
            )
        )
        print(text[-1], flush=True)
    if args.record:
        results.record(
            SECTION,
            "\n\n".join(text),
            subsection=args.subsection,
            command="python " + shlex.join(["bench/drive_consistency.py", *argv]),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
