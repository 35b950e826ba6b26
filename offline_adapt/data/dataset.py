# SPDX-License-Identifier: Apache-2.0
"""The pair data-set format: the one module that reads and writes it.

A data set is a folder::

    DATASET/dataset.json   metadata (ground camera type, image sizes, FOV, patch size, m/px, ...)
    DATASET/index.jsonl    one JSON object per (ground image, aerial patch) pair
    DATASET/<files>        images, at the paths the index names (relative to DATASET)

Every offline step (training, pseudo labels, adaptation, evaluation) reads this; the synthetic
generator and the bag extractor write it. Writers build the folder under a temporary name and
rename it into place (:class:`DatasetWriter`), so a killed run never leaves a half-written set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

import cv2
import numpy as np

from xview_loc_ros.fsutil import OutputLock, atomic_path, atomic_write_json, replace_durably
from xview_loc_ros.geo import PatchGeoref

FORMAT_VERSION = 1
GROUND_TYPES = ("panorama", "pinhole")
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A data set on disk is missing, malformed or disagrees with what the caller needs."""


def dataset_fingerprint(data_dir: str | os.PathLike) -> str:
    """sha256 over the data set's dataset.json and index.jsonl (records and splits; not the images):
    what a run trained or adapted on, to refuse continuing it on another data set."""
    h = hashlib.sha256()
    for name in ("dataset.json", "index.jsonl"):
        p = Path(data_dir) / name
        if not p.is_file():
            raise DatasetError(f"{data_dir}: not a pair data set ({name} missing)")
        h.update(p.read_bytes())
    return h.hexdigest()


@dataclass
class DatasetMeta:
    """Metadata shared by all pairs of a data set.

    ``ground_size`` is (height, width) pixels of the stored ground images; ``fov_deg`` the
    horizontal field of view (360 for panoramas); ``patch_size_px``/``mpp`` the aerial patches
    (north-up, metres per pixel). ``intrinsics`` (fx, fy, cx, cy pixels) for pinhole cameras.
    """

    ground_type: str
    ground_size: List[int]
    fov_deg: float
    patch_size_px: int
    mpp: float
    name: str = ""
    source: str = ""
    intrinsics: Optional[List[float]] = None
    camera_height_m: Optional[float] = None
    camera_pitch_deg: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.ground_type not in GROUND_TYPES:
            raise DatasetError(f"dataset.json: ground_type must be one of {GROUND_TYPES}, got {self.ground_type!r}")
        if len(self.ground_size) != 2 or min(self.ground_size) <= 0:
            raise DatasetError(f"dataset.json: ground_size must be [height, width] > 0, got {self.ground_size!r}")
        if not (0 < float(self.fov_deg) <= 360):
            raise DatasetError(f"dataset.json: fov_deg must be in (0, 360], got {self.fov_deg!r}")
        if int(self.patch_size_px) <= 0 or not float(self.mpp) > 0:
            raise DatasetError(
                f"dataset.json: patch_size_px and mpp must be > 0, got {self.patch_size_px!r}, {self.mpp!r}"
            )
        self.ground_size = [int(x) for x in self.ground_size]
        self.patch_size_px = int(self.patch_size_px)
        self.mpp = float(self.mpp)
        self.fov_deg = float(self.fov_deg)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DatasetMeta":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        missing = {"ground_type", "ground_size", "fov_deg", "patch_size_px", "mpp"} - set(d)
        if missing:
            raise DatasetError(f"dataset.json: missing keys {sorted(missing)}")
        kw = {k: v for k, v in d.items() if k in known}
        if unknown:
            kw.setdefault("extra", {}).update({k: d[k] for k in unknown})
        return cls(**kw)


