# SPDX-License-Identifier: Apache-2.0
"""CCVPE-compatible architecture (VIGOR panorama and KITTI pinhole variants).

Parameter names and shapes equal the public CCVPE implementation's (tudelft-iv/CCVPE), so its
released checkpoints load with ``load_state_dict(strict=True)``; the code is our own. Backbones are
EfficientNet-b0 built without pretrained weights (a released checkpoint supplies them). The ground
branch of the panorama model pads horizontally with wrap-around (see WidthCircularPad).

``padding_mode`` "reflect" reproduces the adapted CCVPE of Adapting_CVL (tudelft-iv/Adapting_CVL, Xia et
al., ECCV 2024): their EfficientNet's TF-"same" padding reflects instead of padding with zeros (the
wrap-around ground branch keeps its zero rows top and bottom) and every 3x3 decoder conv pads by
reflection; parameter names and shapes are unchanged.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from xview_loc_ros.models.common import CrossViewModel, HeadSpec, WidthCircularPad

# aerial EfficientNet-b0 block outputs used as decoder skips, coarse -> fine (/32, /16, /8, /4, /2)
SKIP_BLOCKS = (15, 10, 4, 2, 0)

VIGOR_HEAD = HeadSpec(
    ground_channels=1280,
    ground_rows=10,
    ground_cols=20,
    desc_channels=(64, 32, 16, 8, 4, 2),
    head_channels=1280,
    sat_desc_dim=1280,
    dec_deconv=(1024, 320, 160, 80, 40, 16),
    dec_conv=(640, 320, 160, 80, 40),
    skip_channels=(320, 112, 40, 24, 16),
    n_ori=20,
    roll_steps=(64, 32, 16, 8, 4, 2),
    ori_deconv=(1024, 256, 128, 64, 32, 16),
    ori_conv=(640, 256, 128, 64, 32),
)
KITTI_HEAD = HeadSpec(
    ground_channels=1280,
    ground_rows=8,
    ground_cols=32,
    desc_channels=(16, 8, 4, 2, 1, 1),
    head_channels=1280,
    sat_desc_dim=2048,
    dec_deconv=(1024, 256, 128, 64, 32, 16),
    dec_conv=(512, 256, 128, 128, 32),
    skip_channels=(320, 112, 40, 24, 16),
    n_ori=16,
    roll_steps=(128, 64, 32, 16, 8, 8),
    ori_deconv=(1024, 256, 128, 64, 32, 16),
    ori_conv=(512, 256, 128, 64, 32),
)


def _efficientnet_b0(circular: bool, padding_mode: str = "zeros") -> nn.Module:
    """EfficientNet-b0 whose TF-"same" padding (amounts fixed for 224 px, as CCVPE) is wrap-around
    horizontally with zero rows when ``circular``, else zeros or reflection (``padding_mode``)."""
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import Conv2dStaticSamePadding

    net = EfficientNet.from_name("efficientnet-b0")  # static TF-"same" padding for 224 px, as CCVPE
    net.set_swish(memory_efficient=False)  # the memory-efficient autograd Function does not export to ONNX
    if circular or padding_mode != "zeros":
        for mod in net.modules():
            if isinstance(mod, Conv2dStaticSamePadding) and isinstance(mod.static_padding, nn.ZeroPad2d):
                pad = mod.static_padding.padding
                mod.static_padding = WidthCircularPad(pad) if circular else nn.ReflectionPad2d(pad)
    return net


def efficientnet_multiscale(net: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Head output (after conv_head + BN + swish) and the output of every MBConv block, with the
    library's stochastic-depth schedule (active in train mode)."""
    x = net._swish(net._bn0(net._conv_stem(x)))
    blocks = []
    n = len(net._blocks)
    for idx, block in enumerate(net._blocks):
        rate = net._global_params.drop_connect_rate
        x = block(x, drop_connect_rate=rate * idx / n if rate else rate)
        blocks.append(x)
    return net._swish(net._bn1(net._conv_head(x))), blocks


class CCVPE(CrossViewModel):
    """EfficientNet-b0 ground and aerial branches + the CCVPE head. ``config`` from build_model."""

    def __init__(self, config: dict, head: HeadSpec, circular: bool) -> None:
        super().__init__()
        self.config = config
        padding_mode = config.get("padding_mode", "zeros")
        self.grd_efficientnet = _efficientnet_b0(circular, padding_mode)
        self._build_ground_descriptors(head)
        self.sat_efficientnet = _efficientnet_b0(False, padding_mode)
        self._build_head(head, padding_mode)

    def ground_features(self, ground: torch.Tensor) -> torch.Tensor:
        return self.grd_efficientnet.extract_features(ground)

    def aerial_features(self, aerial: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        head, blocks = efficientnet_multiscale(self.sat_efficientnet, aerial)
        return head, [blocks[i] for i in SKIP_BLOCKS]
