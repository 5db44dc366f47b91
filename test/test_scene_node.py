"""scene node over real DDS: simulated frames in (raw CDR bytes, as the sim rig publishes them), Gaussians,
object markers, renders and diagnostics out."""

import contextlib
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")

rclpy = pytest.importorskip("rclpy")
from conftest import ros_domain  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from vidyn_ros import msgs  # noqa: E402
from vidyn_ros.nodes import _ros  # noqa: E402

DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)


@contextlib.contextmanager
def _graph(ctx: Context) -> Iterator[tuple[Context, MultiThreadedExecutor, list]]:
    """An executor on ``ctx`` (the ros_context fixture: this module's domain, shut down after the test); the nodes
    put into the list are closed (when they have close()) and destroyed, also when the test fails."""
    ex = MultiThreadedExecutor(num_threads=4, context=ctx)
    nodes: list = []
    try:
        yield ctx, ex, nodes
    finally:
        ex.shutdown()
        for n in nodes:
            if hasattr(n, "close"):
                n.close()
            n.destroy_node()


@pytest.fixture(scope="module")
def sim_frames():
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.sim import SimRig

    with SimRig(load_scenario("push"), seed=0, render_scale=0.25) as rig:
        rig.set_pusher_velocity([0.3, 0.0, 0.0])
        frames = [rig.step() for _ in range(4)]
        poses = {c.name: c.T_world_cam for c in rig.cameras}
    return frames, poses


