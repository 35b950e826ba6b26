# SPDX-License-Identifier: Apache-2.0
"""The launch file and RViz config, checked without a ROS install (launch/launch_ros are not on PyPI):
only documented launch APIs, its arguments, and files that setup.py installs."""

from __future__ import annotations

import ast
import re
from glob import glob
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "localize.launch.py"
ALLOWED = {
    "launch",
    "launch.actions",
    "launch.conditions",
    "launch.substitutions",
    "launch_ros.actions",
    "ament_index_python.packages",
    "os",
}


def _tree():
    return ast.parse(LAUNCH.read_text())


def test_launch_imports_only_launch_apis():
    mods = set()
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module)
    assert mods <= ALLOWED, mods - ALLOWED
    names = {n.id for n in ast.walk(_tree()) if isinstance(n, ast.Name)}
    assert {
        "LaunchDescription",
        "DeclareLaunchArgument",
        "IfCondition",
        "LaunchConfiguration",
        "Node",
        "get_package_share_directory",
    } <= names
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in _tree().body)


def _calls(name):
    return [n for n in ast.walk(_tree()) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _kw(call, key):
    return next(k.value for k in call.keywords if k.arg == key)


def test_launch_declares_its_arguments_and_nodes():
    declared = {c.args[0].value for c in _calls("DeclareLaunchArgument")}
    assert declared == {"params_file", "model_path", "tile_source", "use_sim_time", "rviz"}
    for c in _calls("DeclareLaunchArgument"):
        assert _kw(c, "description").value  # every argument documented
    used = {c.args[0].value for c in _calls("LaunchConfiguration") if isinstance(c.args[0], ast.Constant)}
    looped = {
        e.value
        for f in ast.walk(_tree())
        if isinstance(f, ast.For) and isinstance(f.iter, ast.Tuple)
        for e in f.iter.elts
    }
    assert used | looped == declared
    nodes = {_kw(c, "executable").value: c for c in _calls("Node")}
    assert set(nodes) == {"localizer_node", "rviz2"}
    loc = nodes["localizer_node"]
    assert _kw(loc, "package").value == "xview_loc_ros" and _kw(loc, "name").value == "xview_localizer"
    assert isinstance(_kw(nodes["rviz2"], "condition"), ast.Call)


def test_launch_points_at_installed_files():
    setup = (ROOT / "setup.py").read_text()
    assert "localizer_node = xview_loc_ros.node:main" in setup
    src = LAUNCH.read_text()
    installed = {
        "launch": [Path(p).name for p in glob(str(ROOT / "launch" / "*launch.py"))],
        "config": [Path(p).name for p in glob(str(ROOT / "config" / "*.yaml")) + glob(str(ROOT / "config" / "*.rviz"))],
    }
    for folder, name in re.findall(r'os\.path\.join\(share, "(\w+)", "([\w.]+)"\)', src):
        assert name in installed[folder], (folder, name)
    assert re.search(r'"config", "localizer.yaml"', src) and re.search(r'"config", "localize.rviz"', src)
    assert "localize.launch.py" in installed["launch"]
    params = yaml.safe_load((ROOT / "config" / "localizer.yaml").read_text())
    assert list(params) == ["xview_localizer"] and "ros__parameters" in params["xview_localizer"]


def test_rviz_config_shows_the_node_outputs():
    cfg = yaml.safe_load((ROOT / "config" / "localize.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map"
    topics = {d["Class"]: d.get("Topic", {}).get("Value") for d in vm["Displays"]}
    maps = {d["Topic"]["Value"]: d for d in vm["Displays"] if d["Class"] == "rviz_default_plugins/Map"}
    assert set(maps) == {"/xview_localizer/heatmap_grid", "/xview_localizer/belief_grid"}
    assert all(d["Topic"]["Durability Policy"] == "Transient Local" for d in maps.values())
    assert topics["rviz_default_plugins/PoseWithCovariance"] == "/xview_localizer/pose"
    assert topics["rviz_default_plugins/Marker"] == "/xview_localizer/marker"
    assert topics["rviz_default_plugins/Image"] == "/xview_localizer/heatmap"
    # (transient local above: matches the latched grid publishers)
