# SPDX-License-Identifier: Apache-2.0
"""Supervised training of a localizer (teacher, oracle, source model) on one or several labelled
pair data sets: what `xview-adapt train` runs.

Several data sets (e.g. many cities of the source styles) train one model when they share the
model's input geometry (patch size and m/px, ground camera type, size and FOV: checked per data set).
``mix`` says how a batch draws from them: "proportional" (every pair equally likely: big data
sets dominate) or "balanced" (every data set equally likely, pairs of small ones repeat).
Validation runs over the union of their "val" splits.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch.utils.data import ConcatDataset

from offline_adapt.data.augment import Photometric
from offline_adapt.data.dataset import PairDataset, dataset_fingerprint
from offline_adapt.data.torch_data import PairTorchDataset
from offline_adapt.evaluation.evaluate import validator
from offline_adapt.train.losses import LossWeights, ccvpe_total_loss
from offline_adapt.train.options import SupervisedRun
from offline_adapt.train.targets import gaussian_map
from offline_adapt.train.training import fit, make_loader, seed_everything
from xview_loc_ros.models import CrossViewModel, build_model, load_checkpoint
from xview_loc_ros.models.checkpoint import RELEASED_SOURCES, import_released, read_checkpoint, split_released_init

log = logging.getLogger(__name__)


def model_overrides(arch: str, meta: Any, orientation: Optional[str], width: Optional[int] = None) -> Dict[str, Any]:
    """Config overrides that fit a model to a data set: ``small`` adapts its input sizes, camera
    type and m/px to the data (and takes ``width``); CCVPE configs are fixed (a mismatch is reported by
    check_pair_config)."""
    known = None if orientation is None else orientation == "known"
    if arch != "small":
        return {} if known is None else {"known_orientation": known}
    gh, gw = meta.ground_size
    pano = meta.ground_type == "panorama"
    ground_w = 256 if pano else min(256, max(16, int(round(64 * gw / gh / 16)) * 16))
    return {
        "aerial_size": meta.patch_size_px,
        "mpp": meta.mpp,
        "ground_type": meta.ground_type,
        "fov_deg": meta.fov_deg,
        "ground_size": [64, ground_w],
        "known_orientation": pano if known is None else known,
        **({} if width is None else {"width": width}),
    }


def supervised_loss(config: Dict[str, Any], weights: LossWeights) -> Callable[[Any, Dict[str, Any]], Any]:
    """loss_fn(out, batch) for fit(): CCVPE's total loss against the GT Gaussian."""
    levels, size = config["levels"], int(config["aerial_size"])

    def loss_fn(out: Any, batch: Dict[str, Any]) -> Any:
        fine = gaussian_map(size, batch["gt_uv"], weights.sigma_px).to(out.heatmaps[-1].device)
        heading = batch["heading_deg"]
        heading = heading if bool(torch.isfinite(heading).all()) else None
        return ccvpe_total_loss(out, fine, levels, heading, weights)

    return loss_fn


def build_initial_model(arch: str, overrides: Dict[str, Any], init: Optional[str]) -> CrossViewModel:
    """An untrained ``arch`` model, or ``init``: this project's checkpoint, or SOURCE:PATH for a released
    state_dict (ccvpe-official:PATH, adapting-cvl:PATH; see RELEASED_SOURCES)."""
    if init is None:
        return build_model(arch, **overrides)
    released = split_released_init(init)
    if released is not None:
        source, path = released
        archs = RELEASED_SOURCES[source].archs
        if arch not in archs:
            raise ValueError(f"--init {source}: needs --config {' or '.join(archs)}")
        return import_released(path, arch, source, **overrides)
    model, _ = load_checkpoint(init)
    if model.config["arch"] != arch:
        raise ValueError(f"--init {init}: checkpoint is {model.config['arch']}, not {arch}")
    return model


