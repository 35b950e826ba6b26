# SPDX-License-Identifier: Apache-2.0
"""`xview-loc`: the vehicle's commands (node, tiles) and the test bed's (synth, replay, bag-crop, demo)."""

from __future__ import annotations

from typing import List, Optional

from xview_loc_ros.cli import VEHICLE_COMMANDS, build_parser, run

TESTBED_COMMANDS = [
    "xview_testbed.synth.cli",
    "xview_testbed.replay",
    "xview_testbed.demo",
]


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(
        "xview-loc",
        "Cross-view localization on the vehicle: aerial tiles and patches, the ROS 2 node; and the synthetic test bed "
        "(cities, drives, replay through the node, the demo). Units: metres, metres per pixel (m/px), degrees "
        "(latitude/longitude WGS84; headings compass, clockwise from north).",
        VEHICLE_COMMANDS + TESTBED_COMMANDS,
    )
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
