"""Scene initialisation from the first synchronised multi-view RGB-D frame.

fuse (back-project every view's depth to world points with colour and mask label) -> voxel-downsample to a Gaussian
budget (separate budgets for objects and background so small objects keep enough Gaussians) -> initialise
(colour = voxel mean, flat disks oriented by open3d normals, scale from neighbour spacing, opacity 0.8) ->
optimise with multi-view photometric (L1 + SSIM) and depth losses -> ids by cross-view vote.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidyn_ros.geometry import backproject
from vidyn_ros.types import CameraModel, GaussianSet, MultiViewFrame

log = logging.getLogger(__name__)


@dataclass
class FusedCloud:
    """Back-projected RGB-D points of all views (numpy).

    Attributes:
        points: [P, 3] world positions [m].
        colors: [P, 3] RGB in [0, 1].
        labels: [P] int64 instance id of the pixel each point came from (0 = background / no mask).
        view: [P] int64 index of the view each point came from.
    """

    points: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    view: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def select(self, keep: np.ndarray) -> FusedCloud:
        return FusedCloud(self.points[keep], self.colors[keep], self.labels[keep], self.view[keep])


def fuse_views(
    frame: MultiViewFrame, *, stride: int = 1, max_depth: float = 5.0, edge_threshold: float = 0.02
) -> FusedCloud:
    """Back-project every view of ``frame`` into one world-frame point cloud.

    Pixels with no depth, beyond ``max_depth`` or on a depth discontinuity (a neighbour differs by more than
    ``edge_threshold`` m: such "flying pixels" mix foreground and background) are dropped.
    """
    pts, cols, labs, views = [], [], [], []
    for ci, v in enumerate(frame.views):
        depth = v.depth[::stride, ::stride].astype(np.float32)
        K = v.camera.K.astype(np.float64).copy()
        K[:2] /= stride  # subsampled pixel (u, v) is original pixel (s*u, s*v): pure division, no half-pixel shift
        valid = (depth > 0) & (depth < max_depth)
        if edge_threshold > 0:
            valid &= _depth_edges(depth) < edge_threshold
        p = backproject(depth, K, v.camera.T_world_cam)[valid]
        pts.append(p)
        cols.append(v.color[::stride, ::stride][valid].astype(np.float32) / 255.0)
        mask = v.mask[::stride, ::stride] if v.mask is not None else np.zeros(depth.shape, np.int64)
        labs.append(mask[valid].astype(np.int64))
        views.append(np.full(len(p), ci, dtype=np.int64))
    return FusedCloud(np.concatenate(pts), np.concatenate(cols), np.concatenate(labs), np.concatenate(views))


def _depth_edges(depth: np.ndarray) -> np.ndarray:
    """Per pixel: largest absolute depth difference to a 4-neighbour [m] (0 at isolated valid pixels)."""
    d = np.pad(depth, 1, mode="edge")
    c = d[1:-1, 1:-1]
    diffs = [np.abs(c - d[1:-1, :-2]), np.abs(c - d[1:-1, 2:]), np.abs(c - d[:-2, 1:-1]), np.abs(c - d[2:, 1:-1])]
    nbrs = [d[1:-1, :-2], d[1:-1, 2:], d[:-2, 1:-1], d[2:, 1:-1]]
    # a missing neighbour (0) is not an edge
    return np.max([np.where(n > 0, x, 0.0) for x, n in zip(diffs, nbrs, strict=True)], axis=0)


def voxel_downsample(cloud: FusedCloud, voxel: float) -> FusedCloud:
    """Average points and colours per voxel; the label is the majority label of the voxel's points."""
    if len(cloud) == 0:
        return cloud
    key = np.floor(cloud.points / voxel).astype(np.int64)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    n = len(counts)
    pts = np.zeros((n, 3))
    np.add.at(pts, inv, cloud.points)
    cols = np.zeros((n, 3))
    np.add.at(cols, inv, cloud.colors)
    pts /= counts[:, None]
    cols /= counts[:, None]
    # majority label per voxel: count (voxel, label) pairs, keep the most frequent per voxel; over the labels that
    # occur, not 0..max label (a segmenter's 16-bit ids would make a [voxels, 65536] table)
    uniq_lab, lab = np.unique(cloud.labels, return_inverse=True)
    votes = np.zeros((n, len(uniq_lab)), dtype=np.int64)
    np.add.at(votes, (inv, lab.reshape(-1)), 1)
    labels = uniq_lab[votes.argmax(axis=1)]
    view = np.zeros(n, dtype=np.int64)
    view[inv] = cloud.view
    return FusedCloud(pts, cols.astype(np.float32), labels.astype(np.int64), view)


