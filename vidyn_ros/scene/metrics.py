"""Scene quality metrics against the simulated rig's ground truth (evaluation only; perception never sees it).

- **Centroid tracking error** [m]: each object's estimate is the centroid of its Gaussians. The reference is the
  estimate at the object's first frame carried along by the ground-truth rigid motion since then,
  T_gt(t) T_gt(t0)^-1 c(t0). This measures tracking, not the (constant) offset between a surface-sample centroid and
  the body's centre of mass, which is reported separately as ``centroid_offset_m``.
- **PSNR** [dB] of rendered vs observed colour over the observed views.
- **Id accuracy**: fraction of Gaussians whose id equals the ground-truth mask id under their projection in the views
  that see them unoccluded (projected depth within ``depth_tol`` of the observed depth), majority over those views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vidyn_ros.geometry import make_se3, quat_wxyz_to_matrix
from vidyn_ros.types import GaussianSet, MultiViewFrame, ObjectPose


def pose_matrix(p: ObjectPose) -> np.ndarray:
    return make_se3(quat_wxyz_to_matrix(p.quat_wxyz), np.asarray(p.position, dtype=np.float64))


@dataclass
class CentroidTracker:
    """Accumulates per-object centroid tracking errors over an episode (see module docstring).

    The scene's object ids are perception's (the segmenter numbers objects its own way), so each estimated id is
    associated once, when first seen, with the true object whose body is nearest (within ``match_distance``) and
    not already claimed; errors are keyed by the true id. An estimated id with no free true object nearby is a
    ghost (a second copy of an object, or a spurious segment): counted in ``ghosts``, not scored.
    ``associate=False`` takes estimated ids as true ids (oracle masks).
    """

    ref: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # true id -> (c(t0), T_gt(t0))
    errors: dict[int, list[float]] = field(default_factory=dict)
    offsets: dict[int, float] = field(default_factory=dict)
    associate: bool = True
    match_distance: float = 0.05  # [m] from a surface-sample centroid to the body centre (objects are ~5-10 cm)
    id_map: dict[int, int] = field(default_factory=dict)  # estimated id -> true id
    ghosts: set[int] = field(default_factory=set)  # estimated ids that match no free true object

    def _true_id(self, e: ObjectPose, gt: dict[int, np.ndarray]) -> int | None:
        k = e.object_id
        if not self.associate:
            return k if k in gt else None
        if k in self.id_map:
            return self.id_map[k]
        if k in self.ghosts:
            return None
        claimed = set(self.id_map.values())
        c = np.asarray(e.position, dtype=np.float64)
        free = [(float(np.linalg.norm(c - T[:3, 3])), j) for j, T in gt.items() if j not in claimed]
        d, j = min(free, default=(np.inf, None))
        if j is None or d > self.match_distance:
            self.ghosts.add(k)
            return None
        self.id_map[k] = j
        return j

    def add(self, estimated: Sequence[ObjectPose], ground_truth: Sequence[ObjectPose]) -> dict[int, float]:
        """Add one frame; returns this frame's error per true object id [m]."""
        gt = {p.object_id: pose_matrix(p) for p in ground_truth}
        out = {}
        for e in sorted(estimated, key=lambda p: p.object_id):
            k = self._true_id(e, gt)
            if k is None or k not in gt:
                continue
            c = np.asarray(e.position, dtype=np.float64)
            if k not in self.ref:
                self.ref[k] = (c, gt[k])
                self.offsets[k] = float(np.linalg.norm(c - gt[k][:3, 3]))
            c0, T0 = self.ref[k]
            M = gt[k] @ np.linalg.inv(T0)
            err = float(np.linalg.norm(c - (M[:3, :3] @ c0 + M[:3, 3])))
            self.errors.setdefault(k, []).append(err)
            out[k] = err
        return out

    def mean_per_object(self) -> dict[int, float]:
        return {k: float(np.mean(v)) for k, v in sorted(self.errors.items())}

    def mean(self) -> float:
        """Mean over objects of each object's episode mean [m]."""
        per = self.mean_per_object()
        return float(np.mean(list(per.values()))) if per else float("nan")

    def max(self) -> float:
        return float(max((max(v) for v in self.errors.values()), default=float("nan")))


def ground_truth_ids(
    gaussians: GaussianSet, frame: MultiViewFrame, depth_tol: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth id per Gaussian from the masks (see module docstring).

    Returns:
        (ids [N] int64, has_label [N] bool — False for Gaussians no view sees unoccluded).
    """
    means = gaussians.means.detach().cpu().numpy().astype(np.float64)
    n = len(means)
    max_id = max(int(v.mask.max()) for v in frame.views if v.mask is not None) if frame.views else 0
    votes = np.zeros((n, max_id + 1), dtype=np.int64)
    for v in frame.views:
        if v.mask is None:
            continue
        cam = v.camera
        Tcw = cam.T_cam_world
        pc = means @ Tcw[:3, :3].T + Tcw[:3, 3]
        z = pc[:, 2]
        front = z > 1e-3
        u = np.full(n, -1)
        w = np.full(n, -1)
        u[front] = np.round(cam.fx * pc[front, 0] / z[front] + cam.cx).astype(int)
        w[front] = np.round(cam.fy * pc[front, 1] / z[front] + cam.cy).astype(int)
        inside = front & (u >= 0) & (u < cam.width) & (w >= 0) & (w < cam.height)
        ii = np.flatnonzero(inside)
        d = v.depth[w[ii], u[ii]]
        ok = (d > 0) & (np.abs(d - z[ii]) < depth_tol)
        ii = ii[ok]
        votes[ii, v.mask[w[ii], u[ii]].astype(np.int64)] += 1
    has = votes.sum(axis=1) > 0
    return votes.argmax(axis=1), has


def id_accuracy(gaussians: GaussianSet, frame: MultiViewFrame, depth_tol: float = 0.02) -> dict[str, float]:
    """Id accuracy over Gaussians with a ground-truth label: overall and over object (gt id > 0) Gaussians only."""
    gt, has = ground_truth_ids(gaussians, frame, depth_tol)
    est = gaussians.object_ids.cpu().numpy()
    ok = (gt == est) & has
    obj = has & (gt > 0)
    return {
        "id_accuracy": float(ok.sum() / max(has.sum(), 1)),
        "id_accuracy_objects": float(ok[obj].sum() / max(obj.sum(), 1)),
        "labelled_fraction": float(has.mean()) if len(has) else 0.0,
    }
