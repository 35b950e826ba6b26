# SPDX-License-Identifier: Apache-2.0
"""Extraction from synthetic drives (xview_testbed.synth.make_drive, the `xview-loc synth drive` API):
MCAP panorama and SQLite 3 pinhole bags through a rendered city's tile pyramid."""

from __future__ import annotations

import numpy as np
import pytest

from offline_adapt.data.bags import Bag, TopicError, header_stamp_ns
from offline_adapt.data.dataset import PairDataset
from offline_adapt.data.extract import ExtractOptions, extract
from xview_loc_ros.geo import LocalENU

SIZE, MPP, SPACING = 256, 0.5, 3.0  # 128 m patches: the style's GNSS bias (15 m, 1 sigma) + noise stay inside +-64 m
NO_OUTLIERS = {"outlier_prob": 0.0}  # its 40 m outliers on top of the bias would not


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from xview_testbed.synth import make_city, make_drive

    d = tmp_path_factory.mktemp("synth")
    city = make_city("downtown", 3, d / "city", size_m=400.0, zooms=(18,))
    return {
        "city": city,
        "tiles": f"xyz:{city / 'tiles'}",
        "panorama_mcap": make_drive(city, d / "pano_mcap", storage="mcap", frames=40, seed=5, gnss=NO_OUTLIERS),
        "pinhole_sqlite3": make_drive(
            city, d / "pin_sqlite", storage="sqlite3", frames=12, seed=6, ground="pinhole", gnss=NO_OUTLIERS
        ),
    }


def _track(bag_path, topic):
    with Bag(bag_path) as bag:
        return {header_stamp_ns(m, t): (m.latitude, m.longitude) for _, t, m in bag.messages([topic])}


def test_synth_panorama_mcap(synth, tmp_path):
    bag = synth["panorama_mcap"]
    opts = ExtractOptions(size_px=SIZE, mpp=MPP, min_spacing_m=SPACING, gt_topic="/ground_truth/fix")
    summary = extract([bag], synth["tiles"], tmp_path / "ds", opts, progress=False)
    ds = PairDataset(tmp_path / "ds")
    assert summary.counts["frames"] == 40 and summary.pairs == len(ds) >= 5
    assert summary.counts["kept"] + summary.counts["spacing"] == 40
    for rec in ds.pairs:
        u, v = rec.gt_pixel()
        assert 0 <= u < SIZE and 0 <= v < SIZE, (rec.id, u, v)
        assert rec.heading_source == "imu" and 0 <= rec.heading_deg < 360
        assert rec.fix_std_m is not None and rec.fix_std_m > 0
    # Spacing rule, checked on the true track (the extractor only sees the noisy fixes, smoothed over
    # +-1 s): kept frames about 3 m apart, never much more than 3 m + one frame step (0.8 m).
    truth = _track(bag, "/ground_truth/fix")
    stamps = sorted(truth)
    frame = LocalENU(*truth[stamps[0]])
    kept = sorted(rec.extra["stamp_ns"] for rec in ds.pairs)
    e, n, _ = frame.to_enu([truth[s][0] for s in kept], [truth[s][1] for s in kept], 0.0)
    steps = np.hypot(np.diff(e), np.diff(n))
    assert np.all(steps > SPACING - 1.5) and np.all(steps < SPACING + 0.8 + 1.5), steps
    e, n, _ = frame.to_enu([truth[s][0] for s in stamps], [truth[s][1] for s in stamps], 0.0)
    path = float(np.hypot(np.diff(e), np.diff(n)).sum())
    assert path / (SPACING + 0.8 + 1.5) < len(ds) - 1 < path / (SPACING - 1.5)
    assert ds.meta.ground_type == "panorama" and ds.meta.fov_deg == 360.0


