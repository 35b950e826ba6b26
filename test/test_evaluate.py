# SPDX-License-Identifier: Apache-2.0
"""Evaluation: metres through PatchGeoref, the centre-guess prior, pinhole longitudinal/lateral
split, orientation error, and `xview-adapt evaluate` through the torch and ONNX Runtime backends."""

import json
import math

import numpy as np
import pytest
import torch
from pairs_testdata import write_random_pairs

from offline_adapt.cli import main as adapt_main
from offline_adapt.data.dataset import PairDataset
from offline_adapt.data.torch_data import PairTorchDataset
from offline_adapt.evaluation.evaluate import predict, summarize
from xview_loc_ros.geo import LocalENU
from xview_loc_ros.models import build_model, save_checkpoint


def peak_runner(tds, offset_uv, heading_fn=None):
    """A run function whose heat map peaks (sharp Gaussian) at GT + offset, and whose orientation
    field encodes heading_fn(record) -- the model's output without a model, to test the metric code."""
    s = tds.config["aerial_size"]
    jj, ii = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5)
    calls = {"next": 0}

    def run(g, a):
        out, ori = [], []
        for _ in range(g.shape[0]):
            rec = tds.records[calls["next"]]
            calls["next"] += 1
            u, v = rec.gt_pixel()
            u, v = u + offset_uv[0], v + offset_uv[1]
            out.append(-((jj - u) ** 2 + (ii - v) ** 2) / (2 * 1.5**2))
            h = heading_fn(rec) if heading_fn else 0.0
            a_ = math.radians(-h)
            ori.append(np.stack([np.full((s, s), math.cos(a_)), np.full((s, s), math.sin(a_))]))
        return np.stack(out)[:, None].astype(np.float32), np.stack(ori).astype(np.float32)

    return run


@pytest.fixture(scope="module")
def pano_pairs(tmp_path_factory):
    return write_random_pairs(tmp_path_factory.mktemp("ev") / "pano", n=9, seed=1)


def test_errors_in_metres_and_prior(pano_pairs):
    data = PairDataset(pano_pairs)
    cfg = build_model("small").config
    tds = PairTorchDataset(data, data.pairs, cfg)
    preds, kept = predict(peak_runner(tds, (6.0, -8.0)), tds, batch_size=4, keep_logits=2)
    assert len(preds) == 9 and len(kept) == 2
    for p, rec in zip(preds, data.pairs):
        # 10 px at 0.5 m/px = 5 m, independent of where the patch is
        assert p["err_m"] == pytest.approx(5.0, abs=0.02)
        # the prior is the distance between the patch centre and the true position on the ellipsoid
        e, n, _ = LocalENU(rec.center_lat, rec.center_lon).to_enu(rec.gt_lat, rec.gt_lon)
        assert p["prior_m"] == pytest.approx(math.hypot(e, n), abs=1e-3)
        assert "ori_err_deg" not in p  # known-orientation model: no orientation output evaluated
    m = summarize(preds)
    assert m["count"] == 9 and m["mean_m"] == pytest.approx(5.0, abs=0.02) and m["m_within_3m"] == 0.0
    assert m["median_m"] == pytest.approx(5.0, abs=0.02)
    assert m["prior_mean_m"] == pytest.approx(np.mean([p["prior_m"] for p in preds]))


def test_pinhole_longitudinal_lateral_and_orientation(tmp_path):
    root = write_random_pairs(tmp_path / "pin", n=6, seed=2, ground_type="pinhole", ground_size=(64, 192))
    data = PairDataset(root)
    for r in data.pairs:
        r.heading_deg = 90.0  # all cameras look east
    cfg = build_model("small", known_orientation=False, ground_type="pinhole", fov_deg=90, ground_size=[64, 192]).config
    tds = PairTorchDataset(data, data.pairs, cfg)
    # 8 px east (along the camera axis) and 2 px south (across it)
    preds, _ = predict(peak_runner(tds, (8.0, 2.0), heading_fn=lambda r: 100.0), tds)
    m = summarize(preds)
    assert m["mean_longitudinal_m"] == pytest.approx(4.0, abs=0.02)
    assert m["mean_lateral_m"] == pytest.approx(1.0, abs=0.02)
    assert m["mean_ori_err_deg"] == pytest.approx(10.0, abs=1e-3)
    assert m["ori_err_deg_within_5deg"] == 0.0


def test_evaluate_cli_torch_and_onnxruntime(pano_pairs, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("small", known_orientation=False)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    rc = adapt_main(
        [
            "evaluate",
            "--model",
            str(ckpt),
            "--data",
            str(pano_pairs),
            "--split",
            "all",
            "--out",
            str(tmp_path / "ev"),
            "--grid",
            "3",
            "--batch",
            "4",
        ]
    )
    assert rc == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["count"] == 9 and {"mean_m", "median_m", "prior_mean_m", "mean_ori_err_deg"} <= set(m)
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 9 and all("err_m" in p and "heading_pred_deg" in p for p in preds)
    assert (tmp_path / "ev" / "cdf.png").stat().st_size > 1000 and (tmp_path / "ev" / "grid.png").stat().st_size > 1000
    assert "mean_m=" in capsys.readouterr().out

    from offline_adapt.export.onnx_export import export_onnx

    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    rc = adapt_main(
        [
            "evaluate",
            "--model",
            str(onnx_path),
            "--data",
            str(pano_pairs),
            "--split",
            "all",
            "--backend",
            "onnxruntime",
            "--out",
            str(tmp_path / "ev_ort"),
            "--grid",
            "0",
        ]
    )
    assert rc == 0
    m2 = json.loads((tmp_path / "ev_ort" / "metrics.json").read_text())
    assert m2["backend"] == "onnxruntime"
    assert m2["mean_m"] == pytest.approx(m["mean_m"], abs=0.05)


def test_evaluate_cli_mismatched_data_is_one_clear_line(pano_pairs, tmp_path, capsys):
    model = build_model("small", mpp=0.3)
    save_checkpoint(tmp_path / "m.pt", model)
    rc = adapt_main(
        ["evaluate", "--model", str(tmp_path / "m.pt"), "--data", str(pano_pairs), "--out", str(tmp_path / "x")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "aerial resolution: data 0.5 m/px, model 0.3 m/px" in err and len(err.splitlines()) == 1
