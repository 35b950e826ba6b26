# SPDX-License-Identifier: Apache-2.0
"""What ``launch/localize.launch.py`` decides, as plain functions (ROS-free, testable without launch).

The launch file only reads its arguments and wires these results into launch actions:

- :func:`localizer_parameters`: the node's ``parameters=`` list (the checked params file, then the
  overrides given on the command line), raising :class:`LaunchArgumentError` for a bad params file
  before any process starts, so a refused launch leaves nothing running;
- :func:`rviz_plan`: whether to start RViz 2 (``rviz:=true`` and the ``rviz2`` package installed)
  and the warning to print when it was asked for but is missing (a vehicle on ros-base).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

from xview_loc_ros.params import NODE_NAME
from xview_loc_ros.params_file import ParamsFileError, check_params_file

RVIZ_PACKAGE = "rviz2"
# launch's boolean conditions (IfCondition) accept exactly these, case-insensitive
_TRUE = ("true", "1")
_FALSE = ("false", "0")


class LaunchArgumentError(ValueError):
    """A launch argument the launch refuses; the message starts with the argument's name."""


def launch_bool(name: str, value: str) -> bool:
    """A boolean launch argument, read as launch's IfCondition reads it (true/false/1/0, any case)."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise LaunchArgumentError(f"{name}:={value!r}: expected true or false")


def node_overrides(use_sim_time: str, model_path: str = "", tile_source: str = "") -> Dict[str, Any]:
    """Parameters the launch arguments set over the params file: ``use_sim_time`` always, ``model_path``
    and ``tile_source`` only when given (empty = keep the file's)."""
    overrides: Dict[str, Any] = {"use_sim_time": launch_bool("use_sim_time", use_sim_time)}
    if model_path:
        overrides["model_path"] = model_path
    if tile_source:
        overrides["tile_source"] = tile_source
    return overrides


def localizer_parameters(
    params_file: str, use_sim_time: str, model_path: str = "", tile_source: str = ""
) -> List[Union[str, Dict[str, Any]]]:
    """The localizer Node's ``parameters=``: ``[params_file, overrides]`` (later entries win in launch_ros).

    The params file is checked first (:func:`xview_loc_ros.params_file.check_params_file`): launch_ros
    would only warn about a missing file and start the node on its built-in defaults. Raises
    :class:`LaunchArgumentError` naming ``params_file``."""
    if not params_file:
        raise LaunchArgumentError(
            "params_file: empty; give the parameters YAML (e.g. the package's config/localizer.yaml)"
        )
    try:
        check_params_file(params_file, NODE_NAME, what="params_file")
    except ParamsFileError as e:
        raise LaunchArgumentError(str(e)) from None
    return [params_file, node_overrides(use_sim_time, model_path, tile_source)]


def package_prefix(package: str, lookup: Callable[[str], str]) -> Optional[str]:
    """The install prefix of ``package``, or None when it is not installed.

    ``lookup``: ``ament_index_python.packages.get_package_prefix``, passed in by the launch file so
    this module stays importable without ament; its PackageNotFoundError is a KeyError subclass
    (ament_index_python.packages)."""
    try:
        return lookup(package)
    except KeyError:
        return None


@dataclass(frozen=True)
class RvizPlan:
    """start: add the RViz 2 node. warning: one line to print when RViz was asked for but is missing."""

    start: bool
    warning: Optional[str] = None


def rviz_plan(rviz: str, lookup: Callable[[str], str]) -> RvizPlan:
    """Start RViz 2 only when ``rviz:=true`` and the ``rviz2`` package is in the ament index.

    A vehicle on ros-base has no rviz2; asking for it there must not abort the launch (launch_ros
    fails the whole launch on an unknown package, after the localizer may have started)."""
    if not launch_bool("rviz", rviz):
        return RvizPlan(False)
    if package_prefix(RVIZ_PACKAGE, lookup) is None:
        return RvizPlan(
            False,
            f"rviz:=true but package '{RVIZ_PACKAGE}' is not installed (not in AMENT_PREFIX_PATH): "
            f"starting the localizer without RViz (install ros-$ROS_DISTRO-rviz2 on a desktop)",
        )
    return RvizPlan(True)
