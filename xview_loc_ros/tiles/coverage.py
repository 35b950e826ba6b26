# SPDX-License-Identifier: Apache-2.0
"""Which XYZ tiles cover an area: a lat/lon box, a disc around a position, a path."""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from xview_loc_ros.geo import MERCATOR_MAX_LAT, LocalENU, ground_resolution, latlon_to_global_pixel
from xview_loc_ros.tiles.source import TILE_PX, TileKey


def tiles_in_bbox(
    south: float, west: float, north: float, east: float, zoom: int, max_tiles: Optional[int] = None
) -> List[TileKey]:
    """XYZ tiles at ``zoom`` covering the box (degrees); ``west > east`` crosses the date line; latitudes
    are clipped to Web Mercator's range. Raises ValueError, before listing them, past ``max_tiles``."""
    if not (-90 <= south < north <= 90):
        raise ValueError(f"bbox south/north must satisfy -90 <= S < N <= 90 degrees, got S={south} N={north}")
    if not (-180 <= west <= 180 and -180 <= east <= 180) or west == east:
        raise ValueError(f"bbox west/east must be distinct longitudes in [-180, 180], got W={west} E={east}")
    south, north = max(south, -MERCATOR_MAX_LAT), min(north, MERCATOR_MAX_LAT)
    n = 1 << zoom
    px_w, py_n = latlon_to_global_pixel(north, west, zoom)
    px_e, py_s = latlon_to_global_pixel(south, east, zoom)
    x0, x1 = int(px_w // TILE_PX), int(min(float(px_e), n * TILE_PX - 1e-6) // TILE_PX)
    y0, y1 = int(py_n // TILE_PX), int(min(float(py_s), n * TILE_PX - 1e-6) // TILE_PX)
    xs = range(x0, x1 + 1) if west < east else [*range(x0, n), *range(0, x1 + 1)]
    count = len(xs) * (y1 - y0 + 1)
    if max_tiles is not None and count > max_tiles:
        raise ValueError(
            f"the box S={south} W={west} N={north} E={east} holds {count} tiles at zoom {zoom}, "
            f"over the limit of {max_tiles}"
        )
    return [(zoom, x, y) for x in xs for y in range(y0, y1 + 1)]


def tiles_around(lat: float, lon: float, radius_m: float, zoom: int) -> Set[TileKey]:
    """XYZ tiles at ``zoom`` touching the square of half-side ``radius_m`` metres centred on (lat, lon)."""
    if not radius_m >= 0:
        raise ValueError(f"radius must be >= 0 metres, got {radius_m!r}")
    n = 1 << zoom
    gx, gy = latlon_to_global_pixel(lat, lon, zoom)
    r_px = radius_m / ground_resolution(lat, zoom)
    x0, x1 = math.floor((gx - r_px) / TILE_PX), math.floor((gx + r_px) / TILE_PX)
    y0, y1 = max(0, math.floor((gy - r_px) / TILE_PX)), min(n - 1, math.floor((gy + r_px) / TILE_PX))
    return {(zoom, x % n, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}


def densify_path(points: Sequence[Tuple[float, float]], step_m: float) -> List[Tuple[float, float]]:
    """Insert points so that consecutive (lat, lon) points of a path are at most ``step_m`` metres apart."""
    if not step_m > 0:
        raise ValueError(f"path step must be > 0 metres, got {step_m!r}")
    pts = [(float(a), float(b)) for a, b in points]
    out: List[Tuple[float, float]] = pts[:1]
    for (la, lo), (lb, lob) in zip(pts, pts[1:]):
        frame = LocalENU(la, lo)
        e, nn, _ = frame.to_enu(lb, lob)
        k = max(1, int(math.ceil(math.hypot(float(e), float(nn)) / step_m)))
        t = np.arange(1, k + 1) / k
        lats, lons, _ = frame.to_latlon(float(e) * t, float(nn) * t)
        out.extend(zip(np.atleast_1d(lats).tolist(), np.atleast_1d(lons).tolist()))
    return out


def tiles_along(points: Iterable[Tuple[float, float]], radius_m: float, zoom: int) -> List[TileKey]:
    """Tiles within ``radius_m`` of a path of (lat, lon) points, in path order, without repeats."""
    seen: dict = {}
    for lat, lon in densify_path(list(points), max(radius_m, 1.0)):
        for key in sorted(tiles_around(lat, lon, radius_m, zoom)):
            seen.setdefault(key, None)
    return list(seen)
