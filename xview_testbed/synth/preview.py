# SPDX-License-Identifier: Apache-2.0
"""One composite picture of a spot in a city: aerial patch (tile fetcher), panorama and pinhole view."""

from __future__ import annotations

import os
from typing import Optional

import cv2
import numpy as np

from xview_loc_ros.geo import compass_to_enu_yaw
from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source
from xview_testbed.synth.citydir import load_city
from xview_testbed.synth.ground import GroundCamera, GroundRenderer
from xview_testbed.synth.pairs import sample_road_poses

PATCH_PX, PATCH_MPP = 384, 0.2  # 77 m of aerial around the camera


def render_spot(
    city_dir: str | os.PathLike,
    seed: int = 0,
    east: Optional[float] = None,
    north: Optional[float] = None,
    heading_deg: Optional[float] = None,
) -> np.ndarray:
    """RGB uint8 composite: left the north-up aerial patch centred on the camera (red dot, heading line),
    right a 360° panorama (centre column = heading) above a 90° pinhole view along the heading."""
    city = load_city(city_dir)
    rng = np.random.default_rng(seed)
    if east is None or north is None:
        e, n, h = sample_road_poses(city, 1, rng, margin_m=PATCH_PX * PATCH_MPP / 2 + 2)[0]
        east = e if east is None else east
        north = n if north is None else north
        heading_deg = h if heading_deg is None else heading_deg
    heading_deg = 0.0 if heading_deg is None else heading_deg
    lat, lon, _ = city.frame.to_latlon(east, north, 0.0)
    patch = AerialPatchBuilder(open_tile_source(city.tiles_spec), PATCH_PX, PATCH_MPP).build(float(lat), float(lon))
    aerial = patch.image.copy()
    c = PATCH_PX / 2
    yaw = float(compass_to_enu_yaw(heading_deg))
    tip = (int(c + 40 * np.cos(yaw)), int(c - 40 * np.sin(yaw)))
    cv2.line(aerial, (int(c), int(c)), tip, (255, 40, 40), 2, cv2.LINE_AA)
    cv2.circle(aerial, (int(c), int(c)), 5, (255, 40, 40), -1, cv2.LINE_AA)
    r = GroundRenderer(city.world, city.style["appearance"])
    z = city.style["sensor"]["camera_height_m"]
    pano = r.render(east, north, heading_deg, GroundCamera("panorama", (192, 768)), z)
    pin = r.render(east, north, heading_deg, GroundCamera("pinhole", (192, 768), 90.0), z)
    return np.hstack([aerial, np.vstack([pano, pin])])
