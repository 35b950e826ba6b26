# SPDX-License-Identifier: Apache-2.0
"""Synthetic drives as rosbag2: readable by rosbags, by the independent mcap-ros2-support reader
(MCAP) and by sqlite3 (SQLite 3 bags); right types, counts, stamps, frames; GNSS error statistics."""

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from xview_loc_ros.geo import yaw_from_quaternion
from xview_testbed.synth import load_city, make_city, make_drive
from xview_testbed.synth.gnss import GnssErrorModel

FRAMES = 24
EXPECTED = {
    "/gnss/fix": "sensor_msgs/msg/NavSatFix",
    "/imu/data": "sensor_msgs/msg/Imu",
    "/odom": "nav_msgs/msg/Odometry",
    "/camera/image/compressed": "sensor_msgs/msg/CompressedImage",
    "/ground_truth/fix": "sensor_msgs/msg/NavSatFix",
    "/ground_truth/pose": "geometry_msgs/msg/PoseStamped",
}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_city("suburb", 4, tmp_path_factory.mktemp("synth_drive") / "city", size_m=260.0, zooms=(17,))


@pytest.fixture(scope="module")
def mcap_bag(city, tmp_path_factory):
    return make_drive(city, tmp_path_factory.mktemp("bags") / "drive_mcap", storage="mcap", frames=FRAMES, seed=1)


