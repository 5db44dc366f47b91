"""sim_rig's synchronous mode over real DDS: with ``lockstep_topic`` set, a slow consumer sees every frame, the rig
never runs ahead of its acknowledgements, waits out the consumer's initialisation, and goes on after a timeout."""

from __future__ import annotations

import os
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")

from conftest import ros_domain
from rclpy.context import Context
from rclpy.node import Node

from vidyn_ros import graph, msgs
from vidyn_ros.nodes import _ros
from vidyn_ros.nodes.recorder import header_stamp_ns

DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)
ACK_TOPIC = "/test_lockstep/ack"


class SlowConsumer(Node):
    """Echoes each cam0 colour stamp on ACK_TOPIC (std_msgs/Header) after a delay: ``init_s`` for the first frame
    (like the scene's initialisation), ``step_s`` later; frame index ``skip`` is never acknowledged, nor is any frame
    from index ``stop_at`` on (a consumer that died)."""

    def __init__(self, ctx: Context, init_s: float, step_s: float, skip: int, stop_at: int = 1 << 30) -> None:
        super().__init__("slow_consumer", context=ctx)
        from std_msgs.msg import Header

        self._header = Header
        self.init_s, self.step_s, self.skip, self.stop_at = init_s, step_s, skip, stop_at
        self.received: list[tuple[int, float]] = []  # (stamp ns, wall time of arrival)
        self.acked: list[tuple[int, float]] = []  # (stamp ns, wall time the acknowledgement was published)
        self.pub = self.create_publisher(self._header, ACK_TOPIC, _ros.reliable_qos())
        self.create_subscription(_ros.msg_class(msgs.IMAGE), msgs.color_topic("cam0"), self._on_frame,
                                 _ros.reliable_qos(depth=50), raw=True)

    def _on_frame(self, raw: bytes) -> None:
        stamp = header_stamp_ns(bytes(raw))
        self.received.append((stamp, time.monotonic()))
        k = len(self.received) - 1
        time.sleep(self.init_s if k == 0 else self.step_s)  # "work" on the frame
        if k == self.skip or k >= self.stop_at:
            return
        ack = self._header()
        ack.stamp.sec, ack.stamp.nanosec = divmod(stamp, 1_000_000_000)
        self.pub.publish(ack)
        self.acked.append((stamp, time.monotonic()))


def _run(n_frames: int, timeout_s: float, consumer: dict) -> tuple[graph.GraphRun, SlowConsumer, float]:
    spec = graph.parse_graph({"use_sim_time": True, "nodes": [
        {"node": "sim_rig", "parameters": {
            "scenario": "push", "render_scale": 0.25, "realtime": False, "max_frames": n_frames,
            "start_delay_s": 0.5, "masks": False, "qos": "reliable", "lockstep_topic": ACK_TOPIC,
            "lockstep_timeout_s": timeout_s, "lockstep_first_timeout_s": 30.0}},
    ]})
    box: list[SlowConsumer] = []

    def extra(ctx: Context) -> list[Node]:
        box.append(SlowConsumer(ctx, **consumer))
        return box

    t0 = time.monotonic()
    run = graph.run_graph(spec, domain_id=DOMAIN, install_signal_handlers=False, extra_nodes=extra,
                          duration_s=120.0)
    return run, box[0], time.monotonic() - t0


def test_lockstep_slow_consumer_sees_every_frame_and_a_missing_ack_times_out() -> None:
    n_frames, init_s, step_s, timeout_s, skip = 6, 2.0, 0.2, 1.0, 3
    run, con, wall = _run(n_frames, timeout_s, {"init_s": init_s, "step_s": step_s, "skip": skip})
    rig = run.summaries["sim_rig"]
    assert run.reason == "done" and rig["frames"] == n_frames

    # Every frame reached the consumer, in order, although it is far slower than the rig (30 fps at 160x120).
    stamps = [s for s, _ in con.received]
    assert stamps == [round((k + 1) * 1e9 / 30) for k in range(n_frames)]
    # Lockstep: frame k+1 arrived only after frame k was acknowledged (except after the skipped one: the rig timed
    # out instead, at least timeout_s after that frame arrived).
    acked = dict(con.acked)
    for k in range(n_frames - 1):
        s_k, arrived_next = stamps[k], con.received[k + 1][1]
        if k == skip:
            assert s_k not in acked
            assert arrived_next - con.received[k][1] >= timeout_s - 0.05
        else:
            assert arrived_next >= acked[s_k], f"frame {k + 1} was published before frame {k} was acknowledged"
    # The long first wait (the consumer's "initialisation", 2 s > lockstep_timeout_s) is no timeout; the skip is one.
    assert rig["lockstep_timeouts"] == 1
    assert rig["lockstep_wait_s"] >= init_s + timeout_s - 0.2
    # The rig waited for the last frame's acknowledgement before reporting done.
    assert con.acked[-1][0] == stamps[-1]
    assert wall < 60.0


def test_lockstep_gives_up_on_a_consumer_that_stopped_answering() -> None:
    """The consumer answers frames 0 and 1 only: after 3 unacknowledged frames in a row the rig runs free."""
    n_frames, timeout_s = 10, 0.5
    run, con, wall = _run(n_frames, timeout_s, {"init_s": 0.2, "step_s": 0.0, "skip": -1, "stop_at": 2})
    rig = run.summaries["sim_rig"]
    assert run.reason == "done" and rig["frames"] == n_frames
    assert [s for s, _ in con.received] == [round((k + 1) * 1e9 / 30) for k in range(n_frames)]
    assert rig["lockstep_timeouts"] == 3  # frames 2, 3, 4; then no more waiting
    assert rig["lockstep_wait_s"] < 3 * timeout_s + 1.5
    assert wall < 60.0
