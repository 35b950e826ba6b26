# SPDX-License-Identifier: Apache-2.0
"""Disk cache of fetched tiles: an XYZ folder (``{z}/{x}/{y}.{ext}``, openable as ``xyz:DIR``) plus one
small JSON side file per tile with its HTTP freshness (expiry epoch seconds, ETag, Last-Modified)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from xview_loc_ros.fsutil import OutputLock, atomic_write_bytes, atomic_write_json
from xview_loc_ros.tiles.local import FOLDER_EXTENSIONS


@dataclass(frozen=True)
class CachedTile:
    path: Path
    expires: float  # epoch seconds; fresh while time.time() < expires
    etag: Optional[str] = None
    last_modified: Optional[str] = None

    @property
    def fresh(self) -> bool:
        return time.time() < self.expires


def freshness_lifetime(
    headers: Mapping[str, str], default_ttl_s: float, now: Optional[float] = None
) -> Optional[float]:
    """Seconds a response may be served from the cache (RFC 9111): Cache-Control max-age (less Age), else
    Expires - Date, else ``default_ttl_s``; 0 for no-cache (store, revalidate each use); None for no-store."""
    now = time.time() if now is None else now
    cc = {}
    for part in headers.get("Cache-Control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            cc[name.lower()] = value.strip('"')
    if "no-store" in cc:
        return None
    if "no-cache" in cc:
        return 0.0
    if "max-age" in cc and re.fullmatch(r"\d+", cc["max-age"]):
        age = headers.get("Age", "0")
        return max(0.0, float(cc["max-age"]) - (float(age) if age.isdigit() else 0.0))
    if "Expires" in headers:
        try:
            expires = email.utils.parsedate_to_datetime(headers["Expires"]).timestamp()
        except (TypeError, ValueError):
            return 0.0  # an invalid Expires means "already expired"
        date = headers.get("Date")
        try:
            base = email.utils.parsedate_to_datetime(date).timestamp() if date else now
        except (TypeError, ValueError):
            base = now
        return max(0.0, expires - base)
    return float(default_ttl_s)


class DiskTileCache:
    """Tiles under ``root`` in XYZ layout with freshness side files; all writes are atomic. One process
    uses a cache folder at a time: it holds the folder's lock until :meth:`close`."""

    def __init__(self, root: str | Path, default_ttl_s: float = 7 * 86400.0) -> None:
        self.root = Path(root)
        self.default_ttl_s = float(default_ttl_s)
        self._lock = OutputLock(self.root, "tile cache").acquire()
        self.root.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Release the folder's lock."""
        self._lock.release()

    def lookup(self, z: int, x: int, y: int) -> Optional[CachedTile]:
        base = self.root / str(z) / str(x)
        for ext in FOLDER_EXTENSIONS:
            path = base / f"{y}.{ext}"
            if path.is_file():
                meta = self._read_meta(path)
                return CachedTile(path, float(meta.get("expires", 0.0)), meta.get("etag"), meta.get("last_modified"))
        return None

    @staticmethod
    def _read_meta(path: Path) -> dict:
        try:
            return json.loads(path.with_name(path.name + ".json").read_text())
        except (OSError, ValueError):
            return {"expires": 0.0}  # no or broken side file: treat as stale, revalidate

    def store(self, z: int, x: int, y: int, ext: str, data: bytes, headers: Mapping[str, str]) -> bool:
        """Store a validated response body; False (nothing written) when the server said no-store."""
        lifetime = freshness_lifetime(headers, self.default_ttl_s)
        if lifetime is None:
            return False
        base = self.root / str(z) / str(x)
        for other in FOLDER_EXTENSIONS:
            if other != ext and (base / f"{y}.{other}").exists():
                (base / f"{y}.{other}").unlink()
        path = base / f"{y}.{ext}"
        # Not flushed (four fsyncs a tile would slow a prefetch of thousands): a tile damaged by a power
        # cut fails its decode checks on use and is fetched again.
        atomic_write_bytes(path, data, durable=False)
        self._write_meta(path, lifetime, headers)
        return True

    def refresh(self, cached: CachedTile, headers: Mapping[str, str]) -> None:
        """After a 304 Not Modified: extend the freshness of ``cached`` by the new headers."""
        lifetime = freshness_lifetime(headers, self.default_ttl_s)
        self._write_meta(cached.path, 0.0 if lifetime is None else lifetime, headers, cached)

    @staticmethod
    def _write_meta(path: Path, lifetime: float, headers: Mapping[str, str], old: Optional[CachedTile] = None) -> None:
        atomic_write_json(
            path.with_name(path.name + ".json"),
            {
                "expires": time.time() + lifetime,
                "etag": headers.get("ETag") or (old.etag if old else None),
                "last_modified": headers.get("Last-Modified") or (old.last_modified if old else None),
            },
            durable=False,
        )  # a broken side file reads as stale: revalidated
