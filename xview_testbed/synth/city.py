# SPDX-License-Identifier: Apache-2.0
"""Procedural city generation: style + seed -> :class:`World` raster (roads, buildings, trees, objects).

Steps: a road graph (jittered, optionally curved grid; irregular for ``organic``), rasterised roads,
sidewalks, markings, plazas and roundabouts; parcels (Voronoi of lot seeds) holding rectangular
buildings set back from the road; heights, flat or pitched roofs, rooftop units; trees; parked
cars and yard containers; a water basin; ground textures; facade attributes; sun shadows.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import cv2
import numpy as np

from xview_testbed.synth.world import BUILDING, DIRT, GRASS, MARKING, OBJECT, ROAD, SIDEWALK, TREE, WATER, Road, World

_SHIFT = 4  # cv2 drawing sub-pixel bits
_SEASON_TREE = {
    "spring": ([120, 170, 70], 0.25),
    "summer": ([0, 0, 0], 0.0),
    "autumn": ([185, 110, 40], 0.55),
    "winter": ([115, 100, 85], 0.75),
}
_SEASON_GRASS = {
    "spring": ([110, 160, 70], 0.2),
    "summer": ([0, 0, 0], 0.0),
    "autumn": ([150, 135, 75], 0.35),
    "winter": ([150, 145, 125], 0.6),
}


def value_noise(shape: Tuple[int, int], rng: np.random.Generator, scale_px: float, octaves: int = 3) -> np.ndarray:
    """Smooth noise in [-1, 1] (float32) with features of about ``scale_px`` pixels (fractal sum of octaves)."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        s = max(scale_px / (2**o), 1.0)
        gh, gw = max(2, int(math.ceil(h / s)) + 1), max(2, int(math.ceil(w / s)) + 1)
        g = rng.random((gh, gw), dtype=np.float32) * 2 - 1
        out += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    return np.clip(out / total * 1.6, -1, 1)


def _season(rgb, season: str, table) -> np.ndarray:
    target, t = table[season]
    return (1 - t) * np.asarray(rgb, np.float32) + t * np.asarray(target, np.float32)


def _uniform(rng: np.random.Generator, rng_pair, size=None):
    return rng.uniform(rng_pair[0], rng_pair[1], size)


# ---------------------------------------------------------------------------------------------
# Road network
# ---------------------------------------------------------------------------------------------
def _bezier(p0: np.ndarray, p1: np.ndarray, bend: float, n: int = 12) -> np.ndarray:
    d = p1 - p0
    perp = np.array([-d[1], d[0]])
    ctrl = (p0 + p1) / 2 + perp * bend
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p1


