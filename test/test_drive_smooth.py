# SPDX-License-Identifier: Apache-2.0
"""Drive consistency (issue 17): the teacher's heat maps smoothed forward and backward along a drive by the
node's drive filter (xview_loc_ros.drive_filter.smooth_drive), the pairs grouped per drive
(offline_adapt.adapt.drive_smooth) and the two `xview-adapt adapt` flags that use it."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch

from offline_adapt.adapt.cli import options_from_args
from offline_adapt.adapt.drive_smooth import (
    SmoothOptions,
    consistent_ids,
    mid_heading,
    smooth_pairs,
    split_drives,
)
from offline_adapt.adapt.options import AdaptOptions, DistillOptions, recipe_options
from offline_adapt.adapt.pipeline import AdaptRun, run_adapt
from offline_adapt.adapt.pseudo_labels import PseudoLabels
from offline_adapt.cli import COMMAND_MODULES
from offline_adapt.data.dataset import DatasetMeta, DatasetWriter, PairRecord, write_rgb
from xview_loc_ros.cli import build_parser
from xview_loc_ros.drive_filter import BeliefGrid, DriveFilter, FilterParams, SmootherFrame, smooth_drive
from xview_loc_ros.geo import LocalENU, PatchGeoref
from xview_loc_ros.models import build_model, load_checkpoint, save_checkpoint

DATUM = LocalENU(52.0, 4.37, 0.0)
S, MPP = 128, 0.5  # the small model's finest heat map over a 64 m patch
FIX_STD = 5.0
SPEED = 5.0  # m/s, driving east, one frame a second (the extracted pairs' rate)
WRONG = (6, 11, 17)  # frames whose heat map's mode is a decoy 12 m north of the truth
DECOY = np.array([0.0, 12.0])


def heatmap(centre: np.ndarray, peak: np.ndarray, size: int = S, mpp: float = MPP, std: float = 1.0) -> np.ndarray:
    """Probabilities (size x size, row 0 north) over the patch centred at ``centre``: one Gaussian peak."""
    xs = (np.arange(size) + 0.5 - size / 2) * mpp
    e, n = centre[0] + xs[None, :], centre[1] - xs[:, None]
    p = np.full((size, size), 1e-6) + np.exp(-0.5 * ((e - peak[0]) ** 2 + (n - peak[1]) ** 2) / std**2)
    return p / p.sum()


def drive(n: int = 24, seed: int = 0):
    """Truth, fixes (white noise of FIX_STD) and the teacher's mode per frame (the truth; the decoy on WRONG)."""
    truth = np.stack([np.arange(n) * SPEED, np.zeros(n)], axis=1)
    fixes = truth + np.random.default_rng(seed).normal(0.0, FIX_STD, truth.shape)
    modes = truth.copy()
    modes[[k for k in WRONG if k < n]] += DECOY
    return truth, fixes, modes


def frames_of(truth, fixes, modes, motion: bool = True) -> List[SmootherFrame]:
    out = []
    for k in range(len(truth)):
        lat, lon, _ = DATUM.to_latlon(float(fixes[k][0]), float(fixes[k][1]), 0.0)
        d = truth[k] - truth[k - 1] if k and motion else np.zeros(2)
        out.append(
            SmootherFrame(
                100.0 + k,
                (float(d[0]), float(d[1])),
                "fix_speed" if k and motion else "none",
                (float(fixes[k][0]), float(fixes[k][1])),
                np.eye(2) * FIX_STD**2,
                heatmap(fixes[k], modes[k]),
                PatchGeoref(float(lat), float(lon), MPP, S),
                (float(fixes[k][0]), float(fixes[k][1])),
            )
        )
    return out


def errors(beliefs: Sequence[Optional[BeliefGrid]], truth: np.ndarray) -> np.ndarray:
    out = []
    for b, t in zip(beliefs, truth):
        assert b is not None
        e, n, _ = b.moments()
        out.append(math.hypot(e - t[0], n - t[1]))
    return np.asarray(out)


