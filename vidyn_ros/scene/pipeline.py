"""SceneEstimator: what the scene node, ``vidyn track`` and ``vidyn eval-scene`` call.

First frame -> initialise (fuse, downsample to the budget, optimise, vote ids); every later frame -> track.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from vidyn_ros.types import CameraModel, GaussianSet, MultiViewFrame, ObjectPose

from .init import (
    FitConfig,
    estimate_background,
    fit_gaussians,
    fuse_views,
    init_gaussians,
    make_targets,
    split_budget,
)
from .track import TrackConfig, Tracker

log = logging.getLogger(__name__)


@dataclass
class SceneConfig:
    """Scene estimation parameters (the scene node exposes the same names as ROS parameters)."""

    device: str = "cpu"  # torch device: cpu, cuda, cuda:1 ...
    backend: str = "auto"  # renderer backend: auto (gsplat on CUDA), torch, gsplat
    budget: int = 5000  # number of Gaussians at initialisation
    object_share: float = 0.5  # fraction of the budget that goes to objects (mask id > 0)
    downscale: int = 1  # integer image downscale for rendering losses (4: 640x480 -> 160x120)
    init_iters: int = 60  # optimisation steps at initialisation
    iters_per_frame: int = 0  # per-Gaussian refinement steps per tracked frame
    estimate_background: bool = True  # background colour = median colour of pixels without depth
    densify_every: int = 5  # add Gaussians for unexplained observed surfaces every n tracked frames (0 = never)
    densify_max: int = 300  # at most this many new Gaussians per densification
    vote_ids: bool = True  # cross-view id vote after the initial optimisation (needs masks)
    # a view votes only where a Gaussian's best Γ reaches this; 0.001 = the paper's rule (deviation: docs/scene.md)
    vote_min_contribution: float = 0.05
    vote_prior_weight: float = 0.0  # extra votes for the pixel label a Gaussian was made from (0: paper's rule)
    # life cycle over long runs (scene/track.py)
    max_gaussians: int = 0  # cap on the Gaussian count kept by pruning (0: 1.5 x budget)
    remove_after_s: float = 5.0  # an object not seen for this long [s] is removed with its Gaussians (0: never)
    prune_unseen_s: float = 10.0  # Gaussians not seen for this long [s] while their object is seen are pruned
    keep_trajectories: bool = True  # keep per-frame Gaussian positions (vidyn track); a live node turns it off
    seed: int = 0
    fit: FitConfig = field(default_factory=FitConfig)
    track: TrackConfig = field(default_factory=TrackConfig)


# scene node parameter -> SceneConfig field, where the names differ (others: same name)
_PARAM_TO_FIELD = {"image_downscale": "downscale"}


def scene_config_from_params(params: Mapping[str, Any]) -> SceneConfig:
    """A SceneConfig from scene-node parameters (a graph YAML's ``scene`` entry or the node's declared values):
    one mapping for the node and for the offline tools that reproduce it (``scene.deployed``). Parameters that are
    not scene settings (cameras, topics, ...) are ignored."""
    names = {f.name for f in fields(SceneConfig)} - {"fit", "track"}
    kw = {}
    for key, value in params.items():
        name = _PARAM_TO_FIELD.get(key, key)
        if name in names:
            kw[name] = value
    return SceneConfig(**kw)


@dataclass
class SceneUpdate:
    """Result of one ``SceneEstimator.update``."""

    stamp_ns: int
    gaussians: GaussianSet  # a snapshot (its own tensors): later updates do not change it
    objects: list[ObjectPose]  # estimated centroid + rotation per object
    visible: dict[int, bool]  # object id -> seen in this frame
    loss: float  # last optimisation loss (init) or refinement loss (track); NaN if none
    stats: dict[str, float]
    seconds: float  # wall time of this update
    initialised: bool  # True on the frame that initialised the scene


class SceneEstimator:
    """Live Gaussian scene from multi-view RGB-D frames (library API; no ROS)."""

    def __init__(self, cfg: SceneConfig | None = None) -> None:
        self.cfg = cfg or SceneConfig()
        self.tracker: Tracker | None = None
        self.init_losses: list[float] = []
        self.background: tuple[float, float, float] = tuple(self.cfg.fit.background)
        self.n_updates = 0

    @property
    def gaussians(self) -> GaussianSet | None:
        """The live scene (changed in place by the next update; ``SceneUpdate.gaussians`` is a snapshot)."""
        return self.tracker.gaussians if self.tracker is not None else None

    def reset(self) -> None:
        self.tracker = None
        self.n_updates = 0

    def initialise(self, frame: MultiViewFrame, progress: bool = False) -> GaussianSet:
        """Build the scene from one frame (fuse -> downsample -> init -> optimise -> vote ids)."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        cloud = fuse_views(frame, stride=cfg.downscale)
        if len(cloud) == 0:
            from vidyn_ros.errors import VidynError

            raise VidynError("scene initialisation: no valid depth in any view")
        full = cloud
        cloud = split_budget(cloud, cfg.budget, cfg.object_share, seed=cfg.seed)
        g = init_gaussians(cloud, frame.cameras, device=cfg.device)
        targets = make_targets(frame, cfg.downscale, cfg.device)
        if cfg.estimate_background:
            self.background = estimate_background(frame)
        if cfg.init_iters > 0:
            fit = FitConfig(**{**cfg.fit.__dict__, "iterations": cfg.init_iters, "background": self.background})
            g, self.init_losses = fit_gaussians(g, targets, fit, backend=cfg.backend, progress=progress)
        if cfg.vote_ids and targets.mask is not None:
            from .voting import vote_object_ids

            g.object_ids = vote_object_ids(g, targets.cameras, targets.mask, backend=cfg.backend,
                                           min_contribution=cfg.vote_min_contribution,
                                           prior_weight=cfg.vote_prior_weight)
        track_cfg = replace(cfg.track, fuse_stride=cfg.downscale, remove_after_s=cfg.remove_after_s,
                            prune_unseen_s=cfg.prune_unseen_s, keep_trajectories=cfg.keep_trajectories,
                            max_gaussians=cfg.max_gaussians or round(1.5 * cfg.budget))
        self.tracker = Tracker(g, track_cfg, cameras=frame.cameras, model_cloud=full, stamp_ns=frame.stamp_ns)
        self.tracker.background = self.background
        self.tracker.record(frame.stamp_ns)
        return self.tracker.gaussians

    def update(self, frame: MultiViewFrame) -> SceneUpdate:
        """Initialise on the first frame, track on every later one."""
        t0 = time.perf_counter()
        _check_mask_ids(frame)
        init = self.tracker is None
        stats: dict[str, float] = {}
        if init:
            self.initialise(frame)
            loss = self.init_losses[-1] if self.init_losses else float("nan")
        else:
            assert self.tracker is not None
            cfg = self.cfg
            densify = cfg.densify_every > 0 and self.n_updates % cfg.densify_every == 0
            t = time.perf_counter()
            targets = make_targets(frame, cfg.downscale, cfg.device) if (cfg.iters_per_frame or densify) else None
            t_targets = (time.perf_counter() - t) * 1e3
            self.tracker.cfg.refine_iters = cfg.iters_per_frame
            stats = self.tracker.step(frame, targets, backend=cfg.backend)
            stats["t_targets_ms"] = t_targets
            if densify and targets is not None:  # every few frames: vote new Gaussians' ids, prune, densify
                stats.update(self.tracker.maintain(targets, cfg.densify_max, backend=cfg.backend, seed=cfg.seed))
            loss = stats.get("refine_loss", float("nan"))
        self.n_updates += 1
        assert self.tracker is not None
        t = time.perf_counter()
        # a snapshot: the tracker changes its own tensors in place on the next update, and a consumer keeping the
        # last three states (the dynamics model) must get three different states
        snapshot = self.tracker.gaussians.detach().clone()
        objects = self.tracker.object_poses()
        stats["t_snapshot_ms"] = (time.perf_counter() - t) * 1e3
        return SceneUpdate(
            stamp_ns=frame.stamp_ns,
            gaussians=snapshot,
            objects=objects,
            visible={k: o.visible for k, o in self.tracker.objects.items()},
            loss=float(loss),
            stats=stats,
            seconds=time.perf_counter() - t0,
            initialised=init,
        )

    @torch.no_grad()
    def render(self, cameras: list[CameraModel], background=None, reuse: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Render the current scene: (rgb uint8 [C,H,W,3], depth float32 [C,H,W] m). ``reuse``: on a frame whose
        maintenance already rendered these cameras, return that render (it lacks only the Gaussians densified or
        pruned after it): the scene node publishes it instead of rendering twice."""
        from vidyn_ros.render import render

        if self.tracker is None:
            raise RuntimeError("scene not initialised")
        from .track import camera_key

        bg = self.background if background is None else background
        last = self.tracker.last_render
        if reuse and background is None and last is not None and last[0] == self.tracker.now_ns and \
                last[1] == camera_key(cameras):
            out = last[2]  # this frame's maintenance render (before its few densified / pruned Gaussians)
        else:
            out = render(self.tracker.gaussians, cameras, background=bg, backend=self.cfg.backend)
        rgb = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        return rgb, out.depth.float().cpu().numpy()


def _check_mask_ids(frame: MultiViewFrame) -> None:
    """Object ids have one width end to end: the 16UC1 masks they arrive in (0..OBJECT_ID_MAX). A library caller's
    mask outside that range is refused here rather than truncated later (PointCloud2, PLY, marker ids)."""
    from vidyn_ros.errors import VidynError
    from vidyn_ros.types import OBJECT_ID_MAX

    for v in frame.views:
        if v.mask is not None and v.mask.size and (int(v.mask.min()) < 0 or int(v.mask.max()) > OBJECT_ID_MAX):
            raise VidynError(f"camera {v.camera.name}: mask ids must lie in 0..{OBJECT_ID_MAX} (the 16UC1 width of "
                             f"/<cam>/mask), got {int(v.mask.min())}..{int(v.mask.max())}")
