# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt adapt` flags that use what a vehicle knows (issue 17): the GNSS prior on pseudo labels,
sigma in metres, batch-norm handling, several rounds, field-of-view masking and the recipes. Each flag is
checked for its behaviour on tiny real data sets (random images, real files, real training steps)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from pairs_testdata import write_random_pairs

from offline_adapt.adapt import distill as distill_module
from offline_adapt.adapt.cli import options_from_args
from offline_adapt.adapt.distill import distill_loss, train_student
from offline_adapt.adapt.options import (
    RECIPE_SETTINGS,
    AdaptOptions,
    DistillOptions,
    recipe_options,
)
from offline_adapt.adapt.pipeline import (
    AdaptRun,
    bn_step,
    pseudo_label_step,
    run_adapt,
    student_step,
)
from offline_adapt.adapt.pseudo_labels import (
    PseudoLabels,
    ensure_pseudo_labels,
    fix_prior_px,
    pseudo_fine,
    pseudo_levels,
    teacher_pass,
)
from offline_adapt.cli import COMMAND_MODULES
from offline_adapt.data.dataset import PairDataset, PairRecord
from offline_adapt.data.torch_data import PairTorchDataset, open_split, random_fov_window
from xview_loc_ros.cli import build_parser
from xview_loc_ros.fsutil import file_sha256
from xview_loc_ros.models import build_model, load_checkpoint, save_checkpoint
from xview_loc_ros.models.common import ModelOutput

S = 64
SMALL = dict(aerial_size=S, ground_size=[32, 128], mpp=0.5)
STATS = ("running_mean", "running_var", "num_batches_tracked")
QUICK = dict(epochs=1, batch=4, select="last", steps_per_epoch=1)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """12 target pairs (train 8 / test 4) and an untrained `small` teacher."""
    root = tmp_path_factory.mktemp("vehicle")
    data = write_random_pairs(root / "data", n=12, size_px=S, ground_size=(32, 128), splits=("train", "train", "test"))
    torch.manual_seed(0)
    save_checkpoint(root / "teacher.pt", build_model("small", **SMALL))
    return root, str(data), str(root / "teacher.pt")


def _state(path):
    return load_checkpoint(path)[0].state_dict()


# ---------------------------------------------------------------- --gnss-prior


class _DecoyTeacher(torch.nn.Module):
    """A teacher whose finest heat map is fixed: a strong decoy far from the patch centre (the fix)
    and a weaker peak near it."""

    def __init__(self, config, decoy=(5, 5), near=(36, 30)):
        super().__init__()
        self.config = config
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the runner reads the device from a parameter
        logits = torch.zeros(1, 1, S, S)
        logits[0, 0, decoy[1], decoy[0]] = 10.0
        logits[0, 0, near[1], near[0]] = 8.0
        self.register_buffer("logits", logits)

    def forward(self, ground, aerial):
        return ModelOutput(heatmaps=[self.logits.expand(ground.shape[0], -1, -1, -1).clone()], orientation=None)


