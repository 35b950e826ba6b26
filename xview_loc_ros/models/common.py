# SPDX-License-Identifier: Apache-2.0
"""Building blocks shared by every cross-view architecture.

The coarse-to-fine head (:class:`CrossViewModel`) follows the CCVPE design: a ground descriptor per
azimuth column, aerial descriptors at each level, cosine matching with orientation rolls, deconv +
skip decoders, a final S x S logit map and an optional per-pixel orientation field. Module
attribute names match the public CCVPE implementation so its checkpoints load unchanged; the
backbones are supplied by subclasses (EfficientNet-b0 for CCVPE, a light CNN for ``small``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LevelSpec:
    """One heat-map level: ``cells`` per side over the whole patch, ``n_ori`` orientation bins.

    Orientation bin c covers compass heading c * 360 / n_ori degrees (camera forward direction).
    """

    cells: int
    n_ori: int


@dataclass
class ModelOutput:
    """Model output. ``heatmaps``: logits per level (B, n_ori, h, w), coarse -> fine, the last one
    (B, 1, S, S) at aerial-pixel resolution. ``orientation``: (B, 2, S, S) unit vectors
    (cos a, sin a) with a = -compass heading (counter-clockwise from north, CCVPE's convention),
    or None when the model does not predict orientation. ``ground_descriptor`` / ``aerial_descriptor``:
    (B, D) L2-normalised global descriptors of each view for retrieval (:class:`RetrievalHead`), or None
    when the model has no retrieval head (config ``retrieval_dim`` absent or 0)."""

    heatmaps: List[torch.Tensor]
    orientation: Optional[torch.Tensor] = None
    ground_descriptor: Optional[torch.Tensor] = None
    aerial_descriptor: Optional[torch.Tensor] = None


class WidthCircularPad(nn.Module):
    """Pads (left, right, top, bottom): wrap-around horizontally (a 360-degree panorama has no
    left/right border), zeros vertically. Parameter-free, so state_dict keys are unchanged."""

    def __init__(self, padding: Sequence[int]) -> None:
        super().__init__()
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.padding
        parts = []
        if left:
            parts.append(x[..., -left:])
        parts.append(x)
        if right:
            parts.append(x[..., :right])
        # concatenation (not F.pad mode="circular") keeps ONNX export to plain Slice/Concat
        x = torch.cat(parts, dim=-1) if len(parts) > 1 else x
        return F.pad(x, (0, 0, top, bottom)) if (top or bottom) else x


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def ground_descriptor(in_channels: int, channels: int, rows: int) -> nn.Sequential:
    """(B, in, rows, W) -> (B, W * channels): 1x1 conv to ``channels``, then a learned weighted sum
    over the feature rows. Layout is azimuth-column-major: ``desc[w * channels + c]``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 1),
        Permute(0, 2, 3, 1),  # (B, rows, W, C): rows become conv input channels
        nn.Conv2d(rows, 1, 1),
        nn.Flatten(),
    )


