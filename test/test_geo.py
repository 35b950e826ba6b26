# SPDX-License-Identifier: Apache-2.0
"""Geodesy (xview_loc_ros/geo.py) against pyproj, published values and round trips: both hemispheres,
the date line, high latitude, Web Mercator tile conventions, patch pixels and heading conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from xview_loc_ros import geo

# tiles_reference.md: ground metres per pixel of 256-px Web Mercator tiles (rounded to 4 decimals).
PUBLISHED_MPP = [
    (0.0, 0.5972, 0.2986, 0.1493),
    (37.77, 0.4720, 0.2360, 0.1180),
    (41.9, 0.4445, 0.2222, 0.1111),
    (47.6, 0.4027, 0.2013, 0.1007),
    (49.015, 0.3917, 0.1958, 0.0979),
]


@pytest.mark.parametrize("lat,z18,z19,z20", PUBLISHED_MPP)
def test_ground_resolution_published_table(lat, z18, z19, z20):
    for z, want in ((18, z18), (19, z19), (20, z20)):
        assert geo.ground_resolution(lat, z) == pytest.approx(want, abs=6e-5)
    # @2x (512 px) tiles halve the m/px at the same zoom; KITTI's "zoom 18 scale 2" is 0.19583 m/px.
    assert geo.ground_resolution(lat, 18, tile_size=512) == pytest.approx(geo.ground_resolution(lat, 19), rel=1e-12)
    if lat == 49.015:
        assert geo.ground_resolution(lat, 18, tile_size=512) == pytest.approx(0.19583, abs=1e-5)


def test_zoom_for_resolution():
    assert geo.zoom_for_resolution(0.0, 0.3) == 19  # 0.2986 <= 0.3 < 0.5972
    assert geo.zoom_for_resolution(0.0, geo.ground_resolution(0.0, 19)) == 19  # exactly the native value
    assert geo.zoom_for_resolution(0.0, geo.ground_resolution(0.0, 19) * 0.999) == 20
    assert geo.zoom_for_resolution(47.6, 0.1) == 21  # z20 is 0.1007 m/px, just too coarse
    assert geo.zoom_for_resolution(60.0, 1000.0) == 7
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="metres per pixel"):
            geo.zoom_for_resolution(0.0, bad)


def test_tms_rows_and_quadkeys():
    assert geo.xyz_to_tms_row(791, 11) == 1256  # MBTiles 1.3 spec example
    assert geo.tms_to_xyz_row(1256, 11) == 791
    assert geo.xyz_to_tms_row(0, 0) == 0
    with pytest.raises(ValueError, match="outside zoom"):
        geo.xyz_to_tms_row(2048, 11)
    assert geo.tile_quadkey(3, 5, 3) == "213"  # Bing Maps tile system documentation example
    assert geo.tile_quadkey(0, 0, 0) == ""
    assert geo.tile_quadkey(1, 1, 1) == "3"


def _slippy(lat, lon, z):
    """The OSM wiki formulas (tiles_reference.md), written independently of geo.py."""
    phi = math.radians(lat)
    n = 2.0**z
    return (lon + 180.0) / 360.0 * n, (1.0 - math.log(math.tan(phi) + 1.0 / math.cos(phi)) / math.pi) / 2.0 * n


@pytest.mark.parametrize(
    "lat,lon",
    [
        (0.0, 0.0),
        (47.6062, -122.3321),
        (-33.8688, 151.2093),
        (-54.8, -68.3),
        (64.1466, -21.9426),
        (84.9, 179.999),
        (-84.9, -179.999),
        (60.0, 180.0),
    ],
)
@pytest.mark.parametrize("z", [0, 11, 19, 22])
def test_tiles_match_slippy_formulas_and_round_trip(lat, lon, z):
    tx, ty = geo.latlon_to_tile(lat, lon, z)
    ex, ey = _slippy(lat, lon, z)
    tol = 1e-9 * 2**z  # relative double precision
    assert abs(float(tx) - ex) < tol + 1e-9 and abs(float(ty) - ey) < tol + 1e-9
    la, lo = geo.tile_to_latlon(tx, ty, z)
    assert float(la) == pytest.approx(lat, abs=1e-9)
    assert (float(lo) - lon + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-9)
    gx, gy = geo.latlon_to_global_pixel(lat, lon, z)
    assert float(gx) == pytest.approx(256 * float(tx)) and float(gy) == pytest.approx(256 * float(ty))


def test_mercator_extent_and_limits():
    x, y = geo.latlon_to_mercator(geo.MERCATOR_MAX_LAT, 180.0)
    assert float(x) == pytest.approx(20037508.342789244, abs=1e-6)
    assert float(y) == pytest.approx(20037508.342789244, abs=1e-3)  # the square's corner
    tx, ty = geo.latlon_to_tile(geo.MERCATOR_MAX_LAT, -180.0, 5)
    assert float(tx) == pytest.approx(0.0, abs=1e-12) and float(ty) == pytest.approx(0.0, abs=1e-9)
    # Tile corner latitude formula: lat = atan(sinh(pi - 2 pi y / 2^z)).
    lat, _ = geo.tile_to_latlon(0, 3, 3)
    assert float(lat) == pytest.approx(math.degrees(math.atan(math.sinh(math.pi - 2 * math.pi * 3 / 8))), abs=1e-10)
    for bad in (85.06, -89.0):
        with pytest.raises(ValueError, match="Web Mercator"):
            geo.latlon_to_mercator(bad, 0.0)
    with pytest.raises(ValueError, match="latitude"):
        geo.latlon_to_mercator(91.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        geo.latlon_to_mercator(float("nan"), 0.0)


def _enu_reference(lat0, lon0, h0, lat, lon, h):
    """ENU by hand: ECEF from pyproj (EPSG:4979 -> 4978), rotated into the tangent plane at the datum."""
    to_ecef = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    x0, y0, z0 = to_ecef.transform(lon0, lat0, h0)
    x, y, z = to_ecef.transform(lon, lat, h)
    d = np.array([x - x0, y - y0, z - z0])
    p, l = math.radians(lat0), math.radians(lon0)
    r = np.array(
        [
            [-math.sin(l), math.cos(l), 0.0],
            [-math.sin(p) * math.cos(l), -math.sin(p) * math.sin(l), math.cos(p)],
            [math.cos(p) * math.cos(l), math.cos(p) * math.sin(l), math.sin(p)],
        ]
    )
    return r @ d


@pytest.mark.parametrize(
    "lat0,lon0,lat,lon,h",
    [
        (52.0, 4.0, 52.001, 4.002, 3.0),  # northern hemisphere
        (-33.87, 151.21, -33.8712, 151.2081, 25.0),  # southern, east
        (-22.9, -43.2, -22.89, -43.21, 0.0),  # southern, west
        (0.0, 179.9995, 0.0003, -179.9995, 0.0),  # across the date line
        (78.22, 15.65, 78.221, 15.66, 10.0),  # Svalbard
        (89.99, 0.0, 89.991, 90.0, 0.0),  # near the pole
    ],
)
def test_local_enu_against_pyproj_ecef(lat0, lon0, lat, lon, h):
    frame = geo.LocalENU(lat0, lon0, 0.0)
    e, n, u = frame.to_enu(lat, lon, h)
    np.testing.assert_allclose([float(e), float(n), float(u)], _enu_reference(lat0, lon0, 0.0, lat, lon, h), atol=1e-6)
    la, lo, hh = frame.to_latlon(e, n, u)
    assert float(la) == pytest.approx(lat, abs=1e-10) and float(hh) == pytest.approx(h, abs=1e-6)
    assert (float(lo) - lon + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-9)
    if lon0 == 179.9995:
        assert 100.0 < float(e) < 115.0  # 0.001 deg of longitude east, across the line, ~111 m


def test_local_enu_arrays_and_scalar_height():
    frame = geo.LocalENU(48.0, 11.0)
    e, n, _ = frame.to_enu(np.array([48.0, 48.001]), np.array([11.0, 11.0]))  # scalar h broadcast
    assert e.shape == (2,) and float(n[1]) == pytest.approx(111.2, abs=0.2)
    la, lo, _ = frame.to_latlon(np.array([0.0, 100.0]), np.array([0.0, 0.0]))
    assert la.shape == (2,) and float(lo[1]) > 11.0


def test_utm_zones_and_published_values():
    assert geo.utm_epsg(52.52, 13.40) == 32633  # Berlin
    assert geo.utm_epsg(-33.87, 151.21) == 32756  # Sydney
    assert geo.utm_epsg(60.39, 5.32) == 32632  # Bergen: the Norway exception (would be 31)
    assert geo.utm_epsg(78.22, 15.65) == 32633 and geo.utm_epsg(78.0, 8.0) == 32631  # Svalbard
    assert geo.utm_epsg(0.0, 180.0) == 32660 and geo.utm_epsg(0.0, -180.0) == 32601
    # On the central meridian at the equator: false easting 500 000 m; south: false northing 10 000 000 m.
    e, n, epsg = geo.latlon_to_utm(0.0, 3.0)
    assert epsg == 32631 and float(e) == pytest.approx(500000.0, abs=1e-6) and float(n) == pytest.approx(0.0, abs=1e-6)
    e, n, epsg = geo.latlon_to_utm(-1e-7, 3.0)
    assert epsg == 32731 and float(n) == pytest.approx(10_000_000.0, abs=0.1)
    lat, lon = geo.utm_to_latlon(*geo.latlon_to_utm(-33.87, 151.21)[:2], 32756)
    assert float(lat) == pytest.approx(-33.87, abs=1e-9) and float(lon) == pytest.approx(151.21, abs=1e-9)


def test_patch_georef_conventions():
    g = geo.PatchGeoref(47.6, -122.33, 0.2, 512)
    u, v = g.latlon_to_pixel(47.6, -122.33)
    assert float(u) == pytest.approx(256.0, abs=1e-6) and float(v) == pytest.approx(256.0, abs=1e-6)
    e, n = g.pixel_to_enu(266.0, 251.0)  # 10 px right (east), 5 px up (north)
    assert float(e) == pytest.approx(2.0) and float(n) == pytest.approx(1.0)
    lat, lon = g.pixel_to_latlon(266.0, 251.0)
    assert float(lat) > 47.6 and float(lon) > -122.33
    u2, v2 = g.latlon_to_pixel(lat, lon)
    assert float(u2) == pytest.approx(266.0, abs=1e-6) and float(v2) == pytest.approx(251.0, abs=1e-6)
    assert geo.PatchGeoref.from_dict(g.to_dict()) == g
    with pytest.raises(ValueError, match="metres per pixel"):
        geo.PatchGeoref(0.0, 0.0, 0.0, 8)
    with pytest.raises(ValueError, match="patch size"):
        geo.PatchGeoref(0.0, 0.0, 1.0, 7.5)


@settings(max_examples=60, deadline=None)
@given(lat=st.floats(-84.0, 84.0), lon=st.floats(-180.0, 180.0), du=st.floats(-300, 300), dv=st.floats(-300, 300))
def test_patch_pixel_round_trip_anywhere(lat, lon, du, dv):
    g = geo.PatchGeoref(lat, lon, 0.5, 256)
    la, lo = g.pixel_to_latlon(128 + du, 128 + dv)
    u, v = g.latlon_to_pixel(la, lo)
    assert float(u) == pytest.approx(128 + du, abs=1e-5) and float(v) == pytest.approx(128 + dv, abs=1e-5)


@pytest.mark.parametrize(
    "compass,yaw",
    [
        (0.0, math.pi / 2),
        (90.0, 0.0),
        (180.0, -math.pi / 2),
        (270.0, math.pi),
        (45.0, math.pi / 4),
        (-90.0, math.pi),
        (360.0, math.pi / 2),
        (315.0, 3 * math.pi / 4),
    ],
)
def test_heading_conversions(compass, yaw):
    assert float(geo.compass_to_enu_yaw(compass)) == pytest.approx(yaw, abs=1e-12)
    assert float(geo.enu_yaw_to_compass(yaw)) == pytest.approx(compass % 360.0, abs=1e-9)
    q = geo.quaternion_from_yaw(float(geo.compass_to_enu_yaw(compass)))
    assert geo.yaw_from_quaternion(*q) == pytest.approx(yaw, abs=1e-9) or abs(yaw) == pytest.approx(math.pi)
    # The quaternion turns the body x axis (forward) to the compass direction: east = sin, north = cos.
    x, y, z, w = q
    fwd_e, fwd_n = 1 - 2 * (y * y + z * z), 2 * (x * y + w * z)
    assert fwd_e == pytest.approx(math.sin(math.radians(compass)), abs=1e-9)
    assert fwd_n == pytest.approx(math.cos(math.radians(compass)), abs=1e-9)


def test_heading_ranges_vectorised():
    h = np.array([0.0, 359.999, -0.001, 720.0])
    yaw = geo.compass_to_enu_yaw(h)
    assert np.all(yaw > -math.pi) and np.all(yaw <= math.pi)
    back = geo.enu_yaw_to_compass(yaw)
    assert np.all(back >= 0.0) and np.all(back < 360.0)
    np.testing.assert_allclose(back, [0.0, 359.999, 359.999, 0.0], atol=1e-9)
