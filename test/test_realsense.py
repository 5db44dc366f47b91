"""RealSense ingest without a camera: recordings made with pyrealsense2's software_device + recorder are played through
the real pipeline (enable_device_from_file + rs.align), the camera supervisor, and the realsense node over DDS.

What "disconnect" and "reconnect" mean here (no hardware in CI): a recording that reaches its end is a camera that
stops delivering mid-stream; a new recording appearing at the same path is the camera coming back.
"""

import itertools
import os
import shutil
import threading
import time
import uuid

import numpy as np
import pytest
from conftest import ros_domain

from vidyn_ros.errors import CameraError
from vidyn_ros.rig.realsense import (
    CameraDisconnectedError,
    CameraSupervisor,
    RealSenseCamera,
    RealSenseConfig,
    distortion_to_ros,
    record_views,
    write_recording,
)

W, H = 80, 60
K = np.array([[70.0, 0.0, 39.2], [0.0, 71.0, 29.7], [0.0, 0.0, 1.0]])
COEFFS = (0.01, -0.02, 0.001, 0.0005, 0.003)
START_MS = 1.7e12
DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py); topic names
# are unique per test as well.


def _content(n, cam=0):
    colors, depths = [], []
    rng = np.random.default_rng(cam)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    for k in range(n):
        c = base.copy()
        c[0, 0] = (k, cam, 7)
        colors.append(c)
        d = np.full((H, W), 900 + 10 * k + cam, np.uint16)
        d[20:40, 30:50] = 600 + k  # a near square
        depths.append(d)
    return colors, depths


def _record(path, n, cam=0, **kw):
    colors, depths = _content(n, cam)
    write_recording(path, colors, depths, K, fps=30, serial=f"90000000{cam}", start_ms=START_MS, coeffs=COEFFS, **kw)
    return colors, depths


def _read_all(cam, limit=100):
    frames = []
    with cam:
        for _ in range(limit):
            try:
                f = cam.read(500)
            except CameraDisconnectedError:
                break
            if f is not None:
                frames.append(f)
    return frames


def test_recording_plays_with_content_intrinsics_and_stamps(tmp_path):
    colors, depths = _record(tmp_path / "a.db3", 6, cam=1)
    # Non-real-time playback: every frame, at the reader's pace. (Real-time playback skips frames when the process is
    # starved of CPU: librealsense 2.59, seen here with 2 cores shared by many processes.)
    cam = RealSenseCamera(RealSenseConfig(name="camA", recording=str(tmp_path / "a.db3"), realtime=False))
    frames = _read_all(cam)
    assert cam.serial == "900000001"
    ks = [int(f.color[0, 0, 0]) for f in frames]
    assert ks == list(range(6))  # all six, in order, each once
    m = frames[0].camera
    assert (m.name, m.width, m.height) == ("camA", W, H)
    np.testing.assert_allclose(m.K, K, atol=1e-4)
    assert m.distortion_model == "plumb_bob"
    np.testing.assert_allclose(m.D, COEFFS, atol=1e-6)
    for k, f in zip(ks, frames, strict=True):
        assert f.stamp_ns == round((START_MS + k * 1000 / 30) * 1000) * 1000
        np.testing.assert_array_equal(f.color, colors[k])  # color is stored losslessly
        assert f.depth.dtype == np.float32
        # Same intrinsics and identity extrinsics: aligned depth equals the recorded depth wherever align filled it.
        valid = f.depth > 0
        assert valid.mean() > 0.9
        np.testing.assert_allclose(f.depth[valid], depths[k][valid] / 1000.0, atol=1e-6)


def test_non_real_time_playback_waits_for_a_slow_reader_and_loops(tmp_path):
    """Back-pressure instead of drops: with room for one frame and a reader slower than the recording, every frame
    still comes out once, in order; with repeat it starts over and the stamps keep increasing."""
    _record(tmp_path / "slow.db3", 5, cam=2)
    cam = RealSenseCamera(RealSenseConfig(name="s", recording=str(tmp_path / "slow.db3"), realtime=False,
                                          repeat=True), queue_size=1)
    ks, stamps = [], []
    with cam:
        for _ in range(40):
            f = cam.read(1000)
            if f is not None:
                ks.append(int(f.color[0, 0, 0]))
                stamps.append(f.stamp_ns)
                time.sleep(0.05)  # slower than the recording's 30 fps
            if len(ks) == 10:
                break
    assert ks == [0, 1, 2, 3, 4] * 2 and cam.dropped == 0
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert not cam.is_open  # closed with the playback waiting for room (its callback released)


