"""Inputs shared by the nodes that consume synchronised camera sets (scene, segmenter): the rig geometry (camera
poses) and raw subscriptions feeding a TopicSynchronizer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rclpy.node import Node

from vidyn_ros.errors import ConfigError
from vidyn_ros.nodes._diagnostics import DiagnosticsPublisher
from vidyn_ros.nodes._qos import sensor_qos
from vidyn_ros.nodes._topics import msg_class, node_topic


def rig_camera_poses(
    diag: DiagnosticsPublisher, who: str, cameras: Sequence[str], calibration: str, scenario: str
) -> dict[str, Any] | None:
    """Camera-to-world 4x4 pose of each of ``cameras`` for a node that needs the rig geometry: from the rig
    calibration YAML, else from a simulated-rig scenario's cameras (no MuJoCo: the scenario's poses are the rig's).
    Empty ``cameras`` means every camera of the rig, in the file's order: a scenario whose cameras are not
    cam0..cam3 needs no camera list. A camera given as a topic prefix (realsense-ros ``camera/camera``) takes the pose
    of its camera name (the last component) when the prefix itself is not in the file.

    Returns None, with a warning on ``diag``, while the calibration file does not exist yet (the sim rig writes it when
    it starts: retry later). ConfigError when neither source is set or a camera has no pose.
    """
    if calibration and Path(calibration).is_file():
        from vidyn_ros.rig.calibration_io import load_rig_calibration

        poses = dict(load_rig_calibration(calibration))
    elif calibration and not scenario:
        diag.warn(f"waiting for calibration file {calibration}")
        return None
    elif scenario:
        from vidyn_ros.rig.scenario import load_scenario

        poses = {c.name: c.T_world_cam for c in load_scenario(scenario).cameras}
    else:
        raise ConfigError(f"{who}: set parameter 'calibration' (rig calibration YAML) or 'scenario' (camera poses)")
    if not cameras:
        if not poses:
            raise ConfigError(f"{who}: the rig ({calibration or scenario}) has no cameras")
        return dict(poses)
    from vidyn_ros.msgs import calibration_pose

    out, missing = {}, []
    for c in cameras:
        T = calibration_pose(poses, c)
        if T is None:
            missing.append(c)
        else:
            out[c] = T
    if missing:
        raise ConfigError(f"{who}: no pose for camera(s) {missing} (have {sorted(poses)})")
    return out


class SyncedInput:
    """Raw subscriptions to every topic of a TopicSynchronizer (vidyn_ros.rig.sync): each complete MultiViewFrame goes
    to ``on_frame`` (typically ``Worker.submit``, so the heavy work stays off the callback thread). A malformed message
    is a warning on ``diag``, never a crash. Shared by the nodes that consume synchronised camera sets.

    Attributes:
        last_msg_t: topic -> monotonic arrival time of its last message (names the silent topics when stale).
        last_frame_t: monotonic time of the last complete set (initially ``since``).
    """

    def __init__(self, node: Node, sync: Any, on_frame: Callable[[Any], Any], diag: DiagnosticsPublisher,
                 since: float, depth: int = 10) -> None:
        self.sync = sync
        self._on_frame = on_frame
        self._diag = diag
        self._lock = threading.Lock()
        self.last_msg_t: dict[str, float] = {}
        self.last_frame_t = since
        qos = sensor_qos(depth)  # best effort matches reliable and best-effort camera drivers alike
        # relative names: a node in a namespace listens to its own rig's cameras
        self.subscriptions = [
            node.create_subscription(msg_class(m), node_topic(t), lambda raw, t=t, m=m: self._on_message(t, m, raw),
                                     qos, raw=True)
            for t, m in sync.topics().items()
        ]

    def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
        self.last_msg_t[topic] = time.monotonic()
        try:
            with self._lock:
                frames = self.sync.add_message(topic, msgtype, bytes(raw))
        except Exception as err:  # a malformed message must not kill the node
            self._diag.warn(f"bad message on {topic}: {err}")
            return
        for f in frames:
            self.last_frame_t = time.monotonic()
            self._on_frame(f)

    def silent_topics(self, older_than_s: float) -> list[str]:
        now = time.monotonic()
        return [t for t in self.sync.topics() if now - self.last_msg_t.get(t, -1e9) > older_than_s]

