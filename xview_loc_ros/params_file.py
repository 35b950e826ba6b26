# SPDX-License-Identifier: Apache-2.0
"""Checks of a ROS 2 parameters YAML file for the localizer node, before the node trusts it.

ROS-free. rcl and launch_ros are lenient where a vehicle should not be: launch_ros only warns about a
missing ``params_file`` and starts the node on its built-in defaults, and rcl silently ignores a
section whose node name has a typo and every parameter name the node does not declare. This module
refuses all of those with one message naming the file and the problem:

- :func:`check_params_file` (the launch file and the node call it): the file is readable, valid
  YAML, has a section for the node (``xview_localizer``, ``/xview_localizer``, ``/**``, nested
  namespaces, ``*``/``**`` wildcards as rcl matches them) with a ``ros__parameters`` mapping, and
  every parameter name in it is a field of :class:`~xview_loc_ros.params.LocalizerParams` or a
  parameter rclpy declares itself (``use_sim_time``, ...); unknown names come with close matches.
- :func:`ros_args_params_files` / :func:`ros_args_node_name`: which ``--params-file`` files and
  which node name and namespace a node's command line gives rcl (``--ros-args`` sections).
- :func:`check_ros_args` ties them together for the node's ``main``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import fields
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import yaml

from xview_loc_ros.params import NODE_NAME, LocalizerParams

# parameters every rclpy node declares itself (rclpy.time_source.USE_SIM_TIME_NAME,
# rclpy.type_description_service.START_TYPE_DESCRIPTION_SERVICE_PARAM, Jazzy and later), so a
# params file may set them; launch_ros writes use_sim_time into the file it passes for overrides
ROS_NODE_PARAMETERS: FrozenSet[str] = frozenset({"use_sim_time", "start_type_description_service"})
# rclpy's QoS overrides (rclpy.qos_overriding_options): qos_overrides.<topic>.<publisher|subscription>.<policy>
QOS_OVERRIDES_PREFIX = "qos_overrides."
ROS_PARAMETERS_KEY = "ros__parameters"


class ParamsFileError(ValueError):
    """A parameters file the node must not start with; the message names the file (and the argument)."""


def known_parameter_names() -> FrozenSet[str]:
    """Every parameter name the localizer node accepts: the fields of LocalizerParams and rclpy's own."""
    return frozenset(f.name for f in fields(LocalizerParams)) | ROS_NODE_PARAMETERS


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested parameter mappings flattened to dotted names, as rcl reads them (a.b: 1 -> "a.b")."""
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _sections(doc: Mapping[Any, Any], path: Tuple[str, ...] = ()) -> List[Tuple[str, Any]]:
    """(node key, its ros__parameters value) for every section of a params file.

    rcl joins nested keys above ``ros__parameters`` into one node name (``ns: {node: {ros__parameters:
    ...}}`` is ``/ns/node``), so the walk does too."""
    found: List[Tuple[str, Any]] = []
    for key, value in doc.items():
        if key == ROS_PARAMETERS_KEY:
            found.append(("/" + "/".join(p.strip("/") for p in path if p.strip("/")), value))
        elif isinstance(value, Mapping):
            found.extend(_sections(value, path + (str(key),)))
    return found


def node_key_matches(key: str, fully_qualified_name: str) -> bool:
    """True when a params-file node key applies to the node (rcl's rules: a key is absolute,
    ``*`` matches one name token, ``**`` any number of tokens, zero included)."""
    pattern = ""
    for token in key.strip("/").split("/"):
        if token == "**":
            pattern += "(?:/[^/]+)*"
        elif token == "*":
            pattern += "/[^/]+"
        elif token:
            pattern += "/" + re.escape(token)
    return re.fullmatch(pattern, fully_qualified_name) is not None


def fully_qualified_name(node_name: str = NODE_NAME, namespace: str = "/") -> str:
    """'/ns/name' from a node name and a namespace (relative or absolute)."""
    ns = "/".join(t for t in namespace.split("/") if t)
    return f"/{ns}/{node_name}" if ns else f"/{node_name}"


def _unknown_names_message(unknown: Sequence[str], known: FrozenSet[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        parts.append(f"'{name}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return f"unknown parameter{'s' if len(parts) > 1 else ''} " + ", ".join(parts)


def check_params_file(
    path: str | os.PathLike,
    node_name: str = NODE_NAME,
    namespace: str = "/",
    what: str = "params_file",
) -> Dict[str, Any]:
    """Refuse a parameters file the localizer node would start with silently wrong parameters.

    ``path``: the YAML file. ``node_name``/``namespace``: the node the file is for (the default name
    ``xview_localizer`` in the root namespace unless remapped). ``what``: how the caller names the
    file in messages (the launch argument ``params_file``, the node's ``--params-file``).
    Returns the parameters the file sets for the node (dotted names, later sections win, as in rcl).
    Raises :class:`ParamsFileError` naming ``what`` and the path: missing, unreadable or not YAML; no
    section for the node with a ``ros__parameters`` mapping; a parameter name the node does not have
    (with its close matches).
    """
    label = f"{what} {os.fspath(path)!s}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ParamsFileError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ParamsFileError(f"{label}: is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsFileError(f"{label}: not readable ({type(e).__name__}: {e})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsFileError(f"{label}: not valid YAML ({e})") from None
    expected = f"{node_name}: {{{ROS_PARAMETERS_KEY}: {{...}}}} (or /**)"
    if not isinstance(doc, Mapping):
        raise ParamsFileError(f"{label}: expected a mapping like {expected}, got {type(doc).__name__}")
    fqn = fully_qualified_name(node_name, namespace)
    sections = _sections(doc)
    mine = [(key, value) for key, value in sections if node_key_matches(key, fqn)]
    if not mine:
        keys = [key for key, _ in sections] or [str(k) for k in doc]
        close = difflib.get_close_matches(fqn, keys, n=3) + difflib.get_close_matches(
            node_name, [k.rsplit("/", 1)[-1] for k in keys], n=3
        )
        hint = f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
        raise ParamsFileError(
            f"{label}: no section for node {fqn} with {ROS_PARAMETERS_KEY}; expected {expected}; "
            f"found {', '.join(keys) or 'none'}{hint}"
        )
    known = known_parameter_names()
    parameters: Dict[str, Any] = {}
    for key, value in mine:
        if not isinstance(value, Mapping):
            raise ParamsFileError(
                f"{label}: '{key}' {ROS_PARAMETERS_KEY} must be a mapping of parameter names, got {type(value).__name__}"
            )
        flat = _flatten(value)
        unknown = [n for n in flat if n not in known and not n.startswith(QOS_OVERRIDES_PREFIX)]
        if unknown:
            raise ParamsFileError(f"{label}: section '{key}': {_unknown_names_message(unknown, known)}")
        parameters.update(flat)
    return parameters


def _ros_sections(argv: Sequence[str]) -> List[List[str]]:
    """The argument lists inside ``--ros-args ... [--]`` sections of a command line."""
    sections: List[List[str]] = []
    current: Optional[List[str]] = None
    for arg in argv:
        if arg == "--ros-args":
            current = []
            sections.append(current)
        elif arg == "--" and current is not None:
            current = None
        elif current is not None:
            current.append(arg)
    return sections


def ros_args_params_files(argv: Sequence[str]) -> List[str]:
    """The files a command line passes to rcl with ``--params-file FILE``, in order."""
    files = []
    for section in _ros_sections(argv):
        for flag, value in zip(section, section[1:]):
            if flag == "--params-file":
                files.append(value)
    return files


def ros_args_node_name(argv: Sequence[str], node_name: str = NODE_NAME) -> Tuple[str, str]:
    """(node name, namespace) after the command line's remaps (``-r __node:=N``, ``-r __ns:=/ns``,
    also with a ``NODE:`` prefix naming this node)."""
    name, namespace = node_name, "/"
    for section in _ros_sections(argv):
        for flag, rule in zip(section, section[1:]):
            if flag not in ("-r", "--remap") or ":=" not in rule:
                continue
            lhs, value = rule.split(":=", 1)
            target, _, what = lhs.rpartition(":")
            if target and target != node_name:
                continue  # a remap for another node in the same process
            if what in ("__node", "__name"):
                name = value
            elif what == "__ns":
                namespace = value
    return name, namespace


def check_ros_args(argv: Sequence[str], node_name: str = NODE_NAME) -> List[str]:
    """Check every ``--params-file`` of a node's command line (see :func:`check_params_file`).

    ``argv``: the arguments rclpy.init gets (``sys.argv`` when None was passed). Returns the files
    checked. Raises :class:`ParamsFileError`."""
    name, namespace = ros_args_node_name(argv, node_name)
    files = ros_args_params_files(argv)
    for path in files:
        check_params_file(path, name, namespace, what="--params-file")
    return files
