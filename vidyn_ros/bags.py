"""rosbag2 bags without ROS: write and read MCAP (default) and sqlite3 bags with the ``rosbags`` library.

Messages are CDR bytes made by :mod:`vidyn_ros.msgs`, so a bag written here plays back with ``ros2 bag play`` and
reads with any rosbag2 / MCAP tool, and bags recorded by ``ros2 bag record`` read here. A bag directory written by
vidyn holds ``metadata.yaml``, the storage file (``<name>.mcap`` or ``<name>.db3``) and ``rig_calibration.yaml``.

Interruptions: :class:`BagWriter` finishes the bag in ``close()`` (called by the context manager also when an
exception or Ctrl-C unwinds through it), so everything written so far is kept. After SIGKILL (no ``close()``) an MCAP
bag has no ``metadata.yaml`` and no summary section, but every message that reached the file is still there:
:class:`BagReader` then reads the ``.mcap`` file directly (rosbags scans it) and sets ``recovered``. The MCAP writer
keeps up to 1 MiB of messages in memory before writing a chunk; :meth:`BagWriter.flush` writes it out (recorders call
it periodically). An sqlite3 bag commits once, in ``close()``; after SIGKILL it keeps only what ``flush()`` committed.

Errors are one line: :class:`~vidyn_ros.errors.BagError` for a missing / unreadable / corrupt bag or an unknown
topic, :class:`~vidyn_ros.errors.OutputError` for an output directory that exists or cannot be written.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vidyn_ros import msgs
from vidyn_ros.errors import BagError, OutputError, VidynError
from vidyn_ros.types import MultiViewFrame, ObjectPose, RigFrame

__all__ = [
    "CALIBRATION_FILE",
    "BagReader",
    "BagWriter",
    "TopicInfo",
    "bag_summary",
    "format_summary",
    "reindex",
    "write_rig_episode",
]

log = logging.getLogger(__name__)

CALIBRATION_FILE = "rig_calibration.yaml"
STORAGES = ("mcap", "sqlite3")
# Stamps below one year are sim time (seconds since a simulation started); above, wall time since 1970.
SIM_TIME_LIMIT_NS = 10**9 * 86400 * 365


@dataclass(frozen=True)
class TopicInfo:
    """One topic in a bag. ``rate_hz`` = (count - 1) / bag duration: exact for topics spanning the whole bag, low for
    the others (:func:`bag_summary` computes exact per-topic rates)."""

    msgtype: str
    count: int
    rate_hz: float


def _oneline(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0].rstrip(".") if text else type(err).__name__


# --------------------------------------------------------------------------------------------------------------------
# Writing


class BagWriter:
    """Write a rosbag2 bag directory; topics (connections) are created on first use.

    Usage::

        with BagWriter("out/episode_0000") as w:          # MCAP, rosbag2 format version 9
            w.write("/clock", msgs.CLOCK, msgs.clock_msg(t), t)
            w.write_calibration({"cam0": T_world_cam0})

    Args:
        path: bag directory to create. It must not exist, or be an empty directory; with ``overwrite=True`` an
            existing *bag* directory (one holding metadata.yaml / .mcap / .db3 files) is replaced. Any other existing
            directory is never deleted.
        storage: "mcap" (default) or "sqlite3".
        custom_data: string key/values stored in metadata.yaml (e.g. the vidyn version).
        compression: None or "zstd". MCAP: zstd-compressed chunks (the MCAP standard; every MCAP reader handles it);
            sqlite3: each message compressed (rosbag2 "message" mode). Depth and masks shrink several-fold.
    """

    def __init__(
        self,
        path: str | Path,
        storage: str = "mcap",
        overwrite: bool = False,
        custom_data: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, WriterError

        if storage not in STORAGES:
            raise OutputError(f"unknown bag storage {storage!r} (use one of {', '.join(STORAGES)})")
        if compression not in (None, "none", "zstd"):
            raise OutputError(f"unknown bag compression {compression!r} (use zstd or none)")
        self.path = Path(path)
        self.storage = storage
        self._prepare_output_dir(overwrite)
        # A recorder node writes from whichever executor thread delivered the message, flushes from a timer and
        # closes from the main thread: every storage call runs under this lock (and the sqlite3 connection is opened
        # for use from any thread, see _any_thread_writer).
        self._lock = threading.Lock()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = _any_thread_writer()(self.path, version=9, storage_plugin=plugin)
        for k, v in (custom_data or {}).items():
            self._writer.set_custom_data(str(k), str(v))
        self.compression = compression if compression != "none" else None
        if self.compression:
            mode = CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        try:
            self._writer.open()
        except (OSError, WriterError) as err:
            raise OutputError(f"{self.path}: cannot create bag ({_oneline(err)})") from None
        self._connections: dict[str, Any] = {}
        self._closed = False
        self.counts: dict[str, int] = {}

    def _prepare_output_dir(self, overwrite: bool) -> None:
        p = self.path
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise OutputError(f"{p}: exists and is not a directory")
            entries = list(p.iterdir())
            is_bag = any(e.name == "metadata.yaml" or e.suffix in (".mcap", ".db3") for e in entries)
            if entries and not overwrite:
                raise OutputError(f"{p}: already exists and is not empty (choose another path or overwrite)")
            if entries and not is_bag:
                # Never delete a directory that does not look like a bag: it may hold the user's other work.
                raise OutputError(f"{p}: exists and is not a bag directory; refusing to overwrite it")
            try:
                shutil.rmtree(p)
            except OSError as err:
                raise OutputError(f"{p}: cannot remove the existing bag ({err.strerror})") from None
        parent = p.parent if str(p.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{parent}: cannot create output directory ({err.strerror})") from None

    def _connection(self, topic: str, msgtype: str) -> Any:
        conn = self._connections.get(topic)
        if conn is None:
            if not topic.startswith("/"):
                raise BagError(f"topic {topic!r} must start with '/'")
            from rosbags.typesys import TypesysError

            try:
                conn = self._writer.add_connection(topic, msgtype, typestore=msgs._typestore())
            except (KeyError, TypesysError):
                raise BagError(f"topic {topic}: unknown message type {msgtype!r}") from None
            self._connections[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already has type {conn.msgtype}, cannot write a {msgtype}")
        return conn

    def write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
        """Append one message. ``msg`` is a typestore message or its CDR bytes; ``stamp_ns`` the bag timestamp [ns]."""
        data = msg if isinstance(msg, bytes | bytearray | memoryview) else msgs.serialize(msg, msgtype)
        with self._lock:  # safe to call from several threads (a recorder's subscription callbacks)
            if self._closed:
                raise BagError(f"{self.path}: bag already closed")
            conn = self._connection(topic, msgtype)
            try:
                self._writer.write(conn, int(stamp_ns), data)
            except OSError as err:
                raise OutputError(f"{self.path}: cannot write ({err.strerror})") from None
            self.counts[topic] += 1

    def write_many(self, items: Iterable[tuple[str, str, Any, int]]) -> None:
        """Write ``(topic, msgtype, msg, stamp_ns)`` tuples, e.g. from :func:`msgs.rig_frame_messages`."""
        for topic, msgtype, msg, stamp in items:
            self.write(topic, msgtype, msg, stamp)

    def write_rig_frame(
        self, rig_frame: RigFrame | MultiViewFrame, ground_truth: bool = True, clock: bool = True
    ) -> None:
        """All messages of one rig frame (images, depth, camera_info, masks, ground truth) plus /clock."""
        self.write_many(msgs.rig_frame_messages(rig_frame, include_ground_truth=ground_truth))
        if clock:
            frame = rig_frame.frame if isinstance(rig_frame, RigFrame) else rig_frame
            self.write(msgs.CLOCK_TOPIC, msgs.CLOCK, msgs.clock_msg(frame.stamp_ns), frame.stamp_ns)

    def write_calibration(self, poses: Mapping[str, np.ndarray], serials: Mapping[str, str] | None = None) -> Path:
        """Write ``rig_calibration.yaml`` (camera name -> 4x4 camera-to-world) inside the bag directory."""
        from vidyn_ros.rig.calibration_io import save_rig_calibration

        return save_rig_calibration(self.path / CALIBRATION_FILE, dict(poses), dict(serials) if serials else None,
                                    comment="camera-to-world poses of the cameras in this bag (vidyn)")

    def flush(self) -> None:
        """Push buffered messages to disk so that they survive a SIGKILL (MCAP: write the pending chunk; sqlite3:
        commit). Costs one small chunk / one transaction; a recorder calls it every few seconds."""
        with self._lock:
            storage = getattr(self._writer, "storage", None)
            if storage is None or self._closed:
                return
            try:
                if self.storage == "mcap":
                    if storage.chunk.bio.tell():
                        storage.close_chunk()
                    storage.bio.flush()
                else:
                    storage.conn.commit()
            except OSError as err:
                raise OutputError(f"{self.path}: cannot write ({err.strerror})") from None

    def close(self) -> None:
        """Finish the bag (summary, metadata.yaml). Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._writer.close()
            except OSError as err:
                raise OutputError(f"{self.path}: cannot finish bag ({err.strerror})") from None

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Close (not abort) also on errors and Ctrl-C: what was written stays a readable bag.
        self.close()