def downsample_to_budget(cloud: FusedCloud, budget: int, seed: int = 0, iters: int = 18) -> FusedCloud:
    """Voxel-downsample to at most ``budget`` points, with the voxel size found by bisection (then a seeded random
    subsample if the bisection stops just above the budget)."""
    if len(cloud) <= budget or budget <= 0:
        return cloud if budget > 0 else cloud.select(np.zeros(len(cloud), bool))
    extent = float(np.max(cloud.points.max(0) - cloud.points.min(0))) + 1e-6
    lo, hi = 1e-5, extent
    best = None
    for _ in range(iters):
        mid = np.sqrt(lo * hi)
        count = len(np.unique(np.floor(cloud.points / mid).astype(np.int64), axis=0))
        if count > budget:
            lo = mid
        else:
            hi = mid
            best = mid
            if count > 0.97 * budget:
                break
    out = voxel_downsample(cloud, best if best is not None else hi)
    if len(out) > budget:
        keep = np.random.default_rng(seed).choice(len(out), budget, replace=False)
        out = out.select(np.sort(keep))
    return out


def split_budget(cloud: FusedCloud, budget: int, object_share: float, seed: int = 0) -> FusedCloud:
    """Downsample objects (label > 0) and background separately: objects get up to ``object_share`` of the budget,
    each object in proportion to its point count but at least 1/4 of an equal share (small objects stay trackable)."""
    is_obj = cloud.labels > 0
    obj_ids = np.unique(cloud.labels[is_obj])
    n_obj_pts = int(is_obj.sum())
    obj_budget = min(round(budget * object_share), n_obj_pts) if len(obj_ids) else 0
    parts = []
    if len(obj_ids):
        counts = np.array([(cloud.labels == k).sum() for k in obj_ids], dtype=np.float64)
        share = np.maximum(counts / counts.sum(), 0.25 / len(obj_ids))
        share /= share.sum()
        for k, s in zip(obj_ids, share, strict=True):
            parts.append(downsample_to_budget(cloud.select(cloud.labels == k), max(int(obj_budget * s), 8), seed))
    used = sum(len(p) for p in parts)
    parts.append(downsample_to_budget(cloud.select(~is_obj), max(budget - used, 0), seed))
    return FusedCloud(
        np.concatenate([p.points for p in parts]),
        np.concatenate([p.colors for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.view for p in parts]),
    )


def estimate_normals(points: np.ndarray, k: int = 12, cameras: Sequence[CameraModel] | None = None) -> np.ndarray:
    """[P, 3] unit normals by local PCA (open3d), oriented towards the cameras' centroid when cameras are given."""
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=k))
    n = np.asarray(pc.normals).copy()
    if cameras:
        eye = np.mean([c.T_world_cam[:3, 3] for c in cameras], axis=0)
        flip = np.einsum("ij,ij->i", n, eye - points) < 0
        n[flip] *= -1
    return n