def test_gnss_prior_moves_the_label_from_a_decoy_to_the_peak_near_the_fix(bed):
    root, data, _ = bed
    teacher = _DecoyTeacher(build_model("small", **SMALL).config)
    tds = open_split(data, "train", teacher.config, require_gt=False)
    plain, preds = teacher_pass(teacher, tds, batch_size=3, topk=8)
    prior, preds_prior = teacher_pass(teacher, tds, batch_size=3, topk=8, gnss_std_m=5.0)
    # heat map alone: the decoy (cell (5, 5), centre (5.5, 5.5) px) wins
    assert np.allclose(plain.uv_argmax, [5.5, 5.5]) and plain.gnss_std_m is None and plain.prior_uv is None
    # x the fix's likelihood (no fix stored: the patch centre (32, 32) px; no covariance: 5 m = 10 px):
    # the decoy is 37 px (3.7 sigma) away, the weaker peak 4.7 px: the label moves there
    assert np.allclose(prior.uv_argmax, [36.5, 30.5])
    assert np.allclose(prior.uv, [36.5, 30.5], atol=0.5)
    assert np.allclose(prior.prior_uv, [32.0, 32.0]) and np.allclose(prior.prior_cov_px, np.eye(2) * 100.0)
    # the top-k (the -M ablation's heat map) is the posterior's too: its peak is the near peak
    assert int(prior.topk_index[0][np.argmax(prior.topk_prob[0])]) == 30 * S + 36
    # the teacher's own predictions are kept as they are
    assert [p["u_argmax"] for p in preds_prior] == [p["u_argmax"] for p in preds] == [5.5] * len(preds)
    # a strong enough teacher still wins against a loose fix (100 m: the prior is nearly flat)
    loose, _ = teacher_pass(teacher, tds, batch_size=3, topk=8, gnss_std_m=100.0)
    assert np.allclose(loose.uv_argmax, [5.5, 5.5])
    # the prior's arrays survive the cache file
    prior.save(root / "prior.npz")
    back = PseudoLabels.load(root / "prior.npz")
    assert back.gnss_std_m == 5.0 and np.array_equal(back.prior_cov_px, prior.prior_cov_px)


def test_gnss_prior_uses_the_pairs_fix_covariance_and_old_pairs_load(tmp_path):
    base = dict(id="p", ground="g.png", aerial="a.png", center_lat=52.0, center_lon=4.37, mpp=0.5, size_px=S)
    # a data set written before the covariance was recorded: no key, loads, falls back to std, then default
    old = PairRecord.from_dict(dict(base, fix_std_m=2.0))
    assert old.fix_cov_en is None and np.allclose(old.fix_cov_en_or(5.0), np.eye(2) * 4.0)
    assert np.allclose(PairRecord.from_dict(base).fix_cov_en_or(5.0), np.eye(2) * 25.0)
    assert "fix_cov_en" not in PairRecord.from_dict(base).to_json()  # sets without it stay byte-identical
    # east/north m^2 -> u/v px^2 at 0.5 m/px: x 4, and v grows south, so the off-diagonal flips sign
    rec = PairRecord.from_dict(dict(base, fix_cov_en=[[4.0, 1.0], [1.0, 9.0]], fix_lat=52.0, fix_lon=4.37))
    mean, cov = fix_prior_px(rec, 5.0)
    assert np.allclose(mean, [S / 2, S / 2]) and np.allclose(cov, [[16.0, -4.0], [-4.0, 36.0]])
    # a fix 10 m east of the patch centre is 20 px right of it
    east = PairRecord.from_dict(dict(base, fix_lat=52.0, fix_lon=4.37 + 10.0 / (111320.0 * math.cos(math.radians(52)))))
    assert fix_prior_px(east, 5.0)[0] == pytest.approx([S / 2 + 20.0, S / 2], abs=0.1)
    with pytest.raises(ValueError, match="fix_cov_en must be a positive-definite"):
        PairRecord.from_dict(dict(base, fix_cov_en=[[1.0, 5.0], [5.0, 1.0]]))


# ---------------------------------------------------------------- --sigma-m


