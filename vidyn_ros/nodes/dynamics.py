"""dynamics node: the live scene -> predicted future Gaussians, object paths and frames (vidyn_ros.dynamics).

Wiring:
  in   /vidyn/scene/gaussians (PointCloud2: the scene's Gaussians; rows keep their identity while the scene lives)
       /vidyn/cmd (TwistStamped: the pusher command, held over the horizon while fresh)
       /vidyn/pusher/pose (PoseStamped: the robot's end-effector position; the segmented object there is the
       kinematic pusher)
       /<cam>/color/camera_info (intrinsics of the cameras predicted frames are rendered for)
  out  /vidyn/prediction/gaussians (PointCloud2 at the horizon, stamped with the predicted time)
       /vidyn/prediction/trajectories (MarkerArray: per-object predicted centroid paths, now -> horizon)
       /vidyn/prediction/render/<cam> (rgb8: the predicted frame at the horizon)
       /diagnostics (rate, rollout time, particles, horizon, backend, pusher, problems)
The callback only decodes and enqueues; rollouts run on a worker thread with a drop-oldest queue of one. A missing,
corrupt or incompatible checkpoint is an ERROR on /diagnostics (no predictions) and is retried when the file
changes: the node stays up instead of crash-looping. A scene with NaN / inf is a warning and is skipped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidyn_ros.errors import ConfigError, VidynError
from vidyn_ros.nodes import _ros

NODE_NAME = "dynamics"
GAUSSIANS_TOPIC = "/vidyn/scene/gaussians"
PREDICTION_TOPIC = "/vidyn/prediction/gaussians"
TRAJECTORIES_TOPIC = "/vidyn/prediction/trajectories"
RENDER_TOPIC = "/vidyn/prediction/render/{cam}"

PARAMS = [
    _ros.Param("backend", "learned", "dynamics backend: learned, constant_velocity, static, physics",
               choices=("learned", "constant_velocity", "static", "physics")),
    _ros.Param("checkpoint", "", "learned backend: checkpoint file (empty = the shipped model in models/)"),
    _ros.Param("horizon", 10, "predicted steps", range="[1, 1000]"),
    _ros.Param("dt", 0.0, "step length [s]; 0 = the scene's frame interval", range="[0, 10]"),
    _ros.Param("sub_steps", 1, "model steps per predicted step (residual sub-steps of dt / n)", range="[1, 100]"),
    _ros.Param("rate_hz", 0.0, "predict at most this often [Hz]; 0 = on every scene update",
               range="[0, 1000]", dynamic=True),
    _ros.Param("device", "cpu", "torch device: cpu, cuda, cuda:1 ..."),
    _ros.Param("cameras", [], "cameras to render predicted frames for (topic prefixes); empty = every camera of the "
               "rig ('calibration' or 'scenario')", kind="string"),
    _ros.Param("calibration", "", "rig calibration YAML with each camera's pose (camera-to-world)"),
    _ros.Param("scenario", "", "simulated-rig scenario to take camera poses (and the background colour) from"),
    _ros.Param("publish_renders", True, "publish /vidyn/prediction/render/<cam>"),
    _ros.Param("render_width", 160, "width of the predicted frames [px] (height keeps the aspect)", range="[8, 4096]"),
    _ros.Param("render_every", 1, "render every n-th prediction (rendering costs time on CPU)",
               range="[1, 100000]", dynamic=True),
    _ros.Param("background", [0.0, 0.0, 0.0], "RGB in [0, 1] behind the Gaussians (a scenario sets its sky colour)",
               range="[0, 1]", length=3),
    _ros.Param("cmd_timeout_s", 0.5, "a /vidyn/cmd older than this is not in effect (pusher held still) [s]",
               range="(0, 3600]"),
    _ros.Param("stale_s", 2.0, "warn on /diagnostics when no scene arrived for this long [s]",
               range="(0, 3600]", dynamic=True),
    _ros.Param("threads", 1, "CPU threads for torch in this process; 0 = torch's default", range="[0, 1024]"),
]


class DynamicsNode(_ros.Node):
    """Predicts from every scene update; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        p = self.p
        from vidyn_ros import msgs
        from vidyn_ros.control.backends import BACKENDS
        from vidyn_ros.render import set_cpu_threads

        if p.backend not in BACKENDS:
            raise ConfigError(f"dynamics: unknown backend {p.backend!r} (choose from {', '.join(BACKENDS)})")
        set_cpu_threads(p.threads)
        self.msgs = msgs
        self.pub_cloud = self.create_publisher(_ros.msg_class(msgs.POINTCLOUD2), PREDICTION_TOPIC,
                                               _ros.reliable_qos(2))
        self.pub_paths = self.create_publisher(_ros.msg_class(msgs.MARKER_ARRAY), TRAJECTORIES_TOPIC,
                                               _ros.reliable_qos(2))
        self.pub_render: dict[str, Any] = {}  # per camera, once the camera set is known (_setup_renders)
        self.diag = _ros.DiagnosticsPublisher(self)
        self.rate = _ros.RateMeter()
        self._lock = threading.Lock()
        self.predictor: Any = None  # LivePredictor once the backend loaded
        self.load_error = ""
        self._ckpt_mtime: float | None = None
        self._pusher: np.ndarray | None = None
        self._command: tuple[int, np.ndarray] | None = None
        self.infos: dict[str, Any] = {}
        self.poses: dict[str, Any] | None = None
        self._poses_warned = False
        self.scenes = 0  # scene updates processed by the worker
        self.predictions = 0
        self.skipped = 0
        self.last_prediction: Any = None
        self._last_scene_t = time.monotonic()
        self._last_predict_stamp: int | None = None
        self.background = tuple(float(v) for v in p.background)
        if p.scenario and list(p.background) == [0.0, 0.0, 0.0]:
            from vidyn_ros.rig.scenario import load_scenario

            self.background = tuple(float(v) for v in load_scenario(p.scenario).render.background)
        self._load_backend()
        self.worker = _ros.Worker(self._process, maxsize=1, name="dynamics-worker", on_error=self._on_error)
        self.create_subscription(_ros.msg_class(msgs.POINTCLOUD2), GAUSSIANS_TOPIC, self._on_scene,
                                 _ros.reliable_qos(2), raw=True)
        self.create_subscription(_ros.msg_class(msgs.TWIST_STAMPED), msgs.CMD_TOPIC, self._on_cmd,
                                 _ros.reliable_qos(), raw=True)
        self.create_subscription(_ros.msg_class(msgs.POSE_STAMPED), msgs.PUSHER_POSE_TOPIC, self._on_pose,
                                 _ros.reliable_qos(), raw=True)
        if p.publish_renders:
            if p.cameras:
                self._setup_renders(list(p.cameras))
            self._resolve_poses()  # now if the rig is readable, else on the timer
        self.create_timer(1.0, self._on_timer)
        self.get_logger().info(f"dynamics: backend {p.backend}, horizon {p.horizon}, device {p.device}"
                               + (f" ({self.load_error})" if self.load_error else ""))

    # ------------------------------------------------------------------------------------------------------- backend
    def _checkpoint_path(self) -> str:
        if self.p.backend != "learned":
            return ""
        if self.p.checkpoint:
            return self.p.checkpoint
        from vidyn_ros.control.backends import default_checkpoint

        return default_checkpoint()

    def _load_backend(self) -> bool:
        """(Re)build the predictor; on failure keep running with an ERROR on /diagnostics (retried on file change)."""
        from vidyn_ros.control.backends import make_backend, needs_scene
        from vidyn_ros.dynamics.predict import LivePredictor, SceneBuiltBackend

        p = self.p
        path = ""
        try:
            path = self._checkpoint_path()
            self._ckpt_mtime = _mtime(path)
            if needs_scene(p.backend):
                model = SceneBuiltBackend(p.backend, p.device)
            else:
                model = make_backend(p.backend, None, device=p.device, checkpoint=path)
            self.predictor = LivePredictor(model, horizon=p.horizon, dt=p.dt, sub_steps=p.sub_steps,
                                           cmd_timeout_s=p.cmd_timeout_s, device=p.device)
            if self._pusher is not None:
                self.predictor.set_pusher(self._pusher)
            self.load_error = ""
            return True
        except VidynError as err:
            self.predictor = None
            self.load_error = f"no predictions: {err}"
            self.diag.error(f"dynamics: {self.load_error}", checkpoint=path)
            self.get_logger().error(f"dynamics: {self.load_error}")
            return False

    def _setup_renders(self, cameras: list[str]) -> None:
        """Render publishers and camera_info subscriptions for ``cameras`` (from the parameter, or from the rig once
        its calibration is readable: the sim rig writes it when it starts)."""
        msgs = self.msgs
        for cam in cameras:
            self.create_subscription(_ros.msg_class(msgs.CAMERA_INFO), msgs.info_topic(cam),
                                     lambda raw, cam=cam: self._on_info(cam, raw), _ros.sensor_qos(2), raw=True)
        self.pub_render = {c: self.create_publisher(_ros.msg_class(msgs.IMAGE), RENDER_TOPIC.format(cam=c),
                                                    _ros.sensor_qos(2)) for c in cameras}

    def _resolve_poses(self) -> None:
        """Camera poses from the rig (calibration or scenario); on the executor thread, so that an empty camera list
        can create its publishers here. Poses stay None while the rig is not readable yet (or lacks a camera)."""
        if self.poses is not None:
            return
        try:
            poses = _ros.rig_camera_poses(self.diag, "dynamics", self.p.cameras, self.p.calibration, self.p.scenario)
        except ConfigError as err:
            if not self._poses_warned:
                self.diag.warn(f"dynamics: no predicted frames: {err}")
                self.get_logger().warning(f"dynamics: no predicted frames: {err}")
                self._poses_warned = True
            return
        if poses is None:
            return
        if not self.pub_render:
            self._setup_renders(list(poses))
        self.poses = poses

    # ------------------------------------------------------------------------------------------------------- inputs
    def _on_scene(self, raw: bytes) -> None:
        msgs = self.msgs
        from vidyn_ros.scene.export import gaussians_from_fields

        self._last_scene_t = time.monotonic()
        try:
            msg = msgs.deserialize(raw, msgs.POINTCLOUD2)
            stamp_ns = msgs.stamp_to_ns(msg.header)
            g = gaussians_from_fields(msgs.pointcloud2_to_arrays(msg))
        except VidynError as err:
            self.diag.warn(f"bad scene message ignored: {err}")
            return
        self.worker.submit((stamp_ns, g))

    def _on_cmd(self, raw: bytes) -> None:
        msgs = self.msgs
        try:
            msg = msgs.deserialize(raw, msgs.TWIST_STAMPED)
            lin, _ang = msgs.twist_from_msg(msg)
        except VidynError as err:
            self.diag.warn(f"bad command ignored: {err}")
            return
        if not np.isfinite(lin).all():
            self.diag.warn("non-finite /vidyn/cmd ignored")
            return
        with self._lock:
            self._command = (msgs.stamp_to_ns(msg.header), lin)

    def _on_pose(self, raw: bytes) -> None:
        msgs = self.msgs
        try:
            pos, _q = msgs.pose_from_msg(msgs.deserialize(raw, msgs.POSE_STAMPED))
        except VidynError as err:
            self.diag.warn(f"bad pusher pose ignored: {err}")
            return
        if np.isfinite(pos).all():
            with self._lock:
                self._pusher = np.asarray(pos, dtype=np.float64)

    def _on_info(self, cam: str, raw: bytes) -> None:
        msgs = self.msgs
        try:
            self.infos[cam] = msgs.deserialize(raw, msgs.CAMERA_INFO)
        except VidynError as err:
            self.diag.warn(f"bad camera_info for {cam} ignored: {err}")

    def _on_timer(self) -> None:
        if self.p.publish_renders:
            self._resolve_poses()
        if self.predictor is None:
            path = ""
            try:
                path = self._checkpoint_path()
            except VidynError:
                pass
            if _mtime(path) != self._ckpt_mtime:  # the file appeared or changed: try again
                self._load_backend()
            else:
                self.diag.error(f"dynamics: {self.load_error}", checkpoint=path)
            return
        idle = time.monotonic() - self._last_scene_t
        if idle > self.p.stale_s:
            self.diag.warn(f"no scene on {GAUSSIANS_TOPIC} for over {self.p.stale_s:g} s", idle_s=f"{idle:.1f}",
                           predictions=self.predictions)

    def _on_error(self, err: BaseException) -> None:
        text = str(err) if isinstance(err, VidynError) else f"{type(err).__name__}: {err}"
        self.diag.error(f"dynamics: prediction failed: {text}")

    # ------------------------------------------------------------------------------------------------------- work
    def _process(self, item: tuple[int, Any]) -> None:
        try:
            self._predict(*item)
        finally:
            self.scenes += 1

    def _predict(self, stamp_ns: int, g: Any) -> None:
        pred_obj = self.predictor
        if pred_obj is None:
            return
        with self._lock:
            if self._command is not None:
                pred_obj.set_command(*self._command)
            if self._pusher is not None:
                pred_obj.set_pusher(self._pusher)
        p = self.p
        due = p.rate_hz <= 0 or self._last_predict_stamp is None \
            or (stamp_ns - self._last_predict_stamp) * 1e-9 >= 1.0 / p.rate_hz - 1e-6
        result = pred_obj.update(stamp_ns, g, predict=due)  # the history follows every scene, also between
        if not due:
            self.skipped += 1
            return
        if isinstance(result, str):
            if "non-finite" in result or "not finite" in result:
                self.diag.warn(f"dynamics: {result}", predictions=self.predictions)
            else:
                self.diag.ok(result, predictions=self.predictions)
            return
        self._publish(result)

    def _publish(self, pred: Any) -> None:
        msgs = self.msgs
        from vidyn_ros.dynamics.predict import path_markers
        from vidyn_ros.scene.export import gaussian_fields

        self._last_predict_stamp = pred.stamp_ns
        self.predictions += 1
        self.last_prediction = pred
        self.rate.tick()
        t_end = pred.stamps_ns[-1]
        final = pred.final()
        _ros.publish_cdr(self.pub_paths, msgs.marker_array_msg(path_markers(pred), pred.stamp_ns, "world"),
                         msgs.MARKER_ARRAY)
        rendered = 0
        render_s = 0.0
        if self.p.publish_renders and (self.predictions - 1) % self.p.render_every == 0:
            t0 = time.perf_counter()
            rendered = self._render(final, t_end)
            render_s = time.perf_counter() - t0
        _ros.publish_cdr(self.pub_cloud, msgs.pointcloud2_msg(gaussian_fields(final), t_end, "world"),
                         msgs.POINTCLOUD2)
        self.diag.ok(
            "predicting", rate_hz=f"{self.rate.rate():.2f}", rollout_s=f"{pred.seconds:.3f}",
            step_ms=f"{1000 * pred.seconds / max(pred.horizon, 1):.1f}", render_s=f"{render_s:.3f}",
            particles=len(final), horizon=pred.horizon, dt_s=f"{pred.dt:.4f}", backend=self.p.backend,
            pusher_id=-1 if pred.pusher_id is None else pred.pusher_id, renders=rendered,
            command=" ".join(f"{v:.3f}" for v in pred.control), predictions=self.predictions,
        )  # fmt: skip

    def _cameras(self) -> list[Any]:
        """Render cameras whose pose and camera_info are known, scaled to ``render_width``."""
        msgs = self.msgs
        poses = self.poses  # set on the executor thread (_resolve_poses); none yet: nothing to render
        if poses is None:
            return []
        cams = []
        for name in self.pub_render:
            info = self.infos.get(name)
            if info is None:
                continue
            try:
                cam = msgs.camera_from_info(info, name, poses[name])
            except VidynError as err:
                self.diag.warn(f"dynamics: camera {name}: {err}")
                continue
            cams.append(cam.scaled(self.p.render_width / cam.width) if cam.width != self.p.render_width else cam)
        return cams

    def _render(self, g: Any, stamp_ns: int) -> int:
        import torch

        from vidyn_ros.render import render

        cams = self._cameras()
        if not cams:
            return 0
        sizes = {(c.width, c.height) for c in cams}
        if len(sizes) > 1:  # the renderer stacks views of one size: keep the first size
            cams = [c for c in cams if (c.width, c.height) == (cams[0].width, cams[0].height)]
        with torch.no_grad():
            out = render(g, cams, background=self.background)
        rgb = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        for cam, img in zip(cams, rgb, strict=True):
            _ros.publish_cdr(self.pub_render[cam.name],
                             self.msgs.image_msg(img, stamp_ns, self.msgs.camera_frame_id(cam.name), "rgb8"),
                             self.msgs.IMAGE)
        return len(cams)

    def close(self) -> None:
        self.worker.stop(timeout=30.0)


def _mtime(path: str) -> float | None:
    try:
        return Path(path).stat().st_mtime if path else None
    except OSError:
        return None


def create_node(**node_kwargs: Any) -> DynamicsNode:
    return DynamicsNode(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
