# SPDX-License-Identifier: Apache-2.0
"""Supervised training options: the one place their defaults are written and checked.

No torch here: the command line builds (and so validates) these before importing anything heavy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from xview_loc_ros.cli import require_at_least, require_choice, require_positive

SIGMA_PX = 4.0  # CCVPE and the adaptation paper: sigma = 4 px of the finest level
LR_SCHEDULES = ("constant", "cosine")
MIXES = ("proportional", "balanced")
# CCVPE's total loss: CE(finest) + 1e4 x mean InfoNCE over levels + 10 x orientation loss
CE_WEIGHT, INFONCE_WEIGHT, ORI_WEIGHT = 1.0, 1e4, 10.0


@dataclass(frozen=True)
class TrainOptions:
    """``xview-adapt train`` flags (CCVPE's losses; the learning rate is Adam's). The defaults are the bundled
    teacher's recipe (``xview_testbed.teacher``, models/README.md): from scratch on a multi-city source set they
    train the model we ship; fine-tuning from ``--init`` usually wants a lower ``--lr`` (CCVPE used 1e-4)."""

    epochs: int = 16
    batch: int = 8
    lr: float = 1e-3
    seed: int = 0
    lr_schedule: str = "cosine"
    bn_reestimate: int = 16  # batches; 0 = off
    steps_per_epoch: Optional[int] = None
    workers: int = 0
    w_ce: float = CE_WEIGHT
    w_infonce: float = INFONCE_WEIGHT
    w_ori: float = ORI_WEIGHT
    # photometric augmentation strength of both views (offline_adapt.data.augment; 0 = off): on by default since
    # it turned unseen styles from random gaps into moderate ones (bench/RESULTS.md, source model probes)
    photometric: float = 1.0
    mix: str = "balanced"  # how several --data sets are sampled (offline_adapt.train.supervised)

    def __post_init__(self) -> None:
        require_at_least("--epochs", self.epochs, 1)
        require_at_least("--batch", self.batch, 1)
        require_positive("--lr", self.lr)
        require_choice("--lr-schedule", self.lr_schedule, LR_SCHEDULES)
        require_choice("--mix", self.mix, MIXES)
        require_at_least("--photometric", self.photometric, 0.0)
        if self.photometric > 3.0:
            raise ValueError(f"--photometric must be in [0, 3], got {self.photometric}")
        require_at_least("--bn-reestimate", self.bn_reestimate, 0)
        require_at_least("--steps-per-epoch", self.steps_per_epoch, 1, allow_none=True)
        require_at_least("--workers", self.workers, 0)
        for flag, w in (("--w-ce", self.w_ce), ("--w-infonce", self.w_infonce), ("--w-ori", self.w_ori)):
            require_at_least(flag, w, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SupervisedRun:
    """One `xview-adapt train` run. ``data``: pair data-set folders (one or more); ``out``: the run
    folder (RUN/last.pt, RUN/best.pt); ``init``: a checkpoint of this project, ``ccvpe-official:PATH``
    or ``adapting-cvl:PATH``; ``orientation``: "known" | "unknown" | None (the camera type's default);
    ``geometric_augment``: random panorama roll (unknown orientation) and dihedral world turns; ``width``:
    the ``small`` model's channel multiplier (None = the architecture's default)."""

    data: Sequence[str]
    arch: str
    out: Path
    options: TrainOptions = TrainOptions()
    init: Optional[str] = None
    orientation: Optional[str] = None
    width: Optional[int] = None
    resume: bool = False
    geometric_augment: bool = True
    device: Optional[str] = None
    amp: Optional[bool] = None
    threads: Optional[int] = None
    extra: Optional[Dict[str, Any]] = None  # plain values stored in the checkpoints (e.g. the command line)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("--data: at least one pair data set is needed")
        if self.width is not None and (self.arch != "small" or self.width not in (1, 2, 3)):
            raise ValueError(f"--width: 1, 2 or 3 with --config small only, got {self.width} with {self.arch}")
