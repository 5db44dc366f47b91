"""Fixtures shared by the test modules.

``ros_domain(__name__)``: the ROS domain of a DDS test module (its module-level ``DOMAIN``), the one reservation
mechanism of the suite. A test run (one pytest process) holds a *slot*, a block of ``DOMAINS_PER_RUN`` consecutive
domains, and a module's domain is the slot's first domain plus the module's index in ``DDS_TEST_MODULES``. So the
modules of one run never share a domain (a node left over from one module cannot talk to the next), and concurrent
runs on one machine (several worktrees, CI jobs) take different slots: the first free one from a pid-derived start,
held with a lock file for the life of the process. Only when all slots are taken does a run share one.

``ros_context``: a fresh rclpy Context on the requesting module's ``DOMAIN``, shut down after the test also when it
fails.

Without rclpy the DDS tests are skipped (a machine without the ROS wheels still tests the library), except in CI
(``CI=true``): there a broken ROS install must fail the run, not pass it with the ROS half unrun.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

# Every test module that talks DDS (nodes in-process or in subprocesses); its index is its offset in a run's slot.
DDS_TEST_MODULES = (
    "test_cli_errors", "test_demo", "test_demo_mpc", "test_dynamics_node", "test_graph", "test_mpc_node",
    "test_node_params", "test_nodes_roundtrip", "test_realsense", "test_ros_io", "test_scene_node",
    "test_segmentation", "test_sim_rig_lockstep", "test_topic_qos",
)
DOMAINS_PER_RUN = 16  # room for a few more modules
FIRST_DOMAIN = 1  # domain 0 is everybody's default (a `ros2 launch` without ROS_DOMAIN_ID)
MAX_DOMAIN = 232  # Fast DDS: the highest domain id whose ports fit
N_SLOTS = (MAX_DOMAIN - FIRST_DOMAIN + 1) // DOMAINS_PER_RUN  # 14 concurrent runs
_slot: int | None = None
_slot_lock: IO | None = None  # held open: the flock lasts as long as this process


def _run_slot() -> int:
    """This process's slot: the first one no other process holds, searched from ``pid % N_SLOTS``."""
    global _slot, _slot_lock
    if _slot is not None:
        return _slot
    lock_dir = Path(tempfile.gettempdir()) / "vidyn_ros_test_domains"
    start = os.getpid() % N_SLOTS
    try:
        lock_dir.mkdir(exist_ok=True)
        for i in range(N_SLOTS):
            slot = (start + i) % N_SLOTS
            f = open(lock_dir / f"slot{slot:02d}.lock", "a")  # kept open: the lock is held while it is
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            _slot, _slot_lock = slot, f
            return slot
    except OSError:  # no writable temp dir: fall back to the pid alone
        pass
    _slot = start  # every slot taken: share one (as likely as any pid-derived choice)
    return _slot


def ros_domain(module_name: str) -> int:
    """The ROS domain of the DDS test module ``module_name`` (``__name__``) in this test run."""
    name = module_name.rsplit(".", 1)[-1]
    if name not in DDS_TEST_MODULES:
        raise RuntimeError(f"{name}: add it to DDS_TEST_MODULES in test/conftest.py to get a ROS domain of its own")
    return FIRST_DOMAIN + _run_slot() * DOMAINS_PER_RUN + DDS_TEST_MODULES.index(name)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_configure(config: pytest.Config) -> None:
    if not in_ci():
        return
    try:
        import rclpy  # noqa: F401
    except ImportError as err:
        raise pytest.UsageError(f"CI=true but rclpy does not import ({err}): the DDS tests would be skipped") from err


def import_rclpy() -> Any:
    """rclpy, or a skip when it does not import (in CI ``pytest_configure`` has failed the run already)."""
    return pytest.importorskip("rclpy")


@pytest.fixture
def ros_context(request: pytest.FixtureRequest) -> Iterator[Any]:
    """rclpy Context initialised on ``request.module.DOMAIN`` (the Fast DDS shared-memory profile set first, as the
    nodes do: it must be in the environment before rclpy.init)."""
    rclpy = import_rclpy()
    from rclpy.context import Context

    from vidyn_ros.nodes import _ros

    domain = getattr(request.module, "DOMAIN", None)
    if not isinstance(domain, int):
        raise RuntimeError(f"{request.module.__name__}: set a module-level DOMAIN (int) to use ros_context")
    _ros.setup_fastdds_env()
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)
