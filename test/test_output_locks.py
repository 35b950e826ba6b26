# SPDX-License-Identifier: Apache-2.0
"""One writer per output: two real processes on the same data set, run folder, city, tile cache or
engine cache; the second fails at once naming the first one's pid, and nothing is assembled from two runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xview_loc_ros.fsutil import OutputLock, OutputLocked, file_sha256, lock_path_for
from xview_loc_ros.inference.engine_cache import cached_engine_path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xview_testbed.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(cond, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _hold_lock_in_child(target: Path) -> subprocess.Popen:
    code = (
        "import sys; from xview_loc_ros.fsutil import OutputLock; l = OutputLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    return child


def test_lock_names_the_holder_and_dies_with_it(tmp_path):
    target = tmp_path / "out"
    child = _hold_lock_in_child(target)
    with pytest.raises(OutputLocked, match=rf"out is being written by another run \(pid {child.pid},"):
        OutputLock(target).acquire()
    child.send_signal(signal.SIGKILL)  # a killed writer leaves no stale lock: the kernel drops flocks
    child.wait()
    with OutputLock(target) as lock:
        assert lock.path.read_text().strip() == str(os.getpid())
    assert not lock_path_for(target).exists()


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from xview_testbed.synth import make_city

    return make_city("downtown", 11, tmp_path_factory.mktemp("lockcity") / "city", size_m=250.0, zooms=(17, 18))


def test_two_synth_pairs_runs_on_one_out(city, tmp_path):
    """Before: run 2 deleted run 1's .partial and wrote into it; run 1 exited 0 with 26 of its 40
    pairs carrying seed 2's images."""
    from offline_adapt.data.dataset import PairDataset

    out = tmp_path / "pairs"
    first = _cli(
        "synth", "pairs", "--city", str(city), "--n", "200", "--seed", "1", "--workers", "1", "--out", str(out)
    )
    # one rendering process and 200 pairs: the first run is still writing when the second starts (60 pairs on
    # two processes could finish before the second's interpreter was up, which then saw a finished set)
    index = out.with_name("pairs.partial") / "index.jsonl"
    _wait_for(lambda: index.is_file() and index.stat().st_size > 0)
    second = _cli("synth", "pairs", "--city", str(city), "--n", "200", "--seed", "2", "--out", str(out))
    second_err = second.communicate(timeout=120)[1]
    first_err = first.communicate(timeout=120)[1]
    assert first.returncode == 0, first_err
    assert second.returncode != 0 and f"pid {first.pid}" in second_err, second_err
    ref = tmp_path / "ref"
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "xview_testbed.cli",
                "synth",
                "pairs",
                "--city",
                str(city),
                "--n",
                "200",
                "--seed",
                "1",
                "--out",
                str(ref),
            ],
            env=ENV,
            capture_output=True,
        ).returncode
        == 0
    )
    got, want = PairDataset(out), PairDataset(ref)
    assert [p.id for p in got.pairs] == [p.id for p in want.pairs]
    for p in got.pairs:
        for rel in (p.ground, p.aerial):
            assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel


def _writers(city: Path, tmp_path: Path):
    """(target the writer locks, the write) for each writer that is not a data set."""
    import torch

    from offline_adapt.adapt.pipeline import AdaptOptions, AdaptRun, run_adapt
    from offline_adapt.train.training import fit
    from xview_loc_ros.inference.trt_backend import ensure_engine
    from xview_testbed.synth import make_city, make_pairs

    pairs = make_pairs(city, tmp_path / "pairs", 4, seed=1)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    return {
        "city": (tmp_path / "city2", lambda: make_city("downtown", 3, tmp_path / "city2", size_m=250.0, zooms=(17,))),
        "adaptation run": (
            tmp_path / "run",
            lambda: run_adapt(
                AdaptRun(str(ROOT / "models" / "teacher.pt"), str(pairs), tmp_path / "run", AdaptOptions())
            ),
        ),
        "training run": (
            tmp_path / "train",
            lambda: fit(
                torch.nn.Linear(1, 1),
                torch.utils.data.DataLoader([]),
                None,
                epochs=1,
                out_dir=tmp_path / "train",
                progress=False,
            ),
        ),
        "TensorRT engine cache slot": (
            cached_engine_path(tmp_path / "engines", onnx, file_sha256(onnx), False, 1),
            lambda: ensure_engine(onnx, tmp_path / "engines"),
        ),
    }


def test_every_writer_refuses_an_output_another_process_writes(city, tmp_path):
    """Before: nothing locked; a second city build deleted the first one's .partial, a second
    adaptation or training run resumed the first one's half-written steps or checkpoints."""
    for what, (target, write) in _writers(city, tmp_path).items():
        holder = _hold_lock_in_child(target)
        try:
            with pytest.raises(OutputLocked, match=rf"{what} .* is being written by another run \(pid {holder.pid},"):
                write()
        finally:
            holder.stdin.close()
            holder.wait()
        assert not target.exists(), what  # refused before writing anything


def test_tile_cache_is_used_by_one_process_at_a_time(tmp_path):
    from xview_loc_ros.tiles import open_tile_source

    cache = tmp_path / "cache"
    code = (
        "import sys; from xview_loc_ros.tiles import open_tile_source; "
        "s = open_tile_source('http://127.0.0.1:9/{z}/{x}/{y}.png', cache_dir=sys.argv[1]); "
        "print('held', flush=True); sys.stdin.read(); s.close()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(cache)], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputLocked, match=rf"tile cache .*cache is being written by another run \(pid {holder.pid},"):
        open_tile_source("http://127.0.0.1:9/{z}/{x}/{y}.png", cache_dir=cache)
    holder.stdin.close()
    assert holder.wait() == 0
    with open_tile_source("http://127.0.0.1:9/{z}/{x}/{y}.png", cache_dir=cache):
        pass  # free again once the other process closed its source
