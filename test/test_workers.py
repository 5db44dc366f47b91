"""Process-level runtime helpers in vidyn_ros.workers (ROS-free)."""

import os
import subprocess
import sys

import pytest

# Eight threads alive at once, each allocating (small blocks: from its malloc arena, not mmap), then glibc's own
# count of arenas (malloc_stats prints one "Arena N:" line per arena on stderr).
PROBE = """
import sys, threading, ctypes
from vidyn_ros.workers import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas(2)
barrier, keep = threading.Barrier(8), []
def work():
    keep.append([bytearray(10_000) for _ in range(10)])
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, env=env,
                       check=True)
    return sum(line.startswith("Arena ") for line in r.stderr.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc arenas")
def test_malloc_arenas_are_capped_for_threads_started_afterwards():
    assert _arenas("default") > 2  # glibc: a new arena per thread (up to 8 per core)
    assert _arenas("limit") <= 2


def test_a_user_malloc_arena_max_wins(monkeypatch):
    from vidyn_ros.workers import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False
