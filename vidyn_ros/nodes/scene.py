"""scene node: multi-view RGB-D (+ instance masks) -> live Gaussian scene (vidyn_ros.scene.SceneEstimator).

Wiring:
  in   /<cam>/color/image_raw, /<cam>/aligned_depth_to_color/image_raw, /<cam>/color/camera_info, /<cam>/mask
       (synchronised into MultiViewFrames by vidyn_ros.rig.sync.TopicSynchronizer; camera poses from the rig
       calibration YAML, or from a simulated-rig scenario)
  out  /vidyn/scene/gaussians (PointCloud2: x y z rgb opacity scale_x/y/z rot_w/x/y/z object_id particle_id, frame
       world; particle_id is stable across messages)
       /vidyn/scene/objects (MarkerArray: per-object centroid, oriented box, id text)
       /vidyn/scene/render/<cam> (rgb8: the scene rendered from that camera)
       /diagnostics (update rate, loss, #Gaussians, ICP fitness)
Callbacks only feed the synchroniser; the estimator runs on a worker thread with a drop-oldest queue of 1, so a slow
update skips frames instead of lagging behind (or, with sim_rig's ``lockstep_topic`` on /vidyn/scene/gaussians,
the rig waits for each update: the cloud is published last, once per update). ``save_ply`` writes the final scene
as a 3DGS PLY on shutdown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from vidyn_ros.errors import ConfigError
from vidyn_ros.nodes import _ros

NODE_NAME = "scene"
GAUSSIANS_TOPIC = "/vidyn/scene/gaussians"
OBJECTS_TOPIC = "/vidyn/scene/objects"
RENDER_TOPIC = "/vidyn/scene/render/{cam}"

PARAMS = [
    _ros.Param("cameras", [], "camera topic prefixes (cam0, or camera/camera for realsense-ros); empty = every camera "
               "of the rig (calibration, else scenario)", kind="string"),
    _ros.Param("calibration", "", "rig calibration YAML with each camera's pose (camera-to-world)"),
    _ros.Param("scenario", "", "simulated-rig scenario to take camera poses from when no calibration is given"),
    _ros.Param("use_masks", True, "wait for /<cam>/mask and use the instance masks (object ids)"),
    _ros.Param("slop_ms", 15.0, "largest stamp spread inside one synchronised set [ms]", range="[0, 1000]"),
    _ros.Param("depth_slop_ms", 35.0, "largest colour-depth stamp difference of one camera [ms] (realsense-ros with "
               "enable_sync off: up to a frame; identical stamps always pair first)", range="[0, 1000]"),
    _ros.Param("device", "cpu", "torch device for the scene: cpu, cuda, cuda:1 ..."),
    _ros.Param("backend", "auto", "renderer backend: auto (gsplat on CUDA), torch, gsplat",
               choices=("auto", "torch", "gsplat")),
    _ros.Param("budget", 5000, "number of Gaussians at initialisation", range="[1, 10000000]"),
    _ros.Param("object_share", 0.5, "fraction of the Gaussian budget given to objects", range="[0, 1]"),
    _ros.Param("image_downscale", 1, "integer downscale of the images for the rendering losses", range="[1, 64]"),
    _ros.Param("init_iters", 60, "optimisation iterations at initialisation", range="[0, 100000]"),
    _ros.Param("iters_per_frame", 0, "per-Gaussian refinement iterations per tracked frame", range="[0, 10000]"),
    _ros.Param("max_gaussians", 0, "cap on the number of Gaussians (pruning keeps it; 0 = 1.5 x budget)",
               range="[0, 10000000]"),
    _ros.Param("remove_after_s", 5.0, "an object not seen for this long [s, sensor time] is removed with its "
               "Gaussians (0 = never)", range="[0, 1000000]"),
    _ros.Param("prune_unseen_s", 10.0, "Gaussians not seen for this long [s] while their object is seen are pruned",
               range="[0, 1000000]"),
    _ros.Param("publish_renders", True, "publish /vidyn/scene/render/<cam>"),
    _ros.Param("render_every", 1, "publish renders every n-th update (rendering costs time on CPU)",
               range="[1, 100000]", dynamic=True),
    _ros.Param("stale_s", 2.0, "warn on /diagnostics when no synchronised frame arrived for this long",
               range="(0, 3600]", dynamic=True),
    _ros.Param("save_ply", "", "write the scene as a 3DGS PLY (with object_id) to this path on shutdown"),
    _ros.Param("threads", 1, "CPU threads for torch in this process (render + optimisation); 0 = torch's default "
               "(all cores: faster alone, but OpenMP spin-waiting is 2-10x slower when other nodes share the cores)",
               range="[0, 1024]"),
    _ros.Param("seed", 0, "random seed", range="[0, 4294967295]"),
]


class SceneNode(_ros.Node):
    """Runs a SceneEstimator on synchronised frames; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        p = self.p
        if not p.calibration and not p.scenario:
            raise ConfigError("scene: set parameter 'calibration' (rig calibration YAML) or 'scenario' (camera poses)")
        from vidyn_ros import msgs
        from vidyn_ros.render import set_cpu_threads
        from vidyn_ros.scene.pipeline import SceneEstimator, scene_config_from_params

        set_cpu_threads(p.threads)  # process-wide: the node runs in its own process in the graphs
        self.msgs = msgs
        # no per-frame trajectories in a node that runs for hours (vidyn track keeps them)
        self.estimator = SceneEstimator(replace(scene_config_from_params(vars(p)), keep_trajectories=False))
        self.pub_cloud = self.create_publisher(_ros.msg_class(msgs.POINTCLOUD2), _ros.node_topic(GAUSSIANS_TOPIC),
                                               _ros.reliable_qos(2))
        self.pub_objects = self.create_publisher(_ros.msg_class(msgs.MARKER_ARRAY), _ros.node_topic(OBJECTS_TOPIC),
                                                 _ros.reliable_qos(2))
        self.pub_render: dict[str, Any] = {}  # per camera, once the camera set is known (_try_setup)
        self.cameras: list[str] = list(p.cameras)
        self.diag = _ros.DiagnosticsPublisher(self)
        self.rate = _ros.RateMeter()
        self.updates = 0
        self.last_update: Any = None
        self._started_t = time.monotonic()
        self.worker = _ros.Worker(self._process, maxsize=1, name="scene-worker", on_error=self._on_error)
        self.sync: Any = None
        self.inputs: _ros.SyncedInput | None = None
        self._try_setup()  # the simulated rig writes its calibration file when it starts: maybe not yet
        self._timer = self.create_timer(1.0, self._check_stale)
        self.get_logger().info(f"scene: {len(self.cameras) or 'all'} cameras, budget {p.budget}, device {p.device}")

    # ------------------------------------------------------------------------------------------------------- input
    def _try_setup(self) -> bool:
        """Load the camera poses and subscribe; False (retried every second) while the calibration file is missing."""
        if self.sync is not None:
            return True
        p = self.p
        poses = _ros.rig_camera_poses(self.diag, "scene", p.cameras, p.calibration, p.scenario)
        if poses is None:
            return False
        from vidyn_ros.rig.sync import TopicSynchronizer

        self.cameras = list(poses)  # the rig's cameras unless the parameter named some
        if p.publish_renders:
            self.pub_render = {c: self.create_publisher(_ros.msg_class(self.msgs.IMAGE),
                                                        _ros.node_topic(RENDER_TOPIC.format(cam=c)),
                                                        _ros.sensor_qos(2)) for c in self.cameras}
        self.sync = TopicSynchronizer(self.cameras, with_mask=p.use_masks, slop_ns=int(p.slop_ms * 1e6),
                                      depth_slop_ns=int(p.depth_slop_ms * 1e6), poses=poses)
        self.inputs = _ros.SyncedInput(self, self.sync, self.worker.submit, self.diag, since=self._started_t)
        n_topics = len(self.inputs.subscriptions)
        self.get_logger().info(f"scene: subscribed to {n_topics} topics of cameras {', '.join(self.cameras)}")
        return True

    def _check_stale(self) -> None:
        try:
            if not self._try_setup():
                return
        except Exception as err:  # e.g. a malformed calibration file written late: report, keep retrying
            self.diag.error(f"scene: {err}")
            return
        assert self.inputs is not None
        idle = time.monotonic() - self.inputs.last_frame_t
        if idle > self.p.stale_s:
            # which inputs are missing (a camera unplugged, a segmenter not running) is what the operator needs
            silent = self.inputs.silent_topics(self.p.stale_s)
            why = f"; silent: {', '.join(silent)}" if silent else " (inputs arrive but do not synchronise)"
            # the idle time is a value, not part of the message: the log line repeats only when the cause changes
            self.diag.warn(f"no synchronised frame for over {self.p.stale_s:g} s{why}", idle_s=f"{idle:.1f}",
                           updates=self.updates, **self.sync.sync.stats.as_dict())

    def _on_error(self, err: BaseException) -> None:
        self.diag.error(f"scene update failed: {type(err).__name__}: {err}")

    # ------------------------------------------------------------------------------------------------------- work
    def _process(self, frame: Any) -> None:
        msgs = self.msgs
        from vidyn_ros.scene.export import gaussian_fields, object_markers

        if self.updates == 0:  # seconds on a CPU: say what the node is doing
            self.get_logger().info(f"initialising the scene on the first frame ({self.p.init_iters} iterations)")
        up = self.estimator.update(frame)
        self.updates += 1
        self.last_update = up
        self.rate.tick()
        stamp = up.stamp_ns
        markers = object_markers(up.gaussians, up.objects, up.visible)
        _ros.publish_cdr(self.pub_objects, msgs.marker_array_msg(markers, stamp, "world"), msgs.MARKER_ARRAY)
        # Rendering every view is the node's largest cost on a CPU (docs/scene.md, "Where the time goes"): only
        # when someone subscribes (RViz, a recorder), every render_every-th update.
        watched = [c for c, pub in self.pub_render.items() if pub.get_subscription_count() > 0]
        if watched and (self.updates - 1) % max(self.p.render_every, 1) == 0:
            ds = max(int(self.p.image_downscale), 1)  # render at the working resolution: full size costs ds^2 more
            cams = [c.scaled(1.0 / ds) if ds > 1 else c for c in frame.cameras if c.name in watched]
            rgb, _ = self.estimator.render(cams)
            for cam, img in zip(cams, rgb, strict=True):
                _ros.publish_cdr(self.pub_render[cam.name],
                                 msgs.image_msg(img, stamp, msgs.camera_frame_id(cam.name), "rgb8"), msgs.IMAGE)
        # The cloud goes last: it marks the update as complete, so a source in lockstep with it (sim_rig
        # lockstep_topic) publishes the next frame only once every output of this one is out.
        _ros.publish_cdr(self.pub_cloud, msgs.pointcloud2_msg(gaussian_fields(up.gaussians), stamp, "world"),
                         msgs.POINTCLOUD2)
        self.diag.ok(
            "initialised" if up.initialised else "tracking",
            rate_hz=f"{self.rate.rate():.2f}", update_s=f"{up.seconds:.3f}", loss=f"{up.loss:.4f}",
            gaussians=len(up.gaussians), objects=len(up.objects),
            visible_objects=sum(up.visible.values()), icp_fitness=f"{up.stats.get('icp_fitness', float('nan')):.3f}",
        )  # fmt: skip

    def close(self) -> None:
        # let an update in progress finish (an initialisation takes seconds on CPU) before saving its result
        self.worker.stop(timeout=30.0)
        if self.p.save_ply and self.estimator.gaussians is not None:
            from vidyn_ros.scene.ply import save_ply

            path = save_ply(self.estimator.gaussians, self.p.save_ply)
            self.get_logger().info(f"saved scene to {path}")


def create_node(**node_kwargs: Any) -> SceneNode:
    return SceneNode(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
