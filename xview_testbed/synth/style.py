# SPDX-License-Identifier: Apache-2.0
"""City styles: plain data (YAML file or dict) that sets layout, geometry, appearance and sensors.

A style has four groups; every key is listed in :data:`SCHEMA` with its kind and limits:

* ``layout``: the road network and land use (block sizes, road widths, setbacks, lots, trees, cars, water);
* ``geometry``: heights and shapes (building heights, roofs, trees);
* ``appearance``: palettes (RGB 0-255), season, sun position (compass azimuth / elevation, degrees),
  aerial colour grading and blur, ground-camera exposure / white balance, noise;
* ``sensor``: the vehicle (camera height, speed) and its GNSS / heading errors (metres, seconds, degrees).

Styles are loaded by preset name (``styles/NAME.yaml``) or file path; a file may start from a
preset with ``base: NAME`` and override single keys. :func:`blend_styles` interpolates two styles
per group, so a benchmark can sweep the size and kind of the domain gap.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import yaml

STYLE_DIR = Path(__file__).parent / "styles"
PRESETS = ("downtown", "suburb", "oldtown", "industrial")
GROUPS = ("layout", "geometry", "appearance", "sensor")
BLEND_GROUPS = GROUPS

Style = Dict[str, Dict[str, Any]]


class StyleError(ValueError):
    """A style is malformed: the message names the style, the key and what is wrong."""


# kind, (lo, hi) limits for numbers; choices for "choice"
SCHEMA: Dict[str, Dict[str, Tuple[str, Any]]] = {
    "layout": {
        "pattern": ("choice", ("grid", "organic")),
        "block_size_m": ("range", (20.0, 500.0)),
        "grid_angle_deg": ("range", (-90.0, 90.0)),
        "jitter": ("float", (0.0, 0.45)),
        "curvature": ("float", (0.0, 1.0)),
        "drop_edge_prob": ("float", (0.0, 0.6)),
        "road_width_m": ("range", (3.0, 40.0)),
        "avenue_prob": ("float", (0.0, 1.0)),
        "avenue_width_m": ("range", (3.0, 60.0)),
        "sidewalk_m": ("float", (0.0, 10.0)),
        "plaza_prob": ("float", (0.0, 1.0)),
        "plaza_radius_m": ("range", (3.0, 60.0)),
        "roundabout_prob": ("float", (0.0, 1.0)),
        "setback_m": ("range", (0.0, 40.0)),
        "lot_size_m": ("range", (5.0, 200.0)),
        "building_gap_m": ("float", (0.0, 20.0)),
        "yard": ("choice", ("grass", "dirt")),
        "tree_density": ("float", (0.0, 5.0)),
        "street_tree_spacing_m": ("float", (0.0, 100.0)),
        "parked_cars": ("float", (0.0, 1.0)),
        "containers": ("float", (0.0, 1.0)),
        "water_fraction": ("float", (0.0, 0.4)),
    },
    "geometry": {
        "building_height_m": ("range", (2.5, 400.0)),
        "height_skew": ("float", (0.2, 6.0)),
        "center_boost": ("float", (0.0, 4.0)),
        "building_footprint_m": ("range", (3.0, 300.0)),
        "floor_height_m": ("range", (2.4, 8.0)),
        "pitched_roof_prob": ("float", (0.0, 1.0)),
        "roof_pitch_deg": ("float", (5.0, 60.0)),
        "rooftop_units": ("float", (0.0, 1.0)),
        "tree_height_m": ("range", (1.0, 40.0)),
        "tree_crown_m": ("range", (1.0, 30.0)),
    },
    "appearance": {
        "season": ("choice", ("spring", "summer", "autumn", "winter")),
        "roof_palette": ("palette", None),
        "facade_palette": ("palette", None),
        "window_rgb": ("rgb", None),
        "window_fraction": ("range", (0.0, 1.0)),
        "road_rgb": ("rgb", None),
        "marking_rgb": ("rgb", None),
        "sidewalk_rgb": ("rgb", None),
        "grass_rgb": ("rgb", None),
        "dirt_rgb": ("rgb", None),
        "water_rgb": ("rgb", None),
        "tree_palette": ("palette", None),
        "car_palette": ("palette", None),
        "sky_zenith_rgb": ("rgb", None),
        "sky_horizon_rgb": ("rgb", None),
        "texture": ("float", (0.0, 1.0)),
        "sun_azimuth_deg": ("float", (0.0, 360.0)),
        "sun_elevation_deg": ("float", (5.0, 90.0)),
        "ambient": ("float", (0.0, 1.0)),
        "aerial_brightness": ("float", (0.2, 3.0)),
        "aerial_contrast": ("float", (0.2, 3.0)),
        "aerial_saturation": ("float", (0.0, 3.0)),
        "aerial_tint": ("gain3", None),
        "aerial_blur_px": ("float", (0.0, 5.0)),
        "aerial_noise": ("float", (0.0, 40.0)),
        "ground_exposure": ("float", (0.2, 3.0)),
        "ground_white_balance": ("gain3", None),
        "ground_noise": ("float", (0.0, 40.0)),
        "haze_m": ("float", (10.0, 1.0e5)),
    },
    "sensor": {
        "camera_height_m": ("float", (0.5, 10.0)),
        "speed_mps": ("float", (0.5, 40.0)),
        "gnss_noise_m": ("float", (0.0, 100.0)),
        "gnss_bias_m": ("float", (0.0, 100.0)),
        "gnss_bias_tau_s": ("float", (0.1, 1.0e5)),
        "gnss_outlier_prob": ("float", (0.0, 1.0)),
        "gnss_outlier_m": ("float", (0.0, 500.0)),
        "heading_noise_deg": ("float", (0.0, 90.0)),
        "heading_bias_deg": ("float", (0.0, 90.0)),
    },
}


def _where(name: str, group: str, key: str) -> str:
    return f"style {name!r}: {group}.{key}"


def _check_number(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise StyleError(f"{where} must be a number, got {x!r}")
    if x != x or x in (float("inf"), float("-inf")):
        raise StyleError(f"{where} must be finite, got {x!r}")
    return float(x)


def _check_rgb(x: Any, where: str) -> list:
    if not isinstance(x, (list, tuple)) or len(x) != 3:
        raise StyleError(f"{where} must be an [R, G, B] list of three numbers 0-255, got {x!r}")
    out = [_check_number(c, where) for c in x]
    if any(c < 0 or c > 255 for c in out):
        raise StyleError(f"{where} colour components must be within 0-255, got {x!r}")
    return out


def _check_value(kind: str, limits: Any, x: Any, where: str) -> Any:
    if kind == "float":
        v = _check_number(x, where)
        lo, hi = limits
        if not lo <= v <= hi:
            raise StyleError(f"{where} must be within [{lo}, {hi}], got {x!r}")
        return v
    if kind == "range":
        if not isinstance(x, (list, tuple)) or len(x) != 2:
            raise StyleError(f"{where} must be a [min, max] pair, got {x!r}")
        a, b = (_check_number(c, where) for c in x)
        lo, hi = limits
        if not (lo <= a <= b <= hi):
            raise StyleError(f"{where} must satisfy {lo} <= min <= max <= {hi}, got {x!r}")
        return [a, b]
    if kind == "choice":
        if x not in limits:
            raise StyleError(f"{where} must be one of {list(limits)}, got {x!r}")
        return x
    if kind == "rgb":
        return _check_rgb(x, where)
    if kind == "gain3":
        if not isinstance(x, (list, tuple)) or len(x) != 3:
            raise StyleError(f"{where} must be a list of three per-channel gains (R, G, B), got {x!r}")
        out = [_check_number(c, where) for c in x]
        if any(not 0.2 <= c <= 3.0 for c in out):
            raise StyleError(f"{where} gains must be within [0.2, 3.0], got {x!r}")
        return out
    if kind == "palette":
        if not isinstance(x, (list, tuple)) or not x:
            raise StyleError(f"{where} must be a non-empty list of [R, G, B] colours, got {x!r}")
        return [_check_rgb(c, f"{where}[{i}]") for i, c in enumerate(x)]
    raise AssertionError(kind)


def validate_style(style: Mapping[str, Any], name: str = "<dict>") -> Style:
    """Check a complete style against :data:`SCHEMA`; return a normalised deep copy.

    Raises :class:`StyleError` naming the style and the offending ``group.key``.
    """
    if not isinstance(style, Mapping):
        raise StyleError(f"style {name!r} must be a mapping of groups {list(GROUPS)}, got {type(style).__name__}")
    unknown = set(style) - set(GROUPS) - {"name", "base"}
    if unknown:
        raise StyleError(f"style {name!r}: unknown group(s) {sorted(unknown)}; groups are {list(GROUPS)}")
    out: Style = {}
    for group in GROUPS:
        values = style.get(group)
        if not isinstance(values, Mapping):
            raise StyleError(f"style {name!r}: group {group!r} is missing or not a mapping")
        extra = set(values) - set(SCHEMA[group])
        if extra:
            raise StyleError(f"style {name!r}: unknown key(s) {sorted(f'{group}.{k}' for k in extra)}")
        missing = set(SCHEMA[group]) - set(values)
        if missing:
            raise StyleError(f"style {name!r}: missing key(s) {sorted(f'{group}.{k}' for k in missing)}")
        out[group] = {
            k: _check_value(kind, lim, values[k], _where(name, group, k)) for k, (kind, lim) in SCHEMA[group].items()
        }
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], name: str) -> Dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for group, values in over.items():
        if group in ("name", "base"):
            continue
        if group not in GROUPS:
            raise StyleError(f"style {name!r}: unknown group {group!r}; groups are {list(GROUPS)}")
        if not isinstance(values, Mapping):
            raise StyleError(f"style {name!r}: group {group!r} must be a mapping, got {values!r}")
        out.setdefault(group, {}).update(copy.deepcopy(dict(values)))
    return out


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise StyleError(f"style file {str(path)!r}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise StyleError(f"style file {str(path)!r}: not a style (not UTF-8 text: byte {e.start})") from e
    except yaml.YAMLError as e:
        raise StyleError(f"style file {str(path)!r}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise StyleError(f"style file {str(path)!r}: must hold a mapping of groups, got {type(data).__name__}")
    return data


def _resolve(spec: Any, seen: Tuple[str, ...] = ()) -> Tuple[Dict[str, Any], str]:
    """Raw (unvalidated) style dict and its display name from a preset name, a path, or a dict."""
    if isinstance(spec, Mapping):
        data, name = dict(spec), str(spec.get("name", "<dict>"))
    else:
        spec = str(spec)
        if spec in PRESETS:
            data, name = _read_yaml(STYLE_DIR / f"{spec}.yaml"), spec
        elif spec.endswith((".yaml", ".yml")) or os.sep in spec:
            data, name = _read_yaml(Path(spec)), spec
        else:
            raise StyleError(f"unknown style {spec!r}: use a preset {list(PRESETS)} or a .yaml file path")
    base = data.get("base")
    if base is None:
        return data, name
    if base in seen or base == name:
        raise StyleError(f"style {name!r}: circular 'base' chain through {base!r}")
    base_data, _ = _resolve(base, seen + (name,))
    return _merge(base_data, data, name), name


def load_style(spec: Any) -> Style:
    """A validated style from a preset name, a YAML file path, or a dict (``base:`` allowed in files and dicts)."""
    data, name = _resolve(spec)
    return validate_style(data, name)


def _lerp(a: Any, b: Any, t: float, kind: str) -> Any:
    if kind == "choice":
        return b if t >= 0.5 else a
    if kind == "float":
        return (1.0 - t) * a + t * b
    if kind == "palette":
        n = max(len(a), len(b))
        return [[(1.0 - t) * a[i % len(a)][c] + t * b[i % len(b)][c] for c in range(3)] for i in range(n)]
    return [(1.0 - t) * x + t * y for x, y in zip(a, b)]


def blend_styles(a: Style, b: Style, amount: float, groups: Optional[Iterable[str]] = None) -> Style:
    """Move style ``a`` toward ``b`` by ``amount`` (0 = a, 1 = b) in the named groups (default: all).

    Numbers, ranges and colours interpolate linearly; palettes element-wise (cycled to the longer
    one); choices (pattern, season, yard) switch at 0.5.
    """
    amount = float(amount)
    if not 0.0 <= amount <= 1.0:
        raise StyleError(f"blend amount must be within [0, 1], got {amount!r}")
    groups = list(GROUPS if groups is None else groups)
    bad = [g for g in groups if g not in BLEND_GROUPS]
    if bad:
        raise StyleError(f"unknown blend group(s) {bad}; choose from {list(BLEND_GROUPS)}")
    out = copy.deepcopy(a)
    for g in groups:
        for key, (kind, _) in SCHEMA[g].items():
            out[g][key] = _lerp(a[g][key], b[g][key], amount, kind)
    return validate_style(out, "blend")


def parse_groups(text: str) -> list:
    """``"appearance,geometry"`` -> ["appearance", "geometry"]; ``"all"`` -> every group."""
    if text.strip() == "all":
        return list(BLEND_GROUPS)
    groups = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in groups if g not in BLEND_GROUPS]
    if bad or not groups:
        raise StyleError(f"--blend-groups: unknown group(s) {bad or [text]}; choose from {list(BLEND_GROUPS)} or 'all'")
    return groups


def set_keys(style: Style, assignments: Iterable[str]) -> Style:
    """Apply ``group.key=YAML`` overrides (e.g. ``sensor.gnss_bias_m=20``) and re-validate."""
    out = copy.deepcopy(style)
    for a in assignments:
        if "=" not in a or "." not in a.split("=", 1)[0]:
            raise StyleError(f"style override {a!r} must look like group.key=value")
        path, value = a.split("=", 1)
        group, key = path.split(".", 1)
        if group not in GROUPS or key not in SCHEMA[group]:
            raise StyleError(f"style override {a!r}: unknown key {path!r}")
        out[group][key] = yaml.safe_load(value)
    return validate_style(out, "override")
