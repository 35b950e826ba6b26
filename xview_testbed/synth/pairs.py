# SPDX-License-Identifier: Apache-2.0
"""Labelled (ground image, aerial patch) pairs from a synthetic city, written as a pair data set.

Camera poses lie on roads (anywhere across the drivable width, not only lane centres), facing along
the road either way with a few degrees of jitter. The aerial patch is cut through the project's
tile fetcher (``open_tile_source("xyz:CITY/tiles")`` + ``AerialPatchBuilder``) around a centre
offset from the true position by a uniform continuous offset, so the truth falls anywhere in the
central half of the patch (as VIGOR's positives).

:class:`PairLook` makes pairs look like what the drive recorder and the extractor produce instead:
JPEG camera frames at the recorder's quality, recorded headings with the style's IMU heading error
(the image itself is rendered at the true heading), and patch centres displaced like the style's
GNSS errors (bias, noise, multipath) instead of uniformly. A model trained on them learns to live
with what a vehicle gives it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from offline_adapt.data.dataset import DatasetMeta, DatasetWriter, PairRecord, write_rgb
from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source
from xview_testbed.synth.citydir import City, load_city
from xview_testbed.synth.gnss import GnssErrorModel
from xview_testbed.synth.ground import GroundCamera, GroundRenderer
from xview_testbed.synth.world import BUILDING, OBJECT, TREE, WATER, Road

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test
OFFSET_KINDS = ("uniform", "gnss", "mixed")
DRIVE_JPEG_QUALITY = 90  # make_drive's default


@dataclass(frozen=True)
class PairLook:
    """How pairs differ from perfect renders.

    ``jpeg_quality``: ground images stored as JPEG at this quality (None: lossless PNG).
    ``heading_error``: recorded headings carry the style's IMU heading error (Gauss-Markov bias +
    noise, ``sensor.heading_*_deg``); the image is rendered at the true heading.
    ``offsets``: patch centre minus truth, "uniform" in the central half of the patch, "gnss" drawn
    from the style's GNSS error model (independent fixes; clipped to the central half so the truth
    stays inside the patch), or "mixed" (each pair one or the other with equal probability).
    """

    jpeg_quality: Optional[int] = None
    heading_error: bool = False
    offsets: str = "uniform"

    def __post_init__(self) -> None:
        if self.offsets not in OFFSET_KINDS:
            raise ValueError(f"offsets must be one of {OFFSET_KINDS}, got {self.offsets!r}")
        if self.jpeg_quality is not None and not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


DRIVE_LOOK = PairLook(jpeg_quality=DRIVE_JPEG_QUALITY, heading_error=True, offsets="mixed")


def sample_offsets(
    look: PairLook, model: GnssErrorModel, n: int, max_off: float, rng: np.random.Generator
) -> np.ndarray:
    """(n, 2) east/north offsets in metres of the patch centre from the truth (see :class:`PairLook`)."""
    uniform = rng.uniform(-max_off, max_off, (n, 2))
    if look.offsets == "uniform":
        return uniform
    # fixes an hour apart: independent draws of the bias walk, the noise and the multipath jumps
    gnss, _ = model.position_errors(n, 3600.0, rng)
    norm = np.maximum(np.abs(gnss).max(axis=1, keepdims=True) / max_off, 1.0)
    gnss = gnss / norm  # keep the direction, stay inside the central half
    if look.offsets == "gnss":
        return gnss
    return np.where(rng.random((n, 1)) < 0.5, gnss, uniform)


@dataclass(frozen=True)
class PairPreset:
    """Sizes of one preset: aerial ``patch_px`` at ``mpp`` m/px and the ground camera per kind."""

    patch_px: int
    mpp: Dict[str, float]
    panorama: Tuple[int, int]
    pinhole: Tuple[int, int]
    pinhole_fov_deg: float
    supersample: int


PRESETS = {
    # CPU work: the "small" model; 64 m patches
    "small": PairPreset(128, {"panorama": 0.5, "pinhole": 0.5}, (64, 256), (64, 256), 90.0, 2),
    # GPU work: CCVPE sizes (VIGOR-like panorama 320 x 640, KITTI-like pinhole 256 x 1024 with KITTI's
    # 81.4 deg horizontal FOV: fx 721.5 px over 1242 px)
    "full": PairPreset(512, {"panorama": 0.14, "pinhole": 0.19583}, (320, 640), (256, 1024), 81.4, 1),
}
# model architectures (xview_loc_ros.models) whose input geometry a preset matches
PRESET_ALIASES = {"ccvpe-vigor": "full", "ccvpe-kitti": "full"}


def resolve_preset(preset: str) -> str:
    """A preset name, or a model architecture name mapped to the preset with its input sizes."""
    name = PRESET_ALIASES.get(preset, preset)
    if name not in PRESETS:
        raise ValueError(f"unknown pair preset {preset!r}; choose from {sorted(PRESETS) + sorted(PRESET_ALIASES)}")
    return name


def ground_camera(preset: str, ground: str) -> GroundCamera:
    """The ground camera of ``preset`` (or model architecture name) for ``ground`` "panorama" | "pinhole"."""
    p = PRESETS[resolve_preset(preset)]
    if ground == "panorama":
        return GroundCamera("panorama", p.panorama, 360.0, 0.0, p.supersample)
    if ground == "pinhole":
        return GroundCamera("pinhole", p.pinhole, p.pinhole_fov_deg, 0.0, p.supersample)
    raise ValueError(f"ground camera must be 'panorama' or 'pinhole', got {ground!r}")


def _road_table(roads: List[Road]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segments of all roads: start (M,2), direction (M,2) unit, length (M,), width (M,)."""
    starts, dirs, lens, widths = [], [], [], []
    for r in roads:
        seg = np.diff(r.points, axis=0)
        ln = np.hypot(seg[:, 0], seg[:, 1])
        keep = ln > 1e-6
        starts.append(r.points[:-1][keep])
        dirs.append(seg[keep] / ln[keep, None])
        lens.append(ln[keep])
        widths.append(np.full(keep.sum(), r.width_m))
    return np.concatenate(starts), np.concatenate(dirs), np.concatenate(lens), np.concatenate(widths)


