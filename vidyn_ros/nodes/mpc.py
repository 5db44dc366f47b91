"""mpc node: visual model-predictive control of the pusher towards a goal (vidyn_ros.control.Planner).

Wiring:
  in   /vidyn/scene/gaussians (PointCloud2: the live scene, its header stamp = the frame's time)
       /vidyn/pusher/pose (PoseStamped: the robot's own end-effector pose, world frame)
       /vidyn/goal/image/<cam> (Image rgb8, optional: goal images when no goal file is given)
  out  /vidyn/cmd (TwistStamped, world frame) at ``control_rate_hz`` (or once per scene update with ``lockstep``)
       /vidyn/mpc/plan (nav_msgs/Path: the planned pusher path)
       /vidyn/mpc/render/<cam> (Image rgb8: the predicted final frame of the plan, cost cameras)
       /vidyn/mpc/prediction (MarkerArray: per object its predicted centroid path over the horizon; marker id =
       object id, the first point is the centroid now, one point per control period ``dt``)
       /vidyn/goal/image/<cam> (Image rgb8, latched: the goal rendered from the scene, when made from a file)
       /diagnostics (cost, cost of doing nothing, iterations, solve time, backend, why commands are zero)
  srv  ~/enable (std_srvs/SetBool): commands are zero while disabled; ``enabled`` false (the default) = a real rig
       starts disabled.

Safety (vidyn_ros.control.safety): each control period the watchdog checks the scene's age by its header stamp
against the node clock (sim time under use_sim_time), NaN in the last input, a diverging cost and the enable switch;
any of them gives an exact zero command at that period, i.e. within 2 control periods of the cause (a NaN or empty
scene sends its zero at once, on arrival). Every command
passes the filter (max speed, max acceleration, workspace box around the measured pusher position).

Planning runs on a worker thread (drop-oldest queue of one) whenever a scene arrives and ``replan_period_s`` has
passed since the last plan; the control timer only reads the newest plan. With ``lockstep`` (the simulated closed
loop, sim_rig lockstep_topic=/vidyn/cmd, lockstep_mode=sequential) the node answers every scene message with one
command stamped with the scene's stamp, so the rig steps only once the command for that frame exists.
"""

from __future__ import annotations

import collections
import math
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from vidyn_ros.errors import ConfigError, VidynError
from vidyn_ros.nodes import _ros

NODE_NAME = "mpc"
GAUSSIANS_TOPIC = "/vidyn/scene/gaussians"
PLAN_TOPIC = "/vidyn/mpc/plan"
PREDICTION_TOPIC = "/vidyn/mpc/prediction"
RENDER_TOPIC = "/vidyn/mpc/render/{cam}"
GOAL_TOPIC = "/vidyn/goal/image/{cam}"

