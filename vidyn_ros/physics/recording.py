"""A recorded bag -> what system identification needs, through the deployed perception path (ROS-free).

Per frame of the bag: the weight-free segmenter's masks (the bag's own /<cam>/mask when the segmenter node was
recording, else :class:`~vidyn_ros.scene.deployed.DeployedSegmenter` offline; never the simulator's true masks),
the Gaussian scene initialised on the first frame and tracked through the rest (``SceneEstimator`` with the shipped
graph's settings). Known actuation: applied wrenches (``/vidyn/sim/applied_wrench``) and the pusher's own pose
(``/vidyn/pusher/pose``, proprioception). Simulator truth (``/vidyn/sim/object_poses``) is read only for the
evaluation rows of the benchmark, never by ``vidyn sysid``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidyn_ros import msgs
from vidyn_ros.errors import BagError
from vidyn_ros.physics.sysid import Observation
from vidyn_ros.types import CameraModel, GaussianSet, MultiViewFrame, ObjectPose

__all__ = ["BagRecording", "downscale_image", "read_bag"]

log = logging.getLogger(__name__)


@dataclass
class BagRecording:
    """A bag read for system identification.

    Attributes:
        observation: images, wrenches, pusher path and tracked object centres at the working resolution.
        gaussians: the objects' Gaussians at the first frame (segmenter ids) and the table's at the last (densified
            where objects moved away).
        pusher_id: the scene object at the pusher's known position, or None.
        frame_stamps: [T] stamps [ns] of the frames used.
        truth: true object poses per frame (evaluation only; empty unless ``with_truth``).
        scene_seconds: wall time of segmentation + scene initialisation + tracking.
    """

    observation: Observation
    gaussians: GaussianSet
    pusher_id: int | None
    frame_stamps: np.ndarray
    truth: list[list[ObjectPose]] = field(default_factory=list)
    scene_seconds: float = 0.0


def downscale_image(a: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean downscale of an HxW(xC) image by an integer factor (crops to a multiple)."""
    if factor <= 1:
        return a
    h, w = (a.shape[0] // factor) * factor, (a.shape[1] // factor) * factor
    a = a[:h, :w].astype(np.float32)
    return a.reshape(h // factor, factor, w // factor, factor, *a.shape[2:]).mean(axis=(1, 3))


def _frames(reader, frames: int, cameras: list[str] | None) -> Iterator[MultiViewFrame]:
    for k, f in enumerate(reader.multiview_frames(cameras=cameras)):
        if frames and k >= frames:
            break
        yield f


def read_bag(bag: str | Path, frames: int = 0, width: int = 160, cameras: list[str] | None = None,
             with_truth: bool = False, progress: bool = False) -> BagRecording:
    """Segment, build and track the scene of a bag; collect actuation; images at ``width`` px (integer downscale).

    Raises BagError for bags without cameras, calibration or complete frames."""
    import time

    from vidyn_ros.bags import BagReader
    from vidyn_ros.dynamics.state import pusher_object_id
    from vidyn_ros.scene.deployed import DeployedSegmenter, scene_config, segmenter_config
    from vidyn_ros.scene.pipeline import SceneEstimator

    t0 = time.perf_counter()
    with BagReader(bag) as reader:
        if reader.calibration() is None:
            raise BagError(f"{bag}: no rig_calibration.yaml in the bag directory (camera poses are needed)")
        names = cameras or reader.camera_names()
        if not names:
            raise BagError(f"{bag}: no camera topics (/<cam>/color/image_raw) in this bag")
        has_masks = all(msgs.mask_topic(c) in reader.topics for c in names)
        wrenches = [msgs.applied_wrench_from_msg(m) for _t, _mt, _s, m in reader.decoded([msgs.APPLIED_WRENCH_TOPIC])] \
            if msgs.APPLIED_WRENCH_TOPIC in reader.topics else []
        pusher_poses: dict[int, np.ndarray] = {}
        if msgs.PUSHER_POSE_TOPIC in reader.topics:
            for _t, _mt, _s, m in reader.decoded([msgs.PUSHER_POSE_TOPIC]):
                pusher_poses[msgs.stamp_to_ns(m.header)] = msgs.pose_from_msg(m)[0]
        truth_by_stamp: dict[int, list[ObjectPose]] = {}
        if with_truth and msgs.OBJECT_POSES_TOPIC in reader.topics:
            truth_by_stamp = dict(reader.object_poses())
        total = reader.topics[msgs.color_topic(names[0])].count
        est = None
        segment = None
        images, depths, stamps, cams, tracked = [], [], [], None, []
        first_gaussians = None
        it = _frames(reader, frames, cameras)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=frames or total, desc="scene", unit="frame")
        for frame in it:
            w0 = frame.views[0].camera.width
            if est is None:
                est = SceneEstimator(scene_config(w0))
                segment = None if has_masks else DeployedSegmenter(segmenter_config(w0), width=w0)
            if segment is not None:
                frame = segment(frame)
            up = est.update(frame)
            if up.initialised:
                first_gaussians = up.gaussians.clone()
            tracked.append({p.object_id: (p.position, p.quat_wxyz) for p in up.objects})
            factor = max(1, round(w0 / width))
            if cams is None:
                cams = [v.camera.scaled(1.0 / factor) for v in frame.views]
                cams = [_fit_size(c, v.color.shape[1] // factor, v.color.shape[0] // factor)
                        for c, v in zip(cams, frame.views, strict=True)]
            images.append(np.stack([downscale_image(v.color, factor) / 255.0 for v in frame.views]))
            depths.append(np.stack([_downscale_depth(v.depth, factor) for v in frame.views]))
            stamps.append(frame.stamp_ns)
    if est is None or first_gaussians is None:
        raise BagError(f"{bag}: no complete multi-view frame (color + depth + camera_info of every camera)")
    # the objects as first seen, on the table as last seen: the tracker has since filled in (densified) the table
    # where objects stood, which the first frame could not see (else a moved block leaves a hole in the render)
    last = est.gaussians.detach()
    first_objects = first_gaussians.subset(first_gaussians.object_ids > 0)
    last_table = last.subset(last.object_ids == 0)
    keep = ~torch.isin(last_table.particle_ids, first_objects.particle_ids)
    first_gaussians = _concat(first_objects, last_table.subset(keep))
    stamps_a = np.asarray(stamps, dtype=np.int64)
    ids = sorted({k for t in tracked for k in t})
    nan_pose = (np.full(3, np.nan), np.full(4, np.nan))
    paths = {k: np.array([t.get(k, nan_pose)[0] for t in tracked], dtype=np.float64) for k in ids}
    rots = {k: np.array([t.get(k, nan_pose)[1] for t in tracked], dtype=np.float64) for k in ids}
    pusher_path = None
    pusher_id = None
    if pusher_poses:
        ps = np.array(sorted(pusher_poses))
        pp = np.stack([pusher_poses[s] for s in ps])
        idx = np.clip(np.searchsorted(ps, stamps_a, side="right") - 1, 0, len(ps) - 1)
        pusher_path = pp[idx]
        pusher_id = pusher_object_id(first_gaussians.object_ids, first_gaussians.means.detach(), pusher_path[0])
    obs = Observation(cameras=cams, stamps_ns=stamps_a, images=torch.tensor(np.stack(images), dtype=torch.float32),
                      depth=torch.tensor(np.stack(depths), dtype=torch.float32), wrenches=wrenches,
                      pusher_position=pusher_path, tracked=paths,
                      background=tuple(float(c) for c in est.background), tracked_quat=rots)
    truth = [truth_by_stamp.get(int(s), []) for s in stamps_a] if truth_by_stamp else []
    return BagRecording(obs, first_gaussians, pusher_id, stamps_a, truth, time.perf_counter() - t0)


def _concat(a: GaussianSet, b: GaussianSet) -> GaussianSet:
    return GaussianSet(**{k: torch.cat([getattr(a, k), getattr(b, k)]) for k in
                          ("means", "quats", "log_scales", "colors", "opacity_logits", "object_ids", "particle_ids")})


def _fit_size(cam: CameraModel, width: int, height: int) -> CameraModel:
    from dataclasses import replace

    return replace(cam, width=width, height=height)


def _downscale_depth(d: np.ndarray, factor: int) -> np.ndarray:
    """Depth block-mean over valid pixels (0 where none)."""
    if factor <= 1:
        return d.astype(np.float32)
    valid = (d > 0).astype(np.float32)
    s = downscale_image(d * valid, factor) * factor * factor
    n = downscale_image(valid, factor) * factor * factor
    return np.where(n > 0, s / np.maximum(n, 1), 0.0).astype(np.float32)
