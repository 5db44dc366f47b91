"""The runtime every vidyn node process shares: Fast DDS set-up, rclpy init without rclpy's signal handlers, the
executor, clean shutdown on SIGINT/SIGTERM, and the ``main()`` shape of a node.

- Node module convention: ``PARAMS`` (Param table), ``create_node(**node_kwargs) -> Node`` where node_kwargs are
  rclpy ``Node`` keyword arguments (node_name, namespace, parameter_overrides, cli_args, context), and
  ``main(args=None) -> int`` returning ``run_node(create_node, args)``. ``vidyn launch`` builds nodes the same way
  (``NodeOptions``) and spins them together with ``spin_nodes``.
- ``setup_fastdds_env``: point Fast DDS at the shipped shared-memory profile before rclpy.init (large images at rate).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ExternalShutdownException,
    ShutdownException,
    TimeoutException,
)
from rclpy.node import Node
from rclpy.subscription import Subscription

from vidyn_ros.errors import VidynError
from vidyn_ros.nodes._params import check_qos_overrides, parameter_overrides
from vidyn_ros.workers import exit_process, leave_behind

log = logging.getLogger(__name__)

FASTDDS_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


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
STOP_WITHIN_S = 2.0  # a node process ends this long after SIGINT/SIGTERM at the latest, whatever its threads do
DRAIN_S = 0.2  # of which: callbacks in flight may finish
CLOSE_S = 1.0  # ... nodes' close() (the recorder closes its bag) may run, counted from the signal


class Shutdown:
    """SIGINT/SIGTERM -> a threading.Event (installed instead of rclpy's handlers, so nodes can finish cleanly: the
    recorder closes its bag, players stop their threads) before the context is shut down.

    The stop is bounded: the first signal starts a watchdog that ends the process ``STOP_WITHIN_S`` later whatever is
    still running (a scene initialising in torch does not listen), and a second signal ends it at once. While
    ``interrupt`` is set (nodes being built: the scene node imports torch), the first signal also raises
    KeyboardInterrupt in the main thread, so building stops too.
    """

    def __init__(self, stop_within_s: float = STOP_WITHIN_S) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.signal_t: float | None = None
        self.interrupt = False
        self.stop_within_s = stop_within_s
        self._old: dict[int, Any] = {}

    def install(self) -> Shutdown:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set():  # the second Ctrl-C: stop now
            _hard_exit(f"second {signal.Signals(signum).name}: stopping now", 130)
        self.signum, self.signal_t = signum, time.monotonic()
        self.event.set()
        watchdog = threading.Timer(self.stop_within_s - 0.1, _hard_exit,
                                   (f"still stopping {self.stop_within_s:g} s after "
                                    f"{signal.Signals(signum).name}: stopping now", 130))
        watchdog.daemon = True
        watchdog.start()
        if self.interrupt:
            raise KeyboardInterrupt

    def left_s(self, budget_s: float) -> float:
        """Of ``budget_s`` counted from the signal, what is left (``budget_s`` when no signal came)."""
        return budget_s if self.signal_t is None else max(0.0, budget_s - (time.monotonic() - self.signal_t))

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _hard_exit(why: str, code: int) -> None:
    """End the process at once (signal handler / watchdog): bags still open keep what was flushed (vidyn reindex)."""
    try:
        os.write(2, f"vidyn: {why}\n".encode())
    except OSError:
        pass
    os._exit(code)


def init_rclpy(args: Sequence[str] | None = None, context: Any = None, domain_id: int | None = None) -> Any:
    """rclpy.init with the SHM profile and without rclpy's own signal handlers (we install ``Shutdown``); caps the
    process's malloc arenas first (``workers.limit_malloc_arenas``: flat memory over hours), before DDS starts its
    threads."""
    from rclpy.signals import SignalHandlerOptions

    from vidyn_ros.workers import limit_malloc_arenas

    limit_malloc_arenas()
    setup_fastdds_env()
    kwargs: dict[str, Any] = {"args": list(args) if args is not None else None, "context": context,
                              "signal_handler_options": SignalHandlerOptions.NO}
    if domain_id is not None:
        kwargs["domain_id"] = domain_id
    rclpy.init(**kwargs)
    return context




class NodeExecutor(Executor):
    """rclpy's MultiThreadedExecutor loop (a thread pool runs the ready callbacks), written on public rclpy API, with
    what shutting down needs and rclpy's lacks: ``drain`` waits, up to a deadline, for the callbacks already running
    (rclpy's shutdown destroys its guard condition without waiting for them, and their messages are lost), and
    reports the ones that failed."""

    def __init__(self, num_threads: int, context: Any = None) -> None:
        super().__init__(context=context)
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="vidyn-executor")
        self._running: list[Any] = []  # Tasks handed to the pool

    def spin_once(self, timeout_sec: float | None = None) -> bool:
        """Run one ready callback on the pool; True if it was a subscription's (a message arrived)."""
        try:
            handler, entity, _node = self.wait_for_ready_callbacks(timeout_sec)
        except (TimeoutException, ShutdownException, ExternalShutdownException, ConditionReachedException):
            return False
        self._pool.submit(handler)
        self._running.append(handler)
        for task in [t for t in self._running if t.done()]:
            self._running.remove(task)
            task.result()  # a callback's exception ends the spin, as in rclpy's executors
        return isinstance(entity, Subscription)

    def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the callbacks in flight; log the ones that failed. Returns how many are left."""
        t_end = time.monotonic() + timeout_s
        while any(not t.done() for t in self._running) and time.monotonic() < t_end:
            time.sleep(0.005)
        for task in [t for t in self._running if t.done()]:
            self._running.remove(task)
            # A callback that failed in the last spin is re-raised nowhere else: report it, don't lose it.
            exc = task.exception()
            if exc is not None:
                log.warning("callback failed during shutdown: %s: %s", type(exc).__name__, exc)
        return len(self._running)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        done = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=False, cancel_futures=True)  # never block on a callback stuck in native code
        return done


def spin_nodes(
    nodes: Iterable[Node],
    context: Any = None,
    duration_s: float | None = None,
    until: Callable[[], bool] | None = None,
    shutdown: Shutdown | None = None,
    num_threads: int | None = None,
    drain_s: float = 0.3,
    drain_max_s: float = 3.0,
) -> str:
    """Spin ``nodes`` in one NodeExecutor until a signal, ``duration_s`` of wall time, or ``until()`` is true.

    After ``until()`` first becomes true (a node finished), spinning goes on until no message has arrived for
    ``drain_s`` (at most ``drain_max_s``) so that messages still in flight (the last frame a rig published, the tail
    of a bag) reach their subscribers before anything is closed: a fixed 0.3 s lost the last image of a rig's last
    frame once on CI.
    Returns why it stopped: "signal", "duration", "done" or "external". Nodes are NOT destroyed here (the caller does
    that, after calling each node's ``close()`` if it has one).
    """
    nodes = list(nodes)
    executor = NodeExecutor(num_threads=num_threads or max(4, 2 * len(nodes)), context=context)
    for n in nodes:
        executor.add_node(n)
    t_end = None if duration_s is None else time.monotonic() + duration_s
    reason = "external"
    t_done: float | None = None
    last_message = time.monotonic()
    try:
        while rclpy.ok(context=context):
            if executor.spin_once(timeout_sec=0.05):
                last_message = time.monotonic()
            if shutdown is not None and shutdown.event.is_set():
                reason = "signal"
                break
            now = time.monotonic()
            if t_end is not None and now >= t_end:
                reason = "duration"
                break
            if t_done is None and until is not None and until():
                t_done = now
            if t_done is not None and (now - max(last_message, t_done) >= drain_s or now - t_done >= drain_max_s):
                reason = "done"
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        reason = "signal"
    finally:
        # Let callbacks already handed to the thread pool finish first (their messages would be lost); after a signal
        # only briefly: the whole process must end within STOP_WITHIN_S.
        left = executor.drain(shutdown.left_s(DRAIN_S) if shutdown is not None and reason == "signal" else 2.0)
        if left:
            leave_behind(f"{left} callback(s) in flight")
        for n in nodes:
            executor.remove_node(n)
        executor.shutdown(timeout_sec=0)
    return reason


def close_nodes(nodes: Iterable[Node], before_destroy: Callable[[list[Node]], None] | None = None,
                timeout_s: float | None = None) -> list[str]:
    """Call ``close()`` (stop threads, flush files) on every node, then ``before_destroy(nodes)`` (e.g. collect
    summaries: a destroyed node cannot even report its name), then ``destroy_node()``. Never raises for close errors.

    With ``timeout_s`` (after a signal) the nodes close at the same time, each on its own thread, and a close still
    running after ``timeout_s`` is left behind (its node is not destroyed; see vidyn_ros.workers.left_behind): a
    scene initialising in torch must not hold up the recorder closing its bag, nor the process. Returns the names of
    the nodes left closing.
    """
    nodes = list(nodes)

    def close(n: Node) -> None:
        try:
            if hasattr(n, "close"):
                n.close()
        except Exception as err:
            log.warning("%s: close failed: %s", n.get_name(), err)

    busy: list[Node] = []
    if timeout_s is None:
        for n in nodes:
            close(n)
    else:
        threads = [(n, threading.Thread(target=close, args=(n,), name=f"close-{n.get_name()}", daemon=True))
                   for n in nodes]
        for _n, t in threads:
            t.start()
        t_end = time.monotonic() + timeout_s
        for n, t in threads:
            t.join(max(0.0, t_end - time.monotonic()))
            if t.is_alive():
                busy.append(n)
                log.warning("%s: still closing after %.1f s; leaving it behind", n.get_name(), timeout_s)
                leave_behind(f"{n.get_name()} (closing)")
    if before_destroy is not None:
        before_destroy(nodes)
    for n in nodes:
        if n in busy:
            continue
        try:
            n.destroy_node()
        except Exception as err:
            log.debug("%s: destroy failed: %s", n.get_name(), err)
    return [n.get_name() for n in busy]


def run_node(node_factory: Callable[..., Node], args: Sequence[str] | None = None, done_attr: str = "done") -> int:
    """``main()`` for a node (``node_factory`` is usually the module's ``create_node``): init rclpy (SHM profile),
    build the node, spin until Ctrl-C/SIGTERM or the node says it is done
    (``node.done`` true, e.g. a bag player without loop), close the node, shut down. Returns an exit code.

    A VidynError while building or running the node (bad parameter, missing bag) is printed as ONE line on stderr and
    the code is 2; no traceback. SIGINT/SIGTERM end the process within STOP_WITHIN_S (see ``Shutdown``).
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
        shutdown.interrupt = True  # a signal while the node is being built stops building
        # every override becomes a parameter, so declare_params can name the ones the node does not have
        node = node_factory(automatically_declare_parameters_from_overrides=True)
        check_qos_overrides(node)
        shutdown.interrupt = False
        spin_nodes([node], shutdown=shutdown, until=lambda: bool(getattr(node, done_attr, False)))
        if getattr(node, "fatal", None):
            code = fail(str(node.fatal))
    except VidynError as err:
        code = fail(str(err))
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    finally:
        shutdown.interrupt = False
        if node is not None:
            close_nodes([node], timeout_s=shutdown.left_s(CLOSE_S) if shutdown.event.is_set() else None)
        rclpy.try_shutdown()
        exit_process(code)  # threads left behind (a worker inside torch): do not wait for them at exit
        shutdown.restore()
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
            # every override becomes a parameter, so declare_params can name the ones the node does not have
            "automatically_declare_parameters_from_overrides": True,
        }
        if self.namespace:
            kw["namespace"] = self.namespace
        return kw



def remap_args(remappings: dict[str, str] | None) -> list[str]:
    """``{"/a": "/b"}`` -> ``["--ros-args", "-r", "/a:=/b"]`` for ``Node(..., cli_args=...)``."""
    out: list[str] = []
    for src, dst in (remappings or {}).items():
        out += ["-r", f"{src}:={dst}"]
    return ["--ros-args", *out] if out else []


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

