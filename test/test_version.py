# SPDX-License-Identifier: Apache-2.0
"""One version source: package.xml; setup.py and xview_loc_ros.__version__ read it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import xview_loc_ros

ROOT = Path(__file__).resolve().parents[1]


def _manifest_version(path: Path) -> str:
    return re.search(r"<version>\s*([^<\s]+)\s*</version>", path.read_text()).group(1)


def _setup_version(folder: Path) -> str:
    r = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_setup_package_xml_and_module_agree():
    v = _manifest_version(ROOT / "package.xml")
    assert xview_loc_ros.__version__ == v
    assert _setup_version(ROOT) == v


def test_the_version_is_written_only_in_package_xml(tmp_path):
    """Bumping package.xml alone bumps the distribution and the module."""
    shutil.copy(ROOT / "setup.py", tmp_path)
    (tmp_path / "package.xml").write_text(
        (ROOT / "package.xml")
        .read_text()
        .replace(f"<version>{_manifest_version(ROOT / 'package.xml')}</version>", "<version>9.8.7</version>")
    )
    (tmp_path / "xview_loc_ros").mkdir()
    shutil.copy(ROOT / "xview_loc_ros" / "__init__.py", tmp_path / "xview_loc_ros")
    assert _setup_version(tmp_path) == "9.8.7"
    r = subprocess.run(
        [sys.executable, "-c", "import xview_loc_ros; print(xview_loc_ros.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert r.stdout.strip() == "9.8.7", r.stderr
