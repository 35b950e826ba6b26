# SPDX-License-Identifier: Apache-2.0
"""xview_loc_ros.launch_logic: what the launch file decides, with real params files and a real ament index."""

from __future__ import annotations

from pathlib import Path

import pytest
from ament_index_python.packages import get_package_prefix

from xview_loc_ros.launch_logic import (
    LaunchArgumentError,
    RvizPlan,
    launch_bool,
    localizer_parameters,
    node_overrides,
    package_prefix,
    rviz_plan,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "config" / "localizer.yaml")


def ament_prefix(tmp_path: Path, monkeypatch, *packages: str) -> Path:
    """An install prefix holding only ``packages`` (their ament index markers), alone on AMENT_PREFIX_PATH."""
    index = tmp_path / "prefix" / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    for p in packages:
        (index / p).write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))
    return tmp_path / "prefix"


def test_launch_bool_reads_what_ifcondition_accepts():
    assert launch_bool("rviz", "true") and launch_bool("rviz", "True") and launch_bool("rviz", "1")
    assert not launch_bool("rviz", "false") and not launch_bool("rviz", "FALSE") and not launch_bool("rviz", "0")
    with pytest.raises(LaunchArgumentError, match=r"^rviz:='yes': expected true or false"):
        launch_bool("rviz", "yes")


def test_overrides_keep_the_files_values_unless_given():
    assert node_overrides("false") == {"use_sim_time": False}
    assert node_overrides("true", "/m/student.onnx", "mbtiles:/maps/c.mbtiles") == {
        "use_sim_time": True,
        "model_path": "/m/student.onnx",
        "tile_source": "mbtiles:/maps/c.mbtiles",
    }


def test_localizer_parameters_are_the_checked_file_then_the_overrides():
    assert localizer_parameters(CONFIG, "true", "/m/s.onnx") == [
        CONFIG,
        {"use_sim_time": True, "model_path": "/m/s.onnx"},
    ]


def test_a_missing_or_wrong_params_file_stops_the_launch(tmp_path):
    with pytest.raises(LaunchArgumentError, match=r"^params_file /no/such\.yaml: no such file"):
        localizer_parameters("/no/such.yaml", "false")
    with pytest.raises(LaunchArgumentError, match=r"^params_file: empty"):
        localizer_parameters("", "false")
    typo = tmp_path / "typo.yaml"
    typo.write_text("xview_localizer:\n  ros__parameters:\n    tile_sourse: xyz:/t\n")
    with pytest.raises(LaunchArgumentError, match=r"'tile_sourse' \(did you mean tile_source"):
        localizer_parameters(str(typo), "false")


def test_rviz_starts_only_when_asked_and_installed(tmp_path, monkeypatch):
    prefix = ament_prefix(tmp_path, monkeypatch, "rviz2", "xview_loc_ros")
    assert package_prefix("rviz2", get_package_prefix) == str(prefix)
    assert rviz_plan("true", get_package_prefix) == RvizPlan(True)
    assert rviz_plan("false", get_package_prefix) == RvizPlan(False)


def test_rviz_missing_is_a_warning_not_a_failure(tmp_path, monkeypatch):
    ament_prefix(tmp_path, monkeypatch, "xview_loc_ros")  # a vehicle: ros-base, no rviz2
    assert package_prefix("rviz2", get_package_prefix) is None
    plan = rviz_plan("true", get_package_prefix)
    assert not plan.start and "package 'rviz2' is not installed" in plan.warning
    assert rviz_plan("false", get_package_prefix) == RvizPlan(False)  # not asked: nothing to say
