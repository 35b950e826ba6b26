# SPDX-License-Identifier: Apache-2.0
"""The demo pipeline (xview_testbed.demo) at CI size, and the replay / bag-crop tools it drives.

The demo runs the same code path as `make demo` (synthetic city and drive, the bundled teacher, the
node over DDS, extract -> adapt -> export, the node with the ONNX student); the assertions recompute
every table value from the replay JSONL files, with distances from pyproj's geodesic (not the
package's own ENU code), and check that the pictures and the node's heat maps exist."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
from pyproj import Geod

from xview_testbed.demo import BUNDLED_TEACHER, Demo, DemoOptions, districts
from xview_testbed.replay import ReplayError, crop_bag, frame_window, read_jsonl, summarize_errors

FRAMES = 18  # the adaptation drive (west district)
TEST_FRAMES = 12  # the held-out drive (east district)
CITY_M = 300.0
GEOD = Geod(ellps="WGS84")


def _dist(lat, lon, lat0, lon0) -> float:
    return float(GEOD.inv(lon0, lat0, lon, lat)[2])


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    import io
    from contextlib import redirect_stdout

    out = tmp_path_factory.mktemp("demo") / "demo_out"
    opts = DemoOptions(out=out, city_size_m=CITY_M, frames=FRAMES, test_frames=TEST_FRAMES, epochs=1, progress=False)
    buf = io.StringIO()
    with redirect_stdout(buf):
        results = Demo(opts).execute()
    return {"out": out, "opts": opts, "results": results, "stdout": buf.getvalue()}


def test_error_summary_compares_node_frame_and_gnss():
    recs = [
        {
            "est_err_m": e,
            "localized": e is not None,
            "frame_err_m": f,
            "frame_localized": f is not None,
            "gnss_err_m": g,
        }
        for e, f, g in [(1.0, 2.0, 4.0), (3.0, None, 6.0), (12.0, 20.0, 11.0), (None, None, 3.0)]
    ]
    s = summarize_errors(recs)
    assert s["node"]["frames"] == 3 and s["node"]["coverage"] == 0.75 and s["node"]["median_m"] == 3.0
    assert s["node"]["over_10m_pct"] == pytest.approx(100 / 3) and s["node"]["over_5m_pct"] == pytest.approx(100 / 3)
    assert s["frame"]["frames"] == 2 and s["frame"]["mean_m"] == 11.0 and s["frame"]["over_5m_pct"] == 50.0
    assert s["gnss"]["frames"] == 4 and s["gnss"]["p95_m"] == pytest.approx(np.percentile([4, 6, 11, 3], 95))
    assert summarize_errors([{"est_err_m": None, "localized": False, "gnss_err_m": None}])["node"] == {
        "frames": 0,
        "coverage": 0.0,
    }


def test_bundled_teacher_is_a_small_checkpoint():
    from xview_loc_ros.models import load_checkpoint

    assert BUNDLED_TEACHER.is_file() and BUNDLED_TEACHER.stat().st_size < 8e6
    model, ckpt = load_checkpoint(BUNDLED_TEACHER)
    assert model.config["arch"] == "small" and model.config["ground_type"] == "panorama"


def test_replays_cover_both_drives_in_their_districts(demo):
    adapt = read_jsonl(demo["out"] / "replay_teacher_adapt.jsonl")
    assert [r["frame"] for r in adapt] == list(range(FRAMES))
    west, east = districts(CITY_M)
    lane_m = 8.0  # the vehicle drives beside the road's centreline, whose ends the region bounds
    test_recs = read_jsonl(demo["out"] / "replay_teacher.jsonl")
    # distances by pyproj's geodesic, not the demo's ENU code: every held-out position is beyond the gap
    nearest = min(_dist(t["gt_lat"], t["gt_lon"], a["gt_lat"], a["gt_lon"]) for t in test_recs for a in adapt)
    assert nearest >= (east[0] - west[2]) - lane_m, nearest
    assert demo["results"]["held_out_distance_m"]["min"] == pytest.approx(nearest, abs=0.05)
    assert f"at least {nearest:.0f} m" in demo["stdout"]
    for name in ("teacher", "student"):
        recs = read_jsonl(demo["out"] / f"replay_{name}.jsonl")
        assert [r["frame"] for r in recs] == list(range(TEST_FRAMES))
        for r in recs:  # the node's overlay for every frame it handled, gated or not
            assert r["heatmap"] and (demo["out"] / r["heatmap"]).is_file()
        # the demo replays per frame (fusion: frame): ~/fix and ~/frame_pose are the same estimate
        for r in recs:
            assert r["frame_localized"] == r["localized"]
            if r["localized"] and r["gt_lat"] is not None:
                assert r["frame_err_m"] == pytest.approx(r["est_err_m"], abs=0.01)
    summary = json.loads((demo["out"] / "replay_student.jsonl.json").read_text())
    assert summary["fusion"] == "frame" and set(summary["errors"]) == {"node", "frame", "gnss"}
    assert summary["errors"]["gnss"]["frames"] == len(recs)
    assert "onnxruntime" in summary["diagnostics"]["backend"]
    assert summary["diagnostics"]["frames_dropped"] == 0  # lock-step: every frame reached the model
    assert "torch" in json.loads((demo["out"] / "replay_teacher.jsonl.json").read_text())["diagnostics"]["backend"]


def test_table_values_are_recomputed_from_the_replays(demo):
    teacher = read_jsonl(demo["out"] / "replay_teacher.jsonl")
    student = read_jsonl(demo["out"] / "replay_student.jsonl")
    n = len(teacher)
    gnss = [_dist(r["gnss_lat"], r["gnss_lon"], r["gt_lat"], r["gt_lon"]) for r in teacher]
    expected = {"GNSS fix": (gnss, n)}
    for name, recs in (("teacher", teacher), ("student", student)):
        errs = [_dist(r["est_lat"], r["est_lon"], r["gt_lat"], r["gt_lon"]) for r in recs if r["localized"]]
        np.testing.assert_allclose(errs, [r["est_err_m"] for r in recs if r["localized"]], atol=0.01)
        expected[name] = (errs, len(errs))
    both = [i for i in range(n) if teacher[i]["localized"] and student[i]["localized"]]
    for name, recs in (("teacher", teacher), ("student", student)):
        expected[f"{name}, frames both localized"] = (
            [_dist(recs[i]["est_lat"], recs[i]["est_lon"], recs[i]["gt_lat"], recs[i]["gt_lon"]) for i in both],
            len(both),
        )
    rows = demo["results"]["rows"]
    assert set(rows) == set(expected)
    md = (demo["out"] / "results.md").read_text()
    for name, (errs, count) in expected.items():
        assert rows[name]["localized"] == count
        if errs:
            assert rows[name]["mean_m"] == pytest.approx(np.mean(errs), abs=0.01)
            assert rows[name]["median_m"] == pytest.approx(np.median(errs), abs=0.01)
            line = f"| {name} | {count}/{n} | {np.mean(errs):.2f} | {np.median(errs):.2f} |"
            # the printed table carries the same numbers (a 0.01 rounding flip is allowed)
            got = re.search(rf"^\| {re.escape(name)} \| {count}/{n} \| ([\d.]+) \| ([\d.]+) \|$", md, re.M)
            assert got, (line, md)
            assert float(got.group(1)) == pytest.approx(np.mean(errs), abs=0.011)
            assert float(got.group(2)) == pytest.approx(np.median(errs), abs=0.011)
    assert md.splitlines()[0] in demo["stdout"] and demo["results"]["verdict"] in demo["stdout"]
    assert json.loads((demo["out"] / "results.json").read_text())["rows"] == json.loads(json.dumps(rows))
    # the verdict states the measured comparison, whichever way it went
    verdict = demo["results"]["verdict"]
    if both:
        t, s = (
            np.median(expected["teacher, frames both localized"][0]),
            np.median(expected["student, frames both localized"][0]),
        )
        word = "matched" if abs(s - t) < 0.005 else "beat" if s < t else "did not beat"
        assert f"the student {word} the teacher (median {s:.2f} m vs {t:.2f} m" in verdict, verdict
    else:
        assert "no frame was localized by both models" in verdict


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("name", ["trajectory.png", "heatmaps.png", "error_cdf.png"])
def test_pictures_are_written(demo, name):
    w, h = _png_size(demo["out"] / name)
    assert w >= 300 and h >= 300


def test_every_step_is_printed_and_a_rerun_reuses_everything(demo):
    import io
    from contextlib import redirect_stdout

    for cmd in (
        "xview-loc synth city",
        "xview-loc synth drive",
        "xview-loc replay",
        "xview-adapt extract",
        "xview-adapt adapt",
        "xview-adapt export",
    ):
        assert f"$ {cmd}" in demo["stdout"], cmd
    buf = io.StringIO()
    with redirect_stdout(buf):
        again = Demo(demo["opts"]).execute()
    assert "$ " not in buf.getvalue()  # nothing re-run
    assert buf.getvalue().count("(exists, skipped)") == len(again["commands"]) >= 9
    assert again["rows"] == demo["results"]["rows"]


def test_bag_crop_keeps_the_window_of_frames(demo, tmp_path):
    from rosbags.rosbag2 import Reader

    part = crop_bag(demo["out"] / "drive_adapt", tmp_path / "part", 0.5, 0.8)
    first, stop = frame_window(FRAMES, 0.5, 0.8)
    with Reader(part) as r:
        counts = {c.topic: 0 for c in r.connections}
        for c, _t, _raw in r.messages():
            counts[c.topic] += 1
    assert counts["/camera/image/compressed"] == stop - first
    assert counts["/gnss/fix"] >= stop - first
    with pytest.raises(ReplayError, match="exists"):
        crop_bag(demo["out"] / "drive_adapt", part, 0.0, 1.0)
    with pytest.raises(ReplayError, match="start-frac"):
        frame_window(FRAMES, 0.7, 0.2)


def test_each_replay_process_gets_its_own_dds_domain():
    """Two replays at once (two benchmarks, a demo beside a benchmark) must not read each other's topics: the
    node and the player of a replay live in one process and talk on a domain private to that process."""
    from xview_testbed.replay import private_domain_id

    ids = {private_domain_id(pid) for pid in range(1000, 1100)}
    assert len(ids) == 100 and min(ids) >= 101 and max(ids) <= 200  # ROS 2 domain ids are 0..232; 0..100 left free
    assert private_domain_id() == private_domain_id(__import__("os").getpid())
