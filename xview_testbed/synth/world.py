# SPDX-License-Identifier: Apache-2.0
"""The world raster of a synthetic city: what the aerial and ground renderers sample.

Frame: local ENU metres with the origin at the city centre (the city datum of ``city.json``).
The raster is square, north-up, ``res_m`` metres per pixel; pixel (row, col) covers
east in [(col - N/2) * res, (col + 1 - N/2) * res) and north in ((N/2 - row - 1) * res, (N/2 - row) * res].
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

import numpy as np

from xview_loc_ros.fsutil import atomic_path

# Ground classes of :attr:`World.cls`.
GRASS, ROAD, MARKING, SIDEWALK, DIRT, WATER, BUILDING, TREE, OBJECT = range(9)
CLASS_NAMES = ("grass", "road", "marking", "sidewalk", "dirt", "water", "building", "tree", "object")


@dataclass
class Road:
    """A road centreline in ENU metres (k, 2) with its paved width in metres."""

    points: np.ndarray
    width_m: float

    def to_dict(self) -> dict:
        return {"points": np.round(self.points, 2).tolist(), "width_m": round(float(self.width_m), 2)}

    @classmethod
    def from_dict(cls, d: dict) -> "Road":
        return cls(np.asarray(d["points"], dtype=float), float(d["width_m"]))


@dataclass
class World:
    """Rasters of one city (all N x N, north-up) plus per-building attributes.

    ``height`` metres above the flat terrain; ``cls`` ground class; ``albedo`` RGB uint8 top colour
    (unlit); ``building`` building id (0 = none) indexing ``facade_rgb`` (RGB 0-255) and ``facade``
    (floor height m, window spacing m, window width fraction, eave height m); ``normal`` the
    outward horizontal normal (east, north) x 127 of the nearest facade, for every solid pixel;
    ``caster`` the sun-shadow height: a point at (pixel, z metres) is lit when z >= caster;
    ``crown_base`` the height (m) of the underside of tree crowns (0 elsewhere): ground rays pass
    beneath crowns, and trunks are solid pixels of class TREE with ``crown_base`` 0.
    """

    res_m: float
    height: np.ndarray
    cls: np.ndarray
    albedo: np.ndarray
    building: np.ndarray
    normal: np.ndarray
    caster: np.ndarray
    facade_rgb: np.ndarray
    facade: np.ndarray
    crown_base: np.ndarray
    roads: List[Road] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.height.shape[0])

    @property
    def size_m(self) -> float:
        return self.n * self.res_m

    def enu_to_pixel(self, east, north) -> Tuple[np.ndarray, np.ndarray]:
        """ENU metres -> continuous raster (col, row); pixel i covers [i, i+1)."""
        half = self.n / 2.0
        return np.asarray(east) / self.res_m + half, half - np.asarray(north) / self.res_m

    def pixel_to_enu(self, col, row) -> Tuple[np.ndarray, np.ndarray]:
        """Continuous raster (col, row) -> ENU metres."""
        half = self.n / 2.0
        return (np.asarray(col) - half) * self.res_m, (half - np.asarray(row)) * self.res_m

    def save(self, path: str | Path) -> None:
        """Write the world (compact dtypes, compressed) atomically."""
        arrays = dict(
            res_m=np.float64(self.res_m),
            height=self.height.astype(np.float16),
            cls=self.cls,
            albedo=self.albedo,
            building=self.building.astype(np.uint16),
            normal=self.normal,
            caster=self.caster.astype(np.float16),
            crown_base=self.crown_base.astype(np.float16),
            facade_rgb=self.facade_rgb,
            facade=self.facade,
        )
        with atomic_path(path) as tmp:
            # an .npz that np.load reads, deflated at level 1: ~3x faster to write than savez_compressed
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for name, a in arrays.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)

    @classmethod
    def load(cls, path: str | Path, roads: List[Road] | None = None) -> "World":
        try:
            z = np.load(path)
        except (OSError, ValueError) as e:
            raise OSError(f"{path}: cannot read the city world raster ({e})") from e
        with z:
            return cls(
                res_m=float(z["res_m"]),
                height=z["height"].astype(np.float32),
                cls=z["cls"],
                albedo=z["albedo"],
                building=z["building"].astype(np.int32),
                normal=z["normal"],
                caster=z["caster"].astype(np.float32),
                facade_rgb=z["facade_rgb"],
                facade=z["facade"],
                crown_base=z["crown_base"].astype(np.float32),
                roads=list(roads or []),
            )
