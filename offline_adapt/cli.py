# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt`: the workstation command line (extract, train, evaluate, adapt, export)."""

from __future__ import annotations

import subprocess
import sys
from typing import List, Optional

from xview_loc_ros.cli import build_parser, run

COMMAND_MODULES = [
    "offline_adapt.data.cli",
    "offline_adapt.train.cli",
    "offline_adapt.evaluation.cli",
    "offline_adapt.adapt.cli",
    "offline_adapt.export.cli",
    "offline_adapt.retrieval.cli",
]


def _deprecated_demo(demo_args: List[str]) -> int:
    """`xview-adapt demo`, kept working for old scripts: the demo belongs to the test bed now
    (`xview-loc demo`). It runs in a child process so the offline tools never import the test bed."""
    print("xview-adapt: warning: `xview-adapt demo` is deprecated, use `xview-loc demo`", file=sys.stderr)
    return subprocess.call([sys.executable, "-m", "xview_testbed.demo", *demo_args])


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return _deprecated_demo(argv[1:])
    parser = build_parser(
        "xview-adapt",
        "Offline side: recorded drives -> pair data sets -> training, self-distillation adaptation to a new area "
        "without ground truth, evaluation, export. Units: metres, metres per pixel, compass degrees.",
        COMMAND_MODULES,
    )
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
