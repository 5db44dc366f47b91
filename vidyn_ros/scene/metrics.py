"""Scene quality metrics against the simulated rig's ground truth (evaluation only; perception never sees it).

The scene's object ids are perception's (the segmenter numbers objects its own way), so every metric first
associates each estimated id with a true object (:class:`IdAssociation`, once, at first sight) and scores under the
true id.

- **Centroid tracking error** [m] (drift): each object's estimate is the centroid of its Gaussians at first sight
  carried by the tracked pose. The reference is that centroid carried along by the ground-truth rigid motion since
  then, T_gt(t) T_gt(t0)^-1 c(t0). This measures tracking, not the (constant) offset between a surface-sample
  centroid and the body's centre of mass, which is reported separately as ``centroid_offset_m``.
- **Chamfer distance** [m] per object between its Gaussians and points sampled on the true object surface
  (``vidyn_ros.metrics``, the dynamics evaluation's metric), and δ (fraction of its Gaussians within 1/2/4 cm).
- **Id accuracy**: fraction of Gaussians whose (associated) id is the true object they lie on (nearest true
  surface, ``vidyn_ros.metrics.true_object_ids``; 0 = table / background), not the masks the scene was given. On an
  object's contact face (``metrics.contact_band``) the table's id counts as right too: both surfaces are there.
- **PSNR** [dB] of rendered vs observed colour over the observed views (``scene.losses.psnr``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vidyn_ros.geometry import make_se3, quat_wxyz_to_matrix
from vidyn_ros.metrics import (
    DELTA_THRESHOLDS_TABLETOP,
    ObjectShapes,
    chamfer_distance,
    contact_band,
    delta_within,
    object_surface_points,
    true_object_ids,
)
from vidyn_ros.types import GaussianSet, ObjectPose


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


@dataclass
class IdAssociation:
    """Estimated (perception) object ids -> true object ids, decided once per estimated id at first sight: the true
    object most of its Gaussians lie on. An estimated id whose Gaussians mostly lie on the table, or on a true object
    that another estimated id still present in the scene has claimed, is a ghost (a second copy of an object or a
    spurious segment). A true object claimed again by a new id after its first id left the scene counts as an id
    switch (the scene did not re-associate it). ``oracle=True``: estimated ids are true ids (oracle masks)."""

    oracle: bool = False
    id_map: dict[int, int] = field(default_factory=dict)
    ghosts: set[int] = field(default_factory=set)
    switches: int = 0

    def update(self, est_ids: np.ndarray, truth: np.ndarray) -> dict[int, int]:
        """Associate the ids in ``est_ids`` [N] (per Gaussian) not seen before, given each Gaussian's true id
        ``truth`` [N]. Returns the mapping (0 -> 0 always)."""
        present = {int(k) for k in np.unique(est_ids) if k > 0}
        if self.oracle:
            self.id_map.update({k: k for k in present})
            return self.id_map
        for k in sorted(present - set(self.id_map) - self.ghosts):
            vals, counts = np.unique(truth[est_ids == k], return_counts=True)
            j = int(vals[np.argmax(counts)])
            holders = [e for e, t in self.id_map.items() if t == j]
            if j == 0 or any(e in present for e in holders):
                self.ghosts.add(k)
                continue
            if holders:
                self.switches += 1
            self.id_map[k] = j
        return self.id_map

    def map(self, est_ids: np.ndarray) -> np.ndarray:
        """[N] true ids of estimated ids (0 stays 0; ghosts and unassociated ids -> -1)."""
        out = np.full(len(est_ids), -1, dtype=np.int64)
        out[est_ids == 0] = 0
        for e, t in self.id_map.items():
            out[est_ids == e] = t
        return out


def truth_metrics(
    gaussians: GaussianSet,
    shapes: ObjectShapes,
    poses: Sequence[ObjectPose],
    association: IdAssociation,
    n_surface: int = 2000,
    thresholds: Sequence[float] = DELTA_THRESHOLDS_TABLETOP,
) -> dict:
    """One frame's truth-based scores of a scene: id accuracy (all / object Gaussians), per true object the
    Chamfer distance of its Gaussians to its true surface, δ at ``thresholds``, and the association state."""
    means = gaussians.means.detach().cpu().numpy().astype(np.float64)
    est = gaussians.object_ids.detach().cpu().numpy().astype(np.int64)
    truth = true_object_ids(means, shapes, poses)
    association.update(est, truth)
    mapped = association.map(est)
    # on an object's contact face the table's surface coincides with the object's: either id is right there
    ok = (mapped == truth) | ((mapped == 0) & contact_band(means, shapes, poses))
    obj = truth > 0
    surfaces = object_surface_points(shapes, poses, n_surface)
    per_object = {}
    for k, surf in surfaces.items():
        pts = means[mapped == k]
        cd = chamfer_distance(pts, surf)
        per_object[k] = {"chamfer_m": cd.distance, "accuracy_m": cd.accuracy, "completeness_m": cd.completeness,
                         "delta": delta_within(pts, surf, thresholds), "gaussians": len(pts)}
    return {
        "id_accuracy": float(ok.mean()) if len(ok) else float("nan"),
        "id_accuracy_objects": float(ok[obj].mean()) if obj.any() else float("nan"),
        "per_object": per_object,
        "ghosts": len(association.ghosts),
        "id_switches": association.switches,
    }
