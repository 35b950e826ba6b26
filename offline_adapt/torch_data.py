"""A torch Dataset over a pair data set (xview_loc_ros.dataset.PairDataset), prepared for one model.

Items are dicts: ``ground`` (3, H, W) and ``aerial`` (3, S, S) float32 normalised tensors,
``gt_uv`` (2,) true position in continuous patch pixels (NaN when unknown), ``heading_deg`` the
compass heading of the ground image's centre column as fed to the model (0 after north-alignment;
NaN when unknown), ``index`` the position in ``records``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from xview_loc_ros.dataset import PairDataset, PairRecord
from xview_loc_ros.preprocess import check_pair_config, prepare_aerial, prepare_ground


class PairTorchDataset(Dataset):
    """``random_roll``: for panorama models that predict orientation, roll each panorama by a
    random number of columns (and shift its heading accordingly), CCVPE's only augmentation; the
    draw uses torch's RNG so that it is reproducible under the trainer's seeding."""

    def __init__(self, data: PairDataset, records: List[PairRecord], config: Mapping[str, Any],
                 random_roll: bool = False, require_gt: bool = True) -> None:
        check_pair_config(config, data.meta)
        if require_gt:
            missing = [r.id for r in records if not r.has_gt]
            if missing:
                raise ValueError(f"{data.root}: {len(missing)} pairs have no ground-truth position (e.g. {missing[0]!r})")
        self.data, self.records, self.config = data, list(records), dict(config)
        self.known = bool(config.get("known_orientation")) and config["ground_type"] == "panorama"
        self.random_roll = random_roll and config["ground_type"] == "panorama" and not self.known

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        rec = self.records[i]
        ground = self.data.load_ground(rec)
        heading = rec.heading_deg
        g = prepare_ground(ground, heading, self.config)  # raises if a north-aligned model lacks the heading
        if self.known:
            heading = 0.0  # the model sees the panorama north-aligned
        elif self.random_roll:
            w = g.shape[2]
            shift = int(torch.randint(0, w, ()).item())
            g = np.roll(g, shift, axis=2)
            # content moved right by `shift` columns: the centre column now looks `shift` columns further left
            heading = None if heading is None else (heading - shift * 360.0 / w) % 360.0
        aerial = prepare_aerial(self.data.load_aerial(rec), self.config)
        gt = rec.gt_pixel() if rec.has_gt else (math.nan, math.nan)
        return {
            "ground": torch.from_numpy(np.ascontiguousarray(g)),
            "aerial": torch.from_numpy(aerial),
            "gt_uv": torch.tensor(gt, dtype=torch.float32),
            "heading_deg": torch.tensor(math.nan if heading is None else float(heading), dtype=torch.float32),
            "index": i,
        }


def open_split(data_dir: str, split: Optional[str], config: Mapping[str, Any], **kw: Any) -> PairTorchDataset:
    data = PairDataset(data_dir)
    recs = data.split(split)
    if not recs:
        raise ValueError(f"{data_dir}: split {split!r} has no pairs")
    return PairTorchDataset(data, recs, config, **kw)
