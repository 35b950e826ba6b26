# SPDX-License-Identifier: Apache-2.0
"""Generic training loop and `xview-adapt train`: exact resume, config refusal, CLI errors, and
(on the synthetic test bed) that supervised learning beats the centre guess."""

import json

import pytest
import torch
from pairs_testdata import write_random_pairs

from offline_adapt.cli import main as adapt_main
from offline_adapt.data.dataset import PairDataset
from offline_adapt.data.torch_data import PairTorchDataset
from offline_adapt.train.losses import LossWeights
from offline_adapt.train.supervised import supervised_loss
from offline_adapt.train.training import fit, make_loader, seed_everything
from xview_loc_ros.models import CheckpointError, build_model, load_checkpoint

LEARN_EPOCHS = 12


@pytest.fixture(scope="module")
def random_pairs(tmp_path_factory):
    return write_random_pairs(tmp_path_factory.mktemp("pairs") / "set", n=12, splits=("train", "train", "val"))


def _run(data_dir, out, epochs, resume=False, known=False):
    seed_everything(3)
    model = build_model("small", known_orientation=known)
    data = PairDataset(data_dir)
    ds = PairTorchDataset(data, data.split("train"), model.config, random_roll=True)
    loader = make_loader(ds, 4, shuffle=True, seed=3)
    from offline_adapt.evaluation.evaluate import validator

    val = validator(PairTorchDataset(data, data.split("val"), model.config))
    res = fit(
        model,
        loader,
        supervised_loss(model.config, LossWeights()),
        epochs=epochs,
        out_dir=out,
        seed=3,
        validate_fn=val,
        resume=resume,
        progress=False,
        bn_reestimate_batches=2,
    )
    return model, res


def test_resume_equals_uninterrupted_run(random_pairs, tmp_path):
    full, res_full = _run(random_pairs, tmp_path / "full", epochs=2)
    _run(random_pairs, tmp_path / "split", epochs=1)
    resumed, res = _run(random_pairs, tmp_path / "split", epochs=2, resume=True)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [h["loss"] for h in res.history] == [h["loss"] for h in res_full.history]
    last = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and "optimizer" in last and "rng" in last
    assert (tmp_path / "split" / "best.pt").is_file()
    assert res.best_epoch in (1, 2) and res.history[-1]["val_mean_m"] > 0
    assert json.loads((tmp_path / "split" / "history.json").read_text())[-1]["epoch"] == 2


def test_resume_with_other_config_is_refused(random_pairs, tmp_path):
    _run(random_pairs, tmp_path / "r", epochs=1, known=True)
    with pytest.raises(CheckpointError, match="cannot resume.*known_orientation"):
        _run(random_pairs, tmp_path / "r", epochs=2, resume=True, known=False)


