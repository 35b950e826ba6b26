"""Bag reading (real rosbag2 files: SQLite 3, MCAP, mcap-ros2-support). Image messages are decoded by
xview_loc_ros.sensors: test/test_sensor_parity.py."""
from __future__ import annotations

import shutil
import sqlite3

import pytest

from bag_writers import DriveSpec, write_mcap_ros2, write_rosbags
from offline_adapt.data.bags import FIX_TYPES, IMAGE_TYPES, IMU_TYPES, Bag, BagError, BagReadError, TopicError, header_stamp_ns


# ---------------------------------------------------------------------------------------------
# bags
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    spec = DriveSpec(frames=4, camera_info=True)
    return {
        "mcap": write_rosbags(d / "drive_mcap", spec, "mcap"),
        "sqlite3": write_rosbags(d / "drive_sqlite", spec, "sqlite3"),
        "mcap_ros2": write_mcap_ros2(d / "drive.mcap", spec),
    }


@pytest.mark.parametrize("kind", ["mcap", "sqlite3", "mcap_ros2"])
def test_topics_found_by_type_in_every_storage(bags, kind):
    with Bag(bags[kind]) as bag:
        assert bag.find_topic(IMAGE_TYPES, "image") == "/camera/image/compressed"
        assert bag.find_topic(IMU_TYPES, "imu") == "/imu/data"
        assert bag.find_topic(FIX_TYPES, "fix", exclude={"/ground_truth/fix"}) == "/gnss/fix"
        assert bag.topic_info("/camera/image/compressed").count == 4
        msgs = list(bag.messages(["/gnss/fix"]))
    assert len(msgs) == bag.topic_info("/gnss/fix").count > 10
    stamps = [header_stamp_ns(m, t) for _, t, m in msgs]
    assert stamps == sorted(stamps)
    assert all(abs(m.latitude - 52.01) < 0.01 for _, _, m in msgs)


def test_ambiguous_and_missing_topics_list_the_bag(bags):
    with Bag(bags["mcap"]) as bag:
        with pytest.raises(TopicError) as e:
            bag.find_topic(FIX_TYPES, "GNSS fix", flag="--fix-topic")
        msg = str(e.value)
        assert "2 candidate GNSS fix topics" in msg and "--fix-topic" in msg
        assert "/ground_truth/fix" in msg and "sensor_msgs/msg/Imu" in msg and "4 msgs" in msg
        with pytest.raises(TopicError, match="no topic '/nope'"):
            bag.find_topic(FIX_TYPES, "GNSS fix", "/nope")
        with pytest.raises(TopicError, match="has type sensor_msgs/msg/Imu, expected sensor_msgs/msg/NavSatFix"):
            bag.find_topic(FIX_TYPES, "GNSS fix", "/imu/data")
        with pytest.raises(TopicError, match="no odometry topics"):
            bag.find_topic(("nav_msgs/msg/Odometry",), "odometry")
        assert bag.find_topic(("nav_msgs/msg/Odometry",), "odometry", required=False) is None


def test_truncated_mcap_is_a_clear_error(bags, tmp_path):
    src = bags["mcap"]
    dst = tmp_path / "cut"
    shutil.copytree(src, dst)
    mcap = next(dst.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagReadError, match="cut") as e:
        with Bag(dst) as bag:
            list(bag.messages([t.topic for t in bag.topics]))
    assert "truncated or corrupt" in str(e.value)


def test_corrupt_sqlite_is_a_clear_error(bags, tmp_path):
    dst = tmp_path / "bad"
    shutil.copytree(bags["sqlite3"], dst)
    db = next(dst.glob("*.db3"))
    db.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(BagReadError, match="bad"):
        with Bag(dst) as bag:
            list(bag.messages([t.topic for t in bag.topics]))


def test_not_a_bag(tmp_path):
    with pytest.raises(BagReadError, match="no such bag"):
        Bag(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(BagReadError, match="without metadata.yaml"):
        Bag(tmp_path / "empty_dir")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BagReadError, match="junk.mcap: cannot open bag"):
        Bag(junk).open()
    assert issubclass(BagError, ValueError)


def test_undeserialisable_message_is_yielded_as_error(bags, tmp_path):
    # Overwrite one fix message's CDR payload with garbage in the SQLite storage.
    dst = tmp_path / "garbled"
    shutil.copytree(bags["sqlite3"], dst)
    db = next(dst.glob("*.db3"))
    con = sqlite3.connect(db)
    tid = con.execute("SELECT id FROM topics WHERE name='/gnss/fix'").fetchone()[0]
    first = con.execute("SELECT id FROM messages WHERE topic_id=? ORDER BY timestamp LIMIT 1", (tid,)).fetchone()[0]
    con.execute("UPDATE messages SET data=? WHERE id=?", (b"\x00\x01\x00\x00\x01", first))
    con.commit()
    con.close()
    with Bag(dst) as bag:
        msgs = [m for _, _, m in bag.messages(["/gnss/fix"])]
    assert isinstance(msgs[0], BagError) and "does not deserialise" in str(msgs[0])
    assert not any(isinstance(m, BagError) for m in msgs[1:])
