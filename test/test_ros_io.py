"""Recording, replay, TF, namespaces and camera sets as a ROS user meets them, over real DDS (rclpy + Fast DDS):
live sqlite3 recording; one time base per bag; replay past an outlier stamp; /tf_static from the sim rig, the bag
player and the recorder; two rigs side by side in two namespaces; a scenario whose cameras are not cam0..cam3; the
scene on realsense-ros topic layouts with colour and depth stamped apart.

Every test runs on this module's ROS domain (test/conftest.py ros_domain), apart from the other DDS test modules.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ros_domain
from rclpy.context import Context
from rclpy.node import Node

from vidyn_ros import graph, msgs
from vidyn_ros.bags import SIM_TIME_LIMIT_NS, BagReader, BagWriter, bag_summary, format_summary
from vidyn_ros.nodes import _ros

DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)
os.environ.setdefault("MUJOCO_GL", "osmesa")

SMALL_RIG = {"scenario": "push", "render_scale": 0.25, "realtime": False, "start_delay_s": 1.0}


class Collector(Node):
    """Raw subscriptions (topic -> type); keeps the bytes. ``latched`` topics subscribe transient-local, the others
    best effort."""

    def __init__(self, ctx: Context, topics: dict[str, str], latched: tuple[str, ...] = (), name: str = "collector",
                 namespace: str | None = None) -> None:
        super().__init__(name, context=ctx, namespace=namespace)
        self.got: dict[str, list[bytes]] = {t: [] for t in topics}
        for topic, msgtype in topics.items():
            # best effort hears reliable and best-effort publishers alike (masks are sensor data)
            qos = _ros.latched_qos(depth=10) if topic in latched else _ros.sensor_qos(depth=200)
            self.create_subscription(_ros.msg_class(msgtype), topic, functools.partial(self._on, topic), qos,
                                     raw=True)

    def _on(self, topic: str, raw: bytes) -> None:
        self.got[topic].append(bytes(raw))


def _run(spec: graph.GraphSpec, extra=None, **kw) -> tuple[graph.GraphRun, list]:
    box: list = []

    def make(ctx: Context) -> list:
        box.extend(extra(ctx) if extra else [])
        return box

    run = graph.run_graph(spec, domain_id=DOMAIN, install_signal_handlers=False, extra_nodes=make, **kw)
    return run, box


def _tf(raw: bytes) -> dict[str, tuple[str, np.ndarray]]:
    """child frame -> (parent, 4x4) of one TFMessage."""
    return {c: (p, T) for p, c, T in msgs.transforms_from_tf_msg(msgs.deserialize(raw, msgs.TF_MESSAGE))}


# ----------------------------------------------------------------------------------------------- recording (issue 8)
def test_live_sqlite3_recording_next_to_a_running_graph(tmp_path: Path) -> None:
    """Defect: the recorder wrote from executor threads into an sqlite3 connection made on the main thread ('SQLite
    objects created in a thread can only be used in that same thread'): 0 messages, exit 1."""
    bag = tmp_path / "bag"
    spec = graph.parse_graph({"use_sim_time": True, "nodes": [
        {"node": "sim_rig", "parameters": {**SMALL_RIG, "max_frames": 3, "ground_truth": False}},
        {"node": "recorder", "parameters": {"all": True, "output": str(bag), "storage": "sqlite3",
                                            "compression": "none"}},
    ]})
    run, _ = _run(spec)
    assert run.reason == "done" and not run.fatal
    with BagReader(bag) as r:
        assert r.storage == "sqlite3" and not r.recovered
        assert r.topics["/cam0/color/image_raw"].count == 3
        assert len(list(r.multiview_frames())) == 3


class WallTalker(Node):
    """A node without use_sim_time in a sim-time graph: stamps its messages with wall time."""

    def __init__(self, ctx: Context) -> None:
        super().__init__("wall_talker", context=ctx)
        self.pub = self.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), "/wall_talker", _ros.reliable_qos())
        from rclpy.clock import Clock, ClockType

        self.create_timer(0.05, self.tick, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def tick(self) -> None:
        self.pub.publish(msgs.serialize(msgs.twist_stamped_msg([0, 0, 0], [0, 0, 0], time.time_ns())))


def test_recorder_next_to_a_sim_graph_records_one_time_base_and_tf(tmp_path: Path) -> None:
    """Defect: `vidyn record -a` (no use_sim_time) next to a sim graph logged its own /diagnostics in wall time beside
    sim-time messages: `vidyn info` showed a duration of 1.8e9 s. Now the recorder follows /clock, and a wall-time
    stamp from a node without use_sim_time is logged at its sim arrival time."""
    bag = tmp_path / "bag"
    calib = tmp_path / "calib.yaml"
    spec = graph.parse_graph({"nodes": [
        {"node": "sim_rig", "parameters": {**SMALL_RIG, "max_frames": 4, "use_sim_time": True,
                                           "calibration_out": str(calib)}},
        {"node": "recorder", "parameters": {"all": True, "output": str(bag), "calibration": str(calib)}},
    ]})
    run, _ = _run(spec, extra=lambda ctx: [WallTalker(ctx)])
    assert run.reason == "done"
    with BagReader(bag) as r:
        assert 0 <= r.start_ns <= r.end_ns < SIM_TIME_LIMIT_NS and r.duration_s < 5.0
        assert r.topics["/cam0/color/image_raw"].count == 4
        assert r.topics["/diagnostics"].count >= 1 and r.topics["/wall_talker"].count >= 1
        assert all(s < SIM_TIME_LIMIT_NS for *_x, s, _d in r.messages(["/diagnostics", "/wall_talker"]))
        assert r.topics[msgs.TF_STATIC_TOPIC].msgtype == msgs.TF_MESSAGE  # the rig's latched /tf_static, recorded
    assert "mix sim time and wall time" not in format_summary(bag_summary(bag))

    # The bag player republishes the recorded /tf_static latched: a subscriber that joins later still gets it.
    play = graph.parse_graph({"nodes": [{"node": "bag_player", "parameters": {
        "bag": str(bag), "topics": ["/cam0/color/camera_info"], "wait_for_subscribers_s": 5.0}}]})
    run, box = _run(play, extra=lambda ctx: [Collector(ctx, {"/cam0/color/camera_info": msgs.CAMERA_INFO,
                                                             msgs.TF_STATIC_TOPIC: msgs.TF_MESSAGE},
                                                       latched=(msgs.TF_STATIC_TOPIC,))])
    from vidyn_ros.rig.calibration_io import load_rig_calibration

    tf = _tf(box[0].got[msgs.TF_STATIC_TOPIC][-1])
    for cam, T in load_rig_calibration(calib).items():
        parent, T_world_link = tf[f"{cam}_link"]
        assert parent == "world" and tf[f"{cam}_color_optical_frame"][0] == f"{cam}_link"
        np.testing.assert_allclose(T_world_link @ tf[f"{cam}_color_optical_frame"][1], T, atol=1e-5)


class LateSimGraph(Node):
    """A simulation that appears ``after_s`` after the recorder (a sim graph launched once `vidyn record` runs, or
    discovered late on a busy machine): then publishes /clock (unless ``clock`` is false) and a topic stamped in sim
    time, every 50 ms of sim time."""

    def __init__(self, ctx: Context, after_s: float, clock: bool = True) -> None:
        super().__init__("late_sim", context=ctx)
        from rclpy.clock import Clock, ClockType

        self.t0, self.after_s, self.clock, self.k = time.monotonic(), after_s, clock, 0
        self.pubs: tuple | None = None
        self.create_timer(0.05, self.tick, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def tick(self) -> None:
        if time.monotonic() - self.t0 < self.after_s:
            return
        if self.pubs is None:
            self.pubs = (self.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), "/late", _ros.reliable_qos()),
                         self.create_publisher(_ros.msg_class(msgs.CLOCK), "/clock", 10) if self.clock else None)
        self.k += 1
        stamp = self.k * 50_000_000
        if self.pubs[1] is not None:
            self.pubs[1].publish(msgs.serialize(msgs.clock_msg(stamp)))
        self.pubs[0].publish(msgs.serialize(msgs.twist_stamped_msg([0, 0, 0], [0, 0, 0], stamp)))