def test_align_reprojects_depth_into_color_geometry(tmp_path):
    """Depth camera with a different focal length than color: the near square must move to where K_color puts it."""
    K_depth = np.array([[50.0, 0.0, 39.5], [0.0, 50.0, 29.5], [0.0, 0.0, 1.0]])
    d = np.full((H, W), 1000, np.uint16)
    d[20:40, 30:50] = 500
    c = np.zeros((H, W, 3), np.uint8)
    write_recording(tmp_path / "b.db3", [c, c, c], [d, d, d], K, K_depth=K_depth, coeffs=(0, 0, 0, 0, 0))
    frames = _read_all(RealSenseCamera(RealSenseConfig(name="c", recording=str(tmp_path / "b.db3"), realtime=False)))
    assert len(frames) == 3
    aligned = frames[-1].depth

    def to_color(u, v):  # depth pixel -> color pixel (same depth, identity extrinsics)
        x, y = (u - K_depth[0, 2]) / K_depth[0, 0], (v - K_depth[1, 2]) / K_depth[1, 1]
        return x * K[0, 0] + K[0, 2], y * K[1, 1] + K[1, 2]

    u0, v0 = to_color(30, 20)
    u1, v1 = to_color(49, 39)
    inside = aligned[int(np.ceil(v0)) + 1 : int(v1) - 1, int(np.ceil(u0)) + 1 : int(u1) - 1]
    assert inside.size > 0 and np.all(inside == pytest.approx(0.5))
    # In depth pixels the square starts at u=30; in color (fx 70 vs 50) it starts further left, at u0 ~ 25.9: column
    # 27 is inside the square only in color coordinates, column 24 outside in both.
    assert 25 < u0 < 26.5
    assert aligned[30, 27] == pytest.approx(0.5) and aligned[30, 24] == pytest.approx(1.0)


