# SPDX-License-Identifier: Apache-2.0
"""Aerial imagery: tile sources behind one interface (``open_tile_source``) and the patch builder.

Sources: XYZ/TMS folders, MBTiles, PMTiles, GeoTIFF orthophotos, HTTP(S) URL templates with a disk
cache. All address tiles in XYZ (row 0 at the north) and return RGB uint8 (256, 256, 3).
"""

from xview_loc_ros.tiles.errors import TileDecodeError, TileError, TileFetchError, TileNotFound
from xview_loc_ros.tiles.patch import AerialPatch, AerialPatchBuilder, PrefetchSummary
from xview_loc_ros.tiles.source import Tile, TileSource, decode_tile
from xview_loc_ros.tiles.spec import SPEC_HELP, open_tile_source

__all__ = [
    "AerialPatch",
    "AerialPatchBuilder",
    "PrefetchSummary",
    "SPEC_HELP",
    "Tile",
    "TileDecodeError",
    "TileError",
    "TileFetchError",
    "TileNotFound",
    "TileSource",
    "decode_tile",
    "open_tile_source",
]
