# SPDX-License-Identifier: Apache-2.0
"""package.xml, checked: every dependency is a verified rosdep key (test/data/rosdep_keys.txt, checked
against ros/rosdistro), everything the node imports is declared, and the vehicle install stays lean
(no RViz, no training stack)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Set

ROOT = Path(__file__).resolve().parents[1]
KEYS_FILE = ROOT / "test" / "data" / "rosdep_keys.txt"
DEPEND_TAGS = ("depend", "exec_depend", "build_depend", "build_export_depend", "test_depend")
# third-party Python modules the node imports at module level -> their rosdep key
PYTHON_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "pyproj": "python3-pyproj",
    "yaml": "python3-yaml",
    "requests": "python3-requests",
    "urllib3": "python3-urllib3",
}
# imported by the node inside functions, for optional backends; the vehicle's backend is declared
OPTIONAL_BACKENDS = {"onnxruntime": "python3-onnxruntime-pip"}
WORKSTATION_ONLY = {"rviz2", "python3-torch", "python3-pytorch-pip", "python3-rosbags-pip", "python3-matplotlib"}


def verified_keys() -> Set[str]:
    lines = (line.strip() for line in KEYS_FILE.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def declared(tags=DEPEND_TAGS) -> Set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {(e.text or "").strip() for tag in tags for e in root.findall(tag)}


def test_the_verified_list_names_the_rosdistro_commit():
    assert "ros/rosdistro" in KEYS_FILE.read_text()
    assert any(len(w) == 40 and all(c in "0123456789abcdef" for c in w) for w in KEYS_FILE.read_text().split())


def test_every_dependency_is_a_verified_rosdep_key():
    unknown = declared() - verified_keys()
    assert not unknown, f"not in {KEYS_FILE.name} (check ros/rosdistro first): {sorted(unknown)}"


def _node_modules() -> list:
    """Files of the project modules that importing the node loads (a fresh interpreter)."""
    code = (
        "import json, sys; import xview_loc_ros.node; "
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
        "if n.split('.')[0] == 'xview_loc_ros' and getattr(m, '__file__', None))))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [Path(p) for p in json.loads(r.stdout.strip().splitlines()[-1])]


def _module_level_imports(path: Path) -> Set[str]:
    tops = set()
    for node in ast.parse(path.read_text()).body:  # module level only: in-function imports are optional
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def test_everything_the_node_imports_is_declared():
    imported: Set[str] = set()
    for path in _node_modules():
        imported |= _module_level_imports(path)
    third_party = imported - set(sys.stdlib_module_names) - {"xview_loc_ros"}
    ros = {m for m in third_party if m == "rclpy" or m.endswith(("_msgs", "_interfaces"))}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "nav_msgs", "diagnostic_msgs"} <= ros  # the scan works
    missing_ros = ros - declared(("depend", "exec_depend"))
    assert not missing_ros, f"message/ROS packages the node imports but package.xml lacks: {sorted(missing_ros)}"
    unmapped = third_party - ros - set(PYTHON_KEYS)
    assert not unmapped, f"map these modules to rosdep keys in PYTHON_KEYS: {sorted(unmapped)}"
    needed = {PYTHON_KEYS[m] for m in third_party - ros} | set(OPTIONAL_BACKENDS.values())
    assert needed <= declared(("depend", "exec_depend")), sorted(needed - declared())


def test_the_vehicle_install_pulls_no_rviz_and_no_training_stack():
    assert not declared() & WORKSTATION_ONLY, declared() & WORKSTATION_ONLY
    assert {"launch", "launch_ros", "ament_index_python"} <= declared(("exec_depend",))
