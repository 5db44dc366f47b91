"""Per-frame tracking of a Gaussian scene: per-object rigid SE(3) step + short per-Gaussian refinement.

Each object k carries a rigid pose T_k (4x4, world <- object's first-seen frame) and every Gaussian i of it a canonical
position c_i (where it was when the object was first seen) and canonical rotation. Per new frame:

1. **Warm start** by constant velocity: T_pred = (T_k T_{k,prev}^{-1}) T_k.
2. **Rigid step** by point-to-plane ICP (open3d): the object's observed points (its mask pixels' depth, back-projected
   from every view) are registered onto the object's Gaussians at T_pred, whose normals come from the canonical
   surface. Observed -> model is the right direction: every observed point lies on the model surface, while the model
   also has parts that no camera sees now.
3. **Refinement** (optional, ``refine_iters``): a few Adam steps on the object Gaussians' positions against the rendered
   colour + depth of the current frame, with a local-rigidity regulariser (neighbours' offsets must follow the
   object's rotation: ||(x_j − x_i) − R_k (c_j − c_i)||, as in dynamic 3D Gaussian tracking) and an isometry term.

Objects whose observed point count drops below ``min_points`` are marked not visible and hold their last pose; an
instance id that appears for the first time spawns new Gaussians from its observed points. The background (id 0) is
static. Per-Gaussian positions and rotations per frame are kept as trajectories (the dynamics' pseudo labels).
"""

from __future__ import annotations

import logging
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
    model_voxel: float = 0.003  # [m] voxel of each object's ICP model cloud (its points in the first frame)
    icp_max_distance: float = 0.02  # [m] correspondence gate for ICP
    icp_iterations: int = 30
    relocalise_fitness: float = 0.6  # below this ICP fitness, also try principal-axis guesses (object lost)
    coarse_factor: float = 3.0  # the coarse ICP pass gates correspondences at this multiple of icp_max_distance
    min_points: int = 30  # observed points below which an object counts as not visible
    min_fitness: float = 0.3  # ICP result accepted only if this fraction of observed points found a partner
    constant_velocity: bool = True  # warm start from the last frame-to-frame motion
    refine_iters: int = 0  # per-Gaussian refinement steps per frame (rendering: expensive on CPU)
    refine_lr: float = 5e-4  # [m]
    refine_lr_colors: float = 0.03  # colours (opacity logits: twice this)
    lambda_rigid: float = 10.0  # local-rigidity weight
    lambda_iso: float = 10.0  # isometry weight
    knn: int = 8  # neighbours for the rigidity terms
    new_object_budget: int = 400  # Gaussians for an object that enters the view


@dataclass
class ObjectTrack:
    """State of one tracked object."""

    object_id: int
    T: np.ndarray = field(default_factory=lambda: np.eye(4))  # world <- canonical
    T_prev: np.ndarray = field(default_factory=lambda: np.eye(4))
    visible: bool = True
    fitness: float = 1.0
    rmse: float = 0.0
    n_observed: int = 0
    centroid: np.ndarray = field(default_factory=lambda: np.zeros(3))  # canonical centroid of its first Gaussians


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


