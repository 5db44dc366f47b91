"""Node parameters at run time, over DDS with rclpy's parameter client (what `ros2 param set` uses): a read-only
parameter refuses a set instead of ignoring it, a value out of range is refused with the node's one-line reason, and a
settable parameter takes effect at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ros_domain
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from vidyn_ros import msgs
from vidyn_ros.nodes import _ros

DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)


class Spun:
    """Nodes spun by a MultiThreadedExecutor on a background thread; a parameter client for the node under test."""

    def __init__(self, ctx: Context, node: Node) -> None:
        self.node = node
        self.client_node = Node("param_test_client", context=ctx)
        self.executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        for n in (node, self.client_node):
            self.executor.add_node(n)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.client = AsyncParameterClient(self.client_node, node.get_fully_qualified_name())
        assert self.client.wait_for_services(timeout_sec=20.0), "parameter services not discovered"

    def wait(self, future: Any, timeout_s: float = 10.0) -> Any:
        t_end = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < t_end:
            time.sleep(0.01)
        assert future.done(), "no answer from the parameter service"
        return future.result()

    def set(self, name: str, value: Any) -> Any:
        (result,) = self.wait(self.client.set_parameters([Parameter(name, value=value)])).results
        return result

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.client_node.destroy_node()
        if hasattr(self.node, "close"):
            self.node.close()
        self.node.destroy_node()


@pytest.fixture
def spun_recorder(ros_context: Context, tmp_path: Path) -> Iterator[Spun]:
    from vidyn_ros.nodes.recorder import create_node

    node = create_node(context=ros_context, automatically_declare_parameters_from_overrides=True,
                       parameter_overrides=_ros.parameter_overrides({
                           "topics": ["/never_published"], "output": str(tmp_path / "bag"), "warn_missing_s": 3600,
                           "discovery_period_s": 0.1}))
    spun = Spun(ros_context, node)
    yield spun
    spun.close()


def test_read_only_refused_out_of_range_refused_settable_takes_effect(spun_recorder: Spun) -> None:
    s, rec = spun_recorder, spun_recorder.node
    warnings: list[str] = []

    def on_diag(raw: bytes) -> None:
        for st in msgs.deserialize(raw, msgs.DIAGNOSTIC_ARRAY).status:
            if st.level == 1 and "no publisher yet for /never_published" in st.message:
                warnings.append(st.message)

    s.client_node.create_subscription(_ros.msg_class(msgs.DIAGNOSTIC_ARRAY), "/diagnostics", on_diag, 50, raw=True)

    # read-only: `ros2 param set /recorder output /elsewhere` is refused, and nothing changed
    r = s.set("output", "/elsewhere")
    assert not r.successful and "read-only" in r.reason, r.reason
    assert rec.p.output != "/elsewhere" and rec.get_parameter("output").value == rec.p.output

    # out of range: refused (by rclpy's range check, or by the table's where ROS ranges cannot say it: open bounds,
    # choices)
    r = s.set("warn_missing_s", -1.0)
    assert not r.successful and "warn_missing_s out of range" in r.reason, r.reason
    assert rec.p.warn_missing_s == 3600.0
    r = s.set("discovery_period_s", 0.0)  # (0, 60]: read-only anyway, so refused before the range is looked at
    assert not r.successful

    # describe shows the range and which parameters are settable (ros2 param describe)
    d_warn, d_out = s.wait(s.client.describe_parameters(["warn_missing_s", "output"])).descriptors
    assert not d_warn.read_only and d_out.read_only
    assert (d_warn.floating_point_range[0].from_value, d_warn.floating_point_range[0].to_value) == (0.0, float("inf"))

    # settable: an integer (what `ros2 param set /recorder warn_missing_s 0` sends) is accepted for a float and the
    # recorder warns about the missing topic at once, where before it waited an hour
    time.sleep(0.5)
    assert not warnings
    r = s.set("warn_missing_s", 0)
    assert r.successful, r.reason
    assert rec.p.warn_missing_s == 0.0 and isinstance(rec.p.warn_missing_s, float)
    t_end = time.monotonic() + 5.0
    while not warnings and time.monotonic() < t_end:
        time.sleep(0.05)
    assert warnings, "the new warn_missing_s did not take effect"


def _time_frames(rig: Any, n: int, timeout_s: float = 60.0) -> float:
    """Wall time the rig takes to publish ``n`` more frames (from the next frame on)."""
    def wait_frames(k: int) -> None:
        t_end = time.monotonic() + timeout_s
        while rig.frames < k and time.monotonic() < t_end:
            time.sleep(0.005)
        assert rig.frames >= k, f"the rig published {rig.frames} frames, not {k}"

    wait_frames(rig.frames + 1)
    t0, f0 = time.monotonic(), rig.frames
    wait_frames(f0 + n)
    return time.monotonic() - t0


def test_sim_rig_rate_set_at_run_time_changes_the_pace(ros_context: Context) -> None:
    """The pace is timed over a number of frames, not counted in fixed windows (a busy CPU stalls the rig, which then
    catches up with its schedule in a burst). The slow phase starts with the set: the schedule restarts at a rate
    change, so n frames at 30 fps x 0.1 take at least (n - 1) / 3 s however loaded the machine; the fast phase only
    needs 5 frames/s at 160x120."""
    from vidyn_ros.nodes.sim_rig import create_node as create_sim_rig

    rig = create_sim_rig(context=ros_context, parameter_overrides=_ros.parameter_overrides({
        "scenario": "push", "render_scale": 0.25, "realtime": True, "rate": 1.0, "max_frames": -1,
        "masks": False, "clock": False}))
    s = Spun(ros_context, rig)
    try:
        fast_s = _time_frames(rig, 15)  # at rate 0.1 they would take 5 s
        r = s.set("rate", 0.0)  # (0, 100]: the open bound is the table's check
        assert not r.successful and r.reason == "sim_rig: rate must be in (0, 100], got 0", r.reason
        r = s.set("rate", 0.1)
        assert r.successful, r.reason
        slow_s = _time_frames(rig, 7)  # >= 6 intervals of 1/3 s, less the polling delay of its first frame
        assert fast_s < 3.0, fast_s
        assert 1.5 <= slow_s < 6.0, slow_s  # 2.0-2.4 s at rate 0.1; 4 s at half that
    finally:
        s.close()
