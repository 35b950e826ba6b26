# SPDX-License-Identifier: Apache-2.0
"""VIGOR and KITTI importers on tiny fixture trees built here following the documented layouts."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from offline_adapt.cli import main as adapt_main
from offline_adapt.data.dataset import PairDataset
from offline_adapt.data.public_datasets import (
    KITTI_MPP,
    VIGOR_CITIES,
    VIGOR_MPP,
    PublicDatasetError,
    import_kitti,
    import_vigor,
    read_vigor_labels,
    vigor_sat_center,
)
from xview_loc_ros.geo import LocalENU

CITY_LATLON = {
    "NewYork": (40.7128, -74.0060),
    "Seattle": (47.6062, -122.3321),
    "SanFrancisco": (37.7749, -122.4194),
    "Chicago": (41.8781, -87.6298),
}


def _img(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# VIGOR
# ---------------------------------------------------------------------------------------------
def make_vigor(root: Path, per_file: int = 3) -> dict:
    """Per city: ``per_file`` labels in each of the three label files (corrected-label folder
    ``splits_new``), panoramas placed at known offsets inside their positive aerial image."""
    truth = {}
    for ci, city in enumerate(VIGOR_CITIES):
        lat0, lon0 = CITY_LATLON[city]
        for fname in ("same_area_balanced_train", "same_area_balanced_test", "pano_label_balanced"):
            lines = []
            for k in range(per_file):
                sat_lat, sat_lon = lat0 + 0.001 * k, lon0 + 0.0005 * len(fname)
                sat = f"satellite_{sat_lat:.7f}_{sat_lon:.7f}.png"
                # Panorama 20 m east, 10 m south of the aerial centre -> col 320 + 20/mpp, row 320 + 10/mpp.
                east, north = 20.0 - 3 * k, -10.0 + 2 * k
                d_row, d_col = -north / VIGOR_MPP[city], -east / VIGOR_MPP[city]
                p_lat, p_lon, _ = LocalENU(sat_lat, sat_lon).to_latlon(east, north, 0.0)
                pano = f"{ci}{k}{fname[:4]},{float(p_lat):.6f},{float(p_lon):.6f},.jpg"
                truth[f"{city}/{Path(pano).stem}"] = (float(p_lat), float(p_lon))
                semis = " ".join(f"satellite_{sat_lat + 0.0001 * j:.7f}_{sat_lon:.7f}.png 1.0 2.0" for j in (1, 2, 3))
                lines.append(f"{pano} {sat} {d_row:.4f} {d_col:.4f} {semis}")
                _img(root / city / "panorama" / pano, 16, 32, ci * 10 + k)
                _img(root / city / "satellite" / sat, 640, 640, ci * 10 + k + 1)
            lab = root / "splits_new" / city / f"{fname}.txt"
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text("\n".join(lines) + "\n")
    return truth


@pytest.fixture(scope="module")
def vigor(tmp_path_factory):
    root = tmp_path_factory.mktemp("vigor")
    return root, make_vigor(root)


def test_vigor_label_and_name_parsing(vigor):
    root, _ = vigor
    labs = read_vigor_labels(root / "splits_new" / "Chicago" / "pano_label_balanced.txt", "Chicago")
    assert len(labs) == 3 and labs[0].sat.startswith("satellite_") and len(labs[0].semi_positives) == 3
    assert vigor_sat_center("satellite_40.7128000_-74.0060000.png") == (40.7128, -74.006)
    bad = root / "bad.txt"
    bad.write_text("a.jpg sat.png 1 2\n")
    with pytest.raises(PublicDatasetError, match="bad.txt:1: expected 13 tokens"):
        read_vigor_labels(bad, "Chicago")


@pytest.mark.parametrize(
    "protocol,train_cities,test_cities",
    [
        ("same-area", set(VIGOR_CITIES), set(VIGOR_CITIES)),
        ("cross-area", {"NewYork", "Seattle"}, {"SanFrancisco", "Chicago"}),
    ],
)
def test_vigor_protocols(vigor, tmp_path, protocol, train_cities, test_cities):
    root, truth = vigor
    out = import_vigor(root, tmp_path / "ds", protocol)
    ds = PairDataset(out)
    by = {s: {r.extra["city"] for r in ds.split(s)} for s in ("train", "test")}
    assert by == {"train": train_cities, "test": test_cities}
    assert len(ds) == 3 * (len(train_cities) + len(test_cities))
    assert ds.meta.ground_type == "panorama" and ds.meta.patch_size_px == 640 and ds.meta.ground_size == [16, 32]
    for rec in ds.pairs:
        assert rec.mpp == VIGOR_MPP[rec.extra["city"]] and rec.heading_deg == 0.0
        # True position from the (corrected) offsets = where the panorama really is.
        lat, lon = truth[rec.id]
        e, n, _ = LocalENU(lat, lon).to_enu(rec.gt_lat, rec.gt_lon, 0.0)
        assert math.hypot(float(e), float(n)) < 0.05
        u, v = rec.gt_pixel()
        assert 320 < u < 640 and 320 < v < 640  # east and south of the centre
        assert ds.load_ground(rec).shape == (16, 32, 3) and ds.load_aerial(rec).shape == (640, 640, 3)


def test_vigor_target_split_and_moved_folder(vigor, tmp_path):
    root, _ = vigor
    out = import_vigor(root, tmp_path / "ds", "cross-area", target_split=(0.7, 0.1, 0.2), seed=3)
    ds = PairDataset(out)
    assert {r.extra["city"] for r in ds.pairs} == {"SanFrancisco", "Chicago"}  # only the target area
    counts = {s: len(ds.split(s)) for s in ("train", "val", "test")}
    assert counts == {"train": 4, "val": 1, "test": 1}
    again = PairDataset(import_vigor(root, tmp_path / "ds2", "cross-area", target_split=(0.7, 0.1, 0.2), seed=3))
    assert [r.split for r in again.pairs] == [r.split for r in ds.pairs]


def test_vigor_resized_for_ccvpe(vigor, tmp_path, capsys):
    root, truth = vigor
    rc = adapt_main(["import-vigor", "--root", str(root), "--out", str(tmp_path / "ds"), "--protocol", "cross-area"])
    assert rc == 0
    ds, raw = PairDataset(tmp_path / "ds"), PairDataset(import_vigor(root, tmp_path / "raw", "cross-area"))
    assert ds.meta.patch_size_px == 512 and len(ds) == len(raw) == 12
    assert ds.meta.mpp == pytest.approx(
        1.25 * np.median([VIGOR_MPP[c] for c in ("NewYork", "Seattle", "SanFrancisco", "Chicago")])
    )
    raw_by_id = {r.id: r for r in raw.pairs}
    for rec in ds.pairs:
        r640 = raw_by_id[rec.id]
        assert rec.mpp == pytest.approx(VIGOR_MPP[rec.extra["city"]] * 1.25) and rec.size_px == 512
        assert (rec.gt_lat, rec.gt_lon) == (r640.gt_lat, r640.gt_lon)
        u, v = rec.gt_pixel()
        u0, v0 = r640.gt_pixel()
        assert (u, v) == pytest.approx((u0 * 0.8, v0 * 0.8), abs=1e-3)
        big = cv2.resize(ds.load_aerial(rec), (640, 640), interpolation=cv2.INTER_LINEAR).astype(float)
        assert np.corrcoef(big.ravel(), raw.load_aerial(r640).astype(float).ravel())[0, 1] > 0.3  # same image content
    assert len(list((tmp_path / "ds" / "aerial").rglob("*.png"))) == len({r.aerial for r in ds.pairs})


def test_vigor_layout_errors(tmp_path):
    (tmp_path / "NewYork").mkdir()
    with pytest.raises(PublicDatasetError, match="splits_new"):
        import_vigor(tmp_path, tmp_path / "ds", "cross-area")
    root = tmp_path / "v"
    make_vigor(root, per_file=1)
    for f in (root / "Chicago" / "panorama").iterdir():
        f.unlink()
    with pytest.raises(PublicDatasetError, match="missing VIGOR panorama"):
        import_vigor(root, tmp_path / "ds", "cross-area")
    assert not (tmp_path / "ds").exists()


def test_vigor_corrected_suffix_accepted(tmp_path):
    root = tmp_path / "v"
    make_vigor(root, per_file=1)
    for f in (root / "splits_new").glob("*/*.txt"):
        f.rename(f.with_name(f.stem + "__corrected.txt"))
    assert len(PairDataset(import_vigor(root, tmp_path / "ds", "same-area"))) == 8


# ---------------------------------------------------------------------------------------------
# KITTI
# ---------------------------------------------------------------------------------------------
DRIVES = {"2011_09_26/2011_09_26_drive_0001_sync": 2, "2011_09_29/2011_09_29_drive_0071_sync": 2}


def make_kitti(root: Path) -> None:
    """Two drives; each frame's satmap is a 1280-px map with a Gaussian dot on the camera position."""
    calib = "P_rect_02: 721.5377 0 609.5593 44.85728 0 721.5377 172.854 0.2163791 0 0 1 0.002745884\n"
    lines = {"train": [], "test2": [], "test1": []}
    for di, (drive, n) in enumerate(DRIVES.items()):
        date = drive.split("/")[0]
        (root / "raw_data" / date).mkdir(parents=True, exist_ok=True)
        (root / "raw_data" / date / "calib_cam_to_cam.txt").write_text("calib_time: x\n" + calib)
        for k in range(n):
            frame = f"{k:010d}"
            lat, lon, yaw = 49.0 + 0.001 * di, 8.4 + 0.001 * k, 0.3 + 1.2 * k + di
            oxts = root / "raw_data" / drive / "oxts" / "data" / f"{frame}.txt"
            oxts.parent.mkdir(parents=True, exist_ok=True)
            oxts.write_text(" ".join(str(v) for v in [lat, lon, 110.0, 0.01, 0.02, yaw] + [0.0] * 24) + "\n")
            _img(root / "raw_data" / drive / "image_02" / "data" / f"{frame}.png", 10, 33, k)
            sat = np.zeros((1280, 1280, 3), np.uint8)
            fwd, left = np.array([math.cos(yaw), math.sin(yaw)]), np.array([-math.sin(yaw), math.cos(yaw)])
            cam = 1.08 * fwd - 0.26 * left
            u, v = 640 + cam[0] / KITTI_MPP, 640 - cam[1] / KITTI_MPP
            yy, xx = np.mgrid[0:1280, 0:1280] + 0.5  # pixel centres, continuous coordinates
            sat[:] = (250 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 3.0**2)))[:, :, None].astype(np.uint8)
            p = root / "satmap" / drive / f"{frame}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), sat)
            rel = f"{drive}/{frame}.png"
            if di == 0:
                lines["train"].append(rel)
                lines["test1"].append(f"{rel} 0.1 -0.2 0.5")
            else:
                lines["test2"].append(f"{rel} {0.5 - k:.2f} 0.25 -0.3")
    for name, ls in lines.items():
        (root / f"{name}_files.txt").write_text("\n".join(ls) + "\n")


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    make_kitti(root)
    return root


