# SPDX-License-Identifier: Apache-2.0
"""The launch file and RViz config, checked without a ROS install (launch/launch_ros are not on PyPI):
only documented launch APIs, its arguments, files that setup.py installs, and its wiring of
xview_loc_ros.launch_logic, run against recording stand-ins of the launch classes."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import sys
import types
from glob import glob
from pathlib import Path

import pytest
import yaml

from xview_loc_ros.launch_logic import LaunchArgumentError

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "localize.launch.py"
ALLOWED = {
    "launch",
    "launch.actions",
    "launch.substitutions",
    "launch_ros.actions",
    "ament_index_python.packages",
    "os",
    "xview_loc_ros.launch_logic",
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
        "OpaqueFunction",
        "LaunchConfiguration",
        "Node",
        "Shutdown",
        "LogInfo",
        "get_package_share_directory",
        "get_package_prefix",
        "localizer_parameters",
        "rviz_plan",
    } <= names
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in _tree().body)


def test_launch_file_stays_minimal():
    """Decisions belong in xview_loc_ros.launch_logic (tested directly): no branching on values here
    beyond the plan's two fields."""
    ifs = [n for n in ast.walk(_tree()) if isinstance(n, (ast.If, ast.IfExp))]
    assert [ast.unparse(n.test) for n in ifs] == ["rviz.warning", "rviz.start"]
    assert len(LAUNCH.read_text().splitlines()) < 90


def _calls(name):
    return [n for n in ast.walk(_tree()) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _kw(call, key):
    return next(k.value for k in call.keywords if k.arg == key)


def test_launch_declares_its_arguments_and_nodes():
    arguments = next(n for n in _tree().body if isinstance(n, ast.Assign) and n.targets[0].id == "ARGUMENTS")
    declared = {k.value for k in arguments.value.keys}
    assert declared == {"params_file", "model_path", "tile_source", "use_sim_time", "rviz"}
    assert all(v.value for v in arguments.value.values)  # every argument documented
    nodes = {_kw(c, "executable").value: c for c in _calls("Node")}
    assert set(nodes) == {"localizer_node", "rviz2"}
    loc = nodes["localizer_node"]
    assert _kw(loc, "package").value == "xview_loc_ros" and _kw(loc, "name").value == "xview_localizer"
    assert ast.unparse(_kw(loc, "on_exit")).startswith("Shutdown(")


def test_launch_points_at_installed_files():
    setup = (ROOT / "setup.py").read_text()
    assert '(f"lib/{PACKAGE}", ["scripts/localizer_node"])' in setup
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


# --- the launch file run against recording stand-ins of launch's classes (launch is not on PyPI).
# They keep the constructor arguments and model only LaunchConfiguration.perform (a dict lookup);
# ament_index_python is the real one, on a temporary AMENT_PREFIX_PATH.
class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stub(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


class _Config(_Recorded):
    def perform(self, context):
        return context[self.args[0]]


def _record(name):
    return type(name, (_Recorded,), {})


@pytest.fixture
def launch_file(tmp_path, monkeypatch):
    """(module, install prefix): the launch file imported against the stand-ins."""
    stubs = {
        "launch": _stub("launch", LaunchDescription=_record("LaunchDescription")),
        "launch.actions": _stub(
            "launch.actions",
            **{n: _record(n) for n in ("DeclareLaunchArgument", "LogInfo", "OpaqueFunction", "Shutdown")},
        ),
        "launch.substitutions": _stub("launch.substitutions", LaunchConfiguration=_Config),
        "launch_ros": _stub("launch_ros"),
        "launch_ros.actions": _stub("launch_ros.actions", Node=_record("Node")),
    }
    for name, mod in stubs.items():
        monkeypatch.setitem(sys.modules, name, mod)
    prefix = tmp_path / "prefix"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "xview_loc_ros").write_text("")
    shutil.copytree(ROOT / "config", prefix / "share" / "xview_loc_ros" / "config")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    spec = importlib.util.spec_from_file_location("localize_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, prefix


def _run(module, **given):
    """generate_launch_description, then its OpaqueFunction with the arguments' defaults and ``given``."""
    entities = module.generate_launch_description().args[0]
    context = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context.update(given)
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    return context, opaque.kwargs["function"](context)


def test_defaults_start_the_localizer_alone(launch_file):
    module, prefix = launch_file
    context, actions = _run(module)
    assert context["rviz"] == "false" and context["params_file"] == str(
        prefix / "share/xview_loc_ros/config/localizer.yaml"
    )
    (node,) = actions
    assert node.kwargs["executable"] == "localizer_node"
    assert node.kwargs["parameters"] == [context["params_file"], {"use_sim_time": False}]
    assert type(node.kwargs["on_exit"]).__name__ == "Shutdown"


def test_rviz_without_rviz2_warns_and_starts_the_localizer_only(launch_file):
    module, _ = launch_file
    _, actions = _run(module, rviz="true", model_path="/m/s.onnx")
    assert [type(a).__name__ for a in actions] == ["Node", "LogInfo"]
    assert actions[0].kwargs["parameters"][1] == {"use_sim_time": False, "model_path": "/m/s.onnx"}
    assert "'rviz2' is not installed" in actions[1].kwargs["msg"]


def test_rviz_with_rviz2_opens_the_packaged_view(launch_file):
    module, prefix = launch_file
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "rviz2").write_text("")
    _, actions = _run(module, rviz="true", use_sim_time="true")
    rviz = actions[-1]
    assert rviz.kwargs["executable"] == "rviz2"
    assert rviz.kwargs["arguments"] == ["-d", str(prefix / "share/xview_loc_ros/config/localize.rviz")]
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]


def test_a_missing_params_file_stops_the_launch_before_any_process(launch_file):
    module, _ = launch_file
    with pytest.raises(LaunchArgumentError, match=r"^params_file /no/such\.yaml: no such file"):
        _run(module, params_file="/no/such.yaml", rviz="true")


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
