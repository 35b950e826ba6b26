# SPDX-License-Identifier: Apache-2.0
"""``xview-adapt pseudo-label | train-student | filter | adapt``: the self-distillation pipeline."""

from __future__ import annotations

import argparse
import logging
from typing import Optional

from offline_adapt.adapt.options import (
    BN_MODES,
    BN_SCOPES,
    DEFAULT_RECIPE,
    PSEUDO_GT_MODES,
    PSEUDO_LABEL_SOURCES,
    RECIPE_SETTINGS,
    RECIPES,
    SELECT_RULES,
    AdaptOptions,
    DistillOptions,
    parse_fov_mask,
    recipe_options,
)

log = logging.getLogger(__name__)

# the defaults shown and used by every flag below: the options dataclasses' own
_D, _A = DistillOptions(), AdaptOptions()


def _recipe_text(name: str) -> str:
    return ", ".join(f"{k} {v}" for k, v in RECIPE_SETTINGS[name].items()) or "the dataclass defaults"


UNITS = (
    "Units: positions in aerial-patch pixels of the finest level (sigma), distances and errors in metres on "
    "the ground, learning rate per Adam step."
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.pt) trained on the source area")
    p.add_argument("--data", required=True, help="target-area pair data set (no GT needed)")
    p.add_argument(
        "--out", required=True, help="run folder RUN (RUN/pseudo, RUN/aux, RUN/filter, RUN/final, RUN/student.pt)"
    )
    p.add_argument(
        "--split", default=_A.split, help=f"target pairs to adapt on: train|val|test|all (default {_A.split})"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=_D.batch,
        help=f"pairs per step (per process under torchrun; default {_D.batch}, the paper's for CCVPE)",
    )
    p.add_argument(
        "--topk",
        type=int,
        default=_A.topk,
        help=f"teacher heat-map pixels cached per pair for --pseudo-gt heatmap (default {_A.topk})",
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: best available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    # the flags below shape the pseudo labels (and so every step's cache): the step commands take them too.
    # Recipe-settable flags default to None ("not given") so that an explicit flag overrides the recipe.
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default=DEFAULT_RECIPE,
        help=f"defaults to start from (default {DEFAULT_RECIPE}): paper = the paper's exact setting; vehicle "
        f"= the paper's plus {_recipe_text('vehicle')} (chosen on bench/heldout_adapt.py's validation city). "
        "Explicit flags override the recipe",
    )
    p.add_argument(
        "--gnss-prior",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pseudo label = mode of the teacher's heat map x the GNSS fix's Gaussian likelihood (the pair's fix "
        "covariance in patch pixels, centred on the fix) instead of the heat map alone (default: off, the paper)",
    )
    p.add_argument(
        "--gnss-std-m",
        type=float,
        default=None,
        help=f"1-sigma GNSS error (m) for --gnss-prior on pairs that store no fix covariance or std "
        f"(default {_A.gnss_std_m:g})",
    )
    p.add_argument(
        "--pseudo-labels",
        choices=PSEUDO_LABEL_SOURCES,
        default=None,
        help=f"where the pseudo label comes from (default {_A.pseudo_labels}): teacher = the mode of the teacher's "
        "heat map (the paper); drive-smooth = the teacher's heat maps smoothed forward and backward along each "
        "drive with the fixes and the motion by the node's drive filter, the smoothed mean (RUN/drive/; needs "
        "pairs extracted from drives: stamps, fixes, the bag they came from)",
    )
    p.add_argument(
        "--drive-consistency-m",
        type=float,
        default=None,
        metavar="D",
        help=f"the final student drops pairs whose teacher mode is more than D m from the drive-smoothed track, "
        f"besides the auxiliary-student filter's (--keep); 0 = off (default {_A.drive_consistency_m:g})",
    )
    p.add_argument(
        "--bn",
        choices=BN_MODES,
        default=None,
        help="batch norm: train = students update the running statistics (default, the paper); frozen = students "
        "keep the teacher's statistics (BN in eval mode, affine weights still train); ground-reestimate = each "
        "round's teacher first gets its ground branch's statistics re-estimated on the target pairs (no training), "
        "then students train with frozen BN",
    )


def _student_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pseudo-gt",
        choices=PSEUDO_GT_MODES,
        default=_D.pseudo_gt,
        help="mode: Gaussian at the teacher's heat-map mode (paper +M); heatmap: the teacher's heat map (-M)",
    )
    sigma = p.add_mutually_exclusive_group()
    sigma.add_argument(
        "--sigma",
        type=float,
        default=None,
        help=f"Gaussian sigma of mode-based pseudo GT, finest-level pixels (default {_D.sigma_px:g}, the paper's)",
    )
    sigma.add_argument(
        "--sigma-m",
        type=float,
        default=None,
        help="the same sigma in metres on the ground, converted with the model's m/px (the paper's 4 px are "
        "0.55 m on VIGOR at 0.14 m/px, but 2 m on small at 0.5 m/px)",
    )
    p.add_argument(
        "--fov-mask",
        default=None,
        metavar="MIN,MAX",
        help="panoramas: the student sees one random contiguous azimuth window of MIN..MAX degrees per pair and "
        "epoch (the rest filled with the normalisation mean, i.e. zero input); its pseudo label stays the "
        "teacher's, from the full view (default: full view)",
    )
    p.add_argument(
        "--levels",
        type=int,
        default=None,
        help="K': InfoNCE averaged over the first K' heat-map levels, coarse to fine (default per architecture: "
        "ccvpe-* 2 as in the paper, small all 6; see bench/RESULTS.md)",
    )
    _keep_flag(p, "T: keep the T %% of pairs with the smallest teacher-aux distance (100 = no outlier filtering)")
    p.add_argument("--epochs", type=int, default=_D.epochs, help=f"student epochs (default {_D.epochs}, the paper's)")
    p.add_argument("--lr", type=float, default=_D.lr, help=f"Adam learning rate (default {_D.lr:g}, the paper's)")
    p.add_argument(
        "--entropy-min",
        type=float,
        default=_D.entropy_min,
        help="W > 0 adds W x entropy (nats) of the student's finest heat map: the baseline that fails in the paper",
    )
    p.add_argument(
        "--select",
        choices=SELECT_RULES,
        default=_D.select,
        help="epoch selection: gt = lowest mean error (m) on target val pairs with GT; pseudo = label-free, "
        "lowest median distance (m) to held-out pseudo labels; last; auto = gt if such pairs exist, else pseudo",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=_D.holdout_pct,
        help=f"%% of pairs held out for --select pseudo (default {_D.holdout_pct:g})",
    )
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--steps-per-epoch", type=int, default=_D.steps_per_epoch, help="cap batches per epoch")
    p.add_argument("--workers", type=int, default=_D.workers, help="data-loading worker processes")


