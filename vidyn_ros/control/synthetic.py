"""A small synthetic tabletop as Gaussians (table grid, coloured blocks, a pusher) and cameras looking at it.

For tests and benchmarks that must run without MuJoCo or a fitted scene (the GPU benchmark machine has neither):
the layout imitates the ``push`` scenario (blocks of 5-6 cm, a 1.5 cm pusher, cameras ~0.5 m away).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vidyn_ros.geometry import look_at
from vidyn_ros.types import CameraModel, GaussianSet

PUSHER_ID = 4


def synthetic_scene(per_object: int = 64, table: int = 400, blocks: Sequence[tuple[float, float]] =
                    ((0.0, 0.0), (0.12, 0.12), (0.1, -0.14)), pusher_xy: tuple[float, float] = (-0.12, 0.0),
                    seed: int = 0) -> GaussianSet:
    """Table (id 0, a checker of two greys over 0.5 x 0.5 m), blocks (ids 1..K, 6 cm cubes in red / blue / green
    ...) and a pusher (id K+1, a dark 1.5 cm radius column)."""
    g = torch.Generator().manual_seed(seed)
    means, colors, ids, scales = [], [], [], []
    side = max(2, round(math.sqrt(table)))
    xs = torch.linspace(-0.25, 0.25, side)
    tx, ty = torch.meshgrid(xs, xs, indexing="ij")
    checker = ((tx / 0.05).floor() + (ty / 0.05).floor()) % 2
    means.append(torch.stack([tx.ravel(), ty.ravel(), torch.zeros(side * side)], 1))
    colors.append((0.55 + 0.25 * checker.ravel())[:, None].expand(-1, 3))
    ids.append(torch.zeros(side * side, dtype=torch.int64))
    scales.append(torch.full((side * side, 3), 0.5 / side))
    palette = [(0.85, 0.1, 0.1), (0.1, 0.2, 0.85), (0.1, 0.7, 0.2), (0.9, 0.8, 0.1), (0.7, 0.2, 0.7)]
    for k, (x, y) in enumerate(blocks, start=1):
        p = torch.rand(per_object, 3, generator=g) * 0.06 - 0.03
        p[:, 2] += 0.03
        means.append(p + torch.tensor([x, y, 0.0]))
        colors.append(torch.tensor(palette[(k - 1) % len(palette)]).expand(per_object, 3))
        ids.append(torch.full((per_object,), k, dtype=torch.int64))
        scales.append(torch.full((per_object, 3), 0.012))
    n_p = max(8, per_object // 4)
    ang = torch.rand(n_p, generator=g) * 2 * math.pi
    r = 0.015 * torch.rand(n_p, generator=g).sqrt()
    z = 0.005 + 0.07 * torch.rand(n_p, generator=g)
    means.append(torch.stack([pusher_xy[0] + r * ang.cos(), pusher_xy[1] + r * ang.sin(), z], 1))
    colors.append(torch.full((n_p, 3), 0.15))
    ids.append(torch.full((n_p,), len(blocks) + 1, dtype=torch.int64))
    scales.append(torch.full((n_p, 3), 0.008))
    m = torch.cat(means).float()
    n = len(m)
    return GaussianSet(
        means=m, quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1), log_scales=torch.cat(scales).log(),
        colors=torch.cat(colors).float(), opacity_logits=torch.full((n,), 3.0), object_ids=torch.cat(ids),
    )  # fmt: skip


def synthetic_cameras(count: int = 2, width: int = 160, height: int = 120, radius: float = 0.5,
                      height_m: float = 0.45) -> list[CameraModel]:
    """``count`` cameras on a ring around the table centre (like the push scenario's), OpenCV intrinsics."""
    f = 386.0 * width / 640.0
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    cams = []
    for i in range(count):
        a = math.radians(45 + 360.0 * i / count)
        eye = np.array([radius * math.cos(a), radius * math.sin(a), height_m])
        cams.append(CameraModel(name=f"cam{i}", width=width, height=height, K=K, T_world_cam=look_at(eye, np.zeros(3))))
    return cams