def test_sigma_in_metres_is_converted_with_the_models_mpp():
    assert DistillOptions(sigma_m=2.0).sigma_px_for(0.5) == pytest.approx(4.0)
    assert DistillOptions(sigma_m=1.0).sigma_px_for(0.14) == pytest.approx(1.0 / 0.14)
    # the paper's 4 px: 0.55 m on VIGOR (0.14 m/px), 2 m on small (0.5 m/px)
    assert DistillOptions().sigma_px_for(0.14) * 0.14 == pytest.approx(0.56)
    assert DistillOptions().sigma_px_for(0.5) * 0.5 == pytest.approx(2.0)
    # the loss uses the converted width: sigma_m 1 m on a 0.5 m/px model == sigma 2 px
    levels = [[4, 1], [8, 1], [16, 1], [S, 1]]
    uv = np.asarray([[10.2, 50.9], [40.0, 12.4]], np.float32)
    labels = PseudoLabels(
        ids=["a", "b"],
        uv=uv,
        uv_argmax=np.floor(uv) + 0.5,
        confidence=np.ones(2, np.float32),
        topk_index=np.zeros((2, 1), np.int32),
        topk_prob=np.zeros((2, 1), np.float16),
        mpp=np.full(2, 0.5, np.float32),
        size_px=S,
    )
    torch.manual_seed(1)
    heat = [torch.randn(2, 1, c, c) for c, _ in levels]
    batch = {"index": torch.tensor([0, 1]), "heading_deg": torch.tensor([0.0, 0.0])}
    cfg = {"levels": levels, "mpp": 0.5}

    def loss(**kw):
        return float(
            distill_loss(cfg, labels, np.array([0, 1]), DistillOptions(levels=2, **kw))(
                ModelOutput(heatmaps=heat), batch
            )[0]
        )

    assert loss(sigma_m=1.0) == pytest.approx(loss(sigma_px=2.0), rel=1e-6)
    assert loss(sigma_m=1.0) != pytest.approx(loss(), rel=1e-3)
    assert pseudo_levels(pseudo_fine(labels, [0], "mode", 2.0), levels)[0].shape == (1, 1, 4, 4)


def test_sigma_px_and_sigma_m_are_mutually_exclusive():
    with pytest.raises(ValueError, match="^--sigma and --sigma-m are mutually exclusive"):
        DistillOptions(sigma_px=3.0, sigma_m=1.0)
    with pytest.raises(ValueError, match="^--sigma and --sigma-m are mutually exclusive"):
        recipe_options("paper", {"sigma_px": 4.0, "sigma_m": 1.0})
    with pytest.raises(ValueError, match="^--sigma-m must be > 0"):
        DistillOptions(sigma_m=0.0)
    parser = build_parser("xview-adapt", "", COMMAND_MODULES)
    with pytest.raises(SystemExit):
        parser.parse_args(["adapt", "--teacher", "t", "--data", "d", "--out", "o", "--sigma", "3", "--sigma-m", "1"])
    with pytest.raises(ValueError, match="needs the model's m/px"):
        DistillOptions(sigma_m=1.0).sigma_px_for(None)


# ---------------------------------------------------------------- --bn


def test_frozen_bn_keeps_the_teachers_statistics_while_weights_train(bed, tmp_path):
    root, data, teacher = bed
    labels = ensure_pseudo_labels(teacher, data, tmp_path / "pseudo", "train", 4, 16)
    t = _state(teacher)
    frozen = _state(
        train_student(teacher, data, labels, labels.ids, tmp_path / "f", DistillOptions(bn="frozen", **QUICK))[
            "best_path"
        ]
    )
    stats = [k for k in t if k.endswith(STATS)]
    weights = [k for k in t if k.endswith("weight")]
    assert stats and all(torch.equal(frozen[k], t[k]) for k in stats)
    assert any(not torch.equal(frozen[k], t[k]) for k in weights)  # the student did train
    bn_affine = [k[: -len("running_mean")] + "weight" for k in stats if k.endswith("running_mean")]
    assert any(not torch.equal(frozen[k], t[k]) for k in bn_affine)  # BN's own affine weights too
    # contrast: bn train (the paper) moves the statistics
    trained = _state(
        train_student(teacher, data, labels, labels.ids, tmp_path / "t", DistillOptions(**QUICK))["best_path"]
    )
    assert any(not torch.equal(trained[k], t[k]) for k in stats if k.endswith("running_mean"))


def _ground(key: str) -> bool:
    return key.startswith("grd_")


def test_bn_reestimate_only_ground_changes_only_the_ground_branch(bed, tmp_path):
    root, data, teacher = bed
    run = AdaptRun(
        teacher,
        data,
        tmp_path / "bn",
        AdaptOptions(bn_reestimate_only=True, bn_reestimate_scope="ground", distill=DistillOptions(batch=4)),
    )
    sd, t = _state(bn_step(run)), _state(teacher)
    means = [k for k in t if k.endswith("running_mean")]
    assert any(_ground(k) for k in means) and any(not _ground(k) for k in means)
    assert all(not torch.equal(sd[k], t[k]) for k in means if _ground(k))
    assert all(torch.equal(sd[k], t[k]) for k in t if k.endswith(STATS) and not _ground(k))  # aerial, head untouched
    assert all(torch.equal(sd[k], t[k]) for k in t if not k.endswith(STATS))  # statistics only
    with pytest.raises(ValueError, match="^--bn-reestimate-only must be one of all, ground"):
        AdaptOptions(bn_reestimate_scope="aerial")