def _keep_flag(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--keep", type=float, default=_A.keep_pct, help=f"{help_text} (default {_A.keep_pct:g})")


def _split(name: Optional[str]) -> Optional[str]:
    return None if name == "all" else name


def options_from_args(args: argparse.Namespace) -> AdaptOptions:
    """The pipeline options of a parsed command line; raises ValueError naming a bad option. Built
    (and so checked) before anything expensive: no torch import, no teacher pass. Flags a command
    does not have keep their defaults (or the recipe's)."""
    given = dict(batch=args.batch, device=args.device, split=_split(args.split), topk=args.topk)
    if hasattr(args, "pseudo_gt"):
        given.update(
            pseudo_gt=args.pseudo_gt,
            levels=args.levels,
            epochs=args.epochs,
            lr=args.lr,
            entropy_min=args.entropy_min,
            seed=args.seed,
            select=args.select,
            holdout_pct=args.holdout,
            steps_per_epoch=args.steps_per_epoch,
            workers=args.workers,
        )
    if hasattr(args, "keep"):
        given["keep_pct"] = args.keep
    if hasattr(args, "eval_split"):
        given["eval_split"] = _split(args.eval_split)
    scope = getattr(args, "bn_reestimate_only", None)
    if scope is not None:
        given.update(bn_reestimate_only=True, bn_reestimate_scope=scope)
    # recipe-settable flags: only when given, so that they override the recipe and nothing else does
    for flag, name in (
        ("sigma", "sigma_px"),
        ("sigma_m", "sigma_m"),
        ("gnss_prior", "gnss_prior"),
        ("gnss_std_m", "gnss_std_m"),
        ("bn", "bn"),
        ("rounds", "rounds"),
        ("pseudo_labels", "pseudo_labels"),
        ("drive_consistency_m", "drive_consistency_m"),
    ):
        if getattr(args, flag, None) is not None:
            given[name] = getattr(args, flag)
    if getattr(args, "fov_mask", None) is not None:
        given["fov_mask"] = parse_fov_mask(args.fov_mask)
    return recipe_options(args.recipe, given)


def _run(args: argparse.Namespace):
    """The run of a command line; every handler calls it first, so a bad option fails before the
    torch import and any teacher pass."""
    opts = options_from_args(args)
    import torch

    from offline_adapt.adapt.pipeline import AdaptRun

    if args.threads:
        torch.set_num_threads(args.threads)
    return AdaptRun(args.teacher, args.data, args.out, opts)


def _pseudo_label(args: argparse.Namespace) -> int:
    run = _run(args)
    from offline_adapt.adapt.pipeline import pseudo_label_step

    labels = pseudo_label_step(run)
    print(f"pseudo labels: {len(labels.ids)} pairs in {run.dir('pseudo')}")
    return 0


def _train_student(args: argparse.Namespace) -> int:
    run = _run(args)
    from offline_adapt.adapt.pipeline import student_step
    from offline_adapt.train.training import dist_info

    path = student_step(run, args.stage)
    if dist_info()[0] == 0:
        print(f"{args.stage} student: {path}")
    return 0


def _filter(args: argparse.Namespace) -> int:
    run = _run(args)
    from offline_adapt.adapt.pipeline import filter_step

    kept = filter_step(run)
    print(f"kept {len(kept)} pairs: {run.dir('filter')}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    run = _run(args)
    from offline_adapt.adapt.pipeline import run_adapt, summary_table

    summary = run_adapt(run)
    print(summary_table(summary), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudo-label",
        help="one cached teacher pass over target pairs (step 1)",
        description="Run the teacher once over the target pairs; cache per pair the finest heat map's mode "
        "(patch pixels) and its top-k probabilities in RUN/pseudo/ (verified by checksums; rebuilt when the "
        "teacher, data set or split changed). " + UNITS,
    )
    _common(p)
    p.set_defaults(func=_pseudo_label)

    p = sub.add_parser(
        "train-student",
        help="train the auxiliary or final student on pseudo labels",
        description="Train a copy of the teacher with weighted InfoNCE against pseudo GT averaged over the "
        "first K' levels (paper eq. 4/5). --stage aux: all pseudo-labelled pairs -> RUN/aux/student.pt; "
        "--stage final: the pairs kept by `filter` -> RUN/final/student.pt. Resumes a killed run. "
        "Several GPUs/processes: torchrun --nproc_per_node N -m offline_adapt train-student ... " + UNITS,
    )
    _common(p)
    _student_flags(p)
    p.add_argument("--stage", required=True, choices=["aux", "final"])
    p.set_defaults(func=_train_student)

    p = sub.add_parser(
        "filter",
        help="keep the T %% of pairs where teacher and auxiliary student agree most",
        description="Distance (m) between teacher and auxiliary-student predictions per pair; keep the T %% "
        "smallest (ties broken by pair id). Writes RUN/filter/kept.json, filter_report.json (counts, "
        "threshold; pseudo-label error before/after when the pairs happen to have GT) and filter_hist.png.",
    )
    _common(p)
    _keep_flag(p, "T, percent of pairs kept (100 = keep all)")
    p.set_defaults(func=_filter)

    p = sub.add_parser(
        "adapt",
        help="the whole adaptation: pseudo-label -> aux student -> filter -> final student",
        description="Self-distillation adaptation to a new area without ground truth (paper defaults: "
        f"sigma {_D.sigma_px:g} px, K' 2 for CCVPE (all levels for small), T {_A.keep_pct:g} %%, Adam {_D.lr:g}, "
        f"{_D.epochs} epochs). Writes RUN/student.pt (with lineage: teacher "
        "sha256, data set, flags, selected epoch) and RUN/report/ (per-pair teacher/aux/student predictions; "
        "with GT: summary table mean/median metres, fig4 error vs teacher-student distance, fig7 histogram of "
        "the change in error). Steps whose outputs exist and verify are skipped. " + UNITS,
    )
    _common(p)
    _student_flags(p)
    p.add_argument(
        "--eval-split",
        default=_A.eval_split,
        help=f"split reported in RUN/report (default {_A.eval_split}; all = every pair)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"self-distillation rounds (default {_A.rounds}): each round's final student is the next round's "
        "teacher (pseudo labels, auxiliary student and filter redone); round k >= 2 lives in RUN/round<k>/",
    )
    p.add_argument(
        "--bn-reestimate-only",
        nargs="?",
        const="all",
        default=None,
        choices=BN_SCOPES,
        help="control: the teacher with batch-norm statistics re-estimated on the target pairs, no training; "
        "all (the default when no value is given) or ground (the ground branch's layers only)",
    )
    p.set_defaults(func=_adapt)
