# SPDX-License-Identifier: Apache-2.0
"""Synthetic test bed: styles, world determinism, city folder (tiles + MBTiles), pairs, CLI."""

import json
import math
import sqlite3

import numpy as np
import pytest
import yaml

from offline_adapt.data.dataset import PairDataset, read_rgb
from xview_testbed.synth import load_city, make_city, make_pairs
from xview_testbed.synth.city import generate_world
from xview_testbed.synth.style import PRESETS, StyleError, blend_styles, load_style, parse_groups, set_keys


@pytest.fixture(scope="session")
def small_city(tmp_path_factory):
    return make_city("downtown", 11, tmp_path_factory.mktemp("synth_city") / "city", size_m=250.0, zooms=(17, 18))


# --- styles ----------------------------------------------------------------------------------
def test_presets_load_and_differ():
    styles = {p: load_style(p) for p in PRESETS}
    heights = {p: s["geometry"]["building_height_m"][1] for p, s in styles.items()}
    assert heights["downtown"] > 4 * heights["suburb"]
    assert styles["oldtown"]["layout"]["pattern"] == "organic"
    assert styles["industrial"]["layout"]["water_fraction"] > 0
    assert styles["suburb"]["layout"]["tree_density"] > 5 * styles["downtown"]["layout"]["tree_density"]
    assert styles["downtown"]["sensor"]["gnss_bias_m"] >= 10  # urban canyon: tens of metres with outliers


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s["layout"].update(block_sise_m=[1, 2]), "unknown key(s) ['layout.block_sise_m']"),
        (
            lambda s: s["appearance"].update(sun_elevation_deg=120),
            "appearance.sun_elevation_deg must be within [5.0, 90.0]",
        ),
        (lambda s: s["layout"].update(road_width_m=[9, 4]), "layout.road_width_m must satisfy"),
        (lambda s: s["appearance"].update(roof_palette=[[1, 2]]), "appearance.roof_palette[0] must be an [R, G, B]"),
        (lambda s: s["layout"].update(pattern="spiral"), "layout.pattern must be one of ['grid', 'organic']"),
        (lambda s: s["geometry"].pop("tree_height_m"), "missing key(s) ['geometry.tree_height_m']"),
        (lambda s: s["sensor"].update(gnss_bias_m="ten"), "sensor.gnss_bias_m must be a number"),
        (lambda s: s.update(colours={}), "unknown group(s) ['colours']"),
    ],
)
def test_style_validation_names_the_key(mutate, message):
    s = load_style("suburb")
    mutate(s)
    with pytest.raises(StyleError) as e:
        load_style(s)
    assert message in str(e.value)


def test_style_file_with_base_and_errors(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"base": "oldtown", "geometry": {"building_height_m": [20, 30]}}))
    s = load_style(str(f))
    assert s["geometry"]["building_height_m"] == [20.0, 30.0]
    assert s["appearance"] == load_style("oldtown")["appearance"]
    (tmp_path / "bad.yaml").write_text("layout: [1, 2\n")
    with pytest.raises(StyleError, match="invalid YAML"):
        load_style(str(tmp_path / "bad.yaml"))
    with pytest.raises(StyleError, match="unknown style 'nowhere'"):
        load_style("nowhere")
    with pytest.raises(StyleError, match="cannot read"):
        load_style(str(tmp_path / "missing.yaml"))


def test_blend_per_group():
    a, b = load_style("downtown"), load_style("oldtown")
    half = blend_styles(a, b, 0.5, ["appearance"])
    assert half["layout"] == a["layout"] and half["geometry"] == a["geometry"]
    assert half["appearance"]["sun_azimuth_deg"] == pytest.approx(
        (a["appearance"]["sun_azimuth_deg"] + b["appearance"]["sun_azimuth_deg"]) / 2
    )
    assert half["appearance"]["road_rgb"] == pytest.approx(
        [(x + y) / 2 for x, y in zip(a["appearance"]["road_rgb"], b["appearance"]["road_rgb"])]
    )
    assert blend_styles(a, b, 1.0)["layout"] == b["layout"]
    assert blend_styles(a, b, 0.49, ["layout"])["layout"]["pattern"] == "grid"
    assert blend_styles(a, b, 0.51, ["layout"])["layout"]["pattern"] == "organic"
    with pytest.raises(StyleError, match="blend amount"):
        blend_styles(a, b, 1.5)
    with pytest.raises(StyleError, match="unknown group"):
        parse_groups("apperance")
    assert set_keys(a, ["sensor.gnss_bias_m=25"])["sensor"]["gnss_bias_m"] == 25.0
    with pytest.raises(StyleError, match="unknown key"):
        set_keys(a, ["sensor.gnss=1"])