@pytest.mark.parametrize("time_base", ["auto", "wall"])
def test_recorder_started_before_a_sim_graph_keeps_one_time_base(tmp_path: Path, time_base: str) -> None:
    """Defect: `vidyn record -a` started before `vidyn launch sim` settled on wall time 1 s after its own start
    (clock_wait_s), recorded its /diagnostics in wall time and then the rig's sim-stamped messages at their stamps:
    a bag from 0 s to 2026 (the same on a busy machine where DDS discovery of a running graph took 2 s). Now auto
    waits for the graph, and a bag asked to be wall time (--time-base wall) logs sim-stamped messages at their
    arrival."""
    bag = tmp_path / "bag"
    spec = graph.parse_graph({"nodes": [{"node": "recorder", "parameters": {
        "all": True, "output": str(bag), "time_base": time_base, "clock_wait_s": 0.5}}]})
    run, _ = _run(spec, extra=lambda ctx: [LateSimGraph(ctx, after_s=2.0, clock=time_base == "auto")],
                  until=lambda nodes: nodes[0].counts.get("/late", 0) >= 5 and nodes[0].counts.get("/diagnostics"),
                  duration_s=60.0)
    assert run.reason == "done", run.reason
    with BagReader(bag) as r:
        stamps = [s for *_x, s, _d in r.messages()]
        assert r.topics["/late"].count >= 5 and r.topics["/diagnostics"].count >= 1
    if time_base == "auto":  # the graph's sim time
        assert max(stamps) < SIM_TIME_LIMIT_NS, stamps
    else:  # wall time, as asked: the sim-stamped messages at their arrival
        assert min(stamps) >= SIM_TIME_LIMIT_NS, stamps
    assert "mix sim time and wall time" not in format_summary(bag_summary(bag))


