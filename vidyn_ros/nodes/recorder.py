"""recorder node: subscribe to a list of topics (raw CDR bytes, no decoding) and write them to a rosbag2 bag (MCAP or
sqlite3).

Message types are given as ``topic:type`` or discovered from the graph; either way a topic is subscribed once a
publisher of it appears.
The subscription QoS follows the publishers (reliable if they all are, else best effort), as ``ros2 bag record`` does,
so a reliable recorder never silently fails to match a best-effort camera driver.
The bag is closed in ``close()``: ``vidyn launch``/``run_node`` call it on Ctrl-C and SIGTERM, so the bag stays
readable. On SIGKILL nothing can run: the MCAP file then lacks its summary section (see vidyn_ros/bags.py).

Log time of each message = its header stamp when it has one (``stamp_source: header``: bags of the simulated rig then
replay with sim timing), else the recorder clock at arrival. One bag, one time base: with ``time_base: auto`` the
recorder looks for a /clock publisher before recording (up to ``clock_wait_s`` after the first publisher of a topic
to record appears: a recorder started before the graph waits for it) and, when a simulated rig or a bag player drives
the graph, records in sim time (its own /diagnostics included). A header stamp of the other time base is replaced by
the message's arrival time (warned once per topic): wall time in a sim-time bag (a node without use_sim_time), and
sim time in a bag asked to be wall time (``time_base: wall``). Without /clock, ``auto`` keeps header stamps as they
are (a replay without --clock records with its original stamps).
"""

from __future__ import annotations

import shutil
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

from vidyn_ros.bags import SIM_TIME_LIMIT_NS
from vidyn_ros.errors import ConfigError, OutputError
from vidyn_ros.nodes import _ros

NODE_NAME = "recorder"

PARAMS = [
    _ros.Param("topics", [], "topics to record: '/topic' (type discovered) or '/topic:pkg/msg/Type'", kind="string"),
    _ros.Param("all", False, "record every topic that appears (except /rosout and /parameter_events)"),
    _ros.Param("output", "", "bag directory to create (must not exist unless overwrite)"),
    _ros.Param("storage", "mcap", "bag storage: mcap or sqlite3", choices=("mcap", "sqlite3")),
    _ros.Param("compression", "zstd", "bag compression: zstd (MCAP: zstd chunks; sqlite3: per message) or none; "
               "zstd is several-fold smaller at no measurable cost in the sim graph", choices=("zstd", "none")),
    _ros.Param("overwrite", False, "replace an existing bag directory"),
    _ros.Param("calibration", "", "rig calibration YAML copied into the bag (rig_calibration.yaml), at start or close"),
    _ros.Param("stamp_source", "header", "log time: 'header' (message header stamp when present) or 'receive'",
               choices=("header", "receive")),
    _ros.Param("discovery_period_s", 0.2, "how often to look for publishers of topics not yet subscribed",
               range="(0, 60]"),
    _ros.Param("flush_period_s", 2.0, "push buffered messages to disk this often, so a SIGKILL loses little (0 = off)",
               range="[0, 3600]"),
    _ros.Param("warn_missing_s", 5.0, "warn on /diagnostics when a topic still has no publisher after this long",
               range="[0, inf)", dynamic=True),
    _ros.Param("time_base", "auto", "bag time base: auto (sim time when a /clock publisher exists, else wall time), "
               "sim or wall", choices=("auto", "sim", "wall")),
    _ros.Param("clock_wait_s", 1.0, "time_base auto: look this long for a /clock publisher, counted from when the "
               "first publisher of a topic to record appears, before recording starts", range="[0, 60]"),
]

_SKIP_ALL = ("/rosout", "/parameter_events")
_STAMPED_FIRST = ("std_msgs/msg/Header", "builtin_interfaces/msg/Time")


def parse_topic_specs(items: Sequence[str]) -> dict[str, str | None]:
    """``["/a", "/b:sensor_msgs/msg/Image"]`` -> ``{"/a": None, "/b": "sensor_msgs/msg/Image"}``."""
    out: dict[str, str | None] = {}
    for item in items:
        topic, _, msgtype = item.partition(":")
        topic = topic.strip()
        if not topic:
            raise ConfigError(f"recorder: empty topic name in {item!r}")
        out[topic] = msgtype.strip() or None
    return out


def header_stamp_ns(cdr: bytes) -> int | None:
    """The stamp of a CDR message whose first field is a Header or a Time (sec int32, nanosec uint32), else None."""
    if len(cdr) < 12:
        return None
    endian = "<" if cdr[1] & 1 else ">"  # encapsulation id 0x0001 = CDR_LE, 0x0000 = CDR_BE
    sec, nsec = struct.unpack_from(endian + "iI", cdr, 4)
    return sec * 1_000_000_000 + nsec