def _quat_from_z_to(normals: np.ndarray) -> np.ndarray:
    """[P, 3] unit vectors -> [P, 4] (w, x, y, z) rotating +z onto them (so a flat disk's thin axis is the normal)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, normals)
    cos = np.clip(normals @ z, -1.0, 1.0)
    q = np.concatenate([1.0 + cos[:, None], axis], axis=1)
    antiparallel = q[:, 0] < 1e-8
    q[antiparallel] = np.array([0.0, 1.0, 0.0, 0.0])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def init_gaussians(
    cloud: FusedCloud,
    cameras: Sequence[CameraModel] | None = None,
    *,
    opacity: float = 0.8,
    flatness: float = 0.2,
    device: str = "cpu",
) -> GaussianSet:
    """Gaussians from downsampled points: colour = point colour; flat disks (thin axis along the normal,
    ``flatness`` × the in-plane size) whose in-plane σ is the mean distance to the 3 nearest neighbours."""
    from scipy.spatial import cKDTree

    pts = cloud.points
    n = len(pts)
    if n >= 4:
        dist, _ = cKDTree(pts).query(pts, k=4)
        sigma = np.clip(dist[:, 1:].mean(axis=1), 1e-4, None)
        normals = estimate_normals(pts, cameras=cameras)
        quats = _quat_from_z_to(normals)
    else:
        sigma = np.full(n, 0.005)
        quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    scales = np.stack([sigma, sigma, sigma * flatness], axis=1)
    t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt, device=device)  # noqa: E731
    return GaussianSet(
        means=t(pts),
        quats=t(quats),
        log_scales=t(np.log(scales)),
        colors=t(np.clip(cloud.colors, 0.0, 1.0)),
        opacity_logits=torch.full((n,), float(np.log(opacity / (1 - opacity))), device=device),
        object_ids=t(cloud.labels, torch.long),
    )


def estimate_background(frame: MultiViewFrame) -> tuple[float, float, float]:
    """Background colour behind the Gaussians: the median colour of pixels without depth (sky / far wall), black
    when every pixel has depth."""
    cols = [v.color[v.depth <= 0] for v in frame.views]
    cols = np.concatenate(cols) if cols else np.zeros((0, 3))
    if len(cols) < 10:
        return (0.0, 0.0, 0.0)
    return tuple(float(c) for c in np.median(cols, axis=0) / 255.0)


@dataclass
class Targets:
    """Observed views at the working resolution (torch). color [C,h,w,3] in [0,1]; depth [C,h,w] m; mask [C,h,w]."""

    cameras: list[CameraModel]
    color: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor | None


def make_targets(frame: MultiViewFrame, downscale: int = 1, device: str = "cpu") -> Targets:
    """Stack the views and shrink them by an integer ``downscale`` (colour: area mean; depth: mean of valid pixels;
    mask: the label at each block's centre pixel, so ids are never blended and sit where ``CameraModel.scaled`` puts
    the scaled pixel centres). Non-finite depth (NaN / inf from a driver or a library caller)
    counts as "no data" (0) like on the wire, so it reaches neither losses nor densification."""
    t = frame.to_torch(device)
    color, depth, mask = t["color"], t["depth"], t.get("mask")
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
    cams = list(frame.cameras)
    if downscale > 1:
        s = downscale
        color = F.avg_pool2d(color.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
        valid = (depth > 0).float().unsqueeze(1)
        num = F.avg_pool2d(depth.unsqueeze(1) * valid, s)
        den = F.avg_pool2d(valid, s)
        depth = torch.where(den > 0.5, num / den.clamp_min(1e-6), torch.zeros_like(num)).squeeze(1)
        if mask is not None:
            mask = downscale_labels(mask, s)
        cams = [c.scaled(1.0 / s) for c in cams]
    return Targets(cams, color.contiguous(), depth.contiguous(), mask)


def downscale_labels(labels: torch.Tensor, s: int) -> torch.Tensor:
    """[C, H, W] integer labels -> [C, H // s, W // s] by nearest-neighbour sampling at each scaled pixel's centre.

    A scaled pixel covers an s x s block and is centred on it (``CameraModel.scaled``): its centre lies at original
    pixel (s - 1) / 2 within the block, so the label is read from pixel s // 2 (exact for odd s, half an original
    pixel off for even s). Reading the block's top-left pixel instead shifted every label by (s - 1) / 2 original
    pixels against the colour and depth (1.5 px at s = 4). Labels are never blended."""
    h, w = labels.shape[1] // s, labels.shape[2] // s
    o = s // 2
    return labels[:, o : o + h * s : s, o : o + w * s : s]


@dataclass
class FitConfig:
    """Optimiser settings for fitting Gaussians to views."""

    iterations: int = 60  # Adam steps
    lr_means: float = 5e-4  # [m] per step, roughly
    lr_colors: float = 0.05
    lr_scales: float = 0.02  # log-scale
    lr_opacity: float = 0.1  # logit
    lr_quats: float = 0.002
    lambda_ssim: float = 0.2  # weight of (1 - SSIM) in the photometric loss
    lambda_depth: float = 1.0  # weight of the depth L1 [m] loss
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)


def fit_gaussians(
    gaussians: GaussianSet,
    targets: Targets,
    cfg: FitConfig,
    *,
    trainable: torch.Tensor | None = None,
    backend: str = "auto",
    regulariser=None,
    progress: bool = False,
) -> tuple[GaussianSet, list[float]]:
    """Optimise all Gaussian parameters against the target views with (1−λ)L1 + λ(1−SSIM) + λ_d·depth.

    Args:
        trainable: [N] bool, only these Gaussians change (others are fixed but still render); None = all.
        regulariser: optional callable(means [N,3]) -> scalar loss added to the objective.
    Returns:
        (optimised copy, loss per iteration).
    """
    from vidyn_ros.render import render

    from .losses import depth_loss, photometric_loss

    g = gaussians.detach().clone()
    params = {
        "means": (g.means, cfg.lr_means),
        "colors": (g.colors, cfg.lr_colors),
        "log_scales": (g.log_scales, cfg.lr_scales),
        "opacity_logits": (g.opacity_logits, cfg.lr_opacity),
        "quats": (g.quats, cfg.lr_quats),
    }
    for p, _ in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in params.values()], eps=1e-15)
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=g.device)
    losses: list[float] = []
    it = range(cfg.iterations)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="fit Gaussians", leave=False)
    for _ in it:
        opt.zero_grad(set_to_none=True)
        out = render(g, targets.cameras, background=bg, backend=backend)
        loss = photometric_loss(out.rgb, targets.color, cfg.lambda_ssim)
        if cfg.lambda_depth > 0:
            loss = loss + cfg.lambda_depth * depth_loss(out.depth, targets.depth)
        if regulariser is not None:
            loss = loss + regulariser(g.means)
        loss.backward()
        if trainable is not None:
            for p, _ in params.values():
                if p.grad is not None:
                    p.grad[~trainable] = 0.0
        opt.step()
        with torch.no_grad():
            g.colors.clamp_(0.0, 1.0)
            g.log_scales.clamp_(max=float(np.log(0.05)))  # no Gaussian wider than 5 cm σ: keeps renders local
        losses.append(float(loss.detach()))
    return g.detach(), losses
