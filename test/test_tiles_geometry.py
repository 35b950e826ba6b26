# SPDX-License-Identifier: Apache-2.0
"""Geometry of the aerial patch builder: a landmark painted at a known lat/lon into real tile archives of
every kind lands within 0.5 px of PatchGeoref.latlon_to_pixel, at several latitudes and zooms, across
tile borders; the interpolated remap grids match the exact per-pixel pyproj mapping."""

from __future__ import annotations

import http.server
import sqlite3
import threading
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from xview_loc_ros.geo import (
    LocalENU,
    PatchGeoref,
    ground_resolution,
    latlon_to_global_pixel,
    latlon_to_utm,
    tile_to_latlon,
    utm_epsg,
    xyz_to_tms_row,
    zoom_for_resolution,
)
from xview_loc_ros.tiles import AerialPatchBuilder, TileDecodeError, TileNotFound, open_tile_source
from xview_loc_ros.tiles.coverage import tiles_around

BACKGROUND = 30.0
SIGMA_PX = 1.6  # landmark blob, tile pixels


def render_tile(z: int, x: int, y: int, landmark_gpx: tuple) -> np.ndarray:
    """A tile with a Gaussian blob centred at global pixel ``landmark_gpx`` (continuous, XYZ at z)."""
    i = np.arange(256) + 0.5
    gx, gy = np.meshgrid(x * 256 + i, y * 256 + i)
    d2 = (gx - landmark_gpx[0]) ** 2 + (gy - landmark_gpx[1]) ** 2
    v = BACKGROUND + 200.0 * np.exp(-d2 / (2 * SIGMA_PX**2))
    g = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return np.dstack([g, g, g])


def png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def landmark_centroid(img: np.ndarray, u0: float, v0: float, r: int = 9) -> tuple:
    """Intensity-weighted centroid (continuous pixel coordinates, pixel i covers [i, i+1)) near (u0, v0)."""
    a, b = int(v0) - r, int(u0) - r
    win = img[a : a + 2 * r + 1, b : b + 2 * r + 1, 0].astype(float) - BACKGROUND
    win = np.clip(win, 0, None)
    vv, uu = np.mgrid[a : a + win.shape[0], b : b + win.shape[1]] + 0.5
    return float((win * uu).sum() / win.sum()), float((win * vv).sum() / win.sum())


# (lat of the landmark, zoom, patch mpp / native mpp, landmark on a tile corner?)
CASES = [
    (0.0, 18, 1.0, True),
    (45.0, 19, 1.37, False),
    (-45.0, 17, 1.0, True),
    (60.0, 18, 2.1, True),
    (60.0, 20, 1.0, False),
    (-33.9, 19, 1.6, True),
]


def _world(lat: float, zoom: int, corner: bool):
    """Landmark lat/lon and global pixel; on a 4-tile corner when ``corner``."""
    gx, gy = latlon_to_global_pixel(lat, 151.2, zoom)
    if corner:
        gx, gy = np.round(gx / 256) * 256, np.round(gy / 256) * 256
    else:
        gx, gy = np.floor(gx / 256) * 256 + 77.3, np.floor(gy / 256) * 256 + 190.6
    llat, llon = tile_to_latlon(gx / 256, gy / 256, zoom)
    return float(llat), float(llon), (float(gx), float(gy))


def _write_sources(tmp: Path, kind: str, zoom: int, keys, lm_gpx) -> str:
    tiles = {k: png(render_tile(*k, lm_gpx)) for k in keys}
    if kind in ("xyz", "tms", "http"):
        for (z, x, y), data in tiles.items():
            row = xyz_to_tms_row(y, z) if kind == "tms" else y
            p = tmp / kind / str(z) / str(x) / f"{row}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return f"{kind}:{tmp / kind}" if kind != "http" else str(tmp / kind)
    if kind == "mbtiles":
        path = tmp / "t.mbtiles"
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE metadata (name text, value text)")
        db.execute("CREATE TABLE tiles (zoom_level integer, tile_column integer, tile_row integer, tile_data blob)")
        db.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
        db.executemany("INSERT INTO metadata VALUES (?, ?)", [("name", "test"), ("format", "png")])
        db.executemany(
            "INSERT INTO tiles VALUES (?, ?, ?, ?)", [(z, x, xyz_to_tms_row(y, z), d) for (z, x, y), d in tiles.items()]
        )
        db.commit()
        db.close()
        return f"mbtiles:{path}"
    if kind == "pmtiles":
        from pmtiles.tile import Compression, TileType, zxy_to_tileid
        from pmtiles.writer import write

        path = tmp / "t.pmtiles"
        with write(str(path)) as w:
            for (z, x, y), d in sorted(tiles.items(), key=lambda kv: zxy_to_tileid(*kv[0])):
                w.write_tile(zxy_to_tileid(z, x, y), d)
            w.finalize(
                {
                    "tile_type": TileType.PNG,
                    "tile_compression": Compression.NONE,
                    "min_lon_e7": 0,
                    "min_lat_e7": 0,
                    "max_lon_e7": 0,
                    "max_lat_e7": 0,
                    "center_zoom": zoom,
                    "center_lon_e7": 0,
                    "center_lat_e7": 0,
                },
                {"name": "test"},
            )
        return f"pmtiles:{path}"
    raise AssertionError(kind)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("kind", ["xyz", "tms", "mbtiles", "pmtiles", "http"])
