# SPDX-License-Identifier: Apache-2.0
"""``small``: the CCVPE coarse-to-fine design on a light BatchNorm CNN, for CPU training in minutes.

Both branches: four stride-2 stages (conv3x3-BN-ReLU x2) and a 1x1 head, total stride 16; config ``width``
multiplies every encoder's channels (1: 16-24-32-64, head 128; 2: twice that, about 3.5x the encoder FLOPs). The
aerial head is cut into 2x2 cells, so level 1 has S/32 cells per side; five matching levels double
up to S/2, then the final S x S logits. The panorama branch pads horizontally with wrap-around.
BatchNorm is kept on purpose: the adaptation benchmark re-estimates BN statistics as a control.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from xview_loc_ros.models.common import CrossViewModel, HeadSpec, WidthCircularPad

STAGES = (16, 24, 32, 64)
HEAD = 128
DESC = (8, 4, 2, 2, 1)  # ground descriptor channels per azimuth column, levels 1..5
FULL_COLS = 16  # aerial features are matched as 16 azimuth columns (22.5 degrees each)


def _conv_bn_relu(cin: int, cout: int, stride: int, circular: bool) -> nn.Sequential:
    pad = WidthCircularPad((1, 1, 1, 1)) if circular else nn.ZeroPad2d(1)
    return nn.Sequential(pad, nn.Conv2d(cin, cout, 3, stride, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def widths(width: int) -> Tuple[Tuple[int, ...], int]:
    """Stage and head channels for the ``width`` multiplier (1 = the original ``small``)."""
    return tuple(c * width for c in STAGES), HEAD * width


class Encoder(nn.Module):
    """Stride-16 CNN; returns the head feature and the stage outputs coarse -> fine."""

    def __init__(self, circular: bool, width: int = 1) -> None:
        super().__init__()
        stage_channels, head = widths(width)
        stages, cin = [], 3
        for c in stage_channels:
            stages.append(nn.Sequential(_conv_bn_relu(cin, c, 2, circular), _conv_bn_relu(c, c, 1, circular)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return self.head(x), outs[::-1]


def head_spec(ground_cols: int, ground_rows: int, n_ori: int, orientation: bool, width: int = 1) -> HeadSpec:
    if ground_cols > FULL_COLS:
        raise ValueError(
            f"small: ground feature width {ground_cols} columns exceeds {FULL_COLS} (ground width > 256 px)"
        )
    step = [c * FULL_COLS // n_ori for c in DESC] if n_ori > 1 else [0] * len(DESC)
    stage_channels, head = widths(width)
    return HeadSpec(
        ground_channels=head,
        ground_rows=ground_rows,
        ground_cols=ground_cols,
        desc_channels=DESC,
        head_channels=head,
        sat_desc_dim=FULL_COLS * DESC[0],
        dec_deconv=(64, 32, 16, 16, 8),
        dec_conv=tuple(FULL_COLS * c for c in DESC[1:]),
        skip_channels=stage_channels[::-1],
        n_ori=n_ori,
        roll_steps=tuple(step),
        ori_deconv=(64, 32, 16, 16, 8) if orientation else None,
        ori_conv=(32, 16, 16, 8) if orientation else None,
    )


class SmallCrossView(CrossViewModel):
    def __init__(self, config: dict, head: HeadSpec, circular: bool) -> None:
        super().__init__()
        self.config = config
        width = int(config.get("width", 1))
        self.grd_backbone = Encoder(circular, width)
        self.sat_backbone = Encoder(False, width)
        self._build_ground_descriptors(head)
        self._build_head(head)

    def ground_features(self, ground: torch.Tensor) -> torch.Tensor:
        return self.grd_backbone(ground)[0]

    def aerial_features(self, aerial: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return self.sat_backbone(aerial)