def sample_road_poses(
    city: City, n: int, rng: np.random.Generator, margin_m: float, heading_jitter_deg: float = 3.0
) -> np.ndarray:
    """``n`` camera poses (east m, north m, compass heading deg) on drivable road surface at least
    ``margin_m`` inside the city edge, clear of parked cars, buildings, trees and water."""
    world = city.world
    start, direction, length, width = _road_table(city.roads)
    half = city.size_m / 2 - margin_m
    if half <= 0:
        raise ValueError(
            f"city of {city.size_m:.0f} m is too small for a {margin_m:.0f} m margin (patches must lie inside)"
        )
    mid = start + direction * length[:, None] / 2
    inner = (np.abs(mid[:, 0]) < half) & (np.abs(mid[:, 1]) < half)
    if not inner.any():
        raise ValueError(f"{city.root}: no road lies {margin_m:.0f} m inside the city edge")
    p = np.where(inner, length, 0.0)
    p /= p.sum()
    out = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError(f"{city.root}: could not place {n} camera poses on free road surface")
        k = rng.choice(len(p), p=p)
        # half-width the camera may use: clear of kerbside parking (cars sit in the outer 2.2 m)
        lat_max = max(0.0, width[k] / 2 - (2.6 if width[k] >= 7.0 else 1.0))
        pos = (
            start[k]
            + direction[k] * rng.uniform(0, length[k])
            + np.array([-direction[k, 1], direction[k, 0]]) * rng.uniform(-lat_max, lat_max)
        )
        if abs(pos[0]) > half or abs(pos[1]) > half:
            continue
        col, row = world.enu_to_pixel(pos[0], pos[1])
        r0, c0 = int(row), int(col)
        patch = world.cls[max(0, r0 - 4) : r0 + 5, max(0, c0 - 4) : c0 + 5]  # 1 m around the camera
        if np.isin(patch, (BUILDING, OBJECT, TREE, WATER)).any():
            continue
        heading = math.degrees(math.atan2(direction[k, 0], direction[k, 1]))
        if rng.random() < 0.5:
            heading += 180.0
        heading = (heading + rng.normal(0, heading_jitter_deg)) % 360.0
        out.append((pos[0], pos[1], heading))
    return np.asarray(out)


