# SPDX-License-Identifier: Apache-2.0
"""Run a chain of this package's command lines in-process, each skipped when its output is already made.

The demo and the bundled teacher's recipe are both such chains: every step is printed as the command a
user would type, and a step whose output exists and was made by the same command from the same inputs is
skipped (its record is in OUT/.steps/, see :class:`xview_loc_ros.fsutil.CommandSteps`).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from offline_adapt import cli as xview_adapt_cli
from xview_loc_ros.fsutil import CommandSteps
from xview_testbed import cli as xview_loc_cli

TOOLS: Dict[str, Callable[[List[str]], int]] = {"xview-loc": xview_loc_cli.main, "xview-adapt": xview_adapt_cli.main}


class StepRunner:
    """``run(output, tool, *args)``: the commands run so far (``commands``) and their wall times in seconds."""

    def __init__(self, out: Path) -> None:
        self.commands: List[str] = []
        self.times: Dict[str, float] = {}
        self.steps = CommandSteps(Path(out))

    def run(self, output: Path, tool: str, *args: Any) -> Path:
        """Run ``tool args`` (in this process, the same code as the console script) unless the step
        that makes ``output`` is done (same command, same inputs)."""
        argv = [str(a) for a in args]
        line = f"{tool} {shlex.join(argv)}"
        self.commands.append(line)

        def execute() -> None:
            print(f"$ {line}", flush=True)
            t0 = time.monotonic()
            rc = TOOLS[tool](argv)
            self.times[line] = time.monotonic() - t0
            if rc != 0:
                raise RuntimeError(f"step failed (exit {rc}): {line}")

        if not self.steps.run(output, [tool, *argv], execute):
            print(f"  (exists, skipped) {line}", flush=True)
        return output
