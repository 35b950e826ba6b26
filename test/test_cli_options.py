# SPDX-License-Identifier: Apache-2.0
"""Nonsense options and garbage files are refused with one line naming the option or the file and
a non-zero exit (issue 14, item 7). Each case used to exit 0, or to fail with a message naming
neither (see docs/RELIABILITY.md for the before/after table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
import torch
from pairs_testdata import write_random_pairs

from offline_adapt.cli import main as adapt_main
from xview_loc_ros.models import build_model, save_checkpoint
from xview_testbed.cli import main as loc_main

S = 64
SMALL = dict(aerial_size=S, ground_size=[32, 128], mpp=0.5)
GARBAGE = b"\xff\xfe\x00\x81\xdd garbage \x00\x9c"


def run(main: Callable[[List[str]], int], argv: List[str], capsys) -> Tuple[int, str]:
    """(exit code, stderr) of a command line run in this process; argparse's exit counts too."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    return rc, err


def one_line_naming(err: str, *names: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("usage:", "  ", "INFO ", "WARNING "))]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "codec can't decode" not in lines[0], err
    for n in names:
        assert n in lines[0], (n, err)
    return lines[0]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    root = tmp_path_factory.mktemp("opts")
    data = write_random_pairs(root / "data", n=6, size_px=S, ground_size=(32, 128), splits=("train", "val", "test"))
    torch.manual_seed(0)
    save_checkpoint(root / "m.pt", build_model("small", **SMALL))
    return root, data, root / "m.pt"


# ---------------------------------------------------------------- nonsense numbers


def test_evaluate_negative_batch(bed, tmp_path, capsys):
    """Before: exit 0 and a metrics.json with count 0."""
    root, data, model = bed
    rc, err = run(
        adapt_main, ["evaluate", "--model", model, "--data", data, "--out", tmp_path / "ev", "--batch", "-1"], capsys
    )
    assert rc == 2
    one_line_naming(err, "--batch")
    assert not (tmp_path / "ev").exists()


def test_train_negative_epochs(bed, tmp_path, capsys):
    """Before: exit 0 and an empty run folder."""
    root, data, model = bed
    rc, err = run(
        adapt_main, ["train", "--data", data, "--config", "small", "--out", tmp_path / "run", "--epochs", "-1"], capsys
    )
    assert rc == 2
    one_line_naming(err, "--epochs")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config,width", [("ccvpe-vigor", "2"), ("small", "4")])
def test_train_width_outside_small_or_range(bed, tmp_path, capsys, config, width):
    root, data, model = bed
    argv = ["train", "--data", data, "--config", config, "--out", tmp_path / "run", "--width", width]
    rc, err = run(adapt_main, argv, capsys)
    assert rc == 2
    one_line_naming(err, "--width")
    assert not (tmp_path / "run").exists()


def test_export_zero_max_batch(bed, tmp_path, capsys):
    """Before: exit 0."""
    root, data, model = bed
    rc, err = run(adapt_main, ["export", "--model", model, "--onnx", tmp_path / "m.onnx", "--max-batch", "0"], capsys)
    assert rc == 2
    one_line_naming(err, "--max-batch")
    assert not (tmp_path / "m.onnx").exists()


def test_evaluate_onnx_without_backend_flag(bed, tmp_path, capsys):
    """Before: "backend torch cannot run a onnx file" although the help says .onnx is accepted."""
    from offline_adapt.export.onnx_export import export_onnx
    from xview_loc_ros.models import load_checkpoint

    root, data, model = bed
    onnx_path = export_onnx(load_checkpoint(model)[0], tmp_path / "m.onnx")
    rc, err = run(
        adapt_main,
        ["evaluate", "--model", onnx_path, "--data", data, "--split", "all", "--out", tmp_path / "ev", "--grid", "0"],
        capsys,
    )
    assert rc == 0, err
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["count"] == 6 and m["backend"] in ("onnxruntime", "tensorrt")


# ---------------------------------------------------------------- run folders


def test_train_refuses_to_overwrite_a_run_and_to_resume_on_other_data(bed, tmp_path, capsys):
    """Before: a second `train` without --resume silently overwrote the run; --resume continued it
    on another data set."""
    root, data, model = bed
    out = tmp_path / "run"
    args = [
        "train",
        "--config",
        "small",
        "--out",
        out,
        "--epochs",
        "1",
        "--batch",
        "2",
        "--steps-per-epoch",
        "1",
        "--bn-reestimate",
        "0",
        "--threads",
        "1",
    ]
    assert run(adapt_main, [*args, "--data", data], capsys)[0] == 0
    stamp = (out / "last.pt").stat().st_mtime_ns
    rc, err = run(adapt_main, [*args, "--data", data], capsys)
    assert rc == 2
    one_line_naming(err, "--resume", str(out))
    assert (out / "last.pt").stat().st_mtime_ns == stamp

    other = write_random_pairs(tmp_path / "other", n=6, seed=7, size_px=S, ground_size=(32, 128))
    rc, err = run(adapt_main, [*args, "--data", other, "--resume"], capsys)
    assert rc == 2
    one_line_naming(err, "--data", str(other))
    assert (out / "last.pt").stat().st_mtime_ns == stamp
    # the same data resumes (here: already at its last epoch, so nothing to do)
    assert run(adapt_main, [*args, "--data", data, "--resume"], capsys)[0] == 0


