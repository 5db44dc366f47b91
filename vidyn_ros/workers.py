"""Worker threads and a rate meter for code that must not block its caller: ROS-free (the nodes use them, and so can
any library code or command).

- ``DropOldestQueue`` + ``Worker``: callbacks only enqueue; heavy work runs on a worker thread, and when it falls behind
  the oldest items are dropped (for camera data the newest frame is what matters).
- ``LoopThread``: a producer that paces itself (the simulated rig, the bag player) on its own thread.
- ``wait_for``: wait for an event unless a stop event comes first.
- ``RateMeter``: events per second over a sliding window (diagnostics, summaries).
- ``limit_malloc_arenas``: cap glibc's per-thread malloc arenas in a process with many threads (the node runtime).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2  # glibc's default is 8 per core
_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap the number of glibc malloc arenas of this process at ``n`` (``mallopt(M_ARENA_MAX)``), so that threads
    created from now on share them. Why: a graph runs dozens of threads (DDS, executor, workers, torch); glibc gives
    each new thread its own arena, up to 8 per core, and memory freed in one arena is not reused by another thread.
    The 30-minute soak (bench/soak.py) grew from 1164 MB after one minute to 1230-1265 MB after five and stayed there;
    with this cap it stays within 1060-1091 MB from minute 5 to 30, update times unchanged. A MALLOC_ARENA_MAX set by
    the user wins; other C libraries (no mallopt) are left alone. Returns whether the cap was set."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, int(n)))
    except (OSError, AttributeError):  # not glibc
        return False

_left_behind: list[str] = []
_left_behind_lock = threading.Lock()


def leave_behind(what: str) -> None:
    """Record a thread still busy when it was told to stop (it may be inside native code: torch, OpenGL)."""
    with _left_behind_lock:
        _left_behind.append(what)


def left_behind() -> list[str]:
    """What was left running at shutdown: a process with any of it must not wait for it at exit (the interpreter
    would join a stuck thread forever, or abort on one inside native code), see ``exit_process``."""
    with _left_behind_lock:
        return list(_left_behind)


def exit_process(code: int) -> None:
    """End the process now with ``code`` when threads were left behind (``os._exit`` after flushing the standard
    streams and the logs: files that matter, such as bags, were closed before); otherwise return."""
    import os
    import sys

    if not left_behind():
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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
                log.warning("%s: still busy after %.1f s; leaving it behind", self._thread.name, timeout)
                leave_behind(self._thread.name)


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
            if self._thread.is_alive():
                log.warning("%s: still busy after %.1f s; leaving it behind", self._thread.name, timeout)
                leave_behind(self._thread.name)