def road_graph(
    layout: dict, size_m: float, rng: np.random.Generator
) -> Tuple[List[Road], List[Tuple[np.ndarray, int]], float]:
    """Road centrelines (ENU metres) covering the square city of side ``size_m``; also the nodes with their
    degree and the grid angle (radians, counter-clockwise from east)."""
    reach = size_m * 0.75
    lines = []
    for _ in range(2):
        pos = [-reach - rng.uniform(0, layout["block_size_m"][1])]
        while pos[-1] < reach:
            pos.append(pos[-1] + _uniform(rng, layout["block_size_m"]))
        lines.append(np.array(pos))
    us, vs = lines
    width_u = np.where(
        rng.random(len(us)) < layout["avenue_prob"],
        _uniform(rng, layout["avenue_width_m"], len(us)),
        _uniform(rng, layout["road_width_m"], len(us)),
    )
    width_v = np.where(
        rng.random(len(vs)) < layout["avenue_prob"],
        _uniform(rng, layout["avenue_width_m"], len(vs)),
        _uniform(rng, layout["road_width_m"], len(vs)),
    )
    block = float(np.mean(layout["block_size_m"]))
    gu, gv = np.meshgrid(us, vs, indexing="ij")
    pts = np.stack([gu, gv], -1) + rng.normal(0, layout["jitter"] * block * 0.6, gu.shape + (2,))
    ang = math.radians(_uniform(rng, layout["grid_angle_deg"]))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    pts = pts @ rot.T
    edges = []  # (i0, j0, i1, j1, width, avenue)
    for i in range(len(us)):
        for j in range(len(vs)):
            if i + 1 < len(us):
                edges.append((i, j, i + 1, j, width_v[j], width_v[j] >= layout["avenue_width_m"][0]))
            if j + 1 < len(vs):
                edges.append((i, j, i, j + 1, width_u[i], width_u[i] >= layout["avenue_width_m"][0]))
            if layout["pattern"] == "organic" and i + 1 < len(us) and j + 1 < len(vs) and rng.random() < 0.12:
                a, b = ((i, j), (i + 1, j + 1)) if rng.random() < 0.5 else ((i + 1, j), (i, j + 1))
                edges.append((*a, *b, _uniform(rng, layout["road_width_m"]), False))
    roads, degree = [], {}
    for i0, j0, i1, j1, w, avenue in edges:
        if not avenue and rng.random() < layout["drop_edge_prob"]:
            continue
        bend = rng.normal(0, 0.5) * layout["curvature"] * 0.5
        roads.append(Road(_bezier(pts[i0, j0], pts[i1, j1], bend), float(w)))
        for key in ((i0, j0), (i1, j1)):
            degree[key] = degree.get(key, 0) + 1
    nodes = [(pts[k], d) for k, d in degree.items()]
    return roads, nodes, ang


def _to_px(world_n: int, res: float, pts: np.ndarray) -> np.ndarray:
    """ENU metres -> fixed-point cv2 coordinates (pixel centres at integer + 0.5)."""
    col = pts[:, 0] / res + world_n / 2 - 0.5
    row = world_n / 2 - pts[:, 1] / res - 0.5
    return np.round(np.stack([col, row], -1) * (1 << _SHIFT)).astype(np.int32)


def _polyline(img: np.ndarray, world_n: int, res: float, pts: np.ndarray, width_m: float, value) -> None:
    cv2.polylines(img, [_to_px(world_n, res, pts)], False, value, max(1, int(round(width_m / res))), cv2.LINE_8, _SHIFT)


def _circle(img: np.ndarray, world_n: int, res: float, c: np.ndarray, r_m: float, value) -> None:
    p = _to_px(world_n, res, c[None])[0]
    cv2.circle(img, (int(p[0]), int(p[1])), int(round(r_m / res * (1 << _SHIFT))), value, -1, cv2.LINE_8, _SHIFT)


