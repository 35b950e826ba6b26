# SPDX-License-Identifier: Apache-2.0
"""`xview-loc synth ...`: build synthetic cities, drives (rosbag2) and labelled pair data sets."""

from __future__ import annotations

import argparse
import sys

from offline_adapt.data.dataset import write_rgb
from xview_loc_ros.cli import fraction, latitude, longitude, non_negative_int, positive_float, positive_int
from xview_testbed.synth import DEFAULT_LAT, DEFAULT_LON, make_city, resolve_style
from xview_testbed.synth.citydir import parse_zooms
from xview_testbed.synth.drive import make_drive
from xview_testbed.synth.pairs import DRIVE_LOOK, PairLook, make_pairs
from xview_testbed.synth.preview import render_spot
from xview_testbed.synth.style import BLEND_GROUPS, PRESETS, parse_groups

_STYLE_HELP = (
    f"style: a preset {list(PRESETS)} or a YAML file (may start with 'base: PRESET'); "
    "see xview_testbed/synth/styles/*.yaml for every key"
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="synthetic test bed: cities, drives as rosbag2, labelled pairs",
        description="Procedural cities placed at a real latitude/longitude, rendered from above "
        "(Web Mercator tiles) and from a vehicle camera (ray casting). Units: metres, m/px, degrees.",
    )
    sub = p.add_subparsers(dest="synth_command", metavar="SUBCOMMAND", required=True)

    c = sub.add_parser(
        "city", help="generate a city folder: tiles/{z}/{x}/{y}.png, tiles.mbtiles, city.json, world.npz, preview.png"
    )
    _style_args(c)
    c.add_argument("--seed", type=int, default=0, help="random seed of the layout and textures (default 0)")
    c.add_argument(
        "--lat", type=latitude, default=None, help="latitude of the city centre, degrees WGS84 (default 37.7749)"
    )
    c.add_argument(
        "--lon", type=longitude, default=None, help="longitude of the city centre, degrees WGS84 (default -122.4194)"
    )
    c.add_argument(
        "--size-m", type=positive_float, default=1000.0, help="side of the square city, metres (default 1000)"
    )
    c.add_argument(
        "--res-m", type=positive_float, default=0.25, help="world raster resolution, metres per pixel (default 0.25)"
    )
    c.add_argument(
        "--zooms",
        default="16-20",
        help="Web Mercator zooms of the tile pyramid, e.g. 18 or 16-20 or 17,19 (default 16-20)",
    )
    c.add_argument("--out", required=True, help="output city folder")
    c.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    c.add_argument(
        "--randomize",
        type=float,
        default=0.0,
        metavar="AMOUNT",
        help="draw a variant of the style with --seed (palettes, sun, grading, layout, trees, heights within the "
        "documented ranges of xview_testbed/synth/randomize.py; 1 = those ranges, 0 = off; season unchanged)",
    )
    c.set_defaults(func=_city)

    d = sub.add_parser("drive", help="drive along the roads and record a rosbag2 (GNSS, IMU, camera, ground truth)")
    d.add_argument("--city", required=True, help="city folder from `synth city`")
    d.add_argument("--out", required=True, help="output bag folder")
    d.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    d.add_argument("--frames", type=positive_int, default=100, help="camera frames to record (default 100)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the route and the sensor errors")
    d.add_argument(
        "--rate",
        type=positive_float,
        default=10.0,
        help="frame rate, Hz; GNSS, IMU and ground truth share the stamps (default 10)",
    )
    d.add_argument(
        "--speed", type=positive_float, default=None, help="vehicle speed, m/s (default: the style's sensor.speed_mps)"
    )
    d.add_argument(
        "--ground", choices=("panorama", "pinhole"), default="panorama", help="camera type (default panorama)"
    )
    d.add_argument("--preset", choices=("small", "full"), default="small", help="image size preset (default small)")
    d.add_argument("--raw", action="store_true", help="write sensor_msgs/Image rgb8 on /camera/image instead of JPEG")
    for name, unit in (
        ("gnss-noise-m", "white noise std per axis, m"),
        ("gnss-bias-m", "bias random-walk std per axis, m"),
        ("gnss-bias-tau-s", "bias correlation time, s"),
        ("gnss-outlier-prob", "multipath outlier probability per fix"),
        ("gnss-outlier-m", "outlier jump size, m"),
        ("heading-noise-deg", "heading white noise std, degrees"),
        ("heading-bias-deg", "heading bias std, degrees"),
    ):
        d.add_argument(f"--{name}", type=float, default=None, help=f"{unit} (default: the style's sensor group)")
    d.add_argument(
        "--region",
        type=region_arg,
        default=None,
        metavar="W,S,E,N",
        help="drive only on roads inside this rectangle, metres west/south/east/north of the city centre "
        "(default: the whole city less 30 m at each edge); write it with '=' when it starts with a minus, e.g. "
        "--region=-200,-200,0,200 for the west half",
    )
    d.add_argument(
        "--gnss-jump",
        type=gnss_jump_arg,
        default=None,
        metavar="E,N,T0,T1",
        help="controlled GNSS fault: add E metres east and N north to every fix from T0 to T1 seconds after the "
        "first frame (e.g. 40,0,20,30); '=' form for a negative first number",
    )
    d.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    d.set_defaults(func=_drive)

    q = sub.add_parser(
        "pairs", help="labelled (ground image, aerial patch) pair data set, aerial cut through the tile fetcher"
    )
    q.add_argument("--city", required=True, help="city folder from `synth city`")
    q.add_argument("--n", type=positive_int, required=True, help="number of pairs")
    q.add_argument("--seed", type=int, default=0, help="random seed of poses, offsets and the 70/10/20 split")
    q.add_argument("--out", required=True, help="output data set folder")
    q.add_argument(
        "--preset",
        choices=("small", "full"),
        default="small",
        help="small: 128 px aerial at 0.5 m/px, 64x256 ground; full: 512 px aerial (0.14 m/px panorama, 0.19583 pinhole), 320x640 panorama / 256x1024 pinhole",
    )
    q.add_argument(
        "--ground",
        choices=("panorama", "pinhole"),
        default="panorama",
        help="ground camera (default panorama; pinhole 90° HFOV)",
    )
    q.add_argument(
        "--workers", type=non_negative_int, default=0, help="rendering processes (default 0 = one per CPU core)"
    )
    q.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    q.add_argument(
        "--like-drive",
        action="store_true",
        help="pairs as the drive recorder and the extractor make them: JPEG frames at quality 90, recorded "
        "headings with the style's IMU error, patch centres displaced like its GNSS errors (half) or "
        "uniformly (half); the three options below refine it",
    )
    q.add_argument(
        "--jpeg-quality", type=int, default=None, metavar="Q", help="store ground images as JPEG at quality Q (1-100)"
    )
    q.add_argument("--heading-error", action="store_true", help="record headings with the style's IMU heading error")
    q.add_argument(
        "--offsets",
        choices=("uniform", "gnss", "mixed"),
        default=None,
        help="patch-centre offsets: uniform in the central half (default), like GNSS errors, or half each",
    )
    q.set_defaults(func=_pairs)

    r = sub.add_parser("render", help="composite PNG of one spot: aerial patch, panorama and pinhole view")
    r.add_argument("--city", required=True, help="city folder from `synth city`")
    r.add_argument("--seed", type=int, default=0, help="picks the road pose when --east/--north are not given")
    r.add_argument("--east", type=float, default=None, help="camera east of the city centre, metres")
    r.add_argument("--north", type=float, default=None, help="camera north of the city centre, metres")
    r.add_argument("--heading", type=float, default=None, help="camera compass heading, degrees clockwise from north")
    r.add_argument("--out", required=True, help="output PNG")
    r.set_defaults(func=_render)

    s = sub.add_parser("style", help="print a resolved (validated, blended) style as YAML")
    _style_args(s)
    s.set_defaults(func=_style)


