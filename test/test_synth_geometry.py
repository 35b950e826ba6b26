# SPDX-License-Identifier: Apache-2.0
"""The tower test: a tall tower at a known ENU offset appears where geometry predicts in the
panorama, in the pinhole image (level and pitched) and in the aerial patch cut from the exported
tile pyramid by the project's tile fetcher."""

import math

import numpy as np
import pytest

from xview_loc_ros.geo import LocalENU
from xview_testbed.synth.aerial import render_ortho
from xview_testbed.synth.city import sun_caster
from xview_testbed.synth.ground import GroundCamera, GroundRenderer
from xview_testbed.synth.pyramid import export_pyramid
from xview_testbed.synth.style import load_style
from xview_testbed.synth.world import BUILDING, DIRT, World

SIZE_M, RES = 200.0, 0.25
TOWER_E, TOWER_N, TOWER_H, TOWER_SIDE = 22.0, 31.0, 30.0, 2.0
CAM_E, CAM_N, CAM_Z = -8.0, -12.0, 2.0
FACADE, ROOF = (250, 20, 20), (20, 250, 20)


def _appearance():
    app = load_style("downtown")["appearance"]
    app.update(
        ground_noise=0.0,
        aerial_noise=0.0,
        aerial_blur_px=0.0,
        haze_m=1e5,
        aerial_saturation=1.0,
        aerial_contrast=1.0,
        aerial_brightness=1.0,
        aerial_tint=[1.0, 1.0, 1.0],
        ground_exposure=1.0,
        ground_white_balance=[1.0, 1.0, 1.0],
    )
    return app


@pytest.fixture(scope="module")
def tower_world():
    n = int(SIZE_M / RES)
    world = World(
        res_m=RES,
        height=np.zeros((n, n), np.float32),
        cls=np.full((n, n), DIRT, np.uint8),
        albedo=np.full((n, n, 3), 120, np.uint8),
        building=np.zeros((n, n), np.int32),
        normal=np.zeros((n, n, 2), np.int8),
        caster=np.zeros((n, n), np.float32),
        facade_rgb=np.array([[0, 0, 0], FACADE], np.uint8),
        facade=np.array([[3, 3, 0, 0], [3.0, 3.0, 0.0, TOWER_H]], np.float32),  # no windows
        crown_base=np.zeros((n, n), np.float32),
    )
    c0, r0 = world.enu_to_pixel(TOWER_E - TOWER_SIDE / 2, TOWER_N + TOWER_SIDE / 2)
    c1, r1 = world.enu_to_pixel(TOWER_E + TOWER_SIDE / 2, TOWER_N - TOWER_SIDE / 2)
    sl = (slice(int(round(float(r0))), int(round(float(r1)))), slice(int(round(float(c0))), int(round(float(c1)))))
    world.height[sl] = TOWER_H
    world.cls[sl] = BUILDING
    world.building[sl] = 1
    world.albedo[sl] = ROOF
    world.normal[sl] = [127, 0]  # only the colour matters here
    app = _appearance()
    world.caster[:] = sun_caster(world.height, RES, app["sun_azimuth_deg"], app["sun_elevation_deg"])
    return world, app


def _red(img):
    return (img[..., 0] > 120) & (img[..., 1] < 60) & (img[..., 2] < 60)


def test_tower_in_panorama(tower_world):
    world, app = tower_world
    h, w = 180, 720
    heading = 25.0
    img = GroundRenderer(world, app).render(
        CAM_E, CAM_N, heading, GroundCamera("panorama", (h, w), supersample=1), CAM_Z
    )
    de, dn = TOWER_E - CAM_E, TOWER_N - CAM_N
    az = math.degrees(math.atan2(de, dn))
    u_pred = w / 2 + ((az - heading + 180) % 360 - 180) * w / 360
    mask = _red(img)
    cols = np.nonzero(mask.any(0))[0]
    assert len(cols) >= 3
    assert np.mean(cols + 0.5) == pytest.approx(u_pred, abs=0.75)
    # top edge: the nearest face of the tower is half a side closer than its centre
    dist = math.hypot(de, dn)
    v_lo = (90 - math.degrees(math.atan2(TOWER_H - CAM_Z, dist - TOWER_SIDE / 2 * math.sqrt(2)))) * h / 180
    v_hi = (90 - math.degrees(math.atan2(TOWER_H - CAM_Z, dist))) * h / 180
    top = np.nonzero(mask.any(1))[0].min()
    assert v_lo - 1 <= top <= v_hi + 1
    # the foot of the tower meets the ground at the elevation of its base
    bottom = np.nonzero(mask.any(1))[0].max() + 1
    v_foot = (90 + math.degrees(math.atan2(CAM_Z, dist))) * h / 180
    assert bottom == pytest.approx(v_foot, abs=1.5)
    # turning the heading by 90 degrees moves the tower a quarter turn left in the image
    img2 = GroundRenderer(world, app).render(
        CAM_E, CAM_N, heading + 90, GroundCamera("panorama", (h, w), supersample=1), CAM_Z
    )
    cols2 = np.nonzero(_red(img2).any(0))[0]
    assert np.mean(cols2 + 0.5) == pytest.approx((u_pred - w / 4) % w, abs=0.75)