def write_rig_episode(
    path: str | Path,
    frames: Iterable[RigFrame],
    storage: str = "mcap",
    overwrite: bool = False,
    ground_truth: bool = True,
    clock: bool = True,
    custom_data: Mapping[str, str] | None = None,
) -> Path:
    """Write rig frames to a new bag plus ``rig_calibration.yaml`` (poses of the first frame's cameras).

    The bag is finished even when ``frames`` raises part-way (frames already written are kept)."""
    with BagWriter(path, storage=storage, overwrite=overwrite, custom_data=custom_data) as w:
        calibrated = False
        for rf in frames:
            if not calibrated:
                w.write_calibration({c.name: c.T_world_cam for c in rf.frame.cameras})
                calibrated = True
            w.write_rig_frame(rf, ground_truth=ground_truth, clock=clock)
    return Path(path)


# --------------------------------------------------------------------------------------------------------------------
# Reading


@functools.cache
def _any_thread_writer() -> type:
    """rosbags' Writer whose sqlite3 storage may be used from any thread. Python's sqlite3 connections refuse calls
    from other threads than the one that opened them ('SQLite objects created in a thread can only be used in that
    same thread'); BagWriter serialises every call under its lock, which is what ``check_same_thread=False`` asks.
    Handing each call to one owner thread instead costs two thread switches per message, which a recorder on a busy
    CPU (the GIL contended by its executor) could not keep up with."""
    import sqlite3

    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

    class AnyThreadSqlite3Writer(Sqlite3Writer):
        def __init__(self, path: Path, compression: Any) -> None:
            super().__init__(path, compression)  # creates the database and its schema
            self.conn.close()
            self.conn = sqlite3.connect(f"file:{self.path}", uri=True, check_same_thread=False)
            self.cursor = self.conn.cursor()

    class AnyThreadWriter(Writer):
        STORAGE_PLUGINS: ClassVar = {**Writer.STORAGE_PLUGINS, StoragePlugin.SQLITE3: AnyThreadSqlite3Writer}

    return AnyThreadWriter


