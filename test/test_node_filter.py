# SPDX-License-Identifier: Apache-2.0
"""The node with ``fusion: filter`` over real DDS on a short synthetic drive (suburb city, the bundled
teacher model), played lock-step (each frame's fix, IMU and odometry, then its image, then wait for the
output): one filtered pose per image, a shrinking covariance, and a ``~/frame_pose`` identical to what
``fusion: frame`` publishes on ``~/pose`` for the same input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rclpy
from node_harness import Harness, read_drive

from xview_loc_ros.geo import LocalENU
from xview_loc_ros.ros_msgs import stamp_to_sec

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "teacher.pt"
FRAMES = 16
RATE_HZ = 5.0
KINDS = {"/gnss/fix": "fix", "/imu/data": "imu", "/odom": "odom", "/camera/image/compressed": "jpeg"}


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from xview_testbed.synth import make_city, make_drive

    d = tmp_path_factory.mktemp("filter_drive")
    city = make_city("suburb", 1, d / "city", size_m=300.0, zooms=(18,))
    bag = make_drive(city, d / "drive", frames=FRAMES, seed=3, rate_hz=RATE_HZ)
    rclpy.init()
    yield {"city": Path(city), "bag": bag, "items": read_drive(bag)}
    rclpy.shutdown()


def _run(drive, **params):
    """Play the drive lock-step into a node; returns the harness's received messages and diagnostics."""
    base = {
        "model_path": str(MODEL),
        "tile_source": f"xyz:{drive['city'] / 'tiles'}",
        "backend": "torch",
        "device": "cpu",
        "threads": 1,
        "prefetch_ahead_s": 0.0,
        "publish_overlay": False,
        "diagnostics_period_s": 0.5,
    }
    base.update(params)
    h = Harness(base)
    try:
        sent = {"fix": 0, "imu": 0, "odom": 0, "jpeg": 0}
        for topic, _, msg in drive["items"]:
            kind = KINDS.get(topic)
            if kind is None:
                continue
            h.publish(kind, msg)
            sent[kind] += 1
            if kind == "jpeg":
                n = sent["jpeg"]
                assert h.wait_for(lambda n=n: _handled(h) >= n, 20.0), h.node.diagnostics_values()
            elif kind != "odom" or base.get("fusion") == "filter":  # the frame's inputs are in before its image
                n = sent[kind]
                assert h.wait_for(lambda k=kind, n=n: h.node.counts.get(k, 0) >= n, 5.0), kind
        h.wait_for(lambda: False, 0.3)  # the last outputs cross DDS
        return dict(h.received), h.node.diagnostics_values()
    finally:
        h.close()


def _handled(h: Harness) -> int:
    d = h.node.diagnostics_values()
    return (
        int(d.get("count_poses", 0))
        + int(d.get("count_gated", 0))
        + sum(
            int(v)
            for k, v in d.items()
            if k.startswith("reject_") and k[7:] not in ("low_confidence", "ambiguous", "gnss_gate")
        )
    )


def _first_fix(items):
    m = next(m for tp, _, m in items if tp == "/gnss/fix")
    return m.latitude, m.longitude, m.altitude


def _by_stamp(msgs):
    return {round(stamp_to_sec(m.header.stamp), 6): m for m in msgs}


