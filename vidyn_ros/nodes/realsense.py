"""realsense node: N RealSense cameras (or RealSense SDK recordings) -> the rig's camera topics.

Per camera ``<cam>``: ``/<cam>/color/image_raw`` (rgb8), ``/<cam>/aligned_depth_to_color/image_raw`` (16UC1 mm,
aligned to color by ``rs.align``), ``/<cam>/color/camera_info`` (SDK color intrinsics, distortion model mapped to
its ROS name) — the same names as realsense-ros and the simulated rig, relative to the node's namespace; the
calibrated camera poses on ``/tf_static`` (``world -> <cam>_link -> <cam>_color_optical_frame``, latched). All the
camera work is in ``vidyn_ros.rig.realsense.CameraSupervisor`` (one thread per camera); this node maps parameters
to camera configs and frames to messages. A camera that is missing, unknown, or disconnects is reported on
/diagnostics (one status per camera, WARN) and retried; the other cameras keep publishing.

Per-camera parameters are lists: one entry per camera, or a single entry used for all of them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any

from vidyn_ros.errors import ConfigError
from vidyn_ros.nodes import _ros

NODE_NAME = "realsense"

PARAMS = [
    _ros.Param("cameras", [], "camera names (topic prefixes); empty = cam0..camN-1 for the serials/recordings given "
               "(or for every connected camera)", kind="string"),
    _ros.Param("serials", [], "serial number per camera; empty = from 'calibration', else every connected camera",
               kind="string"),
    _ros.Param("recordings", [], "RealSense recordings (.db3/.bag) to play instead of hardware, one per camera",
               kind="string"),
    _ros.Param("calibration", "", "rig calibration YAML: camera names and serials when 'cameras' is empty"),
    _ros.Param("width", [640], "color/depth width per camera [px]", range="[1, 4096]"),
    _ros.Param("height", [480], "color/depth height per camera [px]", range="[1, 4096]"),
    _ros.Param("fps", [30], "frame rate per camera [Hz]", range="[1, 1000]"),
    _ros.Param("exposure_us", [0.0], "color exposure per camera [us]; 0 = auto exposure", range="[0, 1000000]"),
    _ros.Param("laser_power", [-1.0], "projector power per camera [mW]; < 0 = device default", range="[-1, 1000]"),
    _ros.Param("emitter_enabled", [-1], "projector per camera: 1 on, 0 off, -1 device default", range="[-1, 1]"),
    _ros.Param("sync_mode", ["default"], "hardware sync per camera: default | master | slave (inter_cam_sync_mode)",
               choices=("default", "master", "slave")),
    _ros.Param("realtime", True, "play recordings at their recorded pace (false: as fast as possible)"),
    _ros.Param("repeat", False, "loop recordings"),
    _ros.Param("timestamps", "sdk", "header stamps: 'sdk' (frame timestamps, host clock) or 'node' (node clock)",
               choices=("sdk", "node")),
    _ros.Param("start_delay_s", 0.0, "wait before opening the cameras (lets subscribers discover the topics) [s]",
               range="[0, 3600]"),
    _ros.Param("reconnect_s", 1.0, "retry period for cameras that are missing or disconnected [s]", range="(0, 3600]"),
]


def _per_camera(values: list, n: int, name: str) -> list:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ConfigError(f"realsense: parameter '{name}' needs 1 or {n} entries (one per camera), got {len(values)}")
    return values


def camera_configs(p: Any) -> list:
    """Node parameters -> list of RealSenseConfig (ConfigError on inconsistent lists)."""
    from vidyn_ros.rig.calibration_io import load_serials
    from vidyn_ros.rig.realsense import SYNC_MODES, UNASSIGNED, RealSenseConfig, connected_devices

    names, serials, recordings = list(p.cameras), list(p.serials), list(p.recordings)
    if not serials and not recordings and p.calibration:
        by_name = load_serials(p.calibration)
        names = names or list(by_name)
        serials = [by_name.get(n, "") for n in names]
    if recordings:
        n = len(recordings)
    elif serials:
        n = len(serials)
    elif names:
        n = len(names)
    else:  # every connected camera, in serial order (one unnamed camera when none is connected: it reports the error)
        serials = sorted(d["serial"] for d in connected_devices()) or [""]
        n = len(serials)
    names = names or [f"cam{i}" for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"realsense: {len(names)} camera names for {n} cameras")
    serials = serials or [""] * n
    recordings = recordings or [""] * n
    if n > 1 and not any(recordings) and not all(serials):
        # Several cameras without serials: give them the connected cameras nobody named, in serial order; the rest
        # get a marker that makes them report a clear error instead of all opening "any camera".
        free = sorted(set(d["serial"] for d in connected_devices()) - set(serials))
        serials = [s or (free.pop(0) if free else UNASSIGNED) for s in serials]
    for name in ("serials", "recordings"):
        if len({"serials": serials, "recordings": recordings}[name]) != n:
            raise ConfigError(f"realsense: parameter '{name}' needs {n} entries (one per camera)")
    lists = {k: _per_camera(list(getattr(p, k)), n, k) for k in
             ("width", "height", "fps", "exposure_us", "laser_power", "emitter_enabled", "sync_mode")}
    for mode in lists["sync_mode"]:
        if mode not in SYNC_MODES:
            raise ConfigError(f"realsense: sync_mode {mode!r} (choose from {', '.join(SYNC_MODES)})")
    out = []
    for i in range(n):
        emitter = int(lists["emitter_enabled"][i])
        out.append(RealSenseConfig(
            name=names[i], serial=serials[i], recording=recordings[i], width=int(lists["width"][i]),
            height=int(lists["height"][i]), fps=int(lists["fps"][i]), exposure_us=float(lists["exposure_us"][i]),
            laser_power=float(lists["laser_power"][i]), emitter_enabled=None if emitter < 0 else bool(emitter),
            sync_mode=lists["sync_mode"][i], realtime=bool(p.realtime), repeat=bool(p.repeat),
        ))
    return out


class RealSenseNode(_ros.Node):
    """Publishes each camera's color, aligned depth and CameraInfo; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        from vidyn_ros import msgs
        from vidyn_ros.rig.realsense import CameraSupervisor

        self._msgs = msgs
        self.configs = camera_configs(self.p)
        image_cls = _ros.msg_class(msgs.IMAGE)
        info_cls = _ros.msg_class(msgs.CAMERA_INFO)
        qos = _ros.sensor_qos()
        T = _ros.node_topic  # relative to the node's namespace: two rigs run side by side
        self._pubs = {
            c.name: {
                "color": self.create_publisher(image_cls, T(msgs.color_topic(c.name)), qos),
                "depth": self.create_publisher(image_cls, T(msgs.depth_topic(c.name)), qos),
                "info": self.create_publisher(info_cls, T(msgs.info_topic(c.name)), qos),
            }
            for c in self.configs
        }
        # /tf_static (latched): world -> <cam>_link for the cameras the calibration places, and every camera's
        # <cam>_link -> <cam>_color_optical_frame
        self.tf = _ros.StaticTransforms(self)
        poses: dict = {}
        if self.p.calibration:
            from vidyn_ros.rig.calibration_io import load_rig_calibration

            poses = dict(load_rig_calibration(self.p.calibration))
        self.tf.publish_rig({c.name: poses.get(c.name) for c in self.configs})
        self.diag = {c.name: _ros.DiagnosticsPublisher(self, name=f"{self.get_name()}: {c.name}",
                                                       hardware_id=c.serial or c.recording) for c in self.configs}
        self.rates = {c.name: _ros.RateMeter() for c in self.configs}
        self.published = {c.name: 0 for c in self.configs}
        self._lock = threading.Lock()
        self.supervisor = CameraSupervisor(self.configs, self._on_frame, self._on_status,
                                           reconnect_s=float(self.p.reconnect_s))
        self._timer = self.create_timer(1.0, self._report)
        # The cameras open once the node spins (plus start_delay_s): in a graph, later nodes may take seconds to build
        # (the scene node loads torch), and frames published before anyone subscribes are lost.
        self._spinning = _ros.spinning_event(self)
        self._stop_start = threading.Event()
        self._starter = threading.Thread(target=self._start_cameras, name="realsense-start", daemon=True)
        self._starter.start()

    def _start_cameras(self) -> None:
        if _ros.wait_for(self._spinning, self._stop_start) and not self._stop_start.wait(self.p.start_delay_s):
            self.supervisor.start()

    def _on_frame(self, name: str, frame: Any) -> None:
        """Camera thread: serialise and publish (publishing from a non-executor thread is fine in rclpy)."""
        msgs = self._msgs
        stamp = frame.stamp_ns if self.p.timestamps == "sdk" else _ros.now_ns(self)
        frame_id = msgs.camera_frame_id(name)
        pubs = self._pubs[name]
        _ros.publish_cdr(pubs["color"], msgs.image_msg(frame.color, stamp, frame_id, "rgb8"), msgs.IMAGE)
        _ros.publish_cdr(pubs["depth"], msgs.depth_msg(frame.depth, stamp, frame_id), msgs.IMAGE)
        _ros.publish_cdr(pubs["info"], msgs.camera_info_msg(frame.camera, stamp), msgs.CAMERA_INFO)
        with self._lock:
            self.published[name] += 1
            self.rates[name].tick()

    def _on_status(self, status: Any) -> None:
        level = _ros.DIAG_OK if status.state == "streaming" else _ros.DIAG_WARN
        self.diag[status.name].update(level, status.message, force=True, state=status.state, frames=status.frames)

    def _report(self) -> None:
        for name, st in self.supervisor.status.items():
            level = _ros.DIAG_OK if st.state == "streaming" else _ros.DIAG_WARN
            with self._lock:
                rate = self.rates[name].rate()
            self.diag[name].update(level, st.message, state=st.state, frames=st.frames, rate_hz=f"{rate:.1f}")

    def close(self) -> None:
        self._stop_start.set()
        self._starter.join(timeout=2.0)
        self.supervisor.stop()


def create_node(**node_kwargs: Any) -> RealSenseNode:
    return RealSenseNode(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
