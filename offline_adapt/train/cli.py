# SPDX-License-Identifier: Apache-2.0
"""``xview-adapt train``: supervised training of a localizer on one or several pair data sets
(teacher, oracle, source model); the work is :func:`offline_adapt.train.supervised.train_supervised`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from offline_adapt.train.options import LR_SCHEDULES, MIXES, SupervisedRun, TrainOptions

log = logging.getLogger(__name__)

_T = TrainOptions()  # the defaults shown and used by the flags below


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The training options of a parsed command line; raises ValueError naming a bad option."""
    return TrainOptions(
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        lr_schedule=args.lr_schedule,
        bn_reestimate=args.bn_reestimate,
        steps_per_epoch=args.steps_per_epoch,
        workers=args.workers,
        w_ce=args.w_ce,
        w_infonce=args.w_infonce,
        w_ori=args.w_ori,
        photometric=args.photometric,
        mix=args.mix,
    )


def run_from_args(args: argparse.Namespace) -> SupervisedRun:
    """The training run of a parsed command line; options are checked first (before torch loads)."""
    options = options_from_args(args)
    return SupervisedRun(
        data=list(args.data),
        arch=args.config,
        out=Path(args.out),
        options=options,
        init=args.init,
        orientation=args.orientation,
        width=args.width,
        resume=args.resume,
        geometric_augment=not args.no_augment,
        device=args.device,
        amp=None if args.amp == "auto" else args.amp == "on",
        threads=args.threads,
        extra={"train_args": {k: v for k, v in vars(args).items() if k != "func"}},
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="supervised training on a pair data set with ground truth",
        description="Train a cross-view localizer with CCVPE's losses (soft cross-entropy on the finest "
        "heat map + 1e4 x mean InfoNCE over the matching levels + 10 x orientation loss), Adam. Writes "
        "RUN/last.pt every epoch (resumable), RUN/best.pt (lowest validation mean error in metres on the "
        "'val' split), RUN/history.json. Multi-GPU: torchrun --nproc_per_node N -m offline_adapt train ...",
    )
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="DATASET",
        help="pair data set folder(s) (train splits for training, val splits for selection); several must share "
        "the model's input geometry",
    )
    p.add_argument(
        "--mix",
        choices=MIXES,
        default=_T.mix,
        help="with several --data: proportional (every pair equally likely) or balanced (every data set equally likely)",
    )
    p.add_argument(
        "--photometric",
        type=float,
        default=_T.photometric,
        metavar="STRENGTH",
        help="photometric augmentation of both views (colour, gamma, blur, noise, JPEG; 1 = the documented ranges, "
        f"0 = off; default {_T.photometric:g})",
    )
    p.add_argument("--config", required=True, choices=["small", "ccvpe-vigor", "ccvpe-kitti"], help="architecture")
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help="small only: channel multiplier of both encoders (1 = default, 2 or 3; inference cost in bench/RESULTS.md)",
    )
    p.add_argument("--out", required=True, help="run folder (RUN/best.pt, RUN/last.pt)")
    p.add_argument("--seed", type=int, default=_T.seed)
    p.add_argument("--epochs", type=int, default=_T.epochs, help=f"default {_T.epochs}")
    p.add_argument(
        "--batch", type=int, default=_T.batch, help=f"pairs per step (per process under torchrun; default {_T.batch})"
    )
    p.add_argument("--lr", type=float, default=_T.lr, help=f"Adam learning rate (default {_T.lr:g})")
    p.add_argument(
        "--init",
        default=None,
        help="start from a checkpoint (.pt of this project), ccvpe-official:PATH (a released CCVPE state_dict) "
        "or adapting-cvl:PATH (a released Adapting_CVL VIGOR state_dict; reflect padding)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=_T.lr_schedule,
        help="constant (CCVPE) or cosine decay to 5%% of --lr over the epochs",
    )
    p.add_argument(
        "--bn-reestimate",
        type=int,
        default=_T.bn_reestimate,
        metavar="BATCHES",
        help=f"after each epoch re-estimate BatchNorm statistics over this many training batches "
        f"(0: off; default {_T.bn_reestimate})",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN/last.pt (same config and data set required); without it an existing run is "
        "refused, not overwritten",
    )
    p.add_argument(
        "--orientation",
        choices=["known", "unknown"],
        default=None,
        help="known: panoramas north-aligned with the recorded heading; unknown: the model predicts "
        "orientation (default: known for panoramas, unknown for pinhole)",
    )
    p.add_argument(
        "--no-augment",
        action="store_true",
        help="no augmentation (random panorama roll for unknown orientation; random 90-degree rotations and mirroring of the world)",
    )
    p.add_argument("--steps-per-epoch", type=int, default=_T.steps_per_epoch, help="cap batches per epoch")
    p.add_argument("--workers", type=int, default=_T.workers, help="data-loading worker processes")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: best available)")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="mixed precision (auto: on for CUDA)")
    p.add_argument(
        "--w-ce", type=float, default=_T.w_ce, help=f"weight of the finest-level cross-entropy ({_T.w_ce:g})"
    )
    p.add_argument(
        "--w-infonce",
        type=float,
        default=_T.w_infonce,
        help=f"weight of the mean InfoNCE over levels ({_T.w_infonce:g})",
    )
    p.add_argument("--w-ori", type=float, default=_T.w_ori, help=f"weight of the orientation loss ({_T.w_ori:g})")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    run = run_from_args(args)  # first: a bad option fails before torch is imported
    from offline_adapt.train.supervised import train_supervised
    from offline_adapt.train.training import dist_info

    res = train_supervised(run)
    if dist_info()[0] == 0:
        print(f"best epoch {res['best_epoch']}: {res['best_value']}" if res["best_value"] is not None else "done")
    return 0
