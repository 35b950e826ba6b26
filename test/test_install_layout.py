# SPDX-License-Identifier: Apache-2.0
"""A pip install lays the package out as ros2 run / ros2 launch expect (what colcon's ament_python does):
<prefix>/lib/xview_loc_ros/localizer_node (executable), the ament index marker, share/xview_loc_ros/
{package.xml, launch, config}; the console scripts xview-loc / xview-adapt stay in bin/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_prefix, get_package_share_directory

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["setup.py", "setup.cfg", "package.xml", "resource", "launch", "config", "scripts"]
PACKAGES = ["xview_loc_ros", "offline_adapt", "xview_testbed"]


def _pip(*args: str, cwd: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-deps", "--no-build-isolation", "--no-index", "-q"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    """The project built into a wheel (from a copy: no build/ or egg-info in the checkout) and
    installed with pip into an empty prefix."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, src / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", ".", "-w", str(tmp / "dist"), cwd=src)
    (wheel,) = (tmp / "dist").glob("*.whl")
    # --ignore-installed: without it pip uninstalls the editable install of the running environment first
    _pip("install", "--no-compile", "--ignore-installed", "--prefix", str(tmp / "prefix"), str(wheel), cwd=tmp)
    return tmp / "prefix"


def test_pip_puts_the_node_where_ros2_looks(prefix, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert get_package_prefix("xview_loc_ros") == str(prefix)  # what ros2 run / launch_ros resolve first
    exe = prefix / "lib" / "xview_loc_ros" / "localizer_node"  # then <prefix>/lib/<package>/<executable>
    assert exe.is_file() and os.access(exe, os.X_OK)
    share = Path(get_package_share_directory("xview_loc_ros"))
    assert (share / "package.xml").is_file() and (share / "launch" / "localize.launch.py").is_file()
    assert (share / "config" / "localizer.yaml").is_file() and (share / "config" / "localize.rviz").is_file()
    scripts = {p.name for p in (prefix / "bin").iterdir()}
    assert {"xview-loc", "xview-adapt"} <= scripts and "localizer_node" not in scripts


def test_the_prefix_install_leaves_the_running_environment_installed(prefix):
    import importlib.metadata

    importlib.invalidate_caches()
    dist = importlib.metadata.distribution("xview_loc_ros")  # raises if pip uninstalled it from this env
    assert not str(dist.locate_file("")).startswith(str(prefix))


def test_the_installed_node_executable_runs_the_node(prefix):
    """The launcher imports the installed package and reaches the node's own parameter checks."""
    site = next(prefix.glob("lib/python3*/site-packages"))
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its python3
    }
    exe = prefix / "lib" / "xview_loc_ros" / "localizer_node"
    params = prefix / "share" / "xview_loc_ros" / "config" / "localizer.yaml"  # model_path "": refused
    r = subprocess.run(
        [str(exe), "--ros-args", "--params-file", str(params)], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "xview_localizer: error: parameter 'model_path': required" in r.stderr
