# SPDX-License-Identifier: Apache-2.0
"""Student training by self-distillation (paper §3.2, eq. 4/5), and the batch-norm control.

A student is a copy of the teacher trained on target pairs with pseudo GT only: the loss is the
weighted InfoNCE of each of the first K' heat-map levels (coarse -> fine, the finest S x S map is
level K) against P_k, averaged over those K' levels (eq. 4). Matching levels use CCVPE's
temperature 0.1 (their scores are cosine similarities); the finest level, reached only when
K' = K, uses temperature 1 (its values are already logits). No orientation loss: the paper uses
the models for localization only. ``entropy_min`` W adds W x the entropy (nats) of the student's
finest heat map, the baseline the paper reports as failing.

Vehicle knowledge and regularisers (DistillOptions): ``bn`` other than ``train`` keeps batch-norm
layers in eval mode while the student trains (its running statistics stay its initial model's);
``fov_mask`` shows the student a random azimuth window of each panorama while its pseudo label
still comes from the teacher's full view; ``sigma_m`` sets the pseudo-GT width in metres.

Model selection (the epoch kept as best.pt), announced in the log and stored in the checkpoint:
- ``gt``: pairs of the target's ``val`` split that have GT: lowest mean error in metres;
- ``pseudo`` (label-free): ``holdout_pct`` % of the training pairs (chosen by a hash of their id)
  are held out of training; lowest median distance in metres between the student's prediction and
  the held-out teacher pseudo labels, i.e. the epoch that generalises the teacher's labels best
  rather than memorising them;
- ``last``: the last epoch (the paper's fixed 3-epoch schedule);
- ``auto``: ``gt`` when such val pairs exist, else ``pseudo``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from offline_adapt.adapt.options import (  # noqa: F401 (ARCH_LEVELS, SELECT_RULES re-exported)
    ARCH_LEVELS,
    BN_SCOPES,
    SELECT_RULES,
    DistillOptions,
    default_levels,
)
from offline_adapt.adapt.pseudo_labels import (
    PseudoLabels,
    pseudo_fine,
    pseudo_levels,
)
from offline_adapt.data.dataset import PairDataset
from offline_adapt.data.torch_data import PairTorchDataset
from offline_adapt.evaluation.evaluate import predict, torch_runner, validator
from offline_adapt.train.losses import TEMPERATURE, weighted_infonce
from offline_adapt.train.training import (
    default_device,
    dist_info,
    fit,
    make_loader,
    reestimate_batchnorm,
)
from xview_loc_ros.cli import require_choice
from xview_loc_ros.models import load_checkpoint

log = logging.getLogger(__name__)


def heatmap_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the entropy (nats) of softmax over all entries of each sample."""
    logp = F.log_softmax(logits.flatten(1).float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def distill_loss(config: Dict[str, Any], labels: PseudoLabels, rows: np.ndarray, opts: DistillOptions) -> Callable:
    """loss_fn(out, batch) for training.fit; ``rows[i]`` is the label row of data-set item i."""
    levels = [list(map(int, x)) for x in config["levels"]]
    n_levels, kp = len(levels), opts.levels
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    distributed = dist_info()[1] > 1
    sigma_px = opts.sigma_px_for(config.get("mpp"))  # --sigma-m is converted with the model's m/px

    def loss_fn(out, batch):
        r = rows_t[batch["index"].cpu().long()].tolist()
        fine = pseudo_fine(labels, r, opts.pseudo_gt, sigma_px).to(out.heatmaps[-1].device)
        targets = pseudo_levels(fine, levels[:kp], batch["heading_deg"])
        parts: Dict[str, float] = {}
        nces = []
        for k in range(kp):
            temp = 1.0 if k == n_levels - 1 else TEMPERATURE
            nce = weighted_infonce(out.heatmaps[k], targets[k], temp)
            parts[f"nce{k}"] = float(nce.detach())
            nces.append(nce)
        loss = torch.stack(nces).mean()
        if distributed:
            # DDP needs every forward output in the loss's graph (find_unused_parameters=True does not
            # cover outputs left out of the loss); the unsupervised levels join with zero gradient.
            rest = list(out.heatmaps[kp:]) + ([] if out.orientation is None else [out.orientation])
            loss = loss + 0.0 * sum(x.float().sum() for x in rest)
        if opts.entropy_min:
            ent = heatmap_entropy(out.heatmaps[-1])
            parts["entropy"] = float(ent.detach())
            loss = loss + opts.entropy_min * ent
        return loss, parts

    return loss_fn


def holdout_ids(ids: Sequence[str], pct: float) -> List[str]:
    """A deterministic ``pct`` % of ``ids``: the smallest sha256 of the id (at least 1 if pct > 0)."""
    if pct <= 0 or not ids:
        return []
    n = max(1, int(round(len(ids) * pct / 100.0)))
    return sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())[:n]


