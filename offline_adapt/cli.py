"""`xview-adapt`: the workstation command line (extract, train, evaluate, adapt, export)."""
from __future__ import annotations

from typing import List, Optional

from xview_loc_ros.cli import build_parser, run

COMMAND_MODULES = [
    "offline_adapt.extract_cli",
    "offline_adapt.public_datasets",
    "offline_adapt.export",
    "offline_adapt.train_cli",
    "offline_adapt.evaluate",
    "offline_adapt.adapt_cli",
    "offline_adapt.demo",
]


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(
        "xview-adapt",
        "Offline side: recorded drives -> pair data sets -> training, self-distillation adaptation to a new area "
        "without ground truth, evaluation, export. Units: metres, metres per pixel, compass degrees.",
        COMMAND_MODULES,
    )
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