def _read_rosbags(bag: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out = {}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return types, out


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_mcap_bag_with_rosbags(city, mcap_bag):
    types, msgs = _read_rosbags(mcap_bag)
    assert types == EXPECTED
    for topic, items in msgs.items():
        assert len(items) == FRAMES, topic
        stamps = [_stamp(m) for _, m in items]
        assert np.all(np.diff(stamps) > 0), topic
        assert [t for t, _ in items] == stamps  # bag time = header stamp = exposure time
    fix = msgs["/gnss/fix"][0][1]
    assert fix.header.frame_id == "gnss"
    assert fix.status.status == 0 and fix.status.service == 1  # FIX set explicitly, GPS
    assert fix.position_covariance_type == 1
    cov = np.asarray(fix.position_covariance).reshape(3, 3)
    sigma = load_city(city).style["sensor"]
    assert cov[0, 0] == pytest.approx(sigma["gnss_noise_m"] ** 2 + sigma["gnss_bias_m"] ** 2)
    assert cov[0, 0] == cov[1, 1] and cov[0, 1] == 0
    img = msgs["/camera/image/compressed"][0][1]
    assert img.format == "jpeg" and img.header.frame_id == "camera"
    import cv2

    assert cv2.imdecode(np.asarray(img.data), cv2.IMREAD_COLOR).shape == (64, 256, 3)
    # ground truth: pose in the map frame (ENU at the city datum) agrees with the ground-truth fix
    frame = load_city(city).frame
    for (_, gt), (_, pose), (_, imu) in zip(msgs["/ground_truth/fix"], msgs["/ground_truth/pose"], msgs["/imu/data"]):
        assert pose.header.frame_id == "map" and imu.header.frame_id == "imu"
        e, n, _ = frame.to_enu(gt.latitude, gt.longitude, 0.0)
        assert float(e) == pytest.approx(pose.pose.position.x, abs=0.01)
        assert float(n) == pytest.approx(pose.pose.position.y, abs=0.01)
        q = pose.pose.orientation
        yaw_true = yaw_from_quaternion(q.x, q.y, q.z, q.w)
        qi = imu.orientation
        d = math.degrees((yaw_from_quaternion(qi.x, qi.y, qi.z, qi.w) - yaw_true + math.pi) % (2 * math.pi) - math.pi)
        assert abs(d) < 15  # heading noise of a few degrees, same ENU convention
        assert abs(pose.pose.position.x) < 130 and abs(pose.pose.position.y) < 130
    # the vehicle moves along at the style's speed
    p0, p1 = msgs["/ground_truth/pose"][0][1].pose.position, msgs["/ground_truth/pose"][-1][1].pose.position
    dt = (msgs["/ground_truth/pose"][-1][0] - msgs["/ground_truth/pose"][0][0]) / 1e9
    speed = load_city(city).style["sensor"]["speed_mps"]
    assert 0.3 * speed * dt < math.hypot(p1.x - p0.x, p1.y - p0.y) <= speed * dt + 0.5


def test_wheel_odometry_is_in_the_child_frame_with_realistic_errors(city, mcap_bag):
    """/odom: twist in base_link (forward speed, yaw rate) close to the truth but not equal to it (a
    scale error per drive, yaw-rate bias and noise); its pose is that twist dead-reckoned in odom."""
    _, msgs = _read_rosbags(mcap_bag)
    odom, truth = msgs["/odom"], msgs["/ground_truth/pose"]
    assert [_stamp(m) for _, m in odom] == [_stamp(m) for _, m in truth]  # at the IMU rate
    assert all(m.header.frame_id == "odom" and m.child_frame_id == "base_link" for _, m in odom)
    speed = load_city(city).style["sensor"]["speed_mps"]
    v = np.array([m.twist.twist.linear.x for _, m in odom])
    assert np.all(np.abs(v / speed - 1.0) < 0.05) and not np.allclose(v, speed)
    assert all(m.twist.twist.linear.y == 0.0 for _, m in odom)
    yaw = np.unwrap([yaw_from_quaternion(*(getattr(m.pose.orientation, k) for k in "xyzw")) for _, m in truth])
    dt = np.diff([t for t, _ in truth]) / 1e9
    w_true = np.gradient(yaw, dt[0])
    w = np.array([m.twist.twist.angular.z for _, m in odom])
    assert np.abs(w - w_true).max() < math.radians(3.0) and np.abs(w - w_true).max() > 0
    # dead reckoning: the distance of the odom track is the integrated speed
    xy = np.array([(m.pose.pose.position.x, m.pose.pose.position.y) for _, m in odom])
    assert np.hypot(*np.diff(xy, axis=0).T).sum() == pytest.approx(float((v[:-1] * dt).sum()), rel=1e-3)


def test_mcap_bag_with_mcap_ros2_support(mcap_bag):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    files = list(mcap_bag.glob("*.mcap"))
    assert len(files) == 1
    counts, last = {}, {}
    with open(files[0], "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema.name == EXPECTED[channel.topic]
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            assert message.log_time > last.get(channel.topic, -1)
            last[channel.topic] = message.log_time
            if channel.topic == "/gnss/fix":
                assert decoded.status.status == 0 and -90 <= decoded.latitude <= 90
    assert counts == {t: FRAMES for t in EXPECTED}


def test_sqlite3_bag_pinhole_raw(city, tmp_path):
    bag = make_drive(city, tmp_path / "drive_db3", storage="sqlite3", frames=6, seed=2, ground="pinhole", raw=True)
    dbs = list(bag.glob("*.db3"))
    assert len(dbs) == 1 and dbs[0].name == "drive_db3.db3"
    db = sqlite3.connect(str(dbs[0]))
    topics = dict(db.execute("SELECT name, type FROM topics"))
    assert topics["/camera/image"] == "sensor_msgs/msg/Image"
    assert topics["/camera/camera_info"] == "sensor_msgs/msg/CameraInfo"
    assert "/camera/image/compressed" not in topics
    counts = dict(
        db.execute("SELECT t.name, COUNT(*) FROM messages m JOIN topics t ON m.topic_id = t.id GROUP BY t.name")
    )
    assert set(counts.values()) == {6} and len(counts) == 7  # fix, imu, odom, image, info, ground truth x 2
    stamps = [
        r[0]
        for r in db.execute(
            "SELECT m.timestamp FROM messages m JOIN topics t ON m.topic_id = t.id WHERE t.name = '/camera/image' ORDER BY m.id"
        )
    ]
    assert np.all(np.diff(stamps) > 0)
    types, msgs = _read_rosbags(bag)
    img = msgs["/camera/image"][0][1]
    assert (img.height, img.width, img.encoding, img.step) == (64, 256, "rgb8", 768)
    assert img.header.frame_id == "camera_optical"
    info = msgs["/camera/camera_info"][0][1]
    assert (info.height, info.width) == (64, 256) and info.header.frame_id == "camera_optical"
    assert info.k[0] == pytest.approx(128.0) and info.k[2] == 128.0 and info.k[5] == 32.0


def test_bag_refuses_overwrite_and_bad_storage(city, mcap_bag):
    with pytest.raises(FileExistsError):
        make_drive(city, mcap_bag, frames=2)
    with pytest.raises(ValueError, match="storage"):
        make_drive(city, mcap_bag.with_name("x"), storage="rosbag1", frames=2)


# --- GNSS statistics -------------------------------------------------------------------------
def test_gnss_error_statistics_match_configuration():
    m = GnssErrorModel(
        noise_m=2.0,
        bias_m=12.0,
        bias_tau_s=20.0,
        outlier_prob=0.05,
        outlier_m=40.0,
        heading_noise_deg=1.0,
        heading_bias_deg=2.0,
    )
    rng = np.random.default_rng(0)
    err, out = m.position_errors(60000, 1.0, rng)
    assert out.mean() == pytest.approx(0.05, abs=0.005)
    clean = err[~out]
    assert clean.std(0) == pytest.approx([m.sigma_m] * 2, rel=0.06)
    jump = np.hypot(*err[out].T)
    assert np.median(jump) > 25  # outliers are tens of metres
    # bias random walk: correlation at lag tau is exp(-1) (the white part lowers it by the variance ratio)
    lag = 20
    rho = np.corrcoef(err[:-lag, 0][~out[:-lag] & ~out[lag:]], err[lag:, 0][~out[:-lag] & ~out[lag:]])[0, 1]
    assert rho == pytest.approx(math.exp(-1) * 144 / 148, abs=0.05)
    # white noise only
    w, _ = GnssErrorModel(3.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0).position_errors(20000, 0.1, rng)
    assert w.std(0) == pytest.approx([3.0, 3.0], rel=0.03)
    h = m.heading_errors(60000, 1.0, rng)
    assert h.std() == pytest.approx(math.hypot(1.0, 2.0), rel=0.1)


def test_bag_gnss_errors_follow_the_flags(city, tmp_path):
    from rosbags.highlevel import AnyReader

    bag = make_drive(
        city,
        tmp_path / "g",
        frames=40,
        seed=3,
        rate_hz=1.0,
        gnss={"noise_m": 6.0, "bias_m": 0.0, "outlier_prob": 0.0, "heading_noise_deg": 0.0, "heading_bias_deg": 0.0},
    )
    frame = load_city(city).frame
    fixes, gts = [], []
    with AnyReader([bag]) as r:
        for conn, _, raw in r.messages():
            m = r.deserialize(raw, conn.msgtype)
            if conn.topic == "/gnss/fix":
                fixes.append((m.latitude, m.longitude))
                assert m.position_covariance[0] == pytest.approx(36.0)
            elif conn.topic == "/ground_truth/fix":
                gts.append((m.latitude, m.longitude))
    f = np.array(fixes)
    g = np.array(gts)
    fe, fn, _ = frame.to_enu(f[:, 0], f[:, 1], 0.0)
    ge, gn, _ = frame.to_enu(g[:, 0], g[:, 1], 0.0)
    d = np.concatenate([fe - ge, fn - gn])
    assert d.std() == pytest.approx(6.0, rel=0.3)
    assert abs(d.mean()) < 2.5


def test_region_confines_the_route_and_bad_regions_are_refused(city, tmp_path):
    from rosbags.highlevel import AnyReader

    west = (-100.0, -100.0, 0.0, 100.0)  # the city is 260 m: +-100 m is the drivable square
    bag = make_drive(city, tmp_path / "west", frames=30, seed=5, rate_hz=2.0, region=west)
    frame = load_city(city).frame
    with AnyReader([bag]) as r:
        gts = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages() if c.topic == "/ground_truth/fix"]
    east, north, _ = frame.to_enu(np.array([m.latitude for m in gts]), np.array([m.longitude for m in gts]), 0.0)
    # the vehicle drives the right-hand lane of roads whose ends lie in the region: a lane's offset at most
    assert east.max() < 0.0 + 8.0 and east.min() > -100.0 - 8.0
    with pytest.raises(ValueError, match="region"):
        make_drive(city, tmp_path / "bad", frames=2, region=(0.0, 0.0, 200.0, 50.0))  # beyond the drivable square
    with pytest.raises(ValueError, match="no road lies inside the region"):
        make_drive(city, tmp_path / "tiny", frames=2, region=(1.0, 1.0, 2.0, 2.0))
    assert not (tmp_path / "bad").exists() and not (tmp_path / "tiny").exists()


def test_region_flag_is_parsed_and_checked(capsys):
    from xview_testbed.cli import main

    for value, problem in (("1,2,3", "4 numbers"), ("5,0,1,4", "W < E")):
        with pytest.raises(SystemExit) as e:
            main(["synth", "drive", "--city", "c", "--out", "o", f"--region={value}"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--region" in err and problem in err


def test_gnss_jump_offsets_the_fixes_in_its_window_only(city, tmp_path):
    from rosbags.highlevel import AnyReader

    kw = dict(frames=20, seed=6, rate_hz=2.0)
    plain = make_drive(city, tmp_path / "plain", **kw)
    jumped = make_drive(city, tmp_path / "jump", gnss_jump=(40.0, -10.0, 3.0, 6.0), **kw)
    frame = load_city(city).frame

    def fixes(bag):
        with AnyReader([bag]) as r:
            ms = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages() if c.topic == "/gnss/fix"]
        e, n, _ = frame.to_enu(np.array([m.latitude for m in ms]), np.array([m.longitude for m in ms]), 0.0)
        return np.stack([e, n], -1)

    d = fixes(jumped) - fixes(plain)
    t = np.arange(len(d)) * 0.5
    inside = (t >= 3.0) & (t < 6.0)
    np.testing.assert_allclose(d[inside], np.tile([40.0, -10.0], (inside.sum(), 1)), atol=0.05)
    np.testing.assert_allclose(d[~inside], 0.0, atol=0.05)
    with pytest.raises(ValueError, match="t0 < t1"):
        make_drive(city, tmp_path / "bad", frames=2, gnss_jump=(1.0, 0.0, 5.0, 5.0))