def test_synth_pinhole_sqlite3(synth, tmp_path):
    opts = ExtractOptions(size_px=SIZE, mpp=MPP, ground_type="pinhole", min_spacing_m=0.0, gt_topic="/ground_truth/fix")
    summary = extract([synth["pinhole_sqlite3"]], synth["tiles"], tmp_path / "ds", opts, progress=False)
    ds = PairDataset(tmp_path / "ds")
    assert summary.pairs == 12
    for rec in ds.pairs:
        u, v = rec.gt_pixel()
        assert 0 <= u < SIZE and 0 <= v < SIZE
    h, w = ds.meta.ground_size
    fx, fy, cx, cy = ds.meta.intrinsics
    assert (cx, cy) == pytest.approx((w / 2, h / 2), abs=1.0)
    assert ds.meta.fov_deg == pytest.approx(np.degrees(2 * np.arctan(w / 2 / fx)))
    assert ds.meta.extra["camera_info"]["width"] == w


def test_wheel_odometry_is_ignored_unless_asked_for(synth, tmp_path, caplog):
    """The drives record /odom (nav_msgs/Odometry): the extractor picks its topics by type, so odometry is
    never taken for a fix, heading or image; naming it as one is refused with its type."""
    bag = synth["panorama_mcap"]
    with Bag(bag) as b:
        assert b.topic_info("/odom").msgtype == "nav_msgs/msg/Odometry" and b.topic_info("/odom").count == 40
    caplog.set_level("INFO")
    opts = ExtractOptions(size_px=SIZE, mpp=MPP, min_spacing_m=SPACING)
    summary = extract([bag], synth["tiles"], tmp_path / "ds", opts, progress=False)
    assert summary.pairs >= 5 and summary.heading_sources == {"imu": summary.pairs}
    plan = next(r.getMessage() for r in caplog.records if "heading" in r.getMessage())
    assert "/odom" not in plan and "heading /imu/data" in plan and "fixes /gnss/fix" in plan
    with pytest.raises(TopicError, match="nav_msgs/msg/Odometry"):
        extract(
            [bag],
            synth["tiles"],
            tmp_path / "ds2",
            ExtractOptions(size_px=SIZE, mpp=MPP, heading_topic="/odom"),
            progress=False,
        )


def test_odometry_is_integrated_between_pairs_when_asked_for(synth, tmp_path):
    """--odom-topic: each pair carries the wheel odometry dead-reckoned since the bag's first kept frame
    (the node's OdometryBuffer, from each pair's IMU heading); its differences follow the true track."""
    bag = synth["panorama_mcap"]
    opts = ExtractOptions(
        size_px=SIZE, mpp=MPP, min_spacing_m=SPACING, gt_topic="/ground_truth/fix", odom_topic="/odom"
    )
    extract([bag], synth["tiles"], tmp_path / "ds", opts, progress=False)
    recs = sorted(PairDataset(tmp_path / "ds").pairs, key=lambda r: r.stamp)
    assert all("odom_en" in r.extra for r in recs)
    frame = LocalENU(recs[0].gt_lat, recs[0].gt_lon)
    gt = np.stack(frame.to_enu([r.gt_lat for r in recs], [r.gt_lon for r in recs], 0.0)[:2], axis=1)
    odo = np.asarray([r.extra["odom_en"] for r in recs])
    seg = np.asarray([r.extra["odom_segment"] for r in recs])
    same = seg[1:] == seg[:-1]
    assert same.mean() > 0.8  # gaps are the exception
    step_gt, step_odo = np.diff(gt, axis=0)[same], np.diff(odo, axis=0)[same]
    err = np.hypot(*(step_odo - step_gt).T)
    assert np.median(err) < 0.5 and np.median(np.hypot(*step_gt.T)) > SPACING - 1.5, (err, step_gt)
    without = ExtractOptions(size_px=SIZE, mpp=MPP, min_spacing_m=SPACING)
    extract([bag], synth["tiles"], tmp_path / "ds2", without, progress=False)
    assert not any("odom_en" in r.extra for r in PairDataset(tmp_path / "ds2").pairs)  # off by default
