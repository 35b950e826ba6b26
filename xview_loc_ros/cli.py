"""Command-line plumbing shared by `xview-loc` and `xview-adapt`, and the vehicle's own commands.

`xview-loc` itself is assembled in :mod:`xview_testbed.cli` (vehicle commands plus the test bed's).
Each command group lives in its own module exposing ``register(subparsers)``; the group's
handlers are set with ``set_defaults(func=...)`` and return an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# The vehicle's command modules; each imports its heavy dependencies inside its handlers.
VEHICLE_COMMANDS = [
    "xview_loc_ros.node_cli",
    "xview_loc_ros.tiles.cli",
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
