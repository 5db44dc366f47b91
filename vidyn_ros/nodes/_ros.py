"""Shared rclpy utilities for every vidyn node (the only package besides the nodes that touches rclpy).

What lives here and why:

- ``Param`` tables + ``declare_params``: each node declares its parameters in ONE table with descriptions; the same
  table generates the parameter reference in docs (``param_table_markdown``) and the launch arguments.
- ``msg_class``: the rclpy message class for a rosbags type name (``"sensor_msgs/msg/Image"``), imported lazily.
- ``publish_cdr``: serialise a rosbags-typestore message with ``vidyn_ros.msgs`` and publish the CDR bytes, so the
  conversion layer stays ROS-free and bags and DDS carry identical bytes.
- QoS presets (``sensor_qos``, ``reliable_qos``, ``latched_qos``).
- ``run_node`` / ``spin_nodes``: the ``main()`` shape every node uses (rclpy.init, MultiThreadedExecutor, clean
  shutdown on SIGINT/SIGTERM/ExternalShutdownException, VidynError printed as one line with exit code 2).
- Node module convention: ``PARAMS`` (Param table), ``create_node(**node_kwargs) -> Node`` where node_kwargs are
  rclpy ``Node`` keyword arguments (node_name, namespace, parameter_overrides, cli_args, context), and
  ``main(args=None) -> int`` returning ``run_node(create_node, args)``. ``vidyn launch`` builds nodes the same way.
- ``DiagnosticsPublisher``: rate-limited /diagnostics status per node.
- ``DropOldestQueue`` + ``Worker``: callbacks only enqueue; heavy work runs on a worker thread.
- ``setup_fastdds_env``: point Fast DDS at the shipped shared-memory profile before rclpy.init (large images at rate).
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vidyn_ros.errors import ConfigError, VidynError

log = logging.getLogger(__name__)

FASTDDS_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


# --------------------------------------------------------------------------------------------------------------- params
@dataclass(frozen=True)
class Param:
    """One node parameter: name, default (its type fixes the ROS parameter type), one-line description.

    ``default=None`` is not allowed by ROS typing; use ``""`` / ``[]`` sentinels. Lists must be homogeneous; an empty
    list needs ``kind`` ("string", "double", "integer", "bool") so ROS knows the array type.
    """

    name: str
    default: Any
    description: str
    kind: str | None = None  # element type for empty lists
    read_only: bool = False


_ARRAY_TYPES = {
    "string": Parameter.Type.STRING_ARRAY,
    "double": Parameter.Type.DOUBLE_ARRAY,
    "integer": Parameter.Type.INTEGER_ARRAY,
    "bool": Parameter.Type.BOOL_ARRAY,
}


def _param_type(p: Param) -> Parameter.Type:
    d = p.default
    if isinstance(d, list | tuple) and len(d) == 0:
        if p.kind not in _ARRAY_TYPES:
            raise ValueError(f"parameter {p.name!r}: empty list default needs kind= one of {sorted(_ARRAY_TYPES)}")
        return _ARRAY_TYPES[p.kind]
    return Parameter.Type.from_parameter_value(list(d) if isinstance(d, tuple) else d)


def declare_params(node: Node, table: Sequence[Param]) -> SimpleNamespace:
    """Declare every parameter of ``table`` on ``node`` and return their current values as attributes.

    Values set by overrides (``--ros-args -p``, launch files, ``vidyn launch --set``) win over defaults. An integer
    given where a float is declared is accepted (YAML ``1`` vs ``1.0``); other type mismatches raise ConfigError
    naming the node and parameter (one line) instead of rclpy's multi-line exception.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    out = SimpleNamespace()
    overrides = node._parameter_overrides  # private, but the only way to coerce int->float early
    for p in table:
        ptype = _param_type(p)
        if p.name in overrides:
            ov = overrides[p.name]
            if ptype == Parameter.Type.DOUBLE and ov.type_ == Parameter.Type.INTEGER:
                overrides[p.name] = Parameter(p.name, Parameter.Type.DOUBLE, float(ov.value))
            elif ptype == Parameter.Type.DOUBLE_ARRAY and ov.type_ == Parameter.Type.INTEGER_ARRAY:
                overrides[p.name] = Parameter(p.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in ov.value])
        desc = ParameterDescriptor(description=p.description, read_only=p.read_only, dynamic_typing=False)
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        try:
            if isinstance(default, list) and len(default) == 0:
                value = node.declare_parameter(p.name, ptype, desc).value
                if value is None:
                    value = []
            else:
                value = node.declare_parameter(p.name, default, desc).value
        except Exception as err:  # InvalidParameterTypeException etc.: make it one line
            raise ConfigError(f"{node.get_name()}: parameter {p.name!r}: {str(err).splitlines()[0]}") from err
        setattr(out, p.name, list(value) if isinstance(value, tuple | list) else value)
    return out