# --- world -----------------------------------------------------------------------------------
def test_world_is_deterministic_and_seed_dependent():
    st = load_style("suburb")
    w1, w2, w3 = (generate_world(st, s, size_m=120.0) for s in (5, 5, 6))
    for name in ("height", "albedo", "cls", "caster", "building"):
        assert np.array_equal(getattr(w1, name), getattr(w2, name)), name
    assert not np.array_equal(w1.albedo, w3.albedo)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_build_plausible_worlds(preset):
    from xview_testbed.synth.world import BUILDING, ROAD, TREE, WATER

    w = generate_world(load_style(preset), 2, size_m=200.0)
    share = {c: float(np.mean(w.cls == c)) for c in (BUILDING, ROAD, TREE, WATER)}
    assert 0.05 < share[ROAD] < 0.6, share
    assert share[BUILDING] > 0.03, share
    tall = np.percentile(w.height[w.cls == BUILDING], 90)
    if preset == "downtown":
        assert tall > 25
    if preset == "suburb":
        assert tall < 15 and share[TREE] > 0.08
    if preset == "industrial":
        assert share[WATER] > 0.1
    # the sun casts shadows away from itself: some ground is shadowed
    assert np.mean(w.caster > w.height + 0.5) > 0.02


# --- city folder -----------------------------------------------------------------------------
def test_city_folder_tiles_and_mbtiles(small_city):
    meta = json.loads((small_city / "city.json").read_text())
    assert meta["zooms"] == [17, 18] and meta["size_m"] == pytest.approx(250.0)
    assert (small_city / "preview.png").is_file()
    xyz = sorted(small_city.glob("tiles/*/*/*.png"))
    assert len(xyz) == sum(meta["tiles_per_zoom"].values()) > 4
    db = sqlite3.connect(str(small_city / "tiles.mbtiles"))
    md = dict(db.execute("SELECT name, value FROM metadata"))
    assert md["format"] == "png" and md["minzoom"] == "17" and md["maxzoom"] == "18"
    rows = db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles").fetchall()
    assert len(rows) == len(xyz)
    for z, x, y_tms, data in rows[:6]:
        y = 2**z - 1 - y_tms  # MBTiles stores TMS rows
        assert (small_city / "tiles" / str(z) / str(x) / f"{y}.png").read_bytes() == data
    # the pyramid covers the city bbox (south, west, north, east)
    from xview_loc_ros.geo import latlon_to_tile

    s, w, n, e = meta["bbox"]
    for z in (17, 18):
        tx, ty = latlon_to_tile(np.array([n, s]), np.array([w, e]), z)
        for x in range(int(tx[0]), int(tx[1]) + 1):
            for y in range(int(ty[0]), int(ty[1]) + 1):
                assert (small_city / "tiles" / str(z) / str(x) / f"{y}.png").is_file()


def test_city_refuses_overwrite_and_bad_input(small_city, tmp_path):
    with pytest.raises(FileExistsError):
        make_city("downtown", 1, small_city, size_m=100.0, zooms=(17,))
    with pytest.raises(ValueError, match="city size"):
        make_city("downtown", 1, tmp_path / "c", size_m=10.0, zooms=(17,))
    with pytest.raises(FileNotFoundError, match="not a synthetic city"):
        load_city(tmp_path)