class CellDescriptors(nn.Sequential):
    """Aerial bottleneck descriptors: each non-overlapping 2x2 cell of the head feature map,
    flattened channel-major, mapped by one shared Linear (CCVPE's ``sat_feature_to_descriptors``).

    Computed as the equivalent stride-2 convolution with the Linear weight reshaped to
    (out, C, 2, 2); the Sequential layout keeps the key ``.1.weight``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Identity(), nn.Linear(in_channels * 4, out_channels))
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self[1]
        w = lin.weight.view(lin.out_features, self.in_channels, 2, 2)
        return F.conv2d(x, w, lin.bias, stride=2)


PADDING_MODES = ("zeros", "reflect")


def double_conv(cin: int, mid: int, cout: int, padding_mode: str = "zeros") -> nn.Sequential:
    """Conv3x3 -> ReLU -> Conv3x3 (no activation after the second conv, no normalisation); both convs
    pad their border by one pixel with ``padding_mode`` ("zeros" as CCVPE, "reflect" as Adapting_CVL)."""
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1, padding_mode=padding_mode),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, cout, 3, padding=1, padding_mode=padding_mode),
    )


class RollMatcher(nn.Module):
    """Cosine similarity between a ground descriptor (B, L) tiled over the aerial grid and the aerial
    feature map (B, D, h, w) under ``n_ori`` cyclic channel rolls: hypothesis i compares the
    descriptor with ``roll(feat, -i * step, dim=1)[:, :L]`` (L <= D). Output (B, n_ori, h, w).

    Implemented as two einsums with precomputed gather indices (no Python loop over rolls), which is
    also what ONNX export sees.
    """

    def __init__(self, length: int, depth: int, n_ori: int, step: int) -> None:
        super().__init__()
        if length > depth:
            raise ValueError(f"ground descriptor length {length} exceeds aerial feature depth {depth}")
        d = torch.arange(depth)
        shifts = torch.arange(n_ori)[:, None] * step
        src = (d[None, :] - shifts) % depth  # descriptor entry compared with aerial channel d
        mask = (src < length).float()
        self.register_buffer("src", torch.where(src < length, src, torch.zeros_like(src)), persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        self.length, self.depth = length, depth

    def forward(self, desc: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: squared norms overflow / underflow in fp16
        with torch.autocast(device_type=feat.device.type, enabled=False):
            desc, feat = desc.float(), feat.float()
            g = desc[:, self.src] * self.mask  # (B, n, D)
            num = torch.einsum("bnd,bdhw->bnhw", g, feat)
            den = torch.einsum("nd,bdhw->bnhw", self.mask, feat * feat).clamp_min(1e-24).sqrt()
            gnorm = desc.norm(dim=1).clamp_min(1e-12)[:, None, None, None]
            return num / (den * gnorm)


RETRIEVAL_POOLS = ("gem", "spatial")


class RetrievalHead(nn.Module):
    """A global, L2-normalised descriptor (B, D) of one branch's head feature map (B, C, h, w).

    ``pool="gem"``: generalised-mean pooling (p = 3) over all positions, then Linear(C, D): invariant to
    where things are in the view. ``pool="spatial"``: a 1x1 conv to ``reduce`` channels, the whole map (its
    size ``grid`` (rows, cols) is fixed by the config) flattened and mapped by Linear to D: keeps the layout, which a
    north-aligned panorama and a north-up aerial patch share (CVM-Net-style). Weights are small either way.
    """

    def __init__(self, in_channels: int, dim: int, pool: str, grid: Tuple[int, int], reduce: int = 16) -> None:
        super().__init__()
        if pool not in RETRIEVAL_POOLS:
            raise ValueError(f"retrieval pool must be one of {RETRIEVAL_POOLS}, got {pool!r}")
        self.pool = pool
        self.grid = (int(grid[0]), int(grid[1]))
        if pool == "gem":
            self.reduce: nn.Module = nn.Identity()
            self.fc = nn.Linear(in_channels, dim)
        else:
            self.reduce = nn.Conv2d(in_channels, reduce, 1)
            self.fc = nn.Linear(reduce * self.grid[0] * self.grid[1], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: powers and norms of fp16 values overflow
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if self.pool == "gem":
                v = x.clamp_min(1e-6).pow(3).mean(dim=(2, 3)).pow(1.0 / 3.0)
            else:
                v = self.reduce(x).flatten(1)
            return F.normalize(self.fc(v), dim=1)


@dataclass(frozen=True)
class HeadSpec:
    """Widths of the coarse-to-fine head, listed coarse -> fine over the M matching levels.

    desc_channels: C_k of the ground descriptor (length = ground columns * C_k);
    sat_desc_dim: bottleneck aerial descriptor width (level 1); head_channels: aerial head width;
    dec_deconv: M deconv output widths (deconv{M} .. deconv1); dec_conv: M - 1 conv output widths
    (conv{M} .. conv2), i.e. the aerial feature depth matched at levels 2..M;
    skip_channels: M - 1 aerial skip widths; roll_steps: M channel roll steps;
    ori_deconv / ori_conv: the orientation decoder (None: no orientation output).
    """

    ground_channels: int
    ground_rows: int
    ground_cols: int
    desc_channels: Tuple[int, ...]
    head_channels: int
    sat_desc_dim: int
    dec_deconv: Tuple[int, ...]
    dec_conv: Tuple[int, ...]
    skip_channels: Tuple[int, ...]
    n_ori: int
    roll_steps: Tuple[int, ...]
    ori_deconv: Optional[Tuple[int, ...]] = None
    ori_conv: Optional[Tuple[int, ...]] = None


class CrossViewModel(nn.Module):
    """Coarse-to-fine cross-view localizer; subclasses provide ``ground_features`` and
    ``aerial_features`` (head, skips coarse -> fine) and must call :meth:`_build_head`."""

    config: dict

    def ground_features(self, ground: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aerial_features(self, aerial: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        raise NotImplementedError

    @property
    def levels(self) -> List[LevelSpec]:
        return [LevelSpec(int(c), int(n)) for c, n in self.config["levels"]]

    def ground_branch(self) -> List[nn.Module]:
        """The modules that see the ground image alone, before it meets the aerial view: the ground
        backbone and the per-level ground descriptors (by convention their attribute names start
        with ``grd_``). Adaptation re-estimates only their batch-norm statistics when asked to."""
        return [m for name, m in self.named_children() if name.startswith("grd_")]

    @property
    def has_retrieval(self) -> bool:
        return getattr(self, "sat_retrieval", None) is not None

    def add_retrieval_head(self, dim: int, pool: str) -> None:
        """Add the retrieval heads (``grd_retrieval`` on the ground feature, ``sat_retrieval`` on the aerial
        head feature, whose map is twice the level-1 cells per side); call after :meth:`_build_head`."""
        spec = self.head_spec
        cells = 2 * int(self.config["levels"][0][0])
        self.grd_retrieval = RetrievalHead(spec.ground_channels, dim, pool, (spec.ground_rows, spec.ground_cols))
        self.sat_retrieval = RetrievalHead(spec.head_channels, dim, pool, (cells, cells))

    def encode_ground(self, ground: torch.Tensor) -> torch.Tensor:
        """(B, D) unit retrieval descriptors of ground images alone (needs the retrieval head)."""
        return self.grd_retrieval(self.ground_features(ground))

    def encode_aerial(self, aerial: torch.Tensor) -> torch.Tensor:
        """(B, D) unit retrieval descriptors of aerial patches alone (needs the retrieval head)."""
        return self.sat_retrieval(self.aerial_features(aerial)[0])

    def _build_ground_descriptors(self, spec: HeadSpec) -> None:
        for k, c in enumerate(spec.desc_channels, 1):
            setattr(self, f"grd_feature_to_descriptor{k}", ground_descriptor(spec.ground_channels, c, spec.ground_rows))

    def _build_head(self, spec: HeadSpec, padding_mode: str = "zeros") -> None:
        """``padding_mode``: border padding of every 3x3 decoder conv (see :func:`double_conv`)."""
        m = len(spec.desc_channels)
        self.head_spec = spec
        self.n_levels = m
        self.n_ori = spec.n_ori
        self.sat_feature_to_descriptors = CellDescriptors(spec.head_channels, spec.sat_desc_dim)
        depths = (spec.sat_desc_dim,) + tuple(spec.dec_conv)
        self.matchers = nn.ModuleList(
            RollMatcher(spec.ground_cols * c, d, spec.n_ori, s)
            for c, d, s in zip(spec.desc_channels, depths, spec.roll_steps)
        )
        for j in range(m):
            name = m - j  # CCVPE numbering: deconv{M} is the coarsest stage, conv1 the final logits
            setattr(self, f"deconv{name}", nn.ConvTranspose2d(depths[j] + 1, spec.dec_deconv[j], 2, stride=2))
            if j < m - 1:
                cin = spec.dec_deconv[j] + spec.skip_channels[j]
                setattr(self, f"conv{name}", double_conv(cin, spec.dec_conv[j], spec.dec_conv[j], padding_mode))
            else:
                self.conv1 = double_conv(spec.dec_deconv[j], spec.dec_deconv[j], 1, padding_mode)
        self.has_orientation = spec.ori_deconv is not None
        if self.has_orientation:
            cin = spec.n_ori + spec.sat_desc_dim
            for j in range(m):
                name = m - j
                setattr(self, f"deconv{name}_ori", nn.ConvTranspose2d(cin, spec.ori_deconv[j], 2, stride=2))
                if j < m - 1:
                    c2 = spec.ori_deconv[j] + spec.skip_channels[j]
                    setattr(self, f"conv{name}_ori", double_conv(c2, spec.ori_conv[j], spec.ori_conv[j], padding_mode))
                    cin = spec.ori_conv[j]
                else:
                    self.conv1_ori = double_conv(spec.ori_deconv[j], spec.ori_deconv[j], 2, padding_mode)

    def forward(self, ground: torch.Tensor, aerial: torch.Tensor) -> ModelOutput:
        m = self.n_levels
        g = self.ground_features(ground)
        head, skips = self.aerial_features(aerial)
        x = self.sat_feature_to_descriptors(head)
        bottleneck = x
        heatmaps: List[torch.Tensor] = []
        for j in range(m):
            desc = getattr(self, f"grd_feature_to_descriptor{j + 1}")(g)
            scores = self.matchers[j](desc, x)
            heatmaps.append(scores)
            x = torch.cat([scores.amax(dim=1, keepdim=True), F.normalize(x, dim=1)], dim=1)
            x = getattr(self, f"deconv{m - j}")(x)
            if j < m - 1:
                x = getattr(self, f"conv{m - j}")(torch.cat([x, skips[j]], dim=1))
        heatmaps.append(self.conv1(x))
        orientation = None
        if self.has_orientation:
            y = torch.cat([heatmaps[0], F.normalize(bottleneck, dim=1)], dim=1)
            for j in range(m):
                y = getattr(self, f"deconv{m - j}_ori")(y)
                if j < m - 1:
                    y = getattr(self, f"conv{m - j}_ori")(torch.cat([y, skips[j]], dim=1))
            orientation = F.normalize(self.conv1_ori(y), dim=1)
        if self.has_retrieval:
            return ModelOutput(
                heatmaps=heatmaps,
                orientation=orientation,
                ground_descriptor=self.grd_retrieval(g),
                aerial_descriptor=self.sat_retrieval(head),
            )
        return ModelOutput(heatmaps=heatmaps, orientation=orientation)


def levels_for(aerial_size: int, level1_cells: int, n_matching: int, n_ori: int) -> List[List[int]]:
    """[[cells, n_ori], ...] coarse -> fine: matching levels doubling from ``level1_cells``, then the
    final aerial-resolution level with one bin."""
    out = [[level1_cells * 2**k, n_ori] for k in range(n_matching)]
    out.append([aerial_size, 1])
    return out
