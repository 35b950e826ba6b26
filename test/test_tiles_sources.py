# SPDX-License-Identifier: Apache-2.0
"""Local tile sources and the patch builder's behaviour: formats, TMS rows, archive metadata, holes
(never a silent black square), alpha masks, LRU, mosaic reuse, prefetch, date line, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from xview_loc_ros.geo import LocalENU, tile_to_latlon, xyz_to_tms_row
from xview_loc_ros.tiles import AerialPatchBuilder, TileDecodeError, TileNotFound, decode_tile, open_tile_source
from xview_loc_ros.tiles.coverage import densify_path, tiles_around, tiles_in_bbox


def coloured(z, x, y) -> np.ndarray:
    rgb = np.empty((256, 256, 3), np.uint8)
    rgb[...] = ((x * 41) % 200 + 30, (y * 67) % 200 + 30, 100 + z)
    return rgb


def encode(rgb: np.ndarray, ext: str = ".png", alpha: np.ndarray | None = None) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if alpha is not None:
        bgr = np.dstack([bgr, alpha])
    ok, buf = cv2.imencode(ext, bgr, [cv2.IMWRITE_JPEG_QUALITY, 100] if ext == ".jpg" else [])
    assert ok
    return buf.tobytes()


def write_folder(root: Path, keys, ext=".png", tms=False) -> Path:
    for z, x, y in keys:
        p = root / str(z) / str(x) / f"{xyz_to_tms_row(y, z) if tms else y}{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode(coloured(z, x, y), ext))
    return root


def write_mbtiles(path: Path, tiles: dict, meta: dict) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE metadata (name text, value text)")
    db.execute("CREATE TABLE tiles (zoom_level integer, tile_column integer, tile_row integer, tile_data blob)")
    db.executemany("INSERT INTO metadata VALUES (?, ?)", meta.items())
    db.executemany(
        "INSERT INTO tiles VALUES (?, ?, ?, ?)", [(z, x, xyz_to_tms_row(y, z), d) for (z, x, y), d in tiles.items()]
    )
    db.commit()
    db.close()
    return path


BLOCK = [(15, x, y) for x in range(5251, 5254) for y in range(11444, 11447)]


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_folder_formats_and_tms_rows(tmp_path, ext):
    write_folder(tmp_path / "xyz", BLOCK, ext)
    write_folder(tmp_path / "tms", BLOCK, ext, tms=True)
    tol = 0 if ext == ".png" else 3
    for spec in (f"xyz:{tmp_path / 'xyz'}", f"tms:{tmp_path / 'tms'}"):
        with open_tile_source(spec) as s:
            assert (s.min_zoom, s.max_zoom) == (15, 15)
            for k in [(15, 5251, 11444), (15, 5253, 11445)]:
                got = s.get_tile(*k)
                assert got.shape == (256, 256, 3) and got.dtype == np.uint8
                assert np.abs(got.astype(int) - coloured(*k)).max() <= tol
            with pytest.raises(TileNotFound, match="15/5250/11444"):
                s.get_tile(15, 5250, 11444)


def test_mbtiles_tms_rows_and_metadata(tmp_path):
    # The MBTiles spec example: XYZ 11/327/791 is stored with tile_row 1256.
    assert xyz_to_tms_row(791, 11) == 1256
    path = write_mbtiles(
        tmp_path / "a.mbtiles",
        {(11, 327, 791): encode(coloured(11, 327, 791))},
        {"name": "t", "format": "png", "minzoom": "10", "maxzoom": "11"},
    )
    db = sqlite3.connect(path)
    assert db.execute("SELECT tile_row FROM tiles").fetchone()[0] == 1256
    db.close()
    with open_tile_source(f"mbtiles:{path}") as s:
        assert (s.min_zoom, s.max_zoom) == (10, 11)
        np.testing.assert_array_equal(s.get_tile(11, 327, 791), coloured(11, 327, 791))
        with pytest.raises(TileNotFound):
            s.get_tile(11, 327, 1256)
    vec = write_mbtiles(tmp_path / "v.mbtiles", {}, {"name": "v", "format": "pbf"})
    with pytest.raises(ValueError, match="not raster"):
        open_tile_source(f"mbtiles:{vec}")
    (tmp_path / "junk.mbtiles").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="not an MBTiles"):
        open_tile_source(f"mbtiles:{tmp_path / 'junk.mbtiles'}")


def test_bad_specs_and_paths(tmp_path):
    for spec, match in [
        ("", "non-empty"),
        ("foo:bar", "unknown tile source"),
        ("xyz:", "unknown tile source"),
        (str(tmp_path), "unknown tile source"),
    ]:
        with pytest.raises(ValueError, match=match):
            open_tile_source(spec)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_tile_source(f"xyz:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_tile_source(f"pmtiles:{tmp_path / 'missing.pmtiles'}")
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="local"):
        open_tile_source(f"xyz:{tmp_path / 'x'}", cache_dir=tmp_path / "c")
    with open_tile_source(f"xyz:{tmp_path / 'x'}") as s:
        with pytest.raises(ValueError, match="outside zoom"):
            s.get_tile(3, 8, 0)
    with pytest.raises(ValueError, match="metres per pixel"):
        AerialPatchBuilder(s, 64, 0.0)
    with pytest.raises(ValueError, match="pixels"):
        AerialPatchBuilder(s, 0, 1.0)
    with pytest.raises(ValueError, match="coarser zoom"):  # 1024 px at 10 m/px from 0.15 m/px tiles
        AerialPatchBuilder(s, 1024, 10.0, zoom=20).build(0.0, 0.0)


def test_decode_checks():
    png = encode(coloured(1, 0, 0))
    with pytest.raises(TileDecodeError, match="empty"):
        decode_tile(b"", "t")
    with pytest.raises(TileDecodeError, match="not a PNG"):
        decode_tile(b"<html>", "t")
    with pytest.raises(TileDecodeError, match="truncated PNG"):
        decode_tile(png[: len(png) // 2], "t")
    ok, small = cv2.imencode(".png", np.zeros((128, 128, 3), np.uint8))
    with pytest.raises(TileDecodeError, match="128x128"):
        decode_tile(small.tobytes(), "t")
    alpha = np.full((256, 256), 255, np.uint8)
    alpha[:, :64] = 0
    t = decode_tile(encode(coloured(1, 0, 0), alpha=alpha), "t")
    assert t.valid is not None and t.valid[:, :64].sum() == 0 and t.valid[:, 64:].all()
    assert decode_tile(png, "t").valid is None


def _centre_of(keys_zoom, x, y):
    lat, lon = tile_to_latlon(x, y, keys_zoom)  # the corner shared by 4 tiles
    return float(lat), float(lon)


def test_missing_tile_raises_or_is_a_reported_hole(tmp_path):
    write_folder(tmp_path, [k for k in BLOCK if k != (15, 5252, 11445)])  # the tile south-east of the corner is absent
    lat, lon = _centre_of(15, 5252, 11445)
    with open_tile_source(f"xyz:{tmp_path}") as s:
        res = s.get_tiles([(15, 5251, 11444)])[(15, 5251, 11444)]
        np.testing.assert_array_equal(res.rgb, coloured(15, 5251, 11444))
        with pytest.raises(TileNotFound, match="15/5252/11445"):
            AerialPatchBuilder(s, 128, 2.0, zoom=15).build(lat, lon)
        p = AerialPatchBuilder(s, 128, 2.0, zoom=15, allow_missing=True).build(lat, lon)
    # The corner is the patch centre: about a quarter (south-east) is missing, and it is zero, masked.
    assert 0.22 < p.missing_fraction < 0.27
    assert p.image[80:, 80:].max() == 0 and p.image[:50, :50].min() > 0
    np.testing.assert_array_equal(p.image[20, 20], coloured(15, 5251, 11444)[0, 0])


def test_alpha_holes_are_reported(tmp_path):
    alpha = np.full((256, 256), 255, np.uint8)
    alpha[128:, :] = 0
    p = tmp_path / "15" / "5251" / "11444.png"
    p.parent.mkdir(parents=True)
    p.write_bytes(encode(coloured(15, 5251, 11444), alpha=alpha))
    lat, lon = [float(v) for v in tile_to_latlon(5251.5, 11444.5, 15)]
    with open_tile_source(f"xyz:{tmp_path}") as s:
        with pytest.raises(TileNotFound, match="no imagery"):
            AerialPatchBuilder(s, 64, 1.0, zoom=15).build(lat, lon)
        patch = AerialPatchBuilder(s, 64, 1.0, zoom=15, allow_missing=True).build(lat, lon)
    assert 0.45 < patch.missing_fraction < 0.56 and patch.image[40:].max() == 0


def test_zoom_choice_clamped_to_source(tmp_path):
    write_folder(tmp_path, BLOCK)
    lat, lon = _centre_of(15, 5252, 11445)
    with open_tile_source(f"xyz:{tmp_path}") as s:
        b = AerialPatchBuilder(s, 32, 0.3)
        assert b.zoom_at(lat) == 15  # would be 19 at 0.3 m/px, the folder stops at 15
        assert b.build(lat, lon).zoom == 15
        assert AerialPatchBuilder(s, 32, 0.3, zoom=14).zoom_at(lat) == 14


def test_lru_and_mosaic_reuse(tmp_path):
    write_folder(tmp_path, BLOCK)
    lat, lon = _centre_of(15, 5252, 11445)
    with open_tile_source(f"xyz:{tmp_path}", lru_tiles=4) as s:
        b = AerialPatchBuilder(s, 128, 2.0, zoom=15)
        first = b.build(lat, lon)
        loaded = s.cache_stats()
        assert loaded["misses"] >= 1 and loaded["hits"] == 0
        for f in tmp_path.rglob("*.png"):  # tiles are now served from memory / the reused mosaic
            f.unlink()
        lat2, lon2, _ = LocalENU(lat, lon).to_latlon(4.0, -2.0)  # 2 px east, 1 px south
        second = b.build(float(lat2), float(lon2))
        diff = np.abs(second.image[10:100, 10:100].astype(int) - first.image[11:101, 12:102])
        assert diff.max() <= 2
        with pytest.raises(TileNotFound):
            s.get_tile(15, 5253, 11446)  # LRU bounded to 4 tiles: this one was never loaded
        s.get_tile(15, 5252, 11445)
        assert s.cache_stats()["hits"] >= 1
    assert second.georef.center_lat == pytest.approx(float(lat2))


def test_prefetch_path_warms_source(tmp_path):
    keys = [(15, x, y) for x in range(5249, 5257) for y in range(11442, 11448)]
    write_folder(tmp_path, keys)
    a = _centre_of(15, 5251, 11444)
    b = _centre_of(15, 5255, 11444)
    with open_tile_source(f"xyz:{tmp_path}", lru_tiles=200) as s:
        builder = AerialPatchBuilder(s, 64, 4.0, zoom=15)
        summary = builder.prefetch([a, b], radius_m=100.0).result(timeout=30)
        builder.close()
        assert summary.tiles == summary.loaded >= 10 and summary.missing == 0
        assert all(k in s._lru for k in [(15, 5251, 11444), (15, 5253, 11443), (15, 5255, 11444)])
        out = AerialPatchBuilder(s, 64, 4.0, zoom=15).prefetch([(a[0] + 0.5, a[1])], radius_m=10).result(timeout=30)
    assert out.missing == out.tiles > 0 and out.loaded == 0


def test_coverage_helpers():
    keys = tiles_in_bbox(-1.0, 179.99, 1.0, -179.99, 10)  # across the date line
    xs = {x for _, x, _ in keys}
    assert xs == {1023, 0}
    assert len(tiles_in_bbox(52.0, 4.0, 52.01, 4.01, 15)) == len(set(tiles_in_bbox(52.0, 4.0, 52.01, 4.01, 15)))
    with pytest.raises(ValueError, match="south"):
        tiles_in_bbox(2, 0, 1, 1, 3)
    assert len(tiles_in_bbox(-90, -180, 90, 180, 2)) == 16  # the whole world, clipped to Mercator
    with pytest.raises(ValueError, match="over the limit of 1000"):  # refused before listing 2^44 tiles
        tiles_in_bbox(-80, -180, 80, 180, 22, max_tiles=1000)
    assert {x for _, x, _ in tiles_around(0.0, 179.9999, 50.0, 16)} == {65535, 0}
    pts = densify_path([(52.0, 4.0), (52.0, 4.01)], 50.0)
    assert len(pts) == 15  # 685 m in 14 steps of <= 50 m


def test_patch_across_date_line(tmp_path):
    write_folder(tmp_path, [(12, x, y) for x in (4095, 0) for y in (2047, 2048)])
    with open_tile_source(f"xyz:{tmp_path}") as s:
        p = AerialPatchBuilder(s, 64, 20.0, zoom=12).build(0.0, 180.0)
    np.testing.assert_array_equal(p.image[10, 10], coloured(12, 4095, 2047)[0, 0])  # north-west: west of 180
    np.testing.assert_array_equal(p.image[54, 54], coloured(12, 0, 2048)[0, 0])  # south-east: east of -180


def test_beyond_mercator_latitude_is_a_clear_error(tmp_path):
    (tmp_path / "t").mkdir()
    with open_tile_source(f"xyz:{tmp_path / 't'}") as s:
        with pytest.raises(ValueError, match="Web Mercator"):
            AerialPatchBuilder(s, 16, 1.0, zoom=10).build(86.0, 0.0)


def test_corrupt_archive_tile_raises_or_is_a_hole(tmp_path):
    tiles = {k: encode(coloured(*k)) for k in BLOCK}
    tiles[(15, 5252, 11445)] = tiles[(15, 5252, 11445)][:300]  # truncated blob in the archive
    path = write_mbtiles(tmp_path / "c.mbtiles", tiles, {"name": "c", "format": "png"})
    lat, lon = _centre_of(15, 5252, 11445)
    with open_tile_source(f"mbtiles:{path}") as s:
        with pytest.raises(TileDecodeError, match="15/5252/11445"):
            AerialPatchBuilder(s, 128, 2.0, zoom=15).build(lat, lon)
        p = AerialPatchBuilder(s, 128, 2.0, zoom=15, allow_missing=True).build(lat, lon)
    assert 0.22 < p.missing_fraction < 0.27 and p.image[80:, 80:].max() == 0


# -- decompression bombs: the header is checked before anything is decoded ------------------------------

_DECODE_IN_CHILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[2])
from hostile_images import jpeg_declaring, png_declaring
from xview_loc_ros.tiles import TileDecodeError, decode_tile
data = {"jpg": jpeg_declaring, "png": png_declaring}[sys.argv[1]](20000, 20000)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    decode_tile(data, "bomb")
except TileDecodeError as e:
    print(e)
print(len(data), time.perf_counter() - t0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) // 1024)
"""


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_bomb_tile_refused_from_its_header(fmt):
    """A 631-byte JPEG declaring 20000x20000 px used to cost 2.3 GB and 15 s before the size check."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_CHILD, fmt, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert "bomb: tile is 20000x20000 px, expected 256x256" in out[0]
    size, seconds, grown_mb = out[1].split()
    assert int(size) < 1000 and float(seconds) < 0.5 and int(grown_mb) < 50, out


def test_decoder_errors_are_tile_errors():
    from hostile_images import png_declaring

    # OpenCV refuses 1e10 px with cv2.error (an assertion), not a None result
    with pytest.raises(TileDecodeError, match="100000x100000"):
        decode_tile(png_declaring(100000, 100000), "t")
    broken = bytearray(encode(coloured(1, 0, 0), ".jpg"))
    broken[2:4] = b"\xff\xda"  # scan data before any frame header
    with pytest.raises(TileDecodeError, match="t: .*frame header"):
        decode_tile(bytes(broken), "t")
    real = encode(coloured(1, 0, 0))
    with pytest.raises(TileDecodeError, match="IHDR"):
        decode_tile(real[:8] + b"\0\0\0\x0dIHDX" + real[16:], "t")


def test_cli_patch_with_a_bomb_tile_is_one_line_not_a_traceback(tmp_path):
    import subprocess
    import sys

    from hostile_images import png_declaring

    tiles = {k: encode(coloured(*k)) for k in BLOCK}
    tiles[(15, 5252, 11445)] = png_declaring(100000, 100000)
    path = write_mbtiles(tmp_path / "b.mbtiles", tiles, {"name": "b", "format": "png"})
    lat, lon = _centre_of(15, 5252, 11445)
    base = [
        sys.executable,
        "-m",
        "xview_testbed.cli",
        "tiles",
        "patch",
        "--source",
        f"mbtiles:{path}",
        "--lat",
        str(lat),
        "--lon",
        str(lon),
        "--size",
        "128",
        "--mpp",
        "2",
        "--zoom",
        "15",
    ]
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    hole = subprocess.run(
        base + ["--allow-missing", "--out", str(tmp_path / "p.png")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert hole.returncode == 0 and "Traceback" not in hole.stderr, hole.stderr
    assert json.loads((tmp_path / "p.json").read_text())["missing_fraction"] > 0.2
    strict = subprocess.run(
        base + ["--out", str(tmp_path / "q.png")], capture_output=True, text=True, timeout=120, env=env
    )
    assert strict.returncode != 0 and "Traceback" not in strict.stderr
    assert "15/5252/11445" in strict.stderr and "100000x100000" in strict.stderr, strict.stderr


def test_pmtiles_bomb_and_damaged_directory_are_tile_errors(tmp_path):
    from hostile_images import jpeg_declaring
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import write

    tiles = {k: encode(coloured(*k)) for k in BLOCK}
    tiles[(15, 5252, 11445)] = jpeg_declaring(20000, 20000)
    path = tmp_path / "b.pmtiles"
    with write(str(path)) as w:
        for k, d in sorted(tiles.items(), key=lambda kv: zxy_to_tileid(*kv[0])):
            w.write_tile(zxy_to_tileid(*k), d)
        w.finalize(
            {
                "tile_type": TileType.PNG,
                "tile_compression": Compression.NONE,
                "min_lon_e7": 0,
                "min_lat_e7": 0,
                "max_lon_e7": 0,
                "max_lat_e7": 0,
                "center_zoom": 15,
                "center_lon_e7": 0,
                "center_lat_e7": 0,
            },
            {"name": "b"},
        )
    with open_tile_source(f"pmtiles:{path}") as s:
        with pytest.raises(TileDecodeError, match="20000x20000"):
            s.get_tile(15, 5252, 11445)
    data = bytearray(path.read_bytes())
    data[127:1024] = b"\xff" * (1024 - 127)  # the root directory (after the 127-byte header) overwritten
    path.write_bytes(bytes(data))
    with open_tile_source(f"pmtiles:{path}") as s:
        with pytest.raises(TileDecodeError, match="pmtiles"):
            s.get_tile(15, 5251, 11444)
