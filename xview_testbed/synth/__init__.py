# SPDX-License-Identifier: Apache-2.0
"""Synthetic cities: procedural world, aerial and ground renderers, tile pyramids, drives as rosbag2, pairs.

Python API (the CLI ``xview-loc synth ...`` wraps these):

* :func:`make_city` -> city folder (``tiles/{z}/{x}/{y}.png``, ``tiles.mbtiles``, ``city.json``, ``world.npz``, ``preview.png``)
* :func:`make_drive` -> rosbag2 (MCAP or SQLite 3) of a drive along the roads
* :func:`make_pairs` -> labelled pair data set (:mod:`offline_adapt.data.dataset`)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from xview_testbed.synth.citydir import DEFAULT_LAT, DEFAULT_LON, DEFAULT_ZOOMS, City, build_city, load_city
from xview_testbed.synth.drive import make_drive
from xview_testbed.synth.pairs import make_pairs
from xview_testbed.synth.randomize import randomize_style
from xview_testbed.synth.style import PRESETS, StyleError, blend_styles, load_style


def resolve_style(
    style: Any, toward: Any = None, amount: float = 0.0, blend_groups: Optional[Iterable[str]] = None
) -> dict:
    """A validated style: preset name / YAML path / dict, optionally moved ``amount`` toward ``toward``."""
    base = load_style(style)
    if toward is None:
        return base
    return blend_styles(base, load_style(toward), amount, blend_groups)


def style_label(style: Any, toward: Any = None, amount: float = 0.0) -> str:
    name = style if isinstance(style, str) else "custom"
    if toward is None:
        return str(Path(name).stem) if name.endswith((".yaml", ".yml")) else name
    other = toward if isinstance(toward, str) else "custom"
    return f"{name}->{other}@{amount:g}"


def make_city(
    style: Any,
    seed: int,
    out_dir: str | os.PathLike,
    lat: float = DEFAULT_LAT,
    lon: float = DEFAULT_LON,
    size_m: float = 1000.0,
    zooms: Sequence[int] = DEFAULT_ZOOMS,
    res_m: float = 0.25,
    toward: Any = None,
    amount: float = 0.0,
    blend_groups: Optional[Iterable[str]] = None,
    overwrite: bool = False,
    randomize: float = 0.0,
) -> Path:
    """Build a synthetic city of side ``size_m`` metres centred on (``lat``, ``lon``) degrees; returns its folder.
    ``randomize`` > 0 draws a variant of the style with the city's seed (:func:`randomize.randomize_style`)."""
    st = resolve_style(style, toward, amount, blend_groups)
    if randomize:
        st = randomize_style(st, seed, randomize)
    return build_city(
        st,
        seed,
        out_dir,
        lat=lat,
        lon=lon,
        size_m=size_m,
        zooms=zooms,
        res_m=res_m,
        style_name=style_label(style, toward, amount) + (f" randomized {randomize:g}" if randomize else ""),
        overwrite=overwrite,
    )


__all__ = [
    "City",
    "PRESETS",
    "StyleError",
    "load_city",
    "load_style",
    "blend_styles",
    "make_city",
    "make_drive",
    "make_pairs",
    "resolve_style",
]
