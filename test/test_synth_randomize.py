# SPDX-License-Identifier: Apache-2.0
"""Style randomisation for source sets: seeded, inside the schema, season kept, and the fixed
source/target split (no preset on both sides; the demo's target blends toward a target style)."""

from __future__ import annotations

import numpy as np
import pytest

from xview_testbed.demo import DemoOptions
from xview_testbed.synth import load_city, make_city
from xview_testbed.synth.randomize import SOURCE_SEASONS, SOURCE_STYLES, TARGET_SEASONS, TARGET_STYLES, randomize_style
from xview_testbed.synth.style import PRESETS, load_style, validate_style


def _flat(style) -> dict:
    return {(g, k): v for g, keys in style.items() if isinstance(keys, dict) for k, v in keys.items()}


def test_randomized_styles_are_seeded_valid_and_keep_the_season():
    base = load_style("suburb")
    assert randomize_style(base, 3, 0.0) == validate_style(base)
    a, b, c = randomize_style(base, 3), randomize_style(base, 3), randomize_style(base, 4)
    assert a == b and a != c
    for st in (a, c, randomize_style(base, 5, 2.0)):
        validate_style(st)
        assert st["appearance"]["season"] == base["appearance"]["season"]
        assert st["sensor"] == base["sensor"]  # the vehicle is not part of a city's look


def test_draws_cover_the_documented_ranges():
    base = load_style("industrial")
    draws = [randomize_style(base, s) for s in range(60)]
    az = np.array([d["appearance"]["sun_azimuth_deg"] for d in draws])
    assert az.min() < 60 and az.max() > 300  # anywhere around the sky
    grass = np.array([d["appearance"]["grass_rgb"] for d in draws], dtype=float)
    assert grass.std(axis=0).min() > 4.0  # palettes move by several grey levels per channel
    blocks = np.array([d["layout"]["block_size_m"][0] for d in draws]) / base["layout"]["block_size_m"][0]
    assert 0.78 < blocks.min() < 0.9 and 1.1 < blocks.max() < 1.22  # +-20 %
    changed = sum(_flat(d) != _flat(base) for d in draws)
    assert changed == len(draws)


def test_bad_amount_is_refused():
    with pytest.raises(ValueError, match="amount"):
        randomize_style(load_style("suburb"), 0, 2.5)


def test_source_and_target_styles_are_disjoint_and_the_demo_targets_a_target_style():
    assert set(SOURCE_STYLES) | set(TARGET_STYLES) == set(PRESETS)
    assert not set(SOURCE_STYLES) & set(TARGET_STYLES) and not set(SOURCE_SEASONS) & set(TARGET_SEASONS)
    assert "suburb" in SOURCE_STYLES
    demo = DemoOptions()
    assert demo.target_style in TARGET_STYLES or (demo.toward in TARGET_STYLES and demo.amount > 0)


def test_city_cli_builds_a_randomized_city(tmp_path):
    plain = make_city("suburb", 7, tmp_path / "plain", size_m=100.0, zooms=[17])
    varied = make_city("suburb", 7, tmp_path / "varied", size_m=100.0, zooms=[17], randomize=1.0)
    a, b = load_city(plain), load_city(varied)
    assert a.style != b.style and b.style == randomize_style(load_style("suburb"), 7)
    assert "randomized 1" in b.meta["style_name"]
