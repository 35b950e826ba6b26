# SPDX-License-Identifier: Apache-2.0
"""Bag reading (real rosbag2 files: SQLite 3, MCAP, mcap-ros2-support). Image messages are decoded by
xview_loc_ros.sensors: test/test_sensor_parity.py."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from bag_writers import DriveSpec, write_mcap_ros2, write_rosbags

from offline_adapt.data.bags import (
    FIX_TYPES,
    IMAGE_TYPES,
    IMU_TYPES,
    Bag,
    BagError,
    BagReadError,
    TopicError,
    header_stamp_ns,
)


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


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """A 20-frame drive in 4 KiB chunks (a recorder's are 768 KiB: a cut loses at most one), and its messages."""
    path = write_mcap_ros2(
        tmp_path_factory.mktemp("chunked") / "drive.mcap", DriveSpec(frames=20, camera_info=True), 4096
    )
    with Bag(path) as bag:
        return path, [(t, ns) for t, ns, _ in bag.messages([i.topic for i in bag.topics])]


def _cut(src, dst, fraction):
    dst.write_bytes(src.read_bytes()[: int(src.stat().st_size * fraction)])
    return dst


def _read_all(path):
    with Bag(path) as bag:
        return [(t, ns, m) for t, ns, m in bag.messages([i.topic for i in bag.topics])]


def test_truncated_mcap_yields_its_intact_prefix_with_a_warning(chunked, tmp_path, caplog):
    """A recorder killed mid-drive leaves an MCAP cut inside a chunk, without summary or footer; it
    used to be refused whole ("File end magic is invalid")."""
    path, full = chunked
    cut = _cut(path, tmp_path / "cut.mcap", 0.6)
    with caplog.at_level("WARNING", logger="offline_adapt.data.bags"):
        got = _read_all(cut)
    assert len(full) / 3 < len(got) < len(full)
    assert [(t, ns) for t, ns, _ in got] == full[: len(got)]
    assert not any(isinstance(m, BagError) for _, _, m in got)
    warning = " ".join(r.getMessage() for r in caplog.records)
    size = cut.stat().st_size
    assert "cut.mcap: damaged or cut short after byte" in warning and f"of {size}" in warning
    assert f"{len(got)} messages" in warning and "s of recording" in warning and "lost" in warning, warning


def test_killed_recording_folder_without_metadata_reads_its_mcap(chunked, tmp_path, caplog):
    path, full = chunked
    (tmp_path / "drive").mkdir()
    _cut(path, tmp_path / "drive" / "drive_0.mcap", 0.6)
    with caplog.at_level("WARNING", logger="offline_adapt.data.bags"):
        got = _read_all(tmp_path / "drive")
    assert 0 < len(got) < len(full) and "metadata.yaml" in caplog.text and "lost" in caplog.text


def test_mcap_with_nothing_intact_before_the_cut_is_refused(bags, tmp_path):
    dst = tmp_path / "cut"
    shutil.copytree(bags["mcap"], dst)
    mcap = next(dst.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagReadError, match="cut.*nothing intact") as e:  # one chunk: nothing before the cut
        _read_all(dst)
    assert "truncated or corrupt" in str(e.value)


def test_killed_sqlite_recording_reads_its_committed_messages(bags, tmp_path):
    """SQLite keeps a killed recorder's bag consistent: the rollback journal left beside the .db3 undoes
    the open transaction, and the committed messages read normally (checked, nothing to recover)."""
    dst = tmp_path / "killed"
    shutil.copytree(bags["sqlite3"], dst)
    db = next(dst.glob("*.db3"))
    committed = len(_read_all(dst))
    code = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN'); "
        "c.execute('INSERT INTO messages(topic_id, timestamp, data) SELECT topic_id, timestamp + 1, data FROM messages'); "
        "c.execute('DELETE FROM messages WHERE id < 10'); os.kill(os.getpid(), 9)"
    )
    import subprocess
    import sys

    assert subprocess.run([sys.executable, "-c", code, str(db)]).returncode == -9
    assert db.with_name(db.name + "-journal").is_file()
    assert len(_read_all(dst)) == committed


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
