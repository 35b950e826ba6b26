# SPDX-License-Identifier: Apache-2.0
"""The city folder: build it (world raster, ortho tile pyramid, metadata, preview) and load it back.

Layout::

    DIR/city.json        placement (datum lat/lon = city centre, ENU "map" frame), size, zooms, style, roads
    DIR/world.npz        the world raster the ground renderer needs
    DIR/tiles/{z}/{x}/{y}.png   XYZ tile pyramid of the aerial ortho
    DIR/tiles.mbtiles    the same tiles, MBTiles 1.3 (TMS rows)
    DIR/preview.png      the ortho, reduced to at most 1024 px
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Sequence

import cv2

from xview_loc_ros.fsutil import OutputLock, atomic_write_bytes, atomic_write_json, replace_durably
from xview_loc_ros.geo import LocalENU
from xview_testbed.synth.aerial import render_ortho
from xview_testbed.synth.city import check_world_size, generate_world
from xview_testbed.synth.pyramid import city_bbox, export_pyramid
from xview_testbed.synth.style import Style
from xview_testbed.synth.world import Road, World

CITY_FORMAT_VERSION = 1
DEFAULT_LAT, DEFAULT_LON = 37.7749, -122.4194  # San Francisco; any latitude within Web Mercator works
DEFAULT_ZOOMS = (16, 17, 18, 19, 20)


@dataclass
class City:
    """A city folder opened for rendering: metadata, style, ENU frame and (lazily) the world raster."""

    root: Path
    meta: Dict[str, Any]

    @property
    def style(self) -> Style:
        return self.meta["style"]

    @property
    def frame(self) -> LocalENU:
        """The "map" ENU frame (metres) anchored at the city centre."""
        return LocalENU(self.meta["lat"], self.meta["lon"], self.meta.get("h0", 0.0))

    @property
    def size_m(self) -> float:
        return float(self.meta["size_m"])

    @property
    def tiles_spec(self) -> str:
        return f"xyz:{self.root / 'tiles'}"

    @cached_property
    def roads(self) -> list:
        return [Road.from_dict(r) for r in self.meta["roads"]]

    @cached_property
    def world(self) -> World:
        return World.load(self.root / "world.npz", self.roads)


def load_city(path: str | os.PathLike) -> City:
    """Open a city folder written by :func:`build_city`; a clear error when it is not one."""
    root = Path(path)
    meta_path = root / "city.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{root}: not a synthetic city folder (no city.json); build one with `xview-loc synth city`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: invalid JSON ({e})") from e
    for key in ("lat", "lon", "size_m", "style", "roads"):
        if key not in meta:
            raise ValueError(f"{meta_path}: missing key {key!r}")
    if not (root / "world.npz").is_file() or not (root / "tiles").is_dir():
        raise FileNotFoundError(f"{root}: city folder is incomplete (needs world.npz and tiles/)")
    return City(root, meta)


def build_city(
    style: Style,
    seed: int,
    out_dir: str | os.PathLike,
    lat: float = DEFAULT_LAT,
    lon: float = DEFAULT_LON,
    size_m: float = 1000.0,
    zooms: Sequence[int] = DEFAULT_ZOOMS,
    res_m: float = 0.25,
    style_name: str = "",
    overwrite: bool = False,
    jobs: int = 2,
) -> Path:
    """Generate a city of side ``size_m`` metres centred on (``lat``, ``lon``) degrees and write its folder.

    The folder is built under ``<out>.partial`` and renamed into place, so a killed run leaves no
    half-written city. Returns the folder path.
    """
    out = Path(out_dir)
    zooms = sorted(set(int(z) for z in zooms))
    if not zooms:
        raise ValueError("at least one tile zoom is needed")
    check_world_size(size_m, res_m)  # before <out>.partial exists
    # A second build would delete this one's .partial and the first to finish would rename a mix.
    with OutputLock(out, "city"):
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
        return _build_city_locked(style, seed, out, float(lat), float(lon), size_m, zooms, res_m, style_name, jobs)


def _build_city_locked(
    style: Style,
    seed: int,
    out: Path,
    lat: float,
    lon: float,
    size_m: float,
    zooms: List[int],
    res_m: float,
    style_name: str,
    jobs: int,
) -> Path:
    frame = LocalENU(lat, lon, 0.0)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        timings = {}
        t0 = time.perf_counter()
        world = generate_world(style, seed, size_m=size_m, res_m=res_m)
        timings["world_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ortho = render_ortho(world, style["appearance"], seed=seed)
        timings["ortho_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = export_pyramid(
            ortho,
            world.res_m,
            frame,
            zooms,
            tmp / "tiles",
            tmp / "tiles.mbtiles",
            name=f"synthetic {style_name or 'city'} seed {seed}",
            jobs=jobs,
        )
        timings["tiles_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        world.save(tmp / "world.npz")
        timings["save_s"] = time.perf_counter() - t0
        scale = min(1.0, 1024 / ortho.shape[0])
        preview = cv2.resize(ortho, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else ortho
        ok, buf = cv2.imencode(".png", cv2.cvtColor(preview, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{tmp}: could not encode preview.png")
        atomic_write_bytes(tmp / "preview.png", buf.tobytes())
        s, w, n, e = city_bbox(frame, world.size_m)
        meta = {
            "format_version": CITY_FORMAT_VERSION,
            "generator": "xview_testbed.synth",
            "style_name": style_name,
            "seed": int(seed),
            "lat": float(lat),
            "lon": float(lon),
            "h0": 0.0,
            "frame": "map: ENU metres, origin at (lat, lon, h0)",
            "size_m": world.size_m,
            "res_m": world.res_m,
            "zooms": zooms,
            "tiles_per_zoom": {str(k): v for k, v in counts.items()},
            "bbox": [s, w, n, e],
            "tiles": "tiles",
            "mbtiles": "tiles.mbtiles",
            "world": "world.npz",
            "preview": "preview.png",
            "build_seconds": {k: round(v, 3) for k, v in timings.items()},
            "style": style,
            "roads": [r.to_dict() for r in world.roads],
        }
        atomic_write_json(tmp / "city.json", meta)
    except BaseException:  # a refused option or an interrupt leaves no empty or partial <out>.partial behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    replace_durably(tmp, out)
    return out


def parse_zooms(text: str) -> list:
    """``"18"``, ``"16-20"`` or ``"17,19"`` -> sorted zoom list."""
    zooms: set = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                zooms.update(range(int(a), int(b) + 1))
            elif part:
                zooms.add(int(part))
    except ValueError as e:
        raise ValueError(f"--zooms: expected e.g. 18, 16-20 or 17,19; got {text!r}") from e
    if not zooms or min(zooms) < 0 or max(zooms) > 23:
        raise ValueError(f"--zooms must name zooms within 0..23, got {text!r}")
    return sorted(zooms)
