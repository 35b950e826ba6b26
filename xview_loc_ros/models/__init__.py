# SPDX-License-Identifier: Apache-2.0
"""Cross-view localization networks: ``build_model(name, **overrides)`` and checkpoint I/O.

``model.config`` is a dict of plain values that fully describes preprocessing and architecture:
arch, aerial_size (S px), ground_size [H, W] px, ground_type ("panorama"|"pinhole"), fov_deg
(horizontal), mpp (aerial metres per pixel), mean/std (RGB normalisation of [0, 1] images),
known_orientation (panorama north-aligned from the given heading), n_ori, levels
[[cells_per_side, n_ori], ...] coarse -> fine (the last is [S, 1]); ccvpe-* also padding_mode
("zeros" | "reflect").
"""

from __future__ import annotations

from xview_loc_ros.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from xview_loc_ros.models.common import CrossViewModel, LevelSpec, ModelOutput
from xview_loc_ros.models.registry import (
    ARCHS,
    DEFAULTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_model,
)

__all__ = [
    "ARCHS",
    "DEFAULTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CheckpointError",
    "CrossViewModel",
    "LevelSpec",
    "ModelOutput",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