@dataclass
class PairRecord:
    """One (ground image, aerial patch) pair. Angles in degrees, positions WGS84 degrees, metres.

    ``heading_deg`` is the compass heading of the camera's forward direction (clockwise from
    north; None when unknown). ``center_*`` is the patch centre (the coarse position the patch was
    cut around); ``fix_*`` the coarse GNSS fix and its 1-sigma horizontal error in metres;
    ``fix_cov_en`` the fix's 2x2 east/north covariance in m^2 (NavSatFix position_covariance as
    :func:`xview_loc_ros.sensors.gnss_fix` reads it; None when unknown, and in data sets written
    before it was recorded); ``gt_*`` the true camera position (None when unknown: never used for
    training adaptation).
    """

    id: str
    ground: str
    aerial: str
    center_lat: float
    center_lon: float
    mpp: float
    size_px: int
    heading_deg: Optional[float] = None
    fix_lat: Optional[float] = None
    fix_lon: Optional[float] = None
    fix_std_m: Optional[float] = None
    fix_cov_en: Optional[List[List[float]]] = None
    gt_lat: Optional[float] = None
    gt_lon: Optional[float] = None
    stamp: Optional[float] = None
    source: str = ""
    split: str = "train"
    heading_source: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def georef(self) -> PatchGeoref:
        return PatchGeoref(self.center_lat, self.center_lon, self.mpp, self.size_px)

    @property
    def has_gt(self) -> bool:
        return self.gt_lat is not None and self.gt_lon is not None

    def gt_pixel(self) -> tuple[float, float]:
        """True camera position as continuous patch pixel (u, v); raises if there is no GT."""
        if self.gt_lat is None or self.gt_lon is None:
            raise DatasetError(f"pair {self.id!r} has no ground-truth position")
        u, v = self.georef.latlon_to_pixel(self.gt_lat, self.gt_lon)
        return float(u), float(v)

    def fix_pixel(self) -> tuple[float, float]:
        """The GNSS fix as continuous patch pixel (u, v); the patch centre when the pair has no fix
        (extracted patches are cut centred on the fix)."""
        if self.fix_lat is None or self.fix_lon is None:
            return self.size_px / 2.0, self.size_px / 2.0
        u, v = self.georef.latlon_to_pixel(self.fix_lat, self.fix_lon)
        return float(u), float(v)

    def fix_cov_en_or(self, default_std_m: float) -> np.ndarray:
        """The fix's 2x2 east/north covariance (m^2): ``fix_cov_en``, else ``fix_std_m``^2 isotropic,
        else ``default_std_m``^2 isotropic (pairs that record neither)."""
        if self.fix_cov_en is not None:
            return np.asarray(self.fix_cov_en, dtype=float)
        std = self.fix_std_m if self.fix_std_m is not None else default_std_m
        return np.eye(2) * float(std) ** 2

    def to_json(self) -> str:
        d = asdict(self)
        if not d["extra"]:
            del d["extra"]
        if d["fix_cov_en"] is None:  # absent rather than null: sets without it stay byte-identical to before
            del d["fix_cov_en"]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "") -> "PairRecord":
        known = {f.name for f in fields(cls)}
        missing = {"id", "ground", "aerial", "center_lat", "center_lon", "mpp", "size_px"} - set(d)
        if missing:
            raise DatasetError(f"{where}: pair is missing keys {sorted(missing)}")
        rec = cls(**{k: v for k, v in d.items() if k in known})
        if rec.split not in SPLITS:
            raise DatasetError(f"{where}: split must be one of {SPLITS}, got {rec.split!r}")
        if rec.fix_cov_en is not None:
            try:
                c = np.asarray(rec.fix_cov_en, dtype=float)
            except (TypeError, ValueError):
                c = np.zeros(0)
            if c.shape != (2, 2) or not np.all(np.isfinite(c)) or np.linalg.eigvalsh(0.5 * (c + c.T))[0] <= 0:
                raise DatasetError(
                    f"{where}: fix_cov_en must be a positive-definite 2x2 east/north covariance in m^2, "
                    f"got {rec.fix_cov_en!r}"
                )
        return rec


