# SPDX-License-Identifier: Apache-2.0
"""Re-localization's core (xview_loc_ros.relocalize and the localizer's search): triggers, candidates, the choice,
the index checks, and the fine model scoring candidate patches (real small model, real tiles, a real city index)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from localizer_testbed import (
    LAT,
    LON,
    model_and_patches,
    panorama,
    write_city_index,
    write_head_checkpoint,
    write_small_checkpoint,
    write_tiles,
)

from xview_loc_ros.drive_filter import FilterState
from xview_loc_ros.fsutil import file_sha256
from xview_loc_ros.geo import LocalENU
from xview_loc_ros.localizer import Fix, FrameRejected, Localizer
from xview_loc_ros.params import LocalizerParams, ParameterError
from xview_loc_ros.preprocess import prepare_ground
from xview_loc_ros.relocalize import (
    GROUND_DESCRIPTOR,
    RelocParams,
    RelocTrigger,
    RelocUnavailable,
    candidates,
    choose,
    fix_std_m,
    open_index,
    search_centre,
    summary,
)
from xview_loc_ros.retrieval import CityIndex, IndexGrid, save_index

ENU = LocalENU(LAT, LON)


def _params(**kw):
    return LocalizerParams(model_path="m.pt", tile_source="xyz:/tiles", **kw)


# -- triggers -------------------------------------------------------------------------------------------
def _observe(t, stamp, have=True, lost=False, std=5.0, conf=0.5):
    return t.observe(stamp, have_position=have, lost=lost, fix_std_m=std, confidence=conf)


def test_trigger_reasons_in_order():
    p = RelocParams(fix_std_m=25.0, min_confidence=0.1, low_frames=3, interval_s=0.0)
    t = RelocTrigger(p)
    assert _observe(t, 0.0) == ""  # a fix, confident, tracking: nothing
    assert _observe(t, 0.1, have=False, lost=True, std=None, conf=None) == "cold_start"
    assert _observe(t, 0.2, lost=True, std=100.0) == "lost"  # lost before a wide fix
    assert _observe(t, 0.3, std=30.0) == "fix_covariance"
    assert _observe(t, 0.4, std=25.0) == ""  # at the threshold: not above
    assert (
        RelocTrigger(RelocParams(on_lost=False, interval_s=0.0)).observe(
            0.0, have_position=True, lost=True, fix_std_m=1.0, confidence=0.9
        )
        == ""
    )  # lost-track searches can be switched off


def test_low_confidence_needs_n_consecutive_frames():
    t = RelocTrigger(RelocParams(min_confidence=0.1, low_frames=3, interval_s=0.0))
    assert [_observe(t, k, conf=0.05) for k in range(2)] == ["", ""]
    assert _observe(t, 2, conf=0.5) == ""  # a confident frame restarts the count
    assert [_observe(t, 3 + k, conf=c) for k, c in enumerate((0.05, None, 0.0))] == ["", "", "low_confidence"]
    t.searched(5.0)
    assert _observe(t, 6, conf=0.0) == ""  # a search restarts the count too


def test_rate_limit_in_image_time_and_time_backwards():
    t = RelocTrigger(RelocParams(interval_s=2.0))
    assert _observe(t, 10.0, lost=True) == "lost"
    t.searched(10.0)
    assert _observe(t, 11.9, lost=True) == ""
    assert t.counts["rate_limited"] == 1
    assert _observe(t, 12.0, lost=True) == "lost"
    assert _observe(t, 3.0, lost=True) == "lost"  # a bag restarted: the schedule is forgotten


def test_fix_std_and_search_centre():
    assert fix_std_m(np.diag([9.0, 400.0])) == pytest.approx(20.0)
    assert fix_std_m(np.array([[100.0, 99.0], [99.0, 100.0]])) == pytest.approx(math.sqrt(199.0))
    assert search_centre((1.0, 2.0), (3.0, 4.0)) == (1.0, 2.0)
    assert search_centre(None, (3.0, 4.0)) == (3.0, 4.0)
    assert search_centre(None, None) is None


# -- candidates and the choice ----------------------------------------------------------------------------
def _index(dim=96, radius=100.0, stride=20.0, sha="0" * 64):
    """A real index whose descriptors are orthonormal (entry i = unit vector i): similarities are exact."""
    grid = IndexGrid(LAT, LON, radius, stride, 0.5, 128)
    en = grid.centres_en()
    assert len(en) <= dim
    return CityIndex(grid, sha, "xyz:test", en, np.eye(len(en), dim, dtype=np.float32))


def test_candidates_rank_by_descriptor_within_the_radius():
    index = _index()
    en = index.east_north
    far = int(np.argmax(np.hypot(en[:, 0], en[:, 1])))  # an entry ~100 m from the origin
    near = int(np.flatnonzero(np.hypot(en[:, 0], en[:, 1]) < 1.0)[0])  # the origin
    q = index.descriptors[far] + 0.5 * index.descriptors[near]
    p = RelocParams(top_k=4, radius_m=30.0)
    # around the origin the far entry is out of reach; the origin's own entry ranks first there
    got = candidates(index, q, p, (LAT, LON))
    assert 1 <= len(got) <= 4 and far not in [c.entry for c in got]
    assert got[0].entry == near and all(math.hypot(c.east, c.north) <= 30.0 + 1e-6 for c in got)
    assert [c.rank for c in got] == list(range(len(got))) and got == sorted(got, key=lambda c: -c.score)
    # around the far entry, and over the whole index (cold start), it is the best
    lat, lon, _ = index.grid.frame.to_latlon(en[far, 0], en[far, 1], 0.0)
    assert candidates(index, q, p, (float(lat), float(lon)))[0].entry == far
    whole = candidates(index, q, p, None)
    assert whole[0].entry == far and len(whole) == 4
    assert whole[0].lat == pytest.approx(float(lat)) and whole[0].lon == pytest.approx(float(lon))


def test_choose_the_most_confident_acceptable_candidate():
    p = RelocParams(accept_confidence=0.2, max_ambiguity=0.8)
    assert choose([0.1, 0.5, 0.4], [0.0, 0.1, 0.1], p) == 1
    assert choose([0.1, 0.9, 0.4], [0.0, 0.95, 0.1], p) == 2  # the most confident is ambiguous
    assert choose([0.1, 0.15], [0.0, 0.0], p) is None
    assert choose([], [], p) is None
    assert choose([float("nan"), 0.3], [0.0, 0.0], p) == 1
    # the search centre's own patch is kept when it qualifies, whatever the others say
    assert choose([0.9, 0.3], [0.0, 0.0], p, prefer=1) == 1
    assert choose([0.9, 0.1], [0.0, 0.0], p, prefer=1) == 0  # it does not: the best candidate
    assert choose([0.9, 0.3], [0.0, 0.9], p, prefer=1) == 0  # ambiguous: neither


def test_summary_values():
    v = summary({"searches": 2, "candidates": 11, "reason_lost": 2, "outcome_relocalized": 1}, None)
    assert v["reloc_searches"] == 2 and v["reloc_candidates"] == 11 and v["reloc_reason_lost"] == 2
    assert v["reloc_outcome_relocalized"] == 1 and v["reloc_outcome_rejected"] == 0 and v["reloc_rate_limited"] == 0


# -- the index at start-up ---------------------------------------------------------------------------------
def test_open_index_checks_head_hash_dimension_and_file(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"a model file")
    sha = file_sha256(model)
    config = {"retrieval_dim": 96}
    outputs = ["heatmap", GROUND_DESCRIPTOR, "aerial_descriptor"]
    save_index(tmp_path / "good.npz", _index(sha=sha))
    assert len(open_index(str(tmp_path / "good.npz"), str(model), config, outputs)) == len(_index())
    with pytest.raises(RelocUnavailable, match="no retrieval head"):
        open_index(str(tmp_path / "good.npz"), str(model), {}, ["heatmap"])
    with pytest.raises(RelocUnavailable, match="32-value|makes 32"):
        open_index(str(tmp_path / "good.npz"), str(model), {"retrieval_dim": 32}, outputs)
    save_index(tmp_path / "other.npz", _index(sha="f" * 64))
    with pytest.raises(RelocUnavailable, match="rebuild the index with this model"):
        open_index(str(tmp_path / "other.npz"), str(model), config, outputs)
    (tmp_path / "corrupt.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:200])
    with pytest.raises(RelocUnavailable, match="corrupt.npz"):
        open_index(str(tmp_path / "corrupt.npz"), str(model), config, outputs)
    with pytest.raises(RelocUnavailable, match="not found"):
        open_index(str(tmp_path / "missing.npz"), str(model), config, outputs)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(reloc_radius_m=0.0), "reloc_radius_m"),
        (dict(reloc_top_k=0), "reloc_top_k"),
        (dict(reloc_top_k=1000), "reloc_top_k"),
        (dict(reloc_fix_std_m=-1.0), "reloc_fix_std_m"),
        (dict(reloc_min_confidence=1.5), "reloc_min_confidence"),
        (dict(reloc_low_frames=0), "reloc_low_frames"),
        (dict(reloc_interval_s=-1.0), "reloc_interval_s"),
        (dict(reloc_accept_confidence=2.0), "reloc_accept_confidence"),
        (dict(reloc_last_good_max_age_s=float("nan")), "reloc_last_good_max_age_s"),
        (dict(reloc_index=3), "reloc_index"),
    ],
)
def test_reloc_parameters_are_checked(kw, name):
    with pytest.raises(ParameterError) as e:
        _params(**kw).validate()
    assert e.value.name == name


def test_reloc_params_mirror_the_node_parameters():
    rp = _params(reloc_top_k=3, reloc_interval_s=5.0, max_ambiguity=0.5).validate().reloc_params()
    assert (rp.top_k, rp.interval_s, rp.max_ambiguity, rp.radius_m) == (3, 5.0, 0.5, 150.0)


# -- the fine model on candidate patches (real model and tiles) ------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("reloc")
    with model_and_patches(write_small_checkpoint(d / "small.pt"), write_tiles(d / "tiles", radius=2)) as stack:
        yield stack


def test_candidates_are_scored_in_one_pass_on_their_own_patches(stack):
    backend, builder = stack
    p = _params(heading_source="fixed", min_confidence=0.0, max_ambiguity=1e9, gate_chi2=1e-9).validate()
    loc = Localizer(p, backend, builder)
    fix = Fix(10.0, LAT, LON, 10.0, np.eye(2) * 4.0, "gnss")
    loc.add_fix(fix)
    heading = loc.heading_at(10.0)
    ground = prepare_ground(panorama(), heading.compass_deg, backend.config)
    centres = [(LAT, LON)]
    for e, n in ((20.0, 0.0), (0.0, -20.0)):
        lat, lon, _ = ENU.to_latlon(e, n, 0.0)
        centres.append((float(lat), float(lon)))
    centres.append((LAT + 0.01, LON))  # 1 km north: no tiles there
    ests = loc.score_centres(10.0, ground, heading, loc.mount, centres, fix)
    assert ests[3] is None and all(e is not None for e in ests[:3])
    direct = loc.process(10.0, panorama())  # the same patch alone: the batch gives the same heat map
    assert ests[0].confidence == pytest.approx(direct.confidence, rel=1e-4)
    assert (ests[0].u, ests[0].v) == pytest.approx((direct.u, direct.v), abs=1e-2)
    for est, (lat, lon) in zip(ests[:3], centres[:3]):
        assert (est.georef.center_lat, est.georef.center_lon) == (lat, lon)
        e, n, _ = ENU.to_enu(lat, lon, 0.0)
        assert abs(est.east - float(e)) <= 32.0 and abs(est.north - float(n)) <= 32.0
        # the GNSS gate (set to refuse everything here) is not applied to candidates
        assert est.accepted and est.reject_reason == ""
    assert not direct.accepted and direct.reject_reason == "gnss_gate"


def test_cold_start_candidates_need_no_fix(stack):
    backend, builder = stack
    p = _params(heading_source="fixed", datum_from_first_fix=False, datum_lat=LAT, datum_lon=LON).validate()
    loc = Localizer(p, backend, builder)
    heading = loc.heading_at(1.0)
    ground = prepare_ground(panorama(), heading.compass_deg, backend.config)
    (est,) = loc.score_centres(1.0, ground, heading, loc.mount, [(LAT, LON)], None)
    assert est is not None and est.fix.frame_id == "" and abs(est.east) <= 32.0 and abs(est.north) <= 32.0


def test_with_reloc_the_patch_stays_on_the_belief_while_lost(stack):
    backend, builder = stack
    p = _params(heading_source="fixed", patch_centre="belief").validate()
    loc = Localizer(p, backend, builder)
    loc.add_fix(Fix(1.0, LAT, LON, 10.0, np.eye(2) * 4.0, "gnss"))
    f = loc.filter
    assert f is not None
    f.initialise(1.0, 0.0, 0.0, np.eye(2) * 4.0, "first_fix")
    jumped = ENU.to_latlon(80.0, 0.0, 0.0)
    far = Fix(1.0, float(jumped[0]), float(jumped[1]), 10.0, np.eye(2) * 4.0, "gnss")
    f.state = FilterState.LOST
    assert loc.patch_centre(1.0, far) == (far.lat, far.lon)  # without re-localization: the fix
    loc.enable_relocalization(_index())
    lat, lon = loc.patch_centre(1.0, far)
    assert (lat, lon) == pytest.approx((LAT, LON), abs=1e-7)  # with it: the belief
    f.initialise(1.0, 0.0, 0.0, np.eye(2) * 4.0, "lost")
    assert loc.patch_centre(1.0, far) == (far.lat, far.lon)  # re-initialised from the fix: the fix
    f.initialise(1.0, 0.0, 0.0, np.eye(2) * 4.0, "reloc")
    assert loc.patch_centre(1.0, far) == pytest.approx((LAT, LON), abs=1e-7)  # set by a search: the belief


# -- the localizer's search with a model that has a retrieval head ---------------------------------------------
@pytest.fixture(scope="module")
def head_stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("reloc_head")
    model = write_head_checkpoint(d / "head.pt", 32)
    tiles = write_tiles(d / "tiles", radius=2)
    index = write_city_index(model, tiles, d / "city.npz", radius_m=64.0)
    with model_and_patches(model, tiles) as (backend, builder):
        yield backend, builder, open_index(str(index), str(model), backend.config, backend.outputs)


def _reloc_params(**kw):
    base = dict(heading_source="fixed", reloc_accept_confidence=0.0, reloc_top_k=3, reloc_interval_s=1.0)
    base.update(kw)
    return _params(**base).validate()


def test_the_frame_carries_its_descriptor_only_while_relocalizing(head_stack):
    backend, builder, index = head_stack
    loc = Localizer(_reloc_params(fusion="frame"), backend, builder)
    loc.add_fix(Fix(1.0, LAT, LON, 10.0, np.eye(2) * 4.0, "gnss"))
    assert loc.process(1.0, panorama()).descriptor is None
    loc.enable_relocalization(index)
    d = loc.process(1.0, panorama()).descriptor
    assert d.shape == (32,) and np.linalg.norm(d) == pytest.approx(1.0, abs=1e-4)


def test_cold_start_searches_the_whole_index_anchors_map_and_starts_the_filter(head_stack):
    backend, builder, index = head_stack
    loc = Localizer(_reloc_params(fusion="filter"), backend, builder)
    loc.enable_relocalization(index)
    assert loc.datum is None and loc.filter is not None and loc.filter.belief is None
    out = loc.relocalize(1.0, panorama(), None, None)  # no fix ever: the frame gave no estimate
    assert out is not None and out.reason == "cold_start" and out.centre is None
    assert len(out.candidates) == 3 and out.outcome == "relocalized" and out.chosen in range(3)
    best = out.estimate
    assert loc.datum is not None and (loc.datum.lat0, loc.datum.lon0) == (out.candidates[0].lat, out.candidates[0].lon)
    assert out.tracked is not None and out.tracked.state == "reinitialised" and out.tracked.fix is None
    assert (out.tracked.east, out.tracked.north) == pytest.approx((best.east, best.north), abs=0.5)
    assert loc.filter.last_reinit_reason == "reloc" and loc.filter.counts["reinit_reloc"] == 1
    c = loc.reloc_counts
    assert (c["searches"], c["reason_cold_start"], c["outcome_relocalized"], c["candidates"]) == (1, 1, 1, 3)
    # the next frame has a position (the search's): no cold start again; frames without a heat map count as
    # low confidence, but 2 of 5 do not trigger
    assert loc.relocalize(1.5, panorama(), None, None) is None
    assert loc.relocalize(2.0, panorama(), None, None) is None


def test_a_search_that_cannot_run_is_a_failed_outcome(head_stack):
    backend, builder, index = head_stack
    loc = Localizer(_reloc_params(fusion="frame", heading_source="imu"), backend, builder)
    loc.enable_relocalization(index)
    loc.add_fix(Fix(1.0, LAT, LON, 10.0, np.eye(2) * 900.0, "gnss"))  # 30 m std: triggers
    out = loc.relocalize(1.0, panorama(), None, None)  # no IMU heading for the ground image
    assert out.reason == "fix_covariance" and out.outcome == "failed" and "no_heading" in out.detail
    assert loc.reloc_counts["outcome_failed"] == 1 and loc.reloc_counts["candidates"] == 0
    assert loc.relocalize(1.5, panorama(), None, None) is None  # rate limited: the interval counts failures too
    assert loc.reloc_counts["rate_limited"] == 1


def test_frame_mode_search_around_the_fix_scores_candidates_and_the_centre(head_stack):
    backend, builder, index = head_stack
    loc = Localizer(_reloc_params(fusion="frame", reloc_radius_m=30.0, max_ambiguity=1e9), backend, builder)
    loc.enable_relocalization(index)
    jumped = ENU.to_latlon(20.0, 0.0, 0.0)
    loc.add_fix(Fix(1.0, float(jumped[0]), float(jumped[1]), 10.0, np.eye(2) * 900.0, "gnss"))
    est = loc.process(1.0, panorama())
    out = loc.relocalize(1.0, panorama(), est, None)
    assert out.reason == "fix_covariance" and out.centre == pytest.approx((float(jumped[0]), float(jumped[1])))
    assert 1 <= len(out.candidates) <= 3 and len(out.confidences) == len(out.candidates) + 1  # and the centre
    assert out.outcome == "relocalized" and out.estimate.accepted and out.tracked is None
    # the centre's own patch qualifies (no thresholds here): it is kept, whatever the candidates scored
    assert out.chosen == len(out.candidates)
    assert (out.estimate.georef.center_lat, out.estimate.georef.center_lon) == out.centre
    assert out.moved_m == pytest.approx(math.hypot(out.estimate.east - est.east, out.estimate.north - est.north))


def test_fixes_against_a_kept_position_are_held_out_until_one_agrees(head_stack):
    backend, builder, index = head_stack
    p = _reloc_params(
        fusion="filter", reloc_min_confidence=0.0, max_ambiguity=1e9, reloc_interval_s=0.0, reloc_gnss_hold_s=10.0
    )
    loc = Localizer(p, backend, builder)
    loc.enable_relocalization(index)
    f = loc.filter
    for k in range(0, 90):  # standing still on wheel odometry (the fixes' jumps are no motion)
        loc.add_odometry(0.1 * k, 0.0, 0.0)

    def frame(t, east, std=2.0):
        lat, lon, _ = ENU.to_latlon(east, 0.0, 0.0)
        loc.add_fix(Fix(t, float(lat), float(lon), 10.0, np.eye(2) * std**2, "gnss"))
        est = loc.process(t, panorama(int(t)))
        tracked = loc.track(t, est)
        return loc.relocalize(t, panorama(int(t)), est, tracked)

    for t in (1.0, 2.0, 3.0):
        assert frame(t, 0.0) is None  # a good fix, tracking: no search
    out = frame(4.0, 80.0)  # the fix jumps 80 m east: lost, a search around the last good position
    assert out is not None and out.reason == "lost" and out.outcome in ("relocalized", "confirmed")
    e, n, _ = ENU.to_enu(*out.centre, 0.0)
    assert math.hypot(float(e), float(n)) < 40.0  # the last good position, not the fix
    updates = f.counts["gnss_updates"]
    frame(5.0, 80.0)  # still 80 m off: held out of the filter
    assert f.counts["gnss_held_out"] == 1 and f.counts["gnss_updates"] == updates
    b = f.estimate()
    lat, lon, _ = loc.datum.to_latlon(b.east, b.north, loc.datum.h0)
    loc.add_fix(Fix(6.0, float(lat), float(lon), 10.0, np.eye(2) * 4.0, "gnss"))  # a fix on the belief: agrees
    loc.track(6.0, None)
    assert f.counts["gnss_held_out"] == 1 and f.counts["gnss_updates"] == updates + 1
    frame(7.0, 80.0)  # the hold is over: a disagreeing fix reaches the filter again
    assert f.counts["gnss_held_out"] == 1 and f.counts["gnss_updates"] == updates + 2


def test_a_gnss_outage_searches_around_the_dead_reckoned_position_and_feeds_the_filter(head_stack):
    backend, builder, index = head_stack
    p = _reloc_params(
        fusion="filter", reloc_min_confidence=0.0, reloc_low_frames=3, max_ambiguity=1e9, fix_max_age_s=0.5
    )
    loc = Localizer(p, backend, builder)
    loc.enable_relocalization(index)
    f = loc.filter
    for k in range(0, 120):  # standing still on wheel odometry
        loc.add_odometry(0.1 * k, 0.0, 0.0)
    for t in (1.0, 2.0):
        loc.add_fix(Fix(t, LAT, LON, 10.0, np.eye(2) * 4.0, "gnss"))
        est = loc.process(t, panorama(int(t)))
        assert loc.relocalize(t, panorama(int(t)), est, loc.track(t, est)) is None
    updates = f.counts["heatmap_updates"]
    outs = []
    for t in (3.0, 4.0, 5.0):  # no fix any more: no patch, no heat map of the frame's own
        with pytest.raises(FrameRejected):
            loc.process(t, panorama(int(t)))
        outs.append(loc.relocalize(t, panorama(int(t)), None, loc.track(t, None)))
    assert outs[:2] == [None, None]  # three frames without a heat map (reloc_low_frames) ...
    out = outs[2]
    assert out is not None and out.reason == "low_confidence"  # ... then a search, around the last good position
    e, n, _ = ENU.to_enu(*out.centre, 0.0)
    assert math.hypot(float(e), float(n)) < 40.0
    assert out.outcome in ("relocalized", "confirmed") and out.tracked is not None
    if out.outcome == "confirmed":  # the kept patch's heat map went into the filter
        assert f.counts["heatmap_updates"] == updates + 1
    else:
        assert f.last_reinit_reason == "reloc"


def test_centre_first_can_be_switched_off():
    p = RelocParams(accept_confidence=0.2, centre_first=False)
    assert choose([0.9, 0.3], [0.0, 0.0], p, prefer=1) == 0
    assert _params(reloc_centre_first=False).validate().reloc_params().centre_first is False


def test_rank_by_descriptor_similarity():
    p = RelocParams(accept_confidence=0.2, centre_first=False, rank="similarity")
    assert choose([0.9, 0.5, 0.1], [0.0, 0.0, 0.0], p, None, [0.1, 0.6, 0.9]) == 1  # 2 does not qualify
    assert choose([0.9, 0.5], [0.0, 0.0], p, None, None) == 0  # no similarities: confidence
    assert choose([0.9, 0.5], [0.0, 0.0], RelocParams(rank="similarity"), 1, [0.9, 0.1]) == 1  # centre first
    with pytest.raises(ParameterError):
        _params(reloc_rank="score").validate()


def test_candidates_carry_their_descriptor_similarity(head_stack):
    backend, builder, index = head_stack
    loc = Localizer(_reloc_params(fusion="frame"), backend, builder)
    loc.enable_relocalization(index)
    loc.add_fix(Fix(1.0, LAT, LON, 10.0, np.eye(2) * 4.0, "gnss"))
    est = loc.process(1.0, panorama())
    heading = loc.heading_at(1.0)
    ground = prepare_ground(panorama(), heading.compass_deg, backend.config)
    (a,) = loc.score_centres(1.0, ground, heading, loc.mount, [(LAT, LON)], est.fix, est.descriptor)
    # the patch around (LAT, LON) is the index's entry at its origin: the same aerial descriptor
    k = int(np.argmin(np.hypot(index.east_north[:, 0], index.east_north[:, 1])))
    assert a.similarity == pytest.approx(float(index.descriptors[k] @ est.descriptor), abs=1e-4)
    (b,) = loc.score_centres(1.0, ground, heading, loc.mount, [(LAT, LON)], est.fix)
    assert b.similarity is None
