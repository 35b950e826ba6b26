"""`xview-loc`: the vehicle-side command line (tiles, synthetic test bed, node).

Each command group lives in its own module exposing ``register(subparsers)``; the group's
handlers are set with ``set_defaults(func=...)`` and return an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# (module, command) pairs; modules import their heavy dependencies inside their handlers.
COMMAND_MODULES = [
    "xview_loc_ros.node_cli",
    "xview_loc_ros.tiles.cli",
    "xview_loc_ros.synth.cli",
    "xview_loc_ros.replay",
]


def build_parser(prog: str, description: str, modules: List[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in modules:
        importlib.import_module(mod).register(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, RuntimeError) as e:  # bad input: one clear line, no traceback
        if args.verbose:
            raise
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(
        "xview-loc",
        "Cross-view localization on the vehicle: aerial tiles and patches, the synthetic test bed, the ROS 2 node. "
        "Units: metres, metres per pixel (m/px), degrees (latitude/longitude WGS84; headings compass, clockwise from north).",
        COMMAND_MODULES,
    )
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
