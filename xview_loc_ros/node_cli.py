# SPDX-License-Identifier: Apache-2.0
"""`xview-loc node`: run the localizer node without `ros2 run` (same node, same YAML parameters)."""

from __future__ import annotations

import argparse
from typing import List

from xview_loc_ros.params_file import check_ros_args

HELP = """Run the ROS 2 localizer node (name xview_localizer) from a parameters YAML file (keyed by node
name, then ros__parameters; see config/localizer.yaml). Inputs: gnss/fix (NavSatFix, WGS84 degrees),
camera/image or camera/image/compressed, imu/data (orientation in ENU); outputs ~/pose (map frame:
ENU metres at the datum), ~/fix, ~/heatmap, ~/heatmap_grid, ~/marker, /diagnostics. Anything after
--ros-args goes to ROS unchanged (remapping: -r gnss/fix:=/my/fix; parameters: -p backend:=onnxruntime)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "node",
        help="run the ROS 2 localizer node",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--params-file", required=True, metavar="FILE", help="parameters YAML (e.g. config/localizer.yaml)")
    p.add_argument(
        "--model-path", metavar="PATH", help="override model_path (checkpoint .pt, .onnx or TensorRT engine)"
    )
    p.add_argument(
        "--tile-source",
        metavar="SPEC",
        help="override tile_source (xyz:DIR, mbtiles:FILE, https://host/{z}/{x}/{y}.png, ...)",
    )
    p.add_argument(
        "--ros-args",
        dest="ros_args",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="ARG",
        help="everything after it goes to ROS (remappings -r FROM:=TO, parameters -p NAME:=VALUE)",
    )
    p.set_defaults(func=_run)


def ros_argv(args: argparse.Namespace) -> List[str]:
    """The argv the node's rclpy.init gets."""
    extra = list(args.ros_args or [])
    argv = ["xview-loc-node", "--ros-args", "--params-file", str(args.params_file)]
    if args.model_path:
        argv += ["-p", f"model_path:={args.model_path}"]
    if args.tile_source:
        argv += ["-p", f"tile_source:={args.tile_source}"]
    return argv + extra


def _run(args: argparse.Namespace) -> int:
    argv = ros_argv(args)
    # refused here, before rclpy loads: a missing file, a misspelt node key or parameter name
    # (rcl would ignore the last two and run on defaults); ParamsFileError is a ValueError: one line
    check_ros_args(argv)
    from xview_loc_ros.node import main

    return main(argv)
