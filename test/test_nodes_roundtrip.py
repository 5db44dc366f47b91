"""Nodes over real DDS (rclpy + Fast DDS, no mocks): sim_rig -> recorder -> bag -> bag_player -> subscriber keeps
bytes and stamps; bag_player rate / loop / filter / remap / clock; recorder closes its bag on SIGTERM; a 640x480
image stream across two processes with the shared-memory profile.

Every test runs on this module's ROS domain (test/conftest.py ros_domain), so that other modules and parallel test
runs do not hear each other.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ros_domain
from rclpy.context import Context
from rclpy.node import Node

from vidyn_ros import graph, msgs
from vidyn_ros.bags import BagReader, BagWriter
from vidyn_ros.nodes import _ros

DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)
REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("MUJOCO_GL", "osmesa")


class Collector(Node):
    """Subscribes raw (CDR bytes) to topics and keeps what arrives, with the times it was published.

    Pacing is measured with the DDS *source* timestamp (when the publisher wrote the sample), not with the time this
    callback ran: on a loaded machine the subscriber's executor can fall behind and deliver a burst late, which says
    nothing about the publisher's timing.
    """

    def __init__(self, ctx: Context, topics: dict[str, str]) -> None:
        super().__init__("collector", context=ctx)
        self.got: dict[str, list[bytes]] = {t: [] for t in topics}
        self.sent_at: dict[str, list[float]] = {t: [] for t in topics}
        for topic, msgtype in topics.items():
            self.create_subscription(_ros.msg_class(msgtype), topic, functools.partial(self._on, topic),
                                     _ros.reliable_qos(depth=200), raw=True)

    def _on(self, topic: str, raw: bytes, info: dict) -> None:
        self.got[topic].append(bytes(raw))
        self.sent_at[topic].append(info["source_timestamp"] / 1e9)

    def count(self) -> int:
        return sum(len(v) for v in self.got.values())

    def period(self, topic: str) -> float:
        """Median seconds between the publications of consecutive messages on ``topic``: the pace, robust to one
        late publication (the player then catches up, which shortens the first-to-last span)."""
        return float(np.median(np.diff(self.sent_at[topic])))


def _collect(spec: graph.GraphSpec, topics: dict[str, str], **kw) -> tuple[graph.GraphRun, Collector]:
    box: list[Collector] = []

    def extra(ctx: Context) -> list[Node]:
        box.append(Collector(ctx, topics))
        return box

    run = graph.run_graph(spec, domain_id=DOMAIN, install_signal_handlers=False, extra_nodes=extra, **kw)
    return run, box[0]


def _stamp(raw: bytes) -> int:
    from vidyn_ros.nodes.recorder import header_stamp_ns

    return header_stamp_ns(raw)


# --------------------------------------------------------------------------------------------------- _ros helpers
def test_declare_params_coerces_ints_and_reports_type_errors_in_one_line(ros_context: Context) -> None:
    from vidyn_ros.errors import ConfigError

    table = [_ros.Param("rate", 1.0, "a float", range="(0, 10]"), _ros.Param("gains", [0.5], "floats", range="[0, 5]"),
             _ros.Param("names", [], "strings", kind="string"), _ros.Param("n", 3, "an int", range="[1, inf)")]
    ctx = ros_context
    # YAML `2` where a float is declared, and an empty list (no ROS array type) left to the default
    node = Node("p1", context=ctx, parameter_overrides=_ros.parameter_overrides(
        {"rate": 2, "gains": [1, 2], "names": []}))
    p = _ros.declare_params(node, table)
    assert (p.rate, p.gains, p.names, p.n) == (2.0, [1.0, 2.0], [], 3) and isinstance(p.rate, float)
    node.destroy_node()
    bad = Node("p2", context=ctx, parameter_overrides=_ros.parameter_overrides({"n": "three"}))
    with pytest.raises(ConfigError, match=r"^p2: n must be an integer, got 'three'$"):
        _ros.declare_params(bad, table)
    bad.destroy_node()
    # out of range: the same one line for a scalar, an element of a list, an open bound
    for values, message in [({"n": 0}, "p3: n must be >= 1, got 0"), ({"gains": [1.0, 7.5]}, "p3: gains must be in "
                            "[0, 5], got 7.5"), ({"rate": 0.0}, "p3: rate must be in (0, 10], got 0")]:
        node = Node("p3", context=ctx, parameter_overrides=_ros.parameter_overrides(values))
        with pytest.raises(ConfigError) as info:
            _ros.declare_params(node, table)
        assert str(info.value) == message
        node.destroy_node()
    # a node built as run_node and vidyn launch build them knows its overrides: an unknown one is named, with a hint
    node = Node("p4", context=ctx, automatically_declare_parameters_from_overrides=True,
                parameter_overrides=_ros.parameter_overrides({"rates": 2.0, "n": 2, "use_sim_time": True}))
    with pytest.raises(ConfigError) as info:
        _ros.declare_params(node, table)
    assert str(info.value) == ("p4: no parameter 'rates' (did you mean 'rate'? valid: gains, n, names, rate, "
                               "use_sim_time)")
    node.destroy_node()


def test_worker_keeps_the_newest_items_and_survives_errors() -> None:
    done: list[int] = []
    errors: list[BaseException] = []
    gate = threading.Event()

    def work(item: int) -> None:
        gate.wait(10)
        if item == 3:
            raise ValueError("bad frame")
        done.append(item)

    w = _ros.Worker(work, maxsize=2, on_error=errors.append)
    try:
        w.submit(0)
        assert _wait(lambda: len(w.queue) == 0)  # the worker holds item 0 (blocked on the gate)
        for k in range(1, 6):
            w.submit(k)  # a queue of 2: 1, 2 and 3 are dropped, 4 and 5 stay
        assert w.queue.dropped == 3
        w.submit(3)  # drops 4: queue 5, 3
        gate.set()
        assert _wait(lambda: len(done) == 2 and len(errors) == 1)
        assert done == [0, 5] and isinstance(errors[0], ValueError)
    finally:
        w.stop()


def _wait(cond, timeout: float = 30.0) -> bool:
    t_end = time.monotonic() + timeout
    while not cond() and time.monotonic() < t_end:
        time.sleep(0.01)
    return bool(cond())


# ------------------------------------------------------------------------------------------------ full round trip
def test_sim_rig_recorder_bag_player_round_trip(tmp_path: Path) -> None:
    from vidyn_ros.rig.calibration_io import load_rig_calibration
    from vidyn_ros.rig.sim import SimRig

    n_frames = 6
    calib = tmp_path / "calib.yaml"
    bag = tmp_path / "bag"
    record = graph.parse_graph({"use_sim_time": True, "nodes": [
        {"node": "sim_rig", "parameters": {"scenario": "push", "render_scale": 0.25, "realtime": False,
                                           "max_frames": n_frames, "start_delay_s": 1.0, "qos": "reliable",
                                           "calibration_out": str(calib)}},
        {"node": "recorder", "parameters": {"all": True, "output": str(bag), "calibration": str(calib)}},
    ]})
    run = graph.run_graph(record, domain_id=DOMAIN, install_signal_handlers=False)
    assert run.reason == "done"
    assert run.summaries["sim_rig"]["frames"] == n_frames

    # The same scenario rendered offline: the bag must hold exactly these messages (bytes) at these stamps.
    with SimRig("push", seed=0, render_scale=0.25) as rig:
        frames = [rig.step() for _ in range(n_frames)]
        poses = {c.name: c.T_world_cam for c in rig.cameras}
    expected: dict[str, list[tuple[int, bytes]]] = {}
    for rf in frames:
        for topic, msgtype, msg, stamp in msgs.rig_frame_messages(rf):
            expected.setdefault(topic, []).append((stamp, msgs.serialize(msg, msgtype)))
    assert len(expected) == 4 * 4 + 1  # 4 cameras x (color, depth, info, true mask) + ground truth

    with BagReader(bag) as r:
        assert not r.recovered
        recorded: dict[str, list[tuple[int, bytes]]] = {}
        for topic, _t, stamp, raw in r.messages(list(expected)):
            recorded.setdefault(topic, []).append((stamp, bytes(raw)))
        clock = [stamp for _t, _m, stamp, _raw in r.messages(["/clock"])]
        cal = r.calibration()
    for topic, exp in expected.items():
        assert recorded[topic] == exp, f"{topic}: recorded messages differ from the offline render"
    frame_stamps = [s for s, _ in expected["/cam0/color/image_raw"]]
    assert frame_stamps == [round((k + 1) * 1e9 / 30) for k in range(n_frames)]
    assert clock == frame_stamps
    assert set(cal) == set(poses)
    for name, T in poses.items():
        np.testing.assert_allclose(cal[name], T, atol=1e-5)  # the YAML keeps 6 decimals
    assert load_rig_calibration(bag / "rig_calibration.yaml").keys() == poses.keys()

    # Replay on DDS and compare what a subscriber gets with what the bag holds.
    topics = {"/cam0/color/image_raw": msgs.IMAGE, "/cam1/aligned_depth_to_color/image_raw": msgs.IMAGE,
              "/vidyn/sim/cam3/mask": msgs.IMAGE, "/cam2/color/camera_info": msgs.CAMERA_INFO,
              msgs.OBJECT_POSES_TOPIC: msgs.POSE_ARRAY, "/clock": msgs.CLOCK}
    play = graph.parse_graph({"nodes": [{"node": "bag_player", "parameters": {
        "bag": str(bag), "clock": True, "wait_for_subscribers_s": 5.0, "qos": "reliable",
        "topics": [t for t in topics if t != "/clock"]}}]})
    run, col = _collect(play, topics)
    assert run.reason == "done"
    for topic in topics:
        if topic == "/clock":
            continue
        assert col.got[topic] == [raw for _s, raw in expected[topic]], f"{topic}: replayed bytes differ"
        assert [_stamp(raw) for raw in col.got[topic]] == frame_stamps
    assert [_stamp(raw) for raw in col.got["/clock"]] == frame_stamps
    # Original timing: frames 1/30 s apart in the bag arrive about 1/30 s apart.
    period = col.period("/cam0/color/image_raw")
    assert 0.8 / 30 < period < 1.5 / 30, f"frames 1/30 s apart in the bag were published {period:.4f} s apart"


def test_recorder_zstd_bag_reads_back_identically_with_the_independent_mcap_reader(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    n_frames = 3
    bag = tmp_path / "bag"
    record = graph.parse_graph({"use_sim_time": True, "nodes": [
        {"node": "sim_rig", "parameters": {"scenario": "push", "render_scale": 0.25, "realtime": False,
                                           "max_frames": n_frames, "start_delay_s": 1.0}},
        {"node": "recorder", "parameters": {"all": True, "output": str(bag), "compression": "zstd"}},
    ]})
    run = graph.run_graph(record, domain_id=DOMAIN, install_signal_handlers=False)
    assert run.reason == "done"
    assert run.summaries["sim_rig"]["frames"] == n_frames

    with BagReader(bag) as r:
        assert not r.recovered
        ours = [(topic, stamp, bytes(raw)) for topic, _t, stamp, raw in r.messages()]
    (mcap_file,) = bag.glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = make_reader(f)
        assert {c.compression for c in reader.get_summary().chunk_indexes} == {"zstd"}
        theirs = [(ch.topic, m.log_time, bytes(m.data)) for _s, ch, m in reader.iter_messages(log_time_order=True)]
    cams = [(t, s) for t, s, _ in ours if t == "/cam0/aligned_depth_to_color/image_raw"]
    assert len(cams) == n_frames  # every frame recorded, not just a readable empty bag
    assert len(ours) == len(theirs) > 4 * 4 * n_frames
    key = lambda m: (m[1], m[0], m[2])  # noqa: E731  same order for both readers (ties in log time by topic)
    assert sorted(ours, key=key) == sorted(theirs, key=key)


def test_sim_rig_waits_for_the_graph_to_spin_before_its_start_delay() -> None:
    """A node that takes long to build after the rig (like the scene node loading torch) must not make the rig
    publish into a graph that is not spinning yet: the start delay counts from the first spin, so a subscriber built
    last still gets every frame."""
    n_frames = 4
    spec = graph.parse_graph({"nodes": [{"node": "sim_rig", "parameters": {
        "scenario": "push", "render_scale": 0.25, "realtime": False, "max_frames": n_frames, "start_delay_s": 1.0,
        "masks": False, "ground_truth": False, "qos": "reliable"}}]})

    def slow_extra(ctx: Context) -> list[Node]:
        time.sleep(2.0)  # longer than the rig's start delay plus rendering 4 frames
        return [Collector(ctx, {"/cam0/color/image_raw": msgs.IMAGE})]

    box: list[Node] = []
    run = graph.run_graph(spec, domain_id=DOMAIN, install_signal_handlers=False,
                          extra_nodes=lambda ctx: box.extend(slow_extra(ctx)) or box)
    assert run.reason == "done" and run.summaries["sim_rig"]["frames"] == n_frames
    assert [_stamp(raw) for raw in box[0].got["/cam0/color/image_raw"]] == [
        round((k + 1) * 1e9 / 30) for k in range(n_frames)]


# --------------------------------------------------------------------------------------------- bag player options
@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two topics, 10 TwistStamped each, 0.1 s apart (bag duration 0.9 s), and a recorded /clock."""
    path = tmp_path_factory.mktemp("player") / "bag"
    with BagWriter(path) as w:
        for k in range(10):
            stamp = 1_000_000_000 + k * 100_000_000
            w.write("/t1", msgs.TWIST_STAMPED, msgs.twist_stamped_msg([k, 0, 0], [0, 0, 0], stamp), stamp)
            w.write("/t2", msgs.TWIST_STAMPED, msgs.twist_stamped_msg([0, k, 0], [0, 0, 0], stamp + 1), stamp + 1)
            w.write("/clock", msgs.CLOCK, msgs.clock_msg(stamp), stamp)
    return path


