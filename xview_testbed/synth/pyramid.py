# SPDX-License-Identifier: Apache-2.0
"""Export an ortho image (ENU raster at the city datum) as a Web Mercator tile pyramid: XYZ folder + MBTiles 1.3."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterable, Tuple

import cv2
import numpy as np

from xview_loc_ros.fsutil import atomic_path
from xview_loc_ros.geo import TILE_SIZE_PX, LocalENU, ground_resolution, latlon_to_tile, tile_to_latlon, xyz_to_tms_row

_FIT_TOLERANCE_M = 1e-3


def city_bbox(frame: LocalENU, size_m: float) -> Tuple[float, float, float, float]:
    """(south, west, north, east) degrees of the square city of side ``size_m`` centred on the datum."""
    h = size_m / 2
    lat, lon, _ = frame.to_latlon(np.array([-h, h, h, -h]), np.array([-h, -h, h, h]), 0.0)
    return float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max())


def tile_range(bbox: Tuple[float, float, float, float], zoom: int) -> Tuple[int, int, int, int]:
    """Inclusive XYZ tile index range (x0, y0, x1, y1) covering ``bbox`` at ``zoom``."""
    s, w, n, e = bbox
    tx, ty = latlon_to_tile(np.array([n, s]), np.array([w, e]), zoom)
    return int(np.floor(tx[0])), int(np.floor(ty[0])), int(np.floor(tx[1])), int(np.floor(ty[1]))


def _global_pixel_to_enu(frame: LocalENU, zoom: int, x0: float, y0: float, x1: float, y1: float) -> Callable:
    """A cubic fit of global-pixel (col, row) -> ENU metres over a small box, checked against pyproj (< 1 mm)."""
    gx, gy = np.meshgrid(np.linspace(x0, x1, 14), np.linspace(y0, y1, 14))
    lat, lon = tile_to_latlon(gx / TILE_SIZE_PX, gy / TILE_SIZE_PX, zoom)
    e, n, _ = frame.to_enu(lat, lon, 0.0)
    cx, cy, sx, sy = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0) / 2, max(y1 - y0, 1.0) / 2

    powers = [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3)]  # (u, v) exponents

    def design(x, y):
        u, v = (np.ravel(x) - cx) / sx, (np.ravel(y) - cy) / sy
        return np.stack([u**i * v**j for i, j in powers], -1)

    a = design(gx, gy)
    ce = np.linalg.lstsq(a, e.ravel(), rcond=None)[0]
    cn = np.linalg.lstsq(a, n.ravel(), rcond=None)[0]
    err = max(np.abs(a @ ce - e.ravel()).max(), np.abs(a @ cn - n.ravel()).max())
    if err > _FIT_TOLERANCE_M:
        raise ValueError(f"city too large for the tile mapping fit at zoom {zoom} (residual {err:.4f} m)")

    def f(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """ENU (east, north) grids (len(y), len(x)) at global pixel columns ``x`` and rows ``y``."""
        u, v = (x - cx) / sx, (y - cy) / sy
        e_out = np.zeros((len(y), len(x)))
        n_out = np.zeros((len(y), len(x)))
        for (i, j), c_e, c_n in zip(powers, ce, cn):
            t = np.outer(v**j, u**i)
            e_out += c_e * t
            n_out += c_n * t
        return e_out, n_out

    return f


def export_pyramid(
    ortho: np.ndarray,
    res_m: float,
    frame: LocalENU,
    zooms: Iterable[int],
    out_dir: Path,
    mbtiles_path: Path,
    name: str = "synthetic city",
    jobs: int = 2,
) -> Dict[int, int]:
    """Write ``out_dir/{z}/{x}/{y}.png`` and an MBTiles file (TMS rows) of the ortho at each zoom.

    ``ortho`` is north-up, centred on the ``frame`` datum, ``res_m`` m/px. Tiles are resampled
    exactly through the Web Mercator -> ENU mapping (bilinear; area-averaged first when the
    zoom is coarser than the ortho). Returns tiles written per zoom.
    """
    n_px = ortho.shape[0]
    size_m = n_px * res_m
    bbox = city_bbox(frame, size_m)
    counts: Dict[int, int] = {}
    tiles = []
    zooms = sorted(set(int(z) for z in zooms))
    bgr = cv2.cvtColor(ortho, cv2.COLOR_RGB2BGR)
    for z in zooms:
        if not 0 <= z <= 23:
            raise ValueError(f"zoom must be within 0..23, got {z}")
        x0, y0, x1, y1 = tile_range(bbox, z)
        tile_res = ground_resolution(frame.lat0, z)
        factor = tile_res / res_m
        src = bgr
        if factor > 1.5:
            m = max(2, int(round(n_px / factor)))
            src = cv2.resize(bgr, (m, m), interpolation=cv2.INTER_AREA)
        scale = src.shape[0] / n_px
        fit = _global_pixel_to_enu(frame, z, x0 * 256.0, y0 * 256.0, (x1 + 1) * 256.0, (y1 + 1) * 256.0)
        counts[z] = 0
        for ty in range(y0, y1 + 1):
            for tx in range(x0, x1 + 1):
                tiles.append((z, tx, ty, src, fit, scale))
                counts[z] += 1

    base = np.arange(TILE_SIZE_PX) + 0.5

    def encode(t):
        z, tx, ty, src, fit, scale = t
        e, n = fit(tx * 256 + base, ty * 256 + base)
        col = ((e / res_m + n_px / 2) * scale - 0.5).astype(np.float32)
        row = ((n_px / 2 - n / res_m) * scale - 0.5).astype(np.float32)
        img = cv2.remap(src, col, row, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise OSError(f"could not encode tile {z}/{tx}/{ty}")
        data = buf.tobytes()
        p = out_dir / str(z) / str(tx) / f"{ty}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return z, tx, ty, data

    with atomic_path(mbtiles_path) as tmp, ThreadPoolExecutor(max(1, jobs)) as pool:
        db = sqlite3.connect(str(tmp))
        try:
            db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
            db.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
            db.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
            s, w, nn, e = bbox
            meta = {
                "name": name,
                "format": "png",
                "type": "baselayer",
                "version": "1.0",
                "description": "xview_loc_ros synthetic city ortho",
                "bounds": f"{w:.7f},{s:.7f},{e:.7f},{nn:.7f}",
                "center": f"{frame.lon0:.7f},{frame.lat0:.7f},{zooms[-1]}",
                "minzoom": str(zooms[0]),
                "maxzoom": str(zooms[-1]),
                "json": json.dumps({"generator": "xview_testbed.synth"}),
            }
            db.executemany("INSERT INTO metadata VALUES (?, ?)", list(meta.items()))
            for z, tx, ty, data in pool.map(encode, tiles):
                db.execute(
                    "INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, tx, xyz_to_tms_row(ty, z), sqlite3.Binary(data))
                )
            db.commit()
        finally:
            db.close()
    return counts
