# SPDX-License-Identifier: Apache-2.0
"""Public cross-view data sets as pair data sets: VIGOR (panoramas) and KITTI with the aerial maps
of Shi & Li ("HighlyAccurate"). Both importers write the project's data-set format
(``dataset.json`` + ``index.jsonl``), so training, the benchmark and adaptation run on them unchanged.

VIGOR: the index points at the original panoramas (relative paths); aerial images are referenced
in place at 640 px or written resized (CCVPE's 512 px). Layout::

    ROOT/<City>/panorama/<id>,<lat>,<lon>,.jpg     ROOT/<City>/satellite/satellite_<lat>_<lon>.png
    ROOT/splits_new/<City>/{same_area_balanced_train,same_area_balanced_test,pano_label_balanced}.txt

``splits_new`` holds the corrected labels of SliceMatch (files with a ``__corrected`` suffix are
accepted too). A label line is ``<pano> <sat> <d_row> <d_col>`` followed by three semi-positive
``<sat> <d_row> <d_col>`` triples; the offsets are pixels of the 640-px aerial image and the
panorama lies at row 320 + d_row, column 320 - d_col. Only the positive aerial is used. Panoramas
are north-aligned: the centre column looks north (heading 0). Same-area: train/test files of all
four cities; cross-area: NewYork + Seattle train, SanFrancisco + Chicago test.

KITTI: file lists ``train_files.txt``, ``test1_files.txt`` (same area), ``test2_files.txt``
(cross area), lines ``<date>/<drive>_sync/<frame>.png`` (test lines add ``shift_x shift_y theta``
in [-1, 1]). Ground: ``ROOT/raw_data/<date>/<drive>_sync/image_02/data/<frame>.png``; GPS and yaw
from ``oxts/data/<frame>.txt``; aerial: ``ROOT/satmap/<date>/<drive>_sync/<frame>.png``, north-up,
centred on the GPS at 0.1958 m/px. The camera sits 1.08 m ahead of and 0.26 m right of the GPS (the
HighlyAccurate loader's offset). A camera at the centre of every patch would teach a centre bias,
so the importer cuts north-up ``crop_px`` patches whose centre is displaced from the camera by
(shift_x, shift_y) x 20 m (forward, left in the vehicle frame): the test lists' values, seeded
uniform draws for training. Crops are written as PNG; the ground images stay where they are.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from offline_adapt.data.dataset import DatasetMeta, DatasetWriter, PairRecord, write_rgb
from xview_loc_ros.geo import LocalENU, PatchGeoref, enu_yaw_to_compass

VIGOR_CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
#: Metres per pixel of the raw 640-px VIGOR aerial images, per city (evaluation values of the
#: corrected-label papers; original VIGOR code used 0.114 everywhere).
VIGOR_MPP = {"NewYork": 0.113248, "Seattle": 0.100817, "SanFrancisco": 0.118141, "Chicago": 0.111262}
VIGOR_AERIAL_PX = 640
VIGOR_CROSS_AREA = {"train": ("NewYork", "Seattle"), "test": ("SanFrancisco", "Chicago")}

#: Shi & Li satellite maps: Google zoom 18 at scale 2, at KITTI's latitude 49.015 deg.
KITTI_MPP = 156543.03392 * math.cos(math.radians(49.015)) / 2**18 / 2
KITTI_CAMERA_FROM_GPS_M = (1.08, 0.26)  # forward, right (HighlyAccurate CameraGPS_shift_left)
KITTI_SHIFT_RANGE_M = 20.0
KITTI_LISTS = {"train": "train_files.txt", "same-area": "test1_files.txt", "cross-area": "test2_files.txt"}
PROTOCOLS = ("same-area", "cross-area")


class PublicDatasetError(ValueError):
    """A public data set folder does not follow the documented layout (the message says where)."""


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise PublicDatasetError(f"{path}: missing {what}")
    return path


# ---------------------------------------------------------------------------------------------
# VIGOR
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VigorLabel:
    city: str
    pano: str
    sat: str
    d_row: float
    d_col: float
    semi_positives: Tuple[Tuple[str, float, float], ...]


def _label_file(root: Path, labels: str, city: str, name: str) -> Path:
    folder = _need(
        root / labels / city, f"VIGOR label folder for {city} (the corrected labels of SliceMatch go to {labels}/)"
    )
    for cand in (folder / f"{name}.txt", folder / f"{name}__corrected.txt"):
        if cand.is_file():
            return cand
    raise PublicDatasetError(f"{folder}: missing {name}.txt (or {name}__corrected.txt)")


def read_vigor_labels(path: Path, city: str) -> List[VigorLabel]:
    """Parse a VIGOR label file (13 tokens a line)."""
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 13:
            raise PublicDatasetError(
                f"{path}:{lineno}: expected 13 tokens (pano, 4 x (aerial, d_row, d_col)), got {len(tok)}"
            )
        try:
            trip = [(tok[i], float(tok[i + 1]), float(tok[i + 2])) for i in range(1, 13, 3)]
        except ValueError:
            raise PublicDatasetError(f"{path}:{lineno}: offsets must be numbers: {line.strip()!r}") from None
        out.append(VigorLabel(city, tok[0], trip[0][0], trip[0][1], trip[0][2], tuple(trip[1:])))
    return out


_SAT_RE = re.compile(r"^satellite_(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)\.png$")


def vigor_sat_center(name: str) -> Tuple[float, float]:
    """(lat, lon) degrees of a VIGOR aerial image from its file name ``satellite_<lat>_<lon>.png``."""
    m = _SAT_RE.match(name)
    if not m:
        raise PublicDatasetError(f"VIGOR aerial file name {name!r} is not satellite_<lat>_<lon>.png")
    return float(m.group(1)), float(m.group(2))


def vigor_labels(root: Path, protocol: str, part: str, labels: str = "splits_new") -> List[VigorLabel]:
    """Labels of one part ('train' or 'test') of a VIGOR protocol ('same-area' or 'cross-area')."""
    if protocol not in PROTOCOLS or part not in ("train", "test"):
        raise PublicDatasetError(
            f"VIGOR: protocol must be one of {PROTOCOLS} and part train/test, got {protocol!r}/{part!r}"
        )
    cities: Tuple[str, ...]
    if protocol == "same-area":
        cities, name = VIGOR_CITIES, f"same_area_balanced_{part}"
    else:
        cities, name = VIGOR_CROSS_AREA[part], "pano_label_balanced"
    out: List[VigorLabel] = []
    for city in cities:
        out.extend(read_vigor_labels(_label_file(root, labels, city, name), city))
    return out


def vigor_record(root: Path, out: Path, lab: VigorLabel, split: str, protocol: str) -> PairRecord:
    """The pair of one label: ground/aerial paths relative to the data set ``out``, true position from the offsets."""
    pano = root / lab.city / "panorama" / lab.pano
    sat = root / lab.city / "satellite" / lab.sat
    lat, lon = vigor_sat_center(lab.sat)
    mpp = VIGOR_MPP[lab.city]
    georef = PatchGeoref(lat, lon, mpp, VIGOR_AERIAL_PX)
    c = VIGOR_AERIAL_PX / 2.0
    gt_lat, gt_lon = georef.pixel_to_latlon(c - lab.d_col, c + lab.d_row)
    return PairRecord(
        id=f"{lab.city}/{Path(lab.pano).stem}",
        ground=os.path.relpath(pano, out),
        aerial=os.path.relpath(sat, out),
        center_lat=lat,
        center_lon=lon,
        mpp=mpp,
        size_px=VIGOR_AERIAL_PX,
        heading_deg=0.0,
        heading_source="dataset",
        gt_lat=float(gt_lat),
        gt_lon=float(gt_lon),
        source=f"vigor:{protocol}",
        split=split,
        extra={
            "city": lab.city,
            "d_row": lab.d_row,
            "d_col": lab.d_col,
            "semi_positives": [list(s) for s in lab.semi_positives],
        },
    )


def import_vigor(
    root: str | Path,
    out: str | Path,
    protocol: str = "cross-area",
    labels: str = "splits_new",
    target_split: Optional[Tuple[float, float, float]] = None,
    seed: int = 0,
    limit: Optional[int] = None,
    overwrite: bool = False,
    aerial_size: int = VIGOR_AERIAL_PX,
) -> Path:
    """Write the VIGOR ``protocol`` as a pair data set at ``out``; panoramas stay in ``root``.

    Without ``target_split``: train part -> "train", test part -> "test". With it (e.g. 0.7, 0.1,
    0.2): only the test part (the target area) is written, shuffled with ``seed`` into
    train/val/test, as in the adaptation protocol (unlabeled training on 70 % of the test indices).
    ``aerial_size`` 640 references the aerial images in place; any other size (CCVPE: 512) writes
    resized copies, each pair's m/px scaled by 640/size (the CCVPE resize, kept metric per city).
    The data set's nominal ``mpp`` is the median over its pairs; every pair carries its own.
    """
    root, out = Path(root), Path(out)
    _need(root, "VIGOR root folder")
    parts = {"test": vigor_labels(root, protocol, "test", labels)}
    if target_split is None:
        parts["train"] = vigor_labels(root, protocol, "train", labels)
    items = [(lab, split) for split in ("train", "test") for lab in parts.get(split, [])]
    if target_split is not None:
        items = list(zip([lab for lab, _ in items], _random_splits(len(items), target_split, seed)))
    if limit:
        items = items[:limit]
    if not items:
        raise PublicDatasetError(f"{root}: VIGOR {protocol} lists no pairs")
    if int(aerial_size) < 1:
        raise PublicDatasetError(f"VIGOR aerial size must be >= 1 px, got {aerial_size!r}")
    first = root / items[0][0].city / "panorama" / items[0][0].pano
    h, w = _image_size(first)
    scale = VIGOR_AERIAL_PX / int(aerial_size)
    meta = DatasetMeta(
        ground_type="panorama",
        ground_size=[h, w],
        fov_deg=360.0,
        patch_size_px=int(aerial_size),
        mpp=float(np.median([VIGOR_MPP[lab.city] for lab, _ in items])) * scale,
        name=f"vigor-{protocol}",
        source=str(root),
        extra={
            "protocol": protocol,
            "labels": labels,
            "mpp_per_city_640px": VIGOR_MPP,
            "target_split": list(target_split) if target_split else None,
            "seed": seed,
        },
    )
    with DatasetWriter(out, meta, overwrite=overwrite) as writer:
        for lab, split in items:
            rec = vigor_record(root, out, lab, split, protocol)
            _need(writer.tmp / rec.ground, "VIGOR panorama")
            _need(writer.tmp / rec.aerial, "VIGOR aerial image")
            if int(aerial_size) != VIGOR_AERIAL_PX:
                rel = f"aerial/{lab.city}/{Path(lab.sat).stem}.png"
                if not (writer.tmp / rel).is_file():  # aerial images are shared by several panoramas
                    img = cv2.imread(str(writer.tmp / rec.aerial), cv2.IMREAD_COLOR)
                    if img is None or img.shape[:2] != (VIGOR_AERIAL_PX, VIGOR_AERIAL_PX):
                        raise PublicDatasetError(
                            f"{rec.aerial}: not a {VIGOR_AERIAL_PX}x{VIGOR_AERIAL_PX} VIGOR aerial image"
                        )
                    small = cv2.resize(img, (int(aerial_size),) * 2, interpolation=cv2.INTER_AREA)
                    write_rgb(writer.path(rel), cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
                rec.aerial, rec.size_px, rec.mpp = rel, int(aerial_size), rec.mpp * scale
            writer.add(rec)
    return out


def _random_splits(n: int, fractions: Tuple[float, float, float], seed: int) -> List[str]:
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    names = np.empty(n, dtype=object)
    names[order[:n_train]] = "train"
    names[order[n_train : n_train + n_val]] = "val"
    names[order[n_train + n_val :]] = "test"
    return list(names)


def _image_size(path: Path) -> Tuple[int, int]:
    img = cv2.imread(str(_need(path, "image")), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise PublicDatasetError(f"{path}: not a decodable image")
    return int(img.shape[0]), int(img.shape[1])


# ---------------------------------------------------------------------------------------------
# KITTI
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KittiItem:
    rel: str  # <date>/<drive>_sync/<frame>.png
    shift: Optional[Tuple[float, float]]  # (forward, left) in [-1, 1]; None = draw at random

    @property
    def date(self) -> str:
        return self.rel.split("/")[0]

    @property
    def drive(self) -> str:
        return self.rel.split("/")[1]

    @property
    def frame(self) -> str:
        return self.rel.split("/")[-1]


def read_kitti_list(path: Path) -> List[KittiItem]:
    out = []
    for lineno, line in enumerate(_need(path, "KITTI file list").read_text().splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) not in (1, 4) or tok[0].count("/") != 2:
            raise PublicDatasetError(
                f"{path}:{lineno}: expected '<date>/<drive>_sync/<frame>.png [shift_x shift_y theta]'"
            )
        shift = None
        if len(tok) == 4:
            try:
                shift = (float(tok[1]), float(tok[2]))
            except ValueError:
                raise PublicDatasetError(f"{path}:{lineno}: shifts must be numbers") from None
        out.append(KittiItem(tok[0], shift))
    return out


def read_oxts(path: Path) -> Tuple[float, float, float]:
    """(lat deg, lon deg, yaw rad; ENU: 0 = east, counter-clockwise) from a KITTI oxts line."""
    tok = _need(path, "KITTI oxts file").read_text().split()
    if len(tok) < 6:
        raise PublicDatasetError(f"{path}: an oxts line has 30 numbers, got {len(tok)}")
    return float(tok[0]), float(tok[1]), float(tok[5])


def read_kitti_intrinsics(calib: Path) -> List[float]:
    """(fx, fy, cx, cy) of the rectified left colour camera (P_rect_02 of calib_cam_to_cam.txt)."""
    for line in _need(calib, "KITTI calibration").read_text().splitlines():
        if line.startswith("P_rect_02:"):
            p = [float(v) for v in line.split()[1:]]
            return [p[0], p[5], p[2], p[6]]
    raise PublicDatasetError(f"{calib}: no P_rect_02 line")


def kitti_pair(
    root: Path, item: KittiItem, crop_px: int, shift: Tuple[float, float]
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """North-up crop of the item's satmap centred ``shift`` x 20 m (forward, left) from the camera, and the pair's geometry."""
    base = root / "raw_data" / item.date / item.drive
    lat, lon, yaw = read_oxts(base / "oxts" / "data" / (Path(item.frame).stem + ".txt"))
    sat_path = _need(root / "satmap" / item.rel, "KITTI satellite map")
    sat = cv2.imread(str(sat_path), cv2.IMREAD_COLOR)
    if sat is None:
        raise PublicDatasetError(f"{sat_path}: not a decodable image")
    fwd = np.array([math.cos(yaw), math.sin(yaw)])
    left = np.array([-math.sin(yaw), math.cos(yaw)])
    cam = KITTI_CAMERA_FROM_GPS_M[0] * fwd - KITTI_CAMERA_FROM_GPS_M[1] * left  # ENU metres from the GPS
    centre = cam + KITTI_SHIFT_RANGE_M * (shift[0] * fwd + shift[1] * left)
    h, w = sat.shape[:2]
    # Continuous satmap pixel of the crop centre; getRectSubPix counts from pixel centres (-0.5).
    cu, cv = w / 2.0 + centre[0] / KITTI_MPP, h / 2.0 - centre[1] / KITTI_MPP
    half = crop_px / 2.0
    if cu - half < 0 or cv - half < 0 or cu + half > w or cv + half > h:
        raise PublicDatasetError(
            f"{sat_path}: a {crop_px}-px crop {centre.round(1).tolist()} m from the GPS leaves the "
            f"{w}x{h} map; use a smaller --crop"
        )
    crop = cv2.getRectSubPix(sat, (crop_px, crop_px), (cu - 0.5, cv - 0.5))
    frame = LocalENU(lat, lon)
    c_lat, c_lon, _ = frame.to_latlon(centre[0], centre[1], 0.0)
    g_lat, g_lon, _ = frame.to_latlon(cam[0], cam[1], 0.0)
    geo = {
        "center_lat": float(c_lat),
        "center_lon": float(c_lon),
        "gt_lat": float(g_lat),
        "gt_lon": float(g_lon),
        "heading_deg": float(enu_yaw_to_compass(yaw)),
        "gps_lat": lat,
        "gps_lon": lon,
    }
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), geo


def import_kitti(
    root: str | Path,
    out: str | Path,
    protocol: str = "cross-area",
    lists: Optional[str | Path] = None,
    crop_px: int = 512,
    target_split: Optional[Tuple[float, float, float]] = None,
    seed: int = 0,
    limit: Optional[int] = None,
    overwrite: bool = False,
) -> Path:
    """Write KITTI (Shi & Li aerial maps) as a pair data set: train list -> "train", the protocol's
    test list (test1 same-area, test2 cross-area) -> "test"; with ``target_split`` only the test
    list, shuffled with ``seed`` into train/val/test. Ground images are referenced in place."""
    root, out = Path(root), Path(out)
    _need(root, "KITTI root folder")
    if protocol not in PROTOCOLS:
        raise PublicDatasetError(f"KITTI protocol must be one of {PROTOCOLS}, got {protocol!r}")
    list_dir = Path(lists) if lists else root
    items: List[Tuple[KittiItem, str]] = [(it, "test") for it in read_kitti_list(list_dir / KITTI_LISTS[protocol])]
    if target_split is None:
        items = [(it, "train") for it in read_kitti_list(list_dir / KITTI_LISTS["train"])] + items
    else:
        items = list(zip([it for it, _ in items], _random_splits(len(items), target_split, seed)))
    if limit:
        items = items[:limit]
    if not items:
        raise PublicDatasetError(f"{list_dir}: KITTI {protocol} lists no pairs")
    rng = np.random.default_rng(seed)
    first = items[0][0]
    ground0 = root / "raw_data" / first.date / first.drive / "image_02" / "data" / first.frame
    h, w = _image_size(ground0)
    intrinsics: Dict[str, List[float]] = {}

    def intr(date: str) -> List[float]:
        if date not in intrinsics:
            intrinsics[date] = read_kitti_intrinsics(root / "raw_data" / date / "calib_cam_to_cam.txt")
        return intrinsics[date]

    k0 = intr(first.date)
    meta = DatasetMeta(
        ground_type="pinhole",
        ground_size=[h, w],
        fov_deg=math.degrees(2 * math.atan(w / 2 / k0[0])),
        patch_size_px=crop_px,
        mpp=KITTI_MPP,
        name=f"kitti-{protocol}",
        source=str(root),
        intrinsics=k0,
        extra={
            "protocol": protocol,
            "target_split": list(target_split) if target_split else None,
            "seed": seed,
            "shift_range_m": KITTI_SHIFT_RANGE_M,
        },
    )
    with DatasetWriter(out, meta, overwrite=overwrite) as writer:
        for it, split in items:
            shift = it.shift if it.shift is not None else tuple(rng.uniform(-1.0, 1.0, 2))
            crop, geo = kitti_pair(root, it, crop_px, shift)
            pid = it.rel[:-4] if it.rel.endswith(".png") else it.rel
            aerial_rel = f"aerial/{pid}.png"
            write_rgb(writer.path(aerial_rel), crop)
            ground = _need(root / "raw_data" / it.date / it.drive / "image_02" / "data" / it.frame, "KITTI image")
            writer.add(
                PairRecord(
                    id=pid,
                    ground=os.path.relpath(ground, out),
                    aerial=aerial_rel,
                    center_lat=geo["center_lat"],
                    center_lon=geo["center_lon"],
                    mpp=KITTI_MPP,
                    size_px=crop_px,
                    heading_deg=geo["heading_deg"],
                    heading_source="dataset",
                    gt_lat=geo["gt_lat"],
                    gt_lon=geo["gt_lon"],
                    source=f"kitti:{protocol}",
                    split=split,
                    extra={
                        "shift": [float(shift[0]), float(shift[1])],
                        "intrinsics": intr(it.date),
                        "gps": [geo["gps_lat"], geo["gps_lon"]],
                    },
                )
            )
    return out
