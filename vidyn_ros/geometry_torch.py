"""Rotation helpers on torch tensors (differentiable, batched over leading dimensions). Quaternions are (w, x, y, z).

The numpy twins live in ``vidyn_ros.geometry``; these are for code that must stay on the autograd graph or the GPU
(tracking refinement, particle dynamics, physics, the planner).
"""

from __future__ import annotations

import torch


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (w, x, y, z) quaternions, broadcast over [..., 4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_normalize(q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """[..., 4] unit quaternions."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] (w, x, y, z) -> [..., 3, 3] rotation matrices (normalises first)."""
    w, x, y, z = quat_normalize(q).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return R.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] (w, x, y, z) with w >= 0 (Shepperd's method, branch-free)."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # four candidate (unnormalised) quaternions; pick the numerically largest, as Shepperd does
    cands = torch.stack(
        [
            torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                         m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                         m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                         1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                         1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        dim=-2,
    )  # [..., 4 candidates, 4]
    norms = cands.norm(dim=-1)
    best = norms.argmax(dim=-1, keepdim=True)
    q = torch.gather(cands, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = quat_normalize(q)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0)


def axis_angle_to_quat(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """[..., 3] rotation vectors (axis × angle [rad]) -> [..., 4] unit quaternions; smooth at 0 (Taylor branch)."""
    angle = v.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    small = angle < 1e-4
    # sin(a/2)/a, with its Taylor expansion near 0 so the gradient stays finite
    k = torch.where(small, 0.5 - angle**2 / 48.0, torch.sin(half) / angle.clamp_min(eps))
    return torch.cat([torch.cos(half), v * k], dim=-1)


def quat_to_axis_angle(q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """[..., 4] quaternions -> [..., 3] rotation vectors (angle in [0, π])."""
    q = quat_normalize(q)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    s = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, q[..., :1])
    k = torch.where(s < 1e-6, 2.0 + angle**2 / 12.0, angle / s.clamp_min(eps))
    return q[..., 1:] * k


def rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors [..., 3] by quaternions [..., 4] (broadcast)."""
    return (quat_to_matrix(q) @ v.unsqueeze(-1)).squeeze(-1)
