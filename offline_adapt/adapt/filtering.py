# SPDX-License-Identifier: Apache-2.0
"""Outlier filtering (paper §3.2): keep the pairs on which teacher and auxiliary student agree.

The distance per pair is between the teacher's and the auxiliary student's predicted positions,
in metres on the ground (patch pixels x the pair's m/px). The T % smallest are kept:
n_keep = floor(N * T / 100 + 0.5) (at least 1 when T > 0); ties in distance are broken by pair id
(ascending) so the kept set is deterministic.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from offline_adapt.evaluation.plots import pyplot
from xview_loc_ros.fsutil import atomic_path, atomic_write_json

KEPT_NAME, REPORT_NAME, HIST_NAME = "kept.json", "filter_report.json", "filter_hist.png"


def prediction_distances_m(
    teacher: Sequence[Mapping[str, Any]], student: Sequence[Mapping[str, Any]], mpp: Mapping[str, float]
) -> Dict[str, float]:
    """Per pair id: metres between two prediction lists (dicts with id, u, v in patch pixels)."""
    s = {p["id"]: p for p in student}
    missing = [p["id"] for p in teacher if p["id"] not in s]
    if missing:
        raise ValueError(f"{len(missing)} pairs lack a student prediction (e.g. {missing[0]!r})")
    return {
        p["id"]: math.hypot(p["u"] - s[p["id"]]["u"], p["v"] - s[p["id"]]["v"]) * float(mpp[p["id"]]) for p in teacher
    }


def n_keep(n: int, keep_pct: float) -> int:
    if not 0 <= keep_pct <= 100:
        raise ValueError(f"--keep must be a percentage in [0, 100], got {keep_pct}")
    k = int(math.floor(n * keep_pct / 100.0 + 0.5))
    return max(k, 1) if keep_pct > 0 and n else k


def select_kept(distances: Mapping[str, float], keep_pct: float) -> List[str]:
    """Ids of the ``keep_pct`` % smallest distances, ordered by (distance, id)."""
    order = sorted(distances, key=lambda i: (distances[i], i))
    return order[: n_keep(len(order), keep_pct)]


def filter_report(
    distances: Mapping[str, float], kept: Sequence[str], keep_pct: float, errors_m: Optional[Mapping[str, float]] = None
) -> Dict[str, Any]:
    """Counts, the distance threshold, and (when the teacher's true errors are known: a diagnostic
    only, never used for the decision) the pseudo-label error before and after filtering."""
    d = np.asarray(list(distances.values()), float)
    kept_set = set(kept)
    dk = np.asarray([distances[i] for i in kept], float)
    rep: Dict[str, Any] = {
        "keep_pct": keep_pct,
        "count": len(d),
        "kept": len(kept),
        "dropped": len(d) - len(kept),
        "threshold_m": float(dk.max()) if dk.size else None,
        "distance_mean_m": float(d.mean()) if d.size else None,
        "distance_median_m": float(np.median(d)) if d.size else None,
    }
    if errors_m:
        e_all = np.asarray([errors_m[i] for i in distances if i in errors_m], float)
        e_kept = np.asarray([errors_m[i] for i in kept if i in errors_m], float)
        e_drop = np.asarray([errors_m[i] for i in distances if i in errors_m and i not in kept_set], float)
        for name, e in (("all", e_all), ("kept", e_kept), ("dropped", e_drop)):
            if e.size:
                rep[f"pseudo_label_error_{name}_mean_m"] = float(e.mean())
                rep[f"pseudo_label_error_{name}_median_m"] = float(np.median(e))
    return rep


def write_filter_outputs(
    out_dir: str | os.PathLike, distances: Mapping[str, float], kept: Sequence[str], report: Mapping[str, Any]
) -> None:
    """OUT/kept.json (ids), OUT/filter_report.json, OUT/filter_hist.png (distance histogram)."""
    out = Path(out_dir)
    atomic_write_json(out / REPORT_NAME, dict(report))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    d = np.asarray(list(distances.values()), float)
    ax.hist(d, bins=40, color="tab:blue", alpha=0.8)
    if report.get("threshold_m") is not None:
        ax.axvline(
            report["threshold_m"],
            color="red",
            ls="--",
            label=f"keep {report['kept']}/{report['count']} (<= {report['threshold_m']:.2f} m)",
        )
        ax.legend(fontsize=8)
    ax.set_xlabel("teacher - auxiliary student distance [m]")
    ax.set_ylabel("pairs")
    fig.tight_layout()
    with atomic_path(out / HIST_NAME) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    atomic_write_json(out / KEPT_NAME, {"keep_pct": report["keep_pct"], "ids": list(kept)})  # last: marks the step done
