# SPDX-License-Identifier: Apache-2.0
"""TensorRT engine cache: keys, sidecars and rebuild decisions (pure Python, no TensorRT needed)."""

import dataclasses
import json
from pathlib import Path

import pytest

from xview_loc_ros.inference.base import ModelFileError
from xview_loc_ros.inference.engine_cache import (
    CACHE_ENV,
    EngineKey,
    cached_engine_path,
    check_engine_machine,
    decide,
    default_cache_dir,
    key_differences,
    store_engine,
    timing_cache_path,
)
from xview_loc_ros.inference.modelfile import read_sidecar, sidecar_path

CONFIG = {
    "arch": "small",
    "aerial_size": 128,
    "ground_size": [64, 256],
    "ground_type": "panorama",
    "fov_deg": 360.0,
    "mpp": 0.5,
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
    "known_orientation": True,
    "levels": [[4, 1], [128, 1]],
}
KEY = EngineKey(
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    sm_count=132,
    cuda_runtime="CUDA 12.6, tensorrt-cu12 10.9.0.34",
    trt_version="10.9.0.34",
    onnx_sha256="ab" * 32,
    fp16=True,
    max_batch=1,
)
CHANGES = {
    "gpu_name": ("NVIDIA A100-SXM4-40GB", "GPU"),
    "compute_capability": ("8.0", "compute capability"),
    "sm_count": (114, "multiprocessor count"),
    "cuda_runtime": ("CUDA 13.0, tensorrt-cu13 10.9.0.34", "CUDA runtime / TensorRT build"),
    "trt_version": ("10.3.0.26", "TensorRT version"),
    "onnx_sha256": ("cd" * 32, "ONNX file"),
    "fp16": (False, "FP16"),
    "max_batch": (4, "max batch"),
}


@pytest.fixture
def engine(tmp_path):
    return store_engine(tmp_path / "m.fp16.b1.plan", b"serialized-engine-bytes", KEY, CONFIG, tmp_path / "m.onnx")


def test_missing_engine_is_built(tmp_path):
    d = decide(tmp_path / "none.plan", KEY)
    assert d.rebuild and "no cached engine" in d.reason


def test_matching_engine_is_reused(engine):
    d = decide(engine, KEY)
    assert not d.rebuild and "matches" in d.reason
    meta = read_sidecar(engine)
    assert meta["config"] == CONFIG and meta["engine_key"] == KEY.to_dict() and meta["onnx"].endswith("m.onnx")
    assert engine.read_bytes() == b"serialized-engine-bytes"


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_any_key_difference_rebuilds_and_names_it(engine, field):
    value, label = CHANGES[field]
    d = decide(engine, dataclasses.replace(KEY, **{field: value}))
    assert d.rebuild
    assert d.reason.startswith("cached engine is stale: ") and label in d.reason
    assert len(key_differences(KEY, dataclasses.replace(KEY, **{field: value}))) == 1


@pytest.mark.parametrize("damage", ["delete", "garbage", "no-key", "foreign"])
def test_unusable_sidecar_rebuilds(engine, damage):
    side = sidecar_path(engine)
    if damage == "delete":
        side.unlink()
    elif damage == "garbage":
        side.write_text("{not json")
    elif damage == "no-key":
        data = json.loads(side.read_text())
        del data["engine_key"]["trt_version"]
        side.write_text(json.dumps(data))
    else:
        side.write_text(json.dumps({"format": "other", "config": CONFIG}))
    d = decide(engine, KEY)
    assert d.rebuild and "no usable key" in d.reason


def test_restore_replaces_stale_engine_and_key(engine, tmp_path):
    new_key = dataclasses.replace(KEY, trt_version="10.10.0.1")
    store_engine(engine, b"rebuilt", new_key, CONFIG, tmp_path / "m.onnx")
    assert engine.read_bytes() == b"rebuilt"
    assert not decide(engine, new_key).rebuild and decide(engine, KEY).rebuild
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fp16.b1.plan", "m.fp16.b1.plan.json"]  # no temp files left


def test_engine_given_directly_must_fit_this_machine(engine):
    other_onnx = dataclasses.replace(KEY, onnx_sha256="", fp16=False, max_batch=1)  # machine fields only matter
    assert check_engine_machine(engine, other_onnx)["config"] == CONFIG
    with pytest.raises(
        ModelFileError,
        match=r"m.fp16.b1.plan: engine does not fit this machine \(GPU: built for "
        r"'NVIDIA H100 80GB HBM3', now 'Orin'; TensorRT version",
    ):
        check_engine_machine(engine, dataclasses.replace(KEY, gpu_name="Orin", trt_version="8.6.2"))
    with pytest.raises(ModelFileError, match="multiprocessor count: built for 132, now 16"):
        check_engine_machine(engine, dataclasses.replace(KEY, sm_count=16))
    sidecar_path(engine).unlink()
    with pytest.raises(ModelFileError, match="config sidecar m.fp16.b1.plan.json is missing"):
        check_engine_machine(engine, KEY)


def test_cache_slots_and_location(tmp_path, monkeypatch):
    sha = "ab" * 32
    paths = {cached_engine_path(tmp_path, "/x/model.onnx", sha, fp16, b) for fp16 in (False, True) for b in (1, 8)}
    assert len(paths) == 4 and all(p.parent == tmp_path and p.name.startswith(f"model.{sha[:16]}.") for p in paths)
    # two models sharing a file name get two slots: named by content, not by name
    assert cached_engine_path(tmp_path, "/a/m.onnx", "cd" * 32, False, 1) != cached_engine_path(
        tmp_path, "/b/m.onnx", "ef" * 32, False, 1
    )
    # one timing cache per machine, shared by every engine built there
    assert timing_cache_path(tmp_path, KEY) == timing_cache_path(tmp_path, dataclasses.replace(KEY, fp16=False))
    assert timing_cache_path(tmp_path, KEY) != timing_cache_path(tmp_path, dataclasses.replace(KEY, sm_count=16))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir().parts[-2:] == ("xview_loc_ros", "engines")


def test_engine_written_durably(tmp_path, monkeypatch):
    """The engine's bytes reach the disk before its name does (fsync, rename, fsync the folder)."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(f"rename {Path(b).name}") or real_replace(a, b))
    store_engine(tmp_path / "m.plan", b"engine", KEY, CONFIG, tmp_path / "m.onnx")
    i = events.index("rename m.plan")
    assert events[i - 1] == "fsync" and events[i + 1] == "fsync"


def test_old_sidecar_without_the_new_key_fields_is_rebuilt(engine):
    side = sidecar_path(engine)
    data = json.loads(side.read_text())
    for f in ("sm_count", "cuda_runtime"):  # a sidecar written before these fields existed
        del data["engine_key"][f]
    side.write_text(json.dumps(data))
    d = decide(engine, KEY)
    assert d.rebuild and "lacks ['sm_count', 'cuda_runtime']" in d.reason


def test_key_round_trip_and_incomplete_key():
    assert EngineKey.from_dict(KEY.to_dict(), "x") == KEY
    with pytest.raises(ModelFileError, match="x.json: engine key lacks \\['max_batch'\\]"):
        EngineKey.from_dict({k: v for k, v in KEY.to_dict().items() if k != "max_batch"}, "x.json")
