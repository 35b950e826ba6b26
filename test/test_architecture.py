# SPDX-License-Identifier: Apache-2.0
"""docs/ARCHITECTURE.md, checked: import directions between packages and stages, project imports at
module level only, no private names reached across modules, and a node import that stays lean."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xview_loc_ros", "offline_adapt", "xview_testbed")
ROS_EDGE = {"xview_loc_ros.node", "xview_loc_ros.ros_msgs", "xview_loc_ros.node_cli"}
ROS_IMPORTS = (
    "rclpy",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "std_msgs",
    "visualization_msgs",
    "diagnostic_msgs",
    "builtin_interfaces",
    "rcl_interfaces",
    "lifecycle_msgs",
    "tf2_msgs",
)
HEAVY_THIRD_PARTY = ("torch", "matplotlib", "tensorrt") + ROS_IMPORTS
# offline_adapt stage -> the stages it may import (ARCHITECTURE.md, "offline_adapt, by stage")
STAGE_DEPS: Dict[str, Set[str]] = {
    "data": {"data"},
    "evaluation": {"data", "evaluation"},
    "train": {"data", "evaluation", "train"},
    "adapt": {"data", "evaluation", "train", "adapt"},
    "export": {"data", "export"},
    "retrieval": {"data", "retrieval"},
    "": {"data", "evaluation", "train", "adapt", "export", "retrieval", ""},  # offline_adapt.cli / __main__
}


@dataclass(frozen=True)
class Imp:
    module: str  # importing module
    target: str  # imported module (resolved, absolute)
    names: tuple  # names imported with "from target import ..."
    in_function: bool
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files() -> Iterator[Path]:
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def imports_of(path: Path) -> List[Imp]:
    mod = module_name(path)
    found: List[Imp] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Imp(mod, a.name, (), in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}:{child.lineno}: relative import (the project uses absolute imports)"
                found.append(
                    Imp(mod, child.module or "", tuple(a.name for a in child.names), in_function, child.lineno)
                )
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def project_imports() -> List[Imp]:
    out = []
    for path in source_files():
        for imp in imports_of(path):
            if imp.target.split(".")[0] in PACKAGES:
                # "from pkg import sub" names a submodule when one exists
                subs = [f"{imp.target}.{n}" for n in imp.names if _is_module(f"{imp.target}.{n}")]
                out.extend(Imp(imp.module, t, (), imp.in_function, imp.line) for t in subs or [imp.target])
    return out


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def group(module: str) -> str:
    """core | edge | offline_adapt.<stage> | testbed"""
    top = module.split(".")[0]
    if top == "xview_loc_ros":
        return "edge" if module in ROS_EDGE else "core"
    if top == "offline_adapt":
        parts = module.split(".")
        stage = parts[1] if len(parts) > 1 and parts[1] in STAGE_DEPS else ""
        return f"offline_adapt.{stage}"
    return "testbed"


def why_forbidden(src: str, dst: str) -> Optional[str]:
    gs, gd = group(src), group(dst)
    if gs == "testbed" or gs == gd:
        return None
    if gs == "core":
        return "the core imports only the core"
    if gs == "edge":
        return None if gd == "core" else "the ROS edge imports only the core"
    # offline_adapt
    if gd == "core":
        return None
    if gd.startswith("offline_adapt."):
        stage_s, stage_d = gs.split(".", 1)[1], gd.split(".", 1)[1]
        return (
            None
            if stage_d in STAGE_DEPS[stage_s]
            else f"stage {stage_s or 'cli'} may not import stage {stage_d or 'cli'}"
        )
    return f"offline_adapt may not import {gd}"


def test_import_directions_follow_architecture_md():
    bad = [
        f"{i.module}:{i.line} imports {i.target}: {why}"
        for i in project_imports()
        if (why := why_forbidden(i.module, i.target))
    ]
    assert not bad, "\n".join(bad)


def test_the_core_never_imports_ros():
    bad = []
    for path in source_files():
        mod = module_name(path)
        if group(mod) != "core":
            continue
        bad += [f"{mod}:{i.line} imports {i.target}" for i in imports_of(path) if i.target.split(".")[0] in ROS_IMPORTS]
    assert not bad, "\n".join(bad)


def heavy_modules() -> Set[str]:
    """Project modules that load a heavy dependency (torch, rclpy and ROS messages, matplotlib) when
    imported, directly or through their module-level project imports."""
    top: Dict[str, Set[str]] = {}
    heavy: Set[str] = set()
    for path in source_files():
        mod = module_name(path)
        top[mod] = set()
        if any(i.target.split(".")[0] in HEAVY_THIRD_PARTY for i in imports_of(path) if not i.in_function):
            heavy.add(mod)
    for i in project_imports():
        if not i.in_function:
            top[i.module].add(i.target)
    changed = True
    while changed:
        changed = False
        for mod, deps in top.items():
            if mod not in heavy and deps & heavy:
                heavy.add(mod)
                changed = True
    return heavy


def test_project_imports_sit_at_module_level():
    """An import inside a function hides the real graph. It is allowed only where it keeps a light
    module light: a heavy target (torch, rclpy, matplotlib behind it) imported by a module that
    does not load one itself (command lines that must answer --help and refuse bad options at
    once; the ONNX-only vehicle that has no torch)."""
    heavy = heavy_modules()
    bad = [
        f"{i.module}:{i.line} imports {i.target} inside a function"
        + (" (already heavy: hoist it)" if i.module in heavy else " (light target: hoist it)")
        for i in project_imports()
        if i.in_function and (i.module in heavy or i.target not in heavy)
    ]
    assert not bad, "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for path in source_files():
        tree = ast.parse(path.read_text())
        mod = module_name(path)
        aliases = {}  # local name -> project module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{mod}:{node.lineno} imports private {node.module}.{a.name}")
                    if _is_module(f"{node.module}.{a.name}"):
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in PACKAGES and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{mod}:{node.lineno} reaches private {aliases[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_importing_the_node_stays_off_training_and_the_test_bed():
    code = (
        "import sys, xview_loc_ros.node; print(sorted(m for m in sys.modules if m.startswith("
        "('offline_adapt', 'matplotlib', 'xview_testbed', 'xview_loc_ros.synth'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_checker_sees_a_forbidden_import():
    """The direction rules must be able to fail."""
    assert why_forbidden("xview_loc_ros.localizer", "offline_adapt.data.dataset")
    assert why_forbidden("xview_loc_ros.geo", "xview_loc_ros.node")
    assert why_forbidden("offline_adapt.data.extract", "offline_adapt.adapt.pipeline")
    assert why_forbidden("offline_adapt.export.cli", "xview_testbed.synth")
    assert why_forbidden("offline_adapt.data.extract", "xview_loc_ros.ros_msgs")
    assert why_forbidden("xview_testbed.demo", "offline_adapt.cli") is None
    assert why_forbidden("xview_loc_ros.node", "xview_loc_ros.localizer") is None


def test_every_source_file_carries_the_spdx_licence_header():
    files = [p for pkg in (*PACKAGES, "bench", "test", "launch", "tools") for p in sorted((ROOT / pkg).rglob("*.py"))]
    files += [ROOT / "setup.py"] + sorted((ROOT / "scripts").iterdir())  # scripts/: installed executables
    missing = [
        str(p.relative_to(ROOT))
        for p in files
        if "# SPDX-License-Identifier: Apache-2.0" not in p.read_text().split("\n", 3)[:2]
    ]
    assert not missing, missing
