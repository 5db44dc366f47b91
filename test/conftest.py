"""Fixtures shared by the test modules.

``ros_context``: a fresh rclpy Context on the requesting module's ROS domain (its module-level ``DOMAIN``), shut down
after the test also when it fails. Each DDS test module keeps its own domain range, so modules (and parallel test runs,
the domain being derived from the pid) do not hear each other.

Without rclpy the DDS tests are skipped (a machine without the ROS wheels still tests the library), except in CI
(``CI=true``): there a broken ROS install must fail the run, not pass it with the ROS half unrun.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


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