def _bag_bytes(path: Path, topic: str) -> list[bytes]:
    with BagReader(path) as r:
        return [bytes(raw) for _t, _m, _s, raw in r.messages([topic])]


def test_bag_player_rate_filter_remap_clock(small_bag: Path) -> None:
    topics = {"/r1": msgs.TWIST_STAMPED, "/t1": msgs.TWIST_STAMPED, "/t2": msgs.TWIST_STAMPED, "/clock": msgs.CLOCK}
    spec = graph.parse_graph({"nodes": [{"node": "bag_player", "parameters": {
        "bag": str(small_bag), "rate": 2.0, "topics": ["/t1"], "remap": ["/t1:=/r1"], "clock": True,
        "wait_for_subscribers_s": 5.0}}]})
    run, col = _collect(spec, topics)
    assert run.reason == "done"
    assert col.got["/r1"] == _bag_bytes(small_bag, "/t1")  # remapped, bytes unchanged
    assert col.got["/t1"] == [] and col.got["/t2"] == []  # filtered out / renamed
    assert [_stamp(c) for c in col.got["/clock"]] == [1_000_000_000 + k * 100_000_000 for k in range(10)]
    period = col.period("/r1")
    assert 0.04 < period < 0.075, f"messages 0.1 s apart at rate 2 were published {period:.4f} s apart"