def _rect(
    img: np.ndarray, world_n: int, res: float, c: np.ndarray, axis: np.ndarray, length: float, width: float, value
) -> None:
    perp = np.array([-axis[1], axis[0]])
    corners = np.array(
        [c + sa * axis * length / 2 + sb * perp * width / 2 for sa, sb in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
    )
    cv2.fillPoly(img, [_to_px(world_n, res, corners)], value, cv2.LINE_8, _SHIFT)


def _resample(points: np.ndarray, step: float) -> Tuple[np.ndarray, np.ndarray]:
    """Points every ``step`` metres along a polyline, with unit tangents."""
    seg = np.diff(points, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    s = np.concatenate([[0], np.cumsum(seglen)])
    q = np.arange(0, s[-1], step)
    x, y = np.interp(q, s, points[:, 0]), np.interp(q, s, points[:, 1])
    k = np.clip(np.searchsorted(s, q, side="right") - 1, 0, len(seg) - 1)
    tan = seg[k] / np.maximum(seglen[k], 1e-9)[:, None]
    return np.stack([x, y], -1), tan


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------
def check_world_size(size_m: float, res_m: float) -> None:
    """ValueError naming the option unless the city side and raster resolution are buildable."""
    if not 50.0 <= size_m <= 5000.0:
        raise ValueError(f"--size-m: city size must be within [50, 5000] m, got {size_m!r}")
    if not 0.05 <= res_m <= 1.0:
        raise ValueError(f"--res-m: world resolution must be within [0.05, 1] m/px, got {res_m!r}")


def generate_world(style: dict, seed: int, size_m: float = 1000.0, res_m: float = 0.25) -> World:
    """Build the city raster of side ``size_m`` metres at ``res_m`` m/px from a validated style."""
    check_world_size(size_m, res_m)
    L, G, A = style["layout"], style["geometry"], style["appearance"]
    rng = np.random.default_rng(seed)
    n = int(round(size_m / res_m))
    res = size_m / n
    half = size_m / 2
    ys = (n / 2 - np.arange(n, dtype=np.float32) - 0.5) * res  # north of each row centre

    # --- roads, water ------------------------------------------------------------------------
    roads, nodes, grid_angle = road_graph(L, size_m, rng)
    water_north = -half + L["water_fraction"] * size_m if L["water_fraction"] > 0 else -np.inf
    if np.isfinite(water_north):
        roads = [r for r in roads if r.points[:, 1].min() > water_north + r.width_m]
    cls = np.full((n, n), GRASS if L["yard"] == "grass" else DIRT, np.uint8)
    paved = np.zeros((n, n), np.uint8)
    road = np.zeros((n, n), np.uint8)
    for r in roads:
        _polyline(paved, n, res, r.points, r.width_m + 2 * L["sidewalk_m"], 1)
        _polyline(road, n, res, r.points, r.width_m, 1)
    for c, deg in nodes:
        if deg >= 3 and rng.random() < L["plaza_prob"]:
            _circle(paved, n, res, c, _uniform(rng, L["plaza_radius_m"]), 1)
    island = np.zeros((n, n), np.uint8)
    for c, deg in nodes:
        if deg >= 3 and rng.random() < L["roundabout_prob"]:
            _circle(road, n, res, c, 15.0, 1)
            _circle(paved, n, res, c, 15.0 + L["sidewalk_m"], 1)
            _circle(island, n, res, c, 7.0, 1)
    road &= ~island.astype(bool)
    marking = np.zeros((n, n), np.uint8)
    for r in roads:
        if r.width_m < 8.0:
            continue
        pts, _ = _resample(r.points, 1.0)
        keep = slice(int(r.width_m), max(int(r.width_m), len(pts) - int(r.width_m)))
        pts = pts[keep]
        for k in range(0, len(pts) - 3, 9):  # 3 m dash, 6 m gap
            _polyline(marking, n, res, pts[k : k + 4], 0.15, 1)
    cls[paved > 0] = SIDEWALK
    cls[road > 0] = ROAD
    cls[(marking > 0) & (road > 0)] = MARKING
    cls[island > 0] = GRASS
    if np.isfinite(water_north):
        cls[ys < water_north] = WATER

    # --- parcels and buildings ----------------------------------------------------------------
    buildable = ((cls == GRASS) | (cls == DIRT)) & (island == 0)
    buildable[ys < water_north + 4.0] = False
    dist_road = cv2.distanceTransform(buildable.astype(np.uint8), cv2.DIST_L2, 5) * res
    # lot seeds on a lattice aligned with the street grid: rectangular lots on grids, irregular ones when jittered
    spacing = float(np.mean(L["lot_size_m"]))
    g = np.arange(-0.75 * size_m, 0.75 * size_m, spacing)
    lu, lv = np.meshgrid(g, g)
    wobble = 0.12 if L["pattern"] == "grid" else 0.35
    lu = lu.ravel() + rng.uniform(-wobble, wobble, lu.size) * spacing
    lv = lv.ravel() + rng.uniform(-wobble, wobble, lv.size) * spacing
    sx = lu * math.cos(grid_angle) - lv * math.sin(grid_angle)
    sy = lu * math.sin(grid_angle) + lv * math.cos(grid_angle)
    inside_city = (np.abs(sx) < half) & (np.abs(sy) < half)
    sx, sy = sx[inside_city], sy[inside_city]
    scol = np.clip(((sx + half) / res).astype(int), 0, n - 1)
    srow = np.clip(((half - sy) / res).astype(int), 0, n - 1)
    ok = buildable[srow, scol] & (dist_road[srow, scol] > L["setback_m"][0] + 1.0)
    scol, srow, sx, sy = scol[ok], srow[ok], sx[ok], sy[ok]
    nb = len(scol)
    seeds = np.ones((n, n), np.uint8)
    seeds[srow, scol] = 0
    _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[labels[srow, scol]] = np.arange(1, nb + 1)
    parcel = lut[labels]
    edge = np.zeros((n, n), np.uint8)
    edge[:, 1:] |= parcel[:, 1:] != parcel[:, :-1]
    edge[1:, :] |= parcel[1:, :] != parcel[:-1, :]
    dist_edge = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 3) * res
    gy_img = cv2.Sobel(dist_road, cv2.CV_32F, 0, 1, ksize=5)
    gx_img = cv2.Sobel(dist_road, cv2.CV_32F, 1, 0, ksize=5)
    foot = _uniform(rng, G["building_footprint_m"], (nb, 2))
    setback = np.concatenate([[0.0], _uniform(rng, L["setback_m"], nb)])
    nvec = np.stack([gx_img[srow, scol], -gy_img[srow, scol]], -1)  # ENU, away from the nearest road
    nlen = np.hypot(nvec[:, 0], nvec[:, 1])
    axis = np.where(
        nlen[:, None] > 1e-6, np.stack([nvec[:, 1], -nvec[:, 0]], -1) / np.maximum(nlen, 1e-6)[:, None], [1.0, 0.0]
    )
    # each parcel holds one rectangle (along-road x depth) centred on its seed, clipped to the parcel
    rr, cc = np.nonzero(buildable & (parcel > 0))
    k = parcel[rr, cc] - 1
    de, dn = (cc + 0.5 - n / 2) * res - sx[k], (n / 2 - rr - 0.5) * res - sy[k]
    along = np.abs(de * axis[k, 0] + dn * axis[k, 1])
    across = np.abs(-de * axis[k, 1] + dn * axis[k, 0])
    inrect = (along <= foot[k, 0] / 2) & (across <= foot[k, 1] / 2)
    bmask = np.zeros((n, n), bool)
    bmask[rr, cc] = inrect
    bmask &= (dist_road >= setback[parcel]) & (dist_edge >= L["building_gap_m"] / 2)
    bid = np.where(bmask, parcel, 0).astype(np.int32)

    r_c = np.hypot(sx, sy)
    hgt = (
        _uniform(rng, [0, 1], nb) ** G["height_skew"] * (G["building_height_m"][1] - G["building_height_m"][0])
        + G["building_height_m"][0]
    )
    hgt *= 1 + G["center_boost"] * np.exp(-((r_c / (0.3 * size_m)) ** 2))
    eave = np.concatenate([[0.0], hgt]).astype(np.float32)
    pitched = np.concatenate([[False], rng.random(nb) < G["pitched_roof_prob"]])
    height = eave[bid]
    inside = cv2.distanceTransform(bmask.astype(np.uint8), cv2.DIST_L2, 5) * res
    roof_rise = np.minimum(inside * math.tan(math.radians(G["roof_pitch_deg"])), 6.0)
    height = np.where(pitched[bid] & bmask, height + roof_rise, height).astype(np.float32)
    cls[bmask] = BUILDING

    roof_pal = np.asarray(A["roof_palette"], np.float32)
    roof_rgb = roof_pal[rng.integers(0, len(roof_pal), nb + 1)] * rng.uniform(0.85, 1.12, (nb + 1, 1))
    fac_pal = np.asarray(A["facade_palette"], np.float32)
    facade_rgb = np.clip(
        fac_pal[rng.integers(0, len(fac_pal), nb + 1)] * rng.uniform(0.88, 1.1, (nb + 1, 1)), 0, 255
    ).astype(np.uint8)
    floor_h = _uniform(rng, G["floor_height_m"], nb + 1)
    facade = np.stack(
        [floor_h, floor_h * rng.uniform(0.8, 1.3, nb + 1), _uniform(rng, A["window_fraction"], nb + 1), eave], -1
    ).astype(np.float32)

    # --- ground textures, roofs ------------------------------------------------------------------
    tex = A["texture"]
    coarse = value_noise((n, n), rng, 40.0 / res)
    fine = rng.normal(0, 1, (n, n)).astype(np.float32)
    albedo = np.zeros((n, n, 3), np.float32)
    colours = {
        GRASS: _season(A["grass_rgb"], A["season"], _SEASON_GRASS),
        ROAD: A["road_rgb"],
        MARKING: A["marking_rgb"],
        SIDEWALK: A["sidewalk_rgb"],
        DIRT: A["dirt_rgb"],
        WATER: A["water_rgb"],
    }
    grain = {
        GRASS: (0.25, 0.10),
        ROAD: (0.10, 0.06),
        MARKING: (0.02, 0.03),
        SIDEWALK: (0.06, 0.05),
        DIRT: (0.2, 0.08),
        WATER: (0.08, 0.02),
    }
    for c, rgb in colours.items():
        m = cls == c
        k_coarse, k_fine = grain[c]
        gain = 1 + tex * (k_coarse * coarse[m] + k_fine * fine[m])
        albedo[m] = np.asarray(rgb, np.float32)[None] * gain[:, None]
    roof_gain = 1 + tex * (0.05 * fine[bmask] + 0.06 * coarse[bmask])
    parapet = np.where((inside[bmask] < 0.6) & ~pitched[bid[bmask]], 0.8, 1.0)
    albedo[bmask] = roof_rgb[bid[bmask]] * (roof_gain * parapet)[:, None]

    _rooftop_units(height, albedo, bid, bmask, pitched, inside, G, n, res, rng)
    _objects(height, albedo, cls, roads, L, A, n, res, rng, half, water_north)
    crown_base = np.zeros((n, n), np.float32)
    _trees(height, crown_base, albedo, cls, roads, L, G, A, n, res, rng, dist_road)
    solid_obj = height > 0.05

    # --- facade normals, sun shadows ---------------------------------------------------------------
    dist_in = cv2.distanceTransform(solid_obj.astype(np.uint8), cv2.DIST_L2, 5)
    ge = -cv2.Sobel(dist_in, cv2.CV_32F, 1, 0, ksize=3)
    gn = cv2.Sobel(dist_in, cv2.CV_32F, 0, 1, ksize=3)  # row grows south: d/dnorth = -d/drow; outward = -grad
    mag = np.maximum(np.hypot(ge, gn), 1e-6)
    normal = np.stack([ge / mag, gn / mag], -1)
    normal = np.where(solid_obj[..., None], normal, 0)
    normal = np.round(normal * 127).astype(np.int8)
    caster = sun_caster(height, res, A["sun_azimuth_deg"], A["sun_elevation_deg"])
    return World(
        res_m=res,
        height=height,
        cls=cls,
        albedo=np.clip(albedo, 0, 255).astype(np.uint8),
        building=bid,
        normal=normal,
        caster=caster,
        facade_rgb=facade_rgb,
        facade=facade,
        crown_base=crown_base,
        roads=roads,
    )


def _rooftop_units(height, albedo, bid, bmask, pitched, inside, G, n, res, rng) -> None:
    ids = np.unique(bid[bmask])
    ids = ids[~pitched[ids]]
    if G["rooftop_units"] <= 0 or len(ids) == 0:
        return
    rows, cols = np.nonzero(bmask & (inside > 3.0))
    if len(rows) == 0:
        return
    order = np.argsort(bid[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    keys = bid[rows, cols]
    starts = np.searchsorted(keys, ids)
    ends = np.searchsorted(keys, ids, side="right")
    for b, s, e in zip(ids, starts, ends):
        if e <= s or rng.random() > G["rooftop_units"]:
            continue
        for _ in range(rng.integers(1, 4)):
            k = rng.integers(s, e)
            r0, c0 = rows[k], cols[k]
            hh, ww = (rng.uniform(1.5, 4.0, 2) / res).astype(int) + 1
            sl = (slice(r0, min(n, r0 + hh)), slice(c0, min(n, c0 + ww)))
            m = bid[sl] == b
            height[sl][m] += rng.uniform(1.2, 3.0)
            albedo[sl][m] = rng.uniform(150, 215)


def _objects(height, albedo, cls, roads, L, A, n, res, rng, half, water_north) -> None:
    """Parked cars along the kerbs; shipping containers on dirt yards."""
    pal = np.asarray(A["car_palette"], np.float32)
    box = np.zeros((n, n), np.int32)
    objs = []
    if L["parked_cars"] > 0:
        for r in (r for r in roads if r.width_m >= 7.0):
            pts, tan = _resample(r.points, 6.5)
            for side in (-1, 1):
                for p, t in zip(pts[2:-2], tan[2:-2]):
                    if rng.random() > L["parked_cars"]:
                        continue
                    c = p + side * np.array([-t[1], t[0]]) * (r.width_m / 2 - 1.3)
                    objs.append((c, t, 4.4, 1.8, 1.5, pal[rng.integers(len(pal))], ROAD))
    if L["containers"] > 0:
        yard = np.argwhere(cls == DIRT)
        count = int(L["containers"] * len(yard) * res * res / 250.0)
        for k in rng.integers(0, len(yard), count) if len(yard) else []:
            row, col = yard[k]
            c = np.array([(col + 0.5 - n / 2) * res, (n / 2 - row - 0.5) * res])
            t = np.array([1.0, 0.0]) if rng.random() < 0.5 else np.array([0.0, 1.0])
            objs.append((c, t, 12.2, 2.44, 2.6 * rng.integers(1, 4), pal[rng.integers(len(pal))], DIRT))
    for i, (c, t, length, width, _h, _rgb, _ground) in enumerate(objs, 1):
        _rect(box, n, res, c, t, length, width, i)
    if not objs:
        return
    on = box > 0
    oid = box[on]
    kind = np.array([ROAD] + [o[6] for o in objs])
    pix_ok = np.where(kind[oid] == ROAD, np.isin(cls[on], (ROAD, MARKING)), cls[on] == DIRT)
    bad = np.zeros(len(objs) + 1, bool)  # an object stands only where its whole footprint is on its ground
    np.logical_or.at(bad, oid, ~pix_ok)
    ok = ~bad
    ok[0] = False
    m = on & ok[box]
    hts = np.array([0.0] + [o[4] for o in objs], np.float32)
    rgbs = np.array([[0, 0, 0]] + [o[5] for o in objs], np.float32)
    shade = 1.0 + 0.06 * rng.normal(0, 1, m.sum()).astype(np.float32)
    height[m] = hts[box[m]]
    albedo[m] = rgbs[box[m]] * shade[:, None]
    cls[m] = OBJECT


def _trees(height, crown_base, albedo, cls, roads, L, G, A, n, res, rng, dist_road) -> None:
    pal = np.array([_season(c, A["season"], _SEASON_TREE) for c in A["tree_palette"]], np.float32)
    centres = []
    if L["street_tree_spacing_m"] > 0:
        for r in roads:
            pts, tan = _resample(r.points, L["street_tree_spacing_m"])
            for side in (-1, 1):
                off = side * np.stack([-tan[:, 1], tan[:, 0]], -1) * (r.width_m / 2 + L["sidewalk_m"] * 0.55)
                centres.extend(list(pts[1:-1] + off[1:-1]))
    green = np.argwhere(((cls == GRASS) | (cls == DIRT)) & (dist_road > 1.5))
    count = int(L["tree_density"] * len(green) * res * res / 100.0)
    if len(green) and count:
        pick = green[rng.integers(0, len(green), count)]
        centres.extend(list(np.stack([(pick[:, 1] + 0.5 - n / 2) * res, (n / 2 - pick[:, 0] - 0.5) * res], -1)))
    for c in centres:
        col, row = c[0] / res + n / 2, n / 2 - c[1] / res
        if not (0 <= col < n and 0 <= row < n) or cls[int(row), int(col)] in (ROAD, MARKING, BUILDING, WATER, OBJECT):
            continue
        radius = _uniform(rng, G["tree_crown_m"]) / 2
        top = _uniform(rng, G["tree_height_m"])
        rp = int(math.ceil(radius / res))
        r0, r1 = max(0, int(row) - rp), min(n, int(row) + rp + 1)
        c0, c1 = max(0, int(col) - rp), min(n, int(col) + rp + 1)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        d = np.hypot((xx + 0.5 - col) * res, (yy + 0.5 - row) * res) / radius
        wob = 1 + 0.15 * rng.normal(0, 1, d.shape)
        inside = d * wob < 1
        sub_cls = cls[r0:r1, c0:c1]
        inside &= (sub_cls != ROAD) & (sub_cls != MARKING) & (sub_cls != BUILDING) & (sub_cls != OBJECT)
        # crown: a dome from base0 to top with a flattish underside, over a trunk (ground rays pass beneath)
        base0 = min(max(2.4, 0.3 * top), top - 1.0)
        mid, half_h = (top + base0) / 2, (top - base0) / 2
        dome = np.sqrt(np.clip(1 - d**2, 0, 1))
        h_tree = mid + half_h * dome
        take = inside & (h_tree > height[r0:r1, c0:c1])
        if not take.any():
            continue
        rgb = pal[rng.integers(len(pal))] * rng.uniform(0.85, 1.15)
        leaf = (0.7 + 0.35 * (1 - d[take])) * (1 + 0.18 * rng.normal(0, 1, take.sum()))
        trunk = d * radius < 0.25
        height[r0:r1, c0:c1][take] = h_tree[take]
        height[r0:r1, c0:c1][take & trunk] = mid
        crown_base[r0:r1, c0:c1][take] = np.where(trunk[take], 0.0, base0 + (mid - base0) * d[take] ** 4)
        albedo[r0:r1, c0:c1][take] = rgb[None] * leaf[:, None]
        cls[r0:r1, c0:c1][take] = TREE


def sun_caster(height: np.ndarray, res_m: float, sun_azimuth_deg: float, sun_elevation_deg: float) -> np.ndarray:
    """Highest shadow-casting height over each pixel (metres): a point at height z is sunlit when z >= caster.

    caster(p) = max_k height(p + k * step toward the sun) - k * step * tan(elevation), computed by
    doubling (log2 of the longest shadow in pixels passes of shifted maxima).
    """
    az = math.radians(sun_azimuth_deg)
    dx, dy = math.sin(az), -math.cos(az)  # toward the sun, image axes (col east, row south)
    scale = 1.0 / max(abs(dx), abs(dy))
    step_px = (dx * scale, dy * scale)
    drop = scale * res_m * math.tan(math.radians(sun_elevation_deg))  # height lost per unit step
    longest = float(height.max()) / max(drop, 1e-9)
    out = _shift(height, 1, step_px) - drop
    span = 1
    while span < longest:
        shifted = _shift(out, span, step_px) - span * drop
        out = np.maximum(out, shifted)
        span *= 2
    return np.maximum(out, 0).astype(np.float32)


def _shift(a: np.ndarray, k: int, step_px: Tuple[float, float]) -> np.ndarray:
    """b[r, c] = a[r + k*dy, c + k*dx] (rounded), -inf outside."""
    dc, dr = int(round(k * step_px[0])), int(round(k * step_px[1]))
    n0, n1 = a.shape
    out = np.full_like(a, -np.inf)
    if abs(dr) >= n0 or abs(dc) >= n1:
        return out
    src_r = slice(max(dr, 0), n0 + min(dr, 0))
    dst_r = slice(max(-dr, 0), n0 + min(-dr, 0))
    src_c = slice(max(dc, 0), n1 + min(dc, 0))
    dst_c = slice(max(-dc, 0), n1 + min(-dc, 0))
    out[dst_r, dst_c] = a[src_r, src_c]
    return out
