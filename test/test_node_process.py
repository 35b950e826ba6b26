# SPDX-License-Identifier: Apache-2.0
"""The node as a process (`xview-loc node --params-file`): start-up errors and clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from localizer_testbed import write_small_checkpoint, write_tiles

from xview_loc_ros.params import LocalizerParams

XVIEW = [sys.executable, "-m", "xview_testbed.cli"]


def _params_file(tmp: Path, **overrides) -> Path:
    values = LocalizerParams().to_dict()
    values.update(overrides)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump({"xview_localizer": {"ros__parameters": values}}))
    return path


def test_sigint_stops_the_node_promptly(tmp_path):
    ckpt = write_small_checkpoint(tmp_path / "small.pt")
    tiles = write_tiles(tmp_path / "tiles", radius=1)
    params = _params_file(tmp_path, model_path=str(ckpt), tile_source=f"xyz:{tiles}", backend="torch", device="cpu")
    proc = subprocess.Popen(
        XVIEW + ["node", "--params-file", str(params), "--ros-args", "-r", "gnss/fix:=/other/fix"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    ready = threading.Event()
    lines = []

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "ready:" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), "".join(lines)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=15)
        assert time.monotonic() - t0 < 10.0
        assert rc == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_invalid_parameter_fails_at_start_naming_it(tmp_path):
    params = _params_file(tmp_path, model_path="m.pt", tile_source="xyz:/nowhere", gate_chi2=-1.0)
    r = subprocess.run(XVIEW + ["node", "--params-file", str(params)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "parameter 'gate_chi2'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        XVIEW + ["node", "--params-file", str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "missing.yaml" in r.stderr


def test_params_file_typos_fail_at_start_instead_of_being_ignored(tmp_path):
    """rcl ignores an undeclared name and a section for another node; the node must not start on defaults."""
    params = _params_file(tmp_path, model_path="m.pt", tile_source="xyz:/nowhere")
    params.write_text(params.read_text().replace("gate_chi2:", "gate_chi:"))
    r = subprocess.run(XVIEW + ["node", "--params-file", str(params)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "'gate_chi' (did you mean gate_chi2?)" in r.stderr and "Traceback" not in r.stderr
    params.write_text(params.read_text().replace("xview_localizer:", "xview_localiser:"))
    r = subprocess.run(XVIEW + ["node", "--params-file", str(params)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no section for node /xview_localizer" in r.stderr, r.stderr
    # a remapped node reads its own section (and the check follows the remap)
    r = subprocess.run(
        XVIEW + ["node", "--params-file", str(params), "--ros-args", "-r", "__node:=xview_localiser"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "'gate_chi'" in r.stderr, r.stderr


def test_localizer_node_entry_point_refuses_a_params_file_typo_and_a_missing_file(tmp_path):
    """`ros2 run` / `ros2 launch` start node.main with --ros-args --params-file: the same refusals there."""
    params = _params_file(tmp_path, model_path="m.pt", tile_source="xyz:/nowhere")
    params.write_text(params.read_text().replace("gate_chi2:", "gate_chi:"))
    node = [sys.executable, "-m", "xview_loc_ros.node", "--ros-args", "--params-file"]
    r = subprocess.run(node + [str(params)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'gate_chi' (did you mean gate_chi2?)" in r.stderr, r.stderr
    r = subprocess.run(node + [str(tmp_path / "none.yaml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "none.yaml" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_builds_the_ros_arguments():
    from xview_loc_ros.cli import VEHICLE_COMMANDS, build_parser
    from xview_loc_ros.node_cli import ros_argv

    args = build_parser("xview-loc", "", VEHICLE_COMMANDS).parse_args(
        [
            "node",
            "--params-file",
            "p.yaml",
            "--tile-source",
            "xyz:/t",
            "--ros-args",
            "-r",
            "gnss/fix:=/f",
            "-p",
            "backend:=torch",
        ]
    )
    assert ros_argv(args) == [
        "xview-loc-node",
        "--ros-args",
        "--params-file",
        "p.yaml",
        "-p",
        "tile_source:=xyz:/t",
        "-r",
        "gnss/fix:=/f",
        "-p",
        "backend:=torch",
    ]
