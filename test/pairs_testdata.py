# SPDX-License-Identifier: Apache-2.0
"""Tiny pair data sets written with the real DatasetWriter (random images, exact GT), for the
model/training/evaluation tests. The learnable synthetic sets come from xview_testbed.synth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from offline_adapt.data.dataset import DatasetMeta, DatasetWriter, PairRecord, write_rgb
from xview_loc_ros.geo import PatchGeoref

LAT0, LON0 = 52.0, 4.37


def write_random_pairs(
    out: Path,
    n: int = 12,
    seed: int = 0,
    ground_type: str = "panorama",
    ground_size=(64, 256),
    size_px: int = 128,
    mpp: float = 0.5,
    fov_deg: Optional[float] = None,
    splits=("train", "val", "test"),
) -> Path:
    """``n`` pairs with random images; GT uniformly inside the central half of the patch; headings
    uniform; splits assigned round-robin from ``splits``."""
    rng = np.random.default_rng(seed)
    fov = 360.0 if ground_type == "panorama" else (fov_deg or 90.0)
    meta = DatasetMeta(
        ground_type=ground_type,
        ground_size=list(ground_size),
        fov_deg=fov,
        patch_size_px=size_px,
        mpp=mpp,
        name="random",
    )
    with DatasetWriter(out, meta) as w:
        for i in range(n):
            clat, clon = LAT0 + rng.uniform(-1e-3, 1e-3), LON0 + rng.uniform(-1e-3, 1e-3)
            geo = PatchGeoref(clat, clon, mpp, size_px)
            u, v = rng.uniform(size_px * 0.25, size_px * 0.75, 2)
            glat, glon = geo.pixel_to_latlon(u, v)
            write_rgb(w.path(f"g/{i}.png"), rng.integers(0, 256, (*ground_size, 3), dtype=np.uint8))
            write_rgb(w.path(f"a/{i}.png"), rng.integers(0, 256, (size_px, size_px, 3), dtype=np.uint8))
            w.add(
                PairRecord(
                    id=f"p{i}",
                    ground=f"g/{i}.png",
                    aerial=f"a/{i}.png",
                    center_lat=clat,
                    center_lon=clon,
                    mpp=mpp,
                    size_px=size_px,
                    heading_deg=float(rng.uniform(0, 360)),
                    gt_lat=float(glat),
                    gt_lon=float(glon),
                    split=splits[i % len(splits)],
                )
            )
    return out