def test_replay_skips_an_outlier_gap_instead_of_hanging(tmp_path: Path) -> None:
    """Defect: a bag with sim-time messages and a few wall-time ones (1.8e9 s later) never finished replaying."""
    bag = tmp_path / "mixed"
    wall = 1_800_000_000 * 10**9
    with BagWriter(bag) as w:
        for k, t in enumerate([100_000_000, 200_000_000, 300_000_000]):
            w.write("/a", msgs.TWIST_STAMPED, msgs.twist_stamped_msg([k, 0, 0], [0, 0, 0], t), t)
        for k, t in enumerate([wall, wall + 100_000_000]):
            w.write("/b", msgs.TWIST_STAMPED, msgs.twist_stamped_msg([0, k, 0], [0, 0, 0], t), t)
    assert "mix sim time and wall time" in format_summary(bag_summary(bag))  # `vidyn info` says what is wrong
    spec = graph.parse_graph({"nodes": [{"node": "bag_player", "parameters": {
        "bag": str(bag), "wait_for_subscribers_s": 5.0, "max_gap_s": 10.0}}]})
    t0 = time.monotonic()
    run, box = _run(spec, extra=lambda ctx: [Collector(ctx, {"/a": msgs.TWIST_STAMPED, "/b": msgs.TWIST_STAMPED})],
                    duration_s=30.0)
    assert run.reason == "done" and time.monotonic() - t0 < 20.0
    assert run.summaries["bag_player"]["counts"] == {"/a": 3, "/b": 2}
    assert run.summaries["bag_player"]["gaps_skipped"] == 1
    assert len(box[0].got["/a"]) == 3 and len(box[0].got["/b"]) == 2


# ------------------------------------------------------------------------------------------------------ TF (issue 7)
def test_bag_player_publishes_tf_static_from_the_bag_calibration(tmp_path: Path) -> None:
    from vidyn_ros.geometry import look_at

    poses = {"cam0": look_at(np.array([0.5, 0.1, 0.6]), np.zeros(3)),
             "cam1": look_at(np.array([-0.4, 0.3, 0.5]), np.zeros(3))}
    bag = tmp_path / "bag"
    with BagWriter(bag) as w:
        w.write_calibration(poses)
        for k in range(3):
            w.write("/t", msgs.CLOCK, msgs.clock_msg((k + 1) * 10**8), (k + 1) * 10**8)
    spec = graph.parse_graph({"nodes": [{"node": "bag_player", "parameters": {"bag": str(bag),
                                                                              "wait_for_subscribers_s": 5.0}}]})
    run, box = _run(spec, extra=lambda ctx: [Collector(ctx, {"/t": msgs.CLOCK, "/tf_static": msgs.TF_MESSAGE},
                                                       latched=("/tf_static",))])
    assert run.reason == "done" and box[0].got["/tf_static"]
    tf = _tf(box[0].got["/tf_static"][-1])
    assert set(tf) == {"cam0_link", "cam0_color_optical_frame", "cam1_link", "cam1_color_optical_frame"}
    for cam, T in poses.items():
        np.testing.assert_allclose(tf[f"{cam}_link"][1] @ tf[f"{cam}_color_optical_frame"][1], T, atol=1e-6)
        # realsense-ros's link -> optical rotation, (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5)
        np.testing.assert_allclose(tf[f"{cam}_color_optical_frame"][1][:3, :3], msgs.R_LINK_OPTICAL, atol=1e-12)