# ---------------------------------------------------------------- the smoother (drive_filter)


def test_smoothed_positions_beat_the_teacher_modes_on_a_straight_drive():
    truth, fixes, modes = drive()
    smoothed = errors(smooth_drive(frames_of(truth, fixes, modes), FilterParams(), DATUM), truth)
    teacher = np.hypot(*(modes - truth).T)
    assert smoothed.mean() < 0.5 * teacher.mean(), (smoothed, teacher)
    assert smoothed[list(WRONG)].max() < 3.0, smoothed[list(WRONG)]  # the wrong-mode frames: the drive wins


def test_the_backward_pass_brings_later_frames_to_the_first_ones():
    """At frame 0 the forward filter knows one fix and one heat map; the smoother knows the whole drive."""
    truth, fixes, modes = drive()
    frames = frames_of(truth, fixes, modes)
    f = DriveFilter(FilterParams())
    f.update_gnss(frames[0].stamp, *frames[0].fix_en, frames[0].fix_cov_en)
    f.update_heatmap(frames[0].stamp, frames[0].prob, frames[0].georef, DATUM, frames[0].centre_en)
    forward = f.snapshot()
    assert forward is not None
    smoothed = smooth_drive(frames, FilterParams(), DATUM)[0]
    assert smoothed is not None
    assert np.trace(smoothed.moments()[2]) < 0.5 * np.trace(forward.moments()[2])
    assert errors([smoothed], truth[:1])[0] < 2.0
    # the snapshot is the filter's own belief
    est = f.estimate()
    assert est is not None and forward.moments()[0] == pytest.approx(est.east, abs=1e-3)


def test_belief_grids_resample_by_their_window_centres():
    p = np.zeros((16, 16), np.float32)
    p[5, 7] = 1.0
    a = BeliefGrid(p, (10.0, 20.0), 0.5, 0.0)
    b = BeliefGrid(np.zeros_like(p), (11.0, 19.5), 0.5, 0.0)  # 2 cells east, 1 cell south
    r = a.resampled_to(b)
    assert r[4, 5] == pytest.approx(1.0)  # the same map position: 2 columns west, 1 row north in b
    assert a.map_cell() == pytest.approx((10.0 + (7.5 - 8) * 0.5, 20.0 - (5.5 - 8) * 0.5))
    with pytest.raises(ValueError, match="cell size"):
        a.resampled_to(BeliefGrid(p, (0.0, 0.0), 1.0, 0.0))


def test_smooth_drive_refuses_unordered_stamps_and_bad_motion():
    truth, fixes, modes = drive(4)
    frames = frames_of(truth, fixes, modes)
    with pytest.raises(ValueError, match="frame 2 stamp"):
        smooth_drive([frames[0], frames[1], frames[1]], FilterParams(), DATUM)
    bad = SmootherFrame(200.0, (1.0, 0.0), "wheels")
    with pytest.raises(ValueError, match="frame 1 motion source"):
        smooth_drive([frames[0], bad], FilterParams(), DATUM)


# ---------------------------------------------------------------- pairs of a data set (offline_adapt)


def pair(i: int, bag: str, stamp: Optional[float], fix_en, gt_en=None, heading: Optional[float] = 90.0) -> PairRecord:
    lat, lon, _ = DATUM.to_latlon(float(fix_en[0]), float(fix_en[1]), 0.0)
    rec = PairRecord(
        id=f"{bag}_{i}",
        ground=f"g/{bag}_{i}.png",
        aerial=f"a/{bag}_{i}.png",
        center_lat=float(lat),
        center_lon=float(lon),
        mpp=MPP,
        size_px=S,
        heading_deg=heading,
        fix_lat=float(lat),
        fix_lon=float(lon),
        fix_std_m=FIX_STD,
        stamp=stamp,
        extra={"bag": bag},
    )
    if gt_en is not None:
        glat, glon, _ = DATUM.to_latlon(float(gt_en[0]), float(gt_en[1]), 0.0)
        rec.gt_lat, rec.gt_lon = float(glat), float(glon)
    return rec