def split_for(n: int, seed: int, fractions=SPLIT_FRACTIONS) -> List[str]:
    """Deterministic train/val/test assignment of ``n`` pairs (shuffled by ``seed``)."""
    counts = [int(round(f * n)) for f in fractions]
    counts[0] = n - counts[1] - counts[2]
    labels = np.array(["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2])
    np.random.default_rng([seed, 7]).shuffle(labels)
    return labels.tolist()


@dataclass
class _Job:
    """What every pair renderer (the main process or a forked worker) needs; shared copy-on-write."""

    renderer: GroundRenderer
    builder: object
    cam: GroundCamera
    z_cam: float
    poses: np.ndarray
    ground_ext: str
    jpeg_quality: int
    c_lat: np.ndarray
    c_lon: np.ndarray
    seed: int
    root: Path


_JOB: Optional[_Job] = None


def _render_pair(i: int) -> int:
    """Render pair ``i`` of the current job and write its two images (ground, aerial) under the job root."""
    job = _JOB
    pid = f"{i:06d}"
    e, n, heading = job.poses[i]
    img = job.renderer.render(e, n, heading, job.cam, job.z_cam, rng=np.random.default_rng([job.seed, i]))
    patch = job.builder.build(float(job.c_lat[i]), float(job.c_lon[i]))
    write_rgb(job.root / "ground" / f"{pid}.{job.ground_ext}", img, job.jpeg_quality)
    write_rgb(job.root / "aerial" / f"{pid}.png", patch.image)
    return i


def make_pairs(
    city_dir: str | os.PathLike,
    out_dataset: str | os.PathLike,
    n: int,
    seed: int,
    preset: str = "small",
    ground: str = "panorama",
    overwrite: bool = False,
    progress: bool = False,
    workers: int = 1,
    look: PairLook = PairLook(),
) -> Path:
    """Write ``n`` labelled pairs of the city at ``city_dir`` to the pair data set ``out_dataset``.

    ``look``: JPEG frames, heading errors and GNSS-like offsets (:class:`PairLook`; default: perfect
    renders, uniform offsets).

    ``workers`` > 1 renders in that many forked processes (0 = one per CPU core); the output does not
    depend on it. The default stays in-process: forking a process that runs threads (rclpy, a test
    harness) is unsafe, so callers opt in.
    """
    if int(n) < 1:
        raise ValueError(f"number of pairs must be >= 1, got {n!r}")
    city = load_city(city_dir)
    cam = ground_camera(preset, ground)
    preset = resolve_preset(preset)
    p = PRESETS[preset]
    mpp = p.mpp[ground]
    span = p.patch_px * mpp
    max_off = span / 4  # truth anywhere in the central half of the patch
    rng = np.random.default_rng(seed)
    poses = sample_road_poses(city, int(n), rng, margin_m=span / 2 + max_off + 2.0)
    errors = GnssErrorModel.from_sensor(city.style["sensor"])
    offsets = sample_offsets(look, errors, int(n), max_off, rng)
    recorded_heading = poses[:, 2].copy()
    if look.heading_error:
        recorded_heading = (recorded_heading + errors.heading_errors(int(n), 3600.0, rng)) % 360.0
    splits = split_for(int(n), seed)
    renderer = GroundRenderer(city.world, city.style["appearance"])
    builder = AerialPatchBuilder(open_tile_source(city.tiles_spec), p.patch_px, mpp)
    z_cam = city.style["sensor"]["camera_height_m"]
    fx, fy, cx, cy = cam.intrinsics() if cam.kind == "pinhole" else (None,) * 4
    meta = DatasetMeta(
        ground_type=cam.kind,
        ground_size=list(cam.size),
        fov_deg=cam.fov_deg,
        patch_size_px=p.patch_px,
        mpp=mpp,
        name=f"synth-{city.meta.get('style_name') or 'city'}-{city.meta.get('seed')}",
        source="synth",
        intrinsics=[fx, fy, cx, cy] if cam.kind == "pinhole" else None,
        camera_height_m=z_cam,
        camera_pitch_deg=cam.pitch_deg if cam.kind == "pinhole" else None,
        extra={
            "city": str(Path(city_dir).resolve()),
            "style_name": city.meta.get("style_name", ""),
            "city_seed": city.meta.get("seed"),
            "pairs_seed": int(seed),
            "preset": preset,
            "offset_max_m": max_off,
            "split_fractions": list(SPLIT_FRACTIONS),
            "look": {"jpeg_quality": look.jpeg_quality, "heading_error": look.heading_error, "offsets": look.offsets},
        },
    )
    frame = city.frame
    gt_lat, gt_lon, _ = frame.to_latlon(poses[:, 0], poses[:, 1], 0.0)
    c_lat, c_lon, _ = frame.to_latlon(poses[:, 0] - offsets[:, 0], poses[:, 1] - offsets[:, 1], 0.0)
    n = int(n)
    workers = min(os.cpu_count() or 1, 8) if workers <= 0 else int(workers)
    global _JOB
    with DatasetWriter(out_dataset, meta, overwrite=overwrite) as writer:
        for sub in ("ground", "aerial"):
            writer.path(sub).mkdir(exist_ok=True)
        ext = "png" if look.jpeg_quality is None else "jpg"
        _JOB = _Job(
            renderer, builder, cam, z_cam, poses, ext, int(look.jpeg_quality or 95), c_lat, c_lon, int(seed), writer.tmp
        )
        pool = None
        try:
            if workers > 1 and n >= 4 * workers:
                import multiprocessing

                pool = multiprocessing.get_context("fork").Pool(workers)  # children share the world copy-on-write
                done = pool.imap(_render_pair, range(n), chunksize=4)
            else:
                done = map(_render_pair, range(n))
            if progress:
                from tqdm import tqdm

                done = tqdm(done, total=n, desc="pairs", unit="pair")
            for i in done:
                pid = f"{i:06d}"
                e, nn, _ = poses[i]
                writer.add(
                    PairRecord(
                        id=pid,
                        ground=f"ground/{pid}.{ext}",
                        aerial=f"aerial/{pid}.png",
                        center_lat=float(c_lat[i]),
                        center_lon=float(c_lon[i]),
                        mpp=mpp,
                        size_px=p.patch_px,
                        heading_deg=float(recorded_heading[i]),
                        fix_lat=float(c_lat[i]),
                        fix_lon=float(c_lon[i]),
                        fix_std_m=float(max_off / math.sqrt(3.0)),
                        gt_lat=float(gt_lat[i]),
                        gt_lon=float(gt_lon[i]),
                        stamp=float(i),
                        source=f"synth:{meta.name}",
                        split=splits[i],
                        heading_source="synthetic-imu" if look.heading_error else "synthetic-truth",
                        extra={
                            "east_m": round(float(e), 3),
                            "north_m": round(float(nn), 3),
                            "true_heading_deg": round(float(poses[i, 2]), 3),
                        },
                    )
                )
        finally:
            _JOB = None
            if pool is not None:
                pool.terminate()
        return writer.commit()
