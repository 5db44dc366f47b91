"""Goals for the visual MPC: images per camera, rendered from the scene with objects moved to goal poses, or a PLY.

A :class:`Goal` is what the cost compares the predicted render with: one RGB image per cost camera, plus the goal's
object coverage (alpha, for the mask IoU) and depth where they are known. Three ways to make one:

- :func:`goal_from_moves`: the live scene's Gaussians with some objects moved rigidly to goal poses
  (``GoalMove``: "the object nearest to ``from`` goes to ``to``, turned by ``yaw``"), rendered from the cost
  cameras. Alpha, depth and per-object goal centroids are known exactly.
- :func:`goal_from_ply`: a 3DGS PLY of the goal scene (e.g. a scene saved at the goal configuration), rendered the
  same way.
- :func:`goal_from_images`: recorded images (a frame of the rig: one uint8 RGB image per camera, optionally masks
  and depth). Alpha comes from masks if given; no per-object goal centroids.

Renders composite the moving part (objects, not the table) over a pre-rendered image of the static part
(:class:`LayeredRenderer`); predictions are composited the same way, so a prediction that reaches the goal scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vidyn_ros.errors import ConfigError
from vidyn_ros.types import CameraModel, GaussianSet


@dataclass
class Goal:
    """What the cost compares predictions with, at the cost cameras' resolution.

    Attributes:
        cameras: V cost cameras (their resolution is the cost's working resolution).
        rgb: [V, H, W, 3] goal colour in [0, 1].
        alpha: [V, H, W] goal coverage by objects in [0, 1] (mask IoU term), or None.
        depth: [V, H, W] goal depth [m] (0 = unknown), or None.
        centroids: scene object id -> goal centroid [3] (world, m): known for goals made from the scene; used only
            by the optional reach shaping term.
        source: where the goal came from (for diagnostics).
    """

    cameras: list[CameraModel]
    rgb: torch.Tensor
    alpha: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    centroids: dict[int, torch.Tensor] = field(default_factory=dict)
    source: str = ""
    # the goal's moving Gaussians (goals made from the scene or a PLY), so other resolutions are rendered, not
    # resampled: a Gaussian render at 40 px is not the 80 px render downsampled (see Planner.set_goal)
    moving: GaussianSet | None = None


@dataclass(frozen=True)
class GoalMove:
    """Move the object whose centroid is nearest to ``from_xy`` so that its centroid lands on ``to_xy``, turned by
    ``yaw_deg`` about the vertical axis through its centroid (world frame, metres, degrees)."""

    from_xy: tuple[float, float]
    to_xy: tuple[float, float]
    yaw_deg: float = 0.0


def load_goal_moves(path: str | Path) -> list[GoalMove]:
    """Read a goal-poses YAML: ``goals: [{from: [x, y], to: [x, y], yaw_deg: 0}, ...]`` (see docs/mpc.md)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: goal file not found")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: malformed YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("goals"), list) or not doc["goals"]:
        raise ConfigError(f"{p}: expected a non-empty list under 'goals'")
    out = []
    for i, g in enumerate(doc["goals"]):
        where = f"{p}: goals[{i}]"
        if not isinstance(g, dict) or set(g) - {"from", "to", "yaw_deg"} or not {"from", "to"} <= set(g):
            raise ConfigError(f"{where}: expected keys from, to (and optionally yaw_deg)")
        try:
            fr = [float(v) for v in g["from"]][:2]
            to = [float(v) for v in g["to"]][:2]
            yaw = float(g.get("yaw_deg", 0.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: from / to must be [x, y] numbers, yaw_deg a number") from None
        if len(fr) != 2 or len(to) != 2 or not all(math.isfinite(v) for v in (*fr, *to, yaw)):
            raise ConfigError(f"{where}: from / to must be two finite numbers each")
        out.append(GoalMove((fr[0], fr[1]), (to[0], to[1]), yaw))
    return out


def save_goal_moves(moves: Sequence[GoalMove], path: str | Path, comment: str = "") -> Path:
    """Write moves in the format :func:`load_goal_moves` reads."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"goals": [{"from": [round(float(v), 5) for v in m.from_xy], "to": [round(float(v), 5) for v in m.to_xy],
                      "yaw_deg": round(float(m.yaw_deg), 3)} for m in moves]}
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    p.write_text(head + yaml.safe_dump(doc, sort_keys=False))
    return p


# ------------------------------------------------------------------------------------------------ rigid object moves
def object_centroids(gaussians: GaussianSet, exclude: Sequence[int] = ()) -> dict[int, torch.Tensor]:
    """Object id (> 0, not in ``exclude``) -> centroid [3] of its Gaussians."""
    out = {}
    for k in torch.unique(gaussians.object_ids).tolist():
        if k == 0 or k in exclude:
            continue
        out[int(k)] = gaussians.means[gaussians.object_ids == k].mean(0)
    return out


def resolve_moves(gaussians: GaussianSet, moves: Sequence[GoalMove], exclude: Sequence[int] = (),
                  max_distance: float = 0.06) -> dict[int, GoalMove]:
    """Scene object id -> move: each move's ``from_xy`` picks the nearest object centroid (xy) within
    ``max_distance``; raises ConfigError naming the move when none is that close or two moves pick one object."""
    cents = object_centroids(gaussians, exclude)
    if not cents:
        raise ConfigError("goal: the scene has no objects to move")
    ids = list(cents)
    xy = torch.stack([cents[k][:2] for k in ids]).double()
    out: dict[int, GoalMove] = {}
    for m in moves:
        d = (xy - torch.tensor(m.from_xy, dtype=xy.dtype, device=xy.device)).norm(dim=1)
        i = int(torch.argmin(d))
        if float(d[i]) > max_distance:
            raise ConfigError(f"goal: no object within {max_distance * 100:.0f} cm of from={list(m.from_xy)} "
                              f"(nearest centroid is {float(d[i]) * 100:.1f} cm away)")
        if ids[i] in out:
            raise ConfigError(f"goal: two moves pick the same object (id {ids[i]}) near {list(m.from_xy)}")
        out[ids[i]] = m
    return out


def move_objects(gaussians: GaussianSet, moves: dict[int, GoalMove]) -> GaussianSet:
    """The Gaussians with each moved object's Gaussians carried rigidly: its centroid to ``to_xy`` (height kept),
    turned by ``yaw_deg`` about z through the centroid."""
    from vidyn_ros.geometry_torch import axis_angle_to_quat, quat_mul, quat_normalize, rotate

    g = gaussians.detach().clone()
    for k, m in moves.items():
        sel = g.object_ids == k
        c = g.means[sel].mean(0)
        to = torch.tensor([m.to_xy[0], m.to_xy[1], float(c[2])], dtype=g.means.dtype, device=g.device)
        dq = axis_angle_to_quat(torch.tensor([0.0, 0.0, math.radians(m.yaw_deg)], dtype=g.means.dtype,
                                             device=g.device))
        g.means[sel] = to + rotate(dq.expand(int(sel.sum()), 4), g.means[sel] - c)
        g.quats[sel] = quat_normalize(quat_mul(dq.expand(int(sel.sum()), 4), quat_normalize(g.quats[sel])))
    return g


# ----------------------------------------------------------------------------------------------- layered rendering
class LayeredRenderer:
    """Renders a state's moving Gaussians over a once-rendered image of the static ones (the table), at the cost
    cameras' resolution. Objects sit on the table, so compositing them over the table's render equals rendering
    both together except where Gaussians interpenetrate; goals and predictions use this same path.

    Args:
        cameras: cost cameras (all one resolution).
        static: the Gaussians that never move (object id 0), or None for a plain background colour.
        background: RGB behind everything (the scene's background colour).
        backend: renderer backend (auto / torch / gsplat).
    """

    def __init__(self, cameras: Sequence[CameraModel], static: GaussianSet | None,
                 background: Sequence[float] = (0.0, 0.0, 0.0), backend: str = "auto",
                 device: torch.device | str = "cpu") -> None:
        from vidyn_ros.render import render

        self.cameras = list(cameras)
        self.backend = backend
        self._render = render
        bg = torch.as_tensor(background, dtype=torch.float32, device=device)
        V, H, W = len(self.cameras), self.cameras[0].height, self.cameras[0].width
        if static is not None and len(static) > 0:
            with torch.no_grad():
                out = render(static.detach().to(device), self.cameras, background=bg, backend=backend)
            self.bg_rgb, self.bg_depth = out.rgb.float(), out.depth.float()
        else:
            self.bg_rgb = bg.expand(V, H, W, 3).clone()
            self.bg_depth = torch.zeros(V, H, W, device=device)

    def __call__(self, moving: GaussianSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> rgb [V, H, W, 3], alpha [V, H, W] of the moving part, depth [V, H, W] (moving over static)."""
        V, H, W = self.bg_depth.shape
        if len(moving) == 0:
            return self.bg_rgb, torch.zeros(V, H, W, device=self.bg_rgb.device), self.bg_depth
        out = self._render(moving, self.cameras, background=(0.0, 0.0, 0.0), backend=self.backend)
        return self._over_static(out.rgb, out.alpha, out.depth)

    def batch(self, moving: GaussianSet, means: torch.Tensor, quats: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Many configurations of the moving Gaussians (positions ``means`` [..., N, 3], rotations ``quats``
        [..., N, 4]; e.g. every candidate's predicted final state) in one render call -> rgb [..., V, H, W, 3],
        alpha and depth [..., V, H, W]. Equal to calling the renderer once per configuration."""
        from vidyn_ros.render import render_batch

        lead = tuple(means.shape[:-2])
        V, H, W = self.bg_depth.shape
        if len(moving) == 0:
            return (self.bg_rgb.expand(*lead, V, H, W, 3), torch.zeros(*lead, V, H, W, device=self.bg_rgb.device),
                    self.bg_depth.expand(*lead, V, H, W))
        out = render_batch(moving, self.cameras, means, quats, background=(0.0, 0.0, 0.0), backend=self.backend)
        return self._over_static(out.rgb, out.alpha, out.depth)

    def _over_static(self, rgb: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = alpha.clamp(0.0, 1.0)
        return rgb + (1.0 - a)[..., None] * self.bg_rgb, a, a * depth + (1.0 - a) * self.bg_depth


def moving_mask(object_ids: torch.Tensor, pusher_id: int | None, include_pusher: bool = False) -> torch.Tensor:
    """[N] bool: the Gaussians a cost renders (objects; the pusher only when asked)."""
    keep = object_ids > 0
    if pusher_id is not None and not include_pusher:
        keep &= object_ids != pusher_id
    return keep


def goal_from_gaussians(goal_gaussians: GaussianSet, renderer: LayeredRenderer, pusher_id: int | None = None,
                        include_pusher: bool = False, source: str = "gaussians") -> Goal:
    """Render a goal scene's moving Gaussians with ``renderer`` (its static image is the live scene's table)."""
    keep = moving_mask(goal_gaussians.object_ids, pusher_id, include_pusher)
    moving = goal_gaussians.subset(keep).detach()
    with torch.no_grad():
        rgb, alpha, depth = renderer(moving)
    cents = object_centroids(goal_gaussians, exclude=[] if pusher_id is None else [pusher_id])
    return Goal(cameras=renderer.cameras, rgb=rgb.detach(), alpha=alpha.detach(), depth=depth.detach(),
                centroids={k: v.detach() for k, v in cents.items()}, source=source, moving=moving)


def goal_from_moves(gaussians: GaussianSet, moves: Sequence[GoalMove], renderer: LayeredRenderer,
                    pusher_id: int | None = None, include_pusher: bool = False) -> tuple[Goal, GaussianSet]:
    """The scene with objects moved (see :class:`GoalMove`), rendered as a goal. Returns (goal, goal Gaussians)."""
    resolved = resolve_moves(gaussians, moves, exclude=[] if pusher_id is None else [pusher_id])
    goal_g = move_objects(gaussians, resolved)
    desc = ", ".join(f"id {k}: ({m.to_xy[0]:.3f}, {m.to_xy[1]:.3f})" for k, m in resolved.items())
    return goal_from_gaussians(goal_g, renderer, pusher_id, include_pusher, source=f"moves [{desc}]"), goal_g


def goal_from_ply(path: str | Path, renderer: LayeredRenderer, pusher_id: int | None = None) -> Goal:
    """A goal scene saved as a 3DGS PLY with object ids (``scene.ply.save_ply``), rendered with ``renderer``."""
    from vidyn_ros.scene.ply import load_ply

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: goal PLY not found")
    g = load_ply(p).to(renderer.bg_rgb.device)
    return goal_from_gaussians(g, renderer, pusher_id, source=str(p))


def goal_from_images(images: Sequence[np.ndarray], cameras: Sequence[CameraModel],
                     masks: Sequence[np.ndarray] | None = None, depth: Sequence[np.ndarray] | None = None,
                     exclude_ids: Sequence[int] = (), device: torch.device | str = "cpu",
                     source: str = "images") -> Goal:
    """Goal images (uint8 RGB per camera, any size: resized to the camera's), optional instance masks (objects =
    id > 0 not in ``exclude_ids``, e.g. the pusher's) and depth [m]."""
    if len(images) != len(cameras):
        raise ConfigError(f"goal: {len(images)} images for {len(cameras)} cameras")

    def resize(a: torch.Tensor, cam: CameraModel, mode: str) -> torch.Tensor:  # a [H, W, C]
        if a.shape[:2] == (cam.height, cam.width):
            return a
        t = a.permute(2, 0, 1)[None].float()
        kw = {"antialias": True} if mode == "area" else {}
        t = torch.nn.functional.interpolate(t, size=(cam.height, cam.width), mode=mode if mode != "area" else
                                            "bilinear", **kw)
        return t[0].permute(1, 2, 0)

    rgb, alpha, dep = [], [], []
    for i, (img, cam) in enumerate(zip(images, cameras, strict=True)):
        a = np.asarray(img)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ConfigError(f"goal image {i}: expected HxWx3 RGB, got shape {a.shape}")
        rgb.append(resize(torch.as_tensor(a.astype(np.float32) / 255.0), cam, "area"))
        if masks is not None:
            m = np.asarray(masks[i]).astype(np.int64)
            fg = (m > 0) & ~np.isin(m, list(exclude_ids))
            alpha.append(resize(torch.as_tensor(fg.astype(np.float32))[..., None], cam, "area")[..., 0])
        if depth is not None:
            dep.append(resize(torch.as_tensor(np.asarray(depth[i], dtype=np.float32))[..., None], cam,
                              "nearest")[..., 0])
    return Goal(cameras=list(cameras), rgb=torch.stack(rgb).to(device),
                alpha=torch.stack(alpha).to(device) if alpha else None,
                depth=torch.stack(dep).to(device) if dep else None, source=source)


def cost_cameras(cameras: Sequence[CameraModel], views: Sequence[str] | int, width: int) -> list[CameraModel]:
    """The cameras the cost renders: ``views`` names (or the first n), scaled to about ``width`` pixels wide."""
    cams = list(cameras)
    if isinstance(views, int):
        chosen = cams[: max(1, views)]
    else:
        by_name = {c.name: c for c in cams}
        missing = [v for v in views if v not in by_name]
        if missing:
            raise ConfigError(f"cost views {missing} not among the cameras {sorted(by_name)}")
        chosen = [by_name[v] for v in views] if views else cams
    return [c if c.width == width else c.scaled(width / c.width) for c in chosen]


def with_resolution(goal: Goal, cameras: Sequence[CameraModel], renderer: LayeredRenderer | None = None) -> Goal:
    """The goal at other cameras' resolution (same poses): e.g. a coarse copy for the sampling stage. Rendered
    with ``renderer`` (those cameras) when the goal has its Gaussians, else resampled (image goals).

    Why render: at the planner's 40 px sampling width the resampled 80 px goal differs from a 40 px render of the
    same scene so much that reaching the goal scored 0.78 (pixel), 0.83 (IoU), 0.98 (depth) of "do nothing" (a
    40 px render of the goal: 0.0, 0.45, 0.0): the sampling stage was nearly blind (docs/mpc.md)."""
    if [(c.width, c.height) for c in cameras] == [(c.width, c.height) for c in goal.cameras]:
        return goal
    if goal.moving is not None and renderer is not None:
        with torch.no_grad():
            rgb, alpha, depth = renderer(goal.moving.to(renderer.bg_rgb.device))
        return replace(goal, cameras=list(cameras), rgb=rgb.detach(), alpha=alpha.detach() if goal.alpha is not None
                       else None, depth=depth.detach() if goal.depth is not None else None)
    H, W = cameras[0].height, cameras[0].width

    def rs(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        x = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
        y = torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", antialias=True)
        return y[:, 0] if t.ndim == 3 else y.permute(0, 2, 3, 1)

    return replace(goal, cameras=list(cameras), rgb=rs(goal.rgb), alpha=rs(goal.alpha), depth=rs(goal.depth))
