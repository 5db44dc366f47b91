"""segmenter node: synchronised multi-view RGB-D -> consistent instance masks on /<cam>/mask (no learned weights).

Wiring:
  in   /<cam>/color/image_raw, /<cam>/aligned_depth_to_color/image_raw, /<cam>/color/camera_info
       (+ /<cam>/<external_masks> when an external mask source, e.g. a SAM node, replaces the clustering)
       synchronised by vidyn_ros.rig.sync.TopicSynchronizer; camera poses from the rig calibration YAML
  out  /<cam>/<output> (16UC1 instance ids, 0 = background; same stamp and frame_id as the color image)
       /diagnostics (per-frame time, objects, synchroniser counters)
All the work is vidyn_ros.rig.segmentation.InstanceSegmenter, on a worker thread (drop-oldest queue of 1: a slow
frame skips frames instead of lagging; ``queue`` > 1 processes every frame). With ``external_masks`` set, per-view
masks with arbitrary ids are lifted to 3D, merged across views and tracked, so the output ids agree across views and
over time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from vidyn_ros.errors import ConfigError
from vidyn_ros.nodes import _ros

NODE_NAME = "segmenter"

PARAMS = [
    _ros.Param("cameras", [], "camera topic prefixes (cam0, or camera/camera for realsense-ros); empty = every camera "
               "of the rig (calibration, else scenario)", kind="string"),
    _ros.Param("calibration", "", "rig calibration YAML with each camera's pose (camera-to-world)"),
    _ros.Param("scenario", "", "simulated-rig scenario to take camera poses from when no calibration is given"),
    _ros.Param("output", "mask", "output topic suffix: /<cam>/<output>"),
    _ros.Param("external_masks", "", "topic suffix of an external mask source (e.g. 'sam/mask'); '' = own clustering"),
    _ros.Param("slop_ms", 15.0, "largest stamp spread inside one synchronised set [ms]", range="[0, 1000]"),
    _ros.Param("depth_slop_ms", 35.0, "largest colour-depth stamp difference of one camera [ms] (realsense-ros with "
               "enable_sync off: up to a frame; identical stamps always pair first)", range="[0, 1000]"),
    _ros.Param("stride", 1, "use every n-th pixel (2 at 640x480: ~4x faster, masks upsampled)", range="[1, 16]"),
    _ros.Param("min_height", 0.003, "points this far above the table plane are object candidates [m]", range="[0, 1]"),
    _ros.Param("voxel", 0.01, "voxel size for Euclidean clustering [m]", range="(0, 1]"),
    _ros.Param("min_points", 20, "smallest object (fused points over all views)", range="[1, 100000000]"),
    _ros.Param("workspace", [-0.5, -0.5, 0.5, 0.5], "x_min, y_min, x_max, y_max of the table area [m]",
               range="[-100, 100]", length=4),
    _ros.Param("match_distance", 0.1, "largest distance of an object from its predicted position between frames [m]",
               range="(0, 10]"),
    _ros.Param("queue", 1, "frames waiting for segmentation: 1 = the newest only (lowest latency); more = every frame",
               range="[1, 1000]"),
    _ros.Param("stale_s", 2.0, "warn on /diagnostics when no synchronised frame arrived for this long",
               range="(0, 3600]", dynamic=True),
]


class SegmenterNode(_ros.Node):
    """Publishes instance masks for every camera; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = p = _ros.declare_params(self, PARAMS)
        if not p.calibration and not p.scenario:
            raise ConfigError("segmenter: set parameter 'calibration' (rig calibration YAML) or 'scenario'")
        if p.external_masks.strip("/") == p.output.strip("/"):
            raise ConfigError("segmenter: external_masks and output must be different topics")
        from vidyn_ros import msgs
        from vidyn_ros.rig.segmentation import InstanceSegmenter, SegmenterConfig

        self.msgs = msgs
        self.segmenter = InstanceSegmenter(SegmenterConfig(
            stride=max(1, p.stride), min_height=p.min_height, voxel=p.voxel, min_points=p.min_points,
            workspace=tuple(p.workspace), match_distance=p.match_distance))
        self.pubs: dict[str, Any] = {}  # per camera, once the camera set is known (_try_setup)
        self.diag = _ros.DiagnosticsPublisher(self)
        self.rate = _ros.RateMeter()
        self.frames = 0
        self.last_ms = 0.0
        self._started_t = time.monotonic()
        self.worker = _ros.Worker(self._process, maxsize=max(1, p.queue), name="segmenter-worker",
                                  on_error=self._on_error)
        # Import the heavy libraries now, not on the first frame (open3d takes ~1 s to import on a small CPU).
        import open3d  # noqa: F401
        import scipy.optimize
        import scipy.spatial  # noqa: F401
        self.sync: Any = None
        self.inputs: _ros.SyncedInput | None = None
        self.publishers_pending = True  # the mask publishers come with the camera set (_ros.check_qos_overrides)
        self._try_setup()  # the calibration file may be written by another node after start: retried every second
        self._timer = self.create_timer(1.0, self._check)

    def _try_setup(self) -> bool:
        """Load the camera poses and subscribe; False (retried every second) while the calibration file is missing."""
        if self.sync is not None:
            return True
        p = self.p
        poses = _ros.rig_camera_poses(self.diag, "segmenter", p.cameras, p.calibration, p.scenario)
        if poses is None:
            return False
        from vidyn_ros.rig.sync import TopicSynchronizer

        cameras = list(poses)  # the rig's cameras unless the parameter named some
        image_cls = _ros.msg_class(self.msgs.IMAGE)
        self.pubs = {c: self.create_publisher(image_cls, _ros.node_topic(f"/{c.strip('/')}/{p.output.strip('/')}"),
                                              _ros.sensor_qos()) for c in cameras}
        external = bool(p.external_masks.strip("/"))
        self.sync = TopicSynchronizer(cameras, with_mask=external, mask_suffix=p.external_masks or "mask",
                                      slop_ns=int(p.slop_ms * 1e6), depth_slop_ns=int(p.depth_slop_ms * 1e6),
                                      poses=poses)
        self.inputs = _ros.SyncedInput(self, self.sync, self.worker.submit, self.diag, since=self._started_t)
        self.get_logger().info(f"segmenter: cameras {', '.join(cameras)}, "
                               f"{'external masks /<cam>/' + p.external_masks if external else 'own clustering'}")
        self.publishers_pending = False
        # A QoS override for a topic it does not publish: a one-line error while the node is built, or (calibration
        # written later) an error on /diagnostics from _check, the node running on without that override.
        _ros.check_qos_overrides(self)
        return True

    def _process(self, frame: Any) -> None:
        msgs = self.msgs
        external = [v.mask for v in frame.views] if self.sync.with_mask else None
        result = self.segmenter.segment(frame, external=external)
        for view, mask in zip(frame.views, result.masks, strict=True):
            name = view.camera.name
            _ros.publish_cdr(self.pubs[name], msgs.mask_msg(mask, view.stamp_ns, msgs.camera_frame_id(name)),
                             msgs.IMAGE)
        self.frames += 1
        self.last_ms = result.timings_ms["total"]
        self.rate.tick()
        self.diag.ok("segmenting", rate_hz=f"{self.rate.rate():.2f}", frame_ms=f"{self.last_ms:.1f}",
                     objects=len(result.objects), **self.sync.sync.stats.as_dict())

    def _check(self) -> None:
        try:
            if not self._try_setup():
                return
        except Exception as err:  # e.g. a malformed calibration written late: report, keep retrying
            self.diag.error(str(err))  # names the node already
            return
        assert self.inputs is not None
        idle = time.monotonic() - self.inputs.last_frame_t
        if idle > self.p.stale_s:
            self.diag.warn(f"no synchronised frame for {idle:.1f} s", frames=self.frames,
                           **self.sync.sync.stats.as_dict())

    def _on_error(self, err: BaseException) -> None:
        self.diag.error(f"segmentation failed: {type(err).__name__}: {err}")

    def close(self) -> None:
        self.worker.stop()


def create_node(**node_kwargs: Any) -> SegmenterNode:
    return SegmenterNode(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
