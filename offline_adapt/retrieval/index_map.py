# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt index-map`: the city index (:mod:`xview_loc_ros.retrieval`) of a model over an area.

Patches are cut with the node's own patch builder (:class:`xview_loc_ros.tiles.AerialPatchBuilder`, north-up,
the model's size and metres per pixel) around every grid centre, prepared as the node prepares them and run
through the model's aerial branch (``Backend.encode_aerial``: the aerial-only path for a PyTorch checkpoint, the
whole graph with a zero ground input for ONNX / TensorRT; the descriptor is the same). The index records
``file_sha256`` of the model file given: an index built from ``student.pt`` is refused by a node that runs
``student.onnx`` (different bytes), so build the index from the very file the vehicle loads.

Resumable: descriptors are written in chunks to ``OUT.work/`` (with a manifest of the grid, the model's hash and
the tile source); a rerun with the same inputs continues after the last complete chunk, other inputs start over.
The index itself is written atomically at the end and the work folder removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from offline_adapt.retrieval.options import IndexMapOptions
from xview_loc_ros import preprocess
from xview_loc_ros.fsutil import atomic_path, atomic_write_json, file_sha256
from xview_loc_ros.inference.base import Backend, has_retrieval
from xview_loc_ros.retrieval import CityIndex, IndexGrid, save_index
from xview_loc_ros.tiles import AerialPatchBuilder, TileError, TileSource

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def work_dir(out: str | os.PathLike) -> Path:
    return Path(f"{out}.work")


def patch_centres(grid: IndexGrid) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(east_north (N,2) metres, lat (N,), lon (N,)) of the grid's patch centres, in index order."""
    en = grid.centres_en()
    lat, lon, _ = grid.frame.to_latlon(en[:, 0], en[:, 1])
    return en, np.atleast_1d(lat), np.atleast_1d(lon)


class _Progress:
    """tqdm on a terminal when asked for, else nothing (the caller prints a summary)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="patch", desc="index-map", file=sys.stderr)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _chunks(n: int, size: int) -> Iterator[Tuple[int, int, int]]:
    for k, start in enumerate(range(0, n, size)):
        yield k, start, min(n, start + size)


def _manifest(grid: IndexGrid, model_sha256: str, tiles: str, opts: IndexMapOptions, n: int) -> Dict[str, Any]:
    return {
        "grid": asdict(grid),
        "model_sha256": model_sha256,
        "tiles": tiles,
        "max_missing": opts.max_missing,
        "chunk": opts.chunk,
        "entries": n,
    }


def encode_patches(
    backend: Backend,
    builder: AerialPatchBuilder,
    lat: np.ndarray,
    lon: np.ndarray,
    batch: int,
    max_missing: float,
    on_batch: Optional[Callable[[int], None]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """(kept positions into ``lat``/``lon``, their descriptors (K,D) float32) for patches centred there; a patch
    whose imagery is missing beyond ``max_missing`` (or outside the tile source) is left out."""
    config = backend.config
    kept: List[int] = []
    desc: List[np.ndarray] = []
    pending: List[np.ndarray] = []
    pending_idx: List[int] = []

    def flush() -> None:
        if pending:
            desc.append(backend.encode_aerial(np.stack(pending)))
            kept.extend(pending_idx)
            if on_batch is not None:
                on_batch(len(pending))
            pending.clear()
            pending_idx.clear()

    for i in range(len(lat)):
        try:
            patch = builder.build(float(lat[i]), float(lon[i]))
        except TileError:
            patch = None
        if patch is None or patch.missing_fraction > max_missing:
            if on_batch is not None:
                on_batch(1)
            continue
        pending.append(preprocess.prepare_aerial(patch.image, config))
        pending_idx.append(i)
        if len(pending) >= batch:
            flush()
    flush()
    dim = int(config.get("retrieval_dim") or 0)
    out = np.concatenate(desc).astype(np.float32) if desc else np.zeros((0, dim), np.float32)
    return np.asarray(kept, dtype=np.int64), out


def build_index(
    model: str | os.PathLike,
    backend: Backend,
    source: TileSource,
    tiles: str,
    out: str | os.PathLike,
    opts: IndexMapOptions,
    progress: bool = True,
) -> Dict[str, Any]:
    """Build (or resume) the index of ``backend`` (opened from the file ``model``) over the options' area into
    ``out``. Returns a summary (entries, left out, seconds, resumed chunks)."""
    config = backend.config
    if not has_retrieval(config):
        raise ValueError(
            f"{model}: this model has no retrieval head (config retrieval_dim); train one with "
            "`xview-adapt train-retrieval`"
        )
    sha = file_sha256(model)
    lat0, lon0 = opts.center
    grid = IndexGrid(
        lat0=lat0,
        lon0=lon0,
        radius_m=opts.radius_m,
        stride_m=opts.stride_m,
        mpp=float(config["mpp"]),
        size_px=int(config["aerial_size"]),
    )
    en, lat, lon = patch_centres(grid)
    n = len(en)
    work = work_dir(out)
    manifest = _manifest(grid, sha, tiles, opts, n)
    resumed = 0
    if work.is_dir():
        try:
            old = json.loads((work / MANIFEST).read_text())
        except (OSError, ValueError):
            old = None
        if old != manifest:
            log.info("%s: made for other inputs (grid, model, tiles); starting over", work)
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / MANIFEST, manifest)
    builder = AerialPatchBuilder(source, grid.size_px, grid.mpp, allow_missing=True)
    chunks = list(_chunks(n, opts.chunk))
    done = [k for k, _, _ in chunks if (work / f"chunk_{k:06d}.npz").is_file()]
    resumed = len(done)
    bar = _Progress(n, sum(b - a for k, a, b in chunks if k in set(done)), progress)
    t0 = time.monotonic()
    try:
        for k, a, b in chunks:
            path = work / f"chunk_{k:06d}.npz"
            if path.is_file():
                continue
            idx, desc = encode_patches(backend, builder, lat[a:b], lon[a:b], opts.batch, opts.max_missing, bar.update)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, idx=idx + a, descriptors=desc)
    finally:
        bar.close()
    idx_all, desc_all = [], []
    for k, _, _ in chunks:
        with np.load(work / f"chunk_{k:06d}.npz") as z:
            idx_all.append(z["idx"])
            desc_all.append(z["descriptors"])
    idx = np.concatenate(idx_all)
    if idx.size == 0:
        raise ValueError(
            f"--tiles {tiles}: no patch of the area has imagery (centre {lat0:.6f},{lon0:.6f}, radius "
            f"{opts.radius_m:g} m); check --center and the tile source's coverage"
        )
    index = CityIndex(
        grid=grid, model_sha256=sha, tiles=tiles, east_north=en[idx], descriptors=np.concatenate(desc_all)
    )
    save_index(out, index)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "entries": len(index),
        "grid_points": n,
        "left_out": n - len(index),
        "dim": index.dim,
        "seconds": time.monotonic() - t0,
        "resumed_chunks": resumed,
        "model_sha256": sha,
    }