def pseudo_agreement_validator(tds: Any, labels: PseudoLabels, batch_size: int) -> Callable:
    """validate_fn: distance (m) between the model's predictions and the pseudo labels of ``tds``."""
    row = labels.row_of()

    def validate(model: Any) -> Dict[str, float]:
        preds, _ = predict(torch_runner(model), tds, batch_size)
        d = [
            float(
                np.hypot(p["u"] - labels.uv[row[p["id"]], 0], p["v"] - labels.uv[row[p["id"]], 1])
                * labels.mpp[row[p["id"]]]
            )
            for p in preds
        ]
        return {"pseudo_median_m": float(np.median(d)), "pseudo_mean_m": float(np.mean(d))}

    return validate


def _selection(
    data: Any, train_ids: List[str], labels: PseudoLabels, config: Dict[str, Any], opts: DistillOptions
) -> Tuple[str, List[str], Optional[Callable], str]:
    """(rule, ids to train on, validate_fn, select_key)."""
    val = [r for r in data.split("val") if r.has_gt]
    rule = opts.select
    if rule == "auto":
        rule = "gt" if val else "pseudo"
    if rule == "gt":
        if not val:
            raise ValueError(f"{data.root}: --select gt needs pairs with ground truth in the 'val' split")
        return rule, train_ids, validator(PairTorchDataset(data, val, config), opts.batch), "mean_m"
    if rule == "pseudo":
        held = set(holdout_ids(train_ids, opts.holdout_pct))
        if not held or len(held) == len(train_ids):
            raise ValueError(
                f"label-free selection needs a hold-out: --holdout {opts.holdout_pct} % of "
                f"{len(train_ids)} pairs leaves none to hold out or none to train on"
            )
        recs = {r.id: r for r in data.split(None)}
        tds = PairTorchDataset(data, [recs[i] for i in train_ids if i in held], config, require_gt=False)
        return (
            rule,
            [i for i in train_ids if i not in held],
            pseudo_agreement_validator(tds, labels, opts.batch),
            "pseudo_median_m",
        )
    return rule, train_ids, None, "mean_m"


SELECTION_TEXT = {
    "gt": "epoch with the lowest mean error (m) on the target 'val' pairs with ground truth",
    "pseudo": "label-free: epoch with the lowest median distance (m) to the teacher's pseudo labels on held-out pairs",
    "last": "last epoch (fixed schedule)",
}