@pytest.mark.parametrize("pitch", [0.0, 8.0])
def test_tower_in_pinhole(tower_world, pitch):
    world, app = tower_world
    h, w = 240, 320
    de, dn = TOWER_E - CAM_E, TOWER_N - CAM_N
    az = math.degrees(math.atan2(de, dn))
    heading = az - 12.0
    cam = GroundCamera("pinhole", (h, w), 90.0, pitch_deg=pitch, supersample=2)
    img = GroundRenderer(world, app).render(CAM_E, CAM_N, heading, cam, CAM_Z)
    fx, fy, cx, cy = cam.intrinsics()
    a = math.radians(az - heading)
    dist = math.hypot(de, dn)
    x_fwd, y_right = dist * math.cos(a), dist * math.sin(a)
    p = math.radians(pitch)

    def project(z):
        zc = z - CAM_Z
        depth = x_fwd * math.cos(p) + zc * math.sin(p)
        return cx + fx * y_right / depth, cy - fy * (-x_fwd * math.sin(p) + zc * math.cos(p)) / depth

    mask = _red(img)
    for z in (5.0, 15.0):
        u, v = project(z)
        row = mask[int(v)]
        assert row.any(), z
        assert np.mean(np.nonzero(row)[0] + 0.5) == pytest.approx(u, abs=1.0)
    # the top edge lies at the projection of the tower top (between its near corner and its centre)
    u_top, v_top = project(TOWER_H)
    col = mask[:, int(u_top)]
    top = np.nonzero(col)[0].min()
    assert v_top - 4 <= top <= v_top + 1


def test_tower_in_aerial_patch(tower_world, tmp_path):
    from xview_loc_ros.geo import PatchGeoref
    from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source

    world, app = tower_world
    frame = LocalENU(-33.87, 151.21)  # southern hemisphere, east of Greenwich
    app = dict(app, sun_elevation_deg=90.0)  # no shadow to blur the roof
    export_pyramid(render_ortho(world, app), RES, frame, [19], tmp_path / "tiles", tmp_path / "t.mbtiles")
    lat_t, lon_t, _ = frame.to_latlon(TOWER_E, TOWER_N, 0.0)
    for src in (f"xyz:{tmp_path / 'tiles'}", f"mbtiles:{tmp_path / 't.mbtiles'}"):
        for ce, cn in ((10.0, 20.0), (33.3, 40.7)):
            lat_c, lon_c, _ = frame.to_latlon(ce, cn, 0.0)
            patch = AerialPatchBuilder(open_tile_source(src), 128, 0.25).build(float(lat_c), float(lon_c))
            green = patch.image[..., 1].astype(float) - patch.image[..., 0]
            wgt = np.clip(green - 60, 0, None)
            vv, uu = np.mgrid[0:128, 0:128] + 0.5
            u_meas, v_meas = (wgt * uu).sum() / wgt.sum(), (wgt * vv).sum() / wgt.sum()
            u_pred, v_pred = PatchGeoref(float(lat_c), float(lon_c), 0.25, 128).latlon_to_pixel(lat_t, lon_t)
            assert u_meas == pytest.approx(float(u_pred), abs=0.3), src
            assert v_meas == pytest.approx(float(v_pred), abs=0.3), src
            # and where ENU arithmetic alone puts it: the patch centre offset in metres / (m/px)
            assert u_meas == pytest.approx(64 + (TOWER_E - ce) / 0.25, abs=0.35)
            assert v_meas == pytest.approx(64 - (TOWER_N - cn) / 0.25, abs=0.35)
