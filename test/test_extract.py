# SPDX-License-Identifier: Apache-2.0
"""Bag -> pair data set extraction on real bags (rosbags SQLite 3 / MCAP, mcap-ros2-support) and real tiles."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_writers import DriveSpec, make_xyz_tiles, write_mcap_ros2, write_ros1, write_rosbags

from offline_adapt.cli import main as adapt_main
from offline_adapt.data.bags import BagError, TopicError
from offline_adapt.data.dataset import PairDataset, PairRecord
from offline_adapt.data.extract import ExtractOptions, FixTrack, assign_splits, extract, parse_split, smooth_track
from xview_loc_ros.geo import LocalENU
from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source

SIZE, MPP = 64, 0.5  # 32 m patches: a 7.2 m GNSS offset keeps the truth well inside
GT = "/ground_truth/fix"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    tiles = "xyz:" + str(make_xyz_tiles(d / "tiles", zoom=18, radius_m=250))
    spec = DriveSpec(frames=16)
    return {
        "dir": d,
        "tiles": tiles,
        "spec": spec,
        "mcap": write_rosbags(d / "drive_mcap", spec, "mcap"),
        "sqlite3": write_rosbags(d / "drive_sqlite", spec, "sqlite3"),
        "mcap_ros2": write_mcap_ros2(d / "drive.mcap", spec),
        "ros1": write_ros1(d / "drive.bag", spec),
    }


def _opts(**kw):
    base = dict(size_px=SIZE, mpp=MPP, gt_topic=GT, min_spacing_m=4.0)
    base.update(kw)
    return ExtractOptions(**base)


def _enu(recs, attr="fix"):
    frame = LocalENU(52.0116, 4.3571)
    e, n, _ = frame.to_enu([getattr(r, f"{attr}_lat") for r in recs], [getattr(r, f"{attr}_lon") for r in recs], 0.0)
    return np.stack([e, n], axis=1)


@pytest.mark.parametrize("kind", ["mcap", "sqlite3", "mcap_ros2", "ros1"])
def test_extract_every_storage(world, tmp_path, kind):
    spec = world["spec"]
    summary = extract([world[kind]], world["tiles"], tmp_path / "ds", _opts(), progress=False)
    ds = PairDataset(tmp_path / "ds")
    assert len(ds) == summary.pairs and not (tmp_path / "ds.partial").exists()
    # The true camera position lies inside every patch, offset by the GNSS error (6, -4) m.
    for rec in ds.pairs:
        u, v = rec.gt_pixel()
        assert 0 <= u < SIZE and 0 <= v < SIZE
        assert u == pytest.approx(SIZE / 2 - 6.0 / MPP, abs=0.3) and v == pytest.approx(SIZE / 2 - 4.0 / MPP, abs=0.3)
        assert rec.heading_deg == pytest.approx(spec.heading_deg, abs=1e-6) and rec.heading_source == "imu"
        assert rec.fix_std_m == pytest.approx(3.0)
        assert np.allclose(rec.fix_cov_en, [[9.0, 0.0], [0.0, 9.0]])  # NavSatFix position_covariance, m^2
        assert rec.extra["topic"] == "/camera/image/compressed" and rec.extra["bag"] == str(world[kind])
        assert ds.load_ground(rec).shape == (32, 64, 3) and ds.load_aerial(rec).shape == (SIZE, SIZE, 3)
    # Spacing rule: 5 m/s at 2 Hz = 2.5 m per frame, min spacing 4 m -> every second frame.
    pos = _enu(ds.pairs)
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert np.all(steps >= 4.0 - 1e-6) and np.all(steps < 4.0 + 2.5)
    assert len(ds) == 8 and summary.counts["spacing"] == 8
    assert ds.meta.ground_size == [32, 64] and ds.meta.ground_type == "panorama" and ds.meta.patch_size_px == SIZE


def test_aerial_patch_is_centred_on_the_coarse_fix(world, tmp_path):
    extract([world["sqlite3"]], world["tiles"], tmp_path / "ds", _opts(), progress=False)
    ds = PairDataset(tmp_path / "ds")
    builder = AerialPatchBuilder(open_tile_source(world["tiles"]), SIZE, MPP)
    for rec in ds.pairs[:3]:
        assert (rec.center_lat, rec.center_lon) == (rec.fix_lat, rec.fix_lon)
        expected = builder.build(rec.fix_lat, rec.fix_lon).image
        assert np.array_equal(ds.load_aerial(rec), expected)  # PNG: lossless
    # Ground images are the recorded JPEG bytes, not a re-encode.
    rec = ds.pairs[0]
    assert (tmp_path / "ds" / rec.ground).read_bytes()[:3] == b"\xff\xd8\xff"


def test_nan_and_no_fix_are_dropped_and_gaps_reject_frames(tmp_path, world):
    # Fixes 5 Hz from t=-0.5 s; fixes 8..22 (t=1.1..3.9 s) become NO_FIX / NaN: good fixes at 0.9 and 4.1 s.
    bad = {k: ({"status": -1} if k % 2 else {"latitude": math.nan}) for k in range(8, 23)}
    spec = DriveSpec(frames=16, fix_override=bad)
    bag = write_rosbags(tmp_path / "gappy", spec, "sqlite3")
    summary = extract(
        [bag], world["tiles"], tmp_path / "ds", _opts(min_spacing_m=0.0, max_fix_gap_s=2.0), progress=False
    )
    c = summary.counts
    assert c["fix_no_fix"] == 7 and c["fix_invalid"] == 8  # the node's reason names (xview_loc_ros.sensors)
    # Frames at t = 1.0 .. 4.0 s fall in the 3.2 s gap (7 frames); all others kept (spacing 0).
    assert c["fix_gap"] == 7 and summary.pairs == 9
    summary = extract(
        [bag], world["tiles"], tmp_path / "ds2", _opts(min_spacing_m=0.0, max_fix_gap_s=5.0), progress=False
    )
    assert summary.counts["fix_gap"] == 0 and summary.pairs == 16


def test_bad_frames_are_counted_not_fatal(tmp_path, world):
    spec = DriveSpec(frames=8, image="rgb8", image_override={2: {"encoding": "yuv422"}, 5: {"encoding": "32FC1"}})
    bag = write_rosbags(tmp_path / "raw", spec, "mcap")
    summary = extract([bag], world["tiles"], tmp_path / "ds", _opts(min_spacing_m=0.0), progress=False)
    assert summary.counts["bad_image"] == summary.counts["image_encoding"] == 2 and summary.pairs == 6
    spec = DriveSpec(frames=6, image_override={1: {"data": np.frombuffer(b"\xff\xd8\xff\xe0garbage", np.uint8)}})
    bag = write_rosbags(tmp_path / "jpeg", spec, "sqlite3")
    summary = extract([bag], world["tiles"], tmp_path / "ds2", _opts(min_spacing_m=0.0), progress=False)
    assert summary.counts["bad_image"] == 1 and summary.pairs == 5


def test_image_bombs_and_corrupt_jpegs_are_counted_not_stored(tmp_path, world, capsys):
    from hostile_images import jpeg_declaring, png_declaring
    from test_sensor_parity import corrupt_scan

    good = cv2.imencode(
        ".jpg", cv2.resize(np.random.default_rng(3).integers(0, 255, (8, 16, 3), dtype=np.uint8), (64, 32))
    )[1].tobytes()
    frames = {1: jpeg_declaring(20_000, 20_000), 3: png_declaring(100_000, 100_000), 5: corrupt_scan(good)}
    spec = DriveSpec(frames=8, image_override={i: {"data": np.frombuffer(d, np.uint8)} for i, d in frames.items()})
    bag = write_rosbags(tmp_path / "hostile", spec, "sqlite3")
    rc = adapt_main(
        [
            "extract",
            "--bag",
            str(bag),
            "--tiles",
            world["tiles"],
            "--out",
            str(tmp_path / "ds"),
            "--size",
            str(SIZE),
            "--mpp",
            str(MPP),
            "--min-spacing",
            "0",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0 and not (tmp_path / "ds.partial").exists(), err
    assert "bad_image 3 (image_corrupt_jpeg 1, image_too_many_pixels 2)" in out
    ds = PairDataset(tmp_path / "ds")
    c = ds.meta.extra["counts"]
    assert len(ds) == 5 and c["bad_image"] == 3 and c["image_too_many_pixels"] == 2 and c["image_corrupt_jpeg"] == 1, c
    assert ds.meta.ground_size == [32, 64]
    # the cap is an option: 32 x 64 = 2048 px frames are refused under a cap of 2000
    rc = adapt_main(
        [
            "extract",
            "--bag",
            str(bag),
            "--tiles",
            world["tiles"],
            "--out",
            str(tmp_path / "ds2"),
            "--size",
            str(SIZE),
            "--mpp",
            str(MPP),
            "--no-progress",
            "--max-image-pixels",
            "2000",
        ]
    )
    assert rc == 2 and "no camera frame" in capsys.readouterr().err
    rc = adapt_main(
        [
            "extract",
            "--bag",
            str(bag),
            "--tiles",
            world["tiles"],
            "--out",
            str(tmp_path / "ds3"),
            "--size",
            str(SIZE),
            "--mpp",
            str(MPP),
            "--no-progress",
            "--max-image-pixels",
            "0",
        ]
    )
    assert rc == 2 and "max image pixels must be > 0" in capsys.readouterr().err


def test_a_hostile_first_frame_does_not_set_the_ground_size(tmp_path, world):
    big = cv2.imencode(
        ".jpg", cv2.resize(np.random.default_rng(4).integers(0, 255, (8, 16, 3), dtype=np.uint8), (1200, 600))
    )[1].tobytes()
    spec = DriveSpec(frames=8, image_override={0: {"data": np.frombuffer(big, np.uint8)}})
    bag = write_rosbags(tmp_path / "first", spec, "sqlite3")
    extract([bag], world["tiles"], tmp_path / "ds", _opts(min_spacing_m=0.0), progress=False)
    ds = PairDataset(tmp_path / "ds")
    # the majority of frames (32 x 64) sets the size; the odd frame is resized to it
    assert len(ds) == 8 and ds.meta.ground_size == [32, 64]
    assert {ds.load_ground(r).shape for r in ds.pairs} == {(32, 64, 3)}
    extract([bag], world["tiles"], tmp_path / "ds2", _opts(min_spacing_m=0.0, ground_size=(16, 32)), progress=False)
    ds = PairDataset(tmp_path / "ds2")
    assert ds.meta.ground_size == [16, 32] and {ds.load_ground(r).shape for r in ds.pairs} == {(16, 32, 3)}


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "bayer_rggb8"])
def test_raw_image_encodings(tmp_path, world, encoding):
    bag = write_rosbags(tmp_path / "raw", DriveSpec(frames=3, image=encoding), "mcap")
    extract([bag], world["tiles"], tmp_path / "ds", _opts(min_spacing_m=0.0, ground_size=(16, 32)), progress=False)
    ds = PairDataset(tmp_path / "ds")
    assert len(ds) == 3 and ds.meta.ground_size == [16, 32]
    assert ds.load_ground(ds.pairs[0]).shape == (16, 32, 3)


def test_heading_fallbacks(tmp_path, world):
    # No IMU: course over ground from the fixes (5 m/s) gives the driving direction.
    bag = write_rosbags(tmp_path / "noimu", DriveSpec(frames=10, imu=False), "sqlite3")
    extract([bag], world["tiles"], tmp_path / "cog", _opts(), progress=False)
    recs = PairDataset(tmp_path / "cog").pairs
    inner = [r for r in recs if r.heading_source == "course_over_ground"]
    assert len(inner) >= 3 and all(r.heading_deg == pytest.approx(30.0, abs=0.01) for r in inner)
    # Too slow for course over ground: fixed heading when given, else unknown.
    slow = write_rosbags(tmp_path / "slow", DriveSpec(frames=6, imu=False, speed=1.0), "sqlite3")
    extract([slow], world["tiles"], tmp_path / "fixed", _opts(min_spacing_m=0.0, heading_deg=370.0), progress=False)
    assert {(r.heading_source, r.heading_deg) for r in PairDataset(tmp_path / "fixed").pairs} == {("fixed", 10.0)}
    extract([slow], world["tiles"], tmp_path / "unknown", _opts(min_spacing_m=0.0), progress=False)
    assert {(r.heading_source, r.heading_deg) for r in PairDataset(tmp_path / "unknown").pairs} == {("unknown", None)}


def test_stationary_vehicle_adds_nothing(tmp_path, world):
    bag = write_rosbags(tmp_path / "stop", DriveSpec(frames=20, stop_after_s=2.0), "mcap")
    summary = extract([bag], world["tiles"], tmp_path / "ds", _opts(min_spacing_m=2.0), progress=False)
    # Moving 10 m in the first 2 s (2.5 m per frame) -> frames 0, 1, 2, 3, 4; then standing still.
    assert summary.pairs == 5 and summary.counts["spacing"] == 15


def test_pinhole_camera_info_intrinsics(tmp_path, world):
    bag = write_rosbags(tmp_path / "pin", DriveSpec(frames=3, camera_info=True), "mcap")
    extract(
        [bag],
        world["tiles"],
        tmp_path / "ds",
        _opts(ground_type="pinhole", ground_size=(16, 32), min_spacing_m=0.0),
        progress=False,
    )
    meta = PairDataset(tmp_path / "ds").meta
    # Recorded 64 px wide at 90 degrees FOV (fx = 32 px); stored at half size.
    assert meta.intrinsics == pytest.approx([16.0, 16.0, 16.0, 8.0]) and meta.fov_deg == pytest.approx(90.0)
    nobag = write_rosbags(tmp_path / "noinfo", DriveSpec(frames=3), "mcap")
    with pytest.raises(TopicError, match="intrinsics"):
        extract([nobag], world["tiles"], tmp_path / "ds2", _opts(ground_type="pinhole"), progress=False)
    assert not (tmp_path / "ds2").exists() and not (tmp_path / "ds2.partial").exists()


def test_missing_topic_is_a_clear_error_and_writes_nothing(tmp_path, world):
    with pytest.raises(TopicError, match="no topic '/cam'") as e:
        extract([world["mcap"]], world["tiles"], tmp_path / "ds", _opts(image_topic="/cam"), progress=False)
    assert "/camera/image/compressed  sensor_msgs/msg/CompressedImage  16 msgs" in str(e.value)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()


def _sql(bag: Path, statement: str) -> None:
    con = sqlite3.connect(next(bag.glob("*.db3")))
    con.execute(statement)
    con.commit()
    con.close()


IMAGES_AFTER_2_5_S = (
    "topic_id=(SELECT id FROM topics WHERE name='/camera/image/compressed') "
    "AND timestamp > (SELECT MIN(timestamp) + 3000000000 FROM messages)"
)  # first message at -0.5 s


def test_bag_cut_short_gives_the_pairs_of_its_intact_part(tmp_path, world, caplog):
    """A recorder killed after its last chunk but before the summary: every message is intact."""
    cut = tmp_path / "cut"
    shutil.copytree(world["mcap"], cut)
    f = next(cut.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[:-200])
    whole = extract([world["mcap"]], world["tiles"], tmp_path / "whole", _opts(), progress=False)
    with caplog.at_level("WARNING", logger="offline_adapt.data.bags"):
        summary = extract([cut], world["tiles"], tmp_path / "ds", _opts(), progress=False)
    assert summary.pairs == whole.pairs and "are lost" in caplog.text
    assert [r.stamp for r in PairDataset(tmp_path / "ds").pairs] == [
        r.stamp for r in PairDataset(tmp_path / "whole").pairs
    ]


def test_corrupt_bag_leaves_no_output(tmp_path, world):
    cut = tmp_path / "cut"  # cut inside the bag's only chunk: nothing intact before the damage
    shutil.copytree(world["mcap"], cut)
    f = next(cut.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(BagError, match="truncated or corrupt"):
        extract([cut], world["tiles"], tmp_path / "ds", _opts(), progress=False)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()
    # Overwritten chunk data: the reader stops early, the bag's message counts reveal it.
    mid = tmp_path / "mid"
    shutil.copytree(world["mcap"], mid)
    f = next(mid.glob("*.mcap"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)
    f.write_bytes(bytes(data))
    with pytest.raises(BagError, match="fewer messages readable"):
        extract([mid], world["tiles"], tmp_path / "ds", _opts(), progress=False)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()
    # Image messages lost after 2.5 s: fails while walking the frames, after pairs were written.
    lost = tmp_path / "lost"
    shutil.copytree(world["sqlite3"], lost)
    _sql(lost, f"DELETE FROM messages WHERE {IMAGES_AFTER_2_5_S}")
    with pytest.raises(BagError, match="camera/image/compressed: 6 of 16"):
        extract([lost], world["tiles"], tmp_path / "ds", _opts(), progress=False)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()


def test_undecodable_frames_are_counted(tmp_path, world):
    bad = tmp_path / "bad"
    shutil.copytree(world["sqlite3"], bad)
    _sql(bad, f"UPDATE messages SET data=zeroblob(3) WHERE {IMAGES_AFTER_2_5_S}")
    summary = extract([bad], world["tiles"], tmp_path / "ds", _opts(), progress=False)
    assert summary.counts["bad_image"] == 10 and summary.pairs == 3  # frames 0, 2, 4 (t < 2.5 s, 4 m spacing)


def test_resume_after_a_kill_gives_the_same_data_set(tmp_path, world):
    ref = tmp_path / "ref"
    extract([world["mcap"]], world["tiles"], ref, _opts(), progress=False)
    # What a kill leaves: the .partial folder with some pairs and a torn last index line.
    out = tmp_path / "ds"
    partial = tmp_path / "ds.partial"
    shutil.copytree(ref, partial)
    (partial / "dataset.json").unlink()
    lines = (ref / "index.jsonl").read_text().splitlines()
    (partial / "index.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])
    summary = extract([world["mcap"]], world["tiles"], out, _opts(), resume=True, progress=False)
    assert summary.counts["resumed"] == 3 and summary.counts["kept"] == len(lines) - 3
    a, b = PairDataset(ref), PairDataset(out)
    assert [r.id for r in a.pairs] == [r.id for r in b.pairs]
    # Different options cannot silently mix into a resumed set.
    shutil.copytree(partial.parent / "ref", partial)
    with pytest.raises(ValueError, match="different bags, tiles or options"):
        extract(
            [world["mcap"]],
            world["tiles"],
            tmp_path / "ds",
            _opts(min_spacing_m=1.0),
            resume=True,
            overwrite=True,
            progress=False,
        )


def test_split_by_drive_segment(tmp_path, world):
    bag = write_rosbags(tmp_path / "long", DriveSpec(frames=80, rate_hz=2.0, speed=2.0, heading_deg=90.0), "sqlite3")
    summary = extract(
        [bag],
        world["tiles"],
        tmp_path / "ds",
        _opts(min_spacing_m=0.0, split=(70, 10, 20), segment_s=4.0),
        progress=False,
    )
    recs = sorted(PairDataset(tmp_path / "ds").pairs, key=lambda r: r.stamp)
    assert summary.splits == {"train": 56, "val": 8, "test": 16}
    # Every 4 s block (8 frames) lies in one split.
    t0 = recs[0].stamp
    for block in range(10):
        assert len({r.split for r in recs if int((r.stamp - t0) // 4.0) == block}) == 1


def test_assign_splits_interleaves_blocks():
    recs = [
        PairRecord(
            id=str(i),
            ground="g",
            aerial="a",
            center_lat=0,
            center_lon=0,
            mpp=1,
            size_px=8,
            stamp=float(i),
            extra={"bag": "b"},
        )
        for i in range(200)
    ]
    out = assign_splits(recs, parse_split("70,10,20"), segment_s=10.0)
    seq = [out[str(i * 10)] for i in range(20)]
    assert seq.count("train") == 14 and seq.count("val") == 2 and seq.count("test") == 4
    assert seq[:10].count("test") == 2  # the test blocks are spread over the drive, not all at its end
    with pytest.raises(ValueError, match="TRAIN,VAL,TEST"):
        parse_split("70,30")


def test_fix_track_interpolation():
    tr = FixTrack.from_samples([(0.0, 52.0, 4.0, 1.0), (1.0, 52.0001, 4.0, 2.0), (5.0, 52.0002, 4.0, math.nan)], {})
    f, _ = tr.at(0.25, 2.0)
    assert (
        f["lat"] == pytest.approx(52.000025)
        and f["north"] == pytest.approx(0.25 * 11.13, rel=1e-2)
        and f["std_m"] == 2.0
        and f["cov_en"] is None  # samples without covariance entries: unknown
    )
    # the east/north covariance is interpolated like the node's fix buffer; unknown when either end lacks it
    cov = FixTrack.from_samples(
        [
            (0.0, 52.0, 4.0, 1.0, 1.0, 0.5, 4.0),
            (1.0, 52.0001, 4.0, 2.0, 3.0, -0.5, 8.0),
            (2.0, 52.0002, 4.0, *[math.nan] * 4),
        ],
        {},
    )
    assert np.allclose(cov.at(0.25, 2.0)[0]["cov_en"], [[1.5, 0.25], [0.25, 5.0]])
    assert cov.at(1.5, 2.0)[0]["cov_en"] is None
    assert (
        tr.at(3.0, 2.0) == (None, "fix_gap")
        and tr.at(-1.0, 2.0) == (None, "no_fix")
        and tr.at(6.0, 9.0) == (None, "no_fix")
    )
    assert tr.at(3.0, 5.0)[0] is not None


def test_cli_extract(tmp_path, world, capsys):
    rc = adapt_main(
        [
            "extract",
            "--bag",
            str(world["mcap_ros2"]),
            "--tiles",
            world["tiles"],
            "--out",
            str(tmp_path / "ds"),
            "--size",
            str(SIZE),
            "--mpp",
            str(MPP),
            "--gt-topic",
            GT,
            "--min-spacing",
            "4",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "8 pairs" in out and "spacing 8" in out and "imu 8" in out
    # Without --gt-topic the ground-truth fix is never auto-picked as the GNSS fix, and no GT is stored.
    rc = adapt_main(
        [
            "extract",
            "--bag",
            str(world["mcap_ros2"]),
            "--tiles",
            world["tiles"],
            "--out",
            str(tmp_path / "ds2"),
            "--size",
            str(SIZE),
            "--mpp",
            str(MPP),
            "--no-progress",
        ]
    )
    assert rc == 0 and all(r.gt_lat is None for r in PairDataset(tmp_path / "ds2").pairs)
    capsys.readouterr()
    rc = adapt_main(
        ["extract", "--bag", str(world["mcap_ros2"]), "--tiles", world["tiles"], "--out", str(tmp_path / "ds3")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--size S and --mpp R" in err


def test_cli_geometry_from_model_checkpoint(tmp_path, world, capsys):
    from xview_loc_ros.models import build_model, save_checkpoint

    ckpt = tmp_path / "small.pt"
    save_checkpoint(ckpt, build_model("small"))
    rc = adapt_main(
        [
            "extract",
            "--bag",
            str(world["sqlite3"]),
            "--tiles",
            world["tiles"],
            "--out",
            str(tmp_path / "ds"),
            "--model",
            str(ckpt),
            "--min-spacing",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    ds = PairDataset(tmp_path / "ds")
    cfg = build_model("small").config
    assert ds.meta.patch_size_px == cfg["aerial_size"] and ds.meta.mpp == cfg["mpp"]
    assert ds.meta.ground_size == list(cfg["ground_size"]) and ds.load_ground(ds.pairs[0]).shape[:2] == tuple(
        cfg["ground_size"]
    )
    from xview_loc_ros.preprocess import check_pair_config

    check_pair_config(cfg, ds.meta)  # the extracted set feeds the model it was extracted for
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    rc = adapt_main(
        [
            "extract",
            "--bag",
            str(world["sqlite3"]),
            "--tiles",
            world["tiles"],
            "--out",
            str(tmp_path / "d2"),
            "--model",
            str(tmp_path / "junk.pt"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "junk.pt: not a readable checkpoint" in err and err.count("\n") == 1


def test_smooth_track_removes_noise_and_keeps_lines():
    t = np.sort(np.random.default_rng(0).uniform(0, 60, 300))  # irregular 5 Hz-ish stamps
    line = 3.0 + 8.0 * t
    assert np.allclose(smooth_track(t, line, 1.0), line)  # exact, also at both ends
    noise = np.random.default_rng(1).normal(0, 3.0, t.size)
    err = smooth_track(t, line + noise, 1.0) - line
    assert err.std() < 3.0 / 2  # about 10 fixes per 2 s window
    assert np.array_equal(smooth_track(t, line + noise, 0.0), line + noise)
    assert smooth_track(np.array([5.0]), np.array([2.0]), 1.0).tolist() == [2.0]


def test_noisy_fixes_do_not_pass_for_motion(tmp_path, world):
    # Standing still for 4 s with 3 m white GNSS noise at 5 Hz: smoothed, hardly any frame is kept.
    rng = np.random.default_rng(4)
    noisy = {
        k: {"latitude": 52.0116 + rng.normal(0, 3.0) / 111_000, "longitude": 4.3571 + rng.normal(0, 3.0) / 68_500}
        for k in range(40)
    }
    bag = write_rosbags(tmp_path / "still", DriveSpec(frames=9, speed=0.0, fix_override=noisy, imu=False), "sqlite3")
    smooth = extract([bag], world["tiles"], tmp_path / "a", _opts(min_spacing_m=3.0), progress=False)
    raw = extract([bag], world["tiles"], tmp_path / "b", _opts(min_spacing_m=3.0, smooth_s=0.0), progress=False)
    assert smooth.pairs <= 2 < raw.pairs
