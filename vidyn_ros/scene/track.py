"""Per-frame tracking of a Gaussian scene: per-object rigid SE(3) step, short per-Gaussian refinement, and the life
cycle of objects and Gaussians over long runs.

Each object k carries a rigid pose T_k (4x4, world <- object's first-seen frame) and every Gaussian i of it a canonical
position c_i (where it was when the object was first seen) and canonical rotation. Per new frame:

1. **Warm start** by constant velocity: the object's last centroid velocity and rotation rate (about its centroid)
   applied to T_k.
2. **Rigid step** by point-to-plane ICP (open3d): the object's observed points (its mask pixels' depth, back-projected
   from every view) are registered onto the object's ICP model at the prediction. Observed -> model is the right
   direction: every observed point lies on the model surface, while the model also has parts that no camera sees now.
3. **Refinement** (optional, ``refine_iters``): a few Adam steps on the object Gaussians' positions against the rendered
   colour + depth of the current frame, with a local-rigidity regulariser (neighbours' offsets must follow the
   object's rotation: ||(x_j − x_i) − R_k (c_j − c_i)||, as in dynamic 3D Gaussian tracking) and an isometry term.

Life cycle (what keeps a scene right over hours; docs/scene.md):

- **Held**: an object with too few observed points, or whose registration fails (ICP fitness below ``min_fitness``),
  is held: pose frozen, marked not visible, its velocity decayed by ``velocity_decay`` per frame (no extrapolation).
- **Re-associated**: an instance id seen for the first time is first matched against the held objects: the same
  colour (mean RGB within ``reassociate_color``) and place (within ``reassociate_distance``, or the only held object of
  that colour), confirmed by registering its points onto that object's model (fitness >= ``reassociate_fitness``).
  A match makes the new id an alias of the old object (a segmenter that lost an object gives it a new id when it comes
  back); otherwise the id spawns a new object from its observed points.
- **Removed**: an object not seen for ``remove_after_s`` (sensor time) is removed with its Gaussians. It is
  remembered (the last ``archive_size``): when a new instance matches it by the same rule, it comes back under its old
  id with its Gaussians (fresh particle ids).
- **Maintained** (``maintain``, every few frames): one render with the masks gives each Gaussian's contribution to
  every view; Gaussians added by densification get their ids by the cross-view vote (their pixel label is one vote,
  views that see them clearly the others), not from raw pixel labels alone; Gaussians with opacity below
  ``prune_opacity``, or not seen for ``prune_unseen_s`` while their object is, are pruned, and beyond
  ``max_gaussians`` the least recently seen go first; then densification adds Gaussians where the views show
  surfaces the scene does not explain, and each object's ICP model takes their points.

Particle ids (``GaussianSet.particle_ids``) are stable: new Gaussians get fresh ids, pruned and removed ones are never
reused. The background (id 0) is static. Per-Gaussian positions and rotations per frame are kept as trajectories
(``keep_trajectories``; the dynamics' pseudo labels), aligned by particle id.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from vidyn_ros.geometry import matrix_to_quat_wxyz
from vidyn_ros.geometry_torch import quat_mul
from vidyn_ros.types import GaussianSet, MultiViewFrame, ObjectPose

from .init import FusedCloud, Targets, downsample_to_budget, estimate_normals, fuse_views, init_gaussians

log = logging.getLogger(__name__)


@dataclass
class TrackConfig:
    """Tracking settings."""

    fuse_stride: int = 1  # back-project every n-th pixel (n = image downscale keeps full-size frames cheap)
    icp_voxel: float = 0.004  # [m] observed points are voxel-downsampled to this before ICP
    model_voxel: float = 0.003  # [m] voxel of each object's ICP model cloud (its observed points)
    icp_max_distance: float = 0.02  # [m] correspondence gate for ICP
    icp_iterations: int = 30
    relocalise_fitness: float = 0.6  # below this ICP fitness, also try principal-axis guesses (object lost)
    coarse_factor: float = 3.0  # the coarse ICP pass gates correspondences at this multiple of icp_max_distance
    min_points: int = 30  # observed points below which an object counts as not visible
    min_fitness: float = 0.3  # ICP result accepted only if this fraction of observed points found a partner
    constant_velocity: bool = True  # warm start from the last frame-to-frame motion
    velocity_decay: float = 0.5  # per frame an object is held, its velocity (the warm start) is scaled by this
    remove_after_s: float = 5.0  # an object not seen for this long [s] is removed with its Gaussians (0: never)
    reassociate_distance: float = 0.05  # [m] a new id this close to a held object of the same colour is that object
    reassociate_color: float = 0.12  # mean absolute RGB difference [0, 1] within which colours are "the same"
    reassociate_fitness: float = 0.5  # ICP fitness that confirms a re-association
    archive_size: int = 64  # removed objects remembered (their id back if they return)
    refine_iters: int = 0  # per-Gaussian refinement steps per frame (rendering: expensive on CPU)
    refine_lr: float = 5e-4  # [m]
    refine_lr_colors: float = 0.03  # colours (opacity logits: twice this)
    lambda_rigid: float = 10.0  # local-rigidity weight
    lambda_iso: float = 10.0  # isometry weight
    knn: int = 8  # neighbours for the rigidity terms
    new_object_budget: int = 400  # Gaussians for an object that enters the view
    max_gaussians: int = 0  # cap on the number of Gaussians kept by maintenance (0: no cap)
    prune_opacity: float = 0.02  # maintenance prunes Gaussians less opaque than this
    prune_unseen_s: float = 10.0  # ... and those not seen for this long [s] while their object is seen
    seen_contribution: float = 0.01  # a Gaussian is seen in a frame when its best contribution γ reaches this
    # The vote for Gaussians added by densification (docs/scene.md, "Life cycle"): they overlap densely (one pixel
    # footprint wide at about that spacing), so in many views a new Gaussian is mostly hidden by its neighbours and
    # peeks out only over the silhouette, where the paper's max-contribution rule votes for the background. Only views
    # that see it clearly vote, and the pixel label it was made from counts as one vote.
    revote_min_contribution: float = 0.2
    revote_prior_weight: float = 1.0
    revote_rounds: int = 3  # a new Gaussian no view sees clearly waits this many maintenances, then keeps its label
    keep_trajectories: bool = True  # record per-frame positions (offline tools); a live node does not need them


@dataclass
class ObjectTrack:
    """State of one tracked object."""

    object_id: int
    T: np.ndarray = field(default_factory=lambda: np.eye(4))  # world <- canonical
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # centroid motion per frame [m]
    spin: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rotation per frame about the centroid [rotvec]
    visible: bool = True
    fitness: float = 1.0
    rmse: float = 0.0
    n_observed: int = 0
    centroid: np.ndarray = field(default_factory=lambda: np.zeros(3))  # canonical centroid of its first Gaussians
    color: np.ndarray = field(default_factory=lambda: np.zeros(3))  # mean RGB of its points at first sight
    last_seen_ns: int = 0
    held_frames: int = 0

    def position(self) -> np.ndarray:
        """The first-sight centroid carried by the pose (world) [m]."""
        return self.T[:3, :3] @ self.centroid + self.T[:3, 3]

    def predict(self) -> np.ndarray:
        """Pose after one more frame at the current velocity and spin (about the centroid)."""
        from scipy.spatial.transform import Rotation

        R = Rotation.from_rotvec(self.spin).as_matrix() @ self.T[:3, :3]
        out = np.eye(4)
        out[:3, :3] = R
        out[:3, 3] = self.position() + self.velocity - R @ self.centroid
        return out

    def moved_to(self, T_new: np.ndarray) -> None:
        """Accept a new pose; the velocity and spin become the motion since the last pose."""
        from scipy.spatial.transform import Rotation

        c_old = self.position()
        dR = T_new[:3, :3] @ self.T[:3, :3].T
        self.T = T_new
        self.velocity = self.position() - c_old
        self.spin = Rotation.from_matrix(dR).as_rotvec()

    def hold(self, decay: float) -> None:
        """Not seen (or not registered) this frame: pose frozen, velocity decayed."""
        self.visible = False
        self.velocity = self.velocity * decay
        self.spin = self.spin * decay
        self.held_frames += 1


def camera_key(cameras) -> tuple:
    """Identity of a camera set (names, sizes, intrinsics, poses) for reusing a render."""
    return tuple((c.name, c.width, c.height, c.K.tobytes(), c.T_world_cam.tobytes()) for c in cameras)


def _interior(labels: np.ndarray, depth: np.ndarray, depth_step: float = 0.01) -> np.ndarray:
    """[H, W] bool: pixels whose 4-neighbours have the same label and depth within ``depth_step`` (not on an edge)."""
    lab = np.pad(labels, 1, mode="edge")
    dep = np.pad(depth, 1, mode="edge")
    ok = np.ones(labels.shape, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        n_lab = lab[dy : dy + labels.shape[0], dx : dx + labels.shape[1]]
        n_dep = dep[dy : dy + labels.shape[0], dx : dx + labels.shape[1]]
        ok &= (n_lab == labels) & (np.abs(n_dep - depth) < depth_step)
    return ok


@dataclass
class _Archived:
    """A removed object, remembered so that it gets its id back if it returns (``Tracker.archive``)."""

    track: ObjectTrack
    model: tuple[np.ndarray, np.ndarray]  # ICP model points, normals (canonical frame)
    canonical: np.ndarray  # its Gaussians' canonical positions [M, 3]
    canonical_quats: torch.Tensor  # [M, 4]
    gaussians: GaussianSet  # its Gaussians when it was removed (appearance)


@dataclass
class _Record:
    """One frame of the trajectories: every Gaussian alive then, by particle id."""

    stamp_ns: int
    particle_ids: np.ndarray  # [N] int64
    object_ids: np.ndarray  # [N] int64
    positions: np.ndarray  # [N, 3] float32
    quats: np.ndarray  # [N, 4] float32, unit


class Tracker:
    """Tracks the objects of an initialised Gaussian scene through new frames (see module docstring).

    Args:
        gaussians: the initialised scene (world frame), object ids set.
        cfg: tracking settings.
        cameras: the rig's cameras (orients normals).
        model_cloud: the fused observation the scene was initialised from; each object's points in it (voxel
            ``model_voxel``) are the ICP model. Registering raw observations onto raw observations avoids the bias of
            registering them onto optimised Gaussian centres. None: the Gaussian centres are the model.
        stamp_ns: time of the frame the scene was initialised from.
    """

    def __init__(
        self,
        gaussians: GaussianSet,
        cfg: TrackConfig | None = None,
        cameras=None,
        model_cloud: FusedCloud | None = None,
        stamp_ns: int = 0,
    ) -> None:
        self.cfg = cfg or TrackConfig()
        self.background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # colour behind the Gaussians (refinement)
        self.cameras = cameras
        self.now_ns = int(stamp_ns)
        self.gaussians = gaussians.detach().clone()
        # stable particle ids: appended Gaussians get fresh ones, never reused (snapshots and files can be aligned)
        pids = self.gaussians.particle_ids
        self._next_particle_id = int(pids.max()) + 1 if len(pids) else 0
        n = len(self.gaussians)
        self.canonical = self.gaussians.means.detach().cpu().numpy().astype(np.float64)  # [N,3]
        self.canonical_quats = self.gaussians.quats.detach().clone()
        self.normals = np.zeros_like(self.canonical)
        self.seen_ns = np.full(n, self.now_ns, dtype=np.int64)  # per Gaussian: last frame it contributed to a view
        self.pending_vote = np.zeros(n, dtype=bool)  # per Gaussian: added by densification, id not voted yet
        self.vote_rounds = np.zeros(n, dtype=np.int64)  # per Gaussian: maintenances it has been pending for
        self.objects: dict[int, ObjectTrack] = {}
        self.aliases: dict[int, int] = {}  # instance id -> the object id it was re-associated with
        self.removed: list[int] = []  # object ids removed (not seen for remove_after_s), in order
        self.archive: dict[int, _Archived] = {}  # removed objects, newest last (at most archive_size)
        self.reassociated: list[tuple[int, int]] = []  # (new instance id, object id), in order
        self._knn: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._knn_dirty = False
        self._model: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> canonical ICP model points, normals
        ids = self.gaussians.object_ids.cpu().numpy()
        colors = self.gaussians.colors.detach().cpu().numpy()
        for k in np.unique(ids[ids > 0]):
            obs = model_cloud.select(model_cloud.labels == k) if model_cloud is not None else None
            col = obs.colors.mean(axis=0) if obs is not None and len(obs) else colors[ids == k].mean(axis=0)
            self._add_object(int(k), np.flatnonzero(ids == k), obs, col)
        self.records: list[_Record] = []
        self.last_render: tuple[int, tuple, object] | None = None  # (stamp, camera_key, RenderOutput) of maintain()

    # ------------------------------------------------------------------ objects
    def _add_object(self, k: int, idx: np.ndarray, observed: FusedCloud | None = None,
                    color: np.ndarray | None = None) -> None:
        import open3d as o3d

        obj = ObjectTrack(k, last_seen_ns=self.now_ns)
        self.objects[k] = obj
        pts = self.canonical[idx]
        # the reported centroid is this first-sight centroid carried by the rigid pose: Gaussians added later
        # (densification) on one side of the object must not move it
        obj.centroid = pts.mean(axis=0) if len(pts) else np.zeros(3)
        obj.color = np.asarray(color, dtype=np.float64) if color is not None else np.zeros(3)
        if len(idx) >= 4:
            self.normals[idx] = estimate_normals(pts, k=min(12, len(idx)), cameras=self.cameras)
        self._knn_dirty = True
        if observed is not None and len(observed) >= self.cfg.min_points:
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(observed.points.astype(np.float64)))
            if self.cfg.model_voxel > 0:
                pc = pc.voxel_down_sample(self.cfg.model_voxel)
            mp = np.asarray(pc.points).copy()
            self._model[k] = (mp, estimate_normals(mp, cameras=self.cameras))
        elif len(idx) >= 4:
            self._model[k] = (pts.copy(), self.normals[idx].copy())

    def _ensure_knn(self) -> None:
        """Neighbour lists of every object's Gaussians (global indices) for the rigidity terms, rebuilt after the set
        of Gaussians changed (spawn, densify, prune, removal)."""
        if not self._knn_dirty:
            return
        from scipy.spatial import cKDTree

        self._knn = {}
        ids = self.gaussians.object_ids.cpu().numpy()
        for k in self.objects:
            idx = np.flatnonzero(ids == k)
            if len(idx) < 2:
                continue
            pts = self.canonical[idx]
            nn = min(self.cfg.knn, len(idx) - 1)
            _, nbr = cKDTree(pts).query(pts, k=nn + 1)
            self._knn[k] = (idx, idx[nbr[:, 1:]])
        self._knn_dirty = False

    def _new_particle_ids(self, n: int, device) -> torch.Tensor:
        ids = torch.arange(self._next_particle_id, self._next_particle_id + n, dtype=torch.int64, device=device)
        self._next_particle_id += n
        return ids

    def object_indices(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.gaussians.object_ids.cpu().numpy() == k)

    def _append(self, new: GaussianSet, canonical: np.ndarray, canonical_quats: torch.Tensor,
                pending: bool) -> np.ndarray:
        """Append Gaussians (fresh particle ids) and their per-Gaussian state; returns their indices."""
        g = self.gaussians
        new.particle_ids = self._new_particle_ids(len(new), g.device)
        start = len(g)
        self.gaussians = GaussianSet(
            *(torch.cat([getattr(g, f), getattr(new, f).to(g.device)]) for f in
              ("means", "quats", "log_scales", "colors", "opacity_logits", "object_ids", "particle_ids"))
        )  # fmt: skip
        self.canonical = np.concatenate([self.canonical, canonical.astype(np.float64)])
        self.canonical_quats = torch.cat([self.canonical_quats, canonical_quats.to(g.device)])
        self.normals = np.concatenate([self.normals, np.zeros((len(new), 3))])
        self.seen_ns = np.concatenate([self.seen_ns, np.full(len(new), self.now_ns, dtype=np.int64)])
        self.pending_vote = np.concatenate([self.pending_vote, np.full(len(new), pending)])
        self.vote_rounds = np.concatenate([self.vote_rounds, np.zeros(len(new), dtype=np.int64)])
        self._knn_dirty = True
        return np.arange(start, start + len(new))

    def _keep(self, keep: np.ndarray) -> None:
        """Keep only the Gaussians ``keep`` ([N] bool); their particle ids stay, the others' are never reused."""
        if keep.all():
            return
        ti = torch.as_tensor(np.flatnonzero(keep), device=self.gaussians.device)
        self.gaussians = self.gaussians.subset(ti)
        self.canonical = self.canonical[keep]
        self.canonical_quats = self.canonical_quats[ti]
        self.normals = self.normals[keep]
        self.seen_ns = self.seen_ns[keep]
        self.pending_vote = self.pending_vote[keep]
        self.vote_rounds = self.vote_rounds[keep]
        self._knn_dirty = True

    def _spawn(self, k: int, cloud: FusedCloud) -> None:
        """A new instance id: Gaussians from its observed points, appended to the scene."""
        sub = downsample_to_budget(cloud, self.cfg.new_object_budget)
        new = init_gaussians(sub, self.cameras, device=str(self.gaussians.device))
        new.object_ids[:] = k
        idx = self._append(new, sub.points, new.quats, pending=False)
        self._add_object(k, idx, cloud, cloud.colors.mean(axis=0))
        log.info("object %d entered the view: %d new Gaussians", k, len(sub))

    def remove_object(self, k: int) -> int:
        """Remove object ``k`` with its Gaussians (and ids aliased to it); it is remembered (``archive``: pose, colour,
        ICP model, canonical Gaussians) so that it gets its id back if it returns. Returns how many Gaussians went."""
        ids = self.gaussians.object_ids.cpu().numpy()
        gone = ids == k
        ti = torch.as_tensor(np.flatnonzero(gone), device=self.gaussians.device)
        if k in self.objects and k in self._model:
            self.archive[k] = _Archived(self.objects[k], self._model[k], self.canonical[gone].copy(),
                                        self.canonical_quats[ti].clone(), self.gaussians.subset(ti).detach().clone())
            while len(self.archive) > self.cfg.archive_size:
                self.archive.pop(next(iter(self.archive)))
        self._keep(~gone)
        self.objects.pop(k, None)
        self._model.pop(k, None)
        self._knn.pop(k, None)
        self.aliases = {a: j for a, j in self.aliases.items() if j != k}
        self.removed.append(k)
        log.info("object %d removed (not seen for %.1f s): %d Gaussians", k, self.cfg.remove_after_s, int(gone.sum()))
        return int(gone.sum())

    def relabel(self, labels):
        """Instance ids -> object ids (re-associated ids replaced by their object's), numpy or torch."""
        if not self.aliases:
            return labels
        out = labels.clone() if isinstance(labels, torch.Tensor) else labels.copy()
        for a, j in self.aliases.items():
            out[labels == a] = j
        return out

    def _reassociate(self, k: int, obs: FusedCloud, unseen: set[int]) -> int | None:
        """The object that instance ``k``'s points belong to among those not seen in this frame (``unseen``: held, or
        just lost by their instance id) and the removed ones (``archive``), with its pose updated (a removed one is
        restored); None if there is none. See the module docstring for the rule."""
        cfg = self.cfg
        centre = obs.points.mean(axis=0)
        color = obs.colors.mean(axis=0)
        cands = []
        for j, o in [*((j, self.objects[j]) for j in unseen if j in self._model), *((j, a.track)
                                                                                  for j, a in self.archive.items())]:
            if np.abs(color - o.color).mean() <= cfg.reassociate_color:
                cands.append((float(np.linalg.norm(centre - o.position())), j))
        cands.sort()
        near = [j for d, j in cands if d < cfg.reassociate_distance]
        # the same place; else the only object of this colour (it may have been moved while unseen)
        order = near[:2] if near else ([cands[0][1]] if len(cands) == 1 else [])
        for j in order:
            archived = self.archive.get(j) if j not in self.objects else None
            if archived is not None:
                self._model[j] = archived.model  # registration needs it; dropped again if this is not the object
            o = self.objects[j] if archived is None else archived.track
            T, fit, rmse = self._register(j, obs.points, [o.T], relocalise=True)
            if fit < cfg.reassociate_fitness:
                if archived is not None:
                    self._model.pop(j)
                continue
            if archived is not None:
                self._restore(j)
            o.T, o.velocity, o.spin = T, np.zeros(3), np.zeros(3)
            o.visible, o.fitness, o.rmse, o.held_frames = True, fit, rmse, 0
            o.n_observed, o.last_seen_ns = len(obs), self.now_ns
            return j
        return None

    def _restore(self, j: int) -> None:
        """A removed object comes back: its archived Gaussians (fresh particle ids) and state, under its old id."""
        a = self.archive.pop(j)
        self.objects[j] = a.track
        self._model[j] = a.model
        g = a.gaussians
        self._append(GaussianSet(g.means, g.quats, g.log_scales, g.colors, g.opacity_logits, g.object_ids),
                     a.canonical, a.canonical_quats, pending=False)
        log.info("object %d is back (restored after removal): %d Gaussians", j, len(g))

    # ------------------------------------------------------------------ per frame
    def step(self, frame: MultiViewFrame, targets: Targets | None = None, backend: str = "auto") -> dict[str, float]:
        """Track one new frame. ``targets`` (the rendered-resolution views) are needed only when refining; their
        masks are relabelled in place with the re-associated ids.

        Returns a dict of statistics (icp rmse / fitness means, refinement loss, visible objects, life-cycle events).
        """
        cfg = self.cfg
        self.now_ns = int(frame.stamp_ns)
        t0 = time.perf_counter()
        cloud = fuse_views(frame, stride=cfg.fuse_stride)
        cloud.labels = self.relabel(cloud.labels)
        stats: dict[str, float] = {"t_fuse_ms": (time.perf_counter() - t0) * 1e3}
        t0 = time.perf_counter()
        rmses, fits = [], []
        placed: set[int] = set()  # objects whose pose the re-association already set this frame
        n_removed, n_reassoc = len(self.removed), len(self.reassociated)
        labels, counts = np.unique(cloud.labels[cloud.labels > 0], return_counts=True)
        seen_now = {int(k) for k, c in zip(labels, counts, strict=True) if c >= cfg.min_points}
        unseen = set(self.objects) - seen_now
        for k in sorted(seen_now - set(self.objects)):
            obs = cloud.select(cloud.labels == k)
            j = self._reassociate(k, obs, unseen)
            if j is None:
                self._spawn(k, obs)
            else:
                log.info("instance %d is held object %d again (re-associated)", k, j)
                self.aliases[k] = j
                self.reassociated.append((k, j))
                cloud.labels[cloud.labels == k] = j
                placed.add(j)
                unseen.discard(j)
        if targets is not None and targets.mask is not None:
            targets.mask = self.relabel(targets.mask)
        stats["t_new_ids_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for k, obj in list(self.objects.items()):
            if k in placed:
                continue
            obs = cloud.select(cloud.labels == k)
            obj.n_observed = len(obs)
            if len(obs) < cfg.min_points:
                obj.hold(cfg.velocity_decay)
                continue
            T_pred = obj.predict() if cfg.constant_velocity else obj.T.copy()
            T_new, fit, rmse = self._register(k, obs.points, [T_pred, obj.T])
            obj.fitness, obj.rmse = fit, rmse
            if fit < cfg.min_fitness:
                log.debug("object %d: ICP fitness %.2f below %.2f: held", k, fit, cfg.min_fitness)
                obj.hold(cfg.velocity_decay)
                continue
            obj.moved_to(T_new)
            obj.visible, obj.held_frames, obj.last_seen_ns = True, 0, self.now_ns
            fits.append(fit)
            rmses.append(rmse)
        if cfg.remove_after_s > 0:
            for k, obj in list(self.objects.items()):
                if not obj.visible and self.now_ns - obj.last_seen_ns > cfg.remove_after_s * 1e9:
                    self.remove_object(k)
        stats["t_register_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        self._apply_poses()
        stats["t_apply_ms"] = (time.perf_counter() - t0) * 1e3
        if cfg.refine_iters > 0 and targets is not None:
            t0 = time.perf_counter()
            stats["refine_loss"] = self._refine(targets, backend)
            stats["t_refine_ms"] = (time.perf_counter() - t0) * 1e3
        stats["icp_rmse_m"] = float(np.mean(rmses)) if rmses else float("nan")
        stats["icp_fitness"] = float(np.mean(fits)) if fits else float("nan")
        stats["visible_objects"] = float(sum(o.visible for o in self.objects.values()))
        stats["held_objects"] = float(sum(not o.visible for o in self.objects.values()))
        stats["removed_objects"] = float(len(self.removed) - n_removed)
        stats["reassociated_objects"] = float(len(self.reassociated) - n_reassoc)
        del self.removed[:-1000], self.reassociated[:-1000]  # a scene that runs for days keeps the latest events
        t0 = time.perf_counter()
        self.record(frame.stamp_ns)
        stats["t_record_ms"] = (time.perf_counter() - t0) * 1e3
        return stats

    def _register(self, k: int, observed: np.ndarray, inits: list[np.ndarray], relocalise: bool = False
                  ) -> tuple[np.ndarray, float, float]:
        """Best rigid pose over several starting guesses (the constant-velocity prediction, the last pose, and each
        shifted so that the model's centroid meets the observed centroid — this catches fast motion, e.g. a ball at
        1 m/s moves 33 mm per frame, beyond the ICP gate). Each is refined coarse (wide gate) then fine.
        """
        cfg = self.cfg
        mp, _ = self._model.get(k, (None, None))
        cands = list(inits)
        if mp is not None:
            for T in inits:
                shift = observed.mean(axis=0) - (mp @ T[:3, :3].T + T[:3, 3]).mean(axis=0)
                Ts = T.copy()
                Ts[:3, 3] += shift
                cands.append(Ts)
        best = (inits[0], -1.0, float("inf"))
        for i, T0 in enumerate(cands):
            T1, fit, rmse = self._rigid_step(k, observed, T0, cfg.icp_max_distance * cfg.coarse_factor)
            T2, fit, rmse = self._rigid_step(k, observed, T1, cfg.icp_max_distance)
            if fit > best[1] + 1e-3 or (abs(fit - best[1]) <= 1e-3 and rmse < best[2]):
                best = (T2, fit, rmse)
            if i == 0 and fit > 0.9:  # the prediction was good: skip the other guesses (the common case, cheap)
                break
        if (relocalise or best[1] < cfg.relocalise_fitness) and mp is not None:
            # lost (e.g. a pin knocked over: 90 degrees in a few frames): guesses that put the model's principal
            # axes onto the observed points' principal axes, all sign flips, then ICP as above
            for T0 in self._pca_guesses(mp, observed):
                T1, fit, rmse = self._rigid_step(k, observed, T0, cfg.icp_max_distance * cfg.coarse_factor)
                T2, fit, rmse = self._rigid_step(k, observed, T1, cfg.icp_max_distance)
                if fit > best[1] + 1e-3 or (abs(fit - best[1]) <= 1e-3 and rmse < best[2]):
                    best = (T2, fit, rmse)
        return best

    @staticmethod
    def _pca_guesses(model: np.ndarray, observed: np.ndarray) -> list[np.ndarray]:
        """World <- canonical poses aligning principal axes of the canonical model with the observed points'."""
        def axes(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c = p.mean(axis=0)
            _, _, vt = np.linalg.svd(p - c, full_matrices=False)
            return c, vt.T  # columns: principal axes, largest first

        cm, Am = axes(model)
        co, Ao = axes(observed)
        out = []
        for sx in (1.0, -1.0):
            for sy in (1.0, -1.0):
                B = Ao * np.array([sx, sy, 1.0])
                B[:, 2] = np.cross(B[:, 0], B[:, 1])
                A = Am.copy()
                A[:, 2] = np.cross(A[:, 0], A[:, 1])
                R = B @ A.T
                T = np.eye(4)
                T[:3, :3] = R
                T[:3, 3] = co - R @ cm
                out.append(T)
        return out

    def _rigid_step(
        self, k: int, observed: np.ndarray, T_init: np.ndarray, max_distance: float | None = None
    ) -> tuple[np.ndarray, float, float]:
        """Point-to-plane ICP of observed points onto the object's Gaussians at T_init. Returns (T, fitness, rmse)."""
        import open3d as o3d

        cfg = self.cfg
        if k not in self._model:
            return T_init, 0.0, float("nan")
        mp, mn = self._model[k]
        R, t = T_init[:3, :3], T_init[:3, 3]
        model = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(mp @ R.T + t))
        model.normals = o3d.utility.Vector3dVector(mn @ R.T)
        src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(observed.astype(np.float64)))
        if cfg.icp_voxel > 0:
            src = src.voxel_down_sample(cfg.icp_voxel)
        reg = o3d.pipelines.registration
        res = reg.registration_icp(
            src, model, max_distance or cfg.icp_max_distance, np.eye(4), reg.TransformationEstimationPointToPlane(),
            reg.ICPConvergenceCriteria(relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=cfg.icp_iterations),
        )  # fmt: skip
        # res maps observed -> model at T_init; the object therefore moved by its inverse
        return np.linalg.inv(res.transformation) @ T_init, float(res.fitness), float(res.inlier_rmse)

    def _apply_poses(self) -> None:
        """Gaussian means and rotations of every object from its rigid pose and canonical state."""
        g = self.gaussians
        ids = g.object_ids.cpu().numpy()
        means = g.means.detach().cpu().numpy().astype(np.float64)
        for k, obj in self.objects.items():
            idx = np.flatnonzero(ids == k)
            if len(idx) == 0:
                continue
            means[idx] = self.canonical[idx] @ obj.T[:3, :3].T + obj.T[:3, 3]
            qk = torch.as_tensor(matrix_to_quat_wxyz(obj.T[:3, :3]), dtype=g.quats.dtype, device=g.device)
            ti = torch.as_tensor(idx, device=g.device)
            g.quats[ti] = quat_mul(qk.expand(len(idx), 4), self.canonical_quats[ti])
        g.means.copy_(torch.as_tensor(means, dtype=g.means.dtype))

    def _refine(self, targets: Targets, backend: str) -> float:
        """A few Adam steps on the object Gaussians' positions with rendering + rigidity losses (see module doc)."""
        from vidyn_ros.render import render

        from .losses import depth_loss, photometric_loss

        cfg = self.cfg
        self._ensure_knn()
        g = self.gaussians
        moving = g.object_ids > 0
        if not bool(moving.any()) or not self._knn:
            return float("nan")
        dev = g.device
        pairs_i, pairs_j, rots = [], [], []
        for k, (idx, nbr) in self._knn.items():
            R = torch.as_tensor(self.objects[k].T[:3, :3], dtype=torch.float32, device=dev)
            pairs_i.append(np.repeat(idx, nbr.shape[1]))
            pairs_j.append(nbr.reshape(-1))
            rots.append(R.expand(nbr.size, 3, 3))
        pi = torch.as_tensor(np.concatenate(pairs_i), device=dev)
        pj = torch.as_tensor(np.concatenate(pairs_j), device=dev)
        Rs = torch.cat(rots)
        canon = torch.as_tensor(self.canonical, dtype=torch.float32, device=dev)
        d_canon = canon[pj] - canon[pi]  # [P,3]
        rest = d_canon.norm(dim=1)
        means = g.means.detach().clone().requires_grad_(True)
        # appearance too: a surface seen from a new side after the object turned needs other colours
        colors = g.colors.detach().clone().requires_grad_(True)
        opac = g.opacity_logits.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([{"params": [means], "lr": cfg.refine_lr},
                                {"params": [colors], "lr": cfg.refine_lr_colors},
                                {"params": [opac], "lr": cfg.refine_lr_colors * 2}])
        loss_v = float("nan")
        for _ in range(cfg.refine_iters):
            opt.zero_grad(set_to_none=True)
            gi = GaussianSet(means, g.quats, g.log_scales, colors, opac, g.object_ids, g.particle_ids)
            out = render(gi, targets.cameras, background=self.background, backend=backend)
            loss = photometric_loss(out.rgb, targets.color, 0.0) + depth_loss(out.depth, targets.depth)
            d = means[pj] - means[pi]
            rigid = (d - torch.einsum("pij,pj->pi", Rs, d_canon)).norm(dim=1).mean()
            iso = (d.norm(dim=1) - rest).abs().mean()
            total = loss + cfg.lambda_rigid * rigid + cfg.lambda_iso * iso
            total.backward()
            for p in (means, colors, opac):
                p.grad[~moving] = 0.0
            opt.step()
            with torch.no_grad():
                colors.clamp_(0.0, 1.0)
            loss_v = float(loss.detach())
        with torch.no_grad():
            g.colors.copy_(colors.detach())
            g.opacity_logits.copy_(opac.detach())
            # keep the refinement as local residuals only: each object's mean displacement is removed, because the
            # object's motion is the rigid step's job (photometric gradients alone drift whole objects by mm)
            ids = g.object_ids.cpu().numpy()
            delta = (means.detach() - g.means).cpu().numpy().astype(np.float64)
            m = g.means.cpu().numpy().astype(np.float64)
            for k, obj in self.objects.items():
                idx = np.flatnonzero(ids == k)
                if len(idx) == 0:
                    continue
                m[idx] += delta[idx] - delta[idx].mean(axis=0)
                # canonical positions follow, expressed in the object's frame
                self.canonical[idx] = (m[idx] - obj.T[:3, 3]) @ obj.T[:3, :3]
            g.means.copy_(torch.as_tensor(m, dtype=g.means.dtype, device=g.device))
        return loss_v

    # ------------------------------------------------------------------ maintenance: vote, prune, densify
    @torch.no_grad()
    def maintain(self, targets: Targets, max_new: int = 300, backend: str = "auto", seed: int = 0) -> dict[str, float]:
        """One render of the current frame with its masks, then: which Gaussians are seen; ids of the Gaussians
        added since the last call by the cross-view vote; pruning (low opacity, long unseen, over ``max_gaussians``);
        densification into the room left. Returns counts (revoted, pruned, densified)."""
        from vidyn_ros.render import render

        cfg = self.cfg
        g = self.gaussians
        t0 = time.perf_counter()
        masks = targets.mask.long() + 1 if targets.mask is not None else None  # + 1: the background is a mask too
        out = render(g, targets.cameras, background=self.background, masks=masks, backend=backend)
        stats: dict[str, float] = {"t_maintain_render_ms": (time.perf_counter() - t0) * 1e3}
        self.last_render = (self.now_ns, camera_key(targets.cameras), out)  # SceneEstimator.render may reuse it
        t0 = time.perf_counter()
        if out.mask_contribution is not None:
            seen = (out.mask_contribution.amax(dim=(0, 1)) >= cfg.seen_contribution).cpu().numpy()
        elif out.visible is not None:
            seen = out.visible.any(dim=0).cpu().numpy()
        else:
            seen = np.ones(len(g), dtype=bool)
        self.seen_ns[seen] = self.now_ns
        stats["revoted"] = float(self._vote_pending(out)) if out.mask_contribution is not None else 0.0
        stats["pruned"] = float(self._prune())
        stats["t_vote_prune_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        room = max_new if cfg.max_gaussians <= 0 else min(max_new, cfg.max_gaussians - len(self.gaussians))
        stats["densified"] = float(self.densify(targets, room, backend=backend, seed=seed, rendered=out)) \
            if room > 0 else 0.0
        self._rerecord()
        stats["t_densify_ms"] = (time.perf_counter() - t0) * 1e3
        return stats

    def _vote_pending(self, out) -> int:
        """Ids of the Gaussians added since the last vote by the cross-view vote over this render's contributions
        (``voting.vote_from_contributions``, with the settings ``revote_*``: see TrackConfig); a Gaussian no view sees
        clearly yet stays pending for ``revote_rounds`` maintenances. A Gaussian whose id changes moves to that
        object (its canonical state re-expressed in the object's frame). Returns how many changed."""
        from .voting import vote_from_contributions

        cfg = self.cfg
        pend = np.flatnonzero(self.pending_vote)
        if len(pend) == 0:
            return 0
        g = self.gaussians
        ti = torch.as_tensor(pend, device=g.device)
        old = g.object_ids[ti]
        contribution = out.mask_contribution[:, :, ti]
        voted = vote_from_contributions(contribution, out.mask_ids - 1, cfg.revote_min_contribution, fallback=old,
                                        prior=old, prior_weight=cfg.revote_prior_weight)
        clear = (contribution.amax(dim=1) >= cfg.revote_min_contribution).any(dim=0).cpu().numpy()
        self.vote_rounds[pend] += 1
        self.pending_vote[pend[clear | (self.vote_rounds[pend] >= cfg.revote_rounds)]] = False
        changed = (voted != old).cpu().numpy() & clear
        n = 0
        for i, j in zip(pend[changed], voted[torch.as_tensor(changed)].cpu().numpy().tolist(), strict=True):
            if j != 0 and j not in self.objects:
                continue  # an instance the tracker has no object for (yet): keep the pixel label
            self._move_to_object(int(i), int(j))
            n += 1
        if n:
            self._knn_dirty = True
        return n

    def _move_to_object(self, i: int, k: int) -> None:
        """Gaussian ``i`` now belongs to object ``k`` (0: the static background), where it is now."""
        g = self.gaussians
        x = g.means[i].detach().cpu().numpy().astype(np.float64)
        if k == 0:
            self.canonical[i] = x
            self.canonical_quats[i] = g.quats[i]
        else:
            T = self.objects[k].T
            self.canonical[i] = (x - T[:3, 3]) @ T[:3, :3]
            qk = torch.as_tensor(matrix_to_quat_wxyz(T[:3, :3].T), dtype=g.quats.dtype, device=g.device)
            self.canonical_quats[i] = quat_mul(qk[None], g.quats[i][None])[0]
        g.object_ids[i] = k

    def _prune(self) -> int:
        """Drop Gaussians that are nearly transparent, or not seen for ``prune_unseen_s`` although their object
        (or the background) is; then, beyond ``max_gaussians``, the least recently seen. Held objects keep theirs
        (they are removed as a whole). Returns how many went."""
        cfg = self.cfg
        g = self.gaussians
        n = len(g)
        ids = g.object_ids.cpu().numpy()
        held = np.isin(ids, [k for k, o in self.objects.items() if not o.visible])
        opacity = g.opacity_logits.sigmoid().cpu().numpy()
        unseen_s = (self.now_ns - self.seen_ns) * 1e-9
        drop = (opacity < cfg.prune_opacity) | ((unseen_s > cfg.prune_unseen_s) & ~held)
        excess = n - int(drop.sum()) - cfg.max_gaussians if cfg.max_gaussians > 0 else 0
        if excess > 0:  # least recently seen first, then least opaque; held objects' Gaussians last
            order = np.lexsort((opacity, self.seen_ns, held))
            order = order[~drop[order]]
            drop[order[:excess]] = True
        self._keep(~drop)
        return int(drop.sum())

    # ------------------------------------------------------------------ densification
    @torch.no_grad()
    def densify(self, targets: Targets, max_new: int = 300, depth_gap: float = 0.02, color_gap: float = 0.15,
                backend: str = "auto", seed: int = 0, rendered=None) -> int:
        """Add Gaussians where the views see something the scene does not explain: surfaces uncovered since the
        first frame (the table under a pushed block, the inner faces of a toppled stack). A pixel needs one when it
        has depth and the render there is transparent (alpha < 0.5), farther than the observation by ``depth_gap``
        or off in colour by ``color_gap`` (mean absolute RGB error: a face that was hidden, e.g. between two cubes).
        New Gaussians are small isotropic disks with the pixel's colour and mask id (provisional: the next
        ``maintain`` decides their id by the cross-view vote; ids the tracker does not know yet are left to the
        spawn logic), attached to their object's rigid pose; an object's ICP model takes their points. ``rendered``:
        a render of the current scene to reuse. Returns how many were added.
        """
        from vidyn_ros.geometry import backproject
        from vidyn_ros.render import render

        if max_new <= 0:
            return 0
        g = self.gaussians
        out = rendered if rendered is not None else render(g, targets.cameras, background=self.background,
                                                           backend=backend)
        pts, cols, labs, sig = [], [], [], []
        known = set(self.objects) | {0}
        for c, cam in enumerate(targets.cameras):
            d = targets.depth[c].cpu().numpy()
            col_err = (out.rgb[c] - targets.color[c]).abs().mean(dim=-1).cpu().numpy()
            unexplained = (out.alpha[c].cpu().numpy() < 0.5) | (d < out.depth[c].cpu().numpy() - depth_gap)
            lab = targets.mask[c].cpu().numpy() if targets.mask is not None else np.zeros_like(d, dtype=np.int64)
            # colour alone flags only object pixels: on the textured table it would flag every blurred checker edge
            miss = (d > 0) & (unexplained | ((col_err > color_gap) & (lab > 0)))
            miss &= np.isin(lab, list(known)) & _interior(lab, d)  # silhouettes blend depths: never "missing"
            if not miss.any():
                continue
            pts.append(backproject(d, cam.K, cam.T_world_cam)[miss])
            cols.append(targets.color[c].cpu().numpy()[miss])
            labs.append(lab[miss].astype(np.int64))
            sig.append(d[miss] / cam.fx)  # one pixel's footprint [m]
        if not pts:
            return 0
        cloud = FusedCloud(np.concatenate(pts), np.concatenate(cols).astype(np.float32), np.concatenate(labs),
                           np.zeros(sum(len(p) for p in pts), dtype=np.int64))
        sigma = np.concatenate(sig)
        # a point next to an existing Gaussian is explained by it (wrong colour at most): no pile-up frame after frame
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(g.means.cpu().numpy()).query(cloud.points, k=1)
        keep = dist > np.maximum(1.5 * sigma, 0.003)
        cloud, sigma = cloud.select(keep), sigma[keep]
        if len(cloud) == 0:
            return 0
        # several views see the same hole: one Gaussian per 4 mm voxel, then a seeded cap
        key = np.floor(cloud.points / 0.004).astype(np.int64)
        _, first = np.unique(key, axis=0, return_index=True)
        if len(first) > max_new:
            first = np.random.default_rng(seed + len(self.records)).choice(first, max_new, replace=False)
        first = np.sort(first)
        cloud, sigma = cloud.select(first), sigma[first]
        n = len(cloud)
        dev = g.device
        new = GaussianSet(
            means=torch.as_tensor(cloud.points, dtype=g.means.dtype, device=dev),
            quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=dev).expand(n, 4).clone(),
            log_scales=torch.as_tensor(np.log(sigma), dtype=g.log_scales.dtype, device=dev)[:, None].expand(n, 3),
            colors=torch.as_tensor(cloud.colors, dtype=g.colors.dtype, device=dev),
            opacity_logits=torch.full((n,), float(np.log(0.8 / 0.2)), device=dev),
            object_ids=torch.as_tensor(cloud.labels, device=dev),
        )
        canon = cloud.points.astype(np.float64).copy()
        for k, obj in self.objects.items():  # express object points in the object's first-sight frame
            sel = cloud.labels == k
            if not sel.any():
                continue
            canon[sel] = (canon[sel] - obj.T[:3, 3]) @ obj.T[:3, :3]
            self._extend_model(k, canon[sel], cloud.points[sel])
        self._append(new, canon, new.quats, pending=True)
        self._rerecord()
        return n

    def _extend_model(self, k: int, canonical_pts: np.ndarray, world_pts: np.ndarray) -> None:
        """Object ``k``'s ICP model takes newly observed surface points (canonical frame), kept at ``model_voxel``."""
        import open3d as o3d

        if k not in self._model or len(canonical_pts) < 3:
            return
        mp, mn = self._model[k]
        R = self.objects[k].T[:3, :3]
        normals = estimate_normals(world_pts, k=min(12, len(world_pts)), cameras=self.cameras) @ R  # world -> canon
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.concatenate([mp, canonical_pts])))
        pc.normals = o3d.utility.Vector3dVector(np.concatenate([mn, normals]))
        if self.cfg.model_voxel > 0:
            pc = pc.voxel_down_sample(self.cfg.model_voxel)
        nrm = np.asarray(pc.normals)
        self._model[k] = (np.asarray(pc.points).copy(), nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True),
                                                                          1e-12))

    # ------------------------------------------------------------------ outputs
    def record(self, stamp_ns: int) -> None:
        """Add the current state to the trajectories (if ``keep_trajectories``)."""
        if not self.cfg.keep_trajectories:
            return
        g = self.gaussians.detach()
        q = g.quats
        self.records.append(_Record(
            int(stamp_ns), g.particle_ids.cpu().numpy().astype(np.int64).copy(),
            g.object_ids.cpu().numpy().astype(np.int64).copy(), g.means.cpu().numpy().astype(np.float32).copy(),
            (q / q.norm(dim=1, keepdim=True)).cpu().numpy().astype(np.float32),
        ))  # fmt: skip

    def _rerecord(self) -> None:
        """The last trajectory sample becomes the current set (Gaussians added or removed after it was taken)."""
        if self.records and self.records[-1].stamp_ns == self.now_ns:
            self.records.pop()
            self.record(self.now_ns)

    def object_poses(self) -> list[ObjectPose]:
        """Per object: its first-sight Gaussian centroid moved by the rigid pose, and the pose's rotation."""
        out = []
        ids = self.gaussians.object_ids.cpu().numpy()
        for k, obj in sorted(self.objects.items()):
            if not (ids == k).any():
                continue
            out.append(ObjectPose(k, obj.position().astype(np.float64), matrix_to_quat_wxyz(obj.T[:3, :3])))
        return out

    def trajectories(self) -> dict[str, np.ndarray]:
        """positions [T,N,3], quats [T,N,4] over every particle that ever existed (columns by particle id, i.e. by
        birth; NaN while a particle did not exist: before it was added, after it was pruned or its object removed),
        object_ids [N] (each particle's last), particle_ids [N], stamps [T] ns."""
        if not self.records:
            return {"positions": np.zeros((0, 0, 3), np.float32), "quats": np.zeros((0, 0, 4), np.float32),
                    "object_ids": np.zeros(0, np.int64), "particle_ids": np.zeros(0, np.int64),
                    "stamps": np.zeros(0, np.int64)}
        pids = np.unique(np.concatenate([r.particle_ids for r in self.records]))
        T, n = len(self.records), len(pids)
        pos = np.full((T, n, 3), np.nan, dtype=np.float32)
        quat = np.full((T, n, 4), np.nan, dtype=np.float32)
        oids = np.zeros(n, dtype=np.int64)
        for t, r in enumerate(self.records):
            col = np.searchsorted(pids, r.particle_ids)
            pos[t, col] = r.positions
            quat[t, col] = r.quats
            oids[col] = r.object_ids
        return {"positions": pos, "quats": quat, "object_ids": oids, "particle_ids": pids,
                "stamps": np.asarray([r.stamp_ns for r in self.records], dtype=np.int64)}
