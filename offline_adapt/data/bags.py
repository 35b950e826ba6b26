# SPDX-License-Identifier: Apache-2.0
"""Reading recorded drives without a ROS install (``rosbags``): rosbag2 folders, ``.mcap`` and
``.db3`` files, ROS 1 ``.bag`` files.

Message definitions embedded in the bag win; when a bag carries none, the type store of the
distro named in its ``metadata.yaml`` (``ros_distro``) is used, else Jazzy (ROS 1: Noetic).
Topics are found by message type; a missing or ambiguous topic is a :class:`TopicError` whose
message lists what the bag holds (topic, type, message count). Any failure to read the bag
itself (truncated, corrupt, not a bag) is a :class:`BagReadError` naming the file.

A recorder killed mid-drive leaves an MCAP file cut inside a chunk, without its summary and footer
(and a rosbag2 folder without metadata.yaml). Such a file is read up to the damage: its intact
chunks are copied to a temporary MCAP that is read instead, with a warning saying how much was lost.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import yaml

log = logging.getLogger(__name__)


IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
FIX_TYPES = ("sensor_msgs/msg/NavSatFix",)
IMU_TYPES = ("sensor_msgs/msg/Imu",)
CAMERA_INFO_TYPES = ("sensor_msgs/msg/CameraInfo",)
ODOM_TYPES = ("nav_msgs/msg/Odometry",)
DEFAULT_ROS2_DISTRO = "jazzy"


class BagError(ValueError):
    """Base class of bag problems (the message names the bag)."""


class BagReadError(BagError):
    """The bag cannot be opened or read: missing, truncated, corrupt, or not a bag."""


class TopicError(BagError):
    """A required topic is missing, ambiguous or of the wrong type."""


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    msgtype: str
    count: int


def read_metadata(bag_dir: Path) -> dict:
    """A rosbag2 folder's ``metadata.yaml`` as a mapping. BagReadError naming the file when it is
    not UTF-8 YAML: rosbags would report only "'utf-8' codec can't decode ..."."""
    meta = Path(bag_dir) / "metadata.yaml"
    try:
        info = yaml.safe_load(meta.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BagReadError(f"{meta}: not a rosbag2 metadata file (not UTF-8 text: byte {e.start})") from e
    except yaml.YAMLError as e:
        raise BagReadError(f"{meta}: not a rosbag2 metadata file (invalid YAML: {str(e).splitlines()[0]})") from e
    except OSError as e:
        raise BagReadError(f"{meta}: cannot read ({e.strerror or e})") from e
    if not isinstance(info, dict):
        raise BagReadError(f"{meta}: not a rosbag2 metadata file (no mapping)")
    return info


def _typestore_for(path: Path) -> Any:
    from rosbags.typesys import Stores, get_typestore

    if path.suffix == ".bag":
        return get_typestore(Stores.ROS1_NOETIC)
    distro = None
    if path.is_dir() and (path / "metadata.yaml").is_file():
        info = read_metadata(path).get("rosbag2_bagfile_information")
        distro = info.get("ros_distro") if isinstance(info, dict) else None
    store = getattr(Stores, f"ROS2_{str(distro or '').upper()}", None)
    if store is None:
        store = getattr(Stores, f"ROS2_{DEFAULT_ROS2_DISTRO.upper()}")
    return get_typestore(store)


class Bag:
    """One recorded drive. Use as a context manager::

    with Bag(path) as bag:
        topic = bag.find_topic(FIX_TYPES, "GNSS fix")
        for topic, log_ns, msg in bag.messages([topic]):
            ...
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagReadError(f"{self.path}: no such bag (expected a rosbag2 folder, .mcap, .db3 or ROS 1 .bag)")
        self._storage = self.path
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            files = sorted(self.path.glob("*.mcap")) + sorted(self.path.glob("*.db3"))
            if len(files) != 1:
                raise BagReadError(
                    f"{self.path}: rosbag2 folder without metadata.yaml (an interrupted recording? "
                    "`ros2 bag reindex` rebuilds it; or pass the .mcap/.db3 file itself)"
                )
            log.warning("%s: no metadata.yaml (an interrupted recording?): reading %s", self.path, files[0].name)
            self._storage = files[0]
        self._reader: Any = None
        self._recovered_dir: Optional[Path] = None
        self.topics: List[TopicInfo] = []

    def __enter__(self) -> "Bag":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        from rosbags.highlevel import AnyReader

        typestore = _typestore_for(self.path)  # a broken metadata.yaml: BagReadError naming it
        try:
            reader = AnyReader([self._storage], default_typestore=typestore)
            reader.open()
        except Exception as e:  # rosbags, sqlite3, mcap and zstd raise many unrelated types
            reader = self._open_intact_prefix(typestore, e)
        self._reader = reader
        counts: dict = {}
        for c in reader.connections:
            key = (c.topic, c.msgtype)
            counts[key] = counts.get(key, 0) + int(c.msgcount)
        self.topics = [TopicInfo(t, normalise_type(m), n) for (t, m), n in sorted(counts.items())]

    def _open_intact_prefix(self, typestore: Any, error: Exception) -> Any:
        """Reader of the intact chunks of a damaged MCAP (see the module docstring); BagReadError for
        other storage, or when nothing before the damage is intact."""
        from rosbags.highlevel import AnyReader

        refused = BagReadError(
            f"{self.path}: cannot open bag: {_describe(error)} (truncated or corrupt bag, or not a rosbag)"
        )
        mcap = self._storage if self._storage.is_file() else next(iter(sorted(self._storage.glob("*.mcap"))), None)
        if (
            mcap is None
            or mcap.suffix != ".mcap"
            or (self._storage.is_dir() and len(list(self._storage.glob("*.mcap"))) != 1)
        ):
            raise refused from error
        self._recovered_dir = Path(tempfile.mkdtemp(prefix="xview-recovered-"))
        try:
            prefix = copy_intact_mcap_prefix(mcap, self._recovered_dir / mcap.name)
            if prefix.messages == 0:
                raise BagReadError(
                    f"{self.path}: cannot open bag: {_describe(error)}; nothing intact before the damage "
                    f"at byte {prefix.intact_bytes} (truncated or corrupt bag)"
                ) from error
            reader = AnyReader([self._recovered_dir / mcap.name], default_typestore=typestore)
            reader.open()
        except BaseException:
            self.close()
            raise
        log.warning("%s", prefix.describe(mcap))
        return reader

    def close(self) -> None:
        try:
            if self._reader is not None:
                self._reader.close()
        finally:
            self._reader = None
            if self._recovered_dir is not None:
                shutil.rmtree(self._recovered_dir, ignore_errors=True)
                self._recovered_dir = None

    def describe(self) -> str:
        """The bag's topics, one per line: ``topic  type  count``."""
        if not self.topics:
            return "  (no topics)"
        w = max(len(t.topic) for t in self.topics)
        return "\n".join(f"  {t.topic:<{w}}  {t.msgtype}  {t.count} msgs" for t in self.topics)

    def topic_info(self, topic: str) -> TopicInfo:
        for t in self.topics:
            if t.topic == topic:
                return t
        raise TopicError(f"{self.path}: no topic {topic!r}; the bag holds:\n{self.describe()}")

    def find_topic(
        self,
        types: Sequence[str],
        role: str,
        override: Optional[str] = None,
        required: bool = True,
        exclude: Iterable[str] = (),
        flag: str = "",
    ) -> Optional[str]:
        """The one topic of one of ``types`` (``override`` when given, checked); None when optional and absent.

        ``exclude`` topics are never picked automatically (e.g. a ground-truth fix next to the GNSS fix).
        """
        hint = f" (choose with {flag})" if flag else ""
        if override:
            info = self.topic_info(override)
            if info.msgtype not in types:
                raise TopicError(
                    f"{self.path}: {role} topic {override!r} has type {info.msgtype}, expected {' or '.join(types)}; "
                    f"the bag holds:\n{self.describe()}"
                )
            return override
        excluded = set(exclude)
        found = [t for t in self.topics if t.msgtype in types and t.topic not in excluded]
        if len(found) > 1:  # prefer topics with messages (counts are 0 only where the index lacks them)
            found = [t for t in found if t.count > 0] or found
        if len(found) == 1:
            return found[0].topic
        if not found and not required:
            return None
        what = "no" if not found else f"{len(found)} candidate"
        raise TopicError(
            f"{self.path}: {what} {role} topic{'s' if len(found) != 1 else ''} of type {' or '.join(types)}{hint}; "
            f"the bag holds:\n{self.describe()}"
        )

    def messages(self, topics: Sequence[str], deserialize: bool = True) -> Iterator[Tuple[str, int, Any]]:
        """(topic, log time ns, message) in log-time order; raw CDR bytes when ``deserialize`` is False.

        A message that fails to deserialise is yielded as a :class:`BagError` instance in place of
        the message, so the caller can count it; failure to read the bag raises :class:`BagReadError`.
        """
        if self._reader is None:
            raise BagReadError(f"{self.path}: bag is not open")
        conns = [c for c in self._reader.connections if c.topic in set(topics)]
        if not conns:
            return
        it = self._reader.messages(connections=conns)
        n = 0
        seen: dict = {}
        while True:
            try:
                conn, stamp, raw = next(it)
            except StopIteration:
                self._check_complete(topics, seen)
                return
            except Exception as e:
                raise BagReadError(
                    f"{self.path}: cannot read message {n + 1} of {', '.join(sorted(set(topics)))}: {_describe(e)} "
                    "(truncated or corrupt bag)"
                ) from e
            n += 1
            seen[conn.topic] = seen.get(conn.topic, 0) + 1
            if not deserialize:
                yield conn.topic, int(stamp), raw
                continue
            try:
                msg: Any = self._reader.deserialize(raw, conn.msgtype)
            except Exception as e:
                msg = BagError(
                    f"{self.path}: {conn.topic} message at {stamp} ns does not deserialise as {conn.msgtype}: {_describe(e)}"
                )
            yield conn.topic, int(stamp), msg

    def _check_complete(self, topics: Sequence[str], seen: dict) -> None:
        # Some damage (overwritten chunk data) ends the readers' iteration early without an error;
        # the counts in the bag's index reveal it.
        short = [
            f"{t.topic}: {seen.get(t.topic, 0)} of {t.count}"
            for t in self.topics
            if t.topic in set(topics) and seen.get(t.topic, 0) < t.count
        ]
        if short:
            raise BagReadError(
                f"{self.path}: fewer messages readable than the bag's index lists ({'; '.join(short)}): "
                "truncated or corrupt bag"
            )


