# SPDX-License-Identifier: Apache-2.0
"""Fuzzing the patch builder with hostile positions, sizes, resolutions, zooms and tile bytes: it
raises only the project's typed errors (TileError for tiles, ValueError for arguments) and its
memory stays bounded (a decompression bomb would need gigabytes)."""

from __future__ import annotations

import math
import tracemalloc

import cv2
import numpy as np
from hostile_images import jpeg_declaring, png_declaring
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from xview_loc_ros.geo import zoom_for_resolution
from xview_loc_ros.tiles import AerialPatchBuilder, TileError, TileSource, decode_tile
from xview_loc_ros.tiles.source import Tile

#: Peak Python/numpy allocation per build: a patch needs at most 25 tiles here (4.8 MiB of mosaic);
#: one decoded bomb tile would be 1.2 GB.
MEMORY_BOUND = 64 << 20


def _encoded(ext: str) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)
    return cv2.imencode(ext, rgb)[1].tobytes()


VALID = {ext: _encoded(ext) for ext in (".png", ".jpg", ".webp")}


@st.composite
def tile_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "flipped", "cut", "bomb_jpg", "bomb_png", "random", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "empty":
        return b""
    if kind == "bomb_jpg":
        return jpeg_declaring(draw(st.integers(1, 65535)), draw(st.integers(1, 65535)))
    if kind == "bomb_png":
        return png_declaring(draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1)))
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    if kind == "flipped":  # corrupt bytes anywhere, headers included
        for i in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[i] ^= draw(st.integers(1, 255))
    elif kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


class HostileSource(TileSource):
    """Every tile is the same hostile bytes."""

    def __init__(self, data: bytes) -> None:
        super().__init__("hostile:", lru_tiles=32, workers=2)
        self.data = data

    def _load(self, z: int, x: int, y: int) -> Tile:
        return decode_tile(self.data, self._where(z, x, y))


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` values with one draw in five ``hostile``, so most examples get as far as the tiles."""
    return st.integers(0, 4).flatmap(lambda k: hostile if k == 4 else valid)


SPECIAL = st.sampled_from(
    [math.nan, math.inf, -math.inf, 90.0, -90.0, 180.0, -180.0, 85.0511, -85.0511, 89.999999, 1e308]
)
LAT = mostly(st.floats(-86.0, 86.0), SPECIAL)
LON = mostly(st.floats(-180.0, 180.0), SPECIAL)
MPP = mostly(st.floats(0.05, 50.0), st.sampled_from([0.0, -1.0, math.nan, math.inf, 1e-9]))
SIZE = mostly(st.integers(1, 256), st.sampled_from([0, -1]))
ZOOM_SHIFT = mostly(st.one_of(st.none(), st.integers(-2, 2)), st.sampled_from([-100, 31, 100]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tile_bytes(), lat=LAT, lon=LON, size=SIZE, mpp=MPP, zoom_shift=ZOOM_SHIFT, allow_missing=st.booleans())
def test_patch_builder_raises_only_typed_errors_within_bounded_memory(
    data, lat, lon, size, mpp, zoom_shift, allow_missing
):
    zoom = None
    if zoom_shift is not None:
        base = zoom_for_resolution(0.0, mpp) if math.isfinite(mpp) and mpp > 0 else 10
        zoom = zoom_shift if abs(zoom_shift) > 2 else min(max(base + zoom_shift, 0), 22)
    tracemalloc.start()
    try:
        with HostileSource(data) as source:
            try:
                builder = AerialPatchBuilder(source, size, mpp, zoom=zoom, allow_missing=allow_missing)
                patch = builder.build(lat, lon)
            except (TileError, ValueError) as e:
                event(type(e).__name__)
            else:
                event("patch built")
                assert patch.image.shape == (size, size, 3) and 0.0 <= patch.missing_fraction <= 1.0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MiB"
