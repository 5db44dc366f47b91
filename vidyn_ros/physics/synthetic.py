"""Small synthetic Gaussian scenes (shapes on a checkered table) for tests and the self-consistent experiments.

Every object is a set of flat Gaussians on its visible surface (as the scene builds them from RGB-D), the table a
grid of Gaussians in two colours. No simulator, no fitting: the scene a camera would reconstruct, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vidyn_ros.geometry import quat_wxyz_to_matrix
from vidyn_ros.physics._warp_sim import ShapeSpec
from vidyn_ros.physics.shapes import surface_points
from vidyn_ros.types import GaussianSet

__all__ = ["SyntheticObject", "synthetic_scene"]


@dataclass(frozen=True)
class SyntheticObject:
    object_id: int
    shape: ShapeSpec
    position: tuple[float, float, float]
    quat_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    color: tuple[float, float, float] = (0.9, 0.1, 0.1)


def synthetic_scene(
    objects: Sequence[SyntheticObject],
    per_object: int = 150,
    table_half: float = 0.2,
    table_step: float = 0.02,
    table_center: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> GaussianSet:
    """A GaussianSet: ``per_object`` surface Gaussians per object (bottom face excluded), a checkered table grid of
    ``table_step`` spacing over ±``table_half`` around ``table_center`` (object id 0)."""
    rng = np.random.default_rng(seed)
    means, cols, ids, scales = [], [], [], []
    g = np.arange(-table_half, table_half + 1e-9, table_step)
    tx, ty = np.meshgrid(g + table_center[0], g + table_center[1], indexing="ij")
    checker = ((np.floor(tx / 0.05) + np.floor(ty / 0.05)) % 2).reshape(-1)
    means.append(np.c_[tx.reshape(-1), ty.reshape(-1), np.zeros(tx.size)])
    cols.append(np.where(checker[:, None] > 0, [0.8, 0.78, 0.72], [0.5, 0.48, 0.45]))
    ids.append(np.zeros(tx.size, dtype=np.int64))
    scales.append(np.tile([table_step * 0.6, table_step * 0.6, table_step * 0.1], (tx.size, 1)))
    for o in objects:
        local = surface_points(o.shape, per_object, rng)
        R = quat_wxyz_to_matrix(np.asarray(o.quat_wxyz))
        means.append(local @ R.T + np.asarray(o.position))
        shade = 0.85 + 0.15 * rng.uniform(size=(len(local), 1))  # a little texture for the photometric loss
        cols.append(np.clip(np.asarray(o.color)[None, :] * shade, 0, 1))
        ids.append(np.full(len(local), o.object_id, dtype=np.int64))
        size = float(np.mean(o.shape.size))
        sigma = max(0.35 * size * np.sqrt(4 * np.pi / per_object) * 1.5, 0.002)
        scales.append(np.full((len(local), 3), sigma))
    m = torch.tensor(np.concatenate(means), dtype=torch.float32)
    n = len(m)
    return GaussianSet(
        means=m,
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        log_scales=torch.tensor(np.log(np.concatenate(scales)), dtype=torch.float32),
        colors=torch.tensor(np.concatenate(cols), dtype=torch.float32),
        opacity_logits=torch.full((n,), 3.0),
        object_ids=torch.tensor(np.concatenate(ids)),
    )