def labels_of(records: Sequence[PairRecord], probs: Dict[str, np.ndarray]) -> PseudoLabels:
    ids = [r.id for r in records]
    dense = np.stack([probs[i] for i in ids]).reshape(len(ids), -1)
    k = np.argmax(dense, axis=1)
    uv = np.stack([k % S + 0.5, k // S + 0.5], axis=1).astype(np.float32)
    order = np.argsort(-dense, axis=1)[:, :1024]
    return PseudoLabels(
        ids=ids,
        uv=uv,
        uv_argmax=uv.copy(),
        confidence=dense.max(axis=1).astype(np.float32),
        topk_index=order.astype(np.int32),
        topk_prob=np.take_along_axis(dense, order, axis=1).astype(np.float16),
        mpp=np.full(len(ids), MPP, np.float32),
        size_px=S,
    )


def drive_pairs(bag: str = "drive_a", t0: float = 1000.0, n: int = 24, seed: int = 0):
    truth, fixes, modes = drive(n, seed)
    recs = [pair(k, bag, t0 + k, fixes[k], truth[k]) for k in range(n)]
    probs = {r.id: heatmap(fixes[k], modes[k]) for k, r in enumerate(recs)}
    return recs, probs, truth, modes


def test_smoothed_labels_of_pairs_are_closer_to_the_truth_and_the_filter_drops_the_wrong_modes():
    recs, probs, truth, modes = drive_pairs()
    rows = smooth_pairs(recs, labels_of(recs, probs), SmoothOptions(gnss_std_m=FIX_STD))
    assert [r["id"] for r in rows] == [r.id for r in recs]
    teacher = np.asarray([r["teacher_err_m"] for r in rows])
    smoothed = np.asarray([r["smoothed_err_m"] for r in rows])
    assert teacher[list(WRONG)] == pytest.approx(12.0, abs=0.6)
    assert smoothed.mean() < 0.5 * teacher.mean(), (smoothed, teacher)
    assert smoothed[list(WRONG)].max() < 3.0
    dropped = set(r.id for r in recs) - set(consistent_ids(rows, 5.0))
    assert dropped == {recs[k].id for k in WRONG}
    assert consistent_ids(rows, 0.0) == [r.id for r in recs]  # 0 = off


def test_recorded_odometry_moves_the_smoother_and_fixes_stand_in_without_it():
    recs, probs, truth, modes = drive_pairs()
    for k, r in enumerate(recs):  # the extractor's dead reckoning: the truth shifted, a new segment at pair 12
        r.extra.update(odom_en=[float(truth[k][0]) + 100.0, float(truth[k][1])], odom_segment=int(k >= 12))
    rows = smooth_pairs(recs, labels_of(recs, probs), SmoothOptions(gnss_std_m=FIX_STD))
    motion = [r["motion"] for r in rows]
    assert motion[0] == "none" and motion[12] == "fix_speed"  # first pair; across the odometry's gap
    assert set(motion[1:12] + motion[13:]) == {"odom"}
    smoothed = np.asarray([r["smoothed_err_m"] for r in rows])
    assert smoothed[list(WRONG)].max() < 3.0 and smoothed.mean() < 2.0
    plain = [dataclasses.replace(r, extra={"bag": r.extra["bag"]}) for r in recs]
    rows = smooth_pairs(plain, labels_of(plain, probs), SmoothOptions(gnss_std_m=FIX_STD))
    assert {r["motion"] for r in rows[3:]} == {"fix_speed"}  # three fixes make a speed


def test_pairs_are_grouped_per_drive_ordered_by_stamp_and_split_at_gaps():
    a = [pair(k, "a", 10.0 + k, (k * 5.0, 0.0)) for k in range(6)]
    b = [pair(k, "b", 10.0 + k, (k * 5.0, 100.0)) for k in range(3)]
    gap = [pair(k, "a", 30.0 + k, (k * 5.0, 0.0)) for k in range(6, 9)]  # 21 s after a_5
    mixed = [b[1], a[3], gap[0], a[0], b[0], a[5], gap[2], a[1], b[2], a[2], gap[1], a[4]]
    pieces = split_drives(mixed, FilterParams().max_gap_s)
    assert [[r.id for r in p] for p in pieces] == [
        [r.id for r in b],
        [r.id for r in a],
        [r.id for r in gap],
    ]
    assert split_drives(a + gap, 25.0)[0] == a + gap  # no split when the gap is allowed
    # the smoothed labels come back in the labels' order, whatever the pieces
    probs = {r.id: heatmap(np.array([r_e, r_n]), np.array([r_e, r_n])) for r, (r_e, r_n) in _en(mixed)}
    rows = smooth_pairs(mixed, labels_of(mixed, probs), SmoothOptions())
    assert [r["id"] for r in rows] == [r.id for r in mixed]
    assert len({r["segment"] for r in rows}) == 3


def _en(records):
    for r in records:
        e, n, _ = DATUM.to_enu(r.fix_lat, r.fix_lon, 0.0)
        yield r, (float(e), float(n))


def test_bad_input_errors_name_the_pair():
    ok = [pair(k, "a", 10.0 + k, (k * 5.0, 0.0)) for k in range(3)]
    no_stamp = pair(7, "a", None, (0.0, 0.0))
    with pytest.raises(ValueError, match="pair 'a_7': no stamp"):
        split_drives(ok + [no_stamp], 5.0)
    no_fix = pair(8, "a", 20.0, (0.0, 0.0))
    no_fix.fix_lat = None
    with pytest.raises(ValueError, match="pair 'a_8': no GNSS fix"):
        split_drives(ok + [no_fix], 5.0)
    no_drive = pair(9, "a", 21.0, (0.0, 0.0))
    no_drive.extra = {}
    with pytest.raises(ValueError, match="pair 'a_9': no drive recorded"):
        split_drives(ok + [no_drive], 5.0)
    twin = pair(1, "a", 10.0, (0.0, 0.0))
    twin.id = "a_twin"
    with pytest.raises(ValueError, match="'a_0' and 'a_twin' of drive 'a' have the same stamp"):
        split_drives(ok + [twin], 5.0)
    probs = {r.id: heatmap(np.zeros(2), np.zeros(2)) for r in ok}
    labels = labels_of(ok, probs)
    with pytest.raises(ValueError, match="not in the data set"):
        smooth_pairs(ok[:2], labels, SmoothOptions())


def test_mid_heading_wraps_north():
    assert min(mid_heading(350.0, 10.0) or 0.0, 360.0 - (mid_heading(350.0, 10.0) or 0.0)) == pytest.approx(
        0.0, abs=1e-6
    )
    assert mid_heading(None, 10.0) == 10.0 and mid_heading(20.0, None) == 20.0 and mid_heading(None, None) is None


# ---------------------------------------------------------------- the flags


def test_flags_defaults_checks_and_the_paper_recipe():
    assert AdaptOptions().pseudo_labels == "teacher" and AdaptOptions().drive_consistency_m == 0.0
    assert recipe_options("paper") == AdaptOptions()
    assert not recipe_options("paper").uses_drive
    with pytest.raises(ValueError, match="--pseudo-labels"):
        AdaptOptions(pseudo_labels="gnss")
    with pytest.raises(ValueError, match="--drive-consistency-m"):
        AdaptOptions(drive_consistency_m=-1.0)
    with pytest.raises(ValueError, match="not with --gnss-prior"):
        AdaptOptions(pseudo_labels="drive-smooth", gnss_prior=True)
    with pytest.raises(ValueError, match="not with --gnss-prior"):
        AdaptOptions(drive_consistency_m=5.0, gnss_prior=True)
    with pytest.raises(ValueError, match="--pseudo-gt mode"):
        AdaptOptions(distill=DistillOptions(pseudo_gt="heatmap"), pseudo_labels="drive-smooth")
    args = build_parser("xview-adapt", "", COMMAND_MODULES).parse_args(
        ["adapt", "--teacher", "t", "--data", "d", "--out", "o", "--pseudo-labels", "drive-smooth"]
        + ["--drive-consistency-m", "5"]
    )
    opts = options_from_args(args)
    assert opts.pseudo_labels == "drive-smooth" and opts.drive_consistency_m == 5.0 and opts.uses_drive


# ---------------------------------------------------------------- the pipeline, on a tiny recorded drive


def write_drive_set(out, n: int = 16, seed: int = 0):
    """A data set of one drive (random images, real files): stamps 1 s apart, noisy fixes, GT."""
    rng = np.random.default_rng(seed)
    truth, fixes, _ = drive(n, seed)
    meta = DatasetMeta(ground_type="panorama", ground_size=[32, 128], fov_deg=360.0, patch_size_px=64, mpp=0.5)
    with DatasetWriter(out, meta) as w:
        for k in range(n):
            rec = pair(k, "bag1", 500.0 + k, fixes[k], truth[k])
            rec.size_px = 64
            rec.split = "train" if k % 4 else "test"
            rec.ground, rec.aerial = f"g/{k}.png", f"a/{k}.png"
            write_rgb(w.path(rec.ground), rng.integers(0, 256, (32, 128, 3), dtype=np.uint8))
            write_rgb(w.path(rec.aerial), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            w.add(rec)
    return out


def test_adapt_with_drive_smoothed_labels_and_the_consistency_filter(tmp_path, caplog):
    data = write_drive_set(tmp_path / "data")
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, build_model("small", aerial_size=64, ground_size=[32, 128], mpp=0.5))
    quick = DistillOptions(epochs=1, batch=4, select="last", steps_per_epoch=1)
    opts = AdaptOptions(distill=quick, keep_pct=100.0, pseudo_labels="drive-smooth", drive_consistency_m=1e-3)
    run = AdaptRun(str(teacher), str(data), tmp_path / "run", opts)
    with pytest.raises(ValueError, match="no pair of the 12 left is consistent"):
        run_adapt(run)  # an untrained teacher's modes are nowhere near 1 mm of the track
    rows = [json.loads(x) for x in (tmp_path / "run" / "drive" / "smoothed.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all("smoothed_err_m" in r for r in rows)
    # the smoothed labels follow the fixes and motion where the teacher knows nothing: better than its modes
    assert np.mean([r["smoothed_err_m"] for r in rows]) < np.mean([r["teacher_err_m"] for r in rows])
    d = sorted(r["teacher_dist_m"] for r in rows)
    limit = 0.5 * (d[5] + d[6])  # keeps exactly 6
    opts2 = AdaptOptions(distill=quick, keep_pct=100.0, pseudo_labels="drive-smooth", drive_consistency_m=limit)
    run2 = AdaptRun(str(teacher), str(data), tmp_path / "run", opts2)
    caplog.set_level("INFO")
    run_adapt(run2)
    kept = json.loads((tmp_path / "run" / "drive" / "consistency.json").read_text())
    assert kept["kept"] == 6 and kept["count"] == 12 and len(kept["ids"]) == 6
    _, ckpt = load_checkpoint(tmp_path / "run" / "student.pt")
    lineage = ckpt["lineage"]
    assert lineage["trained_on"] == 6
    assert "using cache" in caplog.text  # the teacher pass was not redone
    done = (tmp_path / "run" / "drive" / "done.json").stat().st_mtime_ns
    run_adapt(run2)  # a re-run: every step done
    assert (tmp_path / "run" / "drive" / "done.json").stat().st_mtime_ns == done