def test_distortion_models_map_to_ros_names():
    from vidyn_ros.rig.realsense import _rs

    rs = _rs()  # loads pyrealsense2 after rclpy (the other order crashes the process at exit)
    name, D = distortion_to_ros(rs.distortion.kannala_brandt4, [0.1, 0.2, 0.3, 0.4, 0.0])
    assert name == "equidistant" and list(D) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    name, D = distortion_to_ros(rs.distortion.inverse_brown_conrady, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert name == "plumb_bob" and list(D) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    name, D = distortion_to_ros(rs.distortion.none, [9, 9, 9, 9, 9])
    assert name == "plumb_bob" and not D.any()


def test_failure_modes_give_one_line_errors(tmp_path):
    with pytest.raises(CameraError, match=r"camX: recording .*missing\.db3 not found"):
        RealSenseCamera(RealSenseConfig(name="camX", recording=str(tmp_path / "missing.db3"))).open()
    junk = tmp_path / "junk.db3"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    # A truncated recording: the first half of a valid file.
    _record(tmp_path / "full.db3", 4)
    data = (tmp_path / "full.db3").read_bytes()
    (tmp_path / "cut.db3").write_bytes(data[: len(data) // 2])
    for realtime in (True, False):  # the pipeline, and the playback device opened directly
        with pytest.raises(CameraError, match=r"junk\.db3") as err:
            RealSenseCamera(RealSenseConfig(name="camX", recording=str(junk), realtime=realtime)).open()
        assert "\n" not in str(err.value)
        with pytest.raises(CameraError, match=r"cut\.db3"):
            RealSenseCamera(RealSenseConfig(name="camX", recording=str(tmp_path / "cut.db3"), realtime=realtime)).open()
    # An unknown serial (CI has no camera, so nothing is connected; with hardware the message lists what is).
    with pytest.raises(CameraError, match=r"camX: no camera with serial 0000 \(connected: "):
        RealSenseCamera(RealSenseConfig(name="camX", serial="0000")).open()
    from vidyn_ros.rig.realsense import connected_devices

    if not connected_devices():  # no camera at all
        with pytest.raises(CameraError, match=r"^camX: no RealSense camera connected$"):
            RealSenseCamera(RealSenseConfig(name="camX")).open()


def test_node_parameters_map_to_camera_configs(tmp_path):
    from types import SimpleNamespace

    from vidyn_ros.errors import ConfigError
    from vidyn_ros.nodes.realsense import PARAMS, camera_configs
    from vidyn_ros.rig.calibration_io import save_rig_calibration

    defaults = {p.name: p.default for p in PARAMS}
    calib = save_rig_calibration(tmp_path / "rig.yaml", {"left": np.eye(4), "right": np.eye(4)},
                                 serials={"left": "111", "right": "222"})
    cfgs = camera_configs(SimpleNamespace(**{**defaults, "calibration": str(calib), "fps": [15, 30],
                                             "sync_mode": ["master", "slave"], "emitter_enabled": [0]}))
    assert [(c.name, c.serial, c.fps, c.sync_mode, c.emitter_enabled) for c in cfgs] == [
        ("left", "111", 15, "master", False), ("right", "222", 30, "slave", False)]
    with pytest.raises(ConfigError, match="sync_mode 'bogus'"):
        camera_configs(SimpleNamespace(**{**defaults, "serials": ["1"], "sync_mode": ["bogus"]}))
    with pytest.raises(ConfigError, match="'fps' needs 1 or 2 entries"):
        camera_configs(SimpleNamespace(**{**defaults, "serials": ["1", "2"], "fps": [1, 2, 3]}))


def _wait_until(cond, timeout_s=20.0, poll_s=0.02):
    """Poll ``cond`` until it holds or ``timeout_s`` passed (generous: CI is a loaded 2-core machine); returns it."""
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout_s:
        time.sleep(poll_s)
    return cond()


def test_supervisor_keeps_serving_and_reconnects_when_the_recording_returns(tmp_path):
    _record(tmp_path / "loop.db3", 10, cam=0)
    _record(tmp_path / "short.db3", 3, cam=1)
    frames: dict = {"c0": [], "c1": []}
    statuses = []
    lock = threading.Lock()

    def on_frame(name, f):
        with lock:
            frames[name].append(f)

    def count(state, name="c1"):
        return [n for n, s, _ in list(statuses) if s == state].count(name)

    sup = CameraSupervisor(
        # c0 loops, so it is streaming whenever c1 is away, however the threads are scheduled; c1 plays every frame
        # (in real time a loaded CI machine dropped all 3 of its frames before the recording ended)
        [RealSenseConfig(name="c0", recording=str(tmp_path / "loop.db3"), repeat=True),
         RealSenseConfig(name="c1", recording=str(tmp_path / "short.db3"), realtime=False),
         RealSenseConfig(name="c2", recording=str(tmp_path / "absent.db3"))],
        on_frame, lambda s: statuses.append((s.name, s.state, s.message)), reconnect_s=0.1)
    sup.start()
    try:
        assert _wait_until(lambda: count("disconnected") == 1)
        assert ("c2", "error", f"c2: recording {tmp_path / 'absent.db3'} not found") in statuses
        assert any(n == "c1" and s == "disconnected" and "recording ended" in m for n, s, m in statuses)
        # The other camera keeps streaming while c1 is away.
        n_c0 = len(frames["c0"])
        assert _wait_until(lambda: len(frames["c0"]) >= n_c0 + 3)
        assert len(frames["c1"]) == 3  # every frame, once: not replayed, the file did not change
        assert count("streaming") == 1
        # The camera "comes back": a new recording appears at the path.
        n_before = len(frames["c1"])
        _record(tmp_path / "new.db3", 5, cam=1)
        shutil.move(tmp_path / "new.db3", tmp_path / "short.db3")
        assert _wait_until(lambda: count("disconnected") == 2)  # reopened, played to its end
        assert len(frames["c1"]) - n_before == 5
        assert int(frames["c1"][-1].color[0, 0, 0]) == 4  # the new recording's last frame
        # Its stamps start over in the file; the camera keeps them increasing, as a real camera's would.
        stamps = [f.stamp_ns for f in frames["c1"]]
        assert all(b > a for a, b in itertools.pairwise(stamps))
        assert count("streaming") == 2
        assert [n for n, s, _ in statuses if n == "c0"] == ["c0"]  # c0 never stopped: one status change, streaming
    finally:
        sup.stop()
    assert "c2" not in frames


# ------------------------------------------------------------------------------------------------------------ node
def test_node_publishes_recordings_on_the_rig_topics(tmp_path, ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from vidyn_ros import msgs
    from vidyn_ros.nodes import _ros
    from vidyn_ros.nodes.realsense import create_node

    tag = uuid.uuid4().hex[:6]
    names = [f"rs{tag}a", f"rs{tag}b", f"rs{tag}c"]
    n = 15
    content = [_record(tmp_path / "a.db3", n, cam=0), _record(tmp_path / "b.db3", n, cam=1)]
    got: dict = {}
    diags: list = []
    sub_node = Node("rs_test_sub", context=ros_context)
    image_cls = _ros.msg_class(msgs.IMAGE)
    info_cls = _ros.msg_class(msgs.CAMERA_INFO)
    qos = _ros.sensor_qos(depth=50)
    for name in names:
        for topic, cls, mt in ((msgs.color_topic(name), image_cls, msgs.IMAGE),
                               (msgs.depth_topic(name), image_cls, msgs.IMAGE),
                               (msgs.info_topic(name), info_cls, msgs.CAMERA_INFO)):
            sub_node.create_subscription(
                cls, topic, lambda raw, t=topic, mt=mt: got.setdefault(t, []).append(msgs.deserialize(raw, mt)), qos,
                raw=True)
    sub_node.create_subscription(
        _ros.msg_class(msgs.DIAGNOSTIC_ARRAY), "/diagnostics",
        lambda raw: diags.extend(s for s in msgs.deserialize(raw, msgs.DIAGNOSTIC_ARRAY).status), 50, raw=True)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(sub_node)
    for _ in range(20):  # let discovery happen before frames flow
        ex.spin_once(timeout_sec=0.02)
    node = create_node(context=ros_context, parameter_overrides=_ros.parameter_overrides({
        "cameras": names,
        "recordings": [str(tmp_path / "a.db3"), str(tmp_path / "b.db3"), str(tmp_path / "gone.db3")],
        "realtime": True, "reconnect_s": 0.2}))
    ex.add_node(node)
    def spin_until(cond, timeout_s=30.0):  # generous: CI is a loaded 2-core machine; returns as soon as cond holds
        t0 = time.monotonic()
        while not cond() and time.monotonic() - t0 < timeout_s:
            ex.spin_once(timeout_sec=0.02)
        return cond()

    try:
        # The third camera is missing: reported on /diagnostics while the other two publish.
        assert spin_until(lambda: any(names[2] in s.name for s in diags))
        # It "comes back": its recording appears at the configured path (written elsewhere, then moved: atomic).
        content.append(_record(tmp_path / "late.db3", 5, cam=2))
        shutil.move(tmp_path / "late.db3", tmp_path / "gone.db3")
        assert spin_until(lambda: all(node.supervisor.status[c].state == "disconnected" for c in names)
                          and len(got.get(msgs.color_topic(names[2]), [])) >= 1)  # all three played to their end
        for _ in range(10):  # the last messages in flight
            ex.spin_once(timeout_sec=0.02)
        published = dict(node.published)
    finally:
        node.close()
        ex.shutdown()
        node.destroy_node()
        sub_node.destroy_node()
    for ci, name in enumerate(names[:2]):
        colors, depths = content[ci]
        topics = (msgs.color_topic(name), msgs.depth_topic(name), msgs.info_topic(name))
        col, dep, inf = (got.get(t, []) for t in topics)
        # Most recorded frames were published (real-time playback may skip some, see above); DDS delivery is best
        # effort (the first messages can go out before discovery completes), so most arrive, including the last.
        assert published[name] >= n // 2 + 2
        assert min(len(col), len(dep), len(inf)) >= n // 2, (len(col), len(dep), len(inf))
        assert int(msgs.image_to_array(col[-1])[0, 0, 0]) == n - 1
        for m in col:
            k = int(msgs.image_to_array(m)[0, 0, 0])  # frame index is written into pixel (0, 0)
            assert m.encoding == "rgb8" and m.header.frame_id == f"{name}_color_optical_frame"
            np.testing.assert_array_equal(msgs.image_to_array(m), colors[k])
            assert msgs.stamp_to_ns(m.header.stamp) == round((START_MS + k * 1000 / 30) * 1000) * 1000
        stamps_c = {msgs.stamp_to_ns(m.header.stamp) for m in col}
        for m in dep:
            assert m.encoding == "16UC1" and msgs.stamp_to_ns(m.header.stamp) in stamps_c
            mm = msgs.image_to_array(m)
            k = round((msgs.stamp_to_ns(m.header.stamp) / 1e6 - START_MS) * 30 / 1000)
            valid = mm > 0
            assert valid.mean() > 0.9
            np.testing.assert_array_equal(mm[valid], depths[k][valid])
        info = inf[0]
        assert (info.width, info.height, info.distortion_model) == (W, H, "plumb_bob")
        np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), K, atol=1e-4)
        np.testing.assert_allclose(info.d, COEFFS, atol=1e-6)
    missing = [s for s in diags if names[2] in s.name]
    assert missing and missing[0].level == 1 and "gone.db3 not found" in missing[0].message
    # ... and once its recording appeared, the node opened it and published it (reported OK in between).
    assert any(s.level == 0 and "streaming" in s.message for s in missing)
    colors = content[2][0]
    late = got[msgs.color_topic(names[2])]
    assert published[names[2]] >= 2 and len(late) >= 1
    for m in late:
        np.testing.assert_array_equal(msgs.image_to_array(m), colors[int(msgs.image_to_array(m)[0, 0, 0])])


def test_rig_graph_plays_recordings_through_realsense_and_segmenter(tmp_path):
    """The shipped `rig` graph (without the scene node, too slow for a CPU test) on RealSense recordings made from the
    simulated rig: realsense node -> DDS -> segmenter node -> /<cam>/mask, checked against the sim's true masks."""
    from dataclasses import replace

    from vidyn_ros import msgs
    from vidyn_ros.graph import apply_overrides, load_graph, run_graph
    from vidyn_ros.nodes import _ros
    from vidyn_ros.rig.calibration_io import save_rig_calibration
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.segmentation import episode_metrics
    from vidyn_ros.rig.sim import SimRig

    os.environ.setdefault("MUJOCO_GL", "osmesa")
    n = 12
    with SimRig(load_scenario("push"), seed=0, render_scale=0.25) as rig:
        rig.set_pusher_velocity([0.1, 0.0, 0.0])
        frames = [rig.step().frame for _ in range(n)]
    tag = uuid.uuid4().hex[:6]  # unique camera (= topic) names
    cams = [replace(v.camera, name=f"rg{tag}{v.camera.name}") for v in frames[0].views]
    recordings = [str(p) for p in record_views(frames, tmp_path, names=[c.name for c in cams], start_ms=START_MS)]
    calib = save_rig_calibration(tmp_path / "rig.yaml", {c.name: c.T_world_cam for c in cams})
    spec = load_graph("rig")
    assert [nd.name for nd in spec.nodes] == ["realsense", "segmenter", "scene"]
    spec.nodes = [nd for nd in spec.nodes if nd.name != "scene"]
    names = ", ".join(c.name for c in cams)
    spec = apply_overrides(spec, [f"realsense.recordings=[{', '.join(recordings)}]",
                                  f"realsense.cameras=[{names}]", f"segmenter.cameras=[{names}]",
                                  f"realsense.calibration={calib}", f"segmenter.calibration={calib}",
                                  # every frame, however slow the shared CPU; discovery before the first frame
                                  "segmenter.queue=30", "realsense.start_delay_s=2.0",
                                  # every frame in order; the graph's stride 2 is for 640x480, these are 160x120
                                  "realsense.realtime=false", "segmenter.stride=1"])
    got: dict = {}

    def listener(ctx):
        from rclpy.node import Node

        node = Node("rig_graph_listener", context=ctx)
        for c in cams:
            node.create_subscription(
                _ros.msg_class(msgs.IMAGE), msgs.mask_topic(c.name),
                lambda raw, c=c.name: got.setdefault(c, []).append(msgs.deserialize(raw, msgs.IMAGE)),
                _ros.sensor_qos(50), raw=True)
        return [node]

    # Non-real-time playback hands over every frame (real time skipped frames on a starved CPU, each camera different
    # ones: 3 of 12 sets survived on the loaded CI box); 12 of 12 arrive here with 3 busy processes beside the test.
    # The slack is for best-effort transport on an overloaded machine.
    min_sets = n * 3 // 4
    run = run_graph(spec, duration_s=30, domain_id=DOMAIN,
                    install_signal_handlers=False, extra_nodes=listener,
                    until=lambda nodes: all(len(got.get(c.name, [])) >= min_sets for c in cams) and all(
                        st.state == "disconnected" for st in nodes[0].supervisor.status.values()))
    assert run.reason == "done", (run, {c: len(v) for c, v in got.items()})
    # Masks of the frames whose four views all arrived, matched to the true masks by stamp.
    by_stamp = [{msgs.stamp_to_ns(m.header.stamp): m for m in got.get(c.name, [])} for c in cams]
    common = sorted(set.intersection(*(set(d) for d in by_stamp)))
    assert len(common) >= min_sets
    pred, gt = [], []
    for stamp in common:
        k = round((stamp / 1e6 - START_MS) * 30 / 1000)
        pred.append([msgs.mask_from_msg(d[stamp]) for d in by_stamp])
        gt.append([v.mask for v in frames[k].views])
    metrics = episode_metrics(pred, gt)
    assert metrics["mean_iou"] >= 0.85 and metrics["id_switches"] == 0, metrics
