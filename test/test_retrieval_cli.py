# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt index-map` and `xview-adapt train-retrieval` (issue 20) on a small synthetic city: the index's
grid, hash and descriptors (PyTorch and ONNX model files), resuming an interrupted build, clear one-line errors,
and the label-free training's parts (heat-map positives, EM rounds, mutual-NN cleaning, consistency)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from offline_adapt.cli import main as adapt_main
from offline_adapt.export.onnx_export import export_onnx
from offline_adapt.retrieval import index_map
from offline_adapt.retrieval.options import IndexMapOptions, TrainRetrievalOptions, parse_center
from offline_adapt.retrieval.train_retrieval import candidate_offsets, mutual_nn, reassign
from xview_loc_ros.fsutil import file_sha256
from xview_loc_ros.inference import open_backend
from xview_loc_ros.models import build_model, load_checkpoint, save_checkpoint
from xview_loc_ros.retrieval import IndexFileError, load_index

TEACHER = Path(__file__).resolve().parents[1] / "models" / "teacher.pt"
LAT, LON = 37.7749, -122.4194  # the synthetic cities' default centre


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from xview_testbed.synth import make_city
    from xview_testbed.synth.pairs import make_pairs

    d = tmp_path_factory.mktemp("retr_city")
    c = make_city("downtown", 3, d / "city", size_m=240.0, zooms=(18,))
    pairs = d / "pairs"
    make_pairs(c, pairs, n=16, seed=1)
    torch.manual_seed(0)
    model = build_model("small", retrieval_dim=32)
    save_checkpoint(d / "m.pt", model)
    export_onnx(model, d / "m.onnx")
    return {"tiles": f"xyz:{c / 'tiles'}", "pairs": pairs, "pt": d / "m.pt", "onnx": d / "m.onnx"}


def _index(city, model, out, *extra):
    argv = ["index-map", "--model", str(model), "--tiles", city["tiles"], "--center", f"{LAT},{LON}"]
    return adapt_main([*argv, "--radius-m", "30", "--stride-m", "15", "--out", str(out), "--no-progress", *extra])


def test_index_map_pt_and_onnx(city, tmp_path):
    assert _index(city, city["pt"], tmp_path / "pt.npz", "--batch", "4") == 0
    assert _index(city, city["onnx"], tmp_path / "onnx.npz") == 0
    a = load_index(tmp_path / "pt.npz", model_sha256=file_sha256(city["pt"]))
    b = load_index(tmp_path / "onnx.npz", model_sha256=file_sha256(city["onnx"]))
    assert len(a) == len(b) == 13  # a 5 x 5 grid at 15 m, within 30 m of the centre
    assert a.dim == 32 and a.grid.size_px == 128 and a.grid.mpp == 0.5
    np.testing.assert_allclose(np.linalg.norm(a.descriptors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a.east_north, b.east_north)
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-4)  # aerial-only path == full graph
    with pytest.raises(IndexFileError, match="rebuild"):
        load_index(tmp_path / "pt.npz", model_sha256=file_sha256(city["onnx"]))
    assert not (tmp_path / "pt.npz.work").exists()
    # the patch under the centre entry is the one the node cuts there: its descriptor matches a direct encoding
    from xview_loc_ros import preprocess
    from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source

    backend = open_backend(city["pt"], "torch", device="cpu")
    patch = AerialPatchBuilder(open_tile_source(city["tiles"]), 128, 0.5).build(LAT, LON)
    direct = backend.encode_aerial(preprocess.prepare_aerial(patch.image, backend.config)[None])[0]
    centre = int(np.argmin(np.hypot(a.east_north[:, 0], a.east_north[:, 1])))
    np.testing.assert_allclose(a.descriptors[centre], direct, atol=1e-5)


def test_index_map_resumes_after_an_interruption(city, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = index_map.encode_patches

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(index_map, "encode_patches", flaky)
    out = tmp_path / "idx.npz"
    assert _index(city, city["pt"], out, "--chunk", "5") == 130
    assert not out.exists() and len(list((tmp_path / "idx.npz.work").glob("chunk_*.npz"))) == 2
    monkeypatch.setattr(index_map, "encode_patches", real)
    backend = open_backend(city["pt"], "torch", device="cpu")
    from xview_loc_ros.tiles import open_tile_source

    opts = IndexMapOptions(center=(LAT, LON), radius_m=30.0, stride_m=15.0, chunk=5)
    summary = index_map.build_index(
        city["pt"], backend, open_tile_source(city["tiles"]), city["tiles"], out, opts, False
    )
    assert summary["resumed_chunks"] == 2 and summary["entries"] == 13
    assert _index(city, city["pt"], tmp_path / "full.npz") == 0
    np.testing.assert_allclose(load_index(out).descriptors, load_index(tmp_path / "full.npz").descriptors, atol=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--center", "91,0"], "latitude"),
        (["--center", "abc"], "LAT,LON"),
        (["--stride-m", "100"], "diameter"),
        (["--tiles", "nope:/x"], "--tiles"),
    ],
)
def test_index_map_errors_are_one_line(city, tmp_path, capsys, extra, message):
    argv = ["index-map", "--model", str(city["pt"]), "--tiles", city["tiles"], "--center", f"{LAT},{LON}"]
    argv += ["--radius-m", "30", "--stride-m", "15", "--out", str(tmp_path / "x.npz"), *extra]
    assert adapt_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_index_map_refuses_a_model_without_a_head(city, tmp_path, capsys):
    assert _index(city, TEACHER, tmp_path / "x.npz") == 2
    assert "no retrieval head" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        adapt_main(["index-map", "--model", str(TEACHER), "--tiles", "x", "--center", "0,0", "--radius-m", "-1"])