class Tracker:
    """Tracks the objects of an initialised Gaussian scene through new frames (see module docstring).

    Args:
        gaussians: the initialised scene (world frame), object ids set.
        cfg: tracking settings.
        cameras: the rig's cameras (orients normals).
        model_cloud: the fused observation the scene was initialised from; each object's points in it (voxel
            ``model_voxel``) are the ICP model. Registering raw observations onto raw observations avoids the bias of
            registering them onto optimised Gaussian centres. None: the Gaussian centres are the model.
    """

    def __init__(
        self,
        gaussians: GaussianSet,
        cfg: TrackConfig | None = None,
        cameras=None,
        model_cloud: FusedCloud | None = None,
    ) -> None:
        self.cfg = cfg or TrackConfig()
        self.background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # colour behind the Gaussians (refinement)
        self.cameras = cameras
        self.gaussians = gaussians.detach().clone()
        # stable particle ids: appended Gaussians get fresh ones, never reused (snapshots and files can be aligned)
        pids = self.gaussians.particle_ids
        self._next_particle_id = int(pids.max()) + 1 if len(pids) else 0
        self.canonical = self.gaussians.means.detach().cpu().numpy().astype(np.float64)  # [N,3]
        self.canonical_quats = self.gaussians.quats.detach().clone()
        self.normals = np.zeros_like(self.canonical)
        self.objects: dict[int, ObjectTrack] = {}
        self._knn: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._model: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> canonical ICP model points, normals
        ids = self.gaussians.object_ids.cpu().numpy()
        for k in np.unique(ids[ids > 0]):
            obs = model_cloud.select(model_cloud.labels == k) if model_cloud is not None else None
            self._add_object(int(k), np.flatnonzero(ids == k), obs)
        self.positions: list[np.ndarray] = []
        self.quats: list[np.ndarray] = []
        self.stamps: list[int] = []

    # ------------------------------------------------------------------ objects
    def _add_object(self, k: int, idx: np.ndarray, observed: FusedCloud | None = None) -> None:
        import open3d as o3d
        from scipy.spatial import cKDTree

        self.objects[k] = ObjectTrack(k)
        pts = self.canonical[idx]
        # the reported centroid is this first-sight centroid carried by the rigid pose: Gaussians added later
        # (densification) on one side of the object must not move it
        self.objects[k].centroid = pts.mean(axis=0) if len(pts) else np.zeros(3)
        if len(idx) >= 4:
            self.normals[idx] = estimate_normals(pts, k=min(12, len(idx)), cameras=self.cameras)
            nn = min(self.cfg.knn, len(idx) - 1)
            _, nbr = cKDTree(pts).query(pts, k=nn + 1)
            self._knn[k] = (idx, idx[nbr[:, 1:]])  # global indices of each Gaussian and of its neighbours
        if observed is not None and len(observed) >= self.cfg.min_points:
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(observed.points.astype(np.float64)))
            if self.cfg.model_voxel > 0:
                pc = pc.voxel_down_sample(self.cfg.model_voxel)
            mp = np.asarray(pc.points).copy()
            self._model[k] = (mp, estimate_normals(mp, cameras=self.cameras))
        elif len(idx) >= 4:
            self._model[k] = (pts.copy(), self.normals[idx].copy())

    def _new_particle_ids(self, n: int, device) -> torch.Tensor:
        ids = torch.arange(self._next_particle_id, self._next_particle_id + n, dtype=torch.int64, device=device)
        self._next_particle_id += n
        return ids

    def object_indices(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.gaussians.object_ids.cpu().numpy() == k)

    def _spawn(self, k: int, cloud: FusedCloud) -> None:
        """A new instance id: Gaussians from its observed points, appended to the scene."""
        sub = downsample_to_budget(cloud, self.cfg.new_object_budget)
        new = init_gaussians(sub, self.cameras, device=str(self.gaussians.device))
        new.object_ids[:] = k
        new.particle_ids = self._new_particle_ids(len(new), new.device)
        g = self.gaussians
        self.gaussians = GaussianSet(
            *(torch.cat([getattr(g, f), getattr(new, f)]) for f in
              ("means", "quats", "log_scales", "colors", "opacity_logits", "object_ids", "particle_ids"))
        )  # fmt: skip
        start = len(self.canonical)
        self.canonical = np.concatenate([self.canonical, sub.points.astype(np.float64)])
        self.canonical_quats = torch.cat([self.canonical_quats, new.quats])
        self.normals = np.concatenate([self.normals, np.zeros((len(sub), 3))])
        self._add_object(k, np.arange(start, start + len(sub)), cloud)
        log.info("object %d entered the view: %d new Gaussians", k, len(sub))

    # ------------------------------------------------------------------ per frame
    def step(self, frame: MultiViewFrame, targets: Targets | None = None, backend: str = "auto") -> dict[str, float]:
        """Track one new frame. ``targets`` (the rendered-resolution views) are needed only when refining.

        Returns a dict of statistics (icp rmse / fitness means, refinement loss, number of visible objects).
        """
        cfg = self.cfg
        cloud = fuse_views(frame, stride=cfg.fuse_stride)
        stats: dict[str, float] = {}
        rmses, fits = [], []
        for k in np.unique(cloud.labels[cloud.labels > 0]):
            if int(k) not in self.objects and (cloud.labels == k).sum() >= cfg.min_points:
                self._spawn(int(k), cloud.select(cloud.labels == k))
        for k, obj in self.objects.items():
            obs = cloud.select(cloud.labels == k)
            obj.n_observed = len(obs)
            T_pred = obj.T @ np.linalg.inv(obj.T_prev) @ obj.T if cfg.constant_velocity else obj.T.copy()
            if len(obs) < cfg.min_points:
                obj.visible = False
                obj.T_prev = obj.T.copy()  # hold still while unseen: no velocity to extrapolate with
                continue
            obj.visible = True
            T_new, fit, rmse = self._register(k, obs.points, [T_pred, obj.T])
            if fit < cfg.min_fitness:
                log.debug("object %d: ICP fitness %.2f below %.2f, keeping the prediction", k, fit, cfg.min_fitness)
                T_new = T_pred
            obj.T_prev, obj.T = obj.T, T_new
            obj.fitness, obj.rmse = fit, rmse
            fits.append(fit)
            rmses.append(rmse)
        self._apply_poses()
        if cfg.refine_iters > 0 and targets is not None:
            stats["refine_loss"] = self._refine(targets, backend)
        stats["icp_rmse_m"] = float(np.mean(rmses)) if rmses else float("nan")
        stats["icp_fitness"] = float(np.mean(fits)) if fits else float("nan")
        stats["visible_objects"] = float(sum(o.visible for o in self.objects.values()))
        self.record(frame.stamp_ns)
        return stats

    def _register(self, k: int, observed: np.ndarray, inits: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
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
        if best[1] < cfg.relocalise_fitness and mp is not None:
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

    # ------------------------------------------------------------------ densification
    @torch.no_grad()
    def densify(self, targets: Targets, max_new: int = 300, depth_gap: float = 0.02, color_gap: float = 0.15,
                backend: str = "auto", seed: int = 0) -> int:
        """Add Gaussians where the views see something the scene does not explain: surfaces uncovered since the
        first frame (the table under a pushed block, the inner faces of a toppled stack). A pixel needs one when it
        has depth and the render there is transparent (alpha < 0.5), farther than the observation by ``depth_gap``
        or off in colour by ``color_gap`` (mean absolute RGB error: a face that was hidden, e.g. between two cubes).
        New Gaussians are small isotropic disks with the pixel's colour and mask id (ids the tracker does not know
        yet are left to the spawn logic), attached to their object's rigid pose. Returns how many were added.
        """
        from vidyn_ros.geometry import backproject
        from vidyn_ros.render import render

        g = self.gaussians
        out = render(g, targets.cameras, background=self.background, backend=backend)
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
            first = np.random.default_rng(seed + len(self.positions)).choice(first, max_new, replace=False)
        first = np.sort(first)
        cloud, sigma = cloud.select(first), sigma[first]
        n = len(cloud)
        dev = g.device
        new_ids = torch.as_tensor(cloud.labels, device=dev)
        self.gaussians = GaussianSet(
            means=torch.cat([g.means, torch.as_tensor(cloud.points, dtype=g.means.dtype, device=dev)]),
            quats=torch.cat([g.quats, torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=dev).expand(n, 4)]),
            log_scales=torch.cat([g.log_scales, torch.as_tensor(np.log(sigma), dtype=g.log_scales.dtype,
                                                                device=dev)[:, None].expand(n, 3)]),
            colors=torch.cat([g.colors, torch.as_tensor(cloud.colors, dtype=g.colors.dtype, device=dev)]),
            opacity_logits=torch.cat([g.opacity_logits, torch.full((n,), float(np.log(0.8 / 0.2)), device=dev)]),
            object_ids=torch.cat([g.object_ids, new_ids]),
            particle_ids=torch.cat([g.particle_ids, self._new_particle_ids(n, dev)]),
        )
        canon = cloud.points.astype(np.float64).copy()
        for k, obj in self.objects.items():  # express object points in the object's first-sight frame
            sel = cloud.labels == k
            canon[sel] = (canon[sel] - obj.T[:3, 3]) @ obj.T[:3, :3]
        self.canonical = np.concatenate([self.canonical, canon])
        self.canonical_quats = torch.cat([self.canonical_quats, torch.tensor([[1.0, 0.0, 0.0, 0.0]],
                                                                             device=dev).expand(n, 4)])
        self.normals = np.concatenate([self.normals, np.zeros((n, 3))])
        # the rows of the last trajectory sample must match the current set: the new ones existed from now on
        if self.positions:
            self.positions[-1] = self.gaussians.means.cpu().numpy().astype(np.float32).copy()
            q = self.gaussians.quats
            self.quats[-1] = (q / q.norm(dim=1, keepdim=True)).cpu().numpy().astype(np.float32)
        return n

    # ------------------------------------------------------------------ outputs
    def record(self, stamp_ns: int) -> None:
        self.positions.append(self.gaussians.means.detach().cpu().numpy().astype(np.float32).copy())
        q = self.gaussians.quats.detach()
        self.quats.append((q / q.norm(dim=1, keepdim=True)).cpu().numpy().astype(np.float32))
        self.stamps.append(int(stamp_ns))

    def object_poses(self) -> list[ObjectPose]:
        """Per object: its first-sight Gaussian centroid moved by the rigid pose, and the pose's rotation."""
        out = []
        ids = self.gaussians.object_ids.cpu().numpy()
        for k, obj in sorted(self.objects.items()):
            if not (ids == k).any():
                continue
            c = obj.T[:3, :3] @ obj.centroid + obj.T[:3, 3]
            out.append(ObjectPose(k, c.astype(np.float64), matrix_to_quat_wxyz(obj.T[:3, :3])))
        return out

    def trajectories(self) -> dict[str, np.ndarray]:
        """positions [T,N,3], quats [T,N,4] (NaN before a Gaussian existed), object_ids [N], particle_ids [N],
        stamps [T] ns."""
        n = len(self.gaussians)
        T = len(self.positions)
        pos = np.full((T, n, 3), np.nan, dtype=np.float32)
        quat = np.full((T, n, 4), np.nan, dtype=np.float32)
        for t, (p, q) in enumerate(zip(self.positions, self.quats, strict=True)):
            pos[t, : len(p)] = p
            quat[t, : len(q)] = q
        return {
            "positions": pos,
            "quats": quat,
            "object_ids": self.gaussians.object_ids.cpu().numpy().astype(np.int64),
            "particle_ids": self.gaussians.particle_ids.cpu().numpy().astype(np.int64),
            "stamps": np.asarray(self.stamps, dtype=np.int64),
        }