def test_bag_player_clock_replaces_the_recorded_clock(small_bag: Path) -> None:
    spec = graph.parse_graph({"nodes": [{"node": "bag_player", "parameters": {
        "bag": str(small_bag), "rate": 4.0, "clock": True, "wait_for_subscribers_s": 5.0}}]})
    # Subscribe to every topic the player publishes: it waits until each of its publishers has a subscriber.
    run, col = _collect(spec, {"/clock": msgs.CLOCK, "/t1": msgs.TWIST_STAMPED, "/t2": msgs.TWIST_STAMPED})
    assert run.summaries["bag_player"]["counts"] == {"/t1": 10, "/t2": 10}
    ticks = [_stamp(c) for c in col.got["/clock"]]
    # one tick per distinct log time (t1 at s, t2 at s + 1 ns), none duplicated by the recorded /clock
    assert ticks == sorted({1_000_000_000 + k * 100_000_000 + d for k in range(10) for d in (0, 1)})
    assert len(col.got["/t2"]) == 10


def test_bag_player_loop(small_bag: Path) -> None:
    topics = {"/t2": msgs.TWIST_STAMPED}
    spec = graph.parse_graph({"nodes": [{"node": "bag_player", "parameters": {
        "bag": str(small_bag), "rate": 6.0, "loop": True, "topics": ["/t2"], "wait_for_subscribers_s": 5.0}}]})
    one_pass = _bag_bytes(small_bag, "/t2")
    # Stop once two passes arrived (the duration is only a time-out for a broken player).
    run, col = _collect(spec, topics, duration_s=60.0, until=lambda nodes: nodes[-1].count() >= 2 * len(one_pass))
    assert run.reason == "done"
    assert run.summaries["bag_player"]["loops"] >= 2
    got = col.got["/t2"]
    assert len(got) >= 2 * len(one_pass)
    assert got[: 2 * len(one_pass)] == one_pass * 2  # each pass replays the same bytes in the same order