def _starts_with_stamp(msgtype: str) -> bool:
    from vidyn_ros import msgs

    try:
        first = msgs.TYPESTORE.get_msgdef(msgtype).fields[0]
    except Exception:  # a type unknown to the typestore: fall back to receive time
        return False
    return first[1][0].name == "NAME" and first[1][1] in _STAMPED_FIRST


class Recorder(_ros.Node):
    """Writes the raw bytes of the subscribed topics to a bag; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        if not self.p.output:
            raise ConfigError("recorder: parameter 'output' (bag directory) is required")
        self.wanted = parse_topic_specs(self.p.topics)
        if not self.wanted and not self.p.all:
            raise ConfigError("recorder: no topics to record (set 'topics' or 'all: true')")
        calib = Path(self.p.calibration) if self.p.calibration else None
        if calib is not None and calib.suffix not in (".yaml", ".yml"):
            raise ConfigError(f"recorder: calibration {calib}: expected a .yaml file")

        from vidyn_ros.bags import BagWriter

        self.output = Path(self.p.output)
        # Open the bag now, so an unwritable or existing output fails before anything runs (OutputError, one line).
        self._writer = BagWriter(self.output, storage=self.p.storage, overwrite=self.p.overwrite,
                                 compression=self.p.compression)
        try:
            self._start(calib)
        except BaseException:
            self._writer.close()  # a node that failed to start leaves an empty, readable bag, not a broken one
            raise

    def _start(self, calib: Path | None) -> None:
        self._calibration = calib
        self._calibration_written = False
        self._maybe_copy_calibration()

        self._lock = threading.Lock()
        self._closed = False
        self.counts: dict[str, int] = {}
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self._subs: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self._stamped: dict[str, bool] = {}
        self._t_start = time.monotonic()
        self._t_graph: float | None = None  # when a publisher of a topic to record was first seen (time_base auto)
        self._restamped: set[str] = set()  # topics whose header stamps were of the other time base (warned once)
        self._clock_late_warned = False
        if self.p.time_base != "auto":
            self._set_sim_time(self.p.time_base == "sim")
        self.sim_time = bool(self.get_parameter("use_sim_time").value)
        self.diag = _ros.DiagnosticsPublisher(self)
        self.done = False
        self._discover()
        # Discovery and flushing run on the steady clock: with use_sim_time a paused /clock (a rig in lockstep with a
        # consumer that is initialising, a paused player) would stop sim-time timers, and topics appearing then
        # would be subscribed only once sim time moves again, losing their first messages.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._timer = self.create_timer(self.p.discovery_period_s, self._discover, clock=steady)
        if self.p.flush_period_s > 0:
            self._flush_timer = self.create_timer(self.p.flush_period_s, self._flush, clock=steady)
        self.get_logger().info(f"recording to {self.output} ({self.p.storage}, compression {self.p.compression})")

    # --------------------------------------------------------------------------------------------------- discovery
    def _set_sim_time(self, on: bool) -> None:
        from rclpy.parameter import Parameter

        self.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, on)])
        self.sim_time = on

    def _settle_time_base(self, targets: dict[str, str | None]) -> bool:
        """time_base auto: one time base for the whole bag. A graph driven by /clock (a simulated rig, a bag player
        with clock) stamps its messages with sim time, so the recorder follows /clock too: its own /diagnostics and
        the log time of unstamped messages are then sim time, not wall time beside sim time. Returns False while it
        is still looking for a /clock publisher: until ``clock_wait_s`` after a publisher of one of ``targets`` (other
        than this node) appeared, so that a recorder started before the graph, or discovering it slowly on a busy
        machine, does not settle on wall time first. Nothing is recorded until the time base is known."""
        if self.p.time_base != "auto" or self.sim_time:
            return True
        if self.count_publishers(self.resolve_topic_name("/clock")) > 0:
            if not self.counts:
                self._set_sim_time(True)
                self.get_logger().info("a /clock publisher drives this graph: recording in sim time")
            elif not self._clock_late_warned:
                self._clock_late_warned = True
                self.diag.warn("a /clock publisher appeared after recording started in wall time: the bag stays in "
                               "wall time, sim-stamped messages logged at their arrival (set time_base: sim)")
            return True
        if self._t_graph is None and self._has_publisher(targets):
            self._t_graph = time.monotonic()
        return self._t_graph is not None and time.monotonic() - self._t_graph >= self.p.clock_wait_s

    def _has_publisher(self, targets: dict[str, str | None]) -> bool:
        """Whether a node other than this one publishes one of ``targets``."""
        me = (self.get_name(), self.get_namespace())
        return any((info.node_name, info.node_namespace) != me
                   for topic in targets for info in self.get_publishers_info_by_topic(self.resolve_topic_name(topic)))

    def _discover(self) -> None:
        """Subscribe to every wanted topic whose type is known (given, or seen in the graph)."""
        graph = {name: types for name, types in self.get_topic_names_and_types()}
        targets = dict(self.wanted)
        if self.p.all:
            for name in graph:
                if name not in targets and not name.startswith(_SKIP_ALL):
                    targets[name] = None
        settled = self._settle_time_base(targets)
        for topic, given in targets.items() if settled else ():
            resolved = self.resolve_topic_name(topic)
            if resolved in self._subs:
                continue
            # Wait for a publisher also when the type is given: the subscription's QoS follows the publishers', and
            # subscribing before any exists would pick best effort and silently drop a reliable stream's bursts.
            if resolved not in graph or self.count_publishers(resolved) == 0:  # a topic may have subscribers only
                continue
            self._subscribe(resolved, given or graph[resolved][0])
        missing = [t for t in self.wanted if self.resolve_topic_name(t) not in self._subs]
        waited_s = time.monotonic() - self._t_start
        if missing and waited_s > self.p.warn_missing_s:
            self.diag.warn(f"no publisher yet for {', '.join(missing)}", recorded=sum(self.counts.values()))
        elif not settled:
            self.diag.ok("looking for /clock before recording")
        else:
            self.diag.ok(f"recording {len(self._subs)} topics", recorded=sum(self.counts.values()))

    def _qos_for(self, topic: str) -> Any:
        infos = self.get_publishers_info_by_topic(topic)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        if latched:
            return _ros.latched_qos(depth=10)
        # Deep queues: the writer keeps up easily, but bursts of 4 cameras x 4 topics arrive at once.
        return _ros.reliable_qos(depth=100) if reliable else _ros.sensor_qos(depth=100)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        cls = _ros.msg_class(msgtype)
        self._types[topic] = msgtype
        self._stamped[topic] = self.p.stamp_source == "header" and _starts_with_stamp(msgtype)
        self._subs[topic] = self.create_subscription(
            cls, topic, lambda raw, t=topic: self._on_message(t, raw), self._qos_for(topic), raw=True
        )
        self.get_logger().debug(f"recording {topic} [{msgtype}]")

    # ------------------------------------------------------------------------------------------------------- write
    def _on_message(self, topic: str, raw: bytes) -> None:
        stamp = header_stamp_ns(raw) if self._stamped[topic] else None
        if (stamp is not None and stamp > 0 and (stamp < SIM_TIME_LIMIT_NS) != self.sim_time
                and (self.sim_time or self.p.time_base == "wall")):
            # A stamp of the other time base (wall time from a node without use_sim_time in a sim-time bag, sim time
            # in a bag asked to be wall time): log it at its arrival, so the bag keeps one time base.
            if topic not in self._restamped:
                self._restamped.add(topic)
                have, base = ("wall", "sim") if self.sim_time else ("sim", "wall")
                self.get_logger().warning(f"{topic}: header stamps are {have} time in a {base}-time bag; logged at "
                                          f"their arrival in {base} time")
            stamp = None
        if stamp is None or stamp <= 0:
            stamp = _ros.now_ns(self)
        with self._lock:
            if self._closed:
                return
            self._writer.write(topic, self._types[topic], bytes(raw), stamp)
            self.counts[topic] = self.counts.get(topic, 0) + 1
            self.first_ns = stamp if self.first_ns is None else min(self.first_ns, stamp)
            self.last_ns = stamp if self.last_ns is None else max(self.last_ns, stamp)

    def _flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._writer.flush()

    def _maybe_copy_calibration(self) -> None:
        """Copy at start (if the file exists already) and again at close: the simulated rig writes it when it starts,
        possibly after the recorder, and a file left from an earlier run must not win."""
        if self._calibration is None or not self._calibration.is_file():
            return
        try:
            shutil.copyfile(self._calibration, self.output / "rig_calibration.yaml")
        except OSError as err:
            raise OutputError(f"recorder: cannot copy calibration {self._calibration} into the bag "
                              f"({err.strerror})") from None
        self._calibration_written = True

    def summary(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "counts": dict(sorted(self.counts.items())),
            "types": dict(sorted(self._types.items())),
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }

    def close(self) -> None:
        """Close the bag (idempotent). Called on shutdown, also after SIGINT/SIGTERM."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sub in self._subs.values():
            self.destroy_subscription(sub)
        self._writer.close()
        try:
            self._maybe_copy_calibration()
        except OutputError as err:
            self.get_logger().warning(str(err))
        if self._calibration is not None and not self._calibration_written:
            self.get_logger().warning(f"calibration {self._calibration} not found: bag has no rig_calibration.yaml")
        n = sum(self.counts.values())
        self.get_logger().info(f"closed bag {self.output}: {n} messages on {len(self.counts)} topics")


def create_node(**node_kwargs: Any) -> Recorder:
    return Recorder(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
