# SPDX-License-Identifier: Apache-2.0
"""Re-localization in the node over real DDS (issue 20): a small model WITH a retrieval head (untrained: the wiring,
not the accuracy), a city index built from its aerial descriptors over the test tiles, a fix far off that triggers a
search, the outcome in diagnostics and on ~/pose, start-up refusals, and a corrupt index set at run time."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from localizer_testbed import (
    LAT,
    LON,
    panorama,
    write_city_index,
    write_head_checkpoint,
    write_small_checkpoint,
    write_tiles,
)
from node_harness import Harness, fix_msg, imu_msg, jpeg_msg
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter

from xview_loc_ros.geo import LocalENU
from xview_loc_ros.node import LocalizerNode
from xview_loc_ros.relocalize import RelocUnavailable

T0 = 1_700_000_000.0
ENU = LocalENU(LAT, LON, 10.0)
DIM = 32


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    d = tmp_path_factory.mktemp("node_reloc")
    model = write_head_checkpoint(d / "head.pt", DIM)
    tiles = write_tiles(d / "tiles", radius=2)
    index = write_city_index(model, tiles, d / "city.npz")
    rclpy.init()
    yield {
        "dir": d,
        "tiles": tiles,
        "index": index,
        "params": {
            "model_path": str(model),
            "tile_source": f"xyz:{tiles}",
            "backend": "torch",
            "device": "cpu",
            "threads": 1,
            "prefetch_ahead_s": 0.0,
            "publish_overlay": False,
            "diagnostics_period_s": 0.3,
            # an untrained model: no gate, and every search keeps its best candidate (the wiring is under test)
            "gate_chi2": 1e9,
            "min_confidence": 0.0,
            "max_ambiguity": 1e9,
            "reloc_index": str(index),
            "reloc_min_confidence": 0.0,
            "reloc_accept_confidence": 0.0,
            "reloc_top_k": 4,
            "reloc_radius_m": 40.0,
            "reloc_interval_s": 0.5,
        },
    }
    rclpy.shutdown()


def _step(h, t, east, north, std=5.0):
    lat, lon, _ = ENU.to_latlon(east, north, 0.0)
    h.publish("fix", fix_msg(t, float(lat), float(lon), std=std))
    h.publish("imu", imu_msg(t, 0.0))


def _drive(h, n_images, jump_at=None, jump_east_m=80.0, jump_std=5.0, image_hz=2.0):
    """Fixes and IMU at 10 Hz, the vehicle driving north at 1 m/s, an image every 1/image_hz s (waiting for each
    frame to be handled: lock-step); from image ``jump_at`` on the fixes are ``jump_east_m`` east with std
    ``jump_std``."""
    per = int(round(10 / image_hz))
    t = getattr(h, "t_next", T0)  # drives continue in time
    for i in range(n_images):
        jumped = jump_at is not None and i >= jump_at
        for _ in range(per):
            _step(h, t, jump_east_m if jumped else 0.0, 1.0 * (t - T0), jump_std if jumped else 5.0)
            t += 0.1
        time.sleep(0.05)
        done = _handled(h)
        h.publish("jpeg", jpeg_msg(t - 0.05, panorama(i % 7)))
        assert h.wait_for(lambda done=done: _handled(h) > done, 30.0), h.node.diagnostics_values()
    h.t_next = t


def _handled(h):
    """Frames the worker has finished with an estimate (every frame here has one: a fix and tiles)."""
    c = h.node.counts
    return c.get("poses", 0) + c.get("gated", 0)


def _set(h, **values):
    client = h.tester.create_client(SetParameters, "/xview_localizer/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        future = client.call_async(req)
        assert h.wait_for(future.done, 10.0)
        return future.result().results
    finally:
        h.tester.destroy_client(client)


def test_a_wide_fix_triggers_a_search_and_its_candidate_is_the_pose(bed):
    """fusion: frame; the fix jumps 80 m east with a 40 m std: a search around the last good position (not the
    fix), counted in diagnostics, whose best candidate is published on ~/pose."""
    h = Harness(dict(bed["params"], fusion="frame", reloc_fix_std_m=25.0))
    try:
        assert h.node.diagnostics_values()["reloc"].startswith("on: ")
        _drive(h, 4)
        assert h.node.loc.reloc_counts["searches"] == 0  # a good fix, no trigger (confidence trigger off here)
        good = h.node.loc.last_reloc
        assert good is None
        before = h.node.loc.reloc_counts["candidates"]
        _drive(h, 1, jump_at=0, jump_std=40.0)
        assert h.wait_for(lambda: h.node.loc.reloc_counts["searches"] >= 1, 20.0), h.node.diagnostics_values()
        out = h.node.loc.last_reloc
        assert out.reason == "fix_covariance" and out.outcome == "relocalized" and 1 <= len(out.candidates) <= 4
        assert h.node.loc.reloc_counts["candidates"] - before == len(out.confidences) >= 1
        # searched around the last good position (the last frame's estimate before the jump: within the +-32 m
        # patch of the true track at x = 0), not around the fix 80 m east
        e, n, _ = ENU.to_enu(out.centre[0], out.centre[1], 10.0)
        assert abs(float(e)) < 35.0, (e, n)
        for c in out.candidates:
            ce, cn, _ = ENU.to_enu(c.lat, c.lon, 10.0)
            assert np.hypot(float(ce) - float(e), float(cn) - float(n)) <= 40.0 + 1e-6
        chosen = out.estimate
        assert chosen is not None and h.wait_for(lambda: h.count("pose") >= 5, 5.0)
        assert chosen is not None and chosen.accepted and len(out.confidences) >= 1
        assert h.wait_for(lambda: "reloc_searches" in (h.last_diagnostics() or {}), 5.0)
        assert h.wait_for(lambda: int((h.last_diagnostics() or {}).get("reloc_searches", "0")) >= 1, 5.0)
        diag = h.last_diagnostics()
        assert int(diag["reloc_reason_fix_covariance"]) >= 1 and int(diag["reloc_candidates"]) >= 1
        assert int(diag["reloc_outcome_relocalized"]) >= 1 and diag["reloc_last_outcome"] == "relocalized"
        assert float(diag["stage_reloc_ms_median"]) > 0 and float(diag["stage_reloc_ms_p95"]) > 0
        _drive(h, 2, jump_at=0, jump_std=40.0)  # the trigger persists: more searches, rate limited in image time
        assert h.node.loc.reloc_counts["searches"] >= 2
        # the chosen candidate's estimate went out as the frame's pose
        poses = [(p.pose.pose.position.x, p.pose.pose.position.y) for p in h.received["pose"]]
        assert any(abs(x - chosen.east) < 1e-6 and abs(y - chosen.north) < 1e-6 for x, y in poses), poses
    finally:
        h.close()


def test_a_lost_track_searches_and_reinitialises_the_filter(bed):
    """fusion: filter; the fix jumps 80 m east (normal std): the filter reports a lost track, searches run; each
    kept candidate either confirms the belief or restarts it there (filter_reinit_reloc, the new belief on ~/pose)."""
    h = Harness(dict(bed["params"], fusion="filter", reloc_fix_std_m=1e6))
    try:
        _drive(h, 4)
        assert h.node.loc.reloc_counts["searches"] == 0
        _drive(h, 6, jump_at=0)
        assert h.wait_for(lambda: h.node.loc.reloc_counts["reason_lost"] >= 1, 20.0), h.node.diagnostics_values()
        c = h.node.loc.reloc_counts
        assert c["outcome_relocalized"] + c["outcome_confirmed"] == c["searches"] >= 2  # accept_confidence 0
        assert h.wait_for(
            lambda: int((h.last_diagnostics() or {}).get("reloc_searches", "0")) == c["searches"], 10.0
        ), h.last_diagnostics()
        diag = h.last_diagnostics()
        assert int(diag.get("filter_reinit_reloc", "0")) == c["outcome_relocalized"]
        assert int(diag["reloc_reason_lost"]) >= 1 and int(diag["reloc_candidates"]) >= c["searches"]
        out = h.node.loc.last_reloc
        assert out.outcome in ("relocalized", "confirmed") and out.estimate is not None
        if out.outcome == "relocalized":
            assert out.tracked is not None and out.tracked.state == "reinitialised"
            assert (out.tracked.east, out.tracked.north) == pytest.approx(
                (out.estimate.east, out.estimate.north), abs=0.5
            )
    finally:
        h.close()


def test_start_refused_for_another_models_index_or_no_head(bed):
    other = write_city_index(bed["params"]["model_path"], bed["tiles"], bed["dir"] / "other.npz", sha="e" * 64)
    with pytest.raises(RelocUnavailable, match="rebuild the index with this model"):
        LocalizerNode(
            parameter_overrides=[Parameter(k, value=v) for k, v in dict(bed["params"], reloc_index=str(other)).items()]
        )
    plain = write_small_checkpoint(bed["dir"] / "plain.pt")
    with pytest.raises(RelocUnavailable, match="no retrieval head"):
        LocalizerNode(
            parameter_overrides=[Parameter(k, value=v) for k, v in dict(bed["params"], model_path=str(plain)).items()]
        )


def test_a_corrupt_index_at_run_time_turns_reloc_off_and_localizing_goes_on(bed):
    corrupt = bed["dir"] / "corrupt.npz"
    corrupt.write_bytes(bed["index"].read_bytes()[:300])
    h = Harness(dict(bed["params"], fusion="frame"))
    try:
        (r,) = _set(h, reloc_index=str(corrupt))
        assert r.successful, r.reason
        assert h.wait_for(lambda: h.node.diagnostics_values()["reloc"].startswith("off after an error"), 5.0)
        assert "corrupt.npz" in h.node.diagnostics_values()["reloc"]
        assert h.node.loc.reloc_index is None
        before = h.count("pose")
        _drive(h, 3, jump_at=0, jump_std=40.0)  # a trigger that would search: nothing happens, poses go on
        assert h.wait_for(lambda: h.count("pose") >= before + 2, 10.0)
        assert h.node.loc.reloc_counts["searches"] == 0
        (r,) = _set(h, reloc_index=str(bed["index"]))  # a good one again: on
        assert r.successful and h.node.diagnostics_values()["reloc"].startswith("on: ")
    finally:
        h.close()


@pytest.mark.parametrize("fusion", ["filter", "frame"])
def test_cold_start_without_any_fix_searches_the_whole_index(bed, fusion):
    """No fix at all: the first frame searches the whole index, anchors map at its answer and publishes a pose (with
    the filter, the next frame publishes the coasting belief; per frame, the next frame has no patch to cut)."""
    h = Harness(dict(bed["params"], fusion=fusion))
    try:
        t = T0
        for i in range(2 if fusion == "filter" else 1):
            for _ in range(5):
                h.publish("imu", imu_msg(t, 0.0))
                t += 0.1
            time.sleep(0.05)
            h.publish("jpeg", jpeg_msg(t - 0.05, panorama(i)))
            assert h.wait_for(lambda i=i: h.count("pose") >= i + 1, 30.0), h.node.diagnostics_values()
        assert h.node.counts.get("fix", 0) == 0
        c = h.node.loc.reloc_counts
        assert c["reason_cold_start"] == 1 and c["searches"] >= 1
        out = h.node.loc.last_reloc
        first = out if c["searches"] == 1 else None
        if first is not None:
            assert first.centre is None and len(first.candidates) == 4  # the whole index's best 4
        datum = h.node.loc.datum
        assert datum is not None
        e, n, _ = ENU.to_enu(datum.lat0, datum.lon0, 10.0)
        assert np.hypot(float(e), float(n)) <= 96.0 + 1e-6  # an index entry
        assert h.wait_for(lambda: int((h.last_diagnostics() or {}).get("reloc_reason_cold_start", "0")) == 1, 5.0)
        pose = h.received["pose"][0]
        assert pose.header.frame_id == "map" and np.hypot(pose.pose.pose.position.x, pose.pose.pose.position.y) < 200
    finally:
        h.close()
