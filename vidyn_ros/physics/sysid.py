"""System identification from video (∇Sim, seed 003): mass and contact parameters of the scene's objects by gradient
descent on a pixel loss through the physics and the renderer.

Pipeline (``identify``): the scene's Gaussians at the first frame -> physics model (bodies fitted to the objects) ->
known actuation (applied wrenches, pusher path) -> which parameters the recording can identify (``analyse``) ->
initial values (sampling the prior box: on the perception-tracked object paths, or on the pixel loss) -> Adam on
the pixel loss ``mean over (frame, camera, pixel) of |render(sim(θ))_t - observed_t|²`` through renderer, Gaussians,
body states and Newton's tape -> the identified values, with their loss history.

What a recording can identify (see docs/physics.md):

- **mass**: only with a known force on the object (an applied wrench: its change of momentum is the impulse). A
  kinematic pusher at a commanded speed moves a light and a heavy object alike; sliding decelerates at μ·g whatever
  the mass. A collision with an object of known mass would do too; not used here.
- **μ** (friction with the table): when the object slides freely (not pushed) - after an impulse, after a push ends.
- **k_e, k_d** (contact stiffness / damping): only through an impact (a drop, a bounce); a block sliding on the table
  rests on it at a depth of a fraction of a millimetre. Asked for without an impact: not identifiable.
- **k_f** (friction stiffness): sets the creep speed below the Coulomb limit (μ·N/k_f, millimetres per second):
  invisible at 30 fps; never identified from video here.

A parameter the recording cannot identify keeps its prior value and is reported as not identified, with the reason;
a recording in which nothing moves is an error.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidyn_ros.errors import VidynError
from vidyn_ros.physics.model import PARAM_NAMES, PRIOR_RANGES, PhysicsModel, PhysicsParams
from vidyn_ros.physics.scene import ParticleBinding
from vidyn_ros.types import AppliedWrench, CameraModel, GaussianSet

__all__ = [
    "Identifiability",
    "Observation",
    "SysidConfig",
    "SysidError",
    "SysidResult",
    "analyse",
    "forces_from_wrenches",
    "identify",
    "prior_centre",
]

log = logging.getLogger(__name__)

LOG_PARAMS = ("mass", "ke", "kd", "kf")  # optimised in log space (scale parameters); mu linearly


class SysidError(VidynError):
    """A recording from which nothing can be identified (nothing moves, no known actuation, unusable input)."""


@dataclass
class SysidConfig:
    """Settings of ``identify``.

    Attributes:
        params: parameters to identify where the recording allows (subset of mass, mu, ke, kd, kf).
        iterations: evaluations of the loss and its gradient in the refinement (L-BFGS counts its line search's).
        optimizer: "lbfgs" (L-BFGS with a strong-Wolfe line search: few parameters, smooth valley) or "adam".
        lr: Adam's step size in normalised parameter space (the prior box maps to [0, 1]; log scale for mass, k_*;
            optimised through a sigmoid, so values stay inside the box).
        init: "track" (grid over the prior box on the perception-tracked object paths), "pixels" (grid on the pixel
            loss), "prior" (the box's centre) or "random" (uniform in the box, as ∇Sim's protocol).
        grid: grid points per parameter for the "track" / "pixels" initialisation.
        frame_stride: use every n-th frame of a motion window in the pixel loss.
        max_frames: at most this many rendered frames in the loss (evenly spread over the motion windows).
        depth_weight: weight of the depth term (|rendered - observed depth|² [m²], where both exist; 0 = colour only).
        min_motion: an object whose tracked centre moves less than this [m] did not move.
        seed: for "random" initialisation.
    """

    params: tuple[str, ...] = ("mass", "mu")
    iterations: int = 30
    optimizer: str = "lbfgs"
    lr: float = 0.1
    init: str = "track"
    grid: int = 9
    frame_stride: int = 1
    max_frames: int = 12
    depth_weight: float = 0.0
    min_motion: float = 0.005
    seed: int = 0


@dataclass
class Observation:
    """A recording reduced to what system identification uses (all at the working resolution).

    Attributes:
        cameras: C cameras (one image size).
        stamps_ns: [T] frame times.
        images: [T, C, H, W, 3] float in [0, 1].
        depth: [T, C, H, W] metres (0 = none) or None.
        wrenches: known applied wrenches (actuation), any order.
        pusher_position: [T, 3] the pusher's position at each frame (proprioception) or None.
        tracked: object id -> [T, 3] object centre from perception (the scene's tracked poses), NaN where unseen;
            used to find which objects move and when, to attach wrenches to objects, and to initialise.
        background: RGB behind everything (the render's background colour).
    """

    cameras: list[CameraModel]
    stamps_ns: np.ndarray
    images: torch.Tensor
    depth: torch.Tensor | None
    wrenches: list[AppliedWrench]
    pusher_position: np.ndarray | None
    tracked: dict[int, np.ndarray]
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def frame_dt(self) -> float:
        return float(np.median(np.diff(self.stamps_ns))) * 1e-9 if len(self.stamps_ns) > 1 else 1.0 / 30.0


@dataclass
class Identifiability:
    """Per body: what moved, which known actuation acted on it, which parameters the recording identifies (and why
    the others are not)."""

    object_id: int
    travel_m: float  # largest displacement of its tracked centre from the first frame
    moving_frames: tuple[int, int] | None  # first and last frame of motion
    wrench_events: list[int]  # indices into Observation.wrenches of forces along lines through this object
    free_slide: bool  # moved while no pusher was near (friction alone decelerates it)
    impact_speed: float  # largest downward speed before a stop [m/s] (0: no impact seen)
    identifiable: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass
class SysidResult:
    """Identified values per body (None where not identifiable), the initial values, and the optimisation history."""

    object_ids: list[int]
    estimates: dict[int, dict[str, float | None]]
    initial: dict[int, dict[str, float]]
    identifiability: list[Identifiability]
    history: list[dict[str, Any]]  # per iteration: loss and the parameter values
    frames_used: list[int]
    seconds: float
    params: PhysicsParams  # full parameter set after identification (prior values where not identified)

    def as_dict(self) -> dict[str, Any]:
        return {
            "object_ids": self.object_ids,
            "estimates": {str(k): v for k, v in self.estimates.items()},
            "initial": {str(k): v for k, v in self.initial.items()},
            "identifiability": [
                {"object_id": a.object_id, "travel_m": round(a.travel_m, 5), "moving_frames": a.moving_frames,
                 "wrench_events": a.wrench_events, "free_slide": a.free_slide,
                 "impact_speed": round(a.impact_speed, 4), "identifiable": a.identifiable, "reasons": a.reasons}
                for a in self.identifiability
            ],
            "history": self.history,
            "frames_used": self.frames_used,
            "seconds": round(self.seconds, 2),
        }


# ------------------------------------------------------------------------------------------------ parameter space
def prior_centre(name: str) -> float:
    lo, hi = PRIOR_RANGES[name]
    return math.sqrt(lo * hi) if name in LOG_PARAMS else 0.5 * (lo + hi)


def _to_unit(name: str, v: torch.Tensor) -> torch.Tensor:
    lo, hi = PRIOR_RANGES[name]
    if name in LOG_PARAMS:
        return (torch.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def _from_unit(name: str, u: torch.Tensor) -> torch.Tensor:
    lo, hi = PRIOR_RANGES[name]
    if name in LOG_PARAMS:
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


# ------------------------------------------------------------------------------------------------ actuation
def _wrench_target(w: AppliedWrench, centres: dict[int, np.ndarray], max_distance: float = 0.05) -> int | None:
    """The object whose centre is nearest to the wrench's line of action (within ``max_distance``)."""
    p = w.line_point()
    if p is None or not centres:
        return None
    f = np.asarray(w.force, dtype=np.float64)
    f /= np.linalg.norm(f)
    best, best_d = None, max_distance
    for oid, c in centres.items():
        r = np.asarray(c) - np.asarray(p)
        d = float(np.linalg.norm(r - f * (r @ f)))
        if d < best_d:
            best, best_d = oid, d
    return best


def forces_from_wrenches(wrenches: Sequence[AppliedWrench], targets: Sequence[int | None], body_index: dict[int, int],
                         t0_ns: int, steps: int, dt: float, bodies: int) -> torch.Tensor:
    """Per physics step the force [N] on each body: [steps, K, 3]. A wrench holds until the next one (whatever its
    target); each step gets the time-weighted mean over its interval, so impulses are kept exactly."""
    out = np.zeros((steps, bodies, 3))
    order = sorted(range(len(wrenches)), key=lambda i: wrenches[i].stamp_ns)
    for n, i in enumerate(order):
        w, target = wrenches[i], targets[i]
        if target is None or target not in body_index or np.allclose(w.force, 0.0):
            continue
        start = (w.stamp_ns - t0_ns) * 1e-9
        end = (wrenches[order[n + 1]].stamp_ns - t0_ns) * 1e-9 if n + 1 < len(order) else steps * dt
        first, last = max(0, math.floor(start / dt)), min(steps - 1, math.floor(end / dt - 1e-12))
        for s in range(first, last + 1):
            overlap = min(end, (s + 1) * dt) - max(start, s * dt)
            if overlap > 0:
                out[s, body_index[target]] += np.asarray(w.force) * overlap / dt
    return torch.tensor(out, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ identifiability
def analyse(model: PhysicsModel, obs: Observation, config: SysidConfig
            ) -> tuple[list[Identifiability], list[int | None]]:
    """Which parameters of which bodies this recording identifies; the target body of every wrench.

    Raises SysidError when nothing moves."""
    T = len(obs.stamps_ns)
    dt = obs.frame_dt
    travel, paths = {}, {}
    for b in model.bodies:
        path = obs.tracked.get(b.object_id)
        if path is None or not np.isfinite(path).any():
            path = np.tile(b.position, (T, 1))
        path = np.asarray(path, dtype=np.float64)
        first = path[np.isfinite(path).all(1)][0]
        path = np.where(np.isfinite(path), path, first)  # unseen frames: hold (no motion evidence)
        paths[b.object_id] = path
        travel[b.object_id] = float(np.linalg.norm(path - path[0], axis=1).max())
    if not travel or max(travel.values()) < config.min_motion:
        biggest = max(travel.values(), default=0.0)
        raise SysidError(f"nothing moves in this recording (largest object displacement {1000 * biggest:.1f} mm < "
                         f"{1000 * config.min_motion:.0f} mm): no parameter can be identified")
    # wrenches: to the object the line of action passes through, at the wrench's time
    targets: list[int | None] = []
    for w in obs.wrenches:
        k = int(np.clip(np.searchsorted(obs.stamps_ns, w.stamp_ns, side="right") - 1, 0, T - 1))
        tgt = _wrench_target(w, {oid: p[k] for oid, p in paths.items()})
        if tgt is None and w.line_point() is not None:
            log.warning("applied wrench at %.3f s passes through no object's centre (within 5 cm): ignored",
                        (w.stamp_ns - obs.stamps_ns[0]) * 1e-9)
        targets.append(tgt)
    out = []
    for b in model.bodies:
        oid, path = b.object_id, paths[b.object_id]
        step = np.linalg.norm(np.diff(path, axis=0), axis=1)
        speed = step / dt
        moving = np.nonzero(speed > max(0.02, config.min_motion / max(T * dt, 1e-9)))[0]
        moved = travel[oid] >= config.min_motion and len(moving) > 0
        window = (int(moving[0]), int(min(moving[-1] + 1, T - 1))) if moved else None
        events = [i for i, t in enumerate(targets) if t == oid]
        free = False
        if moved:
            if obs.pusher_position is not None:
                d = np.linalg.norm(obs.pusher_position[1:, :2] - path[1:, :2], axis=1)
                free = bool(np.any((speed > 0.02) & (d > 0.06)))
            else:
                free = True
        vz = np.diff(path[:, 2]) / dt
        impact = float(max(0.0, -vz.min())) if len(vz) and moved else 0.0
        a = Identifiability(oid, travel[oid], window, events, free, impact)
        for name in PARAM_NAMES:
            ok, why = _identifiable(name, a, config)
            a.identifiable[name] = ok
            if not ok:
                a.reasons[name] = why
        out.append(a)
    return out, targets


def _identifiable(name: str, a: Identifiability, config: SysidConfig) -> tuple[bool, str]:
    if name not in config.params:
        return False, "not asked for"
    if a.moving_frames is None:
        return False, f"the object does not move (its centre travels {1000 * a.travel_m:.1f} mm)"
    if name == "mass":
        if not a.wrench_events:
            return False, ("no known force acts on it: a pusher at a commanded speed moves any mass alike and "
                           "friction decelerates any mass alike (mass needs a known force or impulse)")
        return True, ""
    if name == "mu":
        if not a.free_slide:
            return False, "it never slides free of the pusher (friction only shows in the deceleration of a free slide)"
        return True, ""
    if name in ("ke", "kd"):
        if a.impact_speed < 0.2:
            return False, (f"no impact (largest downward speed {a.impact_speed:.2f} m/s < 0.2 m/s): resting contact "
                           "deforms by a fraction of a millimetre")
        return True, ""
    return False, ("friction stiffness sets a creep of millimetres per second below the Coulomb limit: invisible at "
                   "30 fps")


# ------------------------------------------------------------------------------------------------ rendering
class _Renderer:
    """Renders the moving Gaussians (bodies and pusher) over a once-rendered static remainder (table, fixed objects).

    Exact when nothing static is in front of a moving object (a tabletop seen from above); the static part is
    rendered once per camera instead of every iteration."""

    def __init__(self, gaussians: GaussianSet, binding: ParticleBinding, cameras: list[CameraModel],
                 background: Sequence[float]) -> None:
        from vidyn_ros.render import render_torch

        self.render = render_torch
        self.cameras = cameras
        moving = binding.body != -1
        self.moving = moving
        self.gaussians = gaussians.detach().to("cpu")
        self.binding = binding
        static = self.gaussians.subset(~moving)
        bg = torch.tensor(background, dtype=torch.float32)
        with torch.no_grad():
            out = self.render(static, cameras, background=bg)
        self.static_rgb = out.rgb  # [C, H, W, 3] composited over the background colour
        self.static_depth = out.depth
        self.static_alpha = out.alpha

    def __call__(self, body_pos: torch.Tensor, body_quat: torch.Tensor, pusher_pos: torch.Tensor | None,
                 pusher_quat: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb [C, H, W, 3] and depth [C, H, W] of the scene with bodies at these poses."""
        p, q = self.binding.pose(body_pos, body_quat, pusher_pos, pusher_quat)
        g = self.gaussians
        mv = self.moving
        moving = GaussianSet(means=p[mv], quats=q[mv], log_scales=g.log_scales[mv], colors=g.colors[mv],
                             opacity_logits=g.opacity_logits[mv], object_ids=g.object_ids[mv])
        out = self.render(moving, self.cameras, background=(0.0, 0.0, 0.0))
        a = out.alpha.unsqueeze(-1)
        rgb = out.rgb + (1 - a) * self.static_rgb
        depth = out.depth * out.alpha + (1 - out.alpha) * self.static_depth
        return rgb, depth


# ------------------------------------------------------------------------------------------------ identification
@dataclass
class _Problem:
    model: PhysicsModel
    binding: ParticleBinding
    obs: Observation
    forces: torch.Tensor  # [steps, K, 3]
    frames: list[int]  # frames in the loss
    last: int  # last frame simulated
    pusher_lin: torch.Tensor | None  # [1, last, 3]


def _simulate(prob: _Problem, params: PhysicsParams, worlds: int = 1):
    m = prob.model
    pos, quat = m.initial_pose()
    K = len(m.bodies)
    kw: dict[str, Any] = {}
    if m.pusher is not None:
        pp = torch.tensor(prob.obs.pusher_position[0], dtype=torch.float32) if prob.obs.pusher_position is not None \
            else prob.binding.pusher_position
        kw = dict(pusher_position=pp, pusher_quat=prob.binding.pusher_quat, pusher_linear=prob.pusher_lin)
    return m.simulate(pos, quat, torch.zeros(K, 3), torch.zeros(K, 3), frames=prob.last, frame_dt=prob.obs.frame_dt,
                      forces=prob.forces[None, : prob.last * m.steps_for(prob.obs.frame_dt)], params=params,
                      worlds=worlds, **kw)


def _pixel_loss(prob: _Problem, renderer: _Renderer, params: PhysicsParams, depth_weight: float) -> torch.Tensor:
    traj = _simulate(prob, params)
    obs = prob.obs
    total = torch.zeros(())
    for f in prob.frames:
        if f == 0:
            pos, quat = prob.model.initial_pose()
        else:
            pos, quat = traj.position[0, f - 1], traj.quat[0, f - 1]
        pp = traj.pusher_position[0, f - 1] if prob.model.pusher is not None and f > 0 else None
        pq = traj.pusher_quat[0, f - 1] if prob.model.pusher is not None and f > 0 else None
        rgb, depth = renderer(pos, quat, pp, pq)
        total = total + ((rgb - obs.images[f]) ** 2).mean()
        if depth_weight > 0 and obs.depth is not None:
            valid = obs.depth[f] > 0
            total = total + depth_weight * ((depth - obs.depth[f])[valid] ** 2).mean()
    return total / len(prob.frames)


def _params_from(base: PhysicsParams, unit: dict[str, torch.Tensor], free: dict[str, torch.Tensor]) -> PhysicsParams:
    """Parameters where ``free[name]`` [K] bool marks the entries taken from ``unit[name]`` (normalised)."""
    out = {}
    for name, v in base.as_dict().items():
        if name in unit:
            out[name] = torch.where(free[name], _from_unit(name, unit[name]), v)
        else:
            out[name] = v
    return PhysicsParams(**out)


def _grid_init(prob: _Problem, names: list[str], free: dict[str, torch.Tensor], base: PhysicsParams, grid: int,
               score: Callable[[Any, list[int]], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every free body tries the same grid of values (bodies do not interact here: each body's best grid point is
    read off its own score) in parallel worlds; returns the best normalised values per body."""
    axes = [(torch.arange(grid, dtype=torch.float32) + 0.5) / grid for _ in names]  # cell centres of the box
    mesh = torch.stack([m.reshape(-1) for m in torch.meshgrid(*axes, indexing="ij")], 1)  # [G, P]
    G, K = mesh.shape[0], len(prob.model.bodies)
    per_world = {}
    for name, v in base.as_dict().items():
        vv = v.expand(G, K).clone()
        if name in names:
            j = names.index(name)
            vals = _from_unit(name, mesh[:, j])[:, None].expand(G, K)
            vv = torch.where(free[name][None, :], vals, vv)
        per_world[name] = vv
    with torch.no_grad():
        traj = _simulate(prob, PhysicsParams(**per_world), worlds=G)
        s = score(traj, prob.frames)  # [G, K]
    best = s.argmin(0)  # [K]
    return {name: mesh[best, j] for j, name in enumerate(names)}


def _track_score(prob: _Problem) -> Callable[[Any, list[int]], torch.Tensor]:
    """Squared distance of simulated body centres to the perception-tracked centres (offset at frame 0 removed)."""
    obs, m = prob.obs, prob.model
    pos0, _ = m.initial_pose()
    tracked = []
    for k, b in enumerate(m.bodies):
        path = obs.tracked.get(b.object_id)
        path = np.tile(b.position, (len(obs.stamps_ns), 1)) if path is None else np.asarray(path)
        first = path[np.isfinite(path).all(1)][0] if np.isfinite(path).any() else b.position
        tracked.append(torch.tensor(path - first, dtype=torch.float32) + pos0[k])
    tracked_t = torch.stack(tracked, 1)  # [T, K, 3]

    def score(traj, frames: list[int]) -> torch.Tensor:
        fs = [f for f in frames if f > 0]
        sim = traj.position[:, [f - 1 for f in fs]]  # [G, F, K, 3]
        ref = tracked_t[fs][None]
        d = ((sim - ref) ** 2).sum(-1)
        return torch.nan_to_num(d, nan=0.0).mean(1)

    return score


def identify(
    gaussians: GaussianSet,
    model: PhysicsModel,
    binding: ParticleBinding,
    obs: Observation,
    config: SysidConfig | None = None,
    progress: bool = False,
    true_paths: dict[int, np.ndarray] | None = None,
) -> SysidResult:
    """Identify the parameters ``config.params`` of the model's bodies from ``obs`` (see the module docstring).

    ``true_paths`` (object id -> [T, 3] true body centres) switches the loss to 3D supervision on true states
    (∇Sim's "diffphysics" baseline; evaluation only, never the deployed path)."""
    cfg = config or SysidConfig()
    for p in cfg.params:
        if p not in PARAM_NAMES:
            raise SysidError(f"unknown parameter {p!r} (choose from {', '.join(PARAM_NAMES)})")
    t_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    ident, targets = analyse(model, obs, cfg)
    K = len(model.bodies)
    body_index = {b.object_id: k for k, b in enumerate(model.bodies)}
    names = [n for n in cfg.params if any(a.identifiable.get(n) for a in ident)]
    free = {n: torch.tensor([a.identifiable.get(n, False) for a in ident]) for n in PARAM_NAMES}
    # frames: the motion windows of bodies with something to identify, thinned to max_frames
    wanted: set[int] = set()
    for a in ident:
        if a.moving_frames is not None and any(a.identifiable.get(n) for n in names):
            lo, hi = a.moving_frames
            wanted.update(range(max(0, lo), min(len(obs.stamps_ns) - 1, hi + 2) + 1, cfg.frame_stride))
    frames = sorted(wanted)
    if len(frames) > cfg.max_frames:
        pick = np.unique(np.round(np.linspace(0, len(frames) - 1, cfg.max_frames)).astype(int))
        frames = [frames[i] for i in pick]
    if not names or not frames:
        reasons = "; ".join(f"object {a.object_id}: " + ", ".join(f"{k}: {v}" for k, v in a.reasons.items())
                            for a in ident)
        raise SysidError(f"this recording identifies none of {', '.join(cfg.params)} ({reasons})")
    last = max(max(frames), 1)
    dt = obs.frame_dt
    steps = model.steps_for(dt)
    forces = forces_from_wrenches(obs.wrenches, targets, body_index, int(obs.stamps_ns[0]), last * steps, dt / steps, K)
    pusher_lin = None
    if model.pusher is not None and obs.pusher_position is not None:
        pp = torch.tensor(obs.pusher_position[: last + 1], dtype=torch.float32)
        pusher_lin = ((pp[1:] - pp[:-1]) / dt)[None]
    prob = _Problem(model, binding, obs, forces, frames, last, pusher_lin)
    base = model.params.detach()
    base = PhysicsParams(**{k: v.detach().clone().float().reshape(K) for k, v in base.as_dict().items()})
    # initial values (normalised to the prior box)
    unit: dict[str, torch.Tensor] = {}
    if cfg.init == "random":
        unit = {n: torch.tensor(rng.uniform(0.0, 1.0, K), dtype=torch.float32) for n in names}
    elif cfg.init == "prior":
        unit = {n: _to_unit(n, torch.full((K,), prior_centre(n))) for n in names}
    elif cfg.init in ("track", "pixels"):
        if cfg.init == "track":
            score = _track_score(prob)
        else:
            renderer_g = _Renderer(gaussians, binding, obs.cameras, obs.background)

            def score(traj, fs: list[int]) -> torch.Tensor:  # pixel loss per world; every body gets the same value
                out = []
                for w in range(traj.position.shape[0]):
                    tot = 0.0
                    for f in fs:
                        if f == 0:
                            continue
                        pp = traj.pusher_position[w, f - 1] if model.pusher is not None else None
                        pq = traj.pusher_quat[w, f - 1] if model.pusher is not None else None
                        rgb, _ = renderer_g(traj.position[w, f - 1], traj.quat[w, f - 1], pp, pq)
                        tot += float(((rgb - obs.images[f]) ** 2).mean())
                    out.append(tot)
                return torch.tensor(out)[:, None].expand(-1, K)

        unit = _grid_init(prob, names, free, base, cfg.grid, score)
    else:
        raise SysidError(f"unknown init {cfg.init!r} (track, pixels, prior, random)")
    initial_params = _params_from(base, unit, free)
    # refinement on the pixel loss (or on true states for the 3D-supervised baseline), unconstrained: unit = sigmoid(y)
    y = {n: torch.logit(unit[n].clone().clamp(0.02, 0.98)).requires_grad_(True) for n in names}
    renderer = _Renderer(gaussians, binding, obs.cameras, obs.background) if true_paths is None else None
    true_t = None
    if true_paths is not None:
        true_t = torch.stack([torch.tensor(np.asarray(true_paths[b.object_id]), dtype=torch.float32)
                              for b in model.bodies], 1)  # [T, K, 3]
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] = (math.inf, {n: unit[n].clone() for n in names})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iterations, desc="sysid", unit="eval")

    def evaluate() -> torch.Tensor:
        nonlocal best
        z = {n: torch.sigmoid(v) for n, v in y.items()}
        params = _params_from(base, z, free)
        if true_t is not None:
            traj = _simulate(prob, params)
            fs = [f for f in frames if f > 0]
            loss = ((traj.position[0, [f - 1 for f in fs]] - true_t[fs]) ** 2).sum(-1).mean()
        else:
            loss = _pixel_loss(prob, renderer, params, cfg.depth_weight)
        lv = float(loss.detach())
        history.append({"evaluation": len(history), "loss": lv,
                        **{n: [round(float(x), 8) for x in getattr(params, n).detach()] for n in names}})
        if lv < best[0]:
            best = (lv, {n: v.detach().clone() for n, v in z.items()})
        if bar is not None:
            bar.set_postfix(loss=f"{lv:.3g}")
            bar.update(1)
        return loss

    if cfg.optimizer == "lbfgs":
        opt = torch.optim.LBFGS(list(y.values()), lr=1.0, max_iter=cfg.iterations, max_eval=cfg.iterations,
                                tolerance_grad=1e-12, tolerance_change=1e-14, history_size=10,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = evaluate()
            loss.backward()
            for v in y.values():
                v.grad.nan_to_num_(0.0)
            return loss

        opt.step(closure)
    else:
        opt = torch.optim.Adam(list(y.values()), lr=cfg.lr)
        for _ in range(cfg.iterations):
            opt.zero_grad()
            loss = evaluate()
            loss.backward()
            for v in y.values():
                v.grad.nan_to_num_(0.0)
            opt.step()
    if bar is not None:
        bar.close()
    final = _params_from(base, best[1], free)
    estimates: dict[int, dict[str, float | None]] = {}
    initial: dict[int, dict[str, float]] = {}
    for k, a in enumerate(ident):
        estimates[a.object_id] = {n: (float(getattr(final, n)[k]) if a.identifiable.get(n) else None)
                                  for n in cfg.params}
        initial[a.object_id] = {n: float(getattr(initial_params, n)[k]) for n in cfg.params}
    return SysidResult(object_ids=[b.object_id for b in model.bodies], estimates=estimates, initial=initial,
                       identifiability=ident, history=history, frames_used=frames,
                       seconds=time.perf_counter() - t_start, params=final.detach())


# ------------------------------------------------------------------------------------------------ self-consistent
def impulse_wrenches(events: Sequence[tuple[float, np.ndarray, np.ndarray]], duration_s: float, t0_ns: int = 0
                     ) -> list[AppliedWrench]:
    """Wrench messages for impulses: ``(time [s], impulse [N s], point of application [3])`` each, as a force held
    for ``duration_s`` (then zero), about the world origin."""
    out = []
    for t, j, p in sorted(events, key=lambda e: e[0]):
        f = np.asarray(j, dtype=np.float64) / duration_s
        start = t0_ns + round(t * 1e9)
        out.append(AppliedWrench(start, tuple(float(v) for v in f), tuple(float(v) for v in np.cross(p, f))))
        out.append(AppliedWrench(start + round(duration_s * 1e9), (0.0, 0.0, 0.0)))
    return out


def render_observation(gaussians: GaussianSet, model: PhysicsModel, binding: ParticleBinding, params: PhysicsParams,
                       cameras: list[CameraModel], frames: int, fps: float, wrenches: Sequence[AppliedWrench],
                       background: Sequence[float] = (0.0, 0.0, 0.0), t0_ns: int = 0) -> Observation:
    """The ∇Sim setting: a video of the model itself with parameters ``params`` under known wrenches, rendered by
    the project's renderer (what ``identify`` should invert exactly). ``tracked`` holds the simulated body centres
    (a perfect tracker)."""
    dt = 1.0 / fps
    stamps = np.array([t0_ns + round(k * dt * 1e9) for k in range(frames)], dtype=np.int64)
    centres = {b.object_id: b.position for b in model.bodies}
    targets = [_wrench_target(w, centres) for w in wrenches]
    body_index = {b.object_id: k for k, b in enumerate(model.bodies)}
    steps = model.steps_for(dt)
    forces = forces_from_wrenches(wrenches, targets, body_index, t0_ns, (frames - 1) * steps, dt / steps,
                                  len(model.bodies))
    pos0, quat0 = model.initial_pose()
    kw: dict[str, Any] = {}
    if model.pusher is not None:
        kw = dict(pusher_position=binding.pusher_position, pusher_quat=binding.pusher_quat)
    K = len(model.bodies)
    with torch.no_grad():
        traj = model.simulate(pos0, quat0, torch.zeros(K, 3), torch.zeros(K, 3), frames=frames - 1, frame_dt=dt,
                              forces=forces[None], params=params, **kw)
        renderer = _Renderer(gaussians, binding, cameras, background)
        images, depths = [], []
        for f in range(frames):
            pos, quat = (pos0, quat0) if f == 0 else (traj.position[0, f - 1], traj.quat[0, f - 1])
            rgb, depth = renderer(pos, quat, None, None)
            images.append(rgb)
            depths.append(depth)
    tracked = {b.object_id: np.concatenate([pos0[k][None].numpy(), traj.position[0, :, k].numpy()])
               for k, b in enumerate(model.bodies)}
    return Observation(cameras=list(cameras), stamps_ns=stamps, images=torch.stack(images), depth=torch.stack(depths),
                       wrenches=list(wrenches), pusher_position=None, tracked=tracked,
                       background=tuple(float(c) for c in background))
