# SPDX-License-Identifier: Apache-2.0
"""xview_loc_ros.params_file on real YAML files: what rcl/launch_ros would accept silently is refused."""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path

import pytest

from xview_loc_ros.params import LocalizerParams
from xview_loc_ros.params_file import (
    ParamsFileError,
    check_params_file,
    check_ros_args,
    known_parameter_names,
    node_key_matches,
    ros_args_node_name,
    ros_args_params_files,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_config_passes_and_sets_every_parameter():
    params = check_params_file(ROOT / "config" / "localizer.yaml")
    assert set(params) == {f.name for f in fields(LocalizerParams)}


def test_known_names_are_the_dataclass_fields_plus_rclpys_own():
    assert known_parameter_names() == {f.name for f in fields(LocalizerParams)} | {
        "use_sim_time",
        "start_type_description_service",
    }


@pytest.mark.parametrize(
    "key",
    ["xview_localizer", "/xview_localizer", "/**", "**", "/**/xview_localizer", "/*"],
)
def test_node_keys_rcl_applies_to_the_node_are_accepted(tmp_path, key):
    path = write(tmp_path, f"'{key}':\n  ros__parameters:\n    gate_chi2: 9.2\n    use_sim_time: true\n")
    assert check_params_file(path) == {"gate_chi2": 9.2, "use_sim_time": True}


def test_namespaced_nodes_match_nested_and_joined_keys(tmp_path):
    nested = write(tmp_path, "car1:\n  xview_localizer:\n    ros__parameters:\n      backend: onnxruntime\n")
    joined = write(tmp_path, "/car1/xview_localizer:\n  ros__parameters:\n    backend: onnxruntime\n", "j.yaml")
    for path in (nested, joined):
        assert check_params_file(path, namespace="/car1") == {"backend": "onnxruntime"}
        with pytest.raises(ParamsFileError, match="no section for node /xview_localizer"):
            check_params_file(path)  # the same file, the node in the root namespace


def test_key_matching_follows_rcl_wildcards():
    assert node_key_matches("/**", "/a/b/xview_localizer")
    assert node_key_matches("/**/xview_localizer", "/xview_localizer")
    assert node_key_matches("/*/xview_localizer", "/car1/xview_localizer")
    assert not node_key_matches("/*/xview_localizer", "/xview_localizer")
    assert not node_key_matches("/xview_localizer", "/car1/xview_localizer")
    assert not node_key_matches("/other", "/xview_localizer")


def test_a_missing_file_is_refused_naming_the_argument(tmp_path):
    with pytest.raises(ParamsFileError, match=r"^params_file /no/such\.yaml: no such file$"):
        check_params_file("/no/such.yaml")
    with pytest.raises(ParamsFileError, match=r"^--params-file .*: is a directory"):
        check_params_file(tmp_path, what="--params-file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_refused(tmp_path):
    path = write(tmp_path, "xview_localizer:\n  ros__parameters: {}\n")
    path.chmod(0)
    with pytest.raises(ParamsFileError, match="not readable"):
        check_params_file(path)


def test_binary_garbage_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ParamsFileError, match="not readable|not valid YAML"):
        check_params_file(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("xview_localizer:\n  ros__parameters:\n    gate_chi2: [1\n", "not valid YAML"),
        ("", "expected a mapping like xview_localizer: {ros__parameters: {...}} (or /**), got NoneType"),
        ("- a\n- b\n", "got list"),
        ("xview_localizer:\n  gate_chi2: 9.0\n", "no section for node /xview_localizer with ros__parameters"),
        ("xview_localizer:\n  ros__parameters: 3\n", "must be a mapping of parameter names, got int"),
    ],
)
def test_malformed_files_are_refused(tmp_path, text, message):
    with pytest.raises(ParamsFileError, match=re.escape(message)):
        check_params_file(write(tmp_path, text))


