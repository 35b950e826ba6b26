# SPDX-License-Identifier: Apache-2.0
"""Geodesy: the one place for every coordinate conversion of the project.

Frames and units (DESIGN §3):

* WGS84 geographic: latitude/longitude in degrees, ellipsoidal height in metres.
* Local ENU ("map" frame, REP-103/105): east, north, up in metres, a topocentric tangent plane
  anchored at a datum (lat0, lon0, h0).
* UTM: easting/northing in metres, identified by its EPSG code (326zz north, 327zz south).
* Web Mercator (EPSG:3857): x, y in metres; XYZ tiles (row 0 at the north) and TMS tiles (row 0
  at the south) of 256 pixels at zoom z.
* Aerial patch: square, north-up, S x S pixels at exactly ``mpp`` metres per pixel, centred on
  (center_lat, center_lon). Column u grows east, row v grows south, pixel i covers [i, i+1), so
  the centre is (S/2, S/2).
* Heading: compass degrees (0 = north, clockwise) only at the edges; ENU yaw in radians
  (0 = east, counter-clockwise). Converted by :func:`compass_to_enu_yaw` / :func:`enu_yaw_to_compass`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Tuple, Union

import numpy as np
from pyproj import CRS, Transformer

ArrayLike = Union[float, np.ndarray]

WGS84_LATLON = "EPSG:4326"
WGS84_3D = "EPSG:4979"
WEB_MERCATOR = "EPSG:3857"
#: Half the width of the EPSG:3857 square, metres (R * pi, R = 6378137 m).
MERCATOR_HALF_EXTENT_M = 20037508.342789244
#: Largest latitude Web Mercator tiles cover, degrees.
MERCATOR_MAX_LAT = 85.05112877980659
TILE_SIZE_PX = 256


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


@lru_cache(maxsize=256)
def _enu_transformer(lat0: float, lon0: float, h0: float) -> Transformer:
    pipeline = (
        "+proj=pipeline "
        "+step +proj=axisswap +order=2,1 +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        "+step +proj=cart +ellps=WGS84 "
        f"+step +proj=topocentric +ellps=WGS84 +lat_0={lat0!r} +lon_0={lon0!r} +h_0={h0!r}"
    )
    return Transformer.from_pipeline(pipeline)


def _check_latlon(lat: ArrayLike, lon: ArrayLike) -> None:
    if isinstance(lat, (float, int)) and isinstance(lon, (float, int)):
        # one point (the node's per-frame conversions): plain floats, not four numpy reductions
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise ValueError(f"latitude/longitude must be finite, got lat={lat!r} lon={lon!r}")
        if abs(lat) > 90.0:
            raise ValueError(f"latitude must be within [-90, 90] degrees, got {lat!r}")
        if abs(lon) > 180.0:
            raise ValueError(f"longitude must be within [-180, 180] degrees, got {lon!r}")
        return
    lat_a, lon_a = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    if not (np.all(np.isfinite(lat_a)) and np.all(np.isfinite(lon_a))):
        raise ValueError(f"latitude/longitude must be finite, got lat={lat!r} lon={lon!r}")
    if np.any(np.abs(lat_a) > 90.0):
        raise ValueError(f"latitude must be within [-90, 90] degrees, got {lat!r}")
    if np.any(np.abs(lon_a) > 180.0):
        raise ValueError(f"longitude must be within [-180, 180] degrees, got {lon!r}")


# ---------------------------------------------------------------------------------------------
# WGS84 <-> local ENU
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalENU:
    """A local East-North-Up tangent frame (metres) anchored at a WGS84 datum (degrees, metres)."""

    lat0: float
    lon0: float
    h0: float = 0.0

    def __post_init__(self) -> None:
        _check_latlon(self.lat0, self.lon0)

    def to_enu(self, lat: ArrayLike, lon: ArrayLike, h: ArrayLike = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """WGS84 (deg, deg, m) -> (east, north, up) metres in this frame."""
        _check_latlon(lat, lon)
        # pyproj needs equal-sized inputs: broadcast a scalar height to the points' shape.
        lat, lon, h = np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float), np.asarray(h, float))
        e, n, u = _enu_transformer(self.lat0, self.lon0, self.h0).transform(lat, lon, h)
        return np.asarray(e), np.asarray(n), np.asarray(u)

    def to_latlon(
        self, east: ArrayLike, north: ArrayLike, up: ArrayLike = 0.0
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(east, north, up) metres in this frame -> WGS84 (lat deg, lon deg, h m)."""
        east, north, up = np.broadcast_arrays(np.asarray(east, float), np.asarray(north, float), np.asarray(up, float))
        lat, lon, h = _enu_transformer(self.lat0, self.lon0, self.h0).transform(east, north, up, direction="INVERSE")
        return np.asarray(lat), np.asarray(lon), np.asarray(h)


