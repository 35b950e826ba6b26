# SPDX-License-Identifier: Apache-2.0
"""Training targets: Gaussian position maps and their per-level versions (ground truth or pseudo GT).

Conventions: positions are continuous patch pixels (u east, v south); a map cell (i, j) of an S x S
map has its centre at (j + 0.5, i + 0.5). Orientation bins follow the model convention: bin c of
an n-bin level stands for compass heading c * 360 / n degrees (camera forward direction of the
image as fed to the model: 0 for north-aligned panoramas).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from offline_adapt.train.options import SIGMA_PX


def gaussian_map(size: int, centers_uv: torch.Tensor, sigma_px: float = SIGMA_PX) -> torch.Tensor:
    """(B, size, size) unnormalised Gaussians exp(-d^2 / 2 sigma^2), d from each cell centre to the
    continuous centre (u, v) in ``centers_uv`` (B, 2); value 1 at the centre itself."""
    c = torch.as_tensor(centers_uv, dtype=torch.float32)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"centers_uv: expected shape (B, 2), got {tuple(c.shape)}")
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    grid = torch.arange(size, dtype=torch.float32, device=c.device) + 0.5
    du = (grid[None, :] - c[:, 0:1]) ** 2  # (B, size) over columns
    dv = (grid[None, :] - c[:, 1:2]) ** 2  # (B, size) over rows
    return torch.exp(-(dv[:, :, None] + du[:, None, :]) / (2.0 * sigma_px**2))


def orientation_weights(heading_deg: torch.Tensor, n_ori: int) -> torch.Tensor:
    """(B, n_ori) two-bin linear interpolation of a compass heading between adjacent bins
    (CCVPE's scheme): bin floor(h / step) gets 1 - frac, the next bin (cyclic) gets frac."""
    h = torch.as_tensor(heading_deg, dtype=torch.float32).reshape(-1) % 360.0
    pos = h / (360.0 / n_ori)
    lo = torch.floor(pos)
    frac = pos - lo
    lo = lo.long() % n_ori
    w = torch.zeros(h.shape[0], n_ori, device=h.device)
    w.scatter_add_(1, lo[:, None], (1 - frac)[:, None])
    w.scatter_add_(1, ((lo + 1) % n_ori)[:, None], frac[:, None])
    return w


def level_targets(
    fine: torch.Tensor,
    levels: Sequence[Sequence[int]],
    orientation_deg: Optional[torch.Tensor] = None,
    mode: str = "max",
) -> List[torch.Tensor]:
    """Per-level targets (B, n_ori, h, w) from a fine map (B, S, S), levels [[cells, n_ori], ...].

    ``mode="max"``: each cell takes the maximum of the fine cells it covers (CCVPE's MaxPool labels,
    for InfoNCE weights); ``"sum"``: the sum (mass-preserving, for distributions). Levels with
    n_ori > 1 are lifted onto the orientation bins with :func:`orientation_weights` of
    ``orientation_deg`` (B,); when it is None (heading unknown), every bin gets the spatial map
    ("max") or 1/n_ori of it ("sum"), i.e. the position label marginalised over orientation.
    """
    if mode not in ("max", "sum"):
        raise ValueError(f"mode must be 'max' or 'sum', got {mode!r}")
    if fine.ndim != 3 or fine.shape[1] != fine.shape[2]:
        raise ValueError(f"fine map: expected (B, S, S), got {tuple(fine.shape)}")
    s = fine.shape[-1]
    x = fine[:, None]
    out = []
    for cells, n in levels:
        cells, n = int(cells), int(n)
        if s % cells:
            raise ValueError(f"level with {cells} cells does not divide the {s}-px fine map")
        f = s // cells
        if f == 1:
            y = x
        elif mode == "max":
            y = F.max_pool2d(x, f)
        else:
            y = F.avg_pool2d(x, f) * (f * f)
        if n > 1:
            if orientation_deg is None:
                y = y.expand(-1, n, -1, -1) / (n if mode == "sum" else 1)
            else:
                y = y * orientation_weights(orientation_deg, n).to(y.device)[:, :, None, None]
        out.append(y.contiguous())
    return out
