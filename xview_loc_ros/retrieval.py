# SPDX-License-Identifier: Apache-2.0
"""City index for wide-area re-localization: aerial-patch descriptors on a grid, and their search.

The index is built once per city on a workstation (``xview-adapt index-map``) and read by the node. Its
entries are the centres of aerial patches on a square grid in a local ENU frame (metres east/north of the
grid's origin ``lat0, lon0``) kept within ``radius_m`` of the origin, and each patch's L2-normalised
descriptor from the model's retrieval head. A ground image's descriptor (same model) is compared with
every entry by cosine similarity (a dot product of unit vectors); the best entries are candidate
positions where the fine model is then run.

File: one ``.npz`` (numpy, no pickle) holding ``meta`` (JSON: format, version, grid, the sha256 of the model
file that made the descriptors, the tile source), ``east_north`` (N,2) float64 metres and ``descriptors``
(N,D) float32. Descriptors of another model are meaningless, so :func:`load_index` refuses an index whose
model hash differs from the one the caller runs.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from xview_loc_ros.fsutil import atomic_path
from xview_loc_ros.geo import LocalENU

INDEX_FORMAT = "xview-city-index"
INDEX_VERSION = 1


class IndexFileError(ValueError):
    """A city index file is missing, corrupt, of another version, or made by another model."""


@dataclass(frozen=True)
class IndexGrid:
    """The grid of patch centres: every ``stride_m`` metres east/north of (``lat0``, ``lon0``) degrees, within
    ``radius_m`` metres of it (a disc); patches of ``size_px`` pixels at ``mpp`` metres per pixel, north-up."""

    lat0: float
    lon0: float
    radius_m: float
    stride_m: float
    mpp: float
    size_px: int

    def __post_init__(self) -> None:
        LocalENU(self.lat0, self.lon0)  # checks the datum's range
        for name in ("radius_m", "stride_m", "mpp"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"index grid: {name} must be a positive number of metres, got {v!r}")
        if self.size_px < 1:
            raise ValueError(f"index grid: size_px must be >= 1, got {self.size_px!r}")

    @property
    def frame(self) -> LocalENU:
        return LocalENU(self.lat0, self.lon0)

    def centres_en(self) -> np.ndarray:
        """(N,2) east, north metres of the grid's patch centres, north row first, west to east in a row
        (the order of the index's entries)."""
        n = int(np.floor(self.radius_m / self.stride_m))
        steps = np.arange(-n, n + 1) * self.stride_m
        east, north = np.meshgrid(steps, steps[::-1])
        en = np.stack([east.ravel(), north.ravel()], axis=1)
        return en[np.hypot(en[:, 0], en[:, 1]) <= self.radius_m + 1e-9]


@dataclass(frozen=True)
class Candidate:
    """One search result: a patch centre (``east``, ``north`` metres in the index frame; ``lat``, ``lon``
    degrees), its cosine ``score`` with the query, its ``entry`` number in the index and its ``rank`` (0 = best)."""

    east: float
    north: float
    lat: float
    lon: float
    score: float
    entry: int
    rank: int


@dataclass
class CityIndex:
    """Descriptors of aerial patches over one area. ``east_north`` (N,2) metres in ``grid.frame``;
    ``descriptors`` (N,D) float32, unit rows; ``model_sha256`` of the model file that computed them;
    ``tiles`` the tile source they were cut from (informative)."""

    grid: IndexGrid
    model_sha256: str
    tiles: str
    east_north: np.ndarray
    descriptors: np.ndarray

    def __post_init__(self) -> None:
        self.east_north = np.asarray(self.east_north, dtype=np.float64)
        self.descriptors = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        if self.east_north.ndim != 2 or self.east_north.shape[1] != 2:
            raise ValueError(f"city index: east_north must be (N,2) metres, got shape {self.east_north.shape}")
        if self.descriptors.ndim != 2 or self.descriptors.shape[0] != self.east_north.shape[0]:
            raise ValueError(
                f"city index: descriptors must be (N,D) with N = {self.east_north.shape[0]} entries, "
                f"got shape {self.descriptors.shape}"
            )
        if not np.all(np.isfinite(self.descriptors)):
            raise ValueError("city index: descriptors contain NaN or infinity")

    def __len__(self) -> int:
        return int(self.east_north.shape[0])

    @property
    def dim(self) -> int:
        return int(self.descriptors.shape[1])

    def to_en(self, lat: float, lon: float) -> Tuple[float, float]:
        """WGS84 degrees -> (east, north) metres in the index frame."""
        e, n, _ = self.grid.frame.to_enu(lat, lon)
        return float(e), float(n)

    def search(
        self,
        query: np.ndarray,
        k: int,
        near_en: Optional[Tuple[float, float]] = None,
        radius_m: Optional[float] = None,
    ) -> List[Candidate]:
        """The ``k`` entries most similar to ``query`` (D,) (normalised here), best first; only entries within
        ``radius_m`` metres of ``near_en`` (east, north in the index frame) when both are given, else all.
        Returns fewer than ``k`` when fewer entries qualify (none outside the index)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"city index: query descriptor has {q.shape[0]} values, the index has {self.dim}")
        norm = float(np.linalg.norm(q))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("city index: query descriptor is zero or not finite")
        if k < 1:
            raise ValueError(f"city index: k must be >= 1, got {k}")
        if (near_en is None) != (radius_m is None):
            raise ValueError("city index: give both near_en and radius_m, or neither")
        if near_en is not None and radius_m is not None:
            d = np.hypot(self.east_north[:, 0] - near_en[0], self.east_north[:, 1] - near_en[1])
            entries = np.flatnonzero(d <= radius_m)
        else:
            entries = np.arange(len(self))
        if entries.size == 0:
            return []
        scores = self.descriptors[entries] @ (q / norm)
        kk = min(k, entries.size)
        top = np.argpartition(-scores, kk - 1)[:kk]
        top = top[np.argsort(-scores[top], kind="stable")]
        chosen = entries[top]
        lat, lon, _ = self.grid.frame.to_latlon(self.east_north[chosen, 0], self.east_north[chosen, 1])
        return [
            Candidate(
                east=float(self.east_north[i, 0]),
                north=float(self.east_north[i, 1]),
                lat=float(la),
                lon=float(lo),
                score=float(s),
                entry=int(i),
                rank=r,
            )
            for r, (i, la, lo, s) in enumerate(zip(chosen, np.atleast_1d(lat), np.atleast_1d(lon), scores[top]))
        ]


def save_index(path: str | os.PathLike, index: CityIndex) -> None:
    """Write ``index`` to ``path`` (.npz) atomically: a reader sees the old file or the whole new one."""
    meta = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "grid": asdict(index.grid),
        "model_sha256": index.model_sha256,
        "tiles": index.tiles,
        "entries": len(index),
        "dim": index.dim,
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                east_north=index.east_north,
                descriptors=index.descriptors,
            )


def load_index(path: str | os.PathLike, model_sha256: Optional[str] = None) -> CityIndex:
    """Read a city index; with ``model_sha256``, refuse one made by another model file.

    Raises :class:`IndexFileError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(f"{path}: city index not found (build one with `xview-adapt index-map`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays: Dict[str, Any] = {k: z[k] for k in ("meta", "east_north", "descriptors")}
    except KeyError as e:
        raise IndexFileError(f"{path}: not a city index (missing {e})") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise IndexFileError(f"{path}: not a readable city index ({e})") from None
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFileError(f"{path}: city index metadata is not JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        raise IndexFileError(
            f"{path}: not a city index (format {meta.get('format') if isinstance(meta, dict) else meta!r})"
        )
    if meta.get("version") != INDEX_VERSION:
        raise IndexFileError(
            f"{path}: city index version {meta.get('version')!r}; this software reads version {INDEX_VERSION} "
            "(rebuild it with `xview-adapt index-map`)"
        )
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise IndexFileError(
            f"{path}: city index was built with model sha256 {str(meta.get('model_sha256'))[:12]}..., "
            f"the model in use is {model_sha256[:12]}...; rebuild the index with this model"
        )
    try:
        return CityIndex(
            grid=IndexGrid(**meta["grid"]),
            model_sha256=str(meta["model_sha256"]),
            tiles=str(meta.get("tiles", "")),
            east_north=arrays["east_north"],
            descriptors=arrays["descriptors"],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFileError(f"{path}: inconsistent city index ({e})") from None
