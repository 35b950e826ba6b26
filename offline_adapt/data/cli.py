# SPDX-License-Identifier: Apache-2.0
"""Data-stage commands: `xview-adapt extract` (recorded drives -> unlabeled pair data set) and
`xview-adapt import-vigor` / `import-kitti` (public data sets -> pair data sets)."""

from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Tuple

from offline_adapt.data.extract import ExtractOptions, extract, parse_split
from offline_adapt.data.public_datasets import KITTI_MPP, PROTOCOLS, import_kitti, import_vigor
from xview_loc_ros.sensors import DEFAULT_MAX_IMAGE_PIXELS


def register(sub: Any) -> None:
    _register_extract(sub)
    _register_public(sub)


def _register_extract(sub: Any) -> None:
    p = sub.add_parser(
        "extract",
        help="recorded drives (rosbag2 folders, .mcap, .db3, ROS 1 .bag) -> (ground, aerial) pair data set",
        description=(
            "Turn recorded drives into the unlabeled target-area pair data set that adaptation trains on. "
            "Each camera frame gets the GNSS fix interpolated at its stamp and a north-up aerial patch centred on that "
            "coarse fix (size and metres per pixel from --model or --size/--mpp). Topics are found by type; override "
            "them when a bag holds several. Units: metres, seconds, metres per pixel, compass degrees (clockwise from "
            "north). The output appears only when complete; an interrupted run continues with --resume."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--bag", nargs="+", required=True, metavar="PATH", help="one or more bags, one drive each")
    p.add_argument(
        "--tiles",
        required=True,
        metavar="SPEC",
        help="aerial imagery: xyz:DIR, tms:DIR, mbtiles:FILE, pmtiles:FILE, geotiff:FILE or an https://…/{z}/{x}/{y} URL",
    )
    p.add_argument(
        "--out", required=True, metavar="DATASET", help="output data-set folder (must not exist unless --overwrite)"
    )
    p.add_argument("--cache-dir", metavar="DIR", help="disk cache for HTTP tiles")
    g = p.add_argument_group("patch and ground image geometry (from --model, or given directly)")
    g.add_argument(
        "--model", metavar="CKPT", help="checkpoint whose config gives patch size, m/px, ground type/size, FOV"
    )
    g.add_argument("--size", type=int, metavar="S", help="aerial patch side, pixels")
    g.add_argument("--mpp", type=float, metavar="R", help="aerial patch resolution, metres per pixel")
    g.add_argument("--ground-type", choices=("panorama", "pinhole"), help="ground camera (default panorama)")
    g.add_argument(
        "--ground-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="store ground images at H x W pixels (default: the model's, else the size most frames have)",
    )
    g.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metavar="N",
        help="refuse camera frames declaring more pixels than this (decompression bombs), before decoding",
    )
    g.add_argument(
        "--fov-deg", type=float, help="pinhole horizontal field of view, degrees, when the bag has no CameraInfo"
    )
    g.add_argument("--zoom", type=int, help="tile zoom to sample (default: finest needed for --mpp)")
    t = p.add_argument_group("topics (found by message type when not given)")
    t.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage")
    t.add_argument(
        "--fix-topic", help="sensor_msgs/NavSatFix of the coarse GNSS (topics named *ground_truth* are never picked)"
    )
    t.add_argument("--heading-topic", help="sensor_msgs/Imu with ENU orientation")
    t.add_argument(
        "--odom-topic",
        help="nav_msgs/Odometry (twist in the child frame): integrated between pairs and stored per pair "
        "(extra odom_en) for `xview-adapt adapt --pseudo-labels drive-smooth`; default: not read",
    )
    t.add_argument(
        "--gt-topic", help="NavSatFix of the true position (RTK, /ground_truth/fix); stored for evaluation only"
    )
    t.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo (pinhole intrinsics)")
    f = p.add_argument_group("frame selection")
    f.add_argument(
        "--max-fix-gap",
        type=float,
        default=2.0,
        metavar="SEC",
        help="skip frames whose bracketing fixes are further apart than this, seconds",
    )
    f.add_argument(
        "--min-spacing",
        type=float,
        default=3.0,
        metavar="M",
        help="keep a frame only after the vehicle moved this far since the last kept one, metres",
    )
    f.add_argument(
        "--smooth-s",
        type=float,
        default=1.0,
        metavar="SEC",
        help="spacing and course over ground use the fix track smoothed over +-this many seconds",
    )
    f.add_argument(
        "--min-cog-speed",
        type=float,
        default=2.0,
        metavar="M/S",
        help="without IMU, use course over ground as heading above this speed, m/s",
    )
    f.add_argument(
        "--heading-deg",
        type=float,
        metavar="DEG",
        help="fixed compass heading when neither IMU nor course over ground is available (else unknown)",
    )
    f.add_argument(
        "--max-missing",
        type=float,
        default=0.0,
        metavar="FRAC",
        help="largest fraction of an aerial patch allowed without imagery (0: any hole skips the frame)",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--split",
        metavar="TRAIN,VAL,TEST",
        help="train/val/test shares (e.g. 70,10,20) assigned by drive segment (default: all train)",
    )
    o.add_argument(
        "--segment-s", type=float, default=30.0, metavar="SEC", help="drive segment length for --split, seconds"
    )
    o.add_argument("--resume", action="store_true", help="continue an interrupted run from DATASET.partial")
    o.add_argument("--overwrite", action="store_true", help="replace an existing DATASET")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_extract)


def _model_geometry(path: str) -> Dict[str, Any]:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises pickle, zip, runtime and OS errors alike
        if isinstance(e, FileNotFoundError):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from e
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(cfg, dict) or not {"aerial_size", "mpp", "ground_type"} <= set(cfg):
        raise ValueError(f"{path}: checkpoint has no model config with aerial_size, mpp and ground_type")
    return cfg


def run_extract(args: argparse.Namespace) -> int:

    geom: Dict[str, Any] = {}
    if args.model:
        cfg = _model_geometry(args.model)
        geom = {
            "size_px": int(cfg["aerial_size"]),
            "mpp": float(cfg["mpp"]),
            "ground_type": cfg["ground_type"],
            "ground_size": tuple(cfg["ground_size"]) if cfg.get("ground_size") else None,
        }
        if cfg["ground_type"] == "pinhole" and cfg.get("fov_deg"):
            geom["fov_deg"] = float(cfg["fov_deg"])
    for key, val in (
        ("size_px", args.size),
        ("mpp", args.mpp),
        ("ground_type", args.ground_type),
        ("ground_size", tuple(args.ground_size) if args.ground_size else None),
        ("fov_deg", args.fov_deg),
    ):
        if val is not None:
            geom[key] = val
    if "size_px" not in geom or "mpp" not in geom:
        raise ValueError("give --model CKPT, or --size S and --mpp R for the aerial patches")
    opts = ExtractOptions(
        **geom,
        image_topic=args.image_topic,
        fix_topic=args.fix_topic,
        heading_topic=args.heading_topic,
        odom_topic=args.odom_topic,
        gt_topic=args.gt_topic,
        camera_info_topic=args.camera_info_topic,
        max_fix_gap_s=args.max_fix_gap,
        min_spacing_m=args.min_spacing,
        min_cog_speed_mps=args.min_cog_speed,
        smooth_s=args.smooth_s,
        max_image_pixels=args.max_image_pixels,
        heading_deg=args.heading_deg,
        split=args.split,
        segment_s=args.segment_s,
        max_missing=args.max_missing,
        zoom=args.zoom,
    )
    summary = extract(
        args.bag,
        args.tiles,
        args.out,
        opts,
        resume=args.resume,
        overwrite=args.overwrite,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    print(summary.format())
    return 0


def _register_public(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", required=True, help="data set root folder (the documented layout)")
    common.add_argument("--out", required=True, metavar="DATASET", help="output pair data set folder")
    common.add_argument("--protocol", choices=PROTOCOLS, default="cross-area", help="evaluation protocol")
    common.add_argument(
        "--target-split",
        metavar="TRAIN,VAL,TEST",
        help="adaptation protocol: only the test part (target area), shuffled into these shares, e.g. 70,10,20",
    )
    common.add_argument(
        "--seed", type=int, default=0, help="seed of --target-split shuffling (and KITTI training shifts)"
    )
    common.add_argument("--limit", type=int, help="first N pairs only (quick trials)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing DATASET")
    v = sub.add_parser(
        "import-vigor",
        parents=[common],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="VIGOR (same-/cross-area, corrected labels) -> pair data set (panoramas referenced in place)",
        description="Index VIGOR as a pair data set. Aerial images: 640 px at the per-city m/px "
        "(NewYork 0.113248, Seattle 0.100817, SanFrancisco 0.118141, Chicago 0.111262). "
        "Panoramas are north-aligned (compass heading 0).",
    )
    v.add_argument("--labels", default="splits_new", help="label folder under ROOT (SliceMatch corrected labels)")
    v.add_argument(
        "--aerial-size",
        type=int,
        default=512,
        help="aerial side in pixels (CCVPE: 512, resized copies written; 640: originals referenced in place)",
    )
    v.set_defaults(func=_run_vigor)
    k = sub.add_parser(
        "import-kitti",
        parents=[common],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="KITTI with Shi & Li aerial maps -> pair data set (north-up crops written)",
        description=f"Import KITTI (HighlyAccurate layout). Aerial crops: north-up, {KITTI_MPP:.5f} m/px, "
        "centred up to 20 m from the camera (test lists' shifts; seeded draws for training).",
    )
    k.add_argument("--lists", help="folder with train_files.txt, test1_files.txt, test2_files.txt (default ROOT)")
    k.add_argument("--crop", type=int, default=512, help="aerial crop side, pixels")
    k.set_defaults(func=_run_kitti)


def _split_arg(args: argparse.Namespace) -> Optional[Tuple[float, float, float]]:

    return parse_split(args.target_split) if args.target_split else None


def _run_vigor(args: argparse.Namespace) -> int:
    out = import_vigor(
        args.root,
        args.out,
        args.protocol,
        args.labels,
        _split_arg(args),
        args.seed,
        args.limit,
        args.overwrite,
        args.aerial_size,
    )
    print(f"{out}: VIGOR {args.protocol} pair data set")
    return 0


def _run_kitti(args: argparse.Namespace) -> int:
    out = import_kitti(
        args.root,
        args.out,
        args.protocol,
        args.lists,
        args.crop,
        _split_arg(args),
        args.seed,
        args.limit,
        args.overwrite,
    )
    print(f"{out}: KITTI {args.protocol} pair data set")
    return 0
