# SPDX-License-Identifier: Apache-2.0
"""A torch Dataset over a pair data set (offline_adapt.data.dataset.PairDataset), prepared for one model.

Items are dicts: ``ground`` (3, H, W) and ``aerial`` (3, S, S) float32 normalised tensors,
``gt_uv`` (2,) true position in continuous patch pixels (NaN when unknown), ``heading_deg`` the
compass heading of the ground image's centre column as fed to the model (0 after north-alignment;
NaN when unknown), ``index`` the position in ``records``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from offline_adapt.data.augment import Photometric
from offline_adapt.data.dataset import PairDataset, PairRecord
from xview_loc_ros.preprocess import check_pair_config, prepare_aerial, prepare_ground


class PairTorchDataset(Dataset):
    """Training augmentations (random draws from torch's RNG, so reproducible under the trainer's
    seeding; both keep the pair geometrically exact):

    ``random_roll``: for panorama models that predict orientation, roll each panorama by a random
    number of columns and shift its heading accordingly (CCVPE's augmentation).
    ``dihedral``: rotate the world by k x 90 degrees clockwise and optionally mirror it east-west:
    the aerial patch and the true position are rotated/mirrored, the heading becomes
    heading + 90k (mirror: -heading), the ground image stays camera-relative (mirrored
    horizontally about its centre column for a mirror).
    ``photometric``: colour, gamma, blur, noise and JPEG draws on each view (``augment.Photometric``);
    no pixel moves, so the labels stay exact.
    ``fov_mask_deg`` (min, max) degrees, panoramas only: the model sees one random contiguous azimuth
    window of the panorama (:func:`random_fov_window`) and nothing elsewhere
    (:func:`mask_outside_window`); labels are unchanged, since they describe the camera's position,
    which a narrower view does not move (self-distillation gives them from the teacher's full view).
    """

    def __init__(
        self,
        data: PairDataset,
        records: List[PairRecord],
        config: Mapping[str, Any],
        random_roll: bool = False,
        dihedral: bool = False,
        require_gt: bool = True,
        photometric: Optional[Photometric] = None,
        fov_mask_deg: Optional[Tuple[float, float]] = None,
    ) -> None:
        check_pair_config(config, data.meta)
        if fov_mask_deg is not None and config["ground_type"] != "panorama":
            raise ValueError(f"--fov-mask needs panorama ground images; {data.root} has {config['ground_type']} ones")
        if require_gt:
            missing = [r.id for r in records if not r.has_gt]
            if missing:
                raise ValueError(
                    f"{data.root}: {len(missing)} pairs have no ground-truth position (e.g. {missing[0]!r})"
                )
        self.data, self.records, self.config = data, list(records), dict(config)
        self.known = bool(config.get("known_orientation")) and config["ground_type"] == "panorama"
        self.random_roll = random_roll and config["ground_type"] == "panorama" and not self.known
        self.dihedral = dihedral
        self.photometric = photometric
        self.fov_mask_deg = fov_mask_deg

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        rec = self.records[i]
        ground = self.data.load_ground(rec)
        aerial = self.data.load_aerial(rec)
        if self.photometric is not None:
            ground, aerial = self.photometric(ground), self.photometric(aerial)
        heading = rec.heading_deg
        gt = rec.gt_pixel() if rec.has_gt else (math.nan, math.nan)
        if self.dihedral:
            ground, aerial, gt, heading = dihedral_transform(
                ground, aerial, gt, heading, int(torch.randint(0, 4, ()).item()), bool(torch.randint(0, 2, ()).item())
            )
        g = prepare_ground(ground, heading, self.config)  # raises if a north-aligned model lacks the heading
        if self.known:
            heading = 0.0  # the model sees the panorama north-aligned
        elif self.random_roll:
            w = g.shape[2]
            shift = int(torch.randint(0, w, ()).item())
            g = np.roll(g, shift, axis=2)
            # content moved right by `shift` columns: the centre column now looks `shift` columns further left
            heading = None if heading is None else (heading - shift * 360.0 / w) % 360.0
        if self.fov_mask_deg is not None:
            g = mask_outside_window(g, *random_fov_window(g.shape[2], *self.fov_mask_deg))
        aerial = prepare_aerial(aerial, self.config)
        return {
            "ground": torch.from_numpy(np.ascontiguousarray(g)),
            "aerial": torch.from_numpy(aerial),
            "gt_uv": torch.tensor(gt, dtype=torch.float32),
            "heading_deg": torch.tensor(math.nan if heading is None else float(heading), dtype=torch.float32),
            "index": i,
        }


def random_fov_window(width: int, min_deg: float, max_deg: float) -> Tuple[int, int]:
    """A random contiguous azimuth window of a ``width``-column 360-degree panorama: (first column,
    number of columns). Its width is uniform in [``min_deg``, ``max_deg``] degrees (at least one
    column), its first column uniform over all columns (the window wraps around the seam, since a
    panorama is a cylinder). Draws from torch's RNG: reproducible under the trainer's seeding."""
    fov = min_deg + (max_deg - min_deg) * float(torch.rand(()).item())
    n = min(width, max(1, int(round(fov / 360.0 * width))))
    return int(torch.randint(0, width, ()).item()), n


def mask_outside_window(ground: np.ndarray, start: int, n: int) -> np.ndarray:
    """A copy of a normalised (3, H, W) panorama with every column outside the cyclic window
    [``start``, ``start + n``) set to 0. Zero in the normalised input is the normalisation mean
    colour, i.e. mean-filling the hidden azimuths: black (about -2 after normalisation) would add a
    hard edge and a dark "object" the model would try to match, while the mean is what the
    networks' own zero padding already shows them at image borders."""
    w = ground.shape[2]
    keep = np.zeros(w, dtype=bool)
    keep[(start + np.arange(n)) % w] = True
    out = ground.copy()
    out[:, :, ~keep] = 0.0
    return out


def dihedral_transform(
    ground: np.ndarray,
    aerial: np.ndarray,
    gt_uv: Tuple[float, float],
    heading: Optional[float],
    quarter_turns: int,
    mirror: bool,
) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float], Optional[float]]:
    """Mirror the world east-west (if ``mirror``), then rotate it ``quarter_turns`` x 90 degrees
    clockwise (seen from above). Patch pixels (u east, v south), centre S/2; headings compass."""
    s = aerial.shape[0]
    u, v = gt_uv
    if mirror:
        aerial = aerial[:, ::-1]
        ground = ground[:, ::-1]  # camera-relative azimuths change sign about the centre column
        u = s - u
        heading = None if heading is None else -heading
    for _ in range(quarter_turns % 4):
        aerial = np.rot90(aerial, k=-1)  # clockwise: north (up) -> east (right)
        u, v = s - v, u  # (x, y) = (u - c, v - c) -> (-y, x)
        heading = None if heading is None else heading + 90.0
    heading = None if heading is None else heading % 360.0
    return np.ascontiguousarray(ground), np.ascontiguousarray(aerial), (u, v), heading


def open_split(data_dir: str, split: Optional[str], config: Mapping[str, Any], **kw: Any) -> PairTorchDataset:
    data = PairDataset(data_dir)
    recs = data.split(split)
    if not recs:
        raise ValueError(f"{data_dir}: split {split!r} has no pairs")
    return PairTorchDataset(data, recs, config, **kw)