# ------------------------------------------------------------------------------------------ processes and signals
def _env() -> dict[str, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), MUJOCO_GL="osmesa", PYTHONUNBUFFERED="1")
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)  # the nodes set the shipped SHM profile themselves
    return env


@pytest.fixture
def ctx_node(ros_context: Context):
    node = Node("test_peer", context=ros_context)
    yield ros_context, node
    node.destroy_node()


def _spin_until(ctx: Context, node: Node, cond, timeout: float) -> bool:
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    t_end = time.monotonic() + timeout
    try:
        while time.monotonic() < t_end:
            if cond():
                return True
            ex.spin_once(timeout_sec=0.02)
        return cond()
    finally:
        ex.remove_node(node)
        ex.shutdown()


def test_recorder_closes_bag_on_sigterm(tmp_path: Path, ctx_node) -> None:
    ctx, node = ctx_node
    bag = tmp_path / "sig_bag"
    topic = "/vidyn_test/sigterm"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidyn_ros.nodes.recorder", "--ros-args",
         "-p", f"topics:=['{topic}:{msgs.TWIST_STAMPED}']", "-p", f"output:={bag}", "-p", "flush_period_s:=0.0"],
        env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    recorded = [0]  # what the recorder reports on /diagnostics: the sync point before the signal (no fixed sleep)

    def on_diag(raw: bytes) -> None:
        for st in msgs.deserialize(raw, msgs.DIAGNOSTIC_ARRAY).status:
            if st.name.endswith("recorder"):
                values = {kv.key: kv.value for kv in st.values}
                recorded[0] = max(recorded[0], int(values.get("recorded", 0)))

    node.create_subscription(_ros.msg_class(msgs.DIAGNOSTIC_ARRAY), "/diagnostics", on_diag, 10, raw=True)
    try:
        pub = node.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), topic, _ros.reliable_qos())
        assert _spin_until(ctx, node, lambda: pub.get_subscription_count() > 0, 30.0), "recorder never subscribed"
        # The writer sees the reader before the reader has matched the writer: give discovery a moment to finish.
        _spin_until(ctx, node, lambda: False, 1.0)
        sent = []
        for k in range(25):
            raw = msgs.serialize(msgs.twist_stamped_msg([k * 0.01, 0, 0], [0, 0, 0], (k + 1) * 10_000_000))
            pub.publish(raw)
            sent.append(raw)
            time.sleep(0.01)
        # The recorder got all of them (flushing is off: they are in its write buffer, not yet in the file).
        assert _spin_until(ctx, node, lambda: recorded[0] >= len(sent), 30.0), f"recorder reported {recorded[0]}"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert (bag / "metadata.yaml").is_file(), "bag not closed (no metadata.yaml)"
    with BagReader(bag) as r:
        assert not r.recovered
        got = [(s, bytes(raw)) for _t, _m, s, raw in r.messages([topic])]
    assert [raw for _s, raw in got] == sent
    assert [s for s, _ in got] == [(k + 1) * 10_000_000 for k in range(25)]  # log time = header stamp