def test_a_misspelt_node_name_is_refused_with_the_close_match(tmp_path):
    path = write(tmp_path, "xview_localiser:\n  ros__parameters:\n    gate_chi2: 9.0\n")
    with pytest.raises(ParamsFileError) as e:
        check_params_file(path)
    assert "found /xview_localiser" in str(e.value) and "did you mean /xview_localiser" in str(e.value)


def test_unknown_parameters_are_refused_with_close_matches(tmp_path):
    path = write(
        tmp_path,
        "xview_localizer:\n  ros__parameters:\n    gate_chi: 9.0\n    model_pth: a.onnx\n    colour: red\n",
    )
    with pytest.raises(ParamsFileError) as e:
        check_params_file(path)
    msg = str(e.value)
    assert msg.startswith(f"params_file {path}: section '/xview_localizer': unknown parameters ")
    assert "'gate_chi' (did you mean gate_chi2?)" in msg
    assert "'model_pth' (did you mean model_path" in msg
    assert "'colour'" in msg and "'colour' (" not in msg  # nothing close: no suggestion


def test_nested_parameters_are_dotted_and_qos_overrides_are_rclpys(tmp_path):
    ok = write(
        tmp_path,
        "xview_localizer:\n  ros__parameters:\n    qos_overrides:\n      /gnss/fix:\n        subscription:\n"
        "          depth: 5\n",
    )
    assert check_params_file(ok) == {"qos_overrides./gnss/fix.subscription.depth": 5}
    bad = write(tmp_path, "xview_localizer:\n  ros__parameters:\n    gate:\n      chi2: 9.0\n", "b.yaml")
    with pytest.raises(ParamsFileError, match="'gate.chi2'"):
        check_params_file(bad)


def test_later_sections_win_and_other_nodes_sections_are_ignored(tmp_path):
    path = write(
        tmp_path,
        "/**:\n  ros__parameters:\n    use_sim_time: true\n    gate_chi2: 5.0\n"
        "xview_localizer:\n  ros__parameters:\n    gate_chi2: 9.0\n"
        "camera_driver:\n  ros__parameters:\n    exposure_us: 200\n",
    )
    assert check_params_file(path) == {"use_sim_time": True, "gate_chi2": 9.0}


def test_ros_args_give_the_params_files_and_the_remapped_name():
    argv = [
        "localizer_node",
        "--ros-args",
        "-r",
        "__node:=loc2",
        "-r",
        "__ns:=/car1",
        "--params-file",
        "/a.yaml",
        "--",
        "--params-file",  # after "--": not a ROS argument
        "/not_ros.yaml",
        "--ros-args",
        "--params-file",
        "/b.yaml",
        "-r",
        "other_node:__node:=x",  # a remap aimed at another node
    ]
    assert ros_args_params_files(argv) == ["/a.yaml", "/b.yaml"]
    assert ros_args_node_name(argv) == ("loc2", "/car1")
    assert ros_args_node_name(["n"]) == ("xview_localizer", "/")


def test_check_ros_args_checks_every_file_for_the_remapped_node(tmp_path):
    good = write(tmp_path, "/car1/loc2:\n  ros__parameters:\n    backend: onnxruntime\n")
    overrides = write(tmp_path, "/**:\n  ros__parameters:\n    use_sim_time: false\n", "launch_params.yaml")
    argv = ["x", "--ros-args", "-r", "__node:=loc2", "-r", "__ns:=/car1", "--params-file", str(good)]
    assert check_ros_args(argv + ["--params-file", str(overrides)]) == [str(good), str(overrides)]
    with pytest.raises(ParamsFileError, match=r"^--params-file .*: no section for node /xview_localizer"):
        check_ros_args(["x", "--ros-args", "--params-file", str(good)])
    with pytest.raises(ParamsFileError, match="^--params-file /gone.yaml: no such file"):
        check_ros_args(argv + ["--params-file", "/gone.yaml"])
    assert check_ros_args(["x"]) == []
