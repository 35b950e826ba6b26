# SPDX-License-Identifier: Apache-2.0
"""The bundled source model's recipe (``models/teacher.pt``): a multi-city source set and its training.

``python -m xview_testbed.teacher --out DIR`` (and ``make demo DEMO_ARGS=--retrain-teacher``) run it. Cities are
independent seeds of the source styles only (:data:`xview_testbed.synth.randomize.SOURCE_STYLES`), each a
randomised variant (``synth city --randomize``); pairs look like the drive recorder's frames (``synth pairs
--like-drive``: JPEG, IMU heading error, GNSS-like and uniform offsets). Training samples every city equally
(``--mix balanced``) with photometric draws on both views. Steps whose output exists are skipped, so a killed
run resumes where it stopped (training itself resumes from RUN/last.pt).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from xview_testbed.steps import StepRunner
from xview_testbed.synth.randomize import SOURCE_STYLES


@dataclass(frozen=True)
class TeacherRecipe:
    """Source set: ``len(styles) x len(seeds)`` cities of ``size_m`` metres, ``pairs`` each (70/10/20 split);
    training: ``xview-adapt train`` with the fields below (lr: Adam's; epochs over all training pairs)."""

    styles: Tuple[str, ...] = SOURCE_STYLES
    seeds: Tuple[int, ...] = (101, 102, 103, 104, 105)
    size_m: float = 400.0
    res_m: float = 0.25
    zooms: str = "18-19"
    randomize: float = 1.0
    pairs: int = 500
    config: str = "small"
    epochs: int = 16
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    batch: int = 8
    photometric: float = 1.0
    mix: str = "balanced"
    seed: int = 0
    threads: int = 1


RECIPE = TeacherRecipe()


def source_set(runner: StepRunner, out: Path, r: TeacherRecipe = RECIPE) -> List[Path]:
    """Make (or reuse) the source cities and their pair sets under ``out``; returns the pair set folders."""
    data = []
    for seed in r.seeds:
        for style in r.styles:
            city = out / f"city_{style}_{seed}"
            runner.run(
                city,
                "xview-loc",
                "synth",
                "city",
                "--style",
                style,
                "--seed",
                seed,
                "--randomize",
                r.randomize,
                "--size-m",
                r.size_m,
                "--res-m",
                r.res_m,
                "--zooms",
                r.zooms,
                "--out",
                city,
            )
            pairs = out / f"pairs_{style}_{seed}"
            runner.run(
                pairs, "xview-loc", "synth", "pairs", "--city", city, "--n", r.pairs, "--seed", seed, "--like-drive",
                "--out", pairs,
            )  # fmt: skip
            data.append(pairs)
    return data


def train_teacher(runner: StepRunner, out: Path, r: TeacherRecipe = RECIPE, epochs: Optional[int] = None) -> Path:
    """The whole recipe into ``out``; returns ``out/run/best.pt`` (lowest mean error on the source val splits)."""
    data = source_set(runner, out, r)
    run = out / "run"
    # the run folder is the step's output: a redone step starts a fresh run (train refuses to overwrite one)
    runner.run(
        run,
        "xview-adapt",
        "train",
        "--data",
        *data,
        "--mix",
        r.mix,
        "--config",
        r.config,
        "--out",
        run,
        "--seed",
        r.seed,
        "--epochs",
        r.epochs if epochs is None else epochs,
        "--lr",
        r.lr,
        "--lr-schedule",
        r.lr_schedule,
        "--batch",
        r.batch,
        "--photometric",
        r.photometric,
        "--threads",
        r.threads,
    )
    return run / "best.pt"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xview_testbed.teacher",
        description="Build the bundled teacher's multi-city source set and train it (models/README.md). "
        "Re-running reuses finished steps.",
    )
    p.add_argument("--out", required=True, help="output folder (cities, pair sets, run/)")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default: the recipe's {RECIPE.epochs})")
    args = p.parse_args(argv)
    best = train_teacher(StepRunner(Path(args.out)), Path(args.out), epochs=args.epochs)
    print(f"teacher: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
