# SPDX-License-Identifier: Apache-2.0
"""``xview-adapt train``: supervised training of a localizer on a pair data set (teacher / oracle)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from offline_adapt.data.dataset import PairDataset, dataset_fingerprint
from offline_adapt.evaluation.evaluate import validator
from offline_adapt.train.options import LR_SCHEDULES, TrainOptions

log = logging.getLogger(__name__)

_T = TrainOptions()  # the defaults shown and used by the flags below


def model_overrides(arch: str, meta: Any, orientation: Optional[str]) -> Dict[str, Any]:
    """Config overrides that fit a model to a data set: ``small`` adapts its input sizes, camera
    type and m/px to the data; CCVPE configs are fixed (a mismatch is reported by check_pair_config)."""
    known = None if orientation is None else orientation == "known"
    if arch != "small":
        return {} if known is None else {"known_orientation": known}
    gh, gw = meta.ground_size
    pano = meta.ground_type == "panorama"
    width = 256 if pano else min(256, max(16, int(round(64 * gw / gh / 16)) * 16))
    return {
        "aerial_size": meta.patch_size_px,
        "mpp": meta.mpp,
        "ground_type": meta.ground_type,
        "fov_deg": meta.fov_deg,
        "ground_size": [64, width],
        "known_orientation": pano if known is None else known,
    }


def supervised_loss(config: Dict[str, Any], weights: Any):
    """loss_fn(out, batch) for fit(): CCVPE's total loss against the GT Gaussian."""
    import torch

    from offline_adapt.train.losses import ccvpe_total_loss
    from offline_adapt.train.targets import gaussian_map

    levels, size = config["levels"], int(config["aerial_size"])

    def loss_fn(out, batch):
        fine = gaussian_map(size, batch["gt_uv"], weights.sigma_px).to(out.heatmaps[-1].device)
        heading = batch["heading_deg"]
        heading = heading if bool(torch.isfinite(heading).all()) else None
        return ccvpe_total_loss(out, fine, levels, heading, weights)

    return loss_fn


def build_initial_model(arch: str, overrides: Dict[str, Any], init: Optional[str]):
    from xview_loc_ros.models import build_model, load_checkpoint
    from xview_loc_ros.models.checkpoint import import_ccvpe_official

    if init is None:
        return build_model(arch, **overrides)
    if init.startswith("ccvpe-official:"):
        if arch == "small":
            raise ValueError("--init ccvpe-official: needs --config ccvpe-vigor or ccvpe-kitti")
        return import_ccvpe_official(init.split(":", 1)[1], arch, **overrides)
    model, _ = load_checkpoint(init)
    if model.config["arch"] != arch:
        raise ValueError(f"--init {init}: checkpoint is {model.config['arch']}, not {arch}")
    return model


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
    )


def check_run_folder(out: Path, resume: bool, data: str, fingerprint: str) -> None:
    """Refuse to overwrite a run without ``--resume``, and to resume a run on another data set than
    the one it was trained on (its last.pt records the data set's fingerprint)."""
    from xview_loc_ros.models.checkpoint import read_checkpoint

    last = out / "last.pt"
    if not resume:
        if last.exists() or (out / "best.pt").exists():
            raise ValueError(
                f"--out {out}: holds a training run already; pass --resume to continue it, or choose another --out"
            )
        return
    if not last.is_file():
        return  # nothing to resume: a fresh run
    ckpt = read_checkpoint(last, map_location="cpu")
    stored = ckpt.get("data_fingerprint")
    if stored is not None and stored != fingerprint:
        raise ValueError(
            f"--data {data}: not the data set the run in {out} was trained on ({ckpt.get('data')}); "
            "resume with that --data, or start another --out"
        )


def train(args: argparse.Namespace) -> Dict[str, Any]:
    o = options_from_args(args)  # first: a bad option fails before the torch import and any data loading
    import torch

    from offline_adapt.data.torch_data import PairTorchDataset
    from offline_adapt.train.losses import LossWeights
    from offline_adapt.train.training import fit, make_loader, seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    data = PairDataset(args.data)
    fingerprint = dataset_fingerprint(args.data)
    check_run_folder(Path(args.out), args.resume, args.data, fingerprint)
    seed_everything(o.seed)  # model initialisation depends on the seed too
    model = build_initial_model(args.config, model_overrides(args.config, data.meta, args.orientation), args.init)
    cfg = model.config
    train_ds = PairTorchDataset(
        data, data.split("train"), cfg, random_roll=not args.no_augment, dihedral=not args.no_augment
    )
    if len(train_ds) == 0:
        raise ValueError(f"{args.data}: no pairs in split 'train'")
    val_recs = [r for r in data.split("val") if r.has_gt]
    validate = validator(PairTorchDataset(data, val_recs, cfg), o.batch) if val_recs else None
    if validate is None:
        log.warning("%s: no validation pairs with GT; best.pt = last epoch", args.data)
    weights = LossWeights(ce=o.w_ce, infonce=o.w_infonce, ori=o.w_ori)
    loader = make_loader(
        train_ds, o.batch, shuffle=True, seed=o.seed, workers=o.workers, drop_last=len(train_ds) > o.batch
    )
    res = fit(
        model,
        loader,
        supervised_loss(cfg, weights),
        epochs=o.epochs,
        out_dir=args.out,
        lr=o.lr,
        seed=o.seed,
        validate_fn=validate,
        resume=args.resume,
        amp=None if args.amp == "auto" else args.amp == "on",
        device=torch.device(args.device) if args.device else None,
        steps_per_epoch=o.steps_per_epoch,
        lr_schedule=o.lr_schedule,
        bn_reestimate_batches=o.bn_reestimate,
        extra={
            "data": str(args.data),
            "data_fingerprint": fingerprint,
            "train_args": {k: v for k, v in vars(args).items() if k != "func"},
        },
    )
    return {"best_value": res.best_value, "best_epoch": res.best_epoch, "history": res.history}


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
        "--data", required=True, help="pair data set folder (train split for training, val split for selection)"
    )
    p.add_argument("--config", required=True, choices=["small", "ccvpe-vigor", "ccvpe-kitti"], help="architecture")
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
        help="start from a checkpoint (.pt of this project) or ccvpe-official:PATH (a released CCVPE state_dict)",
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
    from offline_adapt.train.training import dist_info

    res = train(args)
    if dist_info()[0] == 0:
        print(f"best epoch {res['best_epoch']}: {res['best_value']}" if res["best_value"] is not None else "done")
    return 0
