# SPDX-License-Identifier: Apache-2.0
"""The one writer of bench/RESULTS.md: every benchmark's ``--record`` goes through :func:`record`.

RESULTS.md is a list of ``## `` sections, one per benchmark. A record either replaces its
benchmark's section (or one ``### `` subsection of it, e.g. "### GPU"), or appends an entry to the
section (benchmarks that keep a history of runs). Every record ends with the same provenance line:
command, machine, date (UTC) and commit. Other sections are left byte for byte.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Optional, Sequence, Tuple

from xview_loc_ros.fsutil import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
TITLE = "# Benchmark results\n"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(extra: Sequence[str] = ()) -> str:
    """CPU model, cores, 1-minute load average (the machines are shared), Python, and ``extra``
    (library versions, GPU) of the benchmark."""
    return ", ".join(
        [
            cpu_model(),
            f"{os.cpu_count()} cores",
            f"load average {os.getloadavg()[0]:.1f}",
            f"Python {platform.python_version()}",
            *extra,
        ]
    )


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def provenance(command: str, machine_extra: Sequence[str] = ()) -> str:
    return f"Command: `{command}`; machine: {machine(machine_extra)}; date: {now_utc()}; commit {commit()}."


def _block(text: str, heading: str, level: int) -> Optional[Tuple[int, int]]:
    """(start, end) of the block that starts with the line ``heading`` and runs to the next heading
    of ``level`` or higher (``##`` = 2), or None."""
    m = re.search(rf"^{re.escape(heading)}[ \t]*$", text, re.M)
    if m is None:
        return None
    nxt = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, m.end())
    return m.start(), nxt.start() if nxt else len(text)


def _put(text: str, heading: str, level: int, block: str, append: bool) -> str:
    span = _block(text, heading, level)
    if span is None:
        return text.rstrip("\n") + "\n\n" + block
    start, end = span
    if append:
        return text[:end].rstrip("\n") + "\n\n" + block + ("\n" + text[end:] if end < len(text) else "")
    return text[:start] + block + ("\n" + text[end:] if end < len(text) else "")


def record(
    section: str,
    body: str,
    *,
    command: str,
    subsection: Optional[str] = None,
    append: bool = False,
    intro: str = "",
    machine_extra: Sequence[str] = (),
    path: Path = RESULTS_MD,
) -> str:
    """Write ``body`` (Markdown: tables, notes) with the provenance line into ``section`` of
    ``path``: as the whole section; as its ``subsection`` (replaced, or added when missing); or,
    with ``append``, as a new ``subsection`` entry after the section's others. ``intro`` is the
    section's first paragraph when the section is created. Returns the text written."""
    section, sub = section.strip(), subsection.strip() if subsection else None
    if append and not sub:
        raise ValueError("an appended record needs its own subsection heading")
    entry = f"{body.strip()}\n\n{provenance(command, machine_extra)}\n"
    head = f"{intro.strip()}\n\n" if intro else ""
    text = path.read_text() if path.exists() else TITLE
    if sub is None:
        return _write(path, _put(text, section, 2, f"{section}\n\n{head}{entry}", False))
    span = _block(text, section, 2)
    if span is None:  # a new section holding just this subsection
        return _write(path, text.rstrip("\n") + f"\n\n{section}\n\n{head}{sub}\n\n{entry}")
    start, end = span
    part = _put(text[start:end], sub, 3, f"{sub}\n\n{entry}", append)
    return _write(path, text[:start] + part.rstrip("\n") + "\n" + ("\n" + text[end:] if end < len(text) else ""))


def _write(path: Path, text: str) -> str:
    atomic_write_bytes(path, text.encode())
    return text