def data_fingerprint(data: Sequence[str]) -> str:
    """One data set's fingerprint, or for several a fingerprint of theirs in the given order."""
    prints = [dataset_fingerprint(d) for d in data]
    if len(prints) == 1:
        return prints[0]
    return "multi:" + hashlib.sha256("\n".join(prints).encode()).hexdigest()


def check_run_folder(out: Path, resume: bool, data: str, fingerprint: str) -> None:
    """Refuse to overwrite a run without ``--resume``, and to resume a run on other data than the
    data it was trained on (its last.pt records the data's fingerprint)."""
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
            f"--data {data}: not the data the run in {out} was trained on ({ckpt.get('data')}); "
            "resume with that --data, or start another --out"
        )


def mix_weights(sizes: Sequence[int], mix: str) -> Optional[List[float]]:
    """Per-pair sampling weights of concatenated data sets of ``sizes`` pairs: None for
    "proportional" (a plain shuffle), 1 / size for "balanced" (each data set equally likely)."""
    if mix == "proportional":
        return None
    if mix == "balanced":
        return [1.0 / n for n in sizes for _ in range(n)]
    raise ValueError(f"--mix must be proportional or balanced, got {mix!r}")


def train_supervised(run: SupervisedRun) -> Dict[str, Any]:
    """Train; returns {"best_value", "best_epoch", "history"} (validation mean error, metres)."""
    o = run.options
    if run.threads:
        torch.set_num_threads(run.threads)
    sets = [PairDataset(d) for d in run.data]
    label = " ".join(str(d) for d in run.data)
    fingerprint = data_fingerprint(run.data)
    check_run_folder(Path(run.out), run.resume, label, fingerprint)
    seed_everything(o.seed)  # model initialisation depends on the seed too
    model = build_initial_model(run.arch, model_overrides(run.arch, sets[0].meta, run.orientation, run.width), run.init)
    cfg = model.config
    photometric = Photometric(strength=o.photometric) if o.photometric > 0 else None
    train_sets = []
    for d, ds in zip(run.data, sets):
        tds = PairTorchDataset(  # checks that the data set fits the model's geometry
            ds,
            ds.split("train"),
            cfg,
            random_roll=run.geometric_augment,
            dihedral=run.geometric_augment,
            photometric=photometric,
        )
        if len(tds) == 0:
            raise ValueError(f"{d}: no pairs in split 'train'")
        train_sets.append(tds)
    train_ds: ConcatDataset[Dict[str, Any]] = ConcatDataset(train_sets)
    val_sets = [PairTorchDataset(ds, [r for r in ds.split("val") if r.has_gt], cfg) for ds in sets]
    val_sets = [v for v in val_sets if len(v)]
    validate = validator(val_sets, o.batch) if val_sets else None
    if validate is None:
        log.warning("%s: no validation pairs with GT; best.pt = last epoch", label)
    loader = make_loader(
        train_ds,
        o.batch,
        shuffle=True,
        seed=o.seed,
        workers=o.workers,
        drop_last=len(train_ds) > o.batch,
        sample_weights=mix_weights([len(t) for t in train_sets], o.mix),
    )
    weights = LossWeights(ce=o.w_ce, infonce=o.w_infonce, ori=o.w_ori)
    res = fit(
        model,
        loader,
        supervised_loss(cfg, weights),
        epochs=o.epochs,
        out_dir=run.out,
        lr=o.lr,
        seed=o.seed,
        validate_fn=validate,
        resume=run.resume,
        amp=run.amp,
        device=torch.device(run.device) if run.device else None,
        steps_per_epoch=o.steps_per_epoch,
        lr_schedule=o.lr_schedule,
        bn_reestimate_batches=o.bn_reestimate,
        extra={
            "data": str(run.data[0]) if len(run.data) == 1 else [str(d) for d in run.data],
            "data_fingerprint": fingerprint,
            "train_options": o.to_dict(),
            **(run.extra or {}),
        },
    )
    return {"best_value": res.best_value, "best_epoch": res.best_epoch, "history": res.history}