def _floats(text: str, n: int, what: str) -> tuple:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"expected {n} numbers {what}, got {text!r}")
    return values


def gnss_jump_arg(text: str) -> tuple:
    """``E,N,T0,T1`` (metres, seconds) -> four floats with T0 < T1."""
    e, n, t0, t1 = _floats(text, 4, "E,N,T0,T1 (metres, seconds)")
    if not t0 < t1:
        raise argparse.ArgumentTypeError(f"needs T0 < T1, got {text!r}")
    return (e, n, t0, t1)


def region_arg(text: str) -> tuple:
    """``W,S,E,N`` in metres -> a tuple of four floats with W < E and S < N."""
    w, s, e, n = _floats(text, 4, "W,S,E,N (metres)")
    if not (w < e and s < n):
        raise argparse.ArgumentTypeError(f"needs W < E and S < N, got {text!r}")
    return (w, s, e, n)


def _style_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", required=True, help=_STYLE_HELP)
    p.add_argument("--toward", default=None, help="second style to blend toward (preset or YAML)")
    p.add_argument("--amount", type=fraction, default=0.5, help="blend amount 0..1 toward --toward (default 0.5)")
    p.add_argument(
        "--blend-groups",
        default="all",
        help=f"comma-separated groups to blend: {','.join(BLEND_GROUPS)} or all (default all)",
    )