def test_options_checks():
    assert parse_center(" 37.5,-122.25") == (37.5, -122.25)
    with pytest.raises(ValueError, match="--positives"):
        TrainRetrievalOptions(positives="gt")
    with pytest.raises(ValueError, match="candidates"):
        TrainRetrievalOptions(candidate_radius_m=30, candidate_step_m=1)
    with pytest.raises(ValueError, match="entries"):
        IndexMapOptions(center=(0, 0), radius_m=1e5, stride_m=1)
    off = candidate_offsets(6.0, 3.0)
    assert tuple(off[0]) == (0.0, 0.0) and len(off) == 13  # the 5 x 5 grid within 6 m (a disc)


def test_reassign_and_mutual_nn():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3, 8)).astype(np.float32)
    g = a[np.arange(4), [2, 0, 1, 2]] + 0.01
    assert reassign(g, a, np.ones((4, 3), bool)).tolist() == [2, 0, 1, 2]
    ok = np.ones((4, 3), bool)
    ok[0, 2] = False
    assert reassign(g, a, ok)[0] != 2
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
    pos = a[np.arange(4), [2, 0, 1, 2]]
    pos[3] = pos[0]  # pair 3's positive is pair 0's patch: not mutual within 10 m
    keep = mutual_nn(g, pos, centres, 10.0)
    assert keep[1] and keep[2] and not keep[3]
    # within a GNSS neighbourhood of 50 m every pair competes only with itself here: all kept
    assert mutual_nn(g, pos, centres, 10.0, radius_m=50.0).all()


@pytest.mark.parametrize(
    "flags",
    [
        ["--labels", "gt"],
        ["--positives", "heatmap", "--rounds", "1", "--mutual-nn", "on"],
        ["--positives", "fix", "--rounds", "0", "--mutual-nn", "off", "--no-freeze-backbone", "--consistency", "1"],
    ],
)
def test_train_retrieval_runs_each_part(city, tmp_path, flags):
    out = tmp_path / "m2.pt"
    argv = ["train-retrieval", "--data", str(city["pairs"]), "--model", str(TEACHER), "--out", str(out)]
    argv += ["--tiles", city["tiles"], "--epochs", "1", "--batch", "8", "--retrieval-dim", "16", "--no-progress"]
    assert adapt_main([*argv, *flags]) == 0
    model, ckpt = load_checkpoint(out)
    assert model.config["retrieval_dim"] == 16 and model.has_retrieval
    summary = ckpt["retrieval_training"]
    assert summary["head_added"] and summary["pairs"] == 16
    rounds = int(flags[flags.index("--rounds") + 1]) if "--rounds" in flags else 0
    assert len(summary["rounds"]) == rounds + 1
    teacher, _ = load_checkpoint(TEACHER)
    frozen = "--no-freeze-backbone" not in flags
    same = all(torch.equal(v, model.state_dict()[k]) for k, v in teacher.state_dict().items())
    assert same == frozen  # only the heads train unless the backbones are released


def test_train_retrieval_errors(city, tmp_path, capsys):
    argv = ["train-retrieval", "--data", str(city["pairs"]), "--model", str(TEACHER), "--out", str(tmp_path / "o.pt")]
    assert adapt_main([*argv, "--tiles", "nope:/x"]) == 2
    assert "--tiles" in capsys.readouterr().err
    assert adapt_main([*argv, "--tiles", city["tiles"], "--candidate-radius-m", "50", "--candidate-step-m", "1"]) == 2
    assert "candidates" in capsys.readouterr().err


def test_train_retrieval_on_several_data_sets(city, tmp_path, capsys):
    out = tmp_path / "m2.pt"
    data = [str(city["pairs"])] * 2
    argv = ["train-retrieval", "--data", *data, "--model", str(TEACHER), "--out", str(out), "--labels", "gt"]
    argv += ["--epochs", "1", "--batch", "8", "--retrieval-dim", "16", "--no-progress"]
    assert adapt_main([*argv, "--tiles", city["tiles"], city["tiles"], city["tiles"]]) == 2
    assert "one per --data" in capsys.readouterr().err
    assert adapt_main([*argv, "--tiles", city["tiles"]]) == 0
    assert load_checkpoint(out)[1]["retrieval_training"]["pairs"] == 32