def test_tfmessage_from_the_tf2_msgs_build_is_byte_identical_to_msgs() -> None:
    """tf2_msgs comes from a ROS distro or from scripts/build_tf2_msgs.sh: the same wire format as vidyn_ros.msgs."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import serialize_message
    from tf2_msgs.msg import TFMessage

    ts = TransformStamped()
    ts.header.frame_id, ts.child_frame_id = "world", "cam0_link"
    ts.header.stamp.sec, ts.header.stamp.nanosec = 3, 4
    ts.transform.translation.x, ts.transform.rotation.w = 0.5, 1.0
    ours = msgs.tf_message([("world", "cam0_link", np.diag([1.0, 1, 1, 1]) + np.eye(4, k=3) * 0.5)], 3_000_000_004)
    assert serialize_message(TFMessage(transforms=[ts])) == msgs.serialize(ours)


# -------------------------------------------------------------------------------------------------------- namespaces
def test_two_rigs_side_by_side_in_two_namespaces() -> None:
    """Two simulated rigs in namespaces rig_a and rig_b (plus a segmenter for rig_a only): each rig's topics and
    /tf_static live in its namespace, nothing lands on the root names, and rig_a's segmenter hears only rig_a."""
    n = 3
    spec = graph.parse_graph({"nodes": [
        {"node": "sim_rig", "name": "rig_a", "namespace": "rig_a",
         "parameters": {**SMALL_RIG, "max_frames": n, "clock": False, "ground_truth": False, "masks": False}},
        {"node": "sim_rig", "name": "rig_b", "namespace": "rig_b",
         "parameters": {**SMALL_RIG, "scenario": "cube_stack", "max_frames": n + 2, "clock": False,
                        "ground_truth": False, "masks": False}},
        {"node": "segmenter", "namespace": "rig_a", "parameters": {"scenario": "push", "queue": 10}},
    ]})
    topics = {"/rig_a/cam0/color/image_raw": msgs.IMAGE, "/rig_b/cam0/color/image_raw": msgs.IMAGE,
              "/cam0/color/image_raw": msgs.IMAGE, "/rig_a/cam1/mask": msgs.IMAGE, "/rig_b/cam1/mask": msgs.IMAGE,
              "/rig_a/tf_static": msgs.TF_MESSAGE, "/rig_b/tf_static": msgs.TF_MESSAGE}
    run, box = _run(spec, extra=lambda ctx: [Collector(ctx, topics, latched=("/rig_a/tf_static", "/rig_b/tf_static"))],
                    until=lambda nodes: len(nodes[-1].got["/rig_a/cam1/mask"]) >= n, duration_s=60.0)
    assert run.reason == "done" and not run.fatal
    got = box[0].got
    assert len(got["/rig_a/cam0/color/image_raw"]) == n and len(got["/rig_b/cam0/color/image_raw"]) == n + 2
    assert got["/cam0/color/image_raw"] == []  # nothing on the root namespace
    assert len(got["/rig_a/cam1/mask"]) == n and got["/rig_b/cam1/mask"] == []
    assert {msgs.stamp_to_ns(msgs.deserialize(m, msgs.IMAGE).header) for m in got["/rig_a/cam1/mask"]} == {
        msgs.stamp_to_ns(msgs.deserialize(m, msgs.IMAGE).header) for m in got["/rig_a/cam0/color/image_raw"]}
    from vidyn_ros.rig.scenario import load_scenario

    for ns, scenario in (("rig_a", "push"), ("rig_b", "cube_stack")):
        tf = _tf(got[f"/{ns}/tf_static"][-1])
        for cam in load_scenario(scenario).cameras:
            np.testing.assert_allclose(tf[f"{cam.name}_link"][1] @ tf[f"{cam.name}_color_optical_frame"][1],
                                       cam.T_world_cam, atol=1e-9)


