"""Fixtures shared by the test modules.

``ros_context``: a fresh rclpy Context on the requesting module's ROS domain (its module-level ``DOMAIN``), shut down
after the test also when it fails. Each DDS test module keeps its own domain range, so modules (and parallel test runs,
the domain being derived from the pid) do not hear each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def ros_context(request: pytest.FixtureRequest) -> Iterator[Any]:
    """rclpy Context initialised on ``request.module.DOMAIN`` (the Fast DDS shared-memory profile set first, as the
    nodes do: it must be in the environment before rclpy.init)."""
    rclpy = pytest.importorskip("rclpy")
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
