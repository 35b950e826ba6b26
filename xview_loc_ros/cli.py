# SPDX-License-Identifier: Apache-2.0
"""Command-line plumbing shared by `xview-loc` and `xview-adapt`, and the vehicle's own commands.

`xview-loc` itself is assembled in :mod:`xview_testbed.cli` (vehicle commands plus the test bed's).
Each command group lives in its own module exposing ``register(subparsers)``; the group's
handlers are set with ``set_defaults(func=...)`` and return an exit code.

Option checks live here once: ``require_*`` raise ValueError naming the option (used by the option
dataclasses' ``__post_init__``, so a bad value fails when the options are built, before any
expensive step), and the argparse ``type=`` validators below apply the same checks at parse time
(argparse then prints one line naming the option and exits 2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Callable, List, Optional, Sequence, TypeVar

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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, RuntimeError) as e:  # bad input: one clear line, no traceback
        if args.verbose:
            raise
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


N = TypeVar("N", int, float)


def require_at_least(option: str, value: Optional[N], low: N, *, allow_none: bool = False) -> None:
    """ValueError naming ``option`` unless ``value >= low`` (a finite number); None passes when allowed."""
    if value is None and allow_none:
        return
    if value is None or not value >= low or value != value or abs(value) == float("inf"):
        raise ValueError(f"{option} must be >= {low:g}, got {value}")


def require_positive(option: str, value: Optional[float]) -> None:
    """ValueError naming ``option`` unless ``value`` is a finite number > 0."""
    if value is None or not 0 < value < float("inf"):
        raise ValueError(f"{option} must be > 0, got {value}")


def require_in_range(option: str, value: Optional[float], low: float, high: float, *, high_open: bool = False) -> None:
    """ValueError naming ``option`` unless ``low <= value <= high`` (``< high`` when ``high_open``)."""
    ok = value is not None and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{option} must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value}")


def require_choice(option: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _argtype(parse: Callable[[str], N], check: Callable[[N], None], name: str) -> Callable[[str], N]:
    """An argparse ``type=``: parse the text, then ``check`` it; failures become one argparse line
    ("argument --batch: must be >= 1, got -1")."""

    def convert(text: str) -> N:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        try:
            check(value)
        except ValueError as e:
            # the check names a placeholder option; argparse prefixes the real one
            raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None
        return value

    convert.__name__ = name
    return convert


positive_int = _argtype(int, lambda v: require_at_least("_", v, 1), "an integer >= 1")
non_negative_int = _argtype(int, lambda v: require_at_least("_", v, 0), "an integer >= 0")
positive_float = _argtype(float, lambda v: require_positive("_", v), "a number > 0")
non_negative_float = _argtype(float, lambda v: require_at_least("_", v, 0.0), "a number >= 0")
percent = _argtype(float, lambda v: require_in_range("_", v, 0.0, 100.0), "a percentage in [0, 100]")
fraction = _argtype(float, lambda v: require_in_range("_", v, 0.0, 1.0), "a fraction in [0, 1]")
# Web Mercator (the tile grid) ends at 85.05°; the poles themselves have no patch and no ENU frame
latitude = _argtype(float, lambda v: require_in_range("_", v, -85.0511, 85.0511), "a latitude in degrees")
longitude = _argtype(float, lambda v: require_in_range("_", v, -180.0, 180.0), "a longitude in degrees")
zoom_level = _argtype(int, lambda v: require_in_range("_", v, 0, 30), "a tile zoom level")