def test_train_cli_writes_checkpoints_and_refuses_mismatched_data(random_pairs, tmp_path, capsys):
    rc = adapt_main(
        [
            "train",
            "--data",
            str(random_pairs),
            "--config",
            "small",
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--batch",
            "4",
            "--steps-per-epoch",
            "1",
        ]
    )
    assert rc == 0
    model, ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert model.config["mpp"] == 0.5 and model.config["known_orientation"] is True and ckpt["epoch"] == 1
    rc = adapt_main(
        [
            "train",
            "--data",
            str(random_pairs),
            "--config",
            "ccvpe-vigor",
            "--out",
            str(tmp_path / "bad"),
            "--epochs",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "disagree" in err and "aerial patch size: data 128 px, model 512 px" in err
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_train_on_several_data_sets_balanced_and_photometric(tmp_path, capsys):
    """Several data sets train one model (their val splits validate it); balanced mixing draws each
    data set equally often; a data set of another geometry is refused by name."""
    from pairs_testdata import write_random_pairs

    from offline_adapt.train.supervised import mix_weights

    a = write_random_pairs(tmp_path / "a", n=12, seed=1)
    b = write_random_pairs(tmp_path / "b", n=6, seed=2)
    rc = adapt_main(
        [
            "train",
            "--data",
            str(a),
            str(b),
            "--config",
            "small",
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--batch",
            "4",
            "--steps-per-epoch",
            "2",
            "--mix",
            "balanced",
            "--photometric",
            "1",
        ]
    )
    assert rc == 0
    _, ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["data"] == [str(a), str(b)] and ckpt["data_fingerprint"].startswith("multi:")
    assert ckpt["train_options"]["mix"] == "balanced" and ckpt["train_options"]["photometric"] == 1.0
    # resuming with the data sets in another order is other data
    rc = adapt_main(
        [
            "train",
            "--data",
            str(b),
            str(a),
            "--config",
            "small",
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "2",
            "--resume",
        ]
    )
    assert rc == 2 and "not the data the run" in capsys.readouterr().err

    w = mix_weights([12, 6], "balanced")
    assert len(w) == 18 and sum(w[:12]) == pytest.approx(sum(w[12:]))
    assert mix_weights([12, 6], "proportional") is None
    other = write_random_pairs(tmp_path / "c", n=6, seed=3, size_px=64)
    rc = adapt_main(
        ["train", "--data", str(a), str(other), "--config", "small", "--out", str(tmp_path / "x"), "--epochs", "1"]
    )
    assert rc == 2 and "aerial patch size" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses an unknown --mix
        adapt_main(["train", "--data", str(a), "--config", "small", "--out", str(tmp_path / "y"), "--mix", "random"])


@pytest.mark.parametrize("turns,mirror", [(0, True), (1, False), (2, False), (3, True), (1, True)])
def test_dihedral_augmentation_keeps_geometry(turns, mirror):
    """A landmark seen in the aerial patch from the true position must stay at the azimuth the
    panorama shows it at (heading + column offset), after any rotation/mirroring."""
    import math

    import numpy as np

    from offline_adapt.data.torch_data import dihedral_transform

    s, w = 64, 360
    u, v, heading = 20.5, 40.5, 30.0
    ua, va = 50.5, 10.5  # landmark pixel centre
    aerial = np.zeros((s, s, 3), np.uint8)
    aerial[int(va), int(ua)] = 255
    az = math.degrees(math.atan2(ua - u, -(va - v)))
    pano = np.zeros((8, w, 3), np.uint8)
    pano[:, int(w / 2 + (az - heading) * w / 360) % w] = 255

    g2, a2, (u2, v2), h2 = dihedral_transform(pano, aerial, (u, v), heading, turns, mirror)
    r, c = np.argwhere(a2[..., 0] == 255)[0]
    az2 = math.degrees(math.atan2(c + 0.5 - u2, -(r + 0.5 - v2)))
    col2 = np.flatnonzero(g2[0, :, 0] == 255)[0] + 0.5
    pano_az = h2 + (col2 - w / 2) * 360 / w
    diff = (az2 - pano_az + 180) % 360 - 180
    assert abs(diff) < 1.5  # one panorama column
    assert math.hypot(c + 0.5 - u2, r + 0.5 - v2) == pytest.approx(math.hypot(ua - u, va - v))


@pytest.fixture(scope="module")
def synth_pairs(tmp_path_factory):
    from xview_testbed.synth import make_city, make_pairs

    root = tmp_path_factory.mktemp("synth")
    city = make_city("downtown", 0, root / "city", size_m=400)
    return make_pairs(city, root / "pairs", 600, seed=0, workers=2)


def test_small_model_learns_on_synthetic_pairs(synth_pairs, tmp_path):
    """Supervised training of `small` on 420 synthetic downtown pairs for a bounded number of epochs
    halves the error of the centre guess (the coarse fix) on held-out test pairs."""
    from offline_adapt.evaluation.evaluate import evaluate

    run = tmp_path / "run"
    rc = adapt_main(
        [
            "train",
            "--data",
            str(synth_pairs),
            "--config",
            "small",
            "--out",
            str(run),
            "--epochs",
            str(LEARN_EPOCHS),
            "--batch",
            "16",
            "--lr",
            "1e-3",
            "--seed",
            "0",
        ]
    )
    assert rc == 0
    m = evaluate(str(run / "best.pt"), str(synth_pairs), str(tmp_path / "ev"), split="test", grid=0)
    assert m["count"] == 120
    assert m["mean_m"] <= 0.5 * m["prior_mean_m"], m