def train_student(
    teacher: str,
    data_dir: str,
    labels: PseudoLabels,
    train_ids: Sequence[str],
    out_dir: str | Path,
    opts: DistillOptions,
    resume: bool = True,
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Train a fresh copy of ``teacher`` on ``train_ids`` (rows of ``labels``) -> out_dir/best.pt,
    last.pt, history.json. Returns {best_path, selection, selection_rule, best_epoch, best_value, trained_on}."""

    model, _ = load_checkpoint(teacher, map_location="cpu")
    cfg = model.config
    opts = opts.resolved(cfg)
    data = PairDataset(data_dir)
    row = labels.row_of()
    unknown = [i for i in train_ids if i not in row]
    if unknown:
        raise ValueError(
            f"{len(unknown)} training pairs have no pseudo label (e.g. {unknown[0]!r}); re-run pseudo-label"
        )
    rule, ids, validate, key = _selection(data, list(train_ids), labels, cfg, opts)
    if not ids:
        raise ValueError("no pairs left to train the student on")
    log.info("student model selection: %s", SELECTION_TEXT[rule])
    if opts.fov_mask is not None and opts.bn == "train":
        # masked panoramas shift the ground branch's batch statistics; eval-mode inference sees full views
        log.warning("--fov-mask with --bn train: the running statistics learn masked views; consider --bn frozen")
    recs = {r.id: r for r in data.split(None)}
    tds = PairTorchDataset(data, [recs[i] for i in ids], cfg, require_gt=False, fov_mask_deg=opts.fov_mask)
    rows = np.asarray([row[i] for i in ids], np.int64)
    loader = make_loader(
        tds, opts.batch, shuffle=True, seed=opts.seed, workers=opts.workers, drop_last=len(tds) > opts.batch
    )
    info = {
        "selection_rule": rule,
        "selection": SELECTION_TEXT[rule],
        "trained_on": len(ids),
        "options": opts.to_dict(),
        "sigma_px_used": opts.sigma_px_for(cfg.get("mpp")),
        **(extra or {}),
    }
    res = fit(
        model,
        loader,
        distill_loss(cfg, labels, rows, opts),
        epochs=opts.epochs,
        out_dir=out_dir,
        lr=opts.lr,
        seed=opts.seed,
        validate_fn=validate,
        select_key=key,
        resume=resume,
        device=torch.device(opts.device) if opts.device else None,
        steps_per_epoch=opts.steps_per_epoch,
        extra={"distill": info},
        progress=True,
        frozen_bn=opts.bn != "train",
    )
    return {
        "best_path": str(res.best_path),
        "best_epoch": res.best_epoch,
        "best_value": res.best_value,
        "history": res.history,
        **info,
    }


def bn_reestimate(
    teacher: str,
    data_dir: str,
    ids: Sequence[str],
    batch: int = 8,
    device: Optional[str] = None,
    seed: int = 0,
    scope: str = "all",
) -> Any:
    """The teacher with its batch-norm statistics recomputed on the target pairs ``ids``
    (cumulative average over shuffled batches, no gradient step): the ``--bn-reestimate-only``
    control, and (scope ``ground``) the first step of ``--bn ground-reestimate``. Shuffled because a
    running variance is the mean of within-batch variances: batches of neighbouring pairs (a data
    set is stored in drive order) would understate it. ``scope``: ``all`` layers, or ``ground``: only
    those of the ground branch (``CrossViewModel.ground_branch``), the aerial branch and the head
    keep the teacher's statistics. Returns the model (eval mode)."""
    require_choice("--bn-reestimate-only", scope, BN_SCOPES)

    model, _ = load_checkpoint(teacher, map_location="cpu")
    dev = torch.device(device) if device else default_device()
    model.to(dev)
    data = PairDataset(data_dir)
    recs = {r.id: r for r in data.split(None)}
    tds = PairTorchDataset(data, [recs[i] for i in ids], model.config, require_gt=False)
    # a last batch of a single sample would give degenerate variances: drop it, and only it
    loader = make_loader(tds, batch, shuffle=True, seed=seed, drop_last=len(tds) % batch == 1 and len(tds) > 1)
    within = model.ground_branch() if scope == "ground" else None
    if reestimate_batchnorm(model, loader, len(loader), dev, within) == 0:
        where = "in its ground branch " if scope == "ground" else ""
        raise ValueError(f"{teacher}: the model has no batch-norm layers {where}to re-estimate")
    return model.eval()