def test_scene_node_publishes_gaussians_objects_renders(tmp_path, sim_frames, ros_context):
    from vidyn_ros.nodes.scene import GAUSSIANS_TOPIC, OBJECTS_TOPIC, create_node
    from vidyn_ros.rig.calibration_io import save_rig_calibration
    from vidyn_ros.scene.ply import load_ply

    frames, poses = sim_frames
    calib = save_rig_calibration(tmp_path / "rig_calibration.yaml", poses)
    ply = tmp_path / "scene.ply"
    got: dict[str, list] = {"cloud": [], "objects": [], "render": [], "diag": []}
    with _graph(ros_context) as (ctx, ex, nodes):
        scene = create_node(context=ctx, parameter_overrides=_ros.parameter_overrides({
            "calibration": str(calib), "budget": 1500, "init_iters": 3, "save_ply": str(ply),
        }))
        nodes.append(scene)
        peer = Node("scene_test_peer", context=ctx)
        nodes.append(peer)
        pubs = {}
        # the true masks stand in for the segmenter's /<cam>/mask here: this tests the node's wiring
        for topic, msgtype, _, _ in msgs.rig_frame_messages(frames[0].frame):
            pubs[topic] = peer.create_publisher(_ros.msg_class(msgtype), topic, _ros.reliable_qos(10))
        peer.create_subscription(_ros.msg_class(msgs.POINTCLOUD2), GAUSSIANS_TOPIC,
                                 lambda raw: got["cloud"].append(raw), _ros.reliable_qos(10), raw=True)
        peer.create_subscription(_ros.msg_class(msgs.MARKER_ARRAY), OBJECTS_TOPIC,
                                 lambda raw: got["objects"].append(raw), _ros.reliable_qos(10), raw=True)
        peer.create_subscription(_ros.msg_class(msgs.IMAGE), "/vidyn/scene/render/cam1",
                                 lambda raw: got["render"].append(raw), _ros.sensor_qos(10), raw=True)
        peer.create_subscription(_ros.msg_class(msgs.DIAGNOSTIC_ARRAY), "/diagnostics",
                                 lambda raw: got["diag"].append(raw), _ros.reliable_qos(10), raw=True)
        ex.add_node(scene)
        ex.add_node(peer)

        def spin(seconds: float, until=lambda: False) -> None:
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end and not until():
                ex.spin_once(timeout_sec=0.02)

        spin(1.0)  # discovery
        for i, rf in enumerate(frames):
            out = msgs.rig_frame_messages(rf.frame)
            # CameraInfo first: the synchroniser drops a set whose intrinsics have not arrived yet
            for topic, msgtype, msg, _ in sorted(out, key=lambda m: m[1] != msgs.CAMERA_INFO):
                pubs[topic].publish(msgs.serialize(msg, msgtype))
                if i == 0 and msgtype == msgs.CAMERA_INFO:
                    spin(0.05)
            spin(60.0 if i == 0 else 10.0, until=lambda n=i + 1: len(got["cloud"]) >= n)
        spin(2.0, until=lambda: len(got["objects"]) >= len(frames) and len(got["render"]) >= 1)

    assert len(got["cloud"]) >= 3, "scene node published too few Gaussian clouds"
    cloud = msgs.deserialize(got["cloud"][-1], msgs.POINTCLOUD2)
    assert cloud.header.frame_id == "world"
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "opacity", "scale_x", "scale_y", "scale_z",
                                              "rot_w", "rot_x", "rot_y", "rot_z", "object_id", "particle_id"]
    arr = msgs.pointcloud2_to_arrays(cloud)
    assert 1200 <= len(arr["x"]) <= 1500
    assert set(np.unique(arr["object_id"]).tolist()) == {0, 1, 2, 3, 4}
    assert arr["rgb"].shape == (len(arr["x"]), 3) and arr["rgb"].dtype == np.uint8
    assert np.all((arr["opacity"] > 0) & (arr["opacity"] < 1)) and np.all(arr["scale_x"] > 0)
    q = np.stack([arr["rot_w"], arr["rot_x"], arr["rot_y"], arr["rot_z"]], axis=1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # the red block (id 1) is red, the table is not
    red = arr["rgb"][arr["object_id"] == 1].astype(float).mean(axis=0)
    assert red[0] > 1.5 * red[1] and red[0] > 1.5 * red[2]

    # the pusher's Gaussians follow its ground-truth motion between the first and the last published cloud
    first = msgs.pointcloud2_to_arrays(msgs.deserialize(got["cloud"][0], msgs.POINTCLOUD2))
    stamp_first, stamp_last = msgs.stamp_to_ns(msgs.deserialize(got["cloud"][0], msgs.POINTCLOUD2).header), \
        msgs.stamp_to_ns(cloud.header)
    by_stamp = {rf.frame.stamp_ns: rf for rf in frames}
    gt = {s: next(p.position for p in by_stamp[s].object_poses if p.object_id == 4) for s in (stamp_first, stamp_last)}
    dx = float(np.mean(arr["x"][arr["object_id"] == 4]) - np.mean(first["x"][first["object_id"] == 4]))
    assert abs(dx - (gt[stamp_last][0] - gt[stamp_first][0])) < 0.005
    # particle ids are stable across messages: the same particle, followed by its id, moved with the pusher
    assert arr["particle_id"].dtype == np.uint32 and len(np.unique(arr["particle_id"])) == len(arr["x"])
    common, i0, i1 = np.intersect1d(first["particle_id"], arr["particle_id"], return_indices=True)
    assert len(common) > 1000
    on_pusher = first["object_id"][i0] == 4
    np.testing.assert_array_equal(first["object_id"][i0], arr["object_id"][i1])
    moved = arr["x"][i1][on_pusher] - first["x"][i0][on_pusher]
    assert abs(float(np.median(moved)) - (gt[stamp_last][0] - gt[stamp_first][0])) < 0.005

    markers = msgs.deserialize(got["objects"][-1], msgs.MARKER_ARRAY).markers
    kinds = {(m.id, m.type) for m in markers}
    for k in (1, 2, 3, 4):  # sphere, cube, text per object
        assert {(3 * k, 2), (3 * k + 1, 1), (3 * k + 2, 9)} <= kinds
    assert any(m.text == "id 1" for m in markers)

    img = msgs.image_to_array(msgs.deserialize(got["render"][-1], msgs.IMAGE), "rgb8")
    assert img.shape == (120, 160, 3) and img.std() > 10  # a real picture, not a flat background

    statuses = [s for raw in got["diag"] for s in msgs.deserialize(raw, msgs.DIAGNOSTIC_ARRAY).status]
    values = {kv.key: kv.value for s in statuses if "scene" in s.name for kv in s.values}
    assert "rate_hz" in values and "gaussians" in values and "loss" in values

    saved = load_ply(ply)
    assert len(saved) == len(arr["x"])


def test_scene_node_names_a_silent_camera(tmp_path, sim_frames, ros_context):
    """One camera of four never publishes: no scene, and /diagnostics warns naming that camera's topics."""
    from vidyn_ros.nodes.scene import create_node
    from vidyn_ros.rig.calibration_io import save_rig_calibration

    frames, poses = sim_frames
    calib = save_rig_calibration(tmp_path / "rig_calibration.yaml", poses)
    warnings: list[str] = []
    clouds: list[bytes] = []

    def on_diag(raw: bytes) -> None:
        for s in msgs.deserialize(raw, msgs.DIAGNOSTIC_ARRAY).status:
            if "scene" in s.name and s.level == 1:
                warnings.append(s.message)

    with _graph(ros_context) as (ctx, ex, nodes):
        scene = create_node(context=ctx, parameter_overrides=_ros.parameter_overrides({
            "calibration": str(calib), "budget": 500, "init_iters": 1, "stale_s": 1.0,
        }))
        nodes.append(scene)
        peer = Node("scene_test_silent_peer", context=ctx)
        nodes.append(peer)
        out = [m for m in msgs.rig_frame_messages(frames[0].frame)
               if not m[0].startswith("/cam3/")]
        pubs = {t: peer.create_publisher(_ros.msg_class(mt), t, _ros.reliable_qos(10)) for t, mt, _, _ in out}
        peer.create_subscription(_ros.msg_class(msgs.DIAGNOSTIC_ARRAY), "/diagnostics", on_diag,
                                 _ros.reliable_qos(10), raw=True)
        peer.create_subscription(_ros.msg_class(msgs.POINTCLOUD2), "/vidyn/scene/gaussians", clouds.append,
                                 _ros.reliable_qos(10), raw=True)
        ex.add_node(scene)
        ex.add_node(peer)
        t_end = time.monotonic() + 20.0
        sent, last_sent = 0, 0.0

        def cam3_only(w: str) -> bool:  # before the first messages every topic is silent: wait for the cause
            return "/cam3/" in w and not any(f"/cam{i}/" in w for i in range(3))

        def named_cam3_only() -> bool:
            return any(cam3_only(w) for w in warnings)

        while time.monotonic() < t_end and not named_cam3_only():
            ex.spin_once(timeout_sec=0.02)
            matched = all(p.get_subscription_count() > 0 for p in pubs.values())
            if matched and time.monotonic() - last_sent > 0.1:  # three cameras keep publishing, the fourth never
                for topic, msgtype, msg, _ in out:
                    pubs[topic].publish(msgs.serialize(msg, msgtype))
                sent, last_sent = sent + 1, time.monotonic()

    assert sent and not clouds  # three of four cameras make no synchronised frame
    named = [w for w in warnings if cam3_only(w)]
    assert named, warnings
    assert all(f"/cam3/{t}" in named[-1] for t in ("color/image_raw", "aligned_depth_to_color/image_raw", "mask"))


def test_rig_camera_poses_from_calibration_or_scenario(tmp_path, sim_frames):
    """The scene node's pose source: a missing calibration file is waited for, a scenario gives the sim rig's poses."""
    from types import SimpleNamespace

    from vidyn_ros.errors import ConfigError
    from vidyn_ros.rig.calibration_io import save_rig_calibration

    _, sim_poses = sim_frames
    warned: list[str] = []
    diag = SimpleNamespace(warn=warned.append)
    cams = ["cam0", "cam3"]
    path = tmp_path / "rig_calibration.yaml"
    assert _ros.rig_camera_poses(diag, "scene", cams, str(path), "") is None and str(path) in warned[-1]
    from_scenario = _ros.rig_camera_poses(diag, "scene", cams, str(path), "push")  # file missing: the scenario's
    save_rig_calibration(path, {c: sim_poses[c] for c in cams})
    from_file = _ros.rig_camera_poses(diag, "scene", cams, str(path), "")
    for poses in (from_scenario, from_file):
        assert list(poses) == cams
        for c in cams:
            np.testing.assert_allclose(poses[c], sim_poses[c], atol=1e-6)  # the YAML keeps 6 decimals
    with pytest.raises(ConfigError, match="cam9"):
        _ros.rig_camera_poses(diag, "scene", ["cam9"], str(path), "")
    with pytest.raises(ConfigError, match="calibration"):
        _ros.rig_camera_poses(diag, "scene", cams, "", "")
