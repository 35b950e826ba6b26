"""Pseudo ground truth from cached teacher labels (paper §3.2, eq. 3).

X, the finest-resolution pseudo GT (B, S, S), is either mode-based (a Gaussian of ``sigma_px``
finest pixels centred on the teacher's mode, value 1 at the centre) or heat-map based (the "-M"
ablation: the teacher's probabilities scaled so that their peak is 1, so that InfoNCE's positive
threshold means the same for both). P_k = downsample_k(X) by summing the fine pixels each cell
covers (mass preserving); levels with orientation bins get X lifted with the known heading.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch

from .pseudo_labels import PseudoLabels
from .targets import SIGMA_PX, gaussian_map, level_targets

PSEUDO_GT_MODES = ("mode", "heatmap")


def pseudo_fine(labels: PseudoLabels, rows: Sequence[int], mode: str = "mode", sigma_px: float = SIGMA_PX) -> torch.Tensor:
    """X for the label ``rows``: (B, S, S) float32, peak 1."""
    if mode == "mode":
        return gaussian_map(labels.size_px, torch.from_numpy(labels.uv[np.asarray(rows, dtype=np.int64)]), sigma_px)
    if mode == "heatmap":
        h = torch.from_numpy(labels.heatmaps(rows))
        return h / h.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    raise ValueError(f"pseudo-GT mode must be one of {PSEUDO_GT_MODES}, got {mode!r}")


def pseudo_levels(fine: torch.Tensor, levels: Sequence[Sequence[int]], heading_deg: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """P_1..P_K (coarse -> fine), each (B, n_ori, h, w), from X (B, S, S); ``heading_deg`` (B,) the
    compass heading of the ground image as fed to the model (None or NaN = unknown: spread evenly)."""
    if heading_deg is not None and not bool(torch.isfinite(heading_deg).all()):
        heading_deg = None
    return level_targets(fine, levels, heading_deg, mode="sum")
