# SPDX-License-Identifier: Apache-2.0
"""A student step under torchrun with 2 CPU processes (gloo): the multi-GPU path of the adaptation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pairs_testdata import write_random_pairs

from offline_adapt.cli import main as adapt_main
from xview_loc_ros.models import build_model, load_checkpoint, save_checkpoint


@pytest.mark.timeout(300)
def test_torchrun_two_processes_train_a_student(tmp_path):
    data = write_random_pairs(
        tmp_path / "data", n=12, size_px=64, ground_size=(32, 128), splits=("train", "train", "val")
    )
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "teacher.pt", build_model("small", aerial_size=64, ground_size=[32, 128], mpp=0.5))
    common = [
        "--teacher",
        str(tmp_path / "teacher.pt"),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--batch",
        "2",
        "--pseudo-labels",  # random pairs come from no drive
        "teacher",
    ]
    assert adapt_main(["pseudo-label", *common]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "offline_adapt",
            "train-student",
            "--stage",
            "aux",
            *common,
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, ckpt = load_checkpoint(tmp_path / "run" / "aux" / "student.pt")
    hist = ckpt["lineage"]
    assert hist["trained_on"] == 8 and hist["selected_epoch"] == 1
    last = torch.load(tmp_path / "run" / "aux" / "last.pt", weights_only=True)
    assert isinstance(last["rng"], list) and len(last["rng"]) == 2  # both ranks' RNG states: ran as 2 processes
    t, _ = load_checkpoint(tmp_path / "teacher.pt")
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), t.state_dict().values()))
