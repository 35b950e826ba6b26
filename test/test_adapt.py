# SPDX-License-Identifier: Apache-2.0
"""Self-distillation adaptation: pseudo GT, the distillation loss, the filter, the cache, the
resumable pipeline and its CLI, on tiny real data sets (random images, real files, real training)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pairs_testdata import write_random_pairs

from offline_adapt.adapt import filtering
from offline_adapt.adapt.distill import (
    DistillOptions,
    default_levels,
    distill_loss,
    heatmap_entropy,
    holdout_ids,
    train_student,
)
from offline_adapt.adapt.options import recipe_options
from offline_adapt.adapt.pipeline import (
    AdaptOptions,
    AdaptRun,
    filter_step,
    reuse_steps,
    run_adapt,
    run_results,
    student_step,
)
from offline_adapt.adapt.pseudo_labels import (
    CacheError,
    PseudoLabels,
    build_pseudo_labels,
    ensure_pseudo_labels,
    load_pseudo_labels,
    pseudo_fine,
    pseudo_levels,
)
from offline_adapt.cli import main as adapt_main
from xview_loc_ros.fsutil import file_sha256
from xview_loc_ros.models import build_model, load_checkpoint, save_checkpoint
from xview_loc_ros.models.common import ModelOutput

S = 64
SMALL = dict(aerial_size=S, ground_size=[32, 128], mpp=0.5)


def _labels(uv, size=S, topk_index=None, topk_prob=None) -> PseudoLabels:
    uv = np.asarray(uv, np.float32).reshape(-1, 2)
    n = len(uv)
    return PseudoLabels(
        ids=[f"p{i}" for i in range(n)],
        uv=uv,
        uv_argmax=np.floor(uv) + 0.5,
        confidence=np.ones(n, np.float32),
        topk_index=np.zeros((n, 1), np.int32) if topk_index is None else topk_index,
        topk_prob=np.zeros((n, 1), np.float16) if topk_prob is None else topk_prob,
        mpp=np.full(n, 0.5, np.float32),
        size_px=size,
    )


@pytest.fixture(scope="session")
def bed(tmp_path_factory):
    """A 24-pair target data set (train 15 / val 5 with GT / test 4... round robin) and an untrained teacher."""
    root = tmp_path_factory.mktemp("adapt")
    data = write_random_pairs(
        root / "data", n=24, size_px=S, ground_size=(32, 128), splits=("train", "train", "train", "val", "test")
    )
    torch.manual_seed(0)
    save_checkpoint(root / "teacher.pt", build_model("small", **SMALL))
    return root, str(data), str(root / "teacher.pt")


@pytest.fixture(scope="session")
def adapted(bed):
    root, data, teacher = bed
    run = AdaptRun(teacher, data, root / "run", AdaptOptions(distill=DistillOptions(epochs=1, batch=4)))
    summary = run_adapt(run)
    return run, summary


# ---------------------------------------------------------------- pseudo ground truth


def test_mode_pseudo_gt_position_sigma_mass_and_peak_per_level():
    uv = [[20.3, 41.7], [33.2, 30.8]]
    levels = [[4, 1], [8, 1], [16, 1], [32, 1], [64, 1]]
    fine = pseudo_fine(_labels(uv), [0, 1], "mode", sigma_px=4.0)
    assert fine.shape == (2, S, S)
    assert float(fine.amax()) == pytest.approx(math.exp(-(0.2**2 + 0.2**2) / 32), abs=1e-4)  # nearest cell centre
    c = torch.arange(S, dtype=torch.float32) + 0.5
    for b, (u, v) in enumerate(uv):
        w = fine[b] / fine[b].sum()
        mu_u, mu_v = float((w.sum(0) * c).sum()), float((w.sum(1) * c).sum())
        assert (mu_u, mu_v) == pytest.approx((u, v), abs=0.05)
        var_u = float((w.sum(0) * (c - mu_u) ** 2).sum())
        assert math.sqrt(var_u) == pytest.approx(4.0, rel=0.02)
    for (cells, _), p in zip(levels, pseudo_levels(fine, levels)):
        assert p.shape == (2, 1, cells, cells)
        assert torch.allclose(p.flatten(1).sum(1), fine.flatten(1).sum(1), rtol=1e-5)  # mass preserved
        for b, (u, v) in enumerate(uv):  # peak preserved: the heaviest cell holds the mode
            i = int(p[b, 0].flatten().argmax())
            f = S // cells
            assert (i // cells, i % cells) == (int(v // f), int(u // f))


def test_orientation_levels_lifted_with_known_heading():
    fine = pseudo_fine(_labels([[30.0, 30.0]]), [0], "mode")
    p = pseudo_levels(fine, [[8, 8], [64, 1]], torch.tensor([67.5]))[0]  # 8 bins of 45 deg: 1.5 bins
    bins = p[0].flatten(1).sum(1)
    assert torch.allclose(bins / bins.sum(), torch.tensor([0, 0.5, 0.5, 0, 0, 0, 0, 0]), atol=1e-6)
    assert float(p.sum()) == pytest.approx(float(fine.sum()), rel=1e-5)
    unknown = pseudo_levels(fine, [[8, 8]], torch.tensor([float("nan")]))[0]
    assert torch.allclose(unknown[0].flatten(1).sum(1), torch.full((8,), float(fine.sum()) / 8), rtol=1e-5)


def test_heatmap_pseudo_gt_is_the_teacher_map_with_peak_one():
    idx = np.array([[5 * S + 7, 5 * S + 8, 40 * S + 40]], np.int32)
    prob = np.array([[0.4, 0.2, 0.1]], np.float16)
    fine = pseudo_fine(_labels([[7.5, 5.5]], topk_index=idx, topk_prob=prob), [0], "heatmap")
    assert float(fine[0, 5, 7]) == pytest.approx(1.0)
    assert float(fine[0, 5, 8]) == pytest.approx(0.5, rel=1e-3)
    assert float(fine[0, 40, 40]) == pytest.approx(0.25, rel=1e-3)
    assert int((fine > 0).sum()) == 3
    with pytest.raises(ValueError, match="pseudo-GT mode"):
        pseudo_fine(_labels([[1.0, 1.0]]), [0], "blur")


# ---------------------------------------------------------------- distillation loss


def _hand_infonce(scores: torch.Tensor, w: torch.Tensor, t: float) -> float:
    total, norm = 0.0, 0.0
    for b in range(scores.shape[0]):
        s = scores[b].flatten().double() / t
        lse = math.log(float(torch.exp(s - s.max()).sum())) + float(s.max())
        for j, wj in enumerate(w[b].flatten().tolist()):
            if wj > 0.01:
                total += wj * (lse - float(s[j]))
                norm += wj
    return total / norm


def test_distill_loss_is_weighted_infonce_over_first_k_levels():
    torch.manual_seed(1)
    levels = [[4, 1], [8, 1], [16, 1], [S, 1]]
    cfg = {"levels": levels}
    labels = _labels([[10.2, 50.9], [40.0, 12.4], [33.3, 33.3]])
    heat = [torch.randn(2, 1, c, c, requires_grad=True) for c, _ in levels]
    batch = {"index": torch.tensor([0, 1]), "heading_deg": torch.tensor([0.0, 0.0])}
    rows = np.array([2, 0])  # data-set item 0 uses label row 2, item 1 row 0
    loss, parts = distill_loss(cfg, labels, rows, DistillOptions(levels=2))(ModelOutput(heatmaps=heat), batch)
    targets = pseudo_levels(pseudo_fine(labels, [2, 0]), levels)
    hand = [_hand_infonce(heat[k].detach(), targets[k], 0.1) for k in range(2)]
    assert parts["nce0"] == pytest.approx(hand[0], rel=1e-4) and parts["nce1"] == pytest.approx(hand[1], rel=1e-4)
    assert float(loss.detach()) == pytest.approx(sum(hand) / 2, rel=1e-4)
    loss.backward()
    assert heat[0].grad.abs().sum() > 0 and heat[1].grad.abs().sum() > 0
    assert heat[2].grad is None and heat[3].grad is None  # levels beyond K' get no supervision

    # K' = K reaches the finest map, whose values are logits: temperature 1
    loss_all, parts_all = distill_loss(cfg, labels, rows, DistillOptions(levels=4, entropy_min=0.5))(
        ModelOutput(heatmaps=heat), batch
    )
    fin = _hand_infonce(heat[3].detach(), targets[3], 1.0)
    assert parts_all["nce3"] == pytest.approx(fin, rel=1e-4)
    ent = float(heatmap_entropy(heat[3].detach()))
    p = F.softmax(heat[3].detach().flatten(1), 1)
    assert ent == pytest.approx(float(-(p * p.log()).sum(1).mean()), rel=1e-5)
    hand_all = [_hand_infonce(heat[k].detach(), targets[k], 0.1 if k < 3 else 1.0) for k in range(4)]
    assert float(loss_all.detach()) == pytest.approx(sum(hand_all) / 4 + 0.5 * ent, rel=1e-4)


def test_levels_default_per_architecture():
    six = [[8, 1]] * 6
    assert default_levels({"arch": "ccvpe-vigor", "levels": six}) == 2  # the paper's CCVPE K'
    assert default_levels({"arch": "ccvpe-kitti", "levels": six}) == 2
    assert default_levels({"arch": "small", "levels": six}) == 6
    assert DistillOptions().resolved({"arch": "ccvpe-vigor", "levels": six}).levels == 2
    assert DistillOptions(levels=3).resolved({"arch": "ccvpe-vigor", "levels": six}).levels == 3


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(pseudo_gt="x"), "--pseudo-gt"),
        (dict(sigma_px=0.0), "--sigma"),
        (dict(levels=0), "--levels"),
        (dict(epochs=0), "--epochs"),
        (dict(lr=-1e-4), "--lr"),
        (dict(batch=0), "--batch"),
        (dict(entropy_min=-1.0), "--entropy-min"),
        (dict(select="best"), "--select"),
        (dict(holdout_pct=100.0), "--holdout"),
        (dict(steps_per_epoch=0), "--steps-per-epoch"),
        (dict(workers=-1), "--workers"),
    ],
)
def test_student_options_are_checked_when_built(kwargs, flag):
    with pytest.raises(ValueError, match=f"^{flag}"):
        DistillOptions(**kwargs)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(keep_pct=150.0), "--keep"),
        (dict(keep_pct=-1.0), "--keep"),
        (dict(topk=0), "--topk"),
        (dict(split="tarin"), "--split"),
        (dict(eval_split="x"), "--eval-split"),
    ],
)
def test_adapt_options_are_checked_when_built(kwargs, flag):
    with pytest.raises(ValueError, match=f"^{flag}"):
        AdaptOptions(**kwargs)


def test_student_options_are_checked():
    with pytest.raises(ValueError, match="K' must be in 1..6"):
        DistillOptions(levels=7).resolved({"arch": "small", "levels": [[8, 1]] * 6})
    assert holdout_ids([f"p{i}" for i in range(20)], 10) == holdout_ids([f"p{i}" for i in reversed(range(20))], 10)
    assert len(holdout_ids([f"p{i}" for i in range(20)], 10)) == 2


# ---------------------------------------------------------------- outlier filter


def test_filter_keeps_exactly_t_percent_ties_by_id():
    d = {"e": 1.0, "a": 3.0, "c": 2.0, "b": 2.0, "d": 5.0, "f": 2.0, "g": 0.5, "h": 9.0, "i": 4.0, "j": 2.0}
    assert filtering.select_kept(d, 80) == ["g", "e", "b", "c", "f", "j", "a", "i"]
    assert filtering.select_kept(d, 30) == ["g", "e", "b"]
    assert filtering.select_kept(d, 100) == sorted(d, key=lambda i: (d[i], i))
    assert [filtering.n_keep(n, 80) for n in (1, 3, 7, 1000)] == [1, 2, 6, 800]
    assert filtering.n_keep(5, 0) == 0
    with pytest.raises(ValueError, match="percentage"):
        filtering.n_keep(10, 120)
    rep = filtering.filter_report(d, filtering.select_kept(d, 80), 80, errors_m={k: v * 2 for k, v in d.items()})
    assert (rep["kept"], rep["dropped"], rep["threshold_m"]) == (8, 2, 4.0)
    assert rep["pseudo_label_error_dropped_mean_m"] == pytest.approx(14.0)


def test_prediction_distances_in_metres():
    t = [{"id": "a", "u": 10.0, "v": 10.0}, {"id": "b", "u": 0.0, "v": 0.0}]
    s = [{"id": "b", "u": 3.0, "v": 4.0}, {"id": "a", "u": 10.0, "v": 12.0}]
    assert filtering.prediction_distances_m(t, s, {"a": 0.5, "b": 0.2}) == pytest.approx({"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="lack a student prediction"):
        filtering.prediction_distances_m(t, s[:1], {"a": 0.5, "b": 0.2})


# ---------------------------------------------------------------- cache


def test_cache_verified_corruption_and_staleness_rebuilt(bed, tmp_path, caplog):
    root, data, teacher = bed
    cache = tmp_path / "pseudo"
    labels = build_pseudo_labels(teacher, data, cache, "train", batch_size=8, topk=64)
    assert len(labels.ids) == 15 and labels.topk_index.shape == (15, 64) and labels.topk_prob.dtype == np.float16
    # the cached mode is the teacher's own decoded prediction
    preds = [json.loads(x) for x in (cache / "teacher_predictions.jsonl").read_text().splitlines()]
    assert np.allclose(labels.uv, [[p["u"], p["v"]] for p in preds])
    # the top-k holds the argmax pixel
    u0, v0 = labels.uv_argmax[0]
    assert int(v0 - 0.5) * S + int(u0 - 0.5) in labels.topk_index[0]
    again = load_pseudo_labels(cache, teacher, data, "train", 64)
    assert again.ids == labels.ids and np.array_equal(again.uv, labels.uv)

    npz = cache / "pseudo_labels.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="corrupt"):
        load_pseudo_labels(cache, teacher, data, "train", 64)
    rebuilt = ensure_pseudo_labels(teacher, data, cache, "train", 8, 64)
    assert np.allclose(rebuilt.uv, labels.uv)
    assert "rebuilding pseudo labels" in caplog.text

    other = tmp_path / "other_teacher.pt"
    torch.manual_seed(5)
    save_checkpoint(other, build_model("small", **SMALL))
    with pytest.raises(CacheError, match="stale.*teacher_sha256"):
        load_pseudo_labels(cache, str(other), data, "train", 64)
    with pytest.raises(CacheError, match="stale.*topk"):
        load_pseudo_labels(cache, teacher, data, "train", 32)
    (cache / "manifest.json").write_text("{")
    with pytest.raises(CacheError, match="manifest"):
        load_pseudo_labels(cache)


# ---------------------------------------------------------------- pipeline


def test_adapt_writes_student_with_lineage_and_reports(bed, adapted):
    root, data, teacher = bed
    run, summary = adapted
    model, ckpt = load_checkpoint(run.out / "student.pt")
    lin = ckpt["lineage"]
    assert lin["teacher_sha256"] == file_sha256(teacher) and lin["stage"] == "final"
    assert lin["flags"]["keep_pct"] == 80.0 and lin["flags"]["distill"]["levels"] == 6  # small: all levels
    assert lin["trained_on"] == 12 and lin["selected_epoch"] == 1 and "val" in lin["selection"]
    kept = json.loads((run.dir("filter") / "kept.json").read_text())["ids"]
    assert len(kept) == 12
    rep = json.loads((run.dir("filter") / "filter_report.json").read_text())
    assert rep["count"] == 15 and rep["dropped"] == 3 and "pseudo_label_error_kept_mean_m" in rep
    rows = [json.loads(x) for x in (run.dir("report") / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"teacher", "aux", "student"} <= set(rows[0]) and "err_m" in rows[0]["student"]
    assert summary["splits"]["test"]["teacher"]["count"] == 4
    for m in summary["splits"]["test"].values():  # per-level argmax errors; the finest equals the decoded argmax
        assert len(m["level_mean_m"]) == 6 and m["level_mean_m"][-1] == pytest.approx(m["mean_m_argmax"], rel=1e-6)
    for f in ("fig4_test.png", "fig7_test.png", "summary.md"):
        assert (run.dir("report") / f).stat().st_size > 100
    assert (run.dir("filter") / "filter_hist.png").stat().st_size > 100
    # the student differs from the teacher (it was trained) but keeps its config
    t, _ = load_checkpoint(teacher)
    assert model.config == t.config
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), t.state_dict().values()))


def test_adapt_rerun_skips_done_steps_and_redoes_changed_ones(bed, adapted, caplog):
    root, data, teacher = bed
    run, _ = adapted
    stamps = {
        p: (run.out / p).stat().st_mtime_ns
        for p in ("pseudo/pseudo_labels.npz", "aux/student.pt", "final/student.pt", "report/summary.json")
    }
    caplog.set_level("INFO")
    run_adapt(AdaptRun(teacher, data, run.out, AdaptOptions(distill=DistillOptions(epochs=1, batch=4))))
    assert {p: (run.out / p).stat().st_mtime_ns for p in stamps} == stamps
    assert "aux student: done" in caplog.text and "final student: done" in caplog.text and "filter: done" in caplog.text

    # a killed final step (student.pt never written) resumes from last.pt without retraining
    (run.dir("final") / "student.pt").unlink()
    last = (run.dir("final") / "last.pt").stat().st_mtime_ns
    run_adapt(AdaptRun(teacher, data, run.out, AdaptOptions(distill=DistillOptions(epochs=1, batch=4))))
    assert (run.dir("final") / "last.pt").stat().st_mtime_ns == last
    assert (run.dir("final") / "student.pt").is_file()

    # another T redoes the filter from the same auxiliary student
    other = AdaptRun(teacher, data, run.out, AdaptOptions(distill=DistillOptions(epochs=1, batch=4), keep_pct=60))
    assert len(filter_step(other)) == 9
    assert (run.out / "aux/student.pt").stat().st_mtime_ns == stamps["aux/student.pt"]
    with pytest.raises(ValueError, match="made with --keep 60"):
        student_step(AdaptRun(teacher, data, run.out, AdaptOptions(distill=DistillOptions(epochs=1, batch=4))), "final")


def test_resumed_training_equals_uninterrupted(bed, tmp_path):
    root, data, teacher = bed
    labels = ensure_pseudo_labels(teacher, data, tmp_path / "pseudo", "train", 8, 16)
    ids = labels.ids[:8]
    opts = DistillOptions(epochs=2, batch=4, select="last")
    full = train_student(teacher, data, labels, ids, tmp_path / "full", opts, resume=False)
    train_student(
        teacher, data, labels, ids, tmp_path / "cut", DistillOptions(epochs=1, batch=4, select="last"), resume=False
    )
    resumed = train_student(teacher, data, labels, ids, tmp_path / "cut", opts, resume=True)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], rel=1e-6)
    a = torch.load(full["best_path"], weights_only=True)["state_dict"]
    b = torch.load(resumed["best_path"], weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_label_free_selection_without_val_gt(tmp_path):
    data = write_random_pairs(tmp_path / "data", n=12, size_px=S, ground_size=(32, 128), splits=("train",))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "t.pt", build_model("small", **SMALL))
    labels = ensure_pseudo_labels(str(tmp_path / "t.pt"), str(data), tmp_path / "pseudo", "train", 8, 16)
    res = train_student(
        str(tmp_path / "t.pt"),
        str(data),
        labels,
        labels.ids,
        tmp_path / "s",
        DistillOptions(epochs=1, batch=4, holdout_pct=25),
    )
    assert res["selection_rule"] == "pseudo" and "label-free" in res["selection"]
    assert res["trained_on"] == 9 and "val_pseudo_median_m" in res["history"][0]


def test_bn_reestimate_control(bed, tmp_path):
    root, data, teacher = bed
    run = AdaptRun(
        teacher, data, tmp_path / "bn", AdaptOptions(bn_reestimate_only=True, distill=DistillOptions(batch=4))
    )
    summary = run_adapt(run)
    model, ckpt = load_checkpoint(run.out / "student.pt")
    t, _ = load_checkpoint(teacher)
    assert ckpt["lineage"]["method"] == "bn-reestimate" and ckpt["lineage"]["trained_on"] == 15
    sd, td = model.state_dict(), t.state_dict()
    means = [k for k in sd if k.endswith("running_mean")]
    assert means and all(not torch.equal(sd[k], td[k]) for k in means)
    weights = [k for k in sd if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(sd[k], td[k]) for k in weights)  # statistics only, no gradient step
    assert "student" in summary["splits"]["test"]


def test_cli_steps_and_errors(bed, tmp_path, capsys):
    root, data, teacher = bed
    out = str(tmp_path / "run")
    # random pairs come from no drive: the teacher's own labels (the vehicle recipe smooths along drives)
    common = ["--teacher", teacher, "--data", data, "--out", out, "--batch", "4", "--pseudo-labels", "teacher"]
    assert adapt_main(["filter", *common]) == 2
    assert "run `pseudo-label` first" in capsys.readouterr().err
    assert adapt_main(["pseudo-label", *common, "--topk", "32"]) == 0
    assert adapt_main(["filter", *common, "--topk", "32"]) == 2
    assert "run `train-student --stage aux` first" in capsys.readouterr().err
    assert adapt_main(["train-student", "--stage", "final", *common, "--topk", "32", "--epochs", "1"]) == 2
    assert "run `filter` first" in capsys.readouterr().err
    assert adapt_main(["train-student", "--stage", "aux", *common, "--topk", "32", "--levels", "9"]) == 2
    assert "--levels K' must be in 1..6" in capsys.readouterr().err
    assert (
        adapt_main(["train-student", "--stage", "aux", *common, "--topk", "32", "--epochs", "1", "--select", "last"])
        == 0
    )
    assert adapt_main(["filter", *common, "--topk", "32", "--keep", "40"]) == 0
    assert len(json.loads((Path(out) / "filter" / "kept.json").read_text())["ids"]) == 6
    assert (
        adapt_main(
            [
                "train-student",
                "--stage",
                "final",
                *common,
                "--topk",
                "32",
                "--epochs",
                "1",
                "--keep",
                "40",
                "--pseudo-gt",
                "heatmap",
                "--levels",
                "6",
                "--select",
                "last",
            ]
        )
        == 0
    )
    _, ckpt = load_checkpoint(Path(out) / "final" / "student.pt")
    assert ckpt["lineage"]["trained_on"] == 6 and ckpt["lineage"]["flags"]["distill"]["pseudo_gt"] == "heatmap"


# ---------------------------------------------------------------- options: one default, checked first


def test_bad_option_fails_before_any_expensive_step(bed, tmp_path):
    """`adapt --keep 150` used to be refused by the filter, after the teacher pass and the
    auxiliary student: now before torch is even imported."""
    root, data, teacher = bed
    code = (
        "import sys; from offline_adapt.cli import main; rc = main(sys.argv[1:]); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch'); raise SystemExit(rc)"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "adapt",
            "--teacher",
            teacher,
            "--data",
            data,
            "--out",
            str(tmp_path / "run"),
            "--keep",
            "150",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stdout.strip() == "no torch"
    assert r.stderr.strip().splitlines() == ["xview-adapt: error: --keep must be in [0, 100], got 150.0"]
    assert not (tmp_path / "run").exists()


def test_levels_out_of_range_fails_before_the_teacher_pass(bed, tmp_path, monkeypatch, capsys):
    import offline_adapt.adapt.pipeline as pipeline

    def no_teacher_pass(*a, **k):
        raise AssertionError("the teacher pass ran")

    monkeypatch.setattr(pipeline, "ensure_pseudo_labels", no_teacher_pass)
    root, data, teacher = bed
    assert (
        adapt_main(["adapt", "--teacher", teacher, "--data", data, "--out", str(tmp_path / "run"), "--levels", "9"])
        == 2
    )
    assert "--levels K' must be in 1..6" in capsys.readouterr().err


def test_every_command_takes_its_defaults_from_the_options():
    from offline_adapt.adapt.cli import options_from_args
    from offline_adapt.cli import COMMAND_MODULES
    from offline_adapt.train.cli import options_from_args as train_options
    from offline_adapt.train.options import TrainOptions
    from xview_loc_ros.cli import build_parser
    from xview_testbed.demo import DemoOptions

    parser = build_parser("xview-adapt", "", COMMAND_MODULES)
    req = ["--teacher", "t.pt", "--data", "d", "--out", "o"]
    for command in ("adapt", "train-student", "filter", "pseudo-label"):
        extra = ["--stage", "aux"] if command == "train-student" else []
        assert options_from_args(parser.parse_args([command, *req, *extra])) == recipe_options(), command
    assert (
        train_options(parser.parse_args(["train", "--data", "d", "--config", "small", "--out", "o"])) == TrainOptions()
    )
    assert (DemoOptions().keep, DemoOptions().epochs) == (AdaptOptions().keep_pct, DistillOptions().epochs)
    assert recipe_options().distill.fov_mask == (90.0, 180.0)  # the command lines' default recipe: vehicle


def test_run_results_and_reuse_steps_are_the_public_view_of_a_run(bed, adapted, tmp_path):
    root, data, teacher = bed
    run, summary = adapted
    res = run_results(run.out)
    assert res["summary"] == json.loads((run.dir("report") / "summary.json").read_text())
    assert res["summary"]["splits"]["test"]["teacher"]["count"] == 4
    kept = json.loads((run.dir("filter") / "kept.json").read_text())["ids"]
    assert res["filter_report"]["kept"] == len(kept) and res["filter_report"]["count"] == 15
    assert reuse_steps(run.out, tmp_path / "new") == ["pseudo", "aux"]
    assert reuse_steps(run.out, tmp_path / "new") == []  # never over a step the new run already has
    # the copied steps verify in the new run: its teacher pass and auxiliary student are not redone
    new = AdaptRun(
        teacher, data, tmp_path / "new", AdaptOptions(distill=DistillOptions(epochs=1, batch=4), keep_pct=60)
    )
    stamp = (tmp_path / "new" / "aux" / "student.pt").stat().st_mtime_ns
    assert student_step(new, "aux") == tmp_path / "new" / "aux" / "student.pt"
    assert (tmp_path / "new" / "aux" / "student.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="no finished adaptation report"):
        run_results(tmp_path / "new")