@dataclass
class _SalvagedConnection:
    """A channel of a salvaged MCAP file, shaped like rosbags' Connection (what BagReader and reindex use)."""

    id: int
    topic: str
    msgtype: str
    msgcount: int = 0
    msgdef: Any = None  # rosbags MessageDefinition from the channel's schema record
    digest: str = ""  # rosbag2 keeps the type hash in metadata.yaml only: unknown here
    ext: Any = None  # rosbags ConnectionExtRosbag2 (serialization format, offered QoS profiles)
    qos_yaml: str = field(default="", repr=False)


class _McapSalvage:
    """Read-only view of an MCAP file that has no summary / footer (its writer was killed) or was cut short, built by
    streaming records with the ``mcap`` package until the first incomplete one. Mimics the parts of rosbags' Reader
    that BagReader and :func:`reindex` use."""

    def __init__(self, path: Path) -> None:
        from rosbags.interfaces import ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat
        from rosbags.rosbag2.metadata import parse_qos

        self.path = path
        self.connections: list[_SalvagedConnection] = []
        self.message_count = 0
        self.start_time = 0
        self.end_time = 0
        self.good_bytes = 0
        self.chunk_compression = ""
        formats = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}
        by_id: dict[int, _SalvagedConnection] = {}
        stamps = []
        for rec in self._records():
            if type(rec).__name__ == "Channel":
                conn = by_id.setdefault(rec.id, _SalvagedConnection(rec.id, rec.topic, ""))
                name, encoding, data = self._schemas.get(rec.schema_id, ("", "", b""))
                conn.msgtype = name
                conn.msgdef = MessageDefinition(formats.get(encoding, MessageDefinitionFormat.NONE),
                                                data.decode(errors="replace"))
                qos = rec.metadata.get("offered_qos_profiles", "")
                try:
                    profiles = parse_qos(qos) if qos else []
                except Exception:  # a QoS string we cannot parse only costs the QoS in a reindexed bag
                    profiles = []
                conn.ext = ConnectionExtRosbag2(serialization_format=rec.message_encoding or "cdr",
                                                offered_qos_profiles=profiles)
            elif type(rec).__name__ == "Message" and rec.channel_id in by_id:
                by_id[rec.channel_id].msgcount += 1
                stamps.append(rec.log_time)
        self.connections = [c for c in by_id.values() if c.msgtype]
        self.message_count = sum(c.msgcount for c in self.connections)
        if stamps:
            self.start_time, self.end_time = min(stamps), max(stamps) + 1
        self.duration = self.end_time - self.start_time

    def _records(self) -> Iterator[Any]:
        from mcap.stream_reader import StreamReader

        self._schemas: dict[int, tuple[str, str, bytes]] = {}
        with open(self.path, "rb") as f:
            it = StreamReader(f, skip_magic=False, emit_chunks=True).records
            while True:
                try:
                    rec = next(it)
                except StopIteration:
                    return
                except Exception:  # the truncated tail: stop at the last complete record
                    return
                kind = type(rec).__name__
                if kind == "Chunk":
                    # Records inside a chunk are only trusted once the whole chunk was read (its CRC checked).
                    self.chunk_compression = self.chunk_compression or rec.compression
                    try:
                        inner = _chunk_records(rec)
                    except Exception:
                        return
                    self.good_bytes = f.tell()
                    for r in inner:
                        if type(r).__name__ == "Schema":
                            self._schemas[r.id] = (r.name, r.encoding, bytes(r.data))
                        yield r
                    continue
                if kind == "Schema":
                    self._schemas[rec.id] = (rec.name, rec.encoding, bytes(rec.data))
                self.good_bytes = f.tell()
                yield rec

    def messages(
        self, connections: Sequence[Any] = (), start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[Any, int, bytes]]:
        wanted = {c.id: c for c in (connections or self.connections)}
        for rec in self._records():
            if type(rec).__name__ != "Message" or rec.channel_id not in wanted:
                continue
            if (start is not None and rec.log_time < start) or (stop is not None and rec.log_time >= stop):
                continue
            yield wanted[rec.channel_id], rec.log_time, rec.data

    def close(self) -> None:
        pass


