"""sim_rig node: the simulated multi-camera rig (MuJoCo) as a drop-in for realsense-ros cameras.

Per frame, at the scenario frame rate: per camera ``/<cam>/color/image_raw`` (rgb8),
``/<cam>/aligned_depth_to_color/image_raw`` (16UC1 mm), ``/<cam>/color/camera_info``, ``/<cam>/mask`` (16UC1 ids);
ground truth on ``/vidyn/sim/object_poses`` (evaluation only); sim time on ``/clock``. All stamps are sim time.
Subscribes ``/vidyn/cmd`` (geometry_msgs/TwistStamped, world frame) to drive the pusher; a command older than
``cmd_timeout_s`` of sim time is stale and the pusher stops (zero velocity).

Rendering runs on its own thread, which also owns the MuJoCo/OSMesa context (GL contexts are per thread), so the
executor stays free for the command subscription. ``realtime: true`` paces frames to wall time; ``false`` runs as
fast as rendering allows (sim time still advances 1/fps per frame).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from rclpy.node import Node

from vidyn_ros.errors import ConfigError, VidynError
from vidyn_ros.nodes import _ros

NODE_NAME = "sim_rig"

PARAMS = [
    _ros.Param("scenario", "push", "scenario name in config/scenarios/ or a path to a scenario YAML"),
    _ros.Param("seed", 0, "seed for the scenario's randomised initial conditions"),
    _ros.Param("render_scale", 1.0, "image size factor (0.25: 640x480 -> 160x120)"),
    _ros.Param("realtime", True, "pace frames to wall time (false: as fast as rendering allows)"),
    _ros.Param("rate", 1.0, "sim-time speed factor when realtime (0.5 = half speed)"),
    _ros.Param("max_frames", 0, "frames to publish, then finish: 0 = the scenario's duration, -1 = until stopped"),
    _ros.Param("masks", True, "publish instance masks on /<cam>/mask"),
    _ros.Param("ground_truth", True, "publish ground-truth object poses on /vidyn/sim/object_poses"),
    _ros.Param("clock", True, "publish sim time on /clock"),
    _ros.Param("qos", "reliable", "camera publisher QoS: reliable or sensor (best effort)"),
    _ros.Param("cmd_timeout_s", 0.5, "a /vidyn/cmd older than this (sim time) is stale: the pusher stops"),
    _ros.Param("calibration_out", "", "write the rig calibration YAML (camera-to-world poses) here at start"),
    _ros.Param("start_delay_s", 0.0, "wait this long (wall time, from the first spin) before the first frame, for "
               "subscribers to connect"),
]


class SimRigNode(Node):
    """Publishes the simulated rig; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        if self.p.render_scale <= 0:
            raise ConfigError(f"sim_rig: render_scale must be > 0, got {self.p.render_scale}")
        if self.p.realtime and self.p.rate <= 0:
            raise ConfigError(f"sim_rig: rate must be > 0, got {self.p.rate}")
        from vidyn_ros import msgs
        from vidyn_ros.rig.scenario import load_scenario

        self._msgs = msgs
        self.scenario = load_scenario(self.p.scenario)  # ConfigError (one line): malformed YAML, zero cameras, ...
        if not self.scenario.cameras:
            raise ConfigError(f"{self.p.scenario}: scenario has no cameras")
        self.cameras = [c.name for c in self.scenario.cameras]
        qos = _ros.qos_by_name(self.p.qos)
        image_cls = _ros.msg_class(msgs.IMAGE)
        self._pubs: dict[str, Any] = {}
        for cam in self.cameras:
            self._pubs[msgs.color_topic(cam)] = self.create_publisher(image_cls, msgs.color_topic(cam), qos)
            self._pubs[msgs.depth_topic(cam)] = self.create_publisher(image_cls, msgs.depth_topic(cam), qos)
            self._pubs[msgs.info_topic(cam)] = self.create_publisher(
                _ros.msg_class(msgs.CAMERA_INFO), msgs.info_topic(cam), qos)
            if self.p.masks:
                self._pubs[msgs.mask_topic(cam)] = self.create_publisher(image_cls, msgs.mask_topic(cam), qos)
        if self.p.ground_truth:
            self._pubs[msgs.OBJECT_POSES_TOPIC] = self.create_publisher(
                _ros.msg_class(msgs.POSE_ARRAY), msgs.OBJECT_POSES_TOPIC, _ros.reliable_qos())
        self._clock_pub = self.create_publisher(_ros.msg_class(msgs.CLOCK), msgs.CLOCK_TOPIC, 10) \
            if self.p.clock else None
        self.create_subscription(_ros.msg_class(msgs.TWIST_STAMPED), msgs.CMD_TOPIC, self._on_cmd,
                                 _ros.reliable_qos(), raw=True)
        self.diag = _ros.DiagnosticsPublisher(self)

        self._cmd_lock = threading.Lock()
        self._cmd: tuple[np.ndarray, float] | None = None  # (velocity xyz, sim time when received)
        self._sim_time_s = 0.0
        self.frames = 0
        self.cmds_received = 0
        self.stale_events = 0
        # Render times of the last 1000 frames (bounded: a rig with max_frames -1 runs for days).
        self.render_ms: collections.deque[float] = collections.deque(maxlen=1000)
        self.done = False
        self.fatal: str | None = None
        self._ready = threading.Event()
        self._spinning = _ros.spinning_event(self)
        self._error: BaseException | None = None
        self._thread = _ros.LoopThread(self._run, name="sim_rig", on_error=self._on_error)
        self._thread.start()  # after the assignment: _run uses self._thread
        self._ready.wait()
        if self._error is not None:  # scenario built but MuJoCo could not: report it from the constructor
            self._thread.stop()
            err = self._error
            raise err if isinstance(err, VidynError) else VidynError(f"sim_rig: {type(err).__name__}: {err}")

    # ------------------------------------------------------------------------------------------------------ command
    def _on_cmd(self, raw: bytes) -> None:
        try:
            msg = self._msgs.deserialize(raw, self._msgs.TWIST_STAMPED)
            linear, _angular = self._msgs.twist_from_msg(msg)
        except VidynError as err:
            self.diag.warn(f"bad /vidyn/cmd message ignored: {err}")
            return
        with self._cmd_lock:
            self._cmd = (np.asarray(linear, dtype=np.float64), self._sim_time_s)
            self.cmds_received += 1

    def _current_velocity(self) -> np.ndarray:
        with self._cmd_lock:
            cmd = self._cmd
        if cmd is None:
            return np.zeros(3)
        v, t = cmd
        if self._sim_time_s - t > self.p.cmd_timeout_s:
            with self._cmd_lock:
                if self._cmd is cmd:  # stale: drop it, so a new command is needed to move again
                    self._cmd = None
                    self.stale_events += 1
            self.diag.warn("/vidyn/cmd stale: pusher stopped")
            return np.zeros(3)
        return v

    # ------------------------------------------------------------------------------------------------------- render
    def _on_error(self, err: BaseException) -> None:
        if not self._ready.is_set():
            self._error = err
            self._ready.set()
            return
        self.fatal = str(err) if isinstance(err, VidynError) else f"{type(err).__name__}: {err}"
        self.diag.error(f"simulation stopped: {self.fatal}")
        self.done = True

    def _run(self) -> bool:
        """The render thread: owns the SimRig (and its GL context) for its whole life."""
        from vidyn_ros.rig.sim import SimRig

        stop = self._thread.stop_event
        with SimRig(self.scenario, seed=self.p.seed, render_scale=self.p.render_scale, masks=self.p.masks) as rig:
            self.rig_cameras = list(rig.cameras)
            if self.p.calibration_out:
                from vidyn_ros.rig.calibration_io import save_rig_calibration

                save_rig_calibration(self.p.calibration_out, {c.name: c.T_world_cam for c in rig.cameras},
                                     comment=f"simulated rig, scenario {self.scenario.name}, seed {self.p.seed}")
            has_pusher = getattr(rig, "pusher_id", None) is not None or self.scenario.pusher is not None
            n_max = rig.n_frames if self.p.max_frames == 0 else self.p.max_frames
            self._ready.set()
            # start_delay_s counts from when the graph spins, not from construction (see _ros.spinning_event).
            if not _ros.wait_for(self._spinning, stop) or stop.wait(self.p.start_delay_s):
                return False
            t_wall0 = time.monotonic()
            fps = float(rig.fps)
            while not stop.is_set() and (n_max < 0 or self.frames < n_max):
                if has_pusher:
                    rig.set_pusher_velocity(self._current_velocity())
                t0 = time.perf_counter()
                rf = rig.step()
                self.render_ms.append((time.perf_counter() - t0) * 1e3)
                self._sim_time_s = float(rig.time_s)
                self._publish(rf)
                self.frames += 1
                wall = time.monotonic() - t_wall0
                rt_factor = self.frames / fps / wall if wall > 0 else 0.0  # sim seconds per wall second
                values = {"frames": self.frames, "render_ms": f"{self.render_ms[-1]:.1f}",
                          "sim_time_s": f"{self._sim_time_s:.3f}", "realtime_factor": f"{rt_factor:.2f}"}
                if self.p.realtime and wall > 2.0 and rt_factor < 0.9 * self.p.rate:
                    # Not an error (the rig just runs slower than the clock on the wall), but say so once.
                    self.diag.warn("rendering is slower than real time; sim time runs slower (see realtime_factor)",
                                   **values)
                else:
                    self.diag.ok("publishing", **values)
                if self.p.realtime:
                    due = t_wall0 + self.frames / fps / self.p.rate
                    lag = due - time.monotonic()
                    if lag > 0 and stop.wait(lag):
                        break
        if not stop.is_set():
            self.get_logger().info(f"published {self.frames} frames; finished")
        self.done = True
        return False

    def _publish(self, rf: Any) -> None:
        stamp = int(rf.frame.stamp_ns)
        if self._clock_pub is not None:
            _ros.publish_cdr(self._clock_pub, self._msgs.clock_msg(stamp), self._msgs.CLOCK)
        for topic, msgtype, msg, _stamp in self._msgs.rig_frame_messages(rf, include_ground_truth=self.p.ground_truth):
            pub = self._pubs.get(topic)
            if pub is not None:
                _ros.publish_cdr(pub, msg, msgtype)

    def summary(self) -> dict[str, Any]:
        r = np.asarray(self.render_ms) if self.render_ms else np.zeros(1)
        return {
            "scenario": self.scenario.name,
            "frames": self.frames,
            "sim_time_s": round(self._sim_time_s, 6),
            "cmds_received": self.cmds_received,
            "stale_events": self.stale_events,
            "render_ms_median": round(float(np.median(r)), 2),
        }

    def close(self) -> None:
        self._thread.stop(timeout=10.0)


def create_node(**node_kwargs: Any) -> SimRigNode:
    return SimRigNode(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