def _blend(args):
    return (args.toward, args.amount if args.toward else 0.0, parse_groups(args.blend_groups))


def _city(args) -> int:
    toward, amount, groups = _blend(args)
    out = make_city(
        args.style,
        args.seed,
        args.out,
        lat=DEFAULT_LAT if args.lat is None else args.lat,
        lon=DEFAULT_LON if args.lon is None else args.lon,
        size_m=args.size_m,
        zooms=parse_zooms(args.zooms),
        res_m=args.res_m,
        toward=toward,
        amount=amount,
        blend_groups=groups,
        overwrite=args.overwrite,
        randomize=args.randomize,
    )
    print(f"city written to {out}")
    return 0


def _drive(args) -> int:
    gnss = {
        "noise_m": args.gnss_noise_m,
        "bias_m": args.gnss_bias_m,
        "bias_tau_s": args.gnss_bias_tau_s,
        "outlier_prob": args.gnss_outlier_prob,
        "outlier_m": args.gnss_outlier_m,
        "heading_noise_deg": args.heading_noise_deg,
        "heading_bias_deg": args.heading_bias_deg,
    }
    out = make_drive(
        args.city,
        args.out,
        storage=args.storage,
        frames=args.frames,
        seed=args.seed,
        rate_hz=args.rate,
        raw=args.raw,
        ground=args.ground,
        preset=args.preset,
        speed_mps=args.speed,
        gnss=gnss,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
        region=args.region,
        gnss_jump=args.gnss_jump,
    )
    print(f"bag written to {out}")
    return 0


def _pairs(args) -> int:
    base = DRIVE_LOOK if args.like_drive else PairLook()
    look = PairLook(
        jpeg_quality=base.jpeg_quality if args.jpeg_quality is None else args.jpeg_quality,
        heading_error=base.heading_error or args.heading_error,
        offsets=args.offsets or base.offsets,
    )
    out = make_pairs(
        args.city,
        args.out,
        args.n,
        args.seed,
        preset=args.preset,
        ground=args.ground,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
        workers=args.workers,
        look=look,
    )
    print(f"{args.n} pairs written to {out}")
    return 0


def _render(args) -> int:
    img = render_spot(args.city, seed=args.seed, east=args.east, north=args.north, heading_deg=args.heading)
    write_rgb(args.out, img)
    print(f"composite written to {args.out}")
    return 0


def _style(args) -> int:
    import yaml

    toward, amount, groups = _blend(args)
    print(
        yaml.safe_dump(resolve_style(args.style, toward, amount, groups), sort_keys=False, default_flow_style=None),
        end="",
    )
    return 0
