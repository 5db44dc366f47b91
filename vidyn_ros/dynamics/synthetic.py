"""Small synthetic particle scenes for tests and benchmarks (no simulator, no tracking; deterministic).

``tabletop_state(n)``: a table patch (object 0) and cubes of particles (objects 1..), the first sliding towards the
second, as a ``ParticleState`` with a 3-step history. ``synthetic_episode(...)``: the same scene as an ``Episode``
with analytic trajectories (the slider stops at the second cube and pushes it: a collision constant velocity
cannot predict) and flat-coloured rendered frames, for training-loop tests.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vidyn_ros.types import CameraModel, GaussianSet

from .data import Episode
from .state import HISTORY, ParticleState

DT = 1.0 / 30


def tabletop_gaussians(n: int, n_objects: int = 3, seed: int = 0, cube: float = 0.04,
                       table_half: float = 0.2) -> GaussianSet:
    """``n`` Gaussians: half on a table patch (id 0), half on ``n_objects`` cubes (ids 1..) in a row along x."""
    g = torch.Generator().manual_seed(seed)
    n_obj = n // 2
    n_tab = n - n_obj
    tab = torch.cat([(torch.rand(n_tab, 2, generator=g) * 2 - 1) * table_half, torch.zeros(n_tab, 1)], dim=1)
    per = [n_obj // n_objects + (1 if i < n_obj % n_objects else 0) for i in range(n_objects)]
    pts, ids = [tab], [torch.zeros(n_tab, dtype=torch.long)]
    for k, m in enumerate(per):
        centre = torch.tensor([-0.08 + 0.08 * k, 0.0, cube / 2])
        # points on the cube's surface: a random face per point
        u = torch.rand(m, 3, generator=g) - 0.5
        face = torch.randint(0, 3, (m,), generator=g)
        u[torch.arange(m), face] = torch.sign(u[torch.arange(m), face]) * 0.5
        pts.append(centre + u * cube)
        ids.append(torch.full((m,), k + 1, dtype=torch.long))
    means = torch.cat(pts).float()
    obj = torch.cat(ids)
    palette = torch.tensor([[0.6, 0.6, 0.55], [0.85, 0.1, 0.1], [0.1, 0.2, 0.85], [0.1, 0.7, 0.2], [0.8, 0.7, 0.1]])
    colors = palette[obj % len(palette)]
    return GaussianSet(
        means=means, quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), math.log(0.004)), colors=colors, opacity_logits=torch.full((n,), 2.0),
        object_ids=obj,
    )  # fmt: skip


def tabletop_state(n: int, n_objects: int = 3, speed: float = 0.3, seed: int = 0, pusher: bool = False
                   ) -> ParticleState:
    """The tabletop with object 1 sliding along +x at ``speed`` [m/s] (history t-2, t-1, t at 30 Hz); with
    ``pusher`` the last object is the kinematic pusher."""
    g = tabletop_gaussians(n, n_objects, seed)
    ns = round(DT * 1e9)
    snaps = []
    for h in range(HISTORY):
        m = g.means.clone()
        m[g.object_ids == 1, 0] += speed * DT * (h - (HISTORY - 1))
        snaps.append(GaussianSet(m, g.quats, g.log_scales, g.colors, g.opacity_logits, g.object_ids))
    return ParticleState.from_snapshots(snaps, [h * ns for h in range(HISTORY)],
                                        pusher_id=n_objects if pusher else None)


def tabletop_cameras(width: int = 32, height: int = 24, count: int = 2) -> list[CameraModel]:
    """``count`` cameras on a ring 0.5 m out and 0.4 m up, looking at the origin."""
    from vidyn_ros.geometry import look_at

    f = 0.9 * width
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)
    cams = []
    for i in range(count):
        a = 2 * math.pi * i / count + math.pi / 4
        eye = np.array([0.5 * math.cos(a), 0.5 * math.sin(a), 0.4])
        cams.append(CameraModel(f"cam{i}", width, height, K, look_at(eye, np.zeros(3))))
    return cams


def synthetic_episode(n: int = 240, frames: int = 12, speed: float = 0.6, seed: int = 0, width: int = 32,
                      height: int = 24, cameras: int = 2, pusher: bool = False, name: str = "synthetic") -> Episode:
    """An episode whose object 1 slides at ``speed`` into object 2, stops, and object 2 moves on (momentum
    transfer); frames are rendered from the true trajectories with the torch renderer."""
    from vidyn_ros.render import render

    g = tabletop_gaussians(n, 3, seed)
    ids = g.object_ids
    p0 = g.means.clone()
    gap = 0.08 - 0.04  # centre distance minus cube size: the slider touches the second cube after gap / speed
    t_hit = gap / speed
    pos = []
    for t in range(frames):
        s = t * DT - 3 * DT  # the slider starts 3 frames before t = 0 so the first history is moving
        p = p0.clone()
        d1 = speed * min(s, t_hit) if s > 0 else speed * s
        d2 = speed * max(s - t_hit, 0.0)
        p[ids == 1, 0] += d1
        p[ids == 2, 0] += d2
        pos.append(p)
    positions = torch.stack(pos).numpy().astype(np.float32)
    quats = np.broadcast_to(g.quats.numpy(), (frames, n, 4)).astype(np.float32).copy()
    cams = tabletop_cameras(width, height, cameras)
    bg = np.array([0.3, 0.3, 0.35], dtype=np.float32)
    images = np.zeros((frames, cameras, height, width, 3), dtype=np.uint8)
    with torch.no_grad():
        for t in range(frames):
            gt = GaussianSet(torch.from_numpy(positions[t]), g.quats, g.log_scales, g.colors, g.opacity_logits, ids)
            rgb = render(gt, cams, background=torch.from_numpy(bg), backend="torch").rgb
            images[t] = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    n_ids = int(ids.max()) + 1
    soft = np.eye(n_ids, dtype=np.float32)[ids.numpy()] * 0.9 + 0.1 / n_ids
    return Episode(
        name=name, positions=positions, quats=quats, object_ids=ids.numpy().astype(np.int64),
        particle_ids=np.arange(n, dtype=np.int64), log_scales=g.log_scales.numpy(), colors=g.colors.numpy(),
        opacity_logits=g.opacity_logits.numpy(), stamps_ns=np.arange(frames, dtype=np.int64) * round(DT * 1e9),
        cmd=np.zeros((frames, 3), dtype=np.float32), cameras=cams, background=bg, images=images,
        pusher_id=3 if pusher else None, soft_ids=soft, soft_id_labels=np.arange(n_ids, dtype=np.int64),
        scenario="synthetic",
    )  # fmt: skip
