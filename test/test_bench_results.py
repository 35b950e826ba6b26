# SPDX-License-Identifier: Apache-2.0
"""bench/results.py: the one writer of bench/RESULTS.md used by every benchmark's --record."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import results

BASE = """# Benchmark results

## Aerial patch builder (issue 2)

old patch table

## Localizer node (issue 8)

### 2026-11-23 01:47 UTC, commit 9244d1f: `bench/bench_node.py`

old node run

## Inference backends (issue 7)

intro

### CPU

old cpu

### GPU

not measured yet
"""
PROVENANCE = re.compile(
    r"Command: `python x --record`; machine: .+ cores, load average [\d.]+, Python [\d.]+.*; "
    r"date: \d{4}-\d\d-\d\d \d\d:\d\d UTC; commit \w+\."
)


@pytest.fixture
def md(tmp_path) -> Path:
    p = tmp_path / "RESULTS.md"
    p.write_text(BASE)
    return p


def _section(text: str, title: str) -> str:
    start = text.index(title)
    nxt = text.find("\n## ", start + 1)
    return text[start:] if nxt < 0 else text[start : nxt + 1]


def test_replace_a_section_leaves_the_others_byte_for_byte(md):
    text = results.record("## Aerial patch builder (issue 2)", "| new | table |", command="python x --record", path=md)
    assert md.read_text() == text
    sec = _section(text, "## Aerial patch builder")
    assert "old patch table" not in sec and "| new | table |" in sec and PROVENANCE.search(sec)
    for other in ("## Localizer node (issue 8)", "## Inference backends (issue 7)"):
        assert _section(text, other) == _section(BASE, other)


def test_replace_one_subsection(md):
    text = results.record(
        "## Inference backends (issue 7)",
        "new gpu rows",
        command="python x --record",
        subsection="### GPU",
        machine_extra=["torch 2"],
        path=md,
    )
    sec = _section(text, "## Inference backends")
    assert "old cpu" in sec and "not measured yet" not in sec and "new gpu rows" in sec and "torch 2" in sec
    assert sec.index("### CPU") < sec.index("### GPU")
    assert text.startswith(BASE[: BASE.index("## Inference backends")])


def test_append_an_entry_keeps_the_history_and_the_next_section(md):
    text = results.record(
        "## Localizer node (issue 8)",
        "new run",
        command="python x --record",
        append=True,
        subsection="### 2026-12-02 01:00 UTC: `bench/bench_node.py`",
        path=md,
    )
    sec = _section(text, "## Localizer node")
    assert sec.index("old node run") < sec.index("new run") and PROVENANCE.search(sec)
    assert _section(text, "## Inference backends (issue 7)") == _section(BASE, "## Inference backends (issue 7)")
    with pytest.raises(ValueError, match="subsection"):
        results.record("## Localizer node (issue 8)", "x", command="c", append=True, path=md)


def test_new_section_and_new_file(tmp_path):
    p = tmp_path / "R.md"
    text = results.record("## Bag extraction (issue 6)", "rows", command="python x --record", path=p)
    assert text.startswith("# Benchmark results\n\n## Bag extraction (issue 6)\n\nrows\n\nCommand:")
    text = results.record(
        "## Inference backends (issue 7)",
        "cpu rows",
        command="python x --record",
        subsection="### CPU",
        intro="Batch 1.",
        path=p,
    )
    assert "## Inference backends (issue 7)\n\nBatch 1.\n\n### CPU\n\ncpu rows" in text
    assert text.count("## Bag extraction") == 1


def test_every_benchmark_records_through_the_one_writer():
    bench = Path(results.__file__).parent
    for script in sorted(bench.glob("*.py")):
        src = script.read_text()
        if script.name == "results.py" or "--record" not in src and "--write" not in src:
            continue
        assert "results.record(" in src, script.name
        assert 'RESULTS.md").write' not in src and "open(args.record" not in src and "rev-parse" not in src, script.name
