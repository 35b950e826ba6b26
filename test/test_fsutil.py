# SPDX-License-Identifier: Apache-2.0
"""Durable atomic writes: the data is flushed before the rename and the rename before success."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def disk_log(monkeypatch):
    """Every os.fsync (by the path its descriptor names) and os.replace, in order.

    Power loss cannot be simulated in a test, so the calls are what can be checked: without them the
    kernel may persist a rename before the data it names, and a power cut leaves an empty file behind
    a valid name."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def assert_durable(events, target: Path) -> None:
    """``target`` was renamed into place from a file flushed before, and its folder flushed after."""
    i = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(target))
    tmp = events[i][1]
    assert ("fsync", tmp) in events[:i], f"{target}: data not flushed before the rename"
    assert ("fsync", str(target.parent)) in events[i + 1 :], f"{target}: rename not flushed"


def test_checkpoint_is_flushed_before_its_rename(disk_log, tmp_path):
    from xview_loc_ros.models import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", _tiny_model())
    assert_durable(disk_log, tmp_path / "last.pt")


def _tiny_model():
    import torch

    net = torch.nn.Linear(2, 2)
    net.config = {"arch": "test"}
    return net


def test_engine_and_its_sidecar_are_flushed(disk_log, tmp_path):
    from xview_loc_ros.inference.engine_cache import EngineKey, store_engine
    from xview_loc_ros.inference.modelfile import sidecar_path

    key = EngineKey("gpu", "8.6", 132, "CUDA 12.6, tensorrt-cu12", "10.0", "ab" * 32, True, 1)
    engine = store_engine(tmp_path / "m.plan", b"engine", key, {"arch": "small"}, tmp_path / "m.onnx")
    assert_durable(disk_log, engine)
    assert_durable(disk_log, sidecar_path(engine))


def test_data_set_index_and_folder_are_flushed(disk_log, tmp_path):
    from offline_adapt.data.dataset import DatasetMeta, DatasetWriter, PairRecord, write_rgb

    meta = DatasetMeta("panorama", [8, 16], 360.0, 8, 1.0)
    with DatasetWriter(tmp_path / "ds", meta) as w:
        write_rgb(w.path("g.png"), np.zeros((8, 16, 3), np.uint8))
        write_rgb(w.path("a.png"), np.zeros((8, 8, 3), np.uint8))
        w.add(PairRecord("0", "g.png", "a.png", 1.0, 2.0, 1.0, 8))
    partial = tmp_path / "ds.partial"
    assert_durable(disk_log, partial / "index.jsonl")
    assert_durable(disk_log, partial / "dataset.json")
    i = disk_log.index(("replace", str(partial), str(tmp_path / "ds")))
    assert ("fsync", str(tmp_path)) in disk_log[i + 1 :]