PARAMS = [
    _ros.Param("views", ["cam0", "cam1"], "cameras the cost renders (goal images are per camera)"),
    _ros.Param("calibration", "", "rig calibration YAML with each camera's pose (intrinsics from "
               "/<cam>/color/camera_info)"),
    _ros.Param("scenario", "", "simulated-rig scenario to take the cameras (poses and intrinsics) from instead"),
    _ros.Param("goal_file", "", "goal-poses YAML (goals: [{from: [x, y], to: [x, y], yaw_deg}]): the scene with "
               "those objects moved is the goal image; empty = goal_ply or /vidyn/goal/image/<cam>"),
    _ros.Param("goal_ply", "", "goal scene as a 3DGS PLY with object ids, rendered as the goal"),
    _ros.Param("backend", "static", "dynamics backend",
               choices=("static", "constant_velocity", "physics", "learned")),
    _ros.Param("checkpoint", "", "learned backend: checkpoint file (empty = the shipped model)"),
    _ros.Param("device", "cpu", "torch device for planning: cpu, cuda, ..."),
    _ros.Param("enabled", False, "start enabled (a real rig starts disabled: enable with the ~/enable service)"),
    _ros.Param("lockstep", False, "answer every scene message with one command stamped with its stamp (the "
               "simulated closed loop) instead of publishing on the control timer"),
    _ros.Param("control_rate_hz", 10.0, "command rate of the control timer [Hz]", range="(0, 1000]"),
    _ros.Param("replan_period_s", 0.1, "replan when a scene arrives this long after the last plan [s]",
               range="[0, 60]", dynamic=True),
    _ros.Param("horizon", 8, "control steps planned ahead", range="[1, 1000]"),
    _ros.Param("dt", 0.1, "planner control period [s] (one action per period)", range="(0, 10]"),
    _ros.Param("sub_steps", 0, "dynamics steps per planner period; 0 = the backend's own (learned: its 30 Hz "
               "training rate, physics and baselines: 1)", range="[0, 100]"),
    _ros.Param("method", "mppi", "sampling initialisation: mppi, cem, none", choices=("mppi", "cem", "none")),
    _ros.Param("samples", 24, "sampled action sequences per round", range="[1, 100000]"),
    _ros.Param("sample_iters", 2, "sampling rounds", range="[0, 1000]"),
    _ros.Param("grad_iters", 3, "Adam steps through backend + renderer", range="[0, 1000]"),
    _ros.Param("lr", 0.02, "Adam learning rate [m/s]", range="(0, 10]"),
    _ros.Param("width", 80, "cost render width [px]", range="[8, 4096]"),
    _ros.Param("sample_width", 40, "sampling-stage render width [px]", range="[8, 4096]"),
    _ros.Param("reach_weight", 0.3, "weight of the reach shaping term (goals from the scene only; 0 = off)",
               range="[0, 1000]"),
    _ros.Param("goal_tolerance", 0.008, "goal reached when every object's scene centroid is this close to its goal "
               "centroid [m] (goals from the scene): commands are zero and replanning pauses until one is twice as "
               "far; 0 = never", range="[0, 10]"),
    _ros.Param("max_speed", 0.2, "command speed limit [m/s]", range="(0, 10]"),
    _ros.Param("max_accel", 2.0, "command acceleration limit [m/s^2]", range="(0, 1000]"),
    _ros.Param("workspace", [-0.35, -0.35, 0.35, 0.35], "pusher workspace box x0 y0 x1 y1 [m]",
               range="[-100, 100]", length=4),
    _ros.Param("scene_timeout_s", 0.5, "the scene is stale when its newest stamp is older than this [s]",
               range="(0, 3600]"),
    _ros.Param("pose_timeout_s", 0.5, "the pusher pose is stale when older than this [s]; 0 = pose not required",
               range="[0, 3600]"),
    _ros.Param("diverge_factor", 50.0, "stop when the plan cost exceeds this x the cost of doing nothing, or this x "
               "the goal's first cost", range="(0, inf)"),
    _ros.Param("threads", 1, "CPU threads for torch in this process; 0 = torch's default", range="[0, 1024]"),
    _ros.Param("seed", 0, "random seed of the sampling planner", range="[0, 4294967295]"),
]


