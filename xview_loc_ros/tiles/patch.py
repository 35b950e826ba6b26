# SPDX-License-Identifier: Apache-2.0
"""North-up aerial patches at exact metres per pixel, resampled from a Web Mercator tile mosaic."""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from xview_loc_ros.geo import PatchGeoref, latlon_to_global_pixel, zoom_for_resolution
from xview_loc_ros.tiles.coverage import densify_path, tiles_around
from xview_loc_ros.tiles.errors import TileError, TileNotFound
from xview_loc_ros.tiles.source import TILE_PX, Tile, TileSource

log = logging.getLogger(__name__)

#: Largest allowed error of the interpolated remap grids against the exact per-pixel mapping, pixels.
MAX_GRID_ERROR_PX = 0.01
#: Largest mosaic one patch may need (1024 tiles = 192 MiB); more means a zoom far finer than the m/px.
MAX_MOSAIC_TILES = 1024


@dataclass(frozen=True)
class AerialPatch:
    """``image`` RGB uint8 (S, S, 3), north-up; ``georef`` maps its pixels to lat/lon exactly;
    ``missing_fraction`` of pixels had no imagery (set to 0, only with allow_missing); ``zoom`` sampled."""

    image: np.ndarray
    georef: PatchGeoref
    missing_fraction: float
    zoom: int


@dataclass(frozen=True)
class PrefetchSummary:
    tiles: int
    loaded: int
    missing: int
    failed: int


def _expand(grid: np.ndarray, step_px: int, size: int) -> np.ndarray:
    """Bilinear interpolation of control values at patch positions u, v = 0, step, 2*step, ... (pixel
    edges, continuous coordinates) to every pixel centre (j + 0.5) of a size x size patch.

    cv2.resize maps output index i to source coordinate (i + 0.5) / step - 0.5; cropping from step/2
    makes that exactly u / step for u = j + 0.5, with float weights (no BLAS: OpenBLAS threads on
    tiny products cost tens of ms on a loaded 2-core machine).
    """
    n = grid.shape[0]
    full = cv2.resize(grid, (n * step_px, n * step_px), interpolation=cv2.INTER_LINEAR)
    off = step_px // 2
    return full[off : off + size, off : off + size]


