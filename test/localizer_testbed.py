# SPDX-License-Identifier: Apache-2.0
"""Shared set-up for the localizer/node tests: a real XYZ tile folder and a real small checkpoint."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Tuple

import cv2
import numpy as np

from xview_loc_ros.geo import latlon_to_tile

if TYPE_CHECKING:
    from xview_loc_ros.inference import Backend
    from xview_loc_ros.tiles import AerialPatchBuilder

LAT, LON = 52.0116, 4.3571  # the test area (Delft)
ZOOM = 18  # 0.37 m/px at this latitude: finer than the small model's 0.5 m/px


def write_tiles(
    root: Path,
    lat: float = LAT,
    lon: float = LON,
    zoom: int = ZOOM,
    radius: int = 2,
    seed: int = 0,
    hole: Tuple[int, int] | None = None,
) -> Path:
    """A (2 radius + 1)^2 block of textured PNG tiles around (lat, lon); ``hole`` = (dx, dy) offset of a
    tile left out (a missing tile)."""
    rng = np.random.default_rng(seed)
    tx, ty = (int(np.floor(t)) for t in latlon_to_tile(lat, lon, zoom))
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            if hole is not None and (dx, dy) == hole:
                continue
            img = cv2.resize(
                rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST
            )
            d = root / str(zoom) / str(tx + dx)
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{ty + dy}.png"), img)
    return root


def write_small_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained ``small`` model checkpoint (deterministic weights)."""
    import torch

    from xview_loc_ros.models import build_model, save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, build_model("small"))
    return path


def panorama(seed: int = 1, h: int = 64, w: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def write_head_checkpoint(path: Path, dim: int = 32, seed: int = 0) -> Path:
    """An untrained ``small`` model WITH a retrieval head of ``dim`` values (deterministic weights)."""
    import torch

    from xview_loc_ros.models import build_model, save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, build_model("small", retrieval_dim=dim))
    return path


def write_city_index(
    model: Path, tiles: Path, out: Path, radius_m: float = 96.0, stride_m: float = 16.0, sha: str | None = None
) -> Path:
    """The city index of ``model`` over the test tiles around (LAT, LON), built by ``xview-adapt index-map``'s
    code with the real backend; ``sha`` overrides the model hash it records (another model's index)."""
    from offline_adapt.retrieval.index_map import build_index
    from offline_adapt.retrieval.options import IndexMapOptions
    from xview_loc_ros.retrieval import load_index, save_index

    with model_and_patches(model, tiles) as (backend, builder):
        opts = IndexMapOptions(center=(LAT, LON), radius_m=radius_m, stride_m=stride_m)
        build_index(model, backend, builder.source, f"xyz:{tiles}", out, opts, progress=False)
    if sha is not None:
        index = load_index(out)
        index.model_sha256 = sha
        save_index(out, index)
    return out


@contextmanager
def model_and_patches(model: Path, tiles: Path) -> Iterator[Tuple["Backend", "AerialPatchBuilder"]]:
    """The model on the torch backend (CPU, one thread) and a patch builder at its size over the XYZ tiles."""
    from xview_loc_ros.inference import open_backend
    from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source

    backend = open_backend(model, "torch", device="cpu", threads=1)
    source = open_tile_source(f"xyz:{tiles}")
    builder = AerialPatchBuilder(source, backend.config["aerial_size"], backend.config["mpp"], allow_missing=True)
    try:
        yield backend, builder
    finally:
        builder.close()
        source.close()