# --- pairs -----------------------------------------------------------------------------------
def _dist_to_roads(city, e, n):
    best = np.inf
    for r in city.roads:
        a, b = r.points[:-1], r.points[1:]
        ab = b - a
        t = np.clip(((np.array([e, n]) - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0, 1)
        best = min(best, float(np.min(np.hypot(*(a + ab * t[:, None] - [e, n]).T))))
    return best


def test_pairs_small_panorama(small_city, tmp_path):
    out = make_pairs(small_city, tmp_path / "ds", 20, seed=3)
    ds = PairDataset(out)
    assert ds.meta.ground_type == "panorama" and ds.meta.ground_size == [64, 256]
    assert ds.meta.patch_size_px == 128 and ds.meta.mpp == 0.5 and ds.meta.fov_deg == 360.0
    assert len(ds) == 20
    assert {p.split for p in ds.pairs} == {"train", "val", "test"}
    assert sum(p.split == "train" for p in ds.pairs) == 14
    city = load_city(small_city)
    us, lateral = [], []
    for p in ds.pairs:
        u, v = p.gt_pixel()
        assert 32 <= u <= 96 and 32 <= v <= 96, (u, v)  # truth in the central half of the patch
        us.append(u)
        assert 0 <= p.heading_deg < 360 and p.gt_lat is not None and p.fix_std_m > 0
        assert read_rgb(out / p.ground).shape == (64, 256, 3)
        assert read_rgb(out / p.aerial).shape == (128, 128, 3)
        lateral.append(_dist_to_roads(city, p.extra["east_m"], p.extra["north_m"]))
    frac = np.mod(us, 1.0)
    assert np.std(frac) > 0.15  # continuous sub-pixel offsets, not whole pixels
    assert np.std(us) > 8
    assert np.std(lateral) > 0.4 and max(lateral) > 1.0  # not only lane centres


def test_pairs_deterministic_and_pinhole(small_city, tmp_path):
    a = make_pairs(small_city, tmp_path / "a", 8, seed=9, ground="pinhole", workers=1)
    b = make_pairs(small_city, tmp_path / "b", 8, seed=9, ground="pinhole", workers=2)  # parallel: same output
    assert (a / "index.jsonl").read_text() == (b / "index.jsonl").read_text()
    ds = PairDataset(a)
    assert ds.meta.ground_type == "pinhole" and ds.meta.fov_deg == 90.0
    fx, fy, cx, cy = ds.meta.intrinsics
    assert fx == pytest.approx(128 / math.tan(math.radians(45))) and (cx, cy) == (128, 32)
    for p in ds.pairs:
        assert np.array_equal(read_rgb(a / p.ground), read_rgb(b / p.ground))
        assert np.array_equal(read_rgb(a / p.aerial), read_rgb(b / p.aerial))
    c = PairDataset(make_pairs(small_city, tmp_path / "c", 3, seed=10, ground="pinhole"))
    assert [p.gt_lat for p in c.pairs] != [p.gt_lat for p in ds.pairs]


def test_pairs_like_drives(small_city, tmp_path):
    """JPEG frames, IMU-like heading errors, GNSS-like offsets: what the recorder and the extractor give."""
    from xview_testbed.synth.gnss import GnssErrorModel
    from xview_testbed.synth.pairs import DRIVE_LOOK, PairLook, sample_offsets

    out = make_pairs(small_city, tmp_path / "d", 30, seed=4, look=DRIVE_LOOK)
    ds = PairDataset(out)
    assert ds.meta.extra["look"] == {"jpeg_quality": 90, "heading_error": True, "offsets": "mixed"}
    err = []
    for p in ds.pairs:
        assert p.ground.endswith(".jpg") and (out / p.ground).read_bytes()[:2] == b"\xff\xd8"
        u, v = p.gt_pixel()
        assert 32 - 1e-3 <= u <= 96 + 1e-3 and 32 - 1e-3 <= v <= 96 + 1e-3  # the truth stays in the central half
        err.append((p.heading_deg - p.extra["true_heading_deg"] + 180) % 360 - 180)
        assert p.heading_source == "synthetic-imu"
    sensor = load_city(small_city).style["sensor"]
    expected = math.hypot(sensor["heading_noise_deg"], sensor["heading_bias_deg"])
    assert 0.4 * expected < float(np.std(err)) < 2.0 * expected

    # offsets: GNSS-like ones concentrate near the centre (bias + noise), uniform ones do not
    model = GnssErrorModel(
        noise_m=1.5,
        bias_m=4.0,
        bias_tau_s=90.0,
        outlier_prob=0.0,
        outlier_m=0.0,
        heading_noise_deg=1.0,
        heading_bias_deg=1.0,
    )
    rng = np.random.default_rng(0)
    g = sample_offsets(PairLook(offsets="gnss"), model, 4000, 16.0, rng)
    u = sample_offsets(PairLook(offsets="uniform"), model, 4000, 16.0, rng)
    assert np.abs(g).max() <= 16.0 + 1e-9 and np.abs(u).max() <= 16.0
    assert np.std(g[:, 0]) == pytest.approx(math.hypot(1.5, 4.0), rel=0.15)
    assert np.std(u[:, 0]) == pytest.approx(32 / math.sqrt(12), rel=0.1)
    with pytest.raises(ValueError, match="offsets must be one of"):
        PairLook(offsets="lognormal")
    with pytest.raises(ValueError, match="jpeg_quality"):
        PairLook(jpeg_quality=0)


def test_pair_presets_match_the_model_inputs():
    from xview_loc_ros.models import DEFAULTS
    from xview_testbed.synth.pairs import PRESETS as PAIR_PRESETS
    from xview_testbed.synth.pairs import ground_camera, resolve_preset

    for arch in ("small", "ccvpe-vigor", "ccvpe-kitti"):
        cfg = DEFAULTS[arch]
        cam = ground_camera(arch, cfg["ground_type"])
        p = PAIR_PRESETS[resolve_preset(arch)]
        assert list(cam.size) == cfg["ground_size"] and cam.fov_deg == cfg["fov_deg"], arch
        assert p.patch_px == cfg["aerial_size"] and p.mpp[cfg["ground_type"]] == pytest.approx(cfg["mpp"]), arch
    with pytest.raises(ValueError, match="unknown pair preset"):
        ground_camera("huge", "panorama")


def test_cli_pairs_and_errors(small_city, tmp_path, capsys):
    from xview_testbed.cli import main

    assert (
        main(["synth", "pairs", "--city", str(small_city), "--n", "2", "--seed", "1", "--out", str(tmp_path / "p")])
        == 0
    )
    assert len(PairDataset(tmp_path / "p")) == 2
    assert main(["synth", "city", "--style", "downtown", "--toward", "nowhere", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown style 'nowhere'" in err[0]
    assert main(["synth", "pairs", "--city", str(tmp_path), "--n", "2", "--out", str(tmp_path / "q")]) == 2
    assert "not a synthetic city" in capsys.readouterr().err
