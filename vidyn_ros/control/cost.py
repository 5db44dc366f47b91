"""The MPC cost: pixel loss of the predicted render against the goal (+ mask IoU, depth), action smoothness, the
workspace bounds of the planned pusher path, and an optional reach term that brings the pusher to the side of an
object it has to push.

Why each term (docs/mpc.md has the measurements):
- pixel: MSE averaged over an image pyramid (average pooling by 1, 4, 8 by default). At full resolution a block
  that does not overlap its goal has no pixel gradient towards it; the pooled levels give the loss a wide basin.
- iou: 1 - soft IoU of the predicted object coverage (alpha) and the goal's; insensitive to colour and lighting.
- depth: L1 of the composited depth where the goal depth is known, in units of 5 cm, clipped at 10 cm.
- The visual terms are divided by their value for "do nothing" when the goal was set, so 1 = no progress and
  0 = at the goal; smoothness, bounds and reach weights are relative to that.
- reach: pushing needs contact, and the pixel loss has no gradient (and sampling no signal) until the pusher
  touches the object. For goals made from the scene (goal PLY / goal poses) the goal centroid of every object is
  known; the term pulls the pusher towards the contact point behind the object that is farthest from its goal
  (mean over the horizon of the xy distance, in units of 10 cm). Off for goals given as images only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidyn_ros.control.goal import Goal


@dataclass
class CostWeights:
    """Weights of the cost terms (the visual ones are normalised, see the module docstring)."""

    pixel: float = 1.0
    iou: float = 0.5
    depth: float = 0.5
    smooth: float = 0.05  # sum of squared action changes / max_speed^2, averaged over the horizon
    bounds: float = 100.0  # squared excursion of the planned pusher path out of the workspace, per cm^2
    reach: float = 0.3  # mean distance pusher -> contact point behind the object to move [per 10 cm]


def pyramid_mse(pred: torch.Tensor, goal: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """Mean over ``levels`` (average-pooling factors) of the MSE between images [..., V, H, W, C] -> [...]."""
    lead = pred.shape[:-4]
    V, H, W, C = pred.shape[-4:]
    p = pred.reshape(-1, H, W, C).permute(0, 3, 1, 2)
    g = goal.expand_as(pred).reshape(-1, H, W, C).permute(0, 3, 1, 2)
    terms = []
    for k in levels:
        pp, gg = (F.avg_pool2d(p, k, ceil_mode=True), F.avg_pool2d(g, k, ceil_mode=True)) if k > 1 else (p, g)
        terms.append((pp - gg).square().mean(dim=(1, 2, 3)).reshape(*lead, V).mean(-1))
    return torch.stack(terms).mean(0)


def soft_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft IoU of coverages in [0, 1] over the last three dims ([V, H, W])."""
    inter = (a * b).sum(dim=(-3, -2, -1))
    union = (a + b - a * b).sum(dim=(-3, -2, -1))
    return inter / (union + eps)


def visual_terms(rgb: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor, goal: Goal,
                 levels: Sequence[int]) -> dict[str, torch.Tensor]:
    """Unweighted visual terms of predicted renders (rgb [..., V, H, W, 3], alpha / depth [..., V, H, W]), one
    value per leading index."""
    out = {"pixel": pyramid_mse(rgb, goal.rgb, levels)}
    if goal.alpha is not None:
        out["iou"] = 1.0 - soft_iou(alpha, goal.alpha)
    if goal.depth is not None:
        known = goal.depth > 0
        if bool(known.any()):
            err = (depth - goal.depth).abs().clamp_max(0.1) / 0.05
            out["depth"] = (err * known).sum(dim=(-3, -2, -1)) / known.sum()
    return out


def smoothness(u: torch.Tensor, u_prev: torch.Tensor | None, max_speed: float) -> torch.Tensor:
    """Mean squared change of the actions u [..., H, D] (the first against ``u_prev`` [D]) / max_speed^2."""
    first = u[..., :1, :] - (u_prev if u_prev is not None else torch.zeros_like(u[..., 0, :])).unsqueeze(-2)
    d = torch.cat([first, u[..., 1:, :] - u[..., :-1, :]], dim=-2)
    return d.square().sum(-1).mean(-1) / max(max_speed, 1e-6) ** 2


def pusher_path(p0: torch.Tensor, u: torch.Tensor, dt: float) -> torch.Tensor:
    """Pusher positions [..., H+1, D] after each action, starting at p0 [D]."""
    steps = torch.cumsum(u * dt, dim=-2)
    return torch.cat([p0.expand_as(steps[..., :1, :]), p0 + steps], dim=-2)


def bounds_penalty(path_xy: torch.Tensor, workspace: Sequence[float]) -> torch.Tensor:
    """Sum over the path [..., T, 2] of the squared excursion out of the box (x0, y0, x1, y1), in cm^2."""
    x0, y0, x1, y1 = workspace
    lo = torch.tensor([x0, y0], dtype=path_xy.dtype, device=path_xy.device)
    hi = torch.tensor([x1, y1], dtype=path_xy.dtype, device=path_xy.device)
    ex = F.relu(lo - path_xy) + F.relu(path_xy - hi)
    return (ex * 100.0).square().sum(dim=(-2, -1))


@dataclass
class ReachTarget:
    """The object the pusher should get behind: its particles (indices into the dynamics state), its goal centroid,
    and the stand-off distance from its centroid to the contact point (object extent + pusher radius + margin)."""

    object_id: int
    index: torch.Tensor
    goal_xy: torch.Tensor
    standoff: float


def reach_target(positions: torch.Tensor, object_ids: torch.Tensor, goal: Goal, pusher_id: int | None,
                 pusher_radius: float, tolerance: float = 0.01, margin: float = 0.005) -> ReachTarget | None:
    """The object farthest (xy) from its goal centroid, if farther than ``tolerance``; None otherwise or when the
    goal has no centroids. ``positions`` [N, 3] (now), ``object_ids`` [N]."""
    best: tuple[float, int] | None = None
    for k, g in goal.centroids.items():
        if k == pusher_id:
            continue
        sel = object_ids == k
        if not bool(sel.any()):
            continue
        d = float((positions[sel, :2].mean(0) - g[:2].to(positions)).norm())
        if d > tolerance and (best is None or d > best[0]):
            best = (d, k)
    if best is None:
        return None
    k = best[1]
    idx = torch.nonzero(object_ids == k).squeeze(1)
    c = positions[idx, :2].mean(0)
    goal_xy = goal.centroids[k][:2].to(positions)
    direction = (goal_xy - c) / (goal_xy - c).norm().clamp_min(1e-6)
    extent = float(((positions[idx, :2] - c) @ -direction).max())  # how far the object reaches behind its centroid
    return ReachTarget(k, idx, goal_xy, extent + pusher_radius + margin)


def reach_cost(obj_xy: torch.Tensor, pusher_xy: torch.Tensor, target: ReachTarget) -> torch.Tensor:
    """Mean over the horizon of the distance [per 10 cm] between the pusher and the contact point behind the
    object's predicted centroid (obj_xy [..., T, 2], pusher_xy [..., T, 2])."""
    to_goal = target.goal_xy - obj_xy
    direction = to_goal / to_goal.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    contact = obj_xy - target.standoff * direction
    return ((pusher_xy - contact).norm(dim=-1) / 0.1).mean(-1)