class NamespacedAcker(Node):
    """The consumer of a rig in namespace ``ns`` in lockstep: acknowledges each cam0 colour frame on <ns>/test_ack."""

    def __init__(self, ctx: Context, ns: str) -> None:
        super().__init__("acker", context=ctx, namespace=ns)
        from std_msgs.msg import Header

        self.header, self.acked = Header, 0
        self.pub = self.create_publisher(Header, "test_ack", _ros.reliable_qos())
        self.create_subscription(_ros.msg_class(msgs.IMAGE), "cam0/color/image_raw", self._on_frame,
                                 _ros.reliable_qos(), raw=True)

    def _on_frame(self, raw: bytes) -> None:
        ack = self.header()
        ack.stamp.sec, ack.stamp.nanosec = divmod(msgs.stamp_to_ns(msgs.deserialize(raw, msgs.IMAGE).header), 10**9)
        self.pub.publish(ack)
        self.acked += 1


def test_a_namespaced_rig_in_lockstep_waits_for_its_own_consumer() -> None:
    """Defect: sim_rig resolved lockstep_topic as an absolute name while its consumer (the scene, the mpc) publishes
    relative to the namespace: a rig in /rig_a waited for /vidyn/scene/gaussians, never for /rig_a/...; after
    lockstep_first_timeout_s it ran without lockstep."""
    spec = graph.parse_graph({"nodes": [{"node": "sim_rig", "name": "rig_a", "namespace": "rig_a", "parameters": {
        **SMALL_RIG, "max_frames": 3, "clock": False, "ground_truth": False, "masks": False, "qos": "reliable",
        "lockstep_topic": "/test_ack", "lockstep_first_timeout_s": 20.0}}]})
    run, box = _run(spec, extra=lambda ctx: [NamespacedAcker(ctx, "rig_a")], duration_s=60.0)
    assert run.reason == "done" and not run.fatal
    assert run.summaries["rig_a"]["frames"] == 3 and box[0].acked == 3
    assert run.summaries["rig_a"]["lockstep_timeouts"] == 0


# ------------------------------------------------------------------------------------- camera set from the rig
def test_sim_graph_with_a_scenario_whose_cameras_are_not_cam0_to_cam3(tmp_path: Path) -> None:
    """Defect: `vidyn launch sim --set sim_rig.scenario=my.yaml` with cameras 'left'/'right'/'top' stopped with
    "scene: no pose for camera(s) [...]". Segmenter and scene now take the camera set from the rig."""
    from vidyn_ros.paths import config_dir

    doc = yaml.safe_load((config_dir() / "scenarios" / "push.yaml").read_text())
    doc["duration_s"] = 1.0
    doc["cameras"] = {"width": 640, "height": 480, "poses": [
        {"name": "left", "position": [0.0, 0.55, 0.5], "look_at": [0, 0, 0]},
        {"name": "right", "position": [0.0, -0.55, 0.5], "look_at": [0, 0, 0]},
        {"name": "top", "position": [0.45, 0.0, 0.6], "look_at": [0, 0, 0]}]}
    my = tmp_path / "my.yaml"
    my.write_text(yaml.safe_dump(doc))
    out = tmp_path / "sim"
    spec = graph.apply_overrides(graph.load_graph("sim"), [
        f"sim_rig.scenario={my}", "sim_rig.render_scale=0.25", "sim_rig.realtime=false", "sim_rig.max_frames=2",
        "sim_rig.lockstep_topic=/vidyn/scene/gaussians", f"sim_rig.calibration_out={out / 'calib.yaml'}",
        f"recorder.output={out / 'bag'}", f"recorder.calibration={out / 'calib.yaml'}",
        f"segmenter.calibration={out / 'calib.yaml'}", "segmenter.stride=1",
        f"scene.calibration={out / 'calib.yaml'}", "scene.image_downscale=1", "scene.budget=800",
        "scene.init_iters=3", "scene.save_ply=",
    ])
    run = graph.run_graph(spec, domain_id=DOMAIN, install_signal_handlers=False, duration_s=120.0)
    assert run.reason == "done" and not run.fatal, run.fatal
    with BagReader(out / "bag") as r:
        assert r.camera_names() == ["left", "right", "top"]
        for cam in ("left", "right", "top"):
            assert r.topics[f"/{cam}/mask"].count == 2  # the segmenter on every camera of the rig
            assert r.topics[f"/vidyn/scene/render/{cam}"].count >= 1  # the scene too
        assert r.topics["/vidyn/scene/gaussians"].count == 2


