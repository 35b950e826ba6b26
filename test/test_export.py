# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt export`: ONNX structure, embedded config + sidecar, parity report, errors."""

import json
import sys

import numpy as np
import onnx
import pytest
import torch
from trt_double import CpuCudaDouble, TensorRTTestDouble

from offline_adapt.cli import main as adapt_main
from offline_adapt.data.dataset import DatasetMeta, DatasetWriter, PairRecord, write_rgb
from offline_adapt.export import cli as export_cli
from offline_adapt.export.onnx_export import ParityReport, compare_heatmaps
from xview_loc_ros.fsutil import file_sha256
from xview_loc_ros.inference import backend_availability, open_backend, trt_backend
from xview_loc_ros.inference.modelfile import CONFIG_METADATA_KEY, sidecar_path
from xview_loc_ros.models import build_model, save_checkpoint


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("export") / "small.pt"
    save_checkpoint(path, build_model("small"))
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A real two-pair data set at the small model's geometry (textured images)."""
    out = tmp_path_factory.mktemp("pairs") / "ds"
    meta = DatasetMeta(ground_type="panorama", ground_size=[64, 256], fov_deg=360.0, patch_size_px=128, mpp=0.5)
    rng = np.random.default_rng(3)
    with DatasetWriter(out, meta) as w:
        for i in range(2):
            write_rgb(w.path(f"g{i}.png"), rng.integers(0, 256, (64, 256, 3), dtype=np.uint8))
            write_rgb(w.path(f"a{i}.png"), rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
            w.add(
                PairRecord(
                    id=f"p{i}",
                    ground=f"g{i}.png",
                    aerial=f"a{i}.png",
                    center_lat=52.0,
                    center_lon=4.37,
                    mpp=0.5,
                    size_px=128,
                    heading_deg=30.0 * i,
                )
            )
        w.commit()
    return out


def test_export_cli_writes_checked_onnx_with_config(small_ckpt, pairs, tmp_path, capsys):
    out = tmp_path / "deploy" / "small.onnx"
    assert adapt_main(["export", "--model", str(small_ckpt), "--onnx", str(out), "--data", str(pairs)]) == 0
    printed = capsys.readouterr().out
    assert "parity ONNX Runtime vs PyTorch on 2 data-set" in printed and "argmax same" in printed

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    ckpt_config = torch.load(small_ckpt, weights_only=True)["config"]
    embedded = json.loads({p.key: p.value for p in proto.metadata_props}[CONFIG_METADATA_KEY])
    assert embedded == ckpt_config

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in proto.graph.input] == [
        ("ground", ["batch", 3, 64, 256]),
        ("aerial", ["batch", 3, 128, 128]),
    ]
    outputs = [(o.name, dims(o)) for o in proto.graph.output]
    assert outputs[0] == ("heatmap", ["batch", 1, 128, 128])
    assert [o[0] for o in outputs[1:]] == [f"heatmap_level{i}" for i in range(len(ckpt_config["levels"]) - 1)]

    side = json.loads(sidecar_path(out).read_text())
    assert side["config"] == ckpt_config and side["onnx_sha256"] == file_sha256(out)
    assert side["source_sha256"] == file_sha256(small_ckpt) and side["opset"] == 17
    assert side["parity"]["n"] == 2 and side["parity"]["max_rel"] <= 1e-4 and side["parity"]["same_argmax"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.onnx", "small.onnx.json"]  # no temp files

    # the exported file runs and reproduces the checkpoint on the data set's real images
    from offline_adapt.data.dataset import PairDataset
    from xview_loc_ros.preprocess import prepare_aerial, prepare_ground

    ds = PairDataset(pairs)
    rec = ds.split(None)[1]
    g = prepare_ground(ds.load_ground(rec), rec.heading_deg, ckpt_config)[None]
    a = prepare_aerial(ds.load_aerial(rec), ckpt_config)[None]
    want = open_backend(small_ckpt, "torch", device="cpu").infer(g, a)
    got = open_backend(out, "onnxruntime").infer(g, a)
    assert compare_heatmaps(want, got)[1] <= 1e-4


def test_export_opset_and_help(small_ckpt, tmp_path, capsys):
    out = tmp_path / "o18.onnx"
    assert (
        adapt_main(["export", "--model", str(small_ckpt), "--onnx", str(out), "--opset", "18", "--parity-pairs", "1"])
        == 0
    )
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 18
    with pytest.raises(SystemExit):
        adapt_main(["export", "--help"])
    assert "m/px" in capsys.readouterr().out


def test_export_errors_are_one_line(small_ckpt, pairs, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert adapt_main(["export", "--model", str(bad), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.pt: not a readable checkpoint" in err
    assert not (tmp_path / "x.onnx").exists()

    # a data set that cannot feed the model is refused, naming the problem
    torch.manual_seed(0)
    other = tmp_path / "big.pt"
    save_checkpoint(other, build_model("small", aerial_size=256))
    assert adapt_main(["export", "--model", str(other), "--onnx", str(tmp_path / "y.onnx"), "--data", str(pairs)]) == 2
    assert "128" in capsys.readouterr().err
    assert not (tmp_path / "y.onnx").exists()

    if backend_availability()["tensorrt"] is not None:
        assert (
            adapt_main(
                [
                    "export",
                    "--model",
                    str(small_ckpt),
                    "--onnx",
                    str(tmp_path / "z.onnx"),
                    "--engine",
                    str(tmp_path / "z.plan"),
                ]
            )
            == 2
        )
        assert "--engine needs TensorRT and a CUDA GPU" in capsys.readouterr().err
        assert not (tmp_path / "z.onnx").exists()


def test_compare_heatmaps_scales_by_logit_range():
    ref = np.zeros((2, 1, 4, 4), np.float32)
    ref[0, 0, 1, 2] = 10.0
    ref[1, 0, 3, 3] = 2.0
    got = ref.copy()
    got[1, 0, 0, 0] += 0.02  # 1 % of sample 1's range of 2
    max_abs, max_rel, same = compare_heatmaps(ref, got)
    assert max_abs == pytest.approx(0.02) and max_rel == pytest.approx(0.01, rel=1e-4) and same
    got[0, 0, 0, 0] = 11.0
    assert compare_heatmaps(ref, got)[2] is False
    with pytest.raises(ValueError, match="shapes differ"):
        compare_heatmaps(ref, got[:1])


def test_parity_report_judges_finiteness_peak_and_tolerance():
    ok = ParityReport(2, "random", 1e-5, 1e-6, True, True, "TensorRT")
    assert ok.problem(1e-3) is None and "parity TensorRT vs PyTorch" in ok.line()
    assert "NaN/inf" in ParityReport(2, "random", float("inf"), float("inf"), False, False, "TensorRT").problem(1)
    assert "NON-FINITE" in ParityReport(2, "random", float("inf"), float("inf"), False, False).line()
    assert "peak" in ParityReport(2, "random", 1e-5, 1e-6, False).problem(1e-3)
    assert "tolerance 0.001" in ParityReport(2, "random", 0.1, 0.01, True).problem(1e-3)


@pytest.mark.parametrize("value, message", [(float("nan"), "produced NaN/inf"), (1.0, "peak elsewhere")])
def test_export_engine_refused_when_it_disagrees_with_pytorch(
    small_ckpt, pairs, tmp_path, capsys, monkeypatch, value, message
):
    """`--engine` checks the engine against PyTorch on the data set's pairs (here the TensorRT test
    double, whose "kernel" writes NaN or a flat heat map) and removes an engine that disagrees."""
    double = TensorRTTestDouble("10.3.0")
    double.output_value = value
    monkeypatch.setitem(sys.modules, "tensorrt", double.module)
    monkeypatch.setattr(trt_backend, "cuda_ops", lambda: CpuCudaDouble(double))
    monkeypatch.setattr(export_cli, "backend_availability", lambda: {"tensorrt": None})
    onnx_out, plan = tmp_path / "m.onnx", tmp_path / "m.plan"
    argv = ["export", "--model", str(small_ckpt), "--onnx", str(onnx_out), "--engine", str(plan), "--fp16"]
    assert adapt_main([*argv, "--data", str(pairs), "--device", "cuda:0"]) == 1
    out, err = capsys.readouterr()
    assert "parity TensorRT vs PyTorch on 2 data-set" in out
    assert message in err and f"{plan} removed (the ONNX is kept)" in err
    assert onnx_out.is_file() and not plan.exists() and not sidecar_path(plan).exists()
    assert double.called("IBuilderConfig.set_flag") == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