def _chunk_records(chunk: Any) -> list[Any]:
    """The records inside one MCAP chunk (decompressed and CRC-checked by the mcap package)."""
    from mcap.stream_reader import breakup_chunk

    return breakup_chunk(chunk, validate_crc=True)


def _storage_files(d: Path) -> list[Path]:
    return sorted([*d.glob("*.mcap"), *d.glob("*.db3")])


class BagReader:
    """Read a rosbag2 bag: a bag directory, or a single ``.mcap`` / ``.db3`` file.

    Attributes:
        topics: topic -> TopicInfo(msgtype, count, rate_hz).
        start_ns, end_ns: bag timestamps of the first and the last message; duration_s = their difference [s].
        storage: "mcap" or "sqlite3".
        recovered: True when the bag had no metadata.yaml (e.g. the writer was killed) or its MCAP file was
            incomplete (no summary, cut short), and it was read from its storage file directly.
        recovered_note: for an incomplete MCAP file, how many messages were recovered from how many bytes ("" else).
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        self.recovered = False
        p = self.path
        if p.name == "metadata.yaml":  # `vidyn info bag/metadata.yaml` means the bag
            p = p.parent
        if not p.exists():
            raise BagError(f"{p}: no such bag")
        if p.is_dir():
            self.bag_dir = p
            if (p / "metadata.yaml").is_file():
                target = p
            else:
                files = _storage_files(p)
                if len(files) != 1:
                    why = "no metadata.yaml, .mcap or .db3 file" if not files else "no metadata.yaml and several files"
                    raise BagError(f"{p}: not a rosbag2 bag ({why})")
                target = files[0]
                self.recovered = True
                log.warning("%s: no metadata.yaml (writer interrupted?); reading %s directly", p, target.name)
        else:
            if p.suffix not in (".mcap", ".db3"):
                raise BagError(f"{p}: not a rosbag2 bag (expected a bag directory, .mcap or .db3 file)")
            self.bag_dir = p.parent
            target = p
        self._target = target
        self.recovered_note = ""
        try:
            self._reader = Reader(target)
            self._reader.open()
        except Exception as err:  # rosbags raises ReaderError, but also struct/KeyError/sqlite errors on bad files
            # A killed writer (no summary) or a file cut short: with or without metadata.yaml beside it, salvage every
            # complete record of the MCAP file by streaming it. sqlite3 files have no such record structure.
            files = [target] if target.is_file() else _storage_files(target)
            if len(files) != 1 or files[0].suffix != ".mcap":
                raise BagError(f"{p}: cannot read bag: corrupt, truncated or not rosbag2 ({_oneline(err)})") from None
            self._target = target = files[0]
            self._reader = _McapSalvage(target)
            self.recovered = True
            if not self._reader.connections:
                why = f"{_oneline(err)}, no complete message in {target.name}"
                raise BagError(f"{p}: cannot read bag ({why})") from None
            size = target.stat().st_size
            self.recovered_note = (f"{target.name} is incomplete ({_oneline(err)}): recovered "
                                   f"{self._reader.message_count} messages from the first {self._reader.good_bytes} "
                                   f"of {size} bytes; `vidyn reindex {p}` rewrites it with a summary and index")
            log.warning("%s: %s", p, self.recovered_note)
        self._open = True
        try:
            self._init_metadata()
            self._register_unknown_types()
        except Exception as err:
            self.close()
            raise BagError(f"{p}: cannot read bag ({_oneline(err)})") from None

    def _init_metadata(self) -> None:
        r = self._reader
        files = [self._target] if self._target.is_file() else _storage_files(self._target)
        self.storage = "sqlite3" if files and files[0].suffix == ".db3" else "mcap"
        self.files = files
        self.message_count = int(r.message_count)
        if self.message_count:
            # rosbags reports an exclusive end (last stamp + 1 ns); keep the stamp of the last message.
            self.start_ns = int(r.start_time)
            self.end_ns = int(r.end_time) - 1
        else:
            self.start_ns = self.end_ns = 0
        self.duration_s = (self.end_ns - self.start_ns) / 1e9
        self.topics: dict[str, TopicInfo] = {}
        counts: dict[str, list] = {}
        for c in r.connections:  # a topic may have several connections (e.g. two publishers when recorded)
            entry = counts.setdefault(c.topic, [c.msgtype, 0])
            entry[1] += int(c.msgcount)
        for topic, (msgtype, count) in sorted(counts.items()):
            rate = (count - 1) / self.duration_s if count > 1 and self.duration_s > 0 else 0.0
            self.topics[topic] = TopicInfo(msgtype=msgtype or "?", count=count, rate_hz=rate)

    def _register_unknown_types(self) -> None:
        """Teach the type store message types it lacks (custom messages) from the definitions stored in the bag,
        so that :meth:`decoded` works on them too. Types already known are never redefined."""
        conns = [c for c in self._reader.connections if c.msgtype and c.msgtype not in msgs.TYPESTORE.types]
        if not conns:
            return
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_msg

        for c in conns:
            msgdef = getattr(c, "msgdef", None)
            if msgdef is None or msgdef.format != MessageDefinitionFormat.MSG or not msgdef.data:
                log.debug("%s: no usable definition for %s; it can be read raw only", self.path, c.msgtype)
                continue
            try:
                typs = get_types_from_msg(msgdef.data, c.msgtype)
                msgs.TYPESTORE.register({k: v for k, v in typs.items() if k not in msgs.TYPESTORE.types})
            except Exception as err:  # a malformed definition only costs decoding of that topic
                log.warning("%s: cannot parse the definition of %s (%s)", self.path, c.msgtype, _oneline(err))

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())

    def topic_spans(self) -> dict[str, tuple[int, int]]:
        """Per topic (first, last) bag timestamp [ns]. Reads the whole bag once (no deserialisation)."""
        spans: dict[str, tuple[int, int]] = {}
        for topic, _mt, stamp, _d in self.messages():
            first, last = spans.get(topic, (stamp, stamp))
            spans[topic] = (min(first, stamp), max(last, stamp))
        return spans

    def require_topics(self, topics: Iterable[str] | str) -> list[str]:
        """``topics`` as a list; BagError naming the first one this bag does not have (and listing what it has)."""
        topics = [topics] if isinstance(topics, str) else list(topics)
        unknown = [t for t in topics if t not in self.topics]
        if unknown:
            raise BagError(f"{self.path}: no topic {unknown[0]} in this bag (has: {', '.join(self.topics) or 'none'})")
        return topics

    def _connections(self, topics: Iterable[str] | str | None) -> list[Any]:
        if topics is None:
            return list(self._reader.connections)
        topics = self.require_topics(topics)
        return [c for c in self._reader.connections if c.topic in topics]

    def messages(
        self, topics: Iterable[str] | str | None = None, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[tuple[str, str, int, bytes]]:
        """Raw messages in bag-time order: (topic, msgtype, bag stamp [ns], CDR bytes). Unknown topic -> BagError."""
        conns = self._connections(topics)
        if topics is not None and not conns:
            return
        it = self._reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, stamp, data = next(it)
            except StopIteration:
                return
            except Exception as err:  # a truncated / corrupt chunk shows up only while iterating
                raise BagError(f"{self.path}: corrupt bag data ({_oneline(err)})") from None
            yield conn.topic, conn.msgtype, int(stamp), data

    def decoded(
        self, topics: Iterable[str] | str | None = None, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[tuple[str, str, int, Any]]:
        """Like :meth:`messages` with each message deserialised (typestore objects)."""
        for topic, msgtype, stamp, data in self.messages(topics, start_ns, stop_ns):
            try:
                yield topic, msgtype, stamp, msgs.deserialize(data, msgtype)
            except VidynError as err:
                raise BagError(f"{self.path}: topic {topic} at {stamp}: {err}") from None

    def calibration(self) -> dict[str, np.ndarray] | None:
        """Camera-to-world poses from the bag's rig_calibration.yaml, or None when the bag has none."""
        from vidyn_ros.rig.calibration_io import load_rig_calibration

        f = self.bag_dir / CALIBRATION_FILE
        return load_rig_calibration(f) if f.is_file() else None

    def camera_names(self) -> list[str]:
        """Cameras with a color topic in this bag."""
        return msgs.camera_names_from_topics(self.topics)

    def multiview_frames(
        self, cameras: Sequence[str] | None = None, max_pending: int = 64, masks: bool = True,
        masks_from: Callable[[str], str] = msgs.mask_topic,
    ) -> Iterator[MultiViewFrame]:
        """Synchronised multi-view frames, grouped by exact header stamp.

        For every stamp at which all cameras have color and depth (and a mask, for cameras whose mask topic is in
        the bag and ``masks`` is set), yields a MultiViewFrame. Masks come from ``masks_from(cam)``: perception's
        /<cam>/mask by default, ``msgs.sim_mask_topic`` for a simulated rig's true masks (evaluation only).
        CameraInfo is taken from the same stamp or else the latest one seen for that camera. Poses come from
        rig_calibration.yaml (identity when the bag has none). Incomplete stamps older than ``max_pending`` newer
        stamps are dropped (their count is logged).

        Raises BagError when a camera has no color/depth/camera_info topic.
        """
        names = list(cameras) if cameras is not None else self.camera_names()
        if not names:
            raise BagError(f"{self.path}: no camera topics (/<cam>/color/image_raw) in this bag")
        calib = self.calibration()
        if calib is None:
            log.warning("%s: no %s; camera poses set to identity", self.path, CALIBRATION_FILE)
            calib = {}
        for cam in names:
            if cam in calib:
                continue
            if calib:
                log.warning("%s: camera %s not in %s; pose set to identity", self.path, cam, CALIBRATION_FILE)
        need: dict[str, str] = {}  # topic -> role
        for cam in names:
            for topic in (msgs.color_topic(cam), msgs.depth_topic(cam), msgs.info_topic(cam)):
                if topic not in self.topics:
                    raise BagError(f"{self.path}: no topic {topic} in this bag (camera {cam})")
            need[msgs.color_topic(cam)] = need[msgs.depth_topic(cam)] = need[msgs.info_topic(cam)] = cam
            if masks and masks_from(cam) in self.topics:
                need[masks_from(cam)] = cam
        required = [t for t in need if not t.endswith("/camera_info")]
        latest_info: dict[str, Any] = {}
        pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        dropped = 0
        info_topics = {msgs.info_topic(c) for c in names}

        def complete(group: dict[str, Any]) -> bool:
            return all(t in group for t in required) and all(t in group or t in latest_info for t in info_topics)

        for topic, _msgtype, _bag_stamp, msg in self.decoded(list(need)):
            stamp = msgs.stamp_to_ns(msg.header)
            pending.setdefault(stamp, {})[topic] = msg
            if topic in info_topics:
                latest_info[topic] = msg
                ready = [s for s, g in pending.items() if complete(g)]  # a late camera_info may complete older stamps
            else:
                ready = [stamp] if complete(pending[stamp]) else []
            for s in ready:
                group = pending.pop(s)
                for t in info_topics:
                    group.setdefault(t, latest_info[t])
                try:
                    yield msgs.multiview_from_messages(group, names, calib, s, masks_from=masks_from)
                except VidynError as err:
                    raise BagError(f"{self.path}: at stamp {s}: {err}") from None
            while len(pending) > max_pending:
                _, group = pending.popitem(last=False)
                dropped += any(t in group for t in required)  # a lone camera_info is no lost frame
        dropped += sum(1 for g in pending.values() if any(t in g for t in required))
        if dropped:
            log.warning("%s: %d stamps had incomplete camera sets and were skipped", self.path, dropped)

    def object_poses(self, topic: str = msgs.OBJECT_POSES_TOPIC) -> Iterator[tuple[int, list[ObjectPose]]]:
        """Ground-truth object poses: (header stamp [ns], poses) per message on ``topic``."""
        for _t, _mt, _s, msg in self.decoded([topic]):
            yield msgs.stamp_to_ns(msg.header), msgs.object_poses_from_msg(msg)

    def close(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            try:
                self._reader.close()
            except Exception as err:  # closing a reader must not hide the error that made us close it
                log.debug("closing %s: %s", self.path, err)

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------------------------
# Reindex


def reindex(path: str | Path) -> dict[str, Any]:
    """Rewrite a bag in place with a complete summary, index and metadata.yaml (what ``ros2 bag reindex`` does), so
    that every reader opens it: a bag whose writer was killed, whose file was cut short, or that lost metadata.yaml.

    Every message that can be read (see :class:`BagReader`: complete records of a damaged MCAP file) is written to a
    new bag of the same storage and compression, with the original message definitions and QoS profiles, next to the
    old one; only once it is complete and holds every message read does it replace the old storage file and
    metadata.yaml. Other files of the bag directory (rig_calibration.yaml) stay. Returns what was done (counts, bytes).
    """
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    with BagReader(path) as src:
        bag_dir, storage = src.bag_dir, src.storage
        if len(src.files) != 1:
            raise BagError(f"{src.path}: reindex handles single-file bags; this one has {len(src.files)} files")
        old_file = src.files[0]
        # A bag directory gets a new metadata.yaml, also when the path given is its storage file (named after the
        # directory by rosbag2 writers: <dir>.mcap, <dir>_0.mcap); a lone storage file elsewhere is replaced only.
        with_metadata = (src.path.is_dir() or src.path.name == "metadata.yaml" or (bag_dir / "metadata.yaml").exists()
                         or old_file.stem == bag_dir.name or old_file.stem.startswith(f"{bag_dir.name}_"))
        old_bytes = old_file.stat().st_size
        compression = _bag_compression(src)
        tmp_root = bag_dir / f".{old_file.stem}.reindex"
        if tmp_root.exists():
            shutil.rmtree(tmp_root)
        new_dir = tmp_root / old_file.stem  # the writer names its file after the directory: the old file's name
        try:
            tmp_root.mkdir()
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            writer = Writer(new_dir, version=9, storage_plugin=plugin)
            custom = getattr(getattr(src._reader, "metadata", None), "custom", None) or {}
            for k, v in custom.items():  # e.g. the vidyn version that wrote the bag
                writer.set_custom_data(str(k), str(v))
            if compression:
                writer.set_compression(CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE,
                                       CompressionFormat.ZSTD)
            writer.open()
            conns: dict[int, Any] = {}
            made: dict[tuple, Any] = {}
            for c in src._reader.connections:
                key = (c.topic, c.msgtype, repr(c.ext))  # one connection per topic, type and QoS, as rosbag2 has
                if key not in made:
                    made[key] = _copy_connection(writer, c)
                conns[c.id] = made[key]
            written = 0
            for conn, stamp, data in src._reader.messages(connections=list(src._reader.connections)):
                writer.write(conns[conn.id], int(stamp), data)
                written += 1
            writer.close()
        except OSError as err:
            shutil.rmtree(tmp_root, ignore_errors=True)
            raise OutputError(f"{bag_dir}: cannot write the reindexed bag ({err.strerror})") from None
        except Exception as err:
            shutil.rmtree(tmp_root, ignore_errors=True)
            raise BagError(f"{bag_dir}: cannot reindex ({_oneline(err)})") from None
        expected = src.message_count
        recovered = src.recovered
    if written != expected:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise BagError(f"{bag_dir}: reindex read {written} messages where the bag reported {expected}; left unchanged")
    (new_file,) = _storage_files(new_dir)
    # The new files are complete: now (and only now) replace the old ones.
    os.replace(new_file, old_file)
    if with_metadata:
        os.replace(new_dir / "metadata.yaml", bag_dir / "metadata.yaml")
    shutil.rmtree(tmp_root, ignore_errors=True)
    return {"path": str(bag_dir), "storage": storage, "messages": written, "recovered": recovered,
            "bytes_before": old_bytes, "bytes_after": old_file.stat().st_size, "file": old_file.name,
            "metadata": with_metadata, "compression": compression or "none"}


def _bag_compression(src: BagReader) -> str | None:
    """zstd when the bag's data was compressed (MCAP: its chunks; sqlite3: its messages), else None."""
    r = src._reader
    if isinstance(r, _McapSalvage):
        return "zstd" if r.chunk_compression == "zstd" else None
    if src.storage == "sqlite3":
        meta = getattr(r, "metadata", None)
        return "zstd" if getattr(meta, "compression_format", None) == "zstd" else None
    from mcap.reader import make_reader

    try:
        with open(src.files[0], "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception:  # no summary to tell: write uncompressed
        return None
    return "zstd" if summary is not None and any(c.compression == "zstd" for c in summary.chunk_indexes) else None


def _copy_connection(writer: Any, conn: Any) -> Any:
    """Add ``conn`` (a rosbags or salvaged connection) to ``writer`` with its definition, type hash and QoS."""
    msgdef = getattr(conn, "msgdef", None)
    data = getattr(msgdef, "data", "") or ""
    digest = getattr(conn, "digest", "") or ""
    if not data or not digest:
        try:  # types the bag did not define, or a hash only metadata.yaml had: from the type store
            gen, _ = msgs.TYPESTORE.generate_msgdef(conn.msgtype, ros_version=2)
            data = data or gen
            digest = digest or msgs.TYPESTORE.hash_rihs01(conn.msgtype)
        except Exception:
            raise BagError(f"topic {conn.topic}: no definition of {conn.msgtype} to write") from None
    ext = getattr(conn, "ext", None)
    return writer.add_connection(
        conn.topic, conn.msgtype, msgdef=data, rihs01=digest,
        serialization_format=getattr(ext, "serialization_format", "cdr") or "cdr",
        offered_qos_profiles=list(getattr(ext, "offered_qos_profiles", []) or []),
    )


# --------------------------------------------------------------------------------------------------------------------
# Summary


def bag_summary(path: str | Path, exact_rates: bool = True) -> dict[str, Any]:
    """Topics, types, counts, rates, duration, storage, size and time span of a bag (JSON-serialisable).

    With ``exact_rates`` each topic's rate is (count - 1) / (its last - its first stamp), which needs one pass over
    the bag's bytes (~1 s per GB); without it, rates use the whole bag's duration (metadata only)."""
    with BagReader(path) as r:
        calib = r.calibration() if (r.bag_dir / CALIBRATION_FILE).is_file() else None
        rates = {t: i.rate_hz for t, i in r.topics.items()}
        if exact_rates:
            for t, (first, last) in r.topic_spans().items():
                n = r.topics[t].count
                rates[t] = (n - 1) / ((last - first) / 1e9) if n > 1 and last > first else 0.0
        return {
            "path": str(r.path),
            "storage": r.storage,
            "size_bytes": r.size_bytes,
            "message_count": r.message_count,
            "start_ns": r.start_ns,
            "end_ns": r.end_ns,
            "duration_s": r.duration_s,
            "recovered": r.recovered,
            "recovered_note": r.recovered_note or ("no metadata.yaml: read from the storage file directly"
                                                   if r.recovered else ""),
            "cameras": r.camera_names(),
            "calibrated_cameras": sorted(calib) if calib else [],
            "topics": {
                t: {"type": i.msgtype, "count": i.count, "rate_hz": round(rates[t], 3)} for t, i in r.topics.items()
            },
        }


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _time_str(ns: int) -> str:
    import datetime as dt

    if ns < SIM_TIME_LIMIT_NS:  # sim time: seconds since the start of the simulation
        return f"{ns / 1e9:.3f} s (sim time)"
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def format_summary(summary: Mapping[str, Any]) -> str:
    """A bag summary as a plain-text table (what ``vidyn info`` prints)."""
    lines = [
        f"bag:       {summary['path']}" + ("  (recovered)" if summary.get("recovered") else ""),
        f"storage:   {summary['storage']}    size: {_human_size(summary['size_bytes'])}    "
        f"messages: {summary['message_count']}",
        f"duration:  {summary['duration_s']:.3f} s",
        f"start:     {_time_str(summary['start_ns'])}",
        f"end:       {_time_str(summary['end_ns'])}",
    ]
    if summary.get("recovered"):
        lines.insert(1, f"recovered: {summary.get('recovered_note') or 'read from the storage file directly'}")
    if summary["start_ns"] < SIM_TIME_LIMIT_NS <= summary["end_ns"]:
        # e.g. a recorder on wall time next to a graph on sim time: the duration above is meaningless
        lines.append("warning:   stamps mix sim time and wall time (a node or recorder without use_sim_time?)")
    if summary.get("cameras"):
        lines.append(f"cameras:   {', '.join(summary['cameras'])}"
                     + (f"    (calibration: {', '.join(summary['calibrated_cameras'])})"
                        if summary.get("calibrated_cameras") else "    (no rig_calibration.yaml)"))
    rows = [("topic", "type", "count", "rate Hz")]
    rows += [(t, i["type"], str(i["count"]), f"{i['rate_hz']:.2f}") for t, i in summary["topics"].items()]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines.append("")
    for n, r in enumerate(rows):
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}")
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