@dataclass(frozen=True)
class IntactPrefix:
    """What :func:`copy_intact_mcap_prefix` kept: messages, their log-time span (ns), the bytes of the
    file they came from (``intact_bytes`` of ``file_bytes``) and the error that ended the read."""

    messages: int
    first_ns: int
    last_ns: int
    intact_bytes: int
    file_bytes: int
    error: str

    def describe(self, path: Path) -> str:
        lost = self.file_bytes - self.intact_bytes
        return (
            f"{path}: damaged or cut short after byte {self.intact_bytes} of {self.file_bytes} ({self.error}); "
            f"read the intact {self.messages} messages ({(self.last_ns - self.first_ns) / 1e9:.1f} s of recording); "
            f"{lost} bytes ({lost / max(self.file_bytes, 1):.1%} of the file) after them are lost"
        )


def copy_intact_mcap_prefix(src: Path, dst: Path) -> IntactPrefix:
    """Copy the schemas, channels and messages of ``src`` that precede its first damage (a cut or a
    record that fails its CRC) to a complete MCAP at ``dst``. A damaged chunk is lost whole: its
    messages come out of one compressed block."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    from mcap.writer import Writer

    schemas: dict = {}
    channels: dict = {}
    count, first, last, error = 0, 0, 0, "ends without its summary"
    with open(src, "rb") as f, open(dst, "wb") as out:
        writer = Writer(out)
        reader = StreamReader(f, validate_crcs=True)
        records = iter(reader.records)
        started = False
        intact = 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - mcap raises EndOfFile, struct.error, ValueError... at the damage
                error = _describe(e)
                break
            if not started:
                writer.start(profile=getattr(record, "profile", ""), library="xview_loc_ros bag recovery")
                started = True
            if isinstance(record, Schema):
                schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel) and (record.schema_id == 0 or record.schema_id in schemas):
                channels[record.id] = writer.register_channel(
                    record.topic, record.message_encoding, schemas.get(record.schema_id, 0), dict(record.metadata)
                )
            elif isinstance(record, Message) and record.channel_id in channels:
                writer.add_message(
                    channels[record.channel_id], record.log_time, record.data, record.publish_time, record.sequence
                )
                first = record.log_time if count == 0 else min(first, record.log_time)
                last = max(last, record.log_time)
                count += 1
            intact = f.tell()  # after the record just read (a chunk's messages come out of the whole chunk)
        if not started:
            writer.start()
        writer.finish()
    return IntactPrefix(count, first, last, intact, src.stat().st_size, error)


def normalise_type(msgtype: str) -> str:
    """'sensor_msgs/NavSatFix' (ROS 1, some MCAP writers) -> 'sensor_msgs/msg/NavSatFix'."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype


def _describe(e: BaseException) -> str:
    text = str(e).strip() or "no details"
    return f"{type(e).__name__}: {text}"


def header_stamp_ns(msg: Any, log_ns: int) -> int:
    """Sensor time of a stamped message in ns; the bag's log time when the header stamp is unset (0)."""
    header = getattr(msg, "header", None)
    if header is None:
        return log_ns
    ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return ns if ns > 0 else log_ns