# ---------------------------------------------------------------------------------------------
# WGS84 <-> UTM
# ---------------------------------------------------------------------------------------------
def utm_epsg(lat: float, lon: float) -> int:
    """EPSG code of the UTM zone holding (lat, lon), with the Norway and Svalbard exceptions."""
    _check_latlon(lat, lon)
    zone = int(math.floor((lon + 180.0) / 6.0)) + 1
    zone = min(zone, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32
    if 72.0 <= lat < 84.0 and lon >= 0.0:
        if lon < 9.0:
            zone = 31
        elif lon < 21.0:
            zone = 33
        elif lon < 33.0:
            zone = 35
        elif lon < 42.0:
            zone = 37
    return (32600 if lat >= 0 else 32700) + zone


def latlon_to_utm(lat: ArrayLike, lon: ArrayLike, epsg: int | None = None) -> Tuple[np.ndarray, np.ndarray, int]:
    """WGS84 degrees -> (easting m, northing m, epsg). The zone is that of the first point unless given."""
    _check_latlon(lat, lon)
    if epsg is None:
        epsg = utm_epsg(float(np.ravel(lat)[0]), float(np.ravel(lon)[0]))
    e, n = _transformer(WGS84_LATLON, f"EPSG:{epsg}").transform(lon, lat)
    return np.asarray(e), np.asarray(n), epsg


def utm_to_latlon(easting: ArrayLike, northing: ArrayLike, epsg: int) -> Tuple[np.ndarray, np.ndarray]:
    """UTM metres in zone ``epsg`` -> WGS84 (lat, lon) degrees."""
    CRS.from_epsg(epsg)  # raises a clear pyproj error on an unknown code
    lon, lat = _transformer(f"EPSG:{epsg}", WGS84_LATLON).transform(easting, northing)
    return np.asarray(lat), np.asarray(lon)


# ---------------------------------------------------------------------------------------------
# WGS84 <-> Web Mercator, tiles
# ---------------------------------------------------------------------------------------------
def latlon_to_mercator(lat: ArrayLike, lon: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """WGS84 degrees -> EPSG:3857 (x, y) metres."""
    _check_latlon(lat, lon)
    if np.any(np.abs(np.asarray(lat, dtype=float)) > MERCATOR_MAX_LAT):
        raise ValueError(f"latitude {lat!r} is outside Web Mercator's ±{MERCATOR_MAX_LAT:.4f}°")
    x, y = _transformer(WGS84_LATLON, WEB_MERCATOR).transform(lon, lat)
    return np.asarray(x), np.asarray(y)


def mercator_to_latlon(x: ArrayLike, y: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """EPSG:3857 (x, y) metres -> WGS84 (lat, lon) degrees."""
    lon, lat = _transformer(WEB_MERCATOR, WGS84_LATLON).transform(x, y)
    return np.asarray(lat), np.asarray(lon)


def latlon_to_tile(lat: ArrayLike, lon: ArrayLike, zoom: int) -> Tuple[np.ndarray, np.ndarray]:
    """WGS84 degrees -> fractional XYZ tile coordinates (x east, y south) at ``zoom``.

    ``floor`` gives the tile index; the fraction times 256 is the pixel inside the tile.
    """
    x_m, y_m = latlon_to_mercator(lat, lon)
    n = 2.0**zoom
    tx = (x_m + MERCATOR_HALF_EXTENT_M) / (2.0 * MERCATOR_HALF_EXTENT_M) * n
    ty = (MERCATOR_HALF_EXTENT_M - y_m) / (2.0 * MERCATOR_HALF_EXTENT_M) * n
    return np.asarray(tx), np.asarray(ty)


def tile_to_latlon(tx: ArrayLike, ty: ArrayLike, zoom: int) -> Tuple[np.ndarray, np.ndarray]:
    """Fractional XYZ tile coordinates at ``zoom`` -> WGS84 (lat, lon) degrees (tile corner for integers)."""
    n = 2.0**zoom
    x_m = np.asarray(tx, dtype=float) / n * 2.0 * MERCATOR_HALF_EXTENT_M - MERCATOR_HALF_EXTENT_M
    y_m = MERCATOR_HALF_EXTENT_M - np.asarray(ty, dtype=float) / n * 2.0 * MERCATOR_HALF_EXTENT_M
    return mercator_to_latlon(x_m, y_m)


def latlon_to_global_pixel(
    lat: ArrayLike, lon: ArrayLike, zoom: int, tile_size: int = TILE_SIZE_PX
) -> Tuple[np.ndarray, np.ndarray]:
    """WGS84 degrees -> continuous global pixel (col, row) of the XYZ pyramid at ``zoom``."""
    tx, ty = latlon_to_tile(lat, lon, zoom)
    return tx * tile_size, ty * tile_size


def xyz_to_tms_row(y: int, zoom: int) -> int:
    """XYZ row (0 at the north) <-> TMS/MBTiles row (0 at the south); the map is its own inverse."""
    if not 0 <= y < 2**zoom:
        raise ValueError(f"tile row {y} is outside zoom {zoom} (0..{2**zoom - 1})")
    return (2**zoom - 1) - y


tms_to_xyz_row = xyz_to_tms_row


def tile_quadkey(x: int, y: int, zoom: int) -> str:
    """Bing quadkey of XYZ tile (x, y) at ``zoom``."""
    digits = []
    for i in range(zoom, 0, -1):
        mask = 1 << (i - 1)
        digits.append(str((1 if x & mask else 0) + (2 if y & mask else 0)))
    return "".join(digits)


def ground_resolution(lat: float, zoom: int, tile_size: int = TILE_SIZE_PX) -> float:
    """Ground metres per pixel of Web Mercator tiles at ``lat`` degrees and ``zoom`` (scale is 1/cos φ)."""
    return 2.0 * MERCATOR_HALF_EXTENT_M / (tile_size * 2.0**zoom) * math.cos(math.radians(lat))


def zoom_for_resolution(lat: float, mpp: float, max_zoom: int = 23, tile_size: int = TILE_SIZE_PX) -> int:
    """Smallest zoom whose native resolution at ``lat`` is not coarser than ``mpp`` metres/pixel."""
    if not mpp > 0:
        raise ValueError(f"metres per pixel must be > 0, got {mpp!r}")
    for z in range(0, max_zoom + 1):
        if ground_resolution(lat, z, tile_size) <= mpp * (1.0 + 1e-9):
            return z
    return max_zoom


# ---------------------------------------------------------------------------------------------
# Aerial patch pixels <-> ENU offset <-> WGS84
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchGeoref:
    """Geo-reference of a north-up square aerial patch (DESIGN §3).

    ``center_lat``/``center_lon`` degrees, ``mpp`` metres per pixel, ``size_px`` pixels per side.
    Pixel coordinates are continuous: u (column) grows east, v (row) grows south, centre (S/2, S/2).
    ENU offsets are metres east/north of the patch centre, in the tangent plane at the centre.
    """

    center_lat: float
    center_lon: float
    mpp: float
    size_px: int

    def __post_init__(self) -> None:
        _check_latlon(self.center_lat, self.center_lon)
        if not self.mpp > 0:
            raise ValueError(f"patch metres per pixel must be > 0, got {self.mpp!r}")
        if int(self.size_px) != self.size_px or self.size_px <= 0:
            raise ValueError(f"patch size must be a positive integer of pixels, got {self.size_px!r}")

    @property
    def frame(self) -> LocalENU:
        return LocalENU(self.center_lat, self.center_lon)

    def pixel_to_enu(self, u: ArrayLike, v: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
        """Patch pixel (u, v) -> (east, north) metres from the patch centre."""
        c = self.size_px / 2.0
        return (np.asarray(u, dtype=float) - c) * self.mpp, (c - np.asarray(v, dtype=float)) * self.mpp

    def enu_to_pixel(self, east: ArrayLike, north: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
        """(east, north) metres from the patch centre -> patch pixel (u, v)."""
        c = self.size_px / 2.0
        return c + np.asarray(east, dtype=float) / self.mpp, c - np.asarray(north, dtype=float) / self.mpp

    def pixel_to_latlon(self, u: ArrayLike, v: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
        """Patch pixel (u, v) -> WGS84 (lat, lon) degrees."""
        e, n = self.pixel_to_enu(u, v)
        lat, lon, _ = self.frame.to_latlon(e, n, 0.0)
        return lat, lon

    def latlon_to_pixel(self, lat: ArrayLike, lon: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
        """WGS84 (lat, lon) degrees -> patch pixel (u, v)."""
        e, n, _ = self.frame.to_enu(lat, lon, 0.0)
        return self.enu_to_pixel(e, n)

    def to_dict(self) -> dict:
        return {
            "center_lat": self.center_lat,
            "center_lon": self.center_lon,
            "mpp": self.mpp,
            "size_px": int(self.size_px),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PatchGeoref":
        return cls(float(d["center_lat"]), float(d["center_lon"]), float(d["mpp"]), int(d["size_px"]))


# ---------------------------------------------------------------------------------------------
# Heading
# ---------------------------------------------------------------------------------------------
def compass_to_enu_yaw(heading_deg: ArrayLike) -> np.ndarray:
    """Compass heading (degrees, 0 = north, clockwise) -> ENU yaw (radians, 0 = east, CCW) in (-π, π]."""
    yaw = np.radians(90.0 - np.asarray(heading_deg, dtype=float))
    return _wrap_pi(yaw)


def enu_yaw_to_compass(yaw_rad: ArrayLike) -> np.ndarray:
    """ENU yaw (radians, 0 = east, CCW) -> compass heading (degrees, 0 = north, clockwise) in [0, 360)."""
    h = np.mod(90.0 - np.degrees(np.asarray(yaw_rad, dtype=float)), 360.0)
    return np.where(h >= 360.0, 0.0, h)


def _wrap_pi(a: np.ndarray) -> np.ndarray:
    w = np.mod(a + np.pi, 2.0 * np.pi) - np.pi
    return np.where(w <= -np.pi, w + 2.0 * np.pi, w)


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """ENU yaw (radians) of an orientation quaternion (REP-103 z-up rotation)."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def quaternion_from_yaw(yaw_rad: float) -> Tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) of a pure rotation by ``yaw_rad`` about ENU up."""
    return 0.0, 0.0, math.sin(yaw_rad / 2.0), math.cos(yaw_rad / 2.0)
