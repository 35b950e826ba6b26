# SPDX-License-Identifier: Apache-2.0
"""Evaluation plots (matplotlib, Agg): error CDFs and a grid of ground / aerial + heat map."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import numpy as np

from xview_loc_ros.fsutil import atomic_path
from xview_loc_ros.heatmap import overlay_heatmap


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, imported on first use: the modules that plot
    stay importable (and quick to import) where matplotlib is not needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def error_cdf(errors: Dict[str, Sequence[float]], path: str | os.PathLike, unit: str = "m") -> None:
    """Cumulative distribution of localization errors, one curve per entry of ``errors``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, e in errors.items():
        x = np.sort(np.asarray(e, float))
        if x.size:
            ax.plot(x, np.arange(1, x.size + 1) / x.size, label=f"{name} (median {np.median(x):.2f} {unit})")
    ax.set_xlabel(f"localization error [{unit}]")
    ax.set_ylabel("fraction of pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def pair_grid(tds: Any, preds: List[Dict[str, Any]], logits: List[np.ndarray], path: str | os.PathLike) -> None:
    """Rows of (ground image, aerial patch with heat-map overlay): true position green circle,
    predicted red cross. ``preds``/``logits`` aligned with the first pairs of ``tds``."""
    plt = pyplot()
    n = len(logits)
    if n == 0:
        return
    fig, axes = plt.subplots(n, 2, figsize=(7, 2.2 * n), gridspec_kw={"width_ratios": [2.2, 1]}, squeeze=False)
    for k in range(n):
        rec = tds.records[k]
        ground = tds.data.load_ground(rec)
        aerial = tds.data.load_aerial(rec)
        ax_g, ax_a = axes[k]
        ax_g.imshow(ground)
        ax_g.set_title(f"{rec.id}", fontsize=7)
        ax_a.imshow(overlay_heatmap(aerial, logits[k]), extent=(0, aerial.shape[1], aerial.shape[0], 0))
        p = preds[k]
        if "gt_u" in p:
            ax_a.plot(p["gt_u"], p["gt_v"], "o", mfc="none", mec="lime", ms=8, mew=1.5)
            ax_a.set_title(f"err {p['err_m']:.2f} m", fontsize=7)
        ax_a.plot(p["u"], p["v"], "x", color="red", ms=8, mew=1.5)
        for ax in (ax_g, ax_a):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