def test_bn_ground_reestimate_labels_and_trains_from_the_reestimated_teacher(bed, tmp_path):
    root, data, teacher = bed
    run = AdaptRun(
        teacher,
        data,
        tmp_path / "run",
        AdaptOptions(keep_pct=100, distill=DistillOptions(bn="ground-reestimate", **QUICK)),
    )
    pseudo_label_step(run)
    final = student_step(run, "final")
    bn_teacher = run.dir("teacher_bn") / "teacher.pt"
    manifest = json.loads((run.dir("pseudo") / "manifest.json").read_text())
    assert manifest["inputs"]["teacher_sha256"] == file_sha256(bn_teacher)  # labels from the re-estimated teacher
    t, b, s = _state(teacher), _state(bn_teacher), _state(final)
    assert all(not torch.equal(b[k], t[k]) for k in t if k.endswith("running_mean") and _ground(k))
    assert all(torch.equal(b[k], t[k]) for k in t if k.endswith(STATS) and not _ground(k))
    # then frozen: the student keeps the re-estimated statistics while its weights train
    assert all(torch.equal(s[k], b[k]) for k in b if k.endswith(STATS))
    assert any(not torch.equal(s[k], b[k]) for k in b if k.endswith("weight"))


# ---------------------------------------------------------------- --rounds


def test_two_rounds_the_second_taught_by_the_first_rounds_student(bed, tmp_path):
    root, data, teacher = bed
    opts = AdaptOptions(rounds=2, keep_pct=100, distill=DistillOptions(**QUICK))
    out = tmp_path / "run"
    summary = run_adapt(AdaptRun(teacher, data, out, opts))
    first, second = out / "final" / "student.pt", out / "round2" / "final" / "student.pt"
    assert first.is_file() and second.is_file()
    pseudo2 = json.loads((out / "round2" / "pseudo" / "manifest.json").read_text())
    assert pseudo2["inputs"]["teacher_sha256"] == file_sha256(first)  # round 2 labelled by round 1's student
    _, ck2 = load_checkpoint(second)
    assert ck2["lineage"]["round"] == 2 and ck2["lineage"]["teacher_sha256"] == file_sha256(first)
    _, ck1 = load_checkpoint(first)
    assert ck1["lineage"]["round"] == 1 and ck1["lineage"]["teacher_sha256"] == file_sha256(teacher)
    assert file_sha256(out / "student.pt") == file_sha256(second)
    assert {"teacher", "round1", "student"} <= set(summary["splits"]["test"])
    # resumable: a second call redoes nothing
    stamps = {p: p.stat().st_mtime_ns for p in (first, second, out / "round2" / "pseudo" / "pseudo_labels.npz")}
    run_adapt(AdaptRun(teacher, data, out, opts))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    with pytest.raises(ValueError, match="^--rounds must be >= 1"):
        AdaptOptions(rounds=0)


# ---------------------------------------------------------------- --fov-mask


def test_fov_mask_hides_all_but_a_seeded_azimuth_window(bed):
    root, data, _ = bed
    ds = PairDataset(data)
    cfg = build_model("small", **SMALL).config
    masked = PairTorchDataset(ds, ds.pairs, cfg, require_gt=False, fov_mask_deg=(90.0, 180.0))
    full = PairTorchDataset(ds, ds.pairs, cfg, require_gt=False)
    for seed in range(4):
        torch.manual_seed(seed)
        g = masked[seed]["ground"].numpy()
        torch.manual_seed(seed)
        start, n = random_fov_window(g.shape[2], 90.0, 180.0)
        w = g.shape[2]
        keep = np.zeros(w, bool)
        keep[(start + np.arange(n)) % w] = True  # contiguous on the cylinder: may wrap around the seam
        assert 90.0 - 360.0 / w <= n * 360.0 / w <= 180.0 + 360.0 / w
        assert np.all(g[:, :, ~keep] == 0.0)  # the normalisation mean colour: nothing to see
        assert np.array_equal(g[:, :, keep], full[seed]["ground"].numpy()[:, :, keep])
    with pytest.raises(ValueError, match="^--fov-mask must satisfy"):
        DistillOptions(fov_mask=(200.0, 100.0))