def param_table_markdown(table: Sequence[Param], title: str | None = None, summary: str = "") -> str:
    """Markdown table of a node's parameters (docs/nodes.md is generated from these)."""
    lines = [f"## {title}", ""] if title else []
    if summary:
        lines += [summary, ""]
    lines += ["| parameter | default | description |", "| --- | --- | --- |"]
    for p in table:
        # A '|' inside a cell would end it: escape it (GitHub markdown renders ``\|`` as '|').
        default, desc = repr(p.default).replace("|", "\\|"), p.description.replace("|", "\\|")
        lines.append(f"| `{p.name}` | `{default}` | {desc} |")
    return "\n".join(lines) + "\n"


def node_modules() -> list[Any]:
    """Every node module in vidyn_ros/nodes/ (not ``_*``) that declares a ``PARAMS`` table, sorted by name."""
    import pkgutil

    import vidyn_ros.nodes as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    mods = [importlib.import_module(f"{pkg.__name__}.{n}") for n in names]
    return [m for m in mods if hasattr(m, "PARAMS")]


NODES_DOC_COMMAND = "python -m vidyn_ros.nodes._ros > docs/nodes.md"


def nodes_reference_markdown() -> str:
    """docs/nodes.md: one parameter table per node module, generated from the modules' ``PARAMS`` tables."""
    parts = [
        "# Node parameters\n",
        f"Generated from each node's `PARAMS` table by `{NODES_DOC_COMMAND}`; do not edit by hand "
        "(test/test_graph.py checks that it is current). Set parameters with `--ros-args -p NAME:=VALUE`, in a graph "
        "YAML (`parameters:`), or with `vidyn launch GRAPH --set NODE.PARAM=VALUE`.\n",
    ]
    for mod in node_modules():
        summary = (mod.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        parts.append(param_table_markdown(mod.PARAMS, getattr(mod, "NODE_NAME", mod.__name__.rpartition(".")[2]),
                                          summary))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------------------- messages
def msg_class(msgtype: str) -> type:
    """rclpy message class for a type name like ``sensor_msgs/msg/Image`` (also accepts ``sensor_msgs/Image``).

    Raises VidynError (one line) when the interface package is not installed.
    """
    parts = msgtype.strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise VidynError(f"malformed message type {msgtype!r} (expected pkg/msg/Name)")
    pkg, sub, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as err:
        raise VidynError(f"message type {msgtype!r} is not available in this ROS installation") from err


def publish_cdr(publisher: Any, msg: Any, msgtype: str) -> bytes:
    """Serialise a rosbags-typestore ``msg`` to CDR with vidyn_ros.msgs and publish the bytes. Returns the bytes.

    ``msg`` may already be bytes (e.g. from a bag), then it is published unchanged.
    """
    if isinstance(msg, bytes | bytearray | memoryview):
        raw = bytes(msg)
    else:
        from vidyn_ros import msgs

        raw = msgs.serialize(msg, msgtype)
    publisher.publish(raw)
    return raw


def now_ns(node: Node) -> int:
    """The node's clock (sim time when use_sim_time is true) in nanoseconds."""
    return node.get_clock().now().nanoseconds


# ------------------------------------------------------------------------------------------------------------------ QoS
def _keep_last(depth: int, reliability: ReliabilityPolicy,
               durability: DurabilityPolicy = DurabilityPolicy.VOLATILE) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)


