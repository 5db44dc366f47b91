"""sim_rig node: the simulated multi-camera rig (MuJoCo) as a drop-in for realsense-ros cameras.

Per frame, at the scenario frame rate: per camera ``/<cam>/color/image_raw`` (rgb8),
``/<cam>/aligned_depth_to_color/image_raw`` (16UC1 mm), ``/<cam>/color/camera_info``; ground truth (evaluation
only) on ``/vidyn/sim/object_poses`` and ``/vidyn/sim/<cam>/mask`` (true instance ids, 16UC1: the scene gets its masks
on ``/<cam>/mask`` from the segmenter, as on a real rig); sim time on ``/clock``. All stamps are sim time.
Subscribes ``/vidyn/cmd`` (geometry_msgs/TwistStamped, world frame) to drive the pusher; a command older than
``cmd_timeout_s`` of sim time is stale and the pusher stops (zero velocity). The cameras' poses go out once, latched,
on ``/tf_static`` (``world -> <cam>_link -> <cam>_color_optical_frame``). Topic names are relative to the node's
namespace (``/clock`` and ``/diagnostics`` stay global), so two rigs run side by side in two namespaces.

Rendering runs on its own thread, which also owns the MuJoCo/OSMesa context (GL contexts are per thread), so the
executor stays free for the command subscription. ``realtime: true`` paces frames to wall time; ``false`` runs as
fast as rendering allows (sim time still advances 1/fps per frame).

``lockstep_topic`` (a simulator's synchronous mode): frame k+1 is published only after a message on that topic with
a header stamp >= frame k's stamp has arrived, so a consumer slower than the rig (the CPU Gaussian scene) sees every
frame and the run does not depend on machine load. The rig renders frame k+1 while the consumer works on frame k.
Before the first frame the rig waits for a publisher on the topic (its type is discovered), and the first
acknowledgement may take ``lockstep_first_timeout_s`` (the consumer initialises on it); after ``lockstep_timeout_s``
without one the rig warns and goes on, and after 3 such frames in a row it runs without lockstep (a dead consumer
must not stall it). The topic's messages must start with a std_msgs/Header or a Time (PointCloud2,
Image, PoseStamped, ...). The rig also waits for the last frame's acknowledgement before it reports done.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from vidyn_ros.errors import ConfigError, VidynError
from vidyn_ros.nodes import _ros

NODE_NAME = "sim_rig"
LOCKSTEP_GIVE_UP = 3  # consecutive unacknowledged frames after which the rig runs without lockstep

PARAMS = [
    _ros.Param("scenario", "push", "scenario name in config/scenarios/ or a path to a scenario YAML"),
    _ros.Param("seed", 0, "seed for the scenario's randomised initial conditions", range="[0, 4294967295]"),
    _ros.Param("render_scale", 1.0, "image size factor (0.25: 640x480 -> 160x120)", range="(0, 4]"),
    _ros.Param("realtime", True, "pace frames to wall time (false: as fast as rendering allows)"),
    _ros.Param("rate", 1.0, "sim-time speed factor when realtime (0.5 = half speed)", range="(0, 100]", dynamic=True),
    _ros.Param("max_frames", 0, "frames to publish, then finish: 0 = the scenario's duration, -1 = until stopped",
               range="[-1, inf)"),
    _ros.Param("loop", False, "replay the scenario in a loop: every scenario duration the world is reset (initial "
               "conditions re-sampled with seed + episode), sim time goes on; for soak runs with max_frames -1"),
    _ros.Param("masks", True, "publish the true instance masks on /vidyn/sim/<cam>/mask (ground truth, evaluation "
               "only; perception's /<cam>/mask comes from the segmenter)"),
    _ros.Param("ground_truth", True, "publish ground-truth object poses on /vidyn/sim/object_poses"),
    _ros.Param("pusher_pose", True, "publish the pusher's pose on /vidyn/pusher/pose (the robot's own end-effector "
               "pose, as a real robot reports it; not object ground truth)"),
    _ros.Param("clock", True, "publish sim time on /clock"),
    _ros.Param("qos", "sensor", "QoS of the camera topics and true masks: sensor (best effort, as the topic contract "
               "says) or reliable (a recorder keeps every frame; still matches best-effort subscribers)",
               choices=("sensor", "reliable")),
    _ros.Param("cmd_timeout_s", 0.5, "a /vidyn/cmd older than this (sim time) is stale: the pusher stops",
               range="(0, 3600]", dynamic=True),
    _ros.Param("calibration_out", "", "write the rig calibration YAML (camera-to-world poses) here at start"),
    _ros.Param("start_delay_s", 0.0, "wait this long (wall time, from the first spin) before the first frame, for "
               "subscribers to connect", range="[0, 3600]"),
    _ros.Param("lockstep_topic", "", "synchronous mode: publish frame k+1 only after a message stamped >= frame k "
               "arrives on this topic (e.g. /vidyn/scene/gaussians; in the node's namespace, like every rig topic); "
               "empty = off"),
    _ros.Param("lockstep_mode", "pipelined", "pipelined: render frame k+1 while the consumer works on frame k (its "
               "commands act one frame later); sequential: step the physics to k+1 only after frame k's "
               "acknowledgement (a controller acknowledging with its command: closed loop, deterministic)",
               choices=("pipelined", "sequential")),
    _ros.Param("lockstep_timeout_s", 10.0, "lockstep: go on (with a warning) after waiting this long [s, wall]",
               range="(0, 3600]", dynamic=True),
    _ros.Param("lockstep_first_timeout_s", 180.0, "lockstep: wait this long [s, wall] for the consumer's publisher "
               "and its first acknowledgement (it initialises on the first frame)", range="(0, 86400]"),
]


class SimRigNode(_ros.Node):
    """Publishes the simulated rig; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        from vidyn_ros import msgs
        from vidyn_ros.rig.scenario import load_scenario

        self._msgs = msgs
        self.scenario = load_scenario(self.p.scenario)  # ConfigError (one line): malformed YAML, zero cameras, ...
        if not self.scenario.cameras:
            raise ConfigError(f"{self.p.scenario}: scenario has no cameras")
        self.cameras = [c.name for c in self.scenario.cameras]
        qos = _ros.qos_by_name(self.p.qos)
        image_cls = _ros.msg_class(msgs.IMAGE)
        T = _ros.node_topic  # rig topics resolve in the node's namespace: two rigs run side by side
        self._pubs: dict[str, Any] = {}
        for cam in self.cameras:
            self._pubs[msgs.color_topic(cam)] = self.create_publisher(image_cls, T(msgs.color_topic(cam)), qos)
            self._pubs[msgs.depth_topic(cam)] = self.create_publisher(image_cls, T(msgs.depth_topic(cam)), qos)
            self._pubs[msgs.info_topic(cam)] = self.create_publisher(
                _ros.msg_class(msgs.CAMERA_INFO), T(msgs.info_topic(cam)), qos)
            if self.p.masks:
                self._pubs[msgs.sim_mask_topic(cam)] = self.create_publisher(image_cls, T(msgs.sim_mask_topic(cam)),
                                                                             qos)
        if self.p.ground_truth:
            self._pubs[msgs.OBJECT_POSES_TOPIC] = self.create_publisher(
                _ros.msg_class(msgs.POSE_ARRAY), T(msgs.OBJECT_POSES_TOPIC), _ros.reliable_qos())
        if self.p.pusher_pose:
            self._pubs[msgs.PUSHER_POSE_TOPIC] = self.create_publisher(
                _ros.msg_class(msgs.POSE_STAMPED), T(msgs.PUSHER_POSE_TOPIC), _ros.reliable_qos())
        if self.scenario.events:  # known external forces (actuation): published whatever ground_truth says
            self._pubs[msgs.APPLIED_WRENCH_TOPIC] = self.create_publisher(
                _ros.msg_class(msgs.WRENCH_STAMPED), T(msgs.APPLIED_WRENCH_TOPIC), _ros.reliable_qos())
        self._clock_pub = self.create_publisher(_ros.msg_class(msgs.CLOCK), msgs.CLOCK_TOPIC, 10) \
            if self.p.clock else None
        self.create_subscription(_ros.msg_class(msgs.TWIST_STAMPED), T(msgs.CMD_TOPIC), self._on_cmd,
                                 _ros.reliable_qos(), raw=True)
        self.diag = _ros.DiagnosticsPublisher(self)
        # /tf_static: world -> <cam>_link -> <cam>_color_optical_frame of the scenario's cameras (latched)
        self.tf = _ros.StaticTransforms(self)
        self.tf.publish_rig({c.name: c.T_world_cam for c in self.scenario.cameras})

        # lockstep: the newest stamp the consumer acknowledged (ns), guarded by a condition the render thread waits on
        self._ack = threading.Condition()
        self._acked_ns = -1
        self._lockstep_sub: Any = None
        self.lockstep_timeouts = 0
        self.lockstep_wait_s = 0.0
        self._lockstep_misses = 0  # consecutive timeouts
        self._lockstep_on = False

        self.pusher_id: int | None = None  # set by the render thread once the rig is built
        self._cmd_lock = threading.Lock()
        self._cmd: tuple[np.ndarray, float] | None = None  # (velocity xyz, sim time when received)
        self._sim_time_s = 0.0
        self.frames = 0
        self._pace_anchor = (0.0, 0, 1.0)  # (wall time, frame, rate) the realtime pacing counts from
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

    # ----------------------------------------------------------------------------------------------------- lockstep
    def _on_ack(self, raw: bytes) -> None:
        from vidyn_ros.nodes.recorder import header_stamp_ns

        stamp = header_stamp_ns(bytes(raw))
        if stamp is None:
            return
        with self._ack:
            if stamp > self._acked_ns:
                self._acked_ns = stamp
                self._ack.notify_all()

    def _subscribe_lockstep(self, stop: threading.Event) -> bool:
        """Wait for a publisher on ``lockstep_topic`` and subscribe with its type and reliability; False if it never
        appeared within ``lockstep_first_timeout_s`` (the rig then runs free) or the node is stopping."""
        from rclpy.qos import ReliabilityPolicy

        topic = self.resolve_topic_name(_ros.node_topic(self.p.lockstep_topic))  # the consumer of this rig's frames
        t_end = time.monotonic() + self.p.lockstep_first_timeout_s
        while not stop.is_set():
            types = dict(self.get_topic_names_and_types()).get(topic)
            infos = self.get_publishers_info_by_topic(topic) if types else []
            if infos:
                reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
                qos = _ros.reliable_qos(depth=10) if reliable else _ros.sensor_qos(depth=10)
                self._lockstep_sub = self.create_subscription(_ros.msg_class(types[0]), topic, self._on_ack, qos,
                                                              raw=True)
                self.get_logger().info(f"lockstep with {topic} [{types[0]}]")
                return True
            if time.monotonic() > t_end:
                self.lockstep_timeouts += 1
                self.get_logger().warning(f"lockstep: no publisher on {topic} after "
                                          f"{self.p.lockstep_first_timeout_s:g} s; running without lockstep")
                self.diag.warn(f"lockstep: no publisher on {topic}; running without lockstep")
                return False
            stop.wait(0.05)
        return False

    def _wait_ack(self, stamp_ns: int, timeout_s: float, stop: threading.Event) -> None:
        """Block until the consumer acknowledged ``stamp_ns`` (or later), the timeout passed, or the node stops."""
        t0 = time.monotonic()
        with self._ack:
            while self._acked_ns < stamp_ns and not stop.is_set():
                left = timeout_s - (time.monotonic() - t0)
                if left <= 0:
                    self.lockstep_timeouts += 1
                    self._lockstep_misses += 1
                    msg = (f"lockstep: no message on {self.p.lockstep_topic} stamped >= {stamp_ns / 1e9:.3f} s "
                           f"after {timeout_s:g} s; going on")
                    if self._lockstep_misses >= LOCKSTEP_GIVE_UP:
                        # a consumer that died must not stall the rig for timeout_s on every remaining frame
                        self._lockstep_on = False
                        msg = (f"lockstep: {LOCKSTEP_GIVE_UP} frames in a row unacknowledged on "
                               f"{self.p.lockstep_topic}; running without lockstep")
                    self.get_logger().warning(msg)
                    self.diag.warn(msg, frames=self.frames)
                    break
                self._ack.wait(min(left, 0.05))  # short waits: notice ``stop`` promptly
            else:
                self._lockstep_misses = 0
        self.lockstep_wait_s += time.monotonic() - t0

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
            self.pusher_id = getattr(rig, "pusher_id", None)
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
            self._lockstep_on = bool(self.p.lockstep_topic) and self._subscribe_lockstep(stop)
            last_stamp: int | None = None  # the newest frame published (lockstep waits for its acknowledgement)
            t_wall0 = time.monotonic()
            self._pace_anchor = (t_wall0, 0, self.p.rate)
            fps = float(rig.fps)
            sequential = self.p.lockstep_mode == "sequential"
            while not stop.is_set() and (n_max < 0 or self.frames < n_max):
                if self._lockstep_on and sequential and last_stamp is not None:
                    # the consumer's reaction to the last frame (its command) must arrive before the physics steps
                    first = self.frames == 1
                    self._wait_ack(last_stamp, self.p.lockstep_first_timeout_s if first else self.p.lockstep_timeout_s,
                                   stop)
                    if stop.is_set():
                        break
                if self.p.loop and self.frames > 0 and self.frames % rig.n_frames == 0:
                    frame_index = rig.frame_index  # the world starts over, the clock does not
                    rig.reset(self.p.seed + self.frames // rig.n_frames)
                    rig.frame_index = frame_index
                if has_pusher:
                    rig.set_pusher_velocity(self._current_velocity())
                t0 = time.perf_counter()
                rf = rig.step()
                self.render_ms.append((time.perf_counter() - t0) * 1e3)
                self._sim_time_s = float(rig.time_s)
                if self._lockstep_on and not sequential and last_stamp is not None:  # rendered while the consumer
                    # worked on the last frame
                    first = self.frames == 1
                    self._wait_ack(last_stamp, self.p.lockstep_first_timeout_s if first else self.p.lockstep_timeout_s,
                                   stop)
                    if stop.is_set():
                        break
                self._publish(rf)
                last_stamp = int(rf.frame.stamp_ns)
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
                if self.p.realtime and self._pace(fps, stop):
                    break
            if self._lockstep_on and last_stamp is not None and not stop.is_set():  # the last frame's update too
                self._wait_ack(last_stamp, self.p.lockstep_first_timeout_s if self.frames == 1
                               else self.p.lockstep_timeout_s, stop)
        if not stop.is_set():
            self.get_logger().info(f"published {self.frames} frames; finished")
        self.done = True
        return False

    def _pace(self, fps: float, stop: threading.Event) -> bool:
        """Wait until the next frame is due at ``rate`` x real time; True if the node is stopping. ``rate`` can be set
        at run time (``ros2 param set /sim_rig rate 0.5``): the new speed counts from the frame just published."""
        while True:
            t0, frame0, rate = self._pace_anchor
            if self.p.rate != rate:
                t0, frame0, rate = self._pace_anchor = (time.monotonic(), self.frames - 1, self.p.rate)
            lag = t0 + (self.frames - frame0) / fps / rate - time.monotonic()
            if lag <= 0:
                return False
            if stop.wait(min(lag, 0.1)):  # short waits: a new rate takes effect within 0.1 s
                return True

    def _publish(self, rf: Any) -> None:
        stamp = int(rf.frame.stamp_ns)
        if self._clock_pub is not None:
            _ros.publish_cdr(self._clock_pub, self._msgs.clock_msg(stamp), self._msgs.CLOCK)
        pose_pub = self._pubs.get(self._msgs.PUSHER_POSE_TOPIC)
        pusher = [p for p in rf.object_poses if p.object_id == self.pusher_id] if self.pusher_id else []
        if pose_pub is not None and pusher:  # first: a controller has the robot's pose before the scene of this frame
            _ros.publish_cdr(pose_pub, self._msgs.pose_stamped_msg(pusher[0].position, pusher[0].quat_wxyz, stamp),
                             self._msgs.POSE_STAMPED)
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
            **({"lockstep_timeouts": self.lockstep_timeouts, "lockstep_wait_s": round(self.lockstep_wait_s, 2)}
               if self.p.lockstep_topic else {}),
        }

    def close(self) -> None:
        self._thread.stop(timeout=10.0)


def create_node(**node_kwargs: Any) -> SimRigNode:
    return SimRigNode(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
