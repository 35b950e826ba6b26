# SPDX-License-Identifier: Apache-2.0
"""Supervised training options: the one place their defaults are written and checked.

No torch here: the command line builds (and so validates) these before importing anything heavy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from xview_loc_ros.cli import require_at_least, require_choice, require_positive

SIGMA_PX = 4.0  # CCVPE and the adaptation paper: sigma = 4 px of the finest level
LR_SCHEDULES = ("constant", "cosine")
# CCVPE's total loss: CE(finest) + 1e4 x mean InfoNCE over levels + 10 x orientation loss
CE_WEIGHT, INFONCE_WEIGHT, ORI_WEIGHT = 1.0, 1e4, 10.0


@dataclass(frozen=True)
class TrainOptions:
    """``xview-adapt train`` flags (CCVPE's setting; the learning rate is Adam's)."""

    epochs: int = 10
    batch: int = 8
    lr: float = 1e-4
    seed: int = 0
    lr_schedule: str = "constant"
    bn_reestimate: int = 16  # batches; 0 = off
    steps_per_epoch: Optional[int] = None
    workers: int = 0
    w_ce: float = CE_WEIGHT
    w_infonce: float = INFONCE_WEIGHT
    w_ori: float = ORI_WEIGHT

    def __post_init__(self) -> None:
        require_at_least("--epochs", self.epochs, 1)
        require_at_least("--batch", self.batch, 1)
        require_positive("--lr", self.lr)
        require_choice("--lr-schedule", self.lr_schedule, LR_SCHEDULES)
        require_at_least("--bn-reestimate", self.bn_reestimate, 0)
        require_at_least("--steps-per-epoch", self.steps_per_epoch, 1, allow_none=True)
        require_at_least("--workers", self.workers, 0)
        for flag, w in (("--w-ce", self.w_ce), ("--w-infonce", self.w_infonce), ("--w-ori", self.w_ori)):
            require_at_least(flag, w, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
