# SPDX-License-Identifier: Apache-2.0
"""The node's status wording (what happened: dropped, gated, rejected, refused) and the visualization
rate gate; plain functions of xview_loc_ros.node, no DDS."""

from __future__ import annotations

import pytest

from xview_loc_ros.node import RateGate, diagnostic_summary


def test_gated_frames_are_not_called_dropped():
    # the report of issue 18: frames_dropped=0, reject_ambiguous=2 read "2 frames/messages dropped"
    level, msg = diagnostic_summary({"published": 5, "frames_dropped": 0, "gated_ambiguous": 2}, {}, True, 1.0)
    assert level == 0 and "dropped" not in msg
    assert msg == "localizing; 2 frames gated, heat map still used by the filter (ambiguous 2) in the last 1 s"
    level, msg = diagnostic_summary({"published": 5, "gated_ambiguous": 2}, {}, False, 1.0)
    assert level == 0 and "2 frames gated, no pose published (ambiguous 2)" in msg


def test_each_kind_is_named_with_its_reasons_and_only_new_events_count():
    prev = {"published": 3, "frames_dropped": 4, "rejected_no_fix": 1, "bad_fix_invalid": 2}
    now = {
        "published": 9,
        "frames_dropped": 7,
        "rejected_no_fix": 2,
        "rejected_tiles_missing": 1,
        "bad_fix_invalid": 2,
        "gated_gnss_gate": 1,
    }
    level, msg = diagnostic_summary(now, prev, False, 0.5)
    assert level == 1  # frames without an estimate in the last period
    assert msg == (
        "localizing; 2 frames rejected, no estimate (no_fix 1, tiles_missing 1); "
        "1 frame gated, no pose published (gnss_gate 1); 3 frames dropped while busy (queue of one) in the last 0.5 s"
    )
    assert "refused" not in msg  # the bad fixes are old news


def test_refused_messages_warn_and_drops_alone_do_not():
    level, msg = diagnostic_summary({"published": 1, "bad_image_corrupt": 1}, {"published": 1}, True, 1.0)
    assert level == 1 and msg == "localizing; 1 input message refused (image_corrupt 1) in the last 1 s"
    level, msg = diagnostic_summary({"published": 9, "frames_dropped": 5}, {"published": 4}, True, 1.0)
    assert level == 0 and msg == "localizing; 5 frames dropped while busy (queue of one) in the last 1 s"
    assert diagnostic_summary({"published": 9}, {"published": 9}, True, 1.0) == (0, "localizing")


def test_no_pose_yet_warns():
    assert diagnostic_summary({}, {}, True, 1.0) == (1, "no pose yet")
    level, msg = diagnostic_summary({"rejected_no_fix": 1}, {}, True, 1.0)
    assert level == 1 and msg.startswith("no pose yet; 1 frame rejected, no estimate (no_fix 1)")


@pytest.mark.parametrize("jitter", [0.0, 0.02, -0.02])
def test_rate_gate_passes_a_camera_at_the_limit_despite_jitter(jitter):
    g = RateGate()
    times = [0.1 * i + (jitter if i % 2 else -jitter) for i in range(50)]
    assert all(g.allow(t, 10.0) for t in times)


def test_rate_gate_limits_a_faster_camera_and_zero_is_no_limit():
    g = RateGate()
    passed = [t for t in (i / 30.0 for i in range(300)) if g.allow(t, 10.0)]  # 10 s of a 30 Hz camera
    assert 99 <= len(passed) <= 102
    g = RateGate()
    assert all(g.allow(i / 1000.0, 0.0) for i in range(100))