class AerialPatchBuilder:
    """Cut ``size_px`` x ``size_px`` north-up patches at exactly ``mpp`` metres per pixel from ``source``.

    Every output pixel centre (u + 0.5, v + 0.5) is mapped through :class:`PatchGeoref` (tangent-plane
    ENU at the patch centre, pyproj) to lat/lon and on to the global pixel of the zoom's Web
    Mercator grid; the tile mosaic is sampled there with ``cv2.remap`` (bilinear). The exact mapping
    is evaluated on a coarse control grid (``control_points`` per side, 9 by default, refined until it
    reproduces the exact mapping at the cells' midpoints to within a quarter of ``MAX_GRID_ERROR_PX``)
    and interpolated bilinearly: Web Mercator is conformal, so the mapping is a near-similarity and
    the interpolated grids stay within 0.01 px of the exact per-pixel mapping (asserted in
    test_tiles_geometry.py::test_interpolated_grid_matches_exact_mapping, up to 2 km patches at 70°).
    Warm-cache 512 x 512 builds take about 3 ms on 2 cores (bench/RESULTS.md).

    ``zoom``: fixed, else the coarsest zoom whose native resolution is not coarser than ``mpp``,
    clamped to the source's zoom range. ``allow_missing``: missing/corrupt tiles become masked
    holes reported in ``missing_fraction`` instead of raising their TileError.
    """

    def __init__(
        self,
        source: TileSource,
        size_px: int,
        mpp: float,
        zoom: Optional[int] = None,
        allow_missing: bool = False,
        control_points: int = 9,
    ) -> None:
        if int(size_px) != size_px or size_px < 1:
            raise ValueError(f"patch size must be a positive integer of pixels, got {size_px!r}")
        if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"patch resolution must be > 0 metres per pixel, got {mpp!r}")
        if zoom is not None and not 0 <= int(zoom) <= 30:
            raise ValueError(f"zoom must be in 0..30, got {zoom!r}")
        if control_points < 2:
            raise ValueError(f"control_points must be >= 2, got {control_points!r}")
        self.source = source
        self.size_px = int(size_px)
        self.mpp = float(mpp)
        self.zoom = None if zoom is None else int(zoom)
        self.allow_missing = bool(allow_missing)
        self.control_points = int(control_points)
        self._mosaic: Optional[Tuple[Tuple[int, int, int, int, int], np.ndarray]] = None
        self._mosaic_lock = threading.Lock()
        # Prefetch: one request loading, at most one waiting (the latest; see prefetch()).
        self._prefetch_lock = threading.Lock()
        self._prefetch_waiting: Optional[Tuple["Future[PrefetchSummary]", List[Tuple[float, float]], float]] = None
        self._prefetcher: Optional[threading.Thread] = None

    def zoom_at(self, lat: float) -> int:
        """The zoom patches at latitude ``lat`` (degrees) are sampled from."""
        if self.zoom is not None:
            return self.zoom
        z = zoom_for_resolution(lat, self.mpp)
        return int(min(max(z, self.source.min_zoom), self.source.max_zoom))

    # -- geometry ------------------------------------------------------------------------------------
    def _exact(self, georef: PatchGeoref, zoom: int, u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Global pixel (continuous, pixel i covers [i, i+1)) of patch pixel positions (u, v); longitudes
        are unwrapped around the patch centre so patches across the date line stay contiguous."""
        lat, lon = georef.pixel_to_latlon(u, v)
        gx, gy = latlon_to_global_pixel(lat, lon, zoom)
        cx, _ = latlon_to_global_pixel(georef.center_lat, georef.center_lon, zoom)
        world = float(TILE_PX << zoom)
        gx = cx + np.mod(np.asarray(gx) - cx + world / 2.0, world) - world / 2.0
        return np.asarray(gx, dtype=np.float64), np.asarray(gy, dtype=np.float64)

    def _control_grid(self, georef: PatchGeoref, zoom: int) -> Tuple[np.ndarray, np.ndarray, int]:
        """Exact global pixels (float64) at patch positions u, v = 0, q, 2q, ... >= S (q even), q refined
        until bilinear interpolation reproduces the exact mapping at the cells' midpoints to within a
        quarter of MAX_GRID_ERROR_PX (the bilinear error of a smooth map peaks there). Returns (gx, gy, q)."""
        s = georef.size_px
        q = 2 * max(1, math.ceil(s / (2 * (self.control_points - 1))))
        while True:
            c = np.arange(math.ceil(s / q) + 1, dtype=np.float64) * q
            gx, gy = self._exact(georef, zoom, *np.meshgrid(c, c))
            if q <= 2:
                return gx, gy, q
            mid = c[:-1] + q / 2.0
            ex, ey = self._exact(georef, zoom, *np.meshgrid(mid, mid))
            ix = (gx[:-1, :-1] + gx[1:, :-1] + gx[:-1, 1:] + gx[1:, 1:]) / 4.0
            iy = (gy[:-1, :-1] + gy[1:, :-1] + gy[:-1, 1:] + gy[1:, 1:]) / 4.0
            if max(np.abs(ix - ex).max(), np.abs(iy - ey).max()) <= MAX_GRID_ERROR_PX / 4.0:
                return gx, gy, q
            q = 2 * max(1, math.ceil(q / 4))

    def global_pixel_grids(self, georef: PatchGeoref, zoom: int) -> Tuple[np.ndarray, np.ndarray]:
        """Global pixel (float64, continuous) of every patch pixel centre, shape (S, S) each, as used by
        :meth:`build` (error <= 0.01 px against the exact per-pixel mapping)."""
        gx, gy, q = self._control_grid(georef, zoom)
        return _expand(gx, q, georef.size_px), _expand(gy, q, georef.size_px)

    # -- building ------------------------------------------------------------------------------------
    def build(self, lat: float, lon: float) -> AerialPatch:
        """The patch centred on (lat, lon) degrees (WGS84); raises TileError unless allow_missing."""
        georef = PatchGeoref(float(lat), float(lon), self.mpp, self.size_px)
        zoom = self.zoom_at(lat)
        gx, gy, q = self._control_grid(georef, zoom)
        # Bilinear interpolation stays inside the control values' range, so they bound the mosaic.
        # cv2.remap samples at integer positions = pixel centres, hence the half-pixel shift.
        x_lo, x_hi = math.floor(gx.min() - 0.5), math.floor(gx.max() - 0.5) + 1
        y_lo, y_hi = math.floor(gy.min() - 0.5), math.floor(gy.max() - 0.5) + 1
        rng = (zoom, x_lo // TILE_PX, y_lo // TILE_PX, x_hi // TILE_PX, y_hi // TILE_PX)
        mosaic, valid = self._mosaic_for(rng, georef)
        ox, oy = rng[1] * TILE_PX + 0.5, rng[2] * TILE_PX + 0.5
        # Mosaic-relative values are small (< a few thousand px), so float32 keeps ~1e-4 px.
        map_x = _expand((gx - ox).astype(np.float32), q, self.size_px)
        map_y = _expand((gy - oy).astype(np.float32), q, self.size_px)
        image = cv2.remap(mosaic, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        missing = 0.0
        if valid is not None:
            ok = cv2.remap(valid, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) == 255
            missing = float(1.0 - ok.mean())
            if missing > 0.0:
                if not self.allow_missing:
                    raise TileNotFound(
                        f"{missing:.1%} of the {self.size_px}-px patch at {lat:.7f},{lon:.7f} "
                        f"(zoom {zoom}) has no imagery in {self.source.spec}"
                    )
                image[~ok] = 0
        return AerialPatch(image, georef, missing, zoom)

    def _mosaic_for(
        self, rng: Tuple[int, int, int, int, int], georef: PatchGeoref
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Mosaic (and validity mask, None when complete) of tiles x0..x1, y0..y1 at zoom; reused while
        consecutive patches fall inside the previous complete mosaic."""
        zoom, x0, y0, x1, y1 = rng
        with self._mosaic_lock:
            if self._mosaic is not None:
                (cz, cx0, cy0, cx1, cy1), cached = self._mosaic
                if cz == zoom and cx0 <= x0 and cy0 <= y0 and x1 <= cx1 and y1 <= cy1:
                    sub = cached[
                        (y0 - cy0) * TILE_PX : (y1 - cy0 + 1) * TILE_PX, (x0 - cx0) * TILE_PX : (x1 - cx0 + 1) * TILE_PX
                    ]
                    return sub, None
        count = (x1 - x0 + 1) * (y1 - y0 + 1)
        if count > MAX_MOSAIC_TILES:
            raise ValueError(
                f"a {self.size_px}-px patch at {self.mpp} m/px needs {count} tiles at zoom {zoom} "
                f"(limit {MAX_MOSAIC_TILES}): choose a coarser zoom"
            )
        n = 1 << zoom
        keys = {(x, y): (zoom, x % n, y) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1) if 0 <= y < n}
        tiles = self.source.get_tiles(keys.values())
        mosaic = np.zeros(((y1 - y0 + 1) * TILE_PX, (x1 - x0 + 1) * TILE_PX, 3), np.uint8)
        valid: Optional[np.ndarray] = None
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                sl = (
                    slice((y - y0) * TILE_PX, (y - y0 + 1) * TILE_PX),
                    slice((x - x0) * TILE_PX, (x - x0 + 1) * TILE_PX),
                )
                tile = (
                    tiles[keys[(x, y)]]
                    if (x, y) in keys
                    else TileNotFound(
                        f"tile row {y} is outside Web Mercator at zoom {zoom} (patch at {georef.center_lat:.7f},{georef.center_lon:.7f})"
                    )
                )
                if isinstance(tile, Tile):
                    mosaic[sl] = tile.rgb
                    if tile.valid is None:
                        continue
                    tile_valid = tile.valid
                else:
                    if not self.allow_missing:
                        raise tile
                    log.debug("patch hole: %s", tile)
                    tile_valid = np.zeros((TILE_PX, TILE_PX), bool)
                if valid is None:
                    valid = np.full(mosaic.shape[:2], 255, np.uint8)
                valid[sl] = np.where(tile_valid, 255, 0)
        if valid is None:
            with self._mosaic_lock:
                self._mosaic = (rng, mosaic)
        return mosaic, valid

    # -- prefetch ------------------------------------------------------------------------------------
    def prefetch(
        self, points: Sequence[Tuple[float, float]] | Iterable[Tuple[float, float]], radius_m: Optional[float] = None
    ) -> "Future[PrefetchSummary]":
        """Load, in a background thread, the tiles within ``radius_m`` metres (default: one patch width)
        of each (lat, lon) point and of the path between consecutive points. HTTP sources fill their
        disk cache; every source warms its in-memory LRU (up to its capacity). Errors are counted, not
        raised; the returned Future gives a :class:`PrefetchSummary`.

        One request loads at a time and only the latest waits: a newer request replaces a waiting one,
        whose Future is cancelled (jumping fixes used to queue one job each, 1,998 for 2,000 fixes)."""
        pts = [(float(a), float(b)) for a, b in points]
        radius = self.size_px * self.mpp if radius_m is None else float(radius_m)
        if not radius >= 0:
            raise ValueError(f"prefetch radius must be >= 0 metres, got {radius_m!r}")
        future: "Future[PrefetchSummary]" = Future()
        with self._prefetch_lock:
            if self._prefetch_waiting is not None:
                self._prefetch_waiting[0].cancel()
            self._prefetch_waiting = (future, pts, radius)
            if self._prefetcher is None:
                self._prefetcher = threading.Thread(target=self._prefetch_loop, name="prefetch", daemon=True)
                self._prefetcher.start()
        return future

    def _prefetch_loop(self) -> None:
        while True:
            with self._prefetch_lock:
                if self._prefetch_waiting is None:
                    self._prefetcher = None  # the next request starts a new thread
                    return
                future, pts, radius = self._prefetch_waiting
                self._prefetch_waiting = None
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._prefetch(pts, radius))
            except BaseException as e:  # noqa: BLE001 - handed to the caller through the Future
                future.set_exception(e)

    def _prefetch(self, points: Sequence[Tuple[float, float]], radius_m: float) -> PrefetchSummary:
        keys: dict = {}
        for lat, lon in densify_path(points, max(radius_m, 1.0)) if points else []:
            for key in sorted(tiles_around(lat, lon, radius_m, self.zoom_at(lat))):
                keys.setdefault(key, None)
        results = self.source.get_tiles(keys)
        missing = sum(isinstance(r, TileNotFound) for r in results.values())
        failed = sum(isinstance(r, TileError) and not isinstance(r, TileNotFound) for r in results.values())
        summary = PrefetchSummary(len(keys), len(keys) - missing - failed, missing, failed)
        log.debug("prefetch: %s", summary)
        return summary

    def close(self) -> None:
        """Cancel a waiting prefetch and wait for a running one (the source stays open: its owner closes it)."""
        with self._prefetch_lock:
            if self._prefetch_waiting is not None:
                self._prefetch_waiting[0].cancel()
                self._prefetch_waiting = None
            thread = self._prefetcher
        if thread is not None:
            thread.join()