@pytest.mark.parametrize("lat,zoom,scale,corner", CASES)
def test_landmark_lands_on_its_pixel(tmp_path, http_root, kind, lat, zoom, scale, corner):
    llat, llon, lm_gpx = _world(lat, zoom, corner)
    mpp = ground_resolution(llat, zoom) * scale
    # Patch centre 23.3 px east, 17.9 px south of the landmark (not on the pixel grid).
    clat, clon, _ = LocalENU(llat, llon).to_latlon(23.3 * mpp, -17.9 * mpp)
    size = 128
    keys = tiles_around(float(clat), float(clon), size * mpp, zoom)
    if kind == "http":
        www, base = http_root
        sub = tmp_path.name
        _write_sources(www / sub, "xyz", zoom, keys, lm_gpx)
        spec = f"{base}/{sub}/xyz/{{z}}/{{x}}/{{y}}.png"
    else:
        spec = _write_sources(tmp_path, kind, zoom, keys, lm_gpx)
    with open_tile_source(spec) as src:
        patch = AerialPatchBuilder(src, size, mpp, zoom=zoom).build(float(clat), float(clon))
    assert patch.image.shape == (size, size, 3) and patch.image.dtype == np.uint8
    assert patch.missing_fraction == 0.0 and patch.zoom == zoom
    u_exp, v_exp = patch.georef.latlon_to_pixel(llat, llon)
    u, v = landmark_centroid(patch.image, float(u_exp), float(v_exp))
    assert abs(u - u_exp) < 0.5 and abs(v - v_exp) < 0.5, (u, v, float(u_exp), float(v_exp))
    # The patch is north-up at true metres: a point 20 m north is 20/mpp px up.
    u2, v2 = patch.georef.latlon_to_pixel(*LocalENU(float(clat), float(clon)).to_latlon(0.0, 20.0)[:2])
    assert abs(float(u2) - size / 2) < 1e-6 and abs(size / 2 - float(v2) - 20.0 / mpp) < 1e-6


