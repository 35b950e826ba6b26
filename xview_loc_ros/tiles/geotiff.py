# SPDX-License-Identifier: Apache-2.0
"""A geo-referenced orthophoto (GeoTIFF / COG, any CRS) served as Web Mercator XYZ tiles (rasterio extra)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import cv2
import numpy as np
from pyproj import Transformer

from xview_loc_ros.geo import MERCATOR_HALF_EXTENT_M, WEB_MERCATOR, WGS84_LATLON, zoom_for_resolution
from xview_loc_ros.tiles.errors import TileDecodeError, TileNotFound
from xview_loc_ros.tiles.source import TILE_PX, Tile, TileSource


class GeoTIFFSource(TileSource):
    """Tiles resampled (bilinear) from an orthophoto with 3 (RGB) or 4 (RGBA) uint8 bands, read by windows.

    Each tile pixel centre is mapped EPSG:3857 -> the file's CRS (pyproj, exact at every pixel) -> file
    pixel through the inverse geotransform; only the window those pixels need is read. Pixels outside
    the file or on nodata/alpha 0 are marked invalid in the tile mask. ``max_zoom`` is the zoom
    whose resolution is the finest not coarser than the file's pixel size at its centre.
    """

    def __init__(self, path: str | Path, **kw) -> None:
        super().__init__(f"geotiff:{path}", **kw)
        try:
            import rasterio
        except ImportError:
            raise ValueError("geotiff: sources need rasterio (pip install 'xview_loc_ros[geotiff]')") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GeoTIFF {self.path} does not exist")
        try:
            self._ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as e:
            raise ValueError(f"{self.path} is not a readable GeoTIFF: {e}") from None
        ds = self._ds
        if ds.crs is None or ds.transform.is_identity:
            raise ValueError(f"{self.path} has no geo-reference (CRS and geotransform)")
        if ds.count not in (3, 4) or ds.dtypes[0] != "uint8":
            raise ValueError(f"{self.path}: expected 3 or 4 uint8 bands (RGB[A]), got {ds.count} x {ds.dtypes[0]}")
        self._read_lock = threading.Lock()  # one GDAL dataset handle is not thread-safe
        self._to_file = Transformer.from_crs(WEB_MERCATOR, ds.crs.to_wkt(), always_xy=True)
        to_ll = Transformer.from_crs(ds.crs.to_wkt(), WGS84_LATLON, always_xy=True)
        cx, cy = ds.xy(ds.height / 2.0, ds.width / 2.0)
        lon, lat = to_ll.transform(cx, cy)
        lon2, lat2 = to_ll.transform(cx + ds.res[0], cy)
        metres = math.hypot((lon2 - lon) * 111320.0 * math.cos(math.radians(lat)), (lat2 - lat) * 110574.0)
        self.center_latlon = (lat, lon)
        self.gsd_m = metres
        self.max_zoom = zoom_for_resolution(lat, metres)
        self.min_zoom = max(0, self.max_zoom - 8)
        self._inv = ~ds.transform

    def _load(self, z: int, x: int, y: int) -> Tile:
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        ds = self._ds
        size = 2.0 * MERCATOR_HALF_EXTENT_M / (1 << z) / TILE_PX
        i = np.arange(TILE_PX) + 0.5
        mx = -MERCATOR_HALF_EXTENT_M + (x * TILE_PX + i) * size
        my = MERCATOR_HALF_EXTENT_M - (y * TILE_PX + i) * size
        MX, MY = np.meshgrid(mx, my)
        fx, fy = self._to_file.transform(MX, MY)
        a = self._inv
        col = a.a * np.asarray(fx) + a.b * np.asarray(fy) + a.c
        row = a.d * np.asarray(fx) + a.e * np.asarray(fy) + a.f
        col, row = np.asarray(col) - 0.5, np.asarray(row) - 0.5  # to cv2 pixel-centre coordinates
        c0, r0 = int(math.floor(np.nanmin(col))) - 1, int(math.floor(np.nanmin(row))) - 1
        c1, r1 = int(math.ceil(np.nanmax(col))) + 2, int(math.ceil(np.nanmax(row))) + 2
        c0c, r0c, c1c, r1c = max(c0, 0), max(r0, 0), min(c1, ds.width), min(r1, ds.height)
        if c0c >= c1c or r0c >= r1c:
            raise TileNotFound(f"{self._where(z, x, y)}: outside the orthophoto")
        w, h = c1c - c0c, r1c - r0c
        # Coarse zooms: read decimated (overviews when the file has them) near the tile's resolution,
        # instead of the full-resolution window (which grows 4x per zoom level).
        f = max(1, int(math.floor(max(c1 - c0, r1 - r0) / (2 * TILE_PX))))
        out_w, out_h = max(1, math.ceil(w / f)), max(1, math.ceil(h / f))
        with self._read_lock:
            win = Window(c0c, r0c, w, h)
            try:
                data = ds.read(window=win, out_shape=(ds.count, out_h, out_w), resampling=Resampling.average)
                mask = ds.dataset_mask(window=win, out_shape=(out_h, out_w), resampling=Resampling.nearest)
            except RasterioError as e:  # blocks damaged or cut short after the file was opened
                raise TileDecodeError(f"{self._where(z, x, y)}: unreadable orthophoto data: {e}") from None
        rgb = np.ascontiguousarray(np.transpose(data[:3], (1, 2, 0)))
        sx, sy = w / out_w, h / out_h  # file pixels per read pixel
        mx_ = ((col - c0c + 0.5) / sx - 0.5).astype(np.float32)
        my_ = ((row - r0c + 0.5) / sy - 0.5).astype(np.float32)
        out = cv2.remap(rgb, mx_, my_, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        valid = cv2.remap(mask, mx_, my_, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) == 255
        if not valid.any():
            raise TileNotFound(f"{self._where(z, x, y)}: no imagery (nodata) in the orthophoto")
        return Tile(out, None if valid.all() else valid)

    def close(self) -> None:
        super().close()
        self._ds.close()