def _bright_centroid(img: np.ndarray) -> tuple:
    w = img[:, :, 0].astype(float)
    ys, xs = np.mgrid[0 : w.shape[0], 0 : w.shape[1]] + 0.5  # continuous pixel coordinates
    return (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()


def test_kitti_cross_area(kitti, tmp_path):
    ds = PairDataset(import_kitti(kitti, tmp_path / "ds", "cross-area", crop_px=256))
    assert {s: len(ds.split(s)) for s in ("train", "val", "test")} == {"train": 2, "val": 0, "test": 2}
    assert ds.meta.ground_type == "pinhole" and ds.meta.intrinsics == pytest.approx(
        [721.5377, 721.5377, 609.5593, 172.854]
    )
    assert ds.meta.fov_deg == pytest.approx(math.degrees(2 * math.atan(16.5 / 721.5377)))
    assert ds.meta.mpp == pytest.approx(0.19583, abs=1e-4)
    for rec in ds.pairs:
        assert rec.size_px == 256 and rec.heading_source == "dataset"
        # The camera dot in the crop is exactly where the record's true position maps.
        u, v = rec.gt_pixel()
        cu, cv = _bright_centroid(ds.load_aerial(rec))
        assert abs(cu - u) < 0.1 and abs(cv - v) < 0.1, (rec.id, (u, v), (cu, cv))
        # ... displaced from the patch centre by the listed shift x 20 m (or a random one for training).
        sx, sy = rec.extra["shift"]
        assert math.hypot(u - 128, v - 128) * KITTI_MPP == pytest.approx(20 * math.hypot(sx, sy), abs=0.1)
        assert ds.load_ground(rec).shape == (10, 33, 3)
    test = sorted(ds.split("test"), key=lambda r: r.id)
    assert [r.extra["shift"] for r in test] == [[0.5, 0.25], [-0.5, 0.25]]
    oxts_yaw = 0.3 + 1.2 * 1 + 1
    assert test[1].heading_deg == pytest.approx((90 - math.degrees(oxts_yaw)) % 360)


def test_kitti_same_area_target_split_and_cli(kitti, tmp_path, capsys):
    rc = adapt_main(
        [
            "import-kitti",
            "--root",
            str(kitti),
            "--out",
            str(tmp_path / "ds"),
            "--protocol",
            "same-area",
            "--crop",
            "128",
            "--target-split",
            "50,0,50",
        ]
    )
    assert rc == 0 and "KITTI same-area" in capsys.readouterr().out
    ds = PairDataset(tmp_path / "ds")
    assert sorted(r.split for r in ds.pairs) == ["test", "train"]
    assert all("2011_09_26" in r.id for r in ds.pairs)
    rc = adapt_main(["import-kitti", "--root", str(kitti), "--out", str(tmp_path / "big"), "--crop", "1400"])
    err = capsys.readouterr().err
    assert rc == 2 and "leaves the 1280x1280 map" in err and not (tmp_path / "big").exists()


def test_kitti_bad_list_line(kitti, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_files.txt").write_text("not-a-path\n")
    (lists / "test2_files.txt").write_text("")
    with pytest.raises(PublicDatasetError, match="train_files.txt:1"):
        import_kitti(kitti, tmp_path / "ds", "cross-area", lists=lists)