def test_synth_city_rejected_options_leave_nothing(tmp_path, capsys):
    """Before: exit 2 but an empty OUT.partial folder left behind."""
    out = tmp_path / "city"
    for bad, name in (
        (["--size-m", "10"], "--size-m"),
        (["--res-m", "5"], "--res-m"),
        (["--lat", "91"], "--lat"),
        (["--amount", "2", "--toward", "downtown"], "--amount"),
    ):
        rc, err = run(loc_main, ["synth", "city", "--style", "suburb", "--zooms", "16", "--out", out, *bad], capsys)
        assert rc == 2, bad
        one_line_naming(err, name)
        assert list(tmp_path.iterdir()) == [], bad


# ---------------------------------------------------------------- garbage files


def test_garbage_dataset_json_names_the_file(bed, tmp_path, capsys):
    root, data, model = bed
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "dataset.json").write_bytes(GARBAGE)
    (ds / "index.jsonl").write_text("")
    rc, err = run(adapt_main, ["evaluate", "--model", model, "--data", ds, "--out", tmp_path / "ev"], capsys)
    assert rc == 2
    one_line_naming(err, str(ds / "dataset.json"))
    (ds / "dataset.json").write_text((Path(data) / "dataset.json").read_text())
    (ds / "index.jsonl").write_bytes(GARBAGE)
    rc, err = run(adapt_main, ["evaluate", "--model", model, "--data", ds, "--out", tmp_path / "ev"], capsys)
    assert rc == 2
    one_line_naming(err, str(ds / "index.jsonl"))


def test_garbage_style_yaml_names_the_file(tmp_path, capsys):
    style = tmp_path / "style.yaml"
    style.write_bytes(GARBAGE)
    rc, err = run(loc_main, ["synth", "style", "--style", style], capsys)
    assert rc == 2
    one_line_naming(err, str(style))


@pytest.mark.parametrize("command", ["bag-crop", "extract"])
def test_garbage_bag_metadata_names_the_file(tmp_path, capsys, command):
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_bytes(GARBAGE)
    if command == "bag-crop":
        rc, err = run(loc_main, ["bag-crop", "--bag", bag, "--out", tmp_path / "part", "--end-frac", "0.5"], capsys)
    else:
        rc, err = run(
            adapt_main,
            [
                "extract",
                "--bag",
                bag,
                "--tiles",
                f"xyz:{tmp_path}",
                "--out",
                tmp_path / "pairs",
                "--size",
                "64",
                "--mpp",
                "0.5",
            ],
            capsys,
        )
    assert rc != 0
    one_line_naming(err, str(bag / "metadata.yaml"))
    assert not (tmp_path / "part").exists() and not (tmp_path / "pairs").exists()


# ---------------------------------------------------------------- tiles


@pytest.mark.parametrize(
    "argv, name",
    [
        (["patch", "--lat", "90", "--lon", "4.37", "--size", "64", "--mpp", "0.5"], "--lat"),
        (["patch", "--lat", "52", "--lon", "200", "--size", "64", "--mpp", "0.5"], "--lon"),
        (["patch", "--lat", "52", "--lon", "4.37", "--size", "0", "--mpp", "0.5"], "--size"),
        (["patch", "--lat", "52", "--lon", "4.37", "--size", "64", "--mpp", "-1"], "--mpp"),
        (["patch", "--lat", "52", "--lon", "4.37", "--size", "64", "--mpp", "0.5", "--zoom", "-1"], "--zoom"),
    ],
)
def test_tiles_patch_nonsense_options(tmp_path, capsys, argv, name):
    """Before (--lat 90): a numpy array printed as the error."""
    rc, err = run(loc_main, ["tiles", *argv, "--source", f"xyz:{tmp_path}", "--out", tmp_path / "p.png"], capsys)
    assert rc == 2
    one_line_naming(err, name)
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    "argv, name",
    [
        (["--zoom", "-1"], "--zoom"),
        (["--zoom", "18", "--workers", "0"], "--workers"),
        (["--zoom", "18", "--max-tiles", "0"], "--max-tiles"),
    ],
)
def test_tiles_prefetch_nonsense_options(tmp_path, capsys, argv, name):
    """Before (--zoom -1): "negative shift count"."""
    rc, err = run(
        loc_main,
        [
            "tiles",
            "prefetch",
            "--source",
            "http://127.0.0.1:9/{z}/{x}/{y}.png",
            "--cache",
            tmp_path / "c",
            "--bbox",
            "52,4.3,52.01,4.31",
            *argv,
        ],
        capsys,
    )
    assert rc == 2
    one_line_naming(err, name)


@pytest.mark.parametrize(
    "argv, name",
    [
        (["drive", "--frames", "0"], "--frames"),
        (["drive", "--rate", "-2"], "--rate"),
        (["pairs", "--n", "-5"], "--n"),
        (["pairs", "--n", "5", "--workers", "-1"], "--workers"),
    ],
)
def test_synth_drive_and_pairs_nonsense_counts(tmp_path, capsys, argv, name):
    rc, err = run(
        loc_main, ["synth", argv[0], "--city", tmp_path / "city", "--out", tmp_path / "out", *argv[1:]], capsys
    )
    assert rc == 2
    one_line_naming(err, name)
    assert list(tmp_path.iterdir()) == []