class MpcNode(_ros.Node):
    """Plans on scene updates, publishes safe commands; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        p = self.p
        if not p.views:
            raise ConfigError("mpc: parameter 'views' is empty")
        if not p.calibration and not p.scenario:
            raise ConfigError("mpc: set parameter 'calibration' (rig calibration YAML) or 'scenario' (cameras)")
        from vidyn_ros import msgs
        from vidyn_ros.control.backends import BACKENDS, default_sub_steps
        from vidyn_ros.control.cost import CostWeights
        from vidyn_ros.control.planner import PlannerConfig
        from vidyn_ros.control.safety import CommandFilter, CommandLimits, Watchdog
        from vidyn_ros.render import set_cpu_threads

        if p.backend not in BACKENDS:
            raise ConfigError(f"mpc: unknown backend {p.backend!r} (choose from {', '.join(BACKENDS)})")
        set_cpu_threads(p.threads)
        self.msgs = msgs
        workspace = tuple(float(v) for v in p.workspace)
        self.cfg = PlannerConfig(
            horizon=p.horizon, dt=p.dt, sub_steps=p.sub_steps or default_sub_steps(p.backend, p.dt),
            method=p.method, samples=p.samples,
            sample_iters=p.sample_iters, grad_iters=p.grad_iters, lr=p.lr, max_speed=p.max_speed,
            max_accel=p.max_accel, workspace=workspace, views=tuple(p.views), width=p.width,
            sample_width=p.sample_width, diverge_factor=p.diverge_factor, device=p.device, seed=p.seed,
            weights=CostWeights(reach=p.reach_weight),
            # the reach shaping and the push proposal act until below the goal tolerance (no gap to stall in)
            reach_tolerance=0.6 * p.goal_tolerance if p.goal_tolerance > 0 else PlannerConfig.reach_tolerance,
        ).check()  # fmt: skip
        self.period_s = 1.0 / p.control_rate_hz
        self.filter = CommandFilter(CommandLimits(p.max_speed, p.max_accel, workspace, self.period_s))
        self.watchdog = Watchdog(p.scene_timeout_s, p.pose_timeout_s, p.diverge_factor)
        self.enabled = bool(p.enabled)

        self.pub_cmd = self.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), msgs.CMD_TOPIC, _ros.reliable_qos())
        self.pub_plan = self.create_publisher(_ros.msg_class(msgs.PATH), PLAN_TOPIC, _ros.reliable_qos(2))
        self.pub_pred = self.create_publisher(_ros.msg_class(msgs.MARKER_ARRAY), PREDICTION_TOPIC,
                                              _ros.reliable_qos(2))
        self.pub_render = {c: self.create_publisher(_ros.msg_class(msgs.IMAGE), RENDER_TOPIC.format(cam=c),
                                                    _ros.sensor_qos(2)) for c in p.views}
        self.pub_goal: dict[str, Any] = {}
        self.diag = _ros.DiagnosticsPublisher(self)
        self.create_subscription(_ros.msg_class(msgs.POINTCLOUD2), GAUSSIANS_TOPIC, self._on_scene,
                                 _ros.reliable_qos(2), raw=True)
        self.create_subscription(_ros.msg_class(msgs.POSE_STAMPED), msgs.PUSHER_POSE_TOPIC, self._on_pose,
                                 _ros.reliable_qos(), raw=True)
        if not p.goal_file and not p.goal_ply:
            for cam in p.views:
                self.create_subscription(_ros.msg_class(msgs.IMAGE), GOAL_TOPIC.format(cam=cam),
                                         lambda raw, cam=cam: self._on_goal_image(cam, raw), _ros.latched_qos(),
                                         raw=True)
        else:
            self.pub_goal = {c: self.create_publisher(_ros.msg_class(msgs.IMAGE), GOAL_TOPIC.format(cam=c),
                                                      _ros.latched_qos()) for c in p.views}
        try:
            from std_srvs.srv import SetBool
        except ImportError as err:
            raise VidynError("mpc: std_srvs is not installed (pip install ros-std-srvs, see requirements-ros.txt)"
                             ) from err
        self.create_service(SetBool, "~/enable", self._on_enable)
        self._infos: dict[str, Any] = {}  # camera name -> CameraInfo (intrinsics, when cameras come from a calibration)
        if not p.scenario:
            for cam in p.views:
                self.create_subscription(_ros.msg_class(msgs.CAMERA_INFO), msgs.info_topic(cam),
                                         lambda raw, cam=cam: self._on_info(cam, raw), _ros.reliable_qos(2),
                                         raw=True)

        self._lock = threading.Lock()  # guards plan, pusher pose, filter and publishing of commands
        self._history: collections.deque = collections.deque(maxlen=3)  # (stamp_ns, GaussianSet)
        self._pusher: np.ndarray | None = None
        self._goal_images: dict[str, np.ndarray] = {}
        self.cameras: list[Any] | None = None
        self.planner: Any = None
        self._backend_objects: tuple[int, ...] | None = None
        self.plan: Any = None
        self.plans = 0
        self.reached = False  # the scene says the goal is reached (goal_tolerance): zero commands, no replans
        self.commands = 0
        self.zero_commands = 0
        self.last_reason = ""
        self.invalid_scene_ns: int | None = None  # node clock when the last NaN / empty scene arrived
        self.cost_history: list[tuple[float, float]] = []  # (stamp s, cost of the plan)
        self._t0_ns: int | None = None
        self.worker = _ros.Worker(self._process, maxsize=1, name="mpc-worker", on_error=self._on_error)
        if not p.lockstep:
            self.create_timer(self.period_s, self._on_timer)
        self.get_logger().info(f"mpc: backend {p.backend}, views {list(p.views)}, "
                               f"{'enabled' if self.enabled else 'DISABLED (call ~/enable)'}")

    # ------------------------------------------------------------------------------------------------------- inputs
    def _on_scene(self, raw: bytes) -> None:
        msgs = self.msgs
        from vidyn_ros.scene.export import gaussians_from_fields

        try:
            msg = msgs.deserialize(raw, msgs.POINTCLOUD2)
            stamp_ns = msgs.stamp_to_ns(msg.header)
            g = gaussians_from_fields(msgs.pointcloud2_to_arrays(msg))
        except VidynError as err:
            self.diag.warn(f"bad scene message ignored: {err}")
            return
        finite = bool(np.isfinite(g.means.numpy()).all() and np.isfinite(g.quats.numpy()).all())
        valid = finite and len(g) > 0
        with self._lock:
            self.watchdog.scene(stamp_ns * 1e-9, valid, "NaN / inf in the scene" if not finite else "empty scene")
            if not valid:
                self.invalid_scene_ns = _ros.now_ns(self)
        if not valid and not self.p.lockstep:
            self._send()  # stop now, not at the next timer period (which a busy machine can delay)
        self.worker.submit((stamp_ns, g if valid else None))

    def _on_pose(self, raw: bytes) -> None:
        msgs = self.msgs
        try:
            msg = msgs.deserialize(raw, msgs.POSE_STAMPED)
            pos, _q = msgs.pose_from_msg(msg)
        except VidynError as err:
            self.diag.warn(f"bad pusher pose ignored: {err}")
            return
        ok = bool(np.all(np.isfinite(pos)))
        with self._lock:
            self.watchdog.pose(msgs.stamp_to_ns(msg.header) * 1e-9, ok, "NaN in the pusher pose")
            if ok:
                self._pusher = pos

    def _on_goal_image(self, cam: str, raw: bytes) -> None:
        msgs = self.msgs
        try:
            img = msgs.image_to_array(msgs.deserialize(raw, msgs.IMAGE), expect=("rgb8",))
        except VidynError as err:
            self.diag.warn(f"bad goal image on {GOAL_TOPIC.format(cam=cam)} ignored: {err}")
            return
        with self._lock:
            self._goal_images[cam] = img
            if self.planner is not None and set(self._goal_images) >= set(self.p.views):
                self._set_goal_from_images()

    def _on_info(self, cam: str, raw: bytes) -> None:
        if cam in self._infos:
            return
        try:
            self._infos[cam] = self.msgs.deserialize(raw, self.msgs.CAMERA_INFO)
        except VidynError as err:
            self.diag.warn(f"bad camera_info for {cam} ignored: {err}")

    def _on_enable(self, request: Any, response: Any) -> Any:
        with self._lock:
            was = self.enabled
            self.enabled = bool(request.data)
            if self.enabled and not was and self.planner is not None:
                self.planner.reset()
                self.filter.reset()
        response.success = True
        response.message = "enabled" if self.enabled else "disabled: commands are zero"
        self.get_logger().info(f"mpc: {response.message}")
        return response

    # ------------------------------------------------------------------------------------------------------- work
    def _on_error(self, err: BaseException) -> None:
        text = str(err) if isinstance(err, VidynError) else f"{type(err).__name__}: {err}"
        with self._lock:
            self.watchdog.invalid = f"planning failed: {text}"
        self.diag.error(f"mpc: planning failed: {text}")

    def _process(self, item: tuple[int, Any]) -> None:
        stamp_ns, g = item
        now_s = stamp_ns * 1e-9
        try:
            if g is not None:
                self._history.append((stamp_ns, g))
                self._ensure_planner(g)
                due = self.plan is None or now_s - self.plan.stamp_s >= self.p.replan_period_s - 1e-6
                ready = self.planner is not None and self.planner.goal is not None
                if due and ready and self._pusher is not None:
                    self._check_reached()
                    if not self.reached:
                        self._replan(stamp_ns)
        finally:
            if self.p.lockstep:  # every scene message gets exactly one command (zero if anything failed)
                self._send(stamp_ns)

    def _ensure_planner(self, g: Any) -> None:
        """Cameras, goal and planner on the first usable scene; the physics backend is rebuilt when objects change."""
        from vidyn_ros.control.backends import make_backend, needs_scene
        from vidyn_ros.control.planner import Planner

        if self.cameras is None:
            self.cameras = self._load_cameras()
            if self.cameras is None:
                return
        state = self._state()
        objects = tuple(state.object_labels())
        if self.planner is None:
            model = make_backend(self.p.backend, state, device=self.p.device, checkpoint=self.p.checkpoint)
            self.planner = Planner(model, self.cfg, background=self._background(g))
            self._backend_objects = objects
            self._make_goal(g, state.pusher_id)
        elif needs_scene(self.p.backend) and objects != self._backend_objects:
            self.planner.set_model(make_backend(self.p.backend, state, device=self.p.device))
            self._backend_objects = objects

    def _state(self) -> Any:
        """The newest scenes as a ParticleState (3-step history when the snapshots align, else at rest)."""
        from vidyn_ros.dynamics.state import ParticleState, pusher_object_id

        stamps = [s for s, _ in self._history]
        snaps = [g for _, g in self._history]
        last = snaps[-1]
        pusher = None
        if self._pusher is not None:
            pusher = pusher_object_id(last.object_ids, last.means, self._pusher)
        if len(snaps) == 3 and len({len(s) for s in snaps}) == 1 and stamps[0] < stamps[1] < stamps[2]:
            return ParticleState.from_snapshots(snaps, stamps, pusher_id=pusher)
        return ParticleState.at_rest(last, stamps[-1], self.cfg.dt, pusher_id=pusher)

    def _load_cameras(self) -> list[Any] | None:
        """The cost cameras: a scenario's, or the rig calibration's poses with the intrinsics of camera_info (None,
        retried with the next scene, while the calibration file or a camera_info is missing)."""
        p = self.p
        if p.scenario:
            from vidyn_ros.rig.scenario import load_scenario

            by_name = {c.name: c for c in load_scenario(p.scenario).cameras}
            missing = [v for v in p.views if v not in by_name]
            if missing:
                raise ConfigError(f"mpc: views {missing} not in scenario {p.scenario} ({sorted(by_name)})")
            return [by_name[v] for v in p.views]
        poses = _ros.rig_camera_poses(self.diag, "mpc", p.views, p.calibration, "")
        missing = [v for v in p.views if v not in self._infos]
        if poses is None or missing:
            if missing:
                self.diag.warn(f"waiting for camera_info of {missing}")
            return None
        return [self.msgs.camera_from_info(self._infos[v], v, poses[v]) for v in p.views]

    def _background(self, g: Any) -> tuple[float, float, float]:
        # the scene composites over its estimated background colour; the cloud does not carry it: the sim sky's
        # colour is what the scene estimates from pixels without depth, and black (a real rig's depth covers all)
        if self.p.scenario:
            from vidyn_ros.rig.scenario import load_scenario

            return tuple(float(v) for v in load_scenario(self.p.scenario).render.background)
        return (0.0, 0.0, 0.0)

    def _make_goal(self, g: Any, pusher_id: int | None) -> None:
        from vidyn_ros.control.goal import LayeredRenderer, goal_from_moves, goal_from_ply, load_goal_moves

        fine, _ = self.planner.cameras(self.cameras)
        renderer = LayeredRenderer(fine, g.subset(g.object_ids == 0), self.planner.background)
        if self.p.goal_file:
            goal, _ = goal_from_moves(g, load_goal_moves(self.p.goal_file), renderer, pusher_id=pusher_id)
        elif self.p.goal_ply:
            goal = goal_from_ply(self.p.goal_ply, renderer, pusher_id=pusher_id)
        else:
            if set(self._goal_images) >= set(self.p.views):
                self._set_goal_from_images()
            else:
                self.diag.warn(f"waiting for goal images on {GOAL_TOPIC.format(cam='<cam>')} for {list(self.p.views)}")
            return
        self.planner.set_goal(goal)
        self.watchdog.new_goal()
        stamp = self._history[-1][0]
        for cam, img in zip(self.p.views, goal.rgb, strict=True):
            arr = (img.clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()
            _ros.publish_cdr(self.pub_goal[cam], self.msgs.image_msg(arr, stamp, self.msgs.camera_frame_id(cam),
                                                                     "rgb8"), self.msgs.IMAGE)
        self.get_logger().info(f"mpc: goal {goal.source}")

    def _set_goal_from_images(self) -> None:
        from vidyn_ros.control.goal import goal_from_images

        fine, _ = self.planner.cameras(self.cameras)
        self.planner.set_goal(goal_from_images([self._goal_images[c] for c in self.p.views], fine,
                                               source="/vidyn/goal/image"))
        self.watchdog.new_goal()

    def _check_reached(self) -> None:
        """Goal reached by the scene's estimate (with hysteresis: resume once twice the tolerance away)."""
        tol = self.p.goal_tolerance
        dist = self.planner.goal_distance(self._state()) if tol > 0 else None
        if dist is None:
            return
        reached = dist < tol if not self.reached else dist < 2 * tol
        if reached != self.reached:
            with self._lock:
                self.reached = reached
                if not reached:
                    self.planner.reset()
            self.get_logger().info(f"mpc: goal {'reached' if reached else 'lost'} (scene: {dist * 1000:.1f} mm away)")

    def _replan(self, stamp_ns: int) -> None:
        msgs = self.msgs
        with self._lock:
            pusher = None if self._pusher is None else self._pusher.copy()
        state = self._state()
        res = self.planner.plan(state, pusher, stamp_s=stamp_ns * 1e-9)
        with self._lock:
            self.plan = res
            self.plans += 1
            self.watchdog.cost(res.cost, res.diverged)
            self.cost_history.append((res.stamp_s, res.cost))
        _ros.publish_cdr(self.pub_plan, msgs.path_msg(res.path, stamp_ns, "world"), msgs.PATH)
        from vidyn_ros.scene.export import object_color

        markers = []
        for k, path in res.predicted_centroids.items():
            now = state.now[state.object_ids == k].mean(0).cpu().numpy()
            markers.append(dict(kind="line_strip", marker_id=k, ns="mpc_prediction", scale=0.004,
                                color=(*object_color(k), 1.0), points=np.vstack([now, path])))
        _ros.publish_cdr(self.pub_pred, msgs.marker_array_msg(markers, stamp_ns, "world"), msgs.MARKER_ARRAY)
        for cam, img in zip(self.p.views, res.predicted_rgb, strict=True):
            _ros.publish_cdr(self.pub_render[cam], msgs.image_msg(img, stamp_ns, msgs.camera_frame_id(cam), "rgb8"),
                             msgs.IMAGE)
        iters = sum(1 for stage, _ in res.history if stage == "grad")
        self.diag.update(_ros.DIAG_OK, "planning", force=True,  # every plan: the demo plots the cost over time
                         cost=f"{res.cost:.4f}", cost_zero=f"{res.cost_zero:.4f}", solve_s=f"{res.seconds:.3f}",
                         iterations=iters, sample_rounds=sum(1 for s, _ in res.history if s == "sample"),
                         backend=self.p.backend, enabled=self.enabled, plans=self.plans,
                         **{f"term_{k}": f"{v:.4f}" for k, v in res.terms.items()})

    # ------------------------------------------------------------------------------------------------------- output
    def _on_timer(self) -> None:
        self._send()

    def _send(self, stamp_ns: int | None = None) -> None:
        """Publish the command for ``stamp_ns`` (default: the node's clock now, read under the lock so that
        commands from the timer and from a fault go out with increasing stamps): the plan's action through the
        filter, or zero when unsafe."""
        with self._lock:
            if stamp_ns is None:
                stamp_ns = _ros.now_ns(self)
            now_s = stamp_ns * 1e-9
            status = self.watchdog.check(now_s)
            reason = "" if status.ok else status.reason
            if not reason and not self.enabled:
                reason = "disabled"
            plan = self.plan
            if not reason and self.reached:
                reason = "goal reached"
            if not reason and plan is None:
                reason = "no plan yet"
            v = np.zeros(3)
            if not reason:
                k = math.floor((now_s - plan.stamp_s) / self.cfg.dt + 1e-6)
                if k >= len(plan.actions):
                    reason = "plan expired (no replan within its horizon)"
                else:
                    v = plan.actions[max(k, 0)]
            # the filter's time axis starts at the first command: epoch seconds as float64 lose ~0.2 us, which
            # shows in the acceleration limit
            if self._t0_ns is None:
                self._t0_ns = stamp_ns
            t_rel = (stamp_ns - self._t0_ns) * 1e-9
            if reason:
                cmd = self.filter.stop(t_rel)
            else:
                cmd = self.filter(v, t_rel, self._pusher)
            if self.planner is not None:
                self.planner.commit(cmd)
            _ros.publish_cdr(self.pub_cmd, self.msgs.twist_stamped_msg(cmd, (0.0, 0.0, 0.0), stamp_ns),
                             self.msgs.TWIST_STAMPED)
            self.commands += 1
            self.zero_commands += int(not np.any(cmd))
            changed = reason != self.last_reason
            self.last_reason = reason
        if changed:
            if reason:
                self.diag.warn(f"zero command: {reason}", commands=self.commands, zero_commands=self.zero_commands)
            else:
                self.diag.ok("commanding", commands=self.commands)

    def summary(self) -> dict[str, Any]:
        return {"plans": self.plans, "goal_reached": self.reached, "commands": self.commands,
                "zero_commands": self.zero_commands,
                "backend": self.p.backend, "last_cost": None if self.plan is None else round(self.plan.cost, 5),
                "last_reason": self.last_reason}

    def close(self) -> None:
        self.worker.stop(timeout=30.0)


def create_node(**node_kwargs: Any) -> MpcNode:
    return MpcNode(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
