# SPDX-License-Identifier: Apache-2.0
"""Domain randomisation of a style, and the fixed split between source and target styles.

A source model that has seen one city learns its palette, sun and layout statistics; real source
sets hold many cities. :func:`randomize_style` draws a variant of a style inside documented ranges
(below), seeded, so that many cities of the source styles differ the way cities of one kind differ.
It never changes the season: seasons, like the target presets, are a target axis.

Source and target styles (fixed, so a measured cross-style gap remains for adaptation to close):

* source presets :data:`SOURCE_STYLES` (``suburb``, ``industrial``), in the seasons
  :data:`SOURCE_SEASONS`; the bundled source model may only see these, randomised;
* target presets :data:`TARGET_STYLES` (``downtown``, ``oldtown``), any preset in a target season,
  and any blend toward a target preset (the demo's target, ``suburb`` -> ``downtown`` 50 %, is one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List

import numpy as np

from xview_testbed.synth.style import SCHEMA, Style, validate_style

SOURCE_STYLES = ("suburb", "industrial")
TARGET_STYLES = ("downtown", "oldtown")
SOURCE_SEASONS = ("spring", "summer", "autumn")  # industrial's preset is autumn
TARGET_SEASONS = ("winter",)


@dataclass(frozen=True)
class RandomizationRanges:
    """Half-widths of the draws at ``amount`` 1 (``amount`` scales them linearly).

    palette_rgb: per-colour RGB shift of every palette entry and plain colour, ± grey levels;
    palette_gain: one multiplicative colour cast over all of a style's colours, ±;
    sun_elevation_deg: ± around the style's elevation (the azimuth is drawn anywhere);
    grading: aerial brightness/contrast/saturation and ground exposure, relative ±;
    tint: aerial tint and ground white balance per channel, ±;
    texture: ± (absolute, 0..1);
    layout: block size, lot size, road width, setbacks, relative ±;
    vegetation: tree density and street-tree spacing, relative ±;
    heights: building height range, relative ±.
    """

    palette_rgb: float = 18.0
    palette_gain: float = 0.10
    sun_elevation_deg: float = 15.0
    grading: float = 0.12
    tint: float = 0.05
    texture: float = 0.15
    layout: float = 0.20
    vegetation: float = 0.35
    heights: float = 0.25


RANGES = RandomizationRanges()
_LAYOUT_KEYS = ("block_size_m", "lot_size_m", "road_width_m", "setback_m")
_GRADING_KEYS = ("aerial_brightness", "aerial_contrast", "aerial_saturation", "ground_exposure")


def randomize_style(
    style: Style, seed: int, amount: float = 1.0, ranges: RandomizationRanges = RANGES, name: str = "<randomized>"
) -> Style:
    """A variant of ``style`` (already resolved and valid) drawn with ``seed``; ``amount`` in [0, 2]
    scales every range (0 = the style itself). Values are clipped to :data:`SCHEMA`'s limits, and
    the result is validated."""
    if not 0.0 <= amount <= 2.0:
        raise ValueError(f"randomization amount must be within [0, 2], got {amount}")
    out = copy.deepcopy(style)
    if amount == 0.0:
        return validate_style(out, name)
    rng = np.random.default_rng([int(seed), 0x5EED])
    a = float(amount)
    app, lay, geo = out["appearance"], out["layout"], out["geometry"]
    cast = 1.0 + a * ranges.palette_gain * rng.uniform(-1, 1, 3)
    for key, (kind, _) in SCHEMA["appearance"].items():
        if key not in app:
            continue
        if kind == "palette":
            app[key] = [_colour(c, cast, a * ranges.palette_rgb, rng) for c in app[key]]
        elif kind == "rgb":
            app[key] = _colour(app[key], cast, a * ranges.palette_rgb, rng)
    app["sun_azimuth_deg"] = float(rng.uniform(0.0, 360.0))
    app["sun_elevation_deg"] = float(app["sun_elevation_deg"]) + a * ranges.sun_elevation_deg * float(
        rng.uniform(-1, 1)
    )
    for key in _GRADING_KEYS:
        if key in app:
            app[key] = float(app[key]) * (1.0 + a * ranges.grading * float(rng.uniform(-1, 1)))
    for key in ("aerial_tint", "ground_white_balance"):
        if key in app:
            app[key] = [float(g) * (1.0 + a * ranges.tint * float(rng.uniform(-1, 1))) for g in app[key]]
    if "texture" in app:
        app["texture"] = float(app["texture"]) + a * ranges.texture * float(rng.uniform(-1, 1))
    for key in _LAYOUT_KEYS:
        if key in lay:
            f = 1.0 + a * ranges.layout * float(rng.uniform(-1, 1))
            lay[key] = [float(v) * f for v in lay[key]]
    for key in ("tree_density", "street_tree_spacing_m"):
        if key in lay:
            lay[key] = float(lay[key]) * (1.0 + a * ranges.vegetation * float(rng.uniform(-1, 1)))
    if "building_height_m" in geo:
        f = 1.0 + a * ranges.heights * float(rng.uniform(-1, 1))
        geo["building_height_m"] = [float(v) * f for v in geo["building_height_m"]]
    _clip_to_schema(out)
    return validate_style(out, name)


def _colour(rgb: List[float], cast: np.ndarray, shift: float, rng: np.random.Generator) -> List[int]:
    c = np.asarray(rgb, dtype=float) * cast + shift * rng.uniform(-1, 1, 3)
    return [int(v) for v in np.clip(np.round(c), 0, 255)]


def _clip_to_schema(style: Style) -> None:
    """Keep every drawn number inside the schema's limits (a draw near a limit must not fail)."""
    for group, keys in SCHEMA.items():
        values = style.get(group, {})
        for key, (kind, limits) in keys.items():
            if key not in values:
                continue
            if kind == "float":
                values[key] = float(np.clip(values[key], *limits))
            elif kind == "range":
                lo, hi = limits
                a, b = (float(np.clip(v, lo, hi)) for v in values[key])
                values[key] = [min(a, b), max(a, b)]
            elif kind == "gain3":
                values[key] = [float(np.clip(v, 0.2, 3.0)) for v in values[key]]
