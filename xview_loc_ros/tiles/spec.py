# SPDX-License-Identifier: Apache-2.0
"""``open_tile_source(spec)``: one string names any tile source."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from xview_loc_ros.tiles.geotiff import GeoTIFFSource
from xview_loc_ros.tiles.http import HTTPTileSource
from xview_loc_ros.tiles.local import FolderTileSource, MBTilesSource, PMTilesSource
from xview_loc_ros.tiles.source import TileSource

SPEC_HELP = (
    "xyz:DIR ({z}/{x}/{y}.png|jpg|webp folder), tms:DIR (rows from the south), mbtiles:FILE, pmtiles:FILE, "
    "geotiff:FILE (orthophoto, any CRS; needs rasterio), or an http(s)://... URL template with {z} {x} {y} "
    "(also {-y} TMS row, {q} quadkey, {s} subdomain)"
)


def open_tile_source(spec: str, cache_dir: Optional[str | Path] = None, **options) -> TileSource:
    """Open the tile source named by ``spec`` (see ``SPEC_HELP``); ``cache_dir`` is the disk cache of
    HTTP sources (an XYZ folder) and is refused for local sources. ``options`` go to the source class
    (e.g. ``lru_tiles``, ``workers``; HTTP: ``timeout_s``, ``retries``, ``max_bytes``, ``subdomains``, ...)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"tile source spec must be a non-empty string: {SPEC_HELP}")
    if spec.startswith(("http://", "https://")):
        return HTTPTileSource(spec, cache_dir, **options)
    kind, sep, rest = spec.partition(":")
    local = {
        "xyz": lambda p: FolderTileSource(p, tms=False, **options),
        "tms": lambda p: FolderTileSource(p, tms=True, **options),
        "mbtiles": lambda p: MBTilesSource(p, **options),
        "pmtiles": lambda p: PMTilesSource(p, **options),
        "geotiff": lambda p: GeoTIFFSource(p, **options),
    }
    if not sep or kind not in local or not rest:
        raise ValueError(f"unknown tile source spec {spec!r}; use {SPEC_HELP}")
    if cache_dir is not None:
        raise ValueError(f"tile source {spec!r} is local; a cache folder is only used with http(s) sources")
    return local[kind](Path(rest).expanduser())
