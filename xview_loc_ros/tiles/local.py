# SPDX-License-Identifier: Apache-2.0
"""Local tile archives: XYZ/TMS folders, MBTiles 1.3 (SQLite) and PMTiles v3 files."""

from __future__ import annotations

import gzip
import sqlite3
import threading
from pathlib import Path
from typing import Optional

from xview_loc_ros.geo import xyz_to_tms_row
from xview_loc_ros.tiles.errors import TileDecodeError, TileNotFound
from xview_loc_ros.tiles.source import Tile, TileSource, decode_tile

FOLDER_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


class FolderTileSource(TileSource):
    """``DIR/{z}/{x}/{y}.{png,jpg,jpeg,webp}``; ``tms=True`` when rows count from the south (TMS)."""

    def __init__(self, root: str | Path, tms: bool = False, **kw) -> None:
        super().__init__(f"{'tms' if tms else 'xyz'}:{root}", **kw)
        self.root = Path(root)
        self.tms = tms
        if not self.root.is_dir():
            raise FileNotFoundError(f"tile folder {self.root} does not exist or is not a folder")
        zooms = sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())
        if zooms:
            self.min_zoom, self.max_zoom = zooms[0], zooms[-1]

    def _load(self, z: int, x: int, y: int) -> Tile:
        row = xyz_to_tms_row(y, z) if self.tms else y
        base = self.root / str(z) / str(x)
        for ext in FOLDER_EXTENSIONS:
            path = base / f"{row}.{ext}"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            return decode_tile(data, f"{self._where(z, x, y)} ({path})")
        raise TileNotFound(f"{self._where(z, x, y)}: no file {base}/{row}.{{{','.join(FOLDER_EXTENSIONS)}}}")


class MBTilesSource(TileSource):
    """MBTiles 1.3: SQLite ``tiles(zoom_level, tile_column, tile_row, tile_data)`` with TMS rows, opened read-only."""

    def __init__(self, path: str | Path, **kw) -> None:
        super().__init__(f"mbtiles:{path}", **kw)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"MBTiles file {self.path} does not exist")
        self._local = threading.local()
        db = self._db()
        try:
            self.metadata = dict(db.execute("SELECT name, value FROM metadata").fetchall())
            zmin, zmax = db.execute("SELECT MIN(zoom_level), MAX(zoom_level) FROM tiles").fetchone()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path} is not an MBTiles file (needs tables metadata and tiles): {e}") from None
        fmt = self.metadata.get("format", "png")
        if fmt not in ("png", "jpg", "jpeg", "webp"):
            raise ValueError(f"{self.path}: MBTiles format {fmt!r} is not raster imagery (png, jpg or webp)")
        if zmin is not None:
            self.min_zoom = int(self.metadata.get("minzoom", zmin))
            self.max_zoom = int(self.metadata.get("maxzoom", zmax))

    def _db(self) -> sqlite3.Connection:
        # One read-only connection per thread: sqlite3 connections must not be shared across threads.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            self._local.db = db
        return db

    def _load(self, z: int, x: int, y: int) -> Tile:
        try:
            row = (
                self._db()
                .execute(
                    "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                    (z, x, xyz_to_tms_row(y, z)),
                )
                .fetchone()
            )
        except sqlite3.DatabaseError as e:  # pages damaged after opening ("database disk image is malformed")
            raise TileDecodeError(f"{self._where(z, x, y)}: damaged archive: {e}") from None
        if row is None:
            raise TileNotFound(f"{self._where(z, x, y)}: not in the archive")
        return decode_tile(bytes(row[0]), self._where(z, x, y))

    def close(self) -> None:
        super().close()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class PMTilesSource(TileSource):
    """PMTiles v3 raster archive (XYZ addressing), read through a memory map with the ``pmtiles`` package."""

    def __init__(self, path: str | Path, **kw) -> None:
        super().__init__(f"pmtiles:{path}", **kw)
        try:
            from pmtiles.reader import MmapSource, Reader
            from pmtiles.tile import Compression, TileType
        except ImportError:  # pragma: no cover - optional extra
            raise ValueError(
                "pmtiles: sources need the 'pmtiles' package (pip install 'xview_loc_ros[pmtiles]')"
            ) from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"PMTiles file {self.path} does not exist")
        self._file = open(self.path, "rb")
        try:
            self._reader = Reader(MmapSource(self._file))
            header = self._reader.header()
        except Exception as e:
            self._file.close()
            raise ValueError(f"{self.path} is not a PMTiles v3 archive: {e}") from None
        if header["tile_type"] not in (TileType.PNG, TileType.JPEG, TileType.WEBP):
            self._file.close()
            raise ValueError(f"{self.path}: PMTiles tile type {header['tile_type'].name} is not raster imagery")
        if header["tile_compression"] not in (Compression.NONE, Compression.UNKNOWN, Compression.GZIP):
            self._file.close()
            raise ValueError(
                f"{self.path}: PMTiles tile compression {header['tile_compression'].name} is not supported"
            )
        self._gzip = header["tile_compression"] == Compression.GZIP
        self.min_zoom, self.max_zoom = int(header["min_zoom"]), int(header["max_zoom"])

    def _load(self, z: int, x: int, y: int) -> Tile:
        try:
            data: Optional[bytes] = self._reader.get(z, x, y)
        except Exception as e:  # noqa: BLE001 - pmtiles parses the (untrusted) directories with whatever
            # their bytes make it hit: BadGzipFile, IndexError, struct.error, ValueError...
            raise TileDecodeError(
                f"{self._where(z, x, y)}: damaged archive directory: {type(e).__name__}: {e}"
            ) from None
        if data is None:
            raise TileNotFound(f"{self._where(z, x, y)}: not in the archive")
        if self._gzip:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as e:
                raise TileDecodeError(f"{self._where(z, x, y)}: bad gzip tile data: {e}") from None
        return decode_tile(bytes(data), self._where(z, x, y))

    def close(self) -> None:
        super().close()
        self._file.close()