class PairDataset:
    """A data set on disk: metadata, pairs, and image loading (RGB uint8 arrays)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        index_path = self.root / "index.jsonl"
        if not meta_path.is_file() or not index_path.is_file():
            raise DatasetError(f"{self.root}: not a pair data set (needs dataset.json and index.jsonl)")
        try:
            self.meta = DatasetMeta.from_dict(json.loads(meta_path.read_text()))
        except UnicodeDecodeError as e:
            raise DatasetError(f"{meta_path}: not a data-set description (not UTF-8 text: byte {e.start})") from e
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta_path}: invalid JSON ({e})") from e
        self.pairs: List[PairRecord] = []
        with open(index_path, "rb") as f:  # decoded per line, so an error names its line
            for lineno, raw in enumerate(f, 1):
                where = f"{index_path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                    if line.strip():
                        self.pairs.append(PairRecord.from_dict(json.loads(line), where))
                except UnicodeDecodeError as e:
                    raise DatasetError(f"{where}: not a pair record (not UTF-8 text: byte {e.start})") from e
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{where}: invalid JSON ({e})") from e

    def __len__(self) -> int:
        return len(self.pairs)

    def split(self, name: Optional[str]) -> List[PairRecord]:
        """Pairs of one split (all pairs when ``name`` is None)."""
        if name is None:
            return list(self.pairs)
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [p for p in self.pairs if p.split == name]

    def load_ground(self, rec: PairRecord) -> np.ndarray:
        return read_rgb(self.root / rec.ground)

    def load_aerial(self, rec: PairRecord) -> np.ndarray:
        return read_rgb(self.root / rec.aerial)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB uint8 HxWx3 array; a clear error when it is missing or corrupt."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{path}: missing or not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | os.PathLike, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an RGB uint8 array (PNG or JPEG by extension)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if str(path).lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"{path}: could not write image")


class DatasetWriter:
    """Builds a data set in ``<out>.partial`` and renames it to ``out`` on :meth:`commit`.

    Use as a context manager: an exception leaves ``<out>.partial`` (resumable by the caller
    when ``resume=True``) and never a half-written ``out``. With ``resume=True`` an existing
    partial folder is kept and its pairs are reloaded, so a caller can skip ids already written.
    The writer holds the exclusive lock of ``out`` from construction to commit (or failure): a second
    writer raises :class:`~xview_loc_ros.fsutil.OutputLocked` before touching ``<out>.partial``.
    """

    def __init__(
        self, out: str | os.PathLike, meta: DatasetMeta, resume: bool = False, overwrite: bool = False
    ) -> None:
        self.out = Path(out)
        self.tmp = self.out.with_name(self.out.name + ".partial")
        self.meta = meta
        # Checked under the lock: a run that finished meanwhile must not be replaced without overwrite.
        self._lock = OutputLock(self.out, "data set").acquire()
        try:
            self._open(resume, overwrite)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool, overwrite: bool) -> None:
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} already exists (use overwrite to replace it)")
        self.records: List[PairRecord] = []
        if self.tmp.exists() and resume and (self.tmp / "index.jsonl").exists():
            with open(self.tmp / "index.jsonl") as f:
                for line in f:
                    try:
                        self.records.append(PairRecord.from_dict(json.loads(line), str(self.tmp)))
                    except (json.JSONDecodeError, DatasetError):
                        break  # a torn last line from a kill: drop it and everything after
        elif self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._index = open(self.tmp / "index.jsonl", "w")
        for r in self.records:
            self._index.write(r.to_json() + "\n")
        self._index.flush()

    @property
    def done_ids(self) -> set:
        return {r.id for r in self.records}

    def path(self, rel: str) -> Path:
        """Absolute path inside the data set being written (parent folders created)."""
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add(self, rec: PairRecord) -> None:
        for rel in (rec.ground, rec.aerial):
            if not (self.tmp / rel).is_file():
                raise DatasetError(f"pair {rec.id!r}: file {rel!r} was not written before the record")
        self.records.append(rec)
        self._index.write(rec.to_json() + "\n")
        self._index.flush()

    def commit(self, set_splits: Optional[Dict[str, str]] = None) -> Path:
        """Finish: optional split re-assignment by id, write metadata, rename into place."""
        self._index.close()
        if set_splits:
            for r in self.records:
                r.split = set_splits.get(r.id, r.split)
        try:
            write_index(self.tmp, self.records)
            atomic_write_json(self.tmp / "dataset.json", asdict(self.meta))
            if self.out.exists():
                shutil.rmtree(self.out)
            replace_durably(self.tmp, self.out)
        finally:
            self._lock.release()
        return self.out

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._index.closed:
                self.commit()
        else:
            self._index.close()
            self._lock.release()


def write_index(root: str | os.PathLike, records: Iterable[PairRecord]) -> None:
    """Atomically and durably (re)write ``root/index.jsonl``."""
    with atomic_path(Path(root) / "index.jsonl") as tmp, open(tmp, "w") as f:
        for r in records:
            f.write(r.to_json() + "\n")


def iter_records(path: str | os.PathLike) -> Iterator[PairRecord]:
    """Records of a data set without loading images."""
    yield from PairDataset(path).pairs