def test_fov_mask_applies_to_the_students_inputs_not_to_its_labels(bed, tmp_path, monkeypatch):
    root, data, teacher = bed
    seen = []
    real = distill_module.PairTorchDataset

    def recording(*a, **kw):
        seen.append(kw.get("fov_mask_deg"))
        return real(*a, **kw)

    monkeypatch.setattr(distill_module, "PairTorchDataset", recording)
    labels = ensure_pseudo_labels(teacher, data, tmp_path / "pseudo", "train", 4, 16)  # teacher: full view
    train_student(teacher, data, labels, labels.ids, tmp_path / "s", DistillOptions(fov_mask=(90, 180), **QUICK))
    assert seen == [(90.0, 180.0)]  # the student's training pairs, and only those
    pinhole = write_random_pairs(tmp_path / "pin", n=2, ground_type="pinhole", size_px=S, ground_size=(32, 64))
    pin_model = dict(SMALL, ground_type="pinhole", ground_size=[32, 64], fov_deg=90.0, known_orientation=False)
    cfg = build_model("small", **pin_model).config
    with pytest.raises(ValueError, match="--fov-mask needs panorama"):
        real(PairDataset(pinhole), PairDataset(pinhole).pairs, cfg, require_gt=False, fov_mask_deg=(90.0, 180.0))


# ---------------------------------------------------------------- --recipe


# today's (pre-issue-17) adaptation options, written out: the paper recipe must reproduce them exactly
TODAY_DISTILL = dict(
    pseudo_gt="mode",
    sigma_px=4.0,
    levels=None,
    epochs=3,
    lr=1e-4,
    batch=8,
    entropy_min=0.0,
    seed=0,
    select="auto",
    holdout_pct=10.0,
    steps_per_epoch=None,
    workers=0,
    device=None,
)
TODAY_ADAPT = dict(keep_pct=80.0, split="train", eval_split="test", topk=1024, bn_reestimate_only=False)
NEUTRAL = dict(
    sigma_m=None,
    bn="train",
    fov_mask=None,
    gnss_prior=False,
    rounds=1,
    bn_reestimate_scope="all",
    gnss_std_m=5.0,
    pseudo_labels="teacher",
    drive_consistency_m=0.0,
)


def _parse(*flags):
    parser = build_parser("xview-adapt", "", COMMAND_MODULES)
    return options_from_args(parser.parse_args(["adapt", "--teacher", "t", "--data", "d", "--out", "o", *flags]))


def test_recipe_paper_reproduces_todays_options_exactly():
    paper = recipe_options("paper")
    assert paper == AdaptOptions() == _parse("--recipe", "paper")
    assert _parse() == recipe_options("vehicle") != paper  # the command lines default to the vehicle recipe
    d = asdict(paper)
    assert {k: d["distill"][k] for k in TODAY_DISTILL} == TODAY_DISTILL
    assert {k: d[k] for k in TODAY_ADAPT} == TODAY_ADAPT
    new = {k: v for k, v in {**d, **d["distill"]}.items() if k not in (*TODAY_DISTILL, *TODAY_ADAPT, "distill")}
    assert new == NEUTRAL  # every new flag at its off value
    assert paper.distill.fingerprint() == TODAY_DISTILL  # the student steps' cache key: old runs stay done
    assert RECIPE_SETTINGS["paper"] == {}