def _write_geotiff_utm(path: Path, llat: float, llon: float, gsd: float, half_m: float) -> None:
    rasterio = pytest.importorskip("rasterio", reason="geotiff sources need the optional rasterio extra")
    from affine import Affine

    e0, n0, epsg = latlon_to_utm(llat, llon)
    e0, n0 = float(e0), float(n0)
    n_px = int(round(2 * half_m / gsd))
    west, north = np.floor((e0 - half_m) / gsd) * gsd, np.floor((n0 + half_m) / gsd) * gsd
    i = np.arange(n_px) + 0.5
    E, N = np.meshgrid(west + i * gsd, north - i * gsd)
    d2 = ((E - e0) ** 2 + (N - n0) ** 2) / gsd**2
    g = np.clip(np.rint(BACKGROUND + 200.0 * np.exp(-d2 / (2 * 2.0**2))), 0, 255).astype(np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=n_px,
        height=n_px,
        count=3,
        dtype="uint8",
        crs=f"EPSG:{epsg}",
        transform=Affine(gsd, 0.0, west, 0.0, -gsd, north),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as ds:
        for b in (1, 2, 3):
            ds.write(g, b)


@pytest.mark.parametrize("lat", [0.0, 45.0, -45.0, 60.0])
def test_geotiff_landmark_lands_on_its_pixel(tmp_path, lat):
    llat, llon = lat + 0.0013, 9.1817
    assert utm_epsg(llat, llon) in (32632, 32732)
    path = tmp_path / "ortho.tif"
    _write_geotiff_utm(path, llat, llon, gsd=0.25, half_m=120.0)
    with open_tile_source(f"geotiff:{path}") as src:
        mpp = 0.4
        clat, clon, _ = LocalENU(llat, llon).to_latlon(-9.7, 11.2)
        patch = AerialPatchBuilder(src, 96, mpp).build(float(clat), float(clon))
        assert patch.zoom == min(zoom_for_resolution(float(clat), mpp), src.max_zoom)
    u_exp, v_exp = patch.georef.latlon_to_pixel(llat, llon)
    u, v = landmark_centroid(patch.image, float(u_exp), float(v_exp))
    assert abs(u - u_exp) < 0.5 and abs(v - v_exp) < 0.5, (u, v, float(u_exp), float(v_exp))


@pytest.mark.parametrize(
    "lat,lon,size,mpp,zoom",
    [
        (0.0, 0.0, 512, 0.3, 19),
        (60.0, 10.0, 512, 0.25, 19),
        (-45.0, 179.9995, 512, 0.3, 18),
        (70.0, -20.0, 1024, 2.0, 16),
    ],
)
def test_interpolated_grid_matches_exact_mapping(lat, lon, size, mpp, zoom, tmp_path):
    (tmp_path / "t").mkdir()
    builder = AerialPatchBuilder(open_tile_source(f"xyz:{tmp_path / 't'}"), size, mpp, zoom=zoom)
    georef = PatchGeoref(lat, lon, mpp, size)
    gx, gy = builder.global_pixel_grids(georef, zoom)
    c = np.arange(size) + 0.5
    lat_px, lon_px = georef.pixel_to_latlon(*np.meshgrid(c, c))
    ex, ey = latlon_to_global_pixel(lat_px, lon_px, zoom)
    world = 256 * 2**zoom
    dx = (np.asarray(ex) - gx + world / 2) % world - world / 2  # the date-line patch unwraps longitudes
    assert np.abs(dx).max() < 0.01 and np.abs(np.asarray(ey) - gy).max() < 0.01


def test_geotiff_edge_is_a_reported_hole(tmp_path):
    llat, llon = 48.137, 11.575
    path = tmp_path / "ortho.tif"
    _write_geotiff_utm(path, llat, llon, gsd=0.3, half_m=60.0)
    e_edge = 60.0  # the orthophoto ends about 60 m east of (llat, llon)
    clat, clon, _ = LocalENU(llat, llon).to_latlon(e_edge, 0.0)
    with open_tile_source(f"geotiff:{path}") as src:
        with pytest.raises(TileNotFound, match="no imagery"):
            AerialPatchBuilder(src, 64, 0.5).build(float(clat), float(clon))
        patch = AerialPatchBuilder(src, 64, 0.5, allow_missing=True).build(float(clat), float(clon))
    assert 0.35 < patch.missing_fraction < 0.6
    assert patch.image[:, 48:].max() == 0 and patch.image[:, :20].min() >= BACKGROUND - 2


def test_geotiff_coarse_zoom_reads_decimated(tmp_path):
    llat, llon = 48.137, 11.575
    path = tmp_path / "ortho.tif"
    _write_geotiff_utm(path, llat, llon, gsd=0.2, half_m=150.0)  # 1500 x 1500 px
    with open_tile_source(f"geotiff:{path}") as src:
        z = src.min_zoom + 2
        tiles = [src.get_tile_masked(*k) for k in tiles_around(llat, llon, 200.0, z)]
    # The 300 m orthophoto covers about cover^2 tile pixels at this zoom; the rest is masked.
    cover = 300.0 / ground_resolution(llat, z)
    assert all(t.valid is not None for t in tiles)
    assert abs(sum(int(t.valid.sum()) for t in tiles) - cover**2) < 4 * cover + 8


def test_geotiff_damaged_after_opening_is_a_tile_error(tmp_path):
    """A file truncated under an open source (copy interrupted, disk full) gave RasterioIOError."""
    path = tmp_path / "g.tif"
    _write_geotiff_utm(path, 48.0, 11.0, gsd=0.3, half_m=100.0)
    with open_tile_source(f"geotiff:{path}") as src:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 3)
        with pytest.raises(TileDecodeError, match="geotiff:.*unreadable"):
            AerialPatchBuilder(src, 128, 0.5).build(48.0, 11.0)
        assert AerialPatchBuilder(src, 128, 0.5, allow_missing=True).build(48.0, 11.0).missing_fraction > 0.0