def test_cross_process_640x480_images_with_shm_profile(tmp_path: Path, ctx_node) -> None:
    """bag_player in a second process (its main(), SHM profile) -> this process; 30 rgb8 640x480 images."""
    ctx, node = ctx_node
    bag = tmp_path / "images"
    rng = np.random.default_rng(0)
    topic = "/vidyn_test/xproc/color/image_raw"
    sent = []
    with BagWriter(bag) as w:
        for k in range(30):
            img = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
            stamp = (k + 1) * 33_333_333
            raw = msgs.serialize(msgs.image_msg(img, stamp, "cam0_color_optical_frame", "rgb8"))
            w.write(topic, msgs.IMAGE, raw, stamp)
            sent.append(raw)
    got: list[bytes] = []
    sent_at: list[float] = []  # DDS source timestamps: the player's pacing, whatever this process's load

    def on_image(raw: bytes, info: dict) -> None:
        got.append(bytes(raw))
        sent_at.append(info["source_timestamp"] / 1e9)

    node.create_subscription(_ros.msg_class(msgs.IMAGE), topic, on_image, _ros.reliable_qos(depth=50), raw=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidyn_ros.nodes.bag_player", "--ros-args", "-p", f"bag:={bag}",
         "-p", "wait_for_subscribers_s:=30.0", "-p", "qos:=reliable"],
        env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _spin_until(ctx, node, lambda: len(got) >= len(sent) or proc.poll() is not None, 60.0)
        _spin_until(ctx, node, lambda: len(got) >= len(sent), 2.0)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert got == sent  # all 30 images, byte-identical, in order
    period = float(np.median(np.diff(sent_at)))
    assert 0.8 / 30 < period < 1.5 / 30, f"a 30 fps bag was published {period:.4f} s apart"