def test_recipe_vehicle_and_explicit_flags_override_it():
    v = _parse("--recipe", "vehicle")
    assert v.distill.fov_mask == (90.0, 180.0) and v.pseudo_labels == "drive-smooth"
    assert replace_new(v) == replace_new(AdaptOptions())  # nothing else differs from the paper
    o = _parse("--recipe", "vehicle", "--sigma", "3", "--fov-mask", "120,120", "--bn", "frozen", "--rounds", "2")
    assert (o.distill.sigma_px, o.distill.fov_mask, o.distill.bn, o.rounds) == (3.0, (120.0, 120.0), "frozen", 2)
    assert _parse("--recipe", "vehicle", "--sigma-m", "0.5").distill.sigma_m == 0.5
    p = _parse("--gnss-prior", "--gnss-std-m", "3", "--fov-mask", "90,180", "--bn-reestimate-only", "ground")
    # an explicit GNSS prior replaces the recipe's drive-smoothed labels; both explicit is refused
    assert (p.gnss_prior, p.gnss_std_m, p.distill.fov_mask, p.pseudo_labels) == (True, 3.0, (90.0, 180.0), "teacher")
    with pytest.raises(ValueError, match="not with --gnss-prior"):
        _parse("--gnss-prior", "--pseudo-labels", "drive-smooth")
    assert (p.bn_reestimate_only, p.bn_reestimate_scope) == (True, "ground")
    assert (_parse("--bn-reestimate-only").bn_reestimate_scope, _parse().bn_reestimate_only) == ("all", False)
    assert _parse("--recipe", "paper").distill.fov_mask is None
    for flags, message in (
        (("--fov-mask", "90"), "^--fov-mask must be MIN,MAX"),
        (("--gnss-std-m", "0"), "^--gnss-std-m must be > 0"),
        (("--rounds", "0"), "^--rounds must be >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            _parse(*flags)


def test_gnss_prior_run_end_to_end_filters_the_posterior_labels(bed, tmp_path):
    root, data, teacher = bed
    flags = dict(gnss_prior=True, sigma_m=1.0, bn="frozen", keep_pct=75.0, **QUICK)
    opts = recipe_options("paper", flags)
    run = AdaptRun(teacher, data, tmp_path / "run", opts)
    run_adapt(run)
    manifest = json.loads((run.dir("pseudo") / "manifest.json").read_text())
    assert manifest["inputs"]["gnss_prior_std_m"] == 5.0
    _, ck = load_checkpoint(run.out / "student.pt")
    assert ck["lineage"]["flags"]["gnss_prior"] and ck["lineage"]["flags"]["distill"]["bn"] == "frozen"
    final = torch.load(run.dir("final") / "last.pt", weights_only=False)
    assert final["distill"]["sigma_px_used"] == pytest.approx(2.0)  # 1 m at the model's 0.5 m/px
    # the filter measured the auxiliary student against the posterior labels, not the raw teacher
    labels = PseudoLabels.load(run.dir("pseudo") / "pseudo_labels.npz")
    aux = {p["id"]: p for p in map(json.loads, (run.dir("aux") / "predictions.jsonl").read_text().splitlines())}
    d = [float(np.hypot(*(labels.uv[k] - [aux[i]["u"], aux[i]["v"]]))) * 0.5 for k, i in enumerate(labels.ids)]
    raw = {
        p["id"]: p for p in map(json.loads, (run.dir("pseudo") / "teacher_predictions.jsonl").read_text().splitlines())
    }
    assert any(np.hypot(*(labels.uv[k] - [raw[i]["u"], raw[i]["v"]])) > 1.0 for k, i in enumerate(labels.ids))
    report = json.loads((run.dir("filter") / "filter_report.json").read_text())
    assert report["distance_mean_m"] == pytest.approx(float(np.mean(d)), rel=1e-5)


def replace_new(o: AdaptOptions) -> dict:
    """The options without the recipe-settable fields."""
    d = asdict(o)
    for k in ("gnss_prior", "rounds", "pseudo_labels", "drive_consistency_m"):
        d.pop(k)
    for k in ("sigma_m", "bn", "fov_mask"):
        d["distill"].pop(k)
    return d
