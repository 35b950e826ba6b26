# SPDX-License-Identifier: Apache-2.0
"""Retrieval options (``xview-adapt index-map``, ``xview-adapt train-retrieval``): the one place their defaults
are written and checked. No torch here: the command line builds (and so validates) these before anything heavy."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

from xview_loc_ros.cli import require_at_least, require_choice, require_in_range, require_positive

LABELS = ("none", "gt")
POSITIVES = ("fix", "heatmap")
MAX_INDEX_ENTRIES = 5_000_000


def parse_center(text: str) -> Tuple[float, float]:
    """``"LAT,LON"`` degrees -> (lat, lon); ValueError naming --center otherwise."""
    parts = str(text).split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--center must be LAT,LON in degrees (e.g. 37.7749,-122.4194), got {text!r}") from None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"--center must be finite degrees, got {text!r}")
    require_in_range("--center latitude", lat, -85.0511, 85.0511)
    require_in_range("--center longitude", lon, -180.0, 180.0)
    return lat, lon


@dataclass(frozen=True)
class IndexMapOptions:
    """``xview-adapt index-map``: patch centres every ``stride_m`` metres east/north of ``center`` within
    ``radius_m`` (a disc); ``batch`` patches per network call; ``chunk`` entries per resumable work file;
    entries whose patch lacks more than ``max_missing`` of its imagery are left out of the index."""

    center: Tuple[float, float]
    radius_m: float
    stride_m: float
    batch: int = 32
    chunk: int = 512
    max_missing: float = 0.2
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        require_positive("--radius-m", self.radius_m)
        require_positive("--stride-m", self.stride_m)
        if self.stride_m > 2 * self.radius_m:
            raise ValueError(
                f"--stride-m {self.stride_m:g} exceeds the area's diameter (2 x --radius-m {self.radius_m:g})"
            )
        n = (2 * math.floor(self.radius_m / self.stride_m) + 1) ** 2
        if n > MAX_INDEX_ENTRIES * 1.3:
            raise ValueError(
                f"--radius-m {self.radius_m:g} at --stride-m {self.stride_m:g} makes about {n:.3g} entries "
                f"(limit {MAX_INDEX_ENTRIES:.0e}); use a larger stride or a smaller radius"
            )
        require_at_least("--batch", self.batch, 1)
        require_at_least("--chunk", self.chunk, 1)
        require_in_range("--max-missing", self.max_missing, 0.0, 1.0)
        require_at_least("--threads", self.threads, 1, allow_none=True)


@dataclass(frozen=True)
class TrainRetrievalOptions:
    """``xview-adapt train-retrieval``. Label-free by default (``labels="none"``): each ground image's positive
    aerial patch is centred on its GNSS fix (``positives="fix"``) or on the fine model's own heat-map mode in the
    fix-centred patch (``"heatmap"``); ``rounds`` EM rounds re-assign it among candidate centres on a grid
    (``candidate_step_m`` apart, ``candidate_radius_m`` around that centre) to the one the current model finds
    most similar; ``mutual_nn`` keeps only pairs whose ground and aerial descriptors are each other's nearest
    neighbour (within ``mutual_nn_m`` metres) over the data set, or among pairs centred within
    ``mutual_nn_radius_m`` of each other when > 0. ``labels="gt"`` centres positives on the true
    position instead (a supervised reference; no re-assignment, no cleaning). Loss: symmetric InfoNCE with
    in-batch negatives (negatives whose centres lie within ``negative_exclude_m`` of the anchor's are masked)
    plus ``consistency`` x the mean squared drift of the backbones' head features from the initial model's
    (zero when ``freeze_backbone``, which trains the retrieval heads only). ``retrieval_dim``/``retrieval_pool``
    add a head to a model without one. ``jitter_m``: positives are drawn among candidates this close to the
    assigned one (the index grid never sits exactly on the vehicle)."""

    labels: str = "none"
    positives: str = "heatmap"
    mutual_nn: bool = True
    mutual_nn_m: float = 10.0
    mutual_nn_radius_m: float = 0.0
    rounds: int = 2
    epochs: int = 6
    candidate_radius_m: float = 6.0
    candidate_step_m: float = 3.0
    jitter_m: float = 3.0
    negative_exclude_m: float = 15.0
    consistency: float = 1.0
    freeze_backbone: bool = True
    batch: int = 32
    lr: float = 1e-3
    temperature: float = 0.07
    seed: int = 0
    retrieval_dim: int = 128
    retrieval_pool: Optional[str] = None
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        require_choice("--labels", self.labels, LABELS)
        require_choice("--positives", self.positives, POSITIVES)
        require_positive("--mutual-nn-m", self.mutual_nn_m)
        require_at_least("--mutual-nn-radius-m", self.mutual_nn_radius_m, 0.0)
        require_at_least("--rounds", self.rounds, 0)
        require_at_least("--epochs", self.epochs, 1)
        require_at_least("--candidate-radius-m", self.candidate_radius_m, 0.0)
        require_positive("--candidate-step-m", self.candidate_step_m)
        require_at_least("--jitter-m", self.jitter_m, 0.0)
        require_at_least("--negative-exclude-m", self.negative_exclude_m, 0.0)
        require_at_least("--consistency", self.consistency, 0.0)
        require_at_least("--batch", self.batch, 2)
        require_positive("--lr", self.lr)
        require_positive("--temperature", self.temperature)
        require_at_least("--retrieval-dim", self.retrieval_dim, 1)
        if self.retrieval_pool is not None:
            require_choice("--retrieval-pool", self.retrieval_pool, ("gem", "spatial", "matching"))
        require_at_least("--threads", self.threads, 1, allow_none=True)
        n = 2 * math.floor(self.candidate_radius_m / self.candidate_step_m) + 1
        if n * n > 121:
            raise ValueError(
                f"--candidate-radius-m {self.candidate_radius_m:g} / --candidate-step-m {self.candidate_step_m:g} "
                f"makes {n * n} candidates per image (limit 121)"
            )

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