# ----------------------------------------------------------------------------------------------- pusher commands
class Commander(Node):
    """Publishes /vidyn/cmd (0.1 m/s along +x) on sim time until ``until_s``, then goes silent."""

    def __init__(self, ctx: Context, until_s: float) -> None:
        super().__init__("commander", context=ctx,
                         parameter_overrides=_ros.parameter_overrides({"use_sim_time": True}))
        self.until_ns = int(until_s * 1e9)
        self.pub = self.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), msgs.CMD_TOPIC, _ros.reliable_qos())
        # A wall-clock timer: a sim-time timer would also wait for /clock to reach this node through a busy executor.
        from rclpy.clock import Clock, ClockType

        self.create_timer(0.02, self.tick, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def tick(self) -> None:
        now = _ros.now_ns(self)
        if 0 < now < self.until_ns:
            self.pub.publish(msgs.serialize(msgs.twist_stamped_msg([0.1, 0, 0], [0, 0, 0], now)))


def test_sim_rig_follows_cmd_and_stops_when_stale() -> None:
    spec = graph.parse_graph({"use_sim_time": True, "nodes": [
        {"node": "sim_rig", "parameters": {"scenario": "push", "render_scale": 0.25, "realtime": True,
                                           "max_frames": 36, "start_delay_s": 1.0, "cmd_timeout_s": 0.3,
                                           "masks": False}},
    ]})
    box: list[Node] = []

    def extra(ctx: Context) -> list[Node]:
        box.extend([Collector(ctx, {msgs.OBJECT_POSES_TOPIC: msgs.POSE_ARRAY}), Commander(ctx, until_s=0.5)])
        return box

    run = graph.run_graph(spec, domain_id=DOMAIN, install_signal_handlers=False, extra_nodes=extra)
    summary = run.summaries["sim_rig"]
    # ~25 commands on an idle machine; a starved executor delivers fewer, and the motion checks below are the point
    assert summary["frames"] == 36 and summary["cmds_received"] >= 3
    assert summary["stale_events"] == 1
    poses = [(_stamp(raw) / 1e9, msgs.object_poses_from_msg(msgs.deserialize(raw, msgs.POSE_ARRAY)))
             for raw in box[0].got[msgs.OBJECT_POSES_TOPIC]]
    assert len(poses) == 36
    x = np.array([p[-1].position[0] for _t, p in poses])  # the pusher is the last object (id K+1)
    t = np.array([t for t, _p in poses])
    moving = (t > 0.15) & (t < 0.45)
    np.testing.assert_allclose(np.diff(x)[moving[1:]], 0.1 / 30, atol=2e-4)  # 0.1 m/s while commanded
    # Commands end at 0.5 s and are stale 0.3 s later (a timeout that a busy executor's delivery jitter cannot
    # reach while commands still flow); 0.1 s of slack for a command delivered late.
    stopped = t > 0.95
    assert stopped.sum() >= 7 and np.ptp(x[stopped]) < 1e-6
    assert 0.04 < x[stopped][0] - x[0] < 0.085