# ------------------------------------------------------------------------------------------ realsense-ros layouts
class FramePublisher(Node):
    """Publishes simulated frames as a realsense-ros driver would: under ``prefix(cam)`` topic prefixes, depth stamped
    ``depth_offset_ns`` apart from colour (enable_sync off), masks (a segmenter's) with the colour stamp."""

    def __init__(self, ctx: Context, frames: list, prefix, depth_offset_ns: int) -> None:
        super().__init__("fake_realsense_ros", context=ctx)
        self.items = []
        for rf in frames:
            out = []
            for v in rf.frame.views:
                p, t = prefix(v.camera.name), v.stamp_ns
                fid = msgs.camera_frame_id(p)
                out += [(f"/{p}/color/camera_info", msgs.CAMERA_INFO, msgs.camera_info_msg(v.camera, t)),
                        (f"/{p}/color/image_raw", msgs.IMAGE, msgs.image_msg(v.color, t, fid, "rgb8")),
                        (f"/{p}/aligned_depth_to_color/image_raw", msgs.IMAGE,
                         msgs.depth_msg(v.depth, t + depth_offset_ns, fid)),
                        (f"/{p}/mask", msgs.IMAGE, msgs.mask_msg(v.mask, t, fid))]
            self.items.append(out)
        self.pubs = {topic: self.create_publisher(_ros.msg_class(mt), topic, _ros.reliable_qos(10))
                     for topic, mt, _m in self.items[0]}
        self.sent = 0
        self.t0 = time.monotonic()
        from rclpy.clock import Clock, ClockType

        self.create_timer(0.1, self.tick, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def tick(self) -> None:
        # one frame a second after 1.5 s of discovery (the scene initialises on the first one)
        if self.sent < len(self.items) and time.monotonic() - self.t0 > 1.5 + self.sent:
            for topic, mt, m in self.items[self.sent]:
                self.pubs[topic].publish(msgs.serialize(m, mt))
            self.sent += 1


def _scene_on_layout(tmp_path: Path, prefix, cameras: list[str], depth_offset_ns: int) -> tuple[list, dict]:
    from vidyn_ros.rig.calibration_io import save_rig_calibration
    from vidyn_ros.rig.sim import SimRig

    with SimRig("push", seed=0, render_scale=0.25) as rig:
        frames = [rig.step() for _ in range(3)]
        poses = {c.name: c.T_world_cam for c in rig.cameras}
    calib = save_rig_calibration(tmp_path / "calib.yaml", poses)
    spec = graph.parse_graph({"nodes": [{"node": "scene", "parameters": {
        "calibration": str(calib), "cameras": cameras, "budget": 800, "init_iters": 3}}]})
    render = f"/vidyn/scene/render/{prefix('cam1')}"
    topics = {"/vidyn/scene/gaussians": msgs.POINTCLOUD2, render: msgs.IMAGE}
    run, box = _run(spec, extra=lambda ctx: [FramePublisher(ctx, frames, prefix, depth_offset_ns),
                                             Collector(ctx, topics)],
                    until=lambda nodes: len(nodes[-1].got["/vidyn/scene/gaussians"]) >= 2, duration_s=120.0)
    assert run.reason == "done", run.reason
    return box[1].got["/vidyn/scene/gaussians"], box[1].got[render]


def test_scene_on_the_flat_layout_with_depth_stamped_apart(tmp_path: Path) -> None:
    """/cam0/color/image_raw ... with aligned depth stamped 12 ms after colour (realsense-ros, enable_sync off)."""
    clouds, renders = _scene_on_layout(tmp_path, lambda cam: cam, [], 12_000_000)
    arr = msgs.pointcloud2_to_arrays(msgs.deserialize(clouds[-1], msgs.POINTCLOUD2))
    assert 600 <= len(arr["x"]) <= 800 and len(set(np.unique(arr["object_id"]).tolist()) - {0}) >= 3
    assert renders


def test_scene_on_the_realsense_ros_namespaced_layout(tmp_path: Path) -> None:
    """/camera/cam0/color/image_raw ... (realsense-ros >= 4.51: camera_namespace + camera_name), depth stamped 13 ms
    before colour; the calibration names the cameras cam0..cam3."""
    clouds, renders = _scene_on_layout(tmp_path, lambda cam: f"camera/{cam}", [f"camera/cam{k}" for k in range(4)],
                                       -13_000_000)
    cloud = msgs.deserialize(clouds[-1], msgs.POINTCLOUD2)
    arr = msgs.pointcloud2_to_arrays(cloud)
    assert 600 <= len(arr["x"]) <= 800 and len(set(np.unique(arr["object_id"]).tolist()) - {0}) >= 3
    assert renders and msgs.deserialize(renders[-1], msgs.IMAGE).header.frame_id == "cam1_color_optical_frame"
