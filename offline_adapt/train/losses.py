# SPDX-License-Identifier: Apache-2.0
"""CCVPE's training losses, generalised to per-pixel weights so that pseudo labels plug in.

Total (CCVPE defaults) = CE(finest logits) + 1e4 * mean_k InfoNCE_k + 10 * L_ori; the paper's
coarse-only supervision restricts the InfoNCE mean to the first K' levels (``supervise_levels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from offline_adapt.train.options import CE_WEIGHT, INFONCE_WEIGHT, ORI_WEIGHT, SIGMA_PX
from offline_adapt.train.targets import gaussian_map, level_targets

TEMPERATURE = 0.1
POS_THRESHOLD = 0.01


def weighted_infonce(
    scores: torch.Tensor, weights: torch.Tensor, temperature: float = TEMPERATURE, pos_threshold: float = POS_THRESHOLD
) -> torch.Tensor:
    """-sum_pos w * log softmax(scores / T) / sum_pos w, softmax over all n*h*w entries of each
    sample, positives = entries with weight > ``pos_threshold``, sums over the whole batch
    (CCVPE's infoNCE == the paper's eq. 5 with pseudo-GT weights)."""
    if scores.shape != weights.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and weights {tuple(weights.shape)} differ in shape")
    logp = F.log_softmax(scores.flatten(1).float() / temperature, dim=1)
    w = weights.flatten(1).float()
    w = torch.where(w > pos_threshold, w, torch.zeros_like(w))
    return -(w * logp).sum() / w.sum().clamp_min(1e-12)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dense soft-label cross entropy: target (B, S, S) normalised to sum 1 per sample, logits
    (B, 1, S, S) softmaxed over all pixels; mean over the batch."""
    t = target.flatten(1).float()
    t = t / t.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return -(t * F.log_softmax(logits.flatten(1).float(), dim=1)).sum() / logits.shape[0]


def orientation_loss(orientation: torch.Tensor, heading_deg: torch.Tensor, weight_map: torch.Tensor) -> torch.Tensor:
    """sum_pixels ||(cos a, sin a) - o||^2 * weight / B, with a = -heading (model convention,
    counter-clockwise from north), ``weight_map`` (B, S, S) the unnormalised GT Gaussian."""
    a = -torch.deg2rad(heading_deg.float())
    gt = torch.stack([torch.cos(a), torch.sin(a)], dim=1)[:, :, None, None]
    err = ((orientation.float() - gt) ** 2).sum(dim=1)
    return (err * weight_map.float()).sum() / orientation.shape[0]


@dataclass
class LossWeights:
    """Weights of the total loss (CCVPE defaults). ``supervise_levels``: indices of the matching
    levels whose InfoNCE is averaged (None = all; the paper's K' = first K' levels)."""

    ce: float = CE_WEIGHT
    infonce: float = INFONCE_WEIGHT
    ori: float = ORI_WEIGHT
    supervise_levels: Optional[Sequence[int]] = None
    temperature: float = TEMPERATURE
    sigma_px: float = SIGMA_PX


def ccvpe_total_loss(
    out,
    fine_target: torch.Tensor,
    levels: Sequence[Sequence[int]],
    heading_deg: Optional[torch.Tensor] = None,
    weights: LossWeights = LossWeights(),
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Total loss for a ModelOutput ``out`` against a fine target map (B, S, S) (GT Gaussian or
    pseudo GT). ``heading_deg`` (B,): compass heading of the ground image's centre column as fed to
    the model (0 for north-aligned panoramas), lifts matching-level labels onto orientation bins and
    supervises the orientation output; None = unknown. Returns (loss, parts as floats)."""
    n_match = len(out.heatmaps) - 1
    targets = level_targets(fine_target, levels, heading_deg, mode="max")
    sel = list(range(n_match)) if weights.supervise_levels is None else list(weights.supervise_levels)
    if not sel or min(sel) < 0 or max(sel) >= n_match:
        raise ValueError(f"supervise_levels {sel} must name matching levels 0..{n_match - 1}")
    parts: Dict[str, float] = {}
    total = fine_target.new_zeros(())
    if weights.infonce:
        nces = []
        for k in sel:
            nce = weighted_infonce(out.heatmaps[k], targets[k], weights.temperature)
            parts[f"nce{k}"] = float(nce.detach())
            nces.append(nce)
        total = total + weights.infonce * torch.stack(nces).mean()
    if weights.ce:
        ce = soft_cross_entropy(out.heatmaps[-1], fine_target)
        parts["ce"] = float(ce.detach())
        total = total + weights.ce * ce
    if weights.ori and out.orientation is not None and heading_deg is not None:
        lo = orientation_loss(out.orientation, heading_deg, fine_target)
        parts["ori"] = float(lo.detach())
        total = total + weights.ori * lo
    parts["total"] = float(total.detach())
    return total, parts


def gt_fine_target(gt_uv: torch.Tensor, size: int, sigma_px: float = SIGMA_PX) -> torch.Tensor:
    """The GT Gaussian (B, S, S) for ground-truth pixels ``gt_uv`` (B, 2)."""
    return gaussian_map(size, gt_uv, sigma_px)