def sensor_qos(depth: int = 5) -> QoSProfile:
    """Camera streams: best effort, keep last few (a late frame is worthless; never block the publisher)."""
    return _keep_last(depth, ReliabilityPolicy.BEST_EFFORT)


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Commands, recorder inputs, ground truth: reliable, keep last ``depth``."""
    return _keep_last(depth, ReliabilityPolicy.RELIABLE)


def latched_qos(depth: int = 1) -> QoSProfile:
    """Rarely changing data (calibration, goals): reliable + transient local so late joiners get the last value."""
    return _keep_last(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)


def qos_by_name(name: str, depth: int | None = None) -> QoSProfile:
    """``"sensor"`` / ``"reliable"`` / ``"latched"`` -> profile (for a ``qos`` node parameter)."""
    presets = {"sensor": sensor_qos, "reliable": reliable_qos, "latched": latched_qos}
    if name not in presets:
        raise ConfigError(f"unknown qos {name!r} (choose from {', '.join(presets)})")
    return presets[name]() if depth is None else presets[name](depth)


# ------------------------------------------------------------------------------------------------------ node options
def remap_args(remappings: dict[str, str] | None) -> list[str]:
    """``{"/a": "/b"}`` -> ``["--ros-args", "-r", "/a:=/b"]`` for ``Node(..., cli_args=...)``."""
    out: list[str] = []
    for src, dst in (remappings or {}).items():
        out += ["-r", f"{src}:={dst}"]
    return ["--ros-args", *out] if out else []


def parameter_overrides(values: dict[str, Any] | None) -> list[Parameter]:
    """``{"fps": 30}`` -> ``[Parameter("fps", value=30)]`` for ``Node(..., parameter_overrides=...)``."""
    # An empty list has no ROS array type: leave it out (the table's default, an empty list, applies).
    return [Parameter(k, value=list(v) if isinstance(v, tuple) else v) for k, v in (values or {}).items()
            if not (isinstance(v, list | tuple) and len(v) == 0)]


# ---------------------------------------------------------------------------------------------------------- diagnostics
DIAG_OK, DIAG_WARN, DIAG_ERROR, DIAG_STALE = 0, 1, 2, 3


class DiagnosticsPublisher:
    """Publishes one DiagnosticStatus per node on /diagnostics at most every ``period_s`` (plus immediately on a
    level change), and logs warnings/errors once per change so the log is not flooded.

    Usage: ``self.diag = DiagnosticsPublisher(self)``; ``self.diag.update(DIAG_OK, "publishing", fps=29.8)``.
    """

    def __init__(self, node: Node, name: str | None = None, period_s: float = 1.0, hardware_id: str = "") -> None:
        self.node = node
        self.name = name or node.get_fully_qualified_name()
        self.period_s = period_s
        self.hardware_id = hardware_id
        self._pub = node.create_publisher(msg_class("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", 10)
        self._last_t = 0.0
        self._last_level: int | None = None
        self._last_msg = ""
        self._lock = threading.Lock()

    def update(self, level: int, message: str, force: bool = False, **values: Any) -> None:
        now = time.monotonic()
        with self._lock:
            changed = level != self._last_level or (level != DIAG_OK and message != self._last_msg)
            if changed and level == DIAG_WARN:
                self.node.get_logger().warning(message)
            elif changed and level >= DIAG_ERROR:
                self.node.get_logger().error(message)
            if not (force or changed or now - self._last_t >= self.period_s):
                return
            self._last_t, self._last_level, self._last_msg = now, level, message
        from vidyn_ros import msgs

        status = {
            "name": self.name,
            "level": level,
            "message": message,
            "hardware_id": self.hardware_id,
            "values": {k: str(v) for k, v in values.items()},
        }
        try:
            msg = msgs.diagnostic_array_msg([status], now_ns(self.node))
            publish_cdr(self._pub, msg, "diagnostic_msgs/msg/DiagnosticArray")
        except Exception as err:  # diagnostics must never take a node down (e.g. during shutdown)
            log.debug("diagnostics publish failed: %s", err)

    def ok(self, message: str, **values: Any) -> None:
        self.update(DIAG_OK, message, **values)

    def warn(self, message: str, **values: Any) -> None:
        self.update(DIAG_WARN, message, **values)

    def error(self, message: str, **values: Any) -> None:
        self.update(DIAG_ERROR, message, **values)


def rig_camera_poses(
    diag: DiagnosticsPublisher, who: str, cameras: Sequence[str], calibration: str, scenario: str
) -> dict[str, Any] | None:
    """Camera-to-world 4x4 pose of each of ``cameras`` for a node that needs the rig geometry: from the rig
    calibration YAML, else from a simulated-rig scenario's cameras (no MuJoCo: the scenario's poses are the rig's).

    Returns None, with a warning on ``diag``, while the calibration file does not exist yet (the sim rig writes it when
    it starts: retry later). ConfigError when neither source is set or a camera has no pose.
    """
    if calibration and Path(calibration).is_file():
        from vidyn_ros.rig.calibration_io import load_rig_calibration

        poses = dict(load_rig_calibration(calibration))
    elif calibration and not scenario:
        diag.warn(f"waiting for calibration file {calibration}")
        return None
    elif scenario:
        from vidyn_ros.rig.scenario import load_scenario

        poses = {c.name: c.T_world_cam for c in load_scenario(scenario).cameras}
    else:
        raise ConfigError(f"{who}: set parameter 'calibration' (rig calibration YAML) or 'scenario' (camera poses)")
    missing = [c for c in cameras if c not in poses]
    if missing:
        raise ConfigError(f"{who}: no pose for camera(s) {missing} (have {sorted(poses)})")
    return {c: poses[c] for c in cameras}


class SyncedInput:
    """Raw subscriptions to every topic of a TopicSynchronizer (vidyn_ros.rig.sync): each complete MultiViewFrame goes
    to ``on_frame`` (typically ``Worker.submit``, so the heavy work stays off the callback thread). A malformed message
    is a warning on ``diag``, never a crash. Shared by the nodes that consume synchronised camera sets.

    Attributes:
        last_msg_t: topic -> monotonic arrival time of its last message (names the silent topics when stale).
        last_frame_t: monotonic time of the last complete set (initially ``since``).
    """

    def __init__(self, node: Node, sync: Any, on_frame: Callable[[Any], Any], diag: DiagnosticsPublisher,
                 since: float, depth: int = 10) -> None:
        self.sync = sync
        self._on_frame = on_frame
        self._diag = diag
        self._lock = threading.Lock()
        self.last_msg_t: dict[str, float] = {}
        self.last_frame_t = since
        qos = sensor_qos(depth)  # best effort matches reliable and best-effort camera drivers alike
        self.subscriptions = [
            node.create_subscription(msg_class(m), t, lambda raw, t=t, m=m: self._on_message(t, m, raw), qos, raw=True)
            for t, m in sync.topics().items()
        ]

    def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
        self.last_msg_t[topic] = time.monotonic()
        try:
            with self._lock:
                frames = self.sync.add_message(topic, msgtype, bytes(raw))
        except Exception as err:  # a malformed message must not kill the node
            self._diag.warn(f"bad message on {topic}: {err}")
            return
        for f in frames:
            self.last_frame_t = time.monotonic()
            self._on_frame(f)

    def silent_topics(self, older_than_s: float) -> list[str]:
        now = time.monotonic()
        return [t for t in self.sync.topics() if now - self.last_msg_t.get(t, -1e9) > older_than_s]


class RateMeter:
    """Counts events and reports the rate over a sliding window (for diagnostics and summaries)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._t: collections.deque[float] = collections.deque()
        self.count = 0

    def tick(self, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
        self._t.append(t)
        self.count += 1
        while self._t and t - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self) -> float:
        if len(self._t) < 2:
            return 0.0
        dt = self._t[-1] - self._t[0]
        return (len(self._t) - 1) / dt if dt > 0 else 0.0


