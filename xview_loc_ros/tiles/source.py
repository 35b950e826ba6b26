# SPDX-License-Identifier: Apache-2.0
"""The tile-source interface: ``get_tile(z, x, y)`` in XYZ addressing -> RGB uint8 (256, 256, 3).

Sources differ only in how they read one tile's bytes (``_load``); decoding, validation, the
in-memory LRU of decoded tiles and concurrent loading of the tiles one patch needs live here.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple, Union

import cv2
import numpy as np

from xview_loc_ros.imageheader import ImageHeaderError, image_kind, image_size
from xview_loc_ros.tiles.errors import TileDecodeError, TileError, TileNotFound

log = logging.getLogger(__name__)

TILE_PX = 256
TileKey = Tuple[int, int, int]


@dataclass(frozen=True)
class Tile:
    """A decoded tile: ``rgb`` uint8 (256, 256, 3); ``valid`` bool (256, 256) or None when every pixel has imagery
    (False where a PNG alpha channel is 0 or a GeoTIFF does not cover the pixel)."""

    rgb: np.ndarray
    valid: Optional[np.ndarray] = None


def _complete(data: bytes, fmt: str) -> bool:
    # Decoders accept some truncated files and fill the rest with grey or black; check the end markers.
    if fmt == "png":
        return b"IEND" in data[-12:]
    if fmt == "jpg":
        return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    return int.from_bytes(data[4:8], "little") + 8 <= len(data)


def decode_tile(data: bytes, where: str) -> Tile:
    """Decode PNG/JPEG/WebP tile bytes into a :class:`Tile`; ``where`` names the tile in error messages."""
    if not data:
        raise TileDecodeError(f"{where}: empty tile data")
    fmt = image_kind(data)
    if fmt is None:
        raise TileDecodeError(f"{where}: not a PNG, JPEG or WebP image (starts with {data[:8]!r})")
    if not _complete(data, fmt):
        raise TileDecodeError(f"{where}: truncated {fmt.upper()} ({len(data)} bytes)")
    # The declared size is checked before decoding: decoders allocate it first (a 631-byte JPEG
    # declaring 20000x20000 px cost 2.3 GB and 15 s before this check moved here).
    try:
        declared = image_size(data)
    except ImageHeaderError as e:
        raise TileDecodeError(f"{where}: {e}") from None
    if declared is not None and declared != (TILE_PX, TILE_PX):
        raise TileDecodeError(f"{where}: tile is {declared[0]}x{declared[1]} px, expected {TILE_PX}x{TILE_PX}")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise TileDecodeError(f"{where}: {fmt.upper()} decoder failed: {e}") from None
    if img is None:
        raise TileDecodeError(f"{where}: corrupt {fmt.upper()} ({len(data)} bytes)")
    if img.dtype != np.uint8:
        raise TileDecodeError(f"{where}: {img.dtype} pixels, expected 8-bit")
    if img.shape[:2] != (TILE_PX, TILE_PX):  # a header that lies about the frame (e.g. two SOFs)
        raise TileDecodeError(f"{where}: tile is {img.shape[1]}x{img.shape[0]} px, expected {TILE_PX}x{TILE_PX}")
    valid = None
    if img.ndim == 2:
        rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        alpha = img[:, :, 3] > 0
        valid = None if alpha.all() else alpha
    else:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return Tile(np.ascontiguousarray(rgb), valid)


def check_tile_index(z: int, x: int, y: int) -> None:
    """Raise ValueError unless (z, x, y) is a valid XYZ tile index."""
    if not (isinstance(z, (int, np.integer)) and 0 <= z <= 30):
        raise ValueError(f"tile zoom must be an integer in 0..30, got {z!r}")
    n = 1 << int(z)
    if not (0 <= x < n and 0 <= y < n):
        raise ValueError(f"tile ({z}/{x}/{y}) is outside zoom {z} (x, y in 0..{n - 1})")


class TileSource:
    """Base of all sources. Subclasses implement ``_load(z, x, y) -> Tile`` (raising a TileError) and set
    ``min_zoom``/``max_zoom``; callers use :meth:`get_tile` / :meth:`get_tile_masked` / :meth:`get_tiles`.

    ``lru_tiles`` decoded tiles (192 KiB each) are kept in memory; ``workers`` threads load the tiles
    one patch needs concurrently (decoding releases the GIL, network waits too).
    """

    min_zoom: int = 0
    max_zoom: int = 22

    def __init__(self, spec: str, lru_tiles: int = 512, workers: int = 2) -> None:
        self.spec = spec
        self._lru: "OrderedDict[TileKey, Tile]" = OrderedDict()
        self._lru_cap = max(0, int(lru_tiles))
        self._lock = threading.Lock()
        self._inflight: Dict[TileKey, "Future[Tile]"] = {}
        self._workers = max(1, int(workers))
        self._pool: Optional[ThreadPoolExecutor] = None
        self._hits = 0
        self._misses = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, zoom {self.min_zoom}..{self.max_zoom})"

    def _load(self, z: int, x: int, y: int) -> Tile:
        raise NotImplementedError

    def _where(self, z: int, x: int, y: int) -> str:
        return f"tile {z}/{x}/{y} of {self.spec}"

    def get_tile_masked(self, z: int, x: int, y: int) -> Tile:
        """Tile (XYZ addressing) with its validity mask; raises TileNotFound/TileDecodeError/TileFetchError."""
        check_tile_index(z, x, y)
        key = (int(z), int(x), int(y))
        if not self.min_zoom <= key[0] <= self.max_zoom:
            raise TileNotFound(f"{self._where(*key)}: zoom outside the source's {self.min_zoom}..{self.max_zoom}")
        with self._lock:
            tile = self._lru.get(key)
            if tile is not None:
                self._lru.move_to_end(key)
                self._hits += 1
                return tile
            self._misses += 1
            pending = self._inflight.get(key)
            if pending is None:  # this thread loads it; others asking meanwhile wait for the result
                self._inflight[key] = Future()
        if pending is not None:
            return pending.result()
        try:
            tile = self._load(*key)
        except BaseException as e:
            with self._lock:
                self._inflight.pop(key).set_exception(e)
            raise
        tile.rgb.setflags(write=False)
        with self._lock:
            self._lru[key] = tile
            while len(self._lru) > self._lru_cap:
                self._lru.popitem(last=False)
            self._inflight.pop(key).set_result(tile)
        return tile

    def get_tile(self, z: int, x: int, y: int) -> np.ndarray:
        """RGB uint8 (256, 256, 3) of XYZ tile (z, x, y) (read-only array shared with the cache)."""
        return self.get_tile_masked(z, x, y).rgb

    def get_tiles(self, keys: Iterable[TileKey]) -> Dict[TileKey, Union[Tile, TileError]]:
        """Load several tiles concurrently; each value is the Tile or the TileError it raised."""
        keys = list(dict.fromkeys(keys))
        out: Dict[TileKey, Union[Tile, TileError]] = {}
        with self._lock:
            for k in keys:
                if k in self._lru:
                    out[k] = self._lru[k]
                    self._hits += 1
        todo = [k for k in keys if k not in out]
        if len(todo) == 1 or (todo and self._workers == 1):
            for k in todo:
                out[k] = self._get_or_error(k)
        elif todo:
            with self._lock:  # build() and a background prefetch may arrive here together
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="tiles")
                pool = self._pool
            for k, res in zip(todo, pool.map(self._get_or_error, todo)):
                out[k] = res
        return out

    def _get_or_error(self, key: TileKey) -> Union[Tile, TileError]:
        try:
            return self.get_tile_masked(*key)
        except TileError as e:
            return e

    def cache_stats(self) -> Dict[str, int]:
        """Memory-cache counters since start: ``hits`` (decoded tile reused), ``misses`` (tile loaded
        from the folder, file, disk cache or server, or awaited from a concurrent load)."""
        with self._lock:
            return {"hits": self._hits, "misses": self._misses}

    def close(self) -> None:
        """Release files, connections and threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "TileSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
