"""dynamics node over real DDS: scene clouds, commands, pusher pose and camera_info in (raw CDR, as the scene node,
the mpc / sim rig and the cameras publish them); predicted Gaussians, paths, frames and diagnostics out. NaN input
and a bad checkpoint give diagnostics, never a dead node."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")
from conftest import ros_domain  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from vidyn_ros import msgs  # noqa: E402
from vidyn_ros.nodes import _ros  # noqa: E402

DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)
NS = round(1e9 / 30)
SPEED = 0.3  # object 1 slides along +x [m/s]


def _clouds(n: int = 4) -> list[tuple[int, dict]]:
    """Cloud fields of a synthetic tabletop whose object 1 slides along +x, one per frame at 30 Hz."""
    from vidyn_ros.dynamics.synthetic import tabletop_gaussians
    from vidyn_ros.scene.export import gaussian_fields

    g = tabletop_gaussians(160, 3)
    base = g.means.clone()
    out = []
    for k in range(n):
        g.means = base.clone()
        g.means[g.object_ids == 1, 0] += SPEED * k / 30
        out.append((10**9 + k * NS, gaussian_fields(g)))
    return out


@pytest.fixture
def checkpoint(tmp_path):
    from vidyn_ros.dynamics import LearnedDynamics, ModelConfig, NetworkConfig, save_checkpoint

    # an untrained model predicts constant velocity exactly (zero residual): the expected values are analytic
    model = LearnedDynamics(ModelConfig(network=NetworkConfig(hidden=16, layers=1, weight_dim=4), k=8))
    return save_checkpoint(tmp_path / "model.pt", model)


@contextlib.contextmanager
def _node(ctx, tmp_path, **params) -> Iterator[tuple]:
    from vidyn_ros.dynamics.synthetic import tabletop_cameras
    from vidyn_ros.nodes.dynamics import PREDICTION_TOPIC, TRAJECTORIES_TOPIC, create_node
    from vidyn_ros.rig.calibration_io import save_rig_calibration

    cams = tabletop_cameras(64, 48, 2)
    calib = save_rig_calibration(tmp_path / "rig_calibration.yaml", {c.name: c.T_world_cam for c in cams})
    # no camera list: the node renders for every camera of the rig's calibration (as in the sim and replay graphs)
    base = {"calibration": str(calib), "horizon": 5, "render_width": 64}
    base.update(params)
    ex = MultiThreadedExecutor(num_threads=4, context=ctx)
    node = create_node(context=ctx, parameter_overrides=_ros.parameter_overrides(base))
    peer = Node("dynamics_test_peer", context=ctx)
    got: dict[str, list] = {"cloud": [], "paths": [], "render": [], "diag": []}
    peer.create_subscription(_ros.msg_class(msgs.POINTCLOUD2), PREDICTION_TOPIC, got["cloud"].append,
                             _ros.reliable_qos(10), raw=True)
    peer.create_subscription(_ros.msg_class(msgs.MARKER_ARRAY), TRAJECTORIES_TOPIC, got["paths"].append,
                             _ros.reliable_qos(10), raw=True)
    peer.create_subscription(_ros.msg_class(msgs.IMAGE), "/vidyn/prediction/render/cam1", got["render"].append,
                             _ros.sensor_qos(10), raw=True)
    peer.create_subscription(_ros.msg_class(msgs.DIAGNOSTIC_ARRAY), "/diagnostics", got["diag"].append,
                             _ros.reliable_qos(50), raw=True)
    pubs = {
        "scene": peer.create_publisher(_ros.msg_class(msgs.POINTCLOUD2), "/vidyn/scene/gaussians",
                                       _ros.reliable_qos(10)),
        "info": [peer.create_publisher(_ros.msg_class(msgs.CAMERA_INFO), msgs.info_topic(c.name), _ros.sensor_qos(2))
                 for c in cams],
        "cmd": peer.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), msgs.CMD_TOPIC, _ros.reliable_qos()),
    }
    ex.add_node(node)
    ex.add_node(peer)

    def spin(seconds: float, until=lambda: False) -> None:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end and not until():
            ex.spin_once(timeout_sec=0.02)

    def send(stamp_ns: int, fields: dict) -> None:
        for pub, cam in zip(pubs["info"], cams, strict=True):
            pub.publish(msgs.serialize(msgs.camera_info_msg(cam, stamp_ns), msgs.CAMERA_INFO))
        pubs["scene"].publish(msgs.serialize(msgs.pointcloud2_msg(fields, stamp_ns, "world"), msgs.POINTCLOUD2))

    try:
        spin(0.8)  # discovery
        yield node, spin, send, got
    finally:
        ex.shutdown()
        node.close()
        node.destroy_node()
        peer.destroy_node()


def _statuses(raws: list[bytes]) -> list[tuple[int, str, dict]]:
    out = []
    for raw in raws:
        for s in msgs.deserialize(raw, msgs.DIAGNOSTIC_ARRAY).status:
            if "dynamics" in s.name:
                out.append((int(s.level[0]) if isinstance(s.level, bytes | bytearray | np.ndarray) else int(s.level),
                            s.message, {kv.key: kv.value for kv in s.values}))
    return out


def test_node_predicts_paths_frames_and_survives_nan(tmp_path, checkpoint, ros_context):
    from vidyn_ros.scene.export import gaussians_from_fields

    clouds = _clouds(6)
    with _node(ros_context, tmp_path, checkpoint=str(checkpoint)) as (node, spin, send, got):
        for i, (stamp, fields) in enumerate(clouds[:4]):
            send(stamp, fields)
            spin(5.0, until=lambda n=i + 1: node.scenes >= n)
        spin(3.0, until=lambda: len(got["cloud"]) >= 2 and len(got["render"]) >= 1 and len(got["paths"]) >= 2)
        assert len(got["cloud"]) >= 2, "no predicted clouds"
        # a NaN scene: a warning, the history restarts, and predictions resume after three good scenes
        bad = dict(clouds[4][1])
        bad["x"] = bad["x"].copy()
        bad["x"][3] = np.nan
        n_before = node.predictions
        send(clouds[4][0], bad)
        spin(2.0, until=lambda: any("non-finite" in m for _, m, _ in _statuses(got["diag"])))
        assert node.predictions == n_before
        for stamp, fields in _clouds(9)[6:]:
            send(stamp, fields)
            spin(5.0, until=lambda n=node.scenes + 1: node.scenes >= n)
        assert node.predictions == n_before + 1  # the first two after the NaN only refill the history
        spin(1.5, until=lambda: any(m == "predicting" for _, m, _ in _statuses(got["diag"])))

    cloud = msgs.deserialize(got["cloud"][0], msgs.POINTCLOUD2)
    last_input_stamp = clouds[2][0]  # the first prediction comes from the third scene
    assert msgs.stamp_to_ns(cloud.header) == last_input_stamp + 5 * NS  # stamped with the predicted time
    pred = gaussians_from_fields(msgs.pointcloud2_to_arrays(cloud))
    scene = gaussians_from_fields(clouds[2][1])
    moving = scene.object_ids == 1
    shift = (pred.means[moving] - scene.means[moving]).mean(0)
    np.testing.assert_allclose(shift.numpy(), [SPEED * 5 / 30, 0.0, 0.0], atol=2e-4)  # constant velocity
    still = scene.object_ids == 0
    assert torch.equal(pred.means[still], scene.means[still])
    markers = msgs.deserialize(got["paths"][0], msgs.MARKER_ARRAY).markers
    strips = [m for m in markers if m.type == 4]  # LINE_STRIP
    assert len(strips) == 3 and all(len(m.points) == 6 for m in strips)  # now + 5 steps, per object
    img = msgs.image_to_array(msgs.deserialize(got["render"][0], msgs.IMAGE), expect=("rgb8",))
    assert img.shape == (48, 64, 3) and img.std() > 5
    levels = [lv for lv, m, _ in _statuses(got["diag"]) if "non-finite" in m]
    assert levels and levels[0] == 1  # WARN


@pytest.mark.parametrize("problem", ["corrupt", "missing"])
def test_bad_checkpoint_is_a_diagnostic_not_a_crash(tmp_path, checkpoint, ros_context, problem):
    bad = tmp_path / "bad.pt"
    if problem == "corrupt":
        bad.write_bytes(b"garbage" * 50)
    clouds = _clouds(4)
    with _node(ros_context, tmp_path, checkpoint=str(bad)) as (node, spin, send, got):
        for i, (stamp, fields) in enumerate(clouds[:3]):
            send(stamp, fields)
            spin(2.0, until=lambda n=i + 1: node.scenes >= n)
        spin(2.5, until=lambda: any(lv == 2 for lv, _, _ in _statuses(got["diag"])))
        errors = [m for lv, m, _ in _statuses(got["diag"]) if lv == 2]
        assert errors and str(bad) in errors[0] and "\n" not in errors[0], errors
        assert not got["cloud"] and node.predictor is None
        # the file is fixed while the node runs: it loads the model and predicts
        bad.write_bytes(checkpoint.read_bytes())
        spin(3.0, until=lambda: node.predictor is not None)
        assert node.predictor is not None
        for stamp, fields in _clouds(7)[4:]:
            send(stamp, fields)
            spin(5.0, until=lambda n=node.scenes + 1: node.scenes >= n)
        spin(2.0, until=lambda: len(got["cloud"]) >= 1)
    assert len(got["cloud"]) >= 1