# --------------------------------------------------------------------------------------------------- queue and worker
class DropOldestQueue:
    """Bounded FIFO: ``put`` never blocks; when full, the oldest item is dropped (and counted).

    Callbacks put; a worker gets. For camera data the newest frame is what matters.
    """

    def __init__(self, maxsize: int = 2) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._q: collections.deque = collections.deque(maxlen=maxsize)
        self._cv = threading.Condition()
        self.dropped = 0
        self._closed = False

    def put(self, item: Any) -> None:
        with self._cv:
            if len(self._q) == self._q.maxlen:
                self.dropped += 1
            self._q.append(item)
            self._cv.notify()

    def get(self, timeout: float | None = None) -> Any:
        """Oldest item, or None on timeout / after close()."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._q or self._closed, timeout=timeout):
                return None
            return self._q.popleft() if self._q else None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        return len(self._q)


class Worker:
    """A daemon thread calling ``fn(item)`` for every item from a DropOldestQueue, until ``stop()``.

    Exceptions from ``fn`` are passed to ``on_error(exc)`` (default: log one line) and the worker keeps going, so one
    bad frame does not kill a node.
    """

    def __init__(
        self,
        fn: Callable[[Any], None],
        maxsize: int = 2,
        name: str = "vidyn-worker",
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.queue = DropOldestQueue(maxsize)
        self._fn = fn
        self._on_error = on_error or (lambda e: log.warning("%s: %s: %s", name, type(e).__name__, e))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        self.queue.put(item)

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.2)
            if item is None:
                continue
            try:
                self._fn(item)
            except Exception as err:
                self._on_error(err)

    def stop(self, timeout: float = 120.0) -> None:
        """Take no new items and wait for the one in progress. The wait is long on purpose: a daemon thread still
        inside native code (torch, OpenGL) when the interpreter exits aborts the process ("terminate called
        without an active exception"), which is worse than a slow shutdown."""
        self._stop.set()
        self.queue.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: still busy after %.0f s; leaving it behind", self._thread.name, timeout)


def spinning_event(node: Node) -> threading.Event:
    """An Event set when an executor first runs one of ``node``'s callbacks, i.e. when the node is being spun.

    Producers that run on their own thread (the simulated rig, the bag player) wait for it before their start delay:
    a node is built long before it spins when later nodes of a graph take seconds to build (the scene node loads
    torch), and frames published before then are lost to subscribers that do not exist yet. The timer runs on the
    steady clock: with use_sim_time a ROS-time timer would wait for the /clock that the rig itself publishes.
    """
    from rclpy.clock import Clock, ClockType

    event = threading.Event()
    timer: Any = None

    def fire() -> None:
        event.set()
        timer.cancel()

    timer = node.create_timer(0.01, fire, clock=Clock(clock_type=ClockType.STEADY_TIME))
    return event


def wait_for(event: threading.Event, stop: threading.Event, poll_s: float = 0.05) -> bool:
    """Wait until ``event`` is set; False if ``stop`` is set first."""
    while not event.wait(poll_s):
        if stop.is_set():
            return False
    return not stop.is_set()


class LoopThread:
    """A daemon thread running ``fn()`` repeatedly until ``stop()``; ``fn`` returns False to end the loop.

    For producers that pace themselves (the simulated rig, the bag player) and must not block the executor.
    """

    def __init__(self, fn: Callable[[], bool | None], name: str = "vidyn-loop",
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._fn = fn
        self._on_error = on_error
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> LoopThread:
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self.stop_event.is_set():
                if self._fn() is False:
                    break
        except Exception as err:
            if self._on_error is None:
                raise
            self._on_error(err)
        finally:
            self.finished.set()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout)


# --------------------------------------------------------------------------------------------------------- Fast DDS env
def fastdds_profile_path() -> Path:
    """The shipped shared-memory Fast DDS profile (config/fastdds_shm.xml)."""
    from vidyn_ros.paths import config_dir

    return config_dir() / "fastdds_shm.xml"


def setup_fastdds_env(force: bool = False) -> str | None:
    """Point FASTDDS_DEFAULT_PROFILES_FILE at config/fastdds_shm.xml unless the user set it. Must run before rclpy.init.

    Why: with Fast DDS's default transport, large images at high rate across processes failed to publish; the SHM
    profile reached ~300 Hz with 1-3 ms latency. Returns the value in effect (None if the profile is missing).
    Setting ``VIDYN_NO_SHM=1`` keeps Fast DDS defaults.
    """
    if os.environ.get("VIDYN_NO_SHM") == "1":
        return os.environ.get(FASTDDS_ENV)
    if FASTDDS_ENV in os.environ and not force:
        return os.environ[FASTDDS_ENV]
    path = fastdds_profile_path()
    if not path.is_file():
        return os.environ.get(FASTDDS_ENV)
    os.environ[FASTDDS_ENV] = str(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------------- lifecycle
class Shutdown:
    """SIGINT/SIGTERM -> a threading.Event (installed instead of rclpy's handlers, so nodes can finish cleanly:
    the recorder closes its bag, players stop their threads) before the context is shut down."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> Shutdown:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        self.event.set()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def init_rclpy(args: Sequence[str] | None = None, context: Any = None, domain_id: int | None = None) -> Any:
    """rclpy.init with the SHM profile and without rclpy's own signal handlers (we install ``Shutdown``)."""
    from rclpy.signals import SignalHandlerOptions

    setup_fastdds_env()
    kwargs: dict[str, Any] = {"args": list(args) if args is not None else None, "context": context,
                              "signal_handler_options": SignalHandlerOptions.NO}
    if domain_id is not None:
        kwargs["domain_id"] = domain_id
    rclpy.init(**kwargs)
    return context


def spin_nodes(
    nodes: Iterable[Node],
    context: Any = None,
    duration_s: float | None = None,
    until: Callable[[], bool] | None = None,
    shutdown: Shutdown | None = None,
    num_threads: int | None = None,
    drain_s: float = 0.3,
) -> str:
    """Spin ``nodes`` in one MultiThreadedExecutor until a signal, ``duration_s`` of wall time, or ``until()`` is true.

    After ``until()`` first becomes true (a node finished), spinning goes on for ``drain_s`` so that messages still in
    flight (the last frame a rig published, the tail of a bag) reach their subscribers before anything is closed.
    Returns why it stopped: "signal", "duration", "done" or "external". Nodes are NOT destroyed here (the caller does
    that, after calling each node's ``close()`` if it has one).
    """
    nodes = list(nodes)
    executor = MultiThreadedExecutor(num_threads=num_threads or max(4, 2 * len(nodes)), context=context)
    for n in nodes:
        executor.add_node(n)
    t_end = None if duration_s is None else time.monotonic() + duration_s
    reason = "external"
    t_done: float | None = None
    try:
        while rclpy.ok(context=context):
            executor.spin_once(timeout_sec=0.05)
            if shutdown is not None and shutdown.event.is_set():
                reason = "signal"
                break
            if t_end is not None and time.monotonic() >= t_end:
                reason = "duration"
                break
            if t_done is None and until is not None and until():
                t_done = time.monotonic() + drain_s
            if t_done is not None and time.monotonic() >= t_done:
                reason = "done"
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        reason = "signal"
    finally:
        # Let callbacks already handed to the thread pool finish first: rclpy's shutdown destroys its guard
        # condition without waiting for them (the in-flight handler then fails, and its message is lost).
        futures = list(getattr(executor, "_futures", []))
        t_wait = time.monotonic() + 2.0
        while any(not f.done() for f in futures) and time.monotonic() < t_wait:
            time.sleep(0.005)
        for n in nodes:
            executor.remove_node(n)
        executor.shutdown(timeout_sec=2.0)
        for fut in futures:
            # A callback that failed in the last spin is re-raised nowhere else: report it, don't lose it.
            exc = fut.exception() if fut.done() else None
            if exc is not None:
                log.warning("callback failed during shutdown: %s: %s", type(exc).__name__, exc)
    return reason


def close_nodes(nodes: Iterable[Node], before_destroy: Callable[[list[Node]], None] | None = None) -> None:
    """Call ``close()`` (stop threads, flush files) on every node, then ``before_destroy(nodes)`` (e.g. collect
    summaries: a destroyed node cannot even report its name), then ``destroy_node()``. Never raises for close errors.
    """
    nodes = list(nodes)
    for n in nodes:
        try:
            if hasattr(n, "close"):
                n.close()
        except Exception as err:
            log.warning("%s: close failed: %s", n.get_name(), err)
    if before_destroy is not None:
        before_destroy(nodes)
    for n in nodes:
        try:
            n.destroy_node()
        except Exception as err:
            log.debug("%s: destroy failed: %s", n.get_name(), err)


def run_node(node_factory: Callable[[], Node], args: Sequence[str] | None = None, done_attr: str = "done") -> int:
    """``main()`` for a node (``node_factory`` is usually the module's ``create_node``): init rclpy (SHM profile),
    build the node, spin until Ctrl-C/SIGTERM or the node says it is done
    (``node.done`` true, e.g. a bag player without loop), close the node, shut down. Returns an exit code.

    A VidynError while building or running the node (bad parameter, missing bag) is printed as ONE line on stderr and
    the code is 2; no traceback.
    """
    argv = list(sys.argv if args is None else args)
    # The module's NODE_NAME (its __name__ is "__main__" under python -m), else the module's last component.
    mod = sys.modules.get(getattr(node_factory, "__module__", ""), None)
    name = getattr(mod, "NODE_NAME", None) or getattr(node_factory, "__module__", "node").rpartition(".")[2]

    def fail(text: str) -> int:
        text = text.removeprefix(f"{name}: ")  # node messages already name the node for `vidyn launch`
        print(f"{name}: error: {text}", file=sys.stderr)
        return 2

    shutdown = Shutdown().install()
    try:
        init_rclpy(argv)
    except Exception as err:  # RCLError for malformed --ros-args: rcl's message, without its source location
        shutdown.restore()
        return fail(f"cannot start ROS: {str(err).splitlines()[0].split(', at /')[0]}")
    node = None
    code = 0
    try:
        node = node_factory()
        spin_nodes([node], shutdown=shutdown, until=lambda: bool(getattr(node, done_attr, False)))
        if getattr(node, "fatal", None):
            code = fail(str(node.fatal))
    except VidynError as err:
        code = fail(str(err))
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    finally:
        if node is not None:
            close_nodes([node])
        shutdown.restore()
        rclpy.try_shutdown()
    return code


@dataclass
class NodeOptions:
    """Keyword arguments common to vidyn node constructors (so ``vidyn launch`` can build any node the same way)."""

    name: str | None = None
    namespace: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)
    context: Any = None

    def node_kwargs(self, default_name: str) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "node_name": self.name or default_name,
            "parameter_overrides": parameter_overrides(self.parameters),
            "cli_args": remap_args(self.remappings) or None,
            "context": self.context,
        }
        if self.namespace:
            kw["namespace"] = self.namespace
        return kw


if __name__ == "__main__":  # regenerates docs/nodes.md: see NODES_DOC_COMMAND
    print(nodes_reference_markdown(), end="")
