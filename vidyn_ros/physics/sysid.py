"""System identification from video (∇Sim, seed 003): mass and contact parameters of the scene's objects by gradient
descent on a pixel loss through the physics and the renderer.

Pipeline (``identify``): the scene's Gaussians at the first frame -> physics model (bodies fitted to the objects) ->
known actuation (applied wrenches, pusher path) -> which parameters the recording can identify (``analyse``) ->
initial values (sampling the prior box: on the perception-tracked object paths, or on the pixel loss) -> L-BFGS (or
Adam) on the pixel loss ``mean over (frame, camera, pixel) of |render(sim(θ))_t - observed_t|²`` through renderer,
Gaussians, body states and Newton's tape -> a derivative-free polish on the loss values -> the identified values,
with their loss history.

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
from vidyn_ros.geometry_torch import quat_mul, quat_to_axis_angle
from vidyn_ros.physics.model import PARAM_NAMES, PRIOR_RANGES, PhysicsModel, PhysicsParams
from vidyn_ros.physics.scene import PUSHER, ParticleBinding
from vidyn_ros.types import AppliedWrench, CameraModel, GaussianSet

__all__ = [
    "Identifiability",
    "Observation",
    "SysidConfig",
    "SysidError",
    "SysidResult",
    "analyse",
    "build_problems",
    "forces_from_wrenches",
    "identify",
    "loss_curve",
    "prior_centre",
    "render_window",
]

log = logging.getLogger(__name__)

LOG_PARAMS = ("mass", "mu", "ke", "kd", "kf")  # optimised in log space: a slide depends on m^2 mu (a straight valley)


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
        grid_levels: coarse-to-fine levels of the "track" grid (then 9 points over 4 cells around the best): the
            tracked-path loss of a slide has a long shallow valley along m²μ = const, and is jagged on small scales
            (when contacts stop sliding is a discrete event), where a sampled search is more robust than L-BFGS.
        polish: loss evaluations of a derivative-free final stage after the gradient steps (bounded Brent for one
            free value in the window, Nelder-Mead for more; 0 = none). Through a stop the tape's gradient can be
            wrong, sign included (measured: a cylinder rocking to rest, d position / d μ +2.5 where central
            differences give -0.38), and L-BFGS then halts a few percent off; the loss values themselves are exact,
            so a search on values alone takes the last digits (self-consistent video: to ~1e-6 relative).
        polish_radius: half-width of the polish's search box around the gradient stage's best point, in the
            normalised parameter space (the prior box is [0, 1]; the sampled initialisation's last grid spacing is
            ~0.07, so 0.05 covers a gradient stage that never moved).
        polish_scan: (one free value only; 0 = off) after Brent, probe this many points on each side of its result at
            each spacing of ``polish_scan_steps`` in turn (fractions of the box, around the best point so far) and run
            Brent again in the cell of the lowest: where a body comes to rest the true basin can be narrow (±3e-4 of
            μ for a box, narrower than 2.5e-4 for a tipped cylinder) behind a bump, and Brent stops in a dip next to
            it.
        polish_scan_steps: the scan's spacings, coarse to fine.
        frame_stride: use every n-th frame of a motion window in the pixel loss.
        max_frames: at most this many rendered frames in the loss (evenly spread over the motion windows).
        depth_weight: weight of the depth term (|rendered - observed depth|² [m²], where both exist; 0 = colour only).
        min_motion: an object whose tracked centre moves less than this [m] did not move.
        motion_speed: tracked speed [m/s] above which an object is moving (tracking noise of a symmetric object at
            rest, a cylinder's turning centroid, reaches ~2-3 cm/s).
        seed: for "random" initialisation.
    """

    params: tuple[str, ...] = ("mass", "mu")
    iterations: int = 30
    optimizer: str = "lbfgs"
    lr: float = 0.1
    init: str = "track"
    grid: int = 15
    grid_levels: int = 3
    polish: int = 40
    polish_radius: float = 0.05
    polish_scan: int = 12
    polish_scan_steps: tuple[float, ...] = (2.5e-4, 2.5e-5)
    frame_stride: int = 1
    max_frames: int = 12
    depth_weight: float = 0.0
    min_motion: float = 0.005
    motion_speed: float = 0.05
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
        tracked_quat: object id -> [T, 4] tracked rotation (wxyz) or None (rotations assumed unchanged).
        period_s: the frame period [s] when known exactly (a generated video); None: the median stamp difference
            (stamps are whole nanoseconds: 1/30 s becomes 33333333 ns, and a simulation stepped at that period
            drifts from one stepped at 1/30 s by enough to leave the loss's minimum off the truth).
    """

    cameras: list[CameraModel]
    stamps_ns: np.ndarray
    images: torch.Tensor
    depth: torch.Tensor | None
    wrenches: list[AppliedWrench]
    pusher_position: np.ndarray | None
    tracked: dict[int, np.ndarray]
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tracked_quat: dict[int, np.ndarray] | None = None
    period_s: float | None = None

    @property
    def frame_dt(self) -> float:
        if self.period_s is not None:
            return self.period_s
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
    segments: list[tuple[int, int]] = field(default_factory=list)  # (first, last) frame of each motion


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
    tracked_fit: dict[int, dict[str, float | None]] | None = None  # the state fit on tracked paths (init "track")

    def as_dict(self) -> dict[str, Any]:
        return {
            "object_ids": self.object_ids,
            "estimates": {str(k): v for k, v in self.estimates.items()},
            "tracked_path_fit": None if self.tracked_fit is None else {str(k): v for k, v in self.tracked_fit.items()},
            "initial": {str(k): v for k, v in self.initial.items()},
            "identifiability": [
                {"object_id": a.object_id, "travel_m": round(a.travel_m, 5), "moving_frames": a.moving_frames,
                 "wrench_events": a.wrench_events, "free_slide": a.free_slide,
                 "impact_speed": round(a.impact_speed, 4), "identifiable": a.identifiable, "reasons": a.reasons,
                 "segments": a.segments}
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
        segments = _motion_segments(speed > config.motion_speed)
        moved = travel[oid] >= config.min_motion and len(segments) > 0
        window = (segments[0][0], min(segments[-1][1] + 1, T - 1)) if moved else None
        events = [i for i, t in enumerate(targets) if t == oid]
        free = False
        if moved:
            if obs.pusher_position is not None:
                d = np.linalg.norm(obs.pusher_position[1:, :2] - path[1:, :2], axis=1)
                free = bool(np.any((speed > config.motion_speed) & (d > 0.06)))
            else:
                free = True
        vz = np.diff(path[:, 2]) / dt
        impact = float(max(0.0, -vz.min())) if len(vz) and moved else 0.0
        a = Identifiability(oid, travel[oid], window, events, free, impact,
                            segments=[(lo, min(hi + 1, T - 1)) for lo, hi in segments] if moved else [])
        for name in PARAM_NAMES:
            ok, why = _identifiable(name, a, config)
            a.identifiable[name] = ok
            if not ok:
                a.reasons[name] = why
        out.append(a)
    return out, targets


def _motion_segments(fast: np.ndarray, gap: int = 1) -> list[tuple[int, int]]:
    """Runs of True in ``fast`` (per frame interval) as (first, last) interval indices, runs split by more than
    ``gap`` slow intervals merged otherwise (one missed frame does not split a slide)."""
    idx = np.nonzero(fast)[0]
    out: list[list[int]] = []
    for i in idx.tolist():
        if out and i - out[-1][1] <= gap + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return [(a, b) for a, b in out]


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
    """Renders the Gaussians of the bodies being identified (and the pusher) over a once-rendered remainder (the
    table and every other object at its pose when the window starts).

    Exact when nothing of the remainder moves during the window or stands in front of a moving object (a tabletop
    seen from above); the remainder is rendered once per camera instead of every evaluation."""

    def __init__(self, gaussians: GaussianSet, binding: ParticleBinding, cameras: list[CameraModel],
                 background: Sequence[float], bodies: Sequence[int], start_pos: torch.Tensor,
                 start_quat: torch.Tensor, pusher_pos: torch.Tensor | None = None,
                 pusher_quat: torch.Tensor | None = None) -> None:
        from vidyn_ros.render import render_torch

        self.render = render_torch
        self.cameras = cameras
        self.binding = binding
        moving = torch.isin(binding.body, torch.tensor(list(bodies), dtype=torch.int64))
        if pusher_pos is not None:
            moving |= binding.body == PUSHER
        self.moving = moving
        g = gaussians.detach().to("cpu")
        self.gaussians = g
        with torch.no_grad():
            p, q = binding.pose(start_pos, start_quat, pusher_pos, pusher_quat)
            static = GaussianSet(means=p[~moving], quats=q[~moving], log_scales=g.log_scales[~moving],
                                 colors=g.colors[~moving], opacity_logits=g.opacity_logits[~moving],
                                 object_ids=g.object_ids[~moving])
            out = self.render(static, cameras, background=torch.tensor(background, dtype=torch.float32))
        self.static_rgb = out.rgb  # [C, H, W, 3] composited over the background colour
        self.static_depth = out.depth

    def __call__(self, body_pos: torch.Tensor, body_quat: torch.Tensor, pusher_pos: torch.Tensor | None,
                 pusher_quat: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb [C, H, W, 3] and depth [C, H, W] of the scene with bodies at these poses."""
        p, q = self.binding.pose(body_pos, body_quat, pusher_pos, pusher_quat)
        g, mv = self.gaussians, self.moving
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
    """One motion window: the simulation starts at frame ``start`` from the tracked state and runs to ``last``;
    the loss uses ``frames`` (absolute indices, > start); ``bodies`` are identified here."""

    model: PhysicsModel
    binding: ParticleBinding
    obs: Observation
    start: int
    last: int
    frames: list[int]
    bodies: list[int]
    pos0: torch.Tensor  # [K, 3]
    quat0: torch.Tensor  # [K, 4]
    lin0: torch.Tensor
    ang0: torch.Tensor
    forces: torch.Tensor  # [steps, K, 3] from ``start``
    pusher_pos0: torch.Tensor | None
    pusher_lin: torch.Tensor | None  # [1, last - start, 3]

    def renderer(self, gaussians: GaussianSet) -> _Renderer:
        pq = self.binding.pusher_quat if self.pusher_pos0 is not None else None
        return _Renderer(gaussians, self.binding, self.obs.cameras, self.obs.background, self.bodies, self.pos0,
                         self.quat0, self.pusher_pos0, pq)

    def pose_at(self, traj: Any, f: int, w: int = 0) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
        """Body and pusher poses at absolute frame ``f`` of world ``w`` of a simulation of this problem."""
        if f == self.start:
            pq = self.binding.pusher_quat if self.pusher_pos0 is not None else None
            return self.pos0, self.quat0, self.pusher_pos0, pq
        i = f - self.start - 1
        if self.pusher_pos0 is None:
            return traj.position[w, i], traj.quat[w, i], None, None
        return traj.position[w, i], traj.quat[w, i], traj.pusher_position[w, i], traj.pusher_quat[w, i]


def _tracked_state(model: PhysicsModel, obs: Observation, frame: int) -> tuple[torch.Tensor, ...]:
    """Body centres, rotations, velocities at ``frame`` from the tracked objects (the build pose moved by the
    tracked rigid motion since frame 0); velocities by finite difference with the frame before."""

    def pose(f: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos, quat = model.initial_pose()
        if f == 0:
            return pos, quat
        out_p, out_q = pos.clone(), quat.clone()
        for k, b in enumerate(model.bodies):
            path = obs.tracked.get(b.object_id)
            if path is None or not np.isfinite(path[f]).all() or not np.isfinite(path[0]).all():
                continue
            R = np.eye(3)
            qrel = np.array([1.0, 0.0, 0.0, 0.0])
            rot = obs.tracked_quat.get(b.object_id) if obs.tracked_quat else None
            if rot is not None and np.isfinite(rot[f]).all() and np.isfinite(rot[0]).all():
                from vidyn_ros.geometry import matrix_to_quat_wxyz, quat_wxyz_to_matrix

                R = quat_wxyz_to_matrix(rot[f]) @ quat_wxyz_to_matrix(rot[0]).T
                qrel = matrix_to_quat_wxyz(R)
            c = path[f] + R @ (b.position - path[0])
            out_p[k] = torch.tensor(c, dtype=torch.float32)
            out_q[k] = quat_mul(torch.tensor(qrel, dtype=torch.float32), quat[k])
        return out_p, out_q

    p1, q1 = pose(frame)
    if frame == 0:
        z = torch.zeros_like(p1)
        return p1, q1, z, z.clone()
    p0, q0 = pose(frame - 1)
    dt = obs.frame_dt
    lin = (p1 - p0) / dt
    ang = quat_to_axis_angle(quat_mul(q1, q0 * torch.tensor([1.0, -1.0, -1.0, -1.0]))) / dt
    return p1, q1, lin, ang


def _windows(ident: list[Identifiability], names: list[str], T: int) -> list[tuple[int, int, int, list[int]]]:
    """Motion windows (simulation start, first loss frame - 1, last frame, body indices) of the bodies with
    something to identify; windows that overlap are merged (their bodies are identified together)."""
    spans = []
    for k, a in enumerate(ident):
        if a.moving_frames is not None and any(a.identifiable.get(n) for n in names):
            for lo, hi in a.segments or [a.moving_frames]:
                spans.append([max(0, lo - 1), min(T - 1, hi + 2), [k]])
    spans.sort(key=lambda s: s[0])
    merged: list[list] = []
    for s in spans:
        if merged and s[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], s[1])
            merged[-1][2] = sorted(set(merged[-1][2]) | set(s[2]))
        else:
            merged.append(s)
    if merged:
        # nothing moved before the first window: simulate it from frame 0, the scene as built (no tracked state
        # with finite-difference velocities to start from; exact in the self-consistent setting)
        first_motion = min(lo for a in ident for lo, _ in (a.segments or ([a.moving_frames] if a.moving_frames
                                                                           else [])))
        sim0 = 0 if first_motion >= merged[0][0] else merged[0][0]
        return [(sim0 if i == 0 else int(a), int(a), int(b), list(c)) for i, (a, b, c) in enumerate(merged)]
    return []


def build_problems(model: PhysicsModel, binding: ParticleBinding, obs: Observation, cfg: SysidConfig
                   ) -> tuple[list[_Problem], list[Identifiability], list[str], dict[str, torch.Tensor]]:
    """Identifiability, then one problem per motion window: (problems, identifiability, names, free mask)."""
    for p in cfg.params:
        if p not in PARAM_NAMES:
            raise SysidError(f"unknown parameter {p!r} (choose from {', '.join(PARAM_NAMES)})")
    ident, targets = analyse(model, obs, cfg)
    K = len(model.bodies)
    T = len(obs.stamps_ns)
    body_index = {b.object_id: k for k, b in enumerate(model.bodies)}
    names = [n for n in cfg.params if any(a.identifiable.get(n) for a in ident)]
    free = {n: torch.tensor([a.identifiable.get(n, False) for a in ident]) for n in PARAM_NAMES}
    windows = _windows(ident, names, T)
    if not names or not windows:
        reasons = "; ".join(f"object {a.object_id}: " + ", ".join(f"{k}: {v}" for k, v in a.reasons.items())
                            for a in ident)
        raise SysidError(f"this recording identifies none of {', '.join(cfg.params)} ({reasons})")
    dt = obs.frame_dt
    steps = model.steps_for(dt)
    problems = []
    for start, loss_from, last, bodies in windows:
        last = max(last, start + 1)
        frames = list(range(loss_from + 1, last + 1, cfg.frame_stride))
        if len(frames) > cfg.max_frames:
            pick = np.unique(np.round(np.linspace(0, len(frames) - 1, cfg.max_frames)).astype(int))
            frames = [frames[i] for i in pick]
        n = (last - start) * steps
        forces = forces_from_wrenches(obs.wrenches, targets, body_index, int(obs.stamps_ns[start]), n, dt / steps, K)
        pos0, quat0, lin0, ang0 = _tracked_state(model, obs, start)
        pusher_pos0 = pusher_lin = None
        if model.pusher is not None:
            if obs.pusher_position is not None:
                pp = torch.tensor(obs.pusher_position[start: last + 1], dtype=torch.float32)
                pusher_pos0 = pp[0]
                pusher_lin = ((pp[1:] - pp[:-1]) / dt)[None]
            else:
                pusher_pos0 = binding.pusher_position
        problems.append(_Problem(model, binding, obs, start, last, frames, bodies, pos0, quat0, lin0, ang0, forces,
                                 pusher_pos0, pusher_lin))
    return problems, ident, names, free


def _simulate(prob: _Problem, params: PhysicsParams, worlds: int = 1):
    m = prob.model
    kw: dict[str, Any] = {}
    if m.pusher is not None:
        kw = dict(pusher_position=prob.pusher_pos0, pusher_quat=prob.binding.pusher_quat,
                  pusher_linear=prob.pusher_lin)
    return m.simulate(prob.pos0, prob.quat0, prob.lin0, prob.ang0, frames=prob.last - prob.start,
                      frame_dt=prob.obs.frame_dt, forces=prob.forces[None], params=params, worlds=worlds, **kw)


def _pixel_loss(prob: _Problem, renderer: _Renderer, params: PhysicsParams, depth_weight: float) -> torch.Tensor:
    traj = _simulate(prob, params)
    obs = prob.obs
    total = torch.zeros(())
    for f in prob.frames:
        rgb, depth = renderer(*prob.pose_at(traj, f))
        total = total + ((rgb - obs.images[f]) ** 2).mean()
        if depth_weight > 0 and obs.depth is not None:
            valid = obs.depth[f] > 0
            total = total + depth_weight * ((depth - obs.depth[f])[valid] ** 2).mean()
    return total / len(prob.frames)


def _params_from(base: PhysicsParams, unit: dict[str, torch.Tensor], free: dict[str, torch.Tensor]) -> PhysicsParams:
    """Parameters where ``free[name]`` [K] bool marks the entries taken from ``unit[name]`` (normalised)."""
    out = {}
    for name, v in base.as_dict().items():
        out[name] = torch.where(free[name], _from_unit(name, unit[name]), v) if name in unit else v
    return PhysicsParams(**out)


def _grid_init(prob: _Problem, names: list[str], free: dict[str, torch.Tensor], base: PhysicsParams, grid: int,
               score: Callable[[Any], torch.Tensor], levels: int = 1, fine: int = 9) -> dict[str, torch.Tensor]:
    """Sampling initialisation: every free body tries the same grid of values in parallel worlds (bodies of one
    window are scored each on its own path, so each reads off its best point); with ``levels`` > 1 the grid zooms
    in around each body's best point (to 4 cells of the previous grid, at ``fine`` points per parameter). Returns
    normalised values per body."""
    K = len(prob.model.bodies)
    centre = {n: torch.full((K,), 0.5) for n in names}
    half = 0.5
    best_unit = {n: c.clone() for n, c in centre.items()}
    n = grid
    for _ in range(levels):
        offs = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 * half - half  # cell centres
        mesh = torch.stack([m.reshape(-1) for m in torch.meshgrid(*[offs] * len(names), indexing="ij")], 1)  # [G, P]
        G = mesh.shape[0]
        units = {n: (centre[n][None, :] + mesh[:, j:j + 1]).clamp(0.0, 1.0) for j, n in enumerate(names)}  # [G, K]
        per_world = {}
        for name, v in base.as_dict().items():
            vv = v.expand(G, K).clone()
            if name in names:
                vv = torch.where(free[name][None, :], _from_unit(name, units[name]), vv)
            per_world[name] = vv
        with torch.no_grad():
            sc = score(_simulate(prob, PhysicsParams(**per_world), worlds=G))  # [G, K]
        best = sc.argmin(0)  # [K]
        best_unit = {n: units[n][best, torch.arange(K)] for n in names}
        centre = best_unit
        half = 2.0 * (2 * half / n)
        n = fine
    return best_unit


def _track_score(prob: _Problem) -> Callable[[Any], torch.Tensor]:
    """Squared distance of simulated body centres to the perception-tracked ones over the window's frames."""
    ref = torch.stack([_tracked_state(prob.model, prob.obs, f)[0] for f in prob.frames])  # [F, K, 3]

    def score(traj: Any) -> torch.Tensor:
        sim = traj.position[:, [f - prob.start - 1 for f in prob.frames]]  # [G, F, K, 3]
        return torch.nan_to_num(((sim - ref[None]) ** 2).sum(-1), nan=0.0).mean(1)

    return score


def _pixel_score(prob: _Problem, renderer: _Renderer) -> Callable[[Any], torch.Tensor]:
    """The pixel loss of every world (all the window's bodies share it)."""

    def score(traj: Any) -> torch.Tensor:
        out = []
        for w in range(traj.position.shape[0]):
            tot = 0.0
            for f in prob.frames:
                rgb, _ = renderer(*prob.pose_at(traj, f, w))
                tot += float(((rgb - prob.obs.images[f]) ** 2).mean())
            out.append(tot)
        return torch.tensor(out)[:, None].expand(-1, len(prob.model.bodies))

    return score


def loss_curve(gaussians: GaussianSet, model: PhysicsModel, binding: ParticleBinding, obs: Observation,
               params: PhysicsParams, name: str, body: int, values: Sequence[float], cfg: SysidConfig
               ) -> list[float]:
    """The pixel loss of the window of body index ``body`` with parameter ``name`` set to each of ``values`` (the
    others at ``params``): the loss landscape (∇Sim Fig. 2)."""
    problems, *_ = build_problems(model, binding, obs, cfg)
    prob = next(p for p in problems if body in p.bodies)
    renderer = prob.renderer(gaussians)
    out = []
    with torch.no_grad():
        for v in values:
            vals = getattr(params, name).detach().clone().reshape(-1)
            vals[body] = float(v)
            out.append(float(_pixel_loss(prob, renderer, params.replace(**{name: vals}), cfg.depth_weight)))
    return out


def render_window(gaussians: GaussianSet, model: PhysicsModel, binding: ParticleBinding, obs: Observation,
                  params: PhysicsParams, cfg: SysidConfig, window: int = -1) -> tuple[int, torch.Tensor]:
    """The last loss frame of a motion window and the simulated render [C, H, W, 3] there (for figures)."""
    problems, *_ = build_problems(model, binding, obs, cfg)
    prob = problems[window]
    with torch.no_grad():
        traj = _simulate(prob, params)
        f = prob.frames[-1]
        return f, prob.renderer(gaussians)(*prob.pose_at(traj, f))[0].clamp(0, 1)


def identify(
    gaussians: GaussianSet,
    model: PhysicsModel,
    binding: ParticleBinding,
    obs: Observation,
    config: SysidConfig | None = None,
    progress: bool = False,
    true_paths: dict[int, np.ndarray] | None = None,
) -> SysidResult:
    """Identify the parameters ``config.params`` of the model's bodies from ``obs`` (see the module docstring), one
    motion window at a time (windows in time order; a window starts from the tracked state and uses the values
    identified in earlier windows).

    ``true_paths`` (object id -> [T, 3] true body centres) switches the loss to 3D supervision on true states
    (∇Sim's "diffphysics" baseline; evaluation only, never the deployed path)."""
    cfg = config or SysidConfig()
    t_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    problems, ident, names, free_all = build_problems(model, binding, obs, cfg)
    K = len(model.bodies)
    current = PhysicsParams(**{k: v.detach().clone().float().reshape(K) for k, v in model.params.as_dict().items()})
    initial = PhysicsParams(**{k: v.clone() for k, v in current.as_dict().items()})
    tracked_fit = PhysicsParams(**{k: v.clone() for k, v in current.as_dict().items()})
    history: list[dict[str, Any]] = []
    frames_used: list[int] = []
    bar = None
    if progress:
        from tqdm import tqdm

        stages = 2 if cfg.init == "track" and true_paths is None else 1
        bar = tqdm(total=(cfg.iterations + cfg.polish) * len(problems) * stages, desc="sysid", unit="eval")
    for w, prob in enumerate(problems):
        in_window = torch.zeros(K, dtype=torch.bool)
        in_window[prob.bodies] = True
        free = {n: m & in_window for n, m in free_all.items()}
        wnames = [n for n in names if bool(free[n].any())]
        frames_used += prob.frames
        base = current
        # initial values (normalised to the prior box)
        if cfg.init == "random":
            unit = {n: torch.tensor(rng.uniform(0.0, 1.0, K), dtype=torch.float32) for n in wnames}
        elif cfg.init == "prior":
            unit = {n: _to_unit(n, torch.full((K,), prior_centre(n))) for n in wnames}
        elif cfg.init == "track":
            unit = _grid_init(prob, wnames, free, base, cfg.grid, _track_score(prob), levels=cfg.grid_levels)
        elif cfg.init == "pixels":
            unit = _grid_init(prob, wnames, free, base, cfg.grid, _pixel_score(prob, prob.renderer(gaussians)),
                              levels=cfg.grid_levels, fine=5)
        else:
            raise SysidError(f"unknown init {cfg.init!r} (track, pixels, prior, random)")
        init_w = _params_from(base, unit, free)
        for n in wnames:
            getattr(initial, n)[free[n]] = getattr(init_w, n)[free[n]]
        if true_paths is not None:  # 3D supervision on true states (a baseline), no pixels
            current, _ = _refine(prob, base, unit, free, wnames, cfg, history, w, "true states", bar,
                                 _track_loss(prob, true_paths))
            continue
        if cfg.init == "track":  # a state fit on the perception-tracked paths first (no rendering: cheap)
            fitted, unit = _refine(prob, base, unit, free, wnames, cfg, history, w, "tracked paths", bar,
                                   _track_loss(prob))
            for n in wnames:
                getattr(tracked_fit, n)[free[n]] = getattr(fitted, n)[free[n]]
        renderer = prob.renderer(gaussians)
        current, _ = _refine(prob, base, unit, free, wnames, cfg, history, w, "pixels", bar,
                             lambda params, prob=prob, renderer=renderer: _pixel_loss(prob, renderer, params,
                                                                                       cfg.depth_weight))
    if bar is not None:
        bar.close()
    estimates: dict[int, dict[str, float | None]] = {}
    track_est: dict[int, dict[str, float | None]] = {}
    init_out: dict[int, dict[str, float]] = {}
    for k, a in enumerate(ident):
        estimates[a.object_id] = {n: (float(getattr(current, n)[k]) if a.identifiable.get(n) else None)
                                  for n in cfg.params}
        track_est[a.object_id] = {n: (float(getattr(tracked_fit, n)[k]) if a.identifiable.get(n) else None)
                                  for n in cfg.params}
        init_out[a.object_id] = {n: float(getattr(initial, n)[k]) for n in cfg.params}
    return SysidResult(object_ids=[b.object_id for b in model.bodies], estimates=estimates, initial=init_out,
                       identifiability=ident, history=history, frames_used=sorted(set(frames_used)),
                       seconds=time.perf_counter() - t_start, params=current.detach(),
                       tracked_fit=track_est if cfg.init == "track" and true_paths is None else None)


def _refine(prob: _Problem, base: PhysicsParams, unit: dict[str, torch.Tensor], free: dict[str, torch.Tensor],
            names: list[str], cfg: SysidConfig, history: list[dict[str, Any]], window: int, stage: str, bar: Any,
            loss_fn: Callable[[PhysicsParams], torch.Tensor]) -> tuple[PhysicsParams, dict[str, torch.Tensor]]:
    """Gradient-based refinement of one window (unconstrained: unit = sigmoid(y)); returns the best parameters and
    their normalised values."""
    y = {n: torch.logit(unit[n].clone().clamp(0.02, 0.98)).requires_grad_(True) for n in names}
    best: list[Any] = [math.inf, _params_from(base, unit, free), {n: v.clone() for n, v in unit.items()}]

    def evaluate_at(z: dict[str, torch.Tensor], label: str) -> torch.Tensor:
        params = _params_from(base, z, free)
        loss = loss_fn(params)
        lv = float(loss.detach())
        history.append({"window": window, "stage": label, "evaluation": len(history), "loss": lv,
                        **{n: [round(float(getattr(params, n)[k].detach()), 10) for k in prob.bodies] for n in names}})
        if lv < best[0]:
            best[0], best[1], best[2] = lv, params.detach(), {n: v.detach().clone() for n, v in z.items()}
        if bar is not None:
            bar.set_postfix(stage=label, loss=f"{lv:.3g}")
            bar.update(1)
        return loss

    def evaluate() -> torch.Tensor:
        return evaluate_at({n: torch.sigmoid(v) for n, v in y.items()}, stage)

    def backward(loss: torch.Tensor) -> None:
        loss.backward()
        for v in y.values():
            if v.grad is not None:
                v.grad.nan_to_num_(0.0)

    if cfg.iterations <= 0:
        return best[1], best[2]
    if cfg.optimizer == "lbfgs":
        # L-BFGS stops when its line search fails (a jagged patch of the loss); restart it from the best point with a
        # fresh history while evaluations remain and the restart still improves
        start_eval = len(history)
        while len(history) - start_eval < cfg.iterations:
            before = best[0]
            with torch.no_grad():
                for n, v in y.items():
                    v.copy_(torch.logit(best[2][n].clamp(1e-6, 1 - 1e-6)))
            budget = cfg.iterations - (len(history) - start_eval)
            opt = torch.optim.LBFGS(list(y.values()), lr=1.0, max_iter=budget, max_eval=budget,
                                    tolerance_grad=1e-12, tolerance_change=1e-14, history_size=10,
                                    line_search_fn="strong_wolfe")

            def closure(opt: torch.optim.LBFGS = opt) -> torch.Tensor:
                opt.zero_grad()
                loss = evaluate()
                backward(loss)
                return loss

            opt.step(closure)
            if not best[0] < before * (1 - 1e-6):
                break
    else:
        opt = torch.optim.Adam(list(y.values()), lr=cfg.lr)
        for _ in range(cfg.iterations):
            opt.zero_grad()
            backward(evaluate())
            opt.step()
    if cfg.polish > 0:
        _polish(best[2], prob.bodies, free, names, cfg, lambda z: evaluate_at(z, f"{stage}, polish"))
    return best[1], best[2]


def _polish(start: dict[str, torch.Tensor], bodies: Sequence[int], free: dict[str, torch.Tensor], names: list[str],
            cfg: SysidConfig, evaluate: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> None:
    """Derivative-free search on the loss values in a box of ``cfg.polish_radius`` around ``start`` (normalised
    values [K] per name; only the free entries of ``bodies`` move). ``evaluate`` records every point (and keeps the
    best), so the result is never worse than ``start``."""
    from scipy.optimize import minimize, minimize_scalar

    slots = [(n, k) for n in names for k in bodies if bool(free[n][k])]
    if not slots:
        return
    x0 = np.array([float(start[n][k]) for n, k in slots])
    lo = np.clip(x0 - cfg.polish_radius, 0.0, 1.0)
    hi = np.clip(x0 + cfg.polish_radius, 0.0, 1.0)

    seen: list[tuple[float, float]] = []

    def f(x: np.ndarray) -> float:
        x = np.clip(np.atleast_1d(np.asarray(x, dtype=np.float64)), lo, hi)
        z = {n: v.clone() for n, v in start.items()}
        for (n, k), v in zip(slots, x, strict=True):
            z[n][k] = float(v)
        with torch.no_grad():
            fx = float(evaluate(z))
        seen.append((fx, float(x[0])))
        return fx

    if len(slots) == 1:
        # Brent's golden-section / parabolic steps; xatol 1e-8 of the box: mass to ~5e-8 relative (log box ~4.6)
        minimize_scalar(f, bounds=(float(lo[0]), float(hi[0])), method="bounded",
                        options={"xatol": 1e-8, "maxiter": cfg.polish})
        for h in cfg.polish_scan_steps if cfg.polish_scan > 0 else ():
            xb = min(seen)[1]
            for k in range(1, cfg.polish_scan + 1):
                for sgn in (-1.0, 1.0):
                    if lo[0] <= xb + sgn * k * h <= hi[0]:
                        f(np.array([xb + sgn * k * h]))
            x2 = min(seen)[1]
            if x2 != xb:
                minimize_scalar(f, bounds=(max(float(lo[0]), x2 - h), min(float(hi[0]), x2 + h)), method="bounded",
                                options={"xatol": 1e-8, "maxiter": cfg.polish})
    else:
        step = 0.2 * cfg.polish_radius
        simplex = np.vstack([x0] + [x0 + step * np.eye(len(x0))[i] * (1 if x0[i] + step <= hi[i] else -1)
                                    for i in range(len(x0))])
        minimize(f, x0, method="Nelder-Mead", bounds=list(zip(lo, hi, strict=True)),
                 options={"initial_simplex": simplex, "xatol": 1e-8, "fatol": 0.0, "maxfev": cfg.polish})


def _track_loss(prob: _Problem, paths: dict[int, np.ndarray] | None = None) -> Callable[[PhysicsParams], torch.Tensor]:
    """Mean squared distance [m²] of the window's simulated body centres to reference centres over its frames: the
    perception-tracked ones (a state fit from perception), or ``paths`` (object id -> [T, 3] true body centres:
    ∇Sim's 3D-supervised "diffphysics" baseline, evaluation only)."""
    if paths is None:
        ref = torch.stack([_tracked_state(prob.model, prob.obs, f)[0] for f in prob.frames])  # [F, K, 3]
    else:
        # true centres moved by their motion since the window's start from the body's (fitted) centre there
        ref = torch.stack([torch.tensor(np.asarray(paths[b.object_id])[prob.frames]
                                        - np.asarray(paths[b.object_id])[prob.start], dtype=torch.float32)
                           for b in prob.model.bodies], 1) + prob.pos0[None]
    sel = prob.bodies

    def loss(params: PhysicsParams) -> torch.Tensor:
        traj = _simulate(prob, params)
        sim = traj.position[0, [f - prob.start - 1 for f in prob.frames]]
        return ((sim[:, sel] - ref[:, sel]) ** 2).sum(-1).mean()

    return loss


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
        renderer = _Renderer(gaussians, binding, cameras, background, range(K), pos0, quat0)
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
                       background=tuple(float(c) for c in background), period_s=dt)