def test_filter_mode_on_a_drive(drive):
    filt, diag = _run(drive, fusion="filter")  # patch_centre: belief (the default)
    frame, _ = _run(drive, fusion="frame")
    # with the patch cut at the fix, the filter's per-frame path is exactly fusion: frame's
    at_fix, _ = _run(drive, fusion="filter", patch_centre="fix")
    images = sorted(round(t, 6) for tp, t, _ in drive["items"] if tp == "/camera/image/compressed")
    # one filtered pose and fix per image, at its stamp
    poses = _by_stamp(filt["pose"])
    assert sorted(poses) == images and len(_by_stamp(filt["fix"])) == len(images)
    # the belief's covariance: from the GNSS prior down as heat maps and motion come in
    traces = [np.trace(np.array(poses[t].pose.covariance).reshape(6, 6)[:2, :2]) for t in images]
    assert np.median(traces[len(traces) // 2 :]) < 0.25 * traces[0], traces
    # ~/frame_pose (patch at the fix) is exactly the per-frame ~/pose of fusion: frame
    fp, ref = _by_stamp(at_fix["frame_pose"]), _by_stamp(frame["pose"])
    assert sorted(fp) == sorted(ref) and len(fp) >= len(images) // 2
    for t, m in fp.items():
        a, b = m.pose, ref[t].pose
        assert (a.pose.position.x, a.pose.position.y) == pytest.approx((b.pose.position.x, b.pose.position.y), abs=1e-6)
        assert np.allclose(a.covariance, b.covariance, atol=1e-9)
    assert not frame["frame_pose"] or sorted(_by_stamp(frame["frame_pose"])) == sorted(ref)
    assert not frame["belief_grid"]
    # RViz: the belief grid (the harness subscribes) and the filtered ellipse (marker id 2)
    assert filt["belief_grid"] and filt["belief_grid"][-1].info.width == 192
    assert filt["belief_grid"][-1].info.resolution == pytest.approx(0.5)
    assert any(m.id == 2 for m in filt["marker"])
    assert diag["fusion"] == "filter" and diag["filter_state"] in ("tracking", "lost", "reinitialised")
    assert diag["filter_heatmap_updates"] >= len(fp) and diag["filter_predict_odom"] >= len(images) - 2
    assert diag["count_filtered"] == len(images) and "filter_innovation_sigmas" in diag
    status = filt["diagnostics"][-1].status[0]
    assert "; filter " in status.message
    # gated frames fed the filter: they are no problem in filter mode (only a lost track is)
    assert status.level == (b"\x01" if "filter lost" in status.message else b"\x00"), status.message
    # errors against ground truth (printed: a trained model is what makes them small; see bench_filter.py)
    datum = LocalENU(*_first_fix(drive["items"]))
    gt = {round(t, 6): m for tp, t, m in drive["items"] if tp == "/ground_truth/fix"}
    gnss = {round(t, 6): m for tp, t, m in drive["items"] if tp == "/gnss/fix"}

    def err(x, y, t):
        e, n, _ = datum.to_enu(gt[t].latitude, gt[t].longitude, datum.h0)
        return float(np.hypot(x - float(e), y - float(n)))

    f_err = [err(poses[t].pose.pose.position.x, poses[t].pose.pose.position.y, t) for t in images]
    p_err = [err(m.pose.pose.position.x, m.pose.pose.position.y, t) for t, m in fp.items()]
    g_err = [
        err(*(float(v) for v in datum.to_enu(gnss[t].latitude, gnss[t].longitude, datum.h0)[:2]), t) for t in images
    ]
    print(
        f"filter: median error {np.median(f_err):.2f} m (last half {np.median(f_err[len(f_err) // 2 :]):.2f} m), "
        f"per frame {np.median(p_err):.2f} m on {len(p_err)} frames, GNSS {np.median(g_err):.2f} m; "
        f"std {[round(float(np.sqrt(x / 2)), 2) for x in traces]}"
    )


def test_replay_records_the_filter_the_frame_and_gnss(drive, tmp_path):
    """`xview-loc replay` in filter mode (the default parameters file): est_* is the filtered pose for
    every frame, frame_* the gated per-frame estimate, and the summary compares both with GNSS."""
    from xview_testbed.replay import read_jsonl, replay

    s = replay(
        drive["bag"],
        ROOT / "config" / "localizer.yaml",
        tmp_path / "r.jsonl",
        model=str(MODEL),
        tile_source=f"xyz:{drive['city'] / 'tiles'}",
        ros_args=["-p", "threads:=1", "-p", "publish_overlay:=false", "-p", "device:=cpu", "-p", "backend:=torch"],
        progress=False,
    )
    recs = read_jsonl(s.out)
    assert s.fusion == "filter" and len(recs) == FRAMES
    assert all(r["localized"] and r["est_err_m"] is not None and r["map_x"] is not None for r in recs)
    framed = [r for r in recs if r["frame_localized"]]
    assert framed and all(r["frame_err_m"] is not None and r["frame_std_m"] > 0 for r in framed)
    assert any(abs(r["frame_err_m"] - r["est_err_m"]) > 0.01 for r in framed)  # two different estimates
    assert s.errors["node"]["frames"] == FRAMES and s.errors["frame"]["frames"] == len(framed)
    assert s.errors["gnss"]["frames"] == FRAMES and s.diagnostics["filter_predict_odom"] >= FRAMES - 2


def test_replay_of_a_raw_camera_bag_subscribes_the_raw_topic(drive, tmp_path):
    """A bag with sensor_msgs/Image frames: replay sets image_transport raw, so the node (one image topic)
    takes them although the parameters file says compressed."""
    from xview_testbed.replay import read_jsonl, replay
    from xview_testbed.synth import make_drive

    bag = make_drive(drive["city"], tmp_path / "raw", frames=4, seed=3, rate_hz=RATE_HZ, raw=True)
    s = replay(
        bag,
        ROOT / "config" / "localizer.yaml",
        tmp_path / "r.jsonl",
        model=str(MODEL),
        tile_source=f"xyz:{drive['city'] / 'tiles'}",
        ros_args=["-p", "threads:=1", "-p", "publish_overlay:=false", "-p", "device:=cpu", "-p", "backend:=torch"],
        progress=False,
    )
    recs = read_jsonl(s.out)
    assert len(recs) == 4 and all(r["localized"] for r in recs)
