"""Visual MPC planner: a sampling stage (MPPI or CEM over batched rollouts) initialises gradient descent (Adam)
through the dynamics backend and the renderer on the pusher's action sequence; receding horizon with warm start.

Per replan (``Planner.plan``):
1. the scene's table Gaussians (object id 0) are rendered once per cost camera (the static layer); the dynamics see
   the objects and the pusher only (``dynamics_particles="objects"``) or every particle (``"all"``),
2. warm start: the previous plan shifted by the time elapsed since it was made (zeros appended),
3. sampling: ``samples`` action sequences around the mean (temporally correlated noise, clamped to the limits),
   rolled out as one batch, each final state rendered at the coarse width ``sample_width``; MPPI re-weights
   (temperature relative to the cost spread) or CEM refits to the elites; ``sample_iters`` rounds,
4. gradient: the best sequence so far, ``grad_iters`` Adam steps on the cost at the cost width ``width`` (render of
   the final predicted state vs the goal, plus smoothness, bounds, reach); the best evaluated sequence is kept,
5. safety: a plan whose cost is not finite or exceeds ``diverge_factor`` x the cost of doing nothing is flagged
   ``diverged`` (the node then publishes zero).

Actions are planar pusher velocities (x, y) [m/s] in the world frame, one per control period ``dt``, z = 0.
Only the final predicted frame is rendered (``render_steps="final"``) unless every step is asked for ("all").
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidyn_ros.control.cost import (
    CostWeights,
    ReachTarget,
    bounds_penalty,
    pusher_path,
    reach_cost,
    reach_target,
    smoothness,
    visual_terms,
)
from vidyn_ros.control.goal import Goal, LayeredRenderer, cost_cameras, moving_mask, with_resolution
from vidyn_ros.dynamics.state import Control, Dynamics, ParticleState, SubStepped, rollout
from vidyn_ros.errors import ConfigError
from vidyn_ros.types import GaussianSet


@dataclass
class PlannerConfig:
    """Planner parameters (the mpc node exposes the same names)."""

    horizon: int = 8  # control steps planned ahead
    dt: float = 0.1  # control period [s]: one action per period
    sub_steps: int = 1  # dynamics steps per control period (dt / sub_steps each); backends.default_sub_steps
    method: str = "mppi"  # sampling initialisation: mppi | cem | none
    samples: int = 24  # sampled action sequences per sampling round
    sample_iters: int = 2  # sampling rounds
    noise_std: float = 0.08  # sampling noise [m/s]
    noise_corr: float = 0.6  # temporal correlation of the sampling noise (0 = white)
    temperature: float = 0.2  # MPPI temperature relative to the spread of the sampled costs
    elite_frac: float = 0.25  # CEM elites
    grad_iters: int = 3  # Adam steps through backend + renderer
    lr: float = 0.02  # Adam learning rate [m/s per step]
    max_speed: float = 0.2  # [m/s] plans and commands are clamped to this
    max_accel: float = 2.0  # [m/s^2] change of consecutive actions
    workspace: tuple[float, float, float, float] = (-0.35, -0.35, 0.35, 0.35)  # pusher box x0 y0 x1 y1 [m]
    views: int | tuple[str, ...] = 2  # cost cameras: the first n, or names
    width: int = 80  # cost render width [px] (height follows the camera aspect)
    sample_width: int = 40  # render width of the sampling stage [px]
    pyramid: tuple[int, ...] = (1, 4, 8)  # pooling factors of the pixel loss
    render_steps: str = "final"  # final: render only the last predicted frame; all: every control step
    batch_render: bool = True  # all candidates in one render call; False: one call per candidate (for comparison)
    dynamics_particles: str = "objects"  # objects: objects + pusher go to the dynamics; all: the table too
    push_proposal: bool = True  # a straight approach-and-push sequence competes among the samples (needs reach)
    push_speed: float = 0.1  # [m/s] pushing speed of that proposal (the approach goes at max_speed)
    # reach shaping and the proposal act while an object is farther than this from its goal [m]: below the mpc
    # node's / episode's goal tolerance (8 mm), else the plan stalls in between with nothing pulling the pusher
    reach_tolerance: float = 0.005
    obstacle_margin: float = 0.01  # [m] the proposal's approach keeps this clear of other objects (+ pusher radius)
    contact_slack: float = 0.015  # [m] how much the standoff may overestimate the contact distance (push_proposal)
    push_proposals: int = 3  # straight pushes per round, their lengths spread over [0, contact_slack] beyond the goal
    diverge_factor: float = 50.0  # plan cost > this x cost of doing nothing = diverged
    include_pusher: bool = False  # render the pusher in the cost (goal images that show it)
    device: str = "cpu"
    render_backend: str = "auto"
    seed: int = 0
    weights: CostWeights = field(default_factory=CostWeights)

    def check(self) -> PlannerConfig:
        if self.horizon < 1 or self.dt <= 0 or self.sub_steps < 0:
            raise ConfigError(f"planner: horizon >= 1, dt > 0, sub_steps >= 0 required (got {self.horizon}, "
                              f"{self.dt}, {self.sub_steps})")
        if self.method not in ("mppi", "cem", "none"):
            raise ConfigError(f"planner: method must be mppi, cem or none, got {self.method!r}")
        if self.render_steps not in ("final", "all"):
            raise ConfigError(f"planner: render_steps must be final or all, got {self.render_steps!r}")
        if self.dynamics_particles not in ("objects", "all"):
            raise ConfigError(f"planner: dynamics_particles must be objects or all, got {self.dynamics_particles!r}")
        if self.max_speed <= 0 or self.max_accel <= 0:
            raise ConfigError("planner: max_speed and max_accel must be > 0")
        x0, y0, x1, y1 = self.workspace
        if not (x0 < x1 and y0 < y1):
            raise ConfigError(f"planner: workspace must be x0 y0 x1 y1 with x0 < x1, y0 < y1, got {self.workspace}")
        return self


@dataclass
class PlanResult:
    """One replan.

    Attributes:
        actions: [H, 3] planned pusher velocities [m/s] (world; z = 0), one per control period from ``stamp_s``.
        path: [H+1, 3] planned pusher positions (from the pusher's measured position).
        cost: cost of the returned plan (cost width); cost_zero: of doing nothing (same scale).
        history: cost per iteration: ("sample", best coarse cost) rounds, then ("grad", cost) steps.
        predicted_rgb: [V, H, W, 3] uint8 predicted final render of the returned plan (cost cameras).
        predicted: the predicted final particle state of the dynamics subset (for PointCloud2 / evaluation).
        predicted_centroids: object id -> [H, 3] predicted centroid after each control step (pusher excluded).
        diverged: the cost is not finite or exceeds diverge_factor x cost_zero.
        seconds: wall time; timings: per stage [s]; terms: the weighted cost terms of the returned plan.
    """

    actions: np.ndarray
    path: np.ndarray
    cost: float
    cost_zero: float
    history: list[tuple[str, float]]
    predicted_rgb: np.ndarray
    predicted: ParticleState | None
    diverged: bool
    stamp_s: float
    seconds: float
    timings: dict[str, float]
    terms: dict[str, float]
    reach_object: int | None = None
    predicted_centroids: dict[int, np.ndarray] = field(default_factory=dict)  # object id -> [H, 3] after each step
    # which candidate the returned plan is: mean (warm start / MPPI mean), zero, proposal, sample, or grad
    winner: str = ""
    proposal: np.ndarray | None = None  # [H, 2] the straight-push proposal of this replan (None: none)
    # coarse costs of the fixed candidates in the last sampling round: mean, zero, proposal0.. (diagnostics)
    candidate_costs: dict[str, float] = field(default_factory=dict)


def clamp_actions(u: torch.Tensor, max_speed: float, max_accel: float, dt: float,
                  u_prev: torch.Tensor | None = None) -> torch.Tensor:
    """Project actions u [..., H, 2] onto the speed limit and (sequentially) the acceleration limit."""
    speed = u.norm(dim=-1, keepdim=True)
    u = u * torch.where(speed > max_speed, max_speed / speed.clamp_min(1e-12), torch.ones_like(speed))
    dv_max = max_accel * dt
    out = []
    prev = u_prev.expand_as(u[..., 0, :]) if u_prev is not None else None
    for t in range(u.shape[-2]):
        cur = u[..., t, :]
        if prev is not None:
            d = cur - prev
            n = d.norm(dim=-1, keepdim=True)
            cur = prev + d * torch.where(n > dv_max, dv_max / n.clamp_min(1e-12), torch.ones_like(n))
        out.append(cur)
        prev = cur
    return torch.stack(out, dim=-2)


class Planner:
    """Visual MPC on one dynamics backend (see the module docstring). Not thread-safe: one planner per node."""

    def __init__(self, model: Dynamics, cfg: PlannerConfig | None = None,
                 background: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        self.cfg = (cfg or PlannerConfig()).check()
        self.background = tuple(float(v) for v in background)  # colour behind the scene (the scene's estimate)
        self.model: Dynamics = SubStepped(model, self.cfg.sub_steps) if self.cfg.sub_steps > 1 else model
        self.goal: Goal | None = None
        self._goal_coarse: Goal | None = None
        self._refs: dict[str, float] | None = None  # visual terms of "do nothing" when the goal was set
        self._prev: tuple[float, torch.Tensor] | None = None  # (stamp_s, actions [H, 2]) of the last plan
        self.last_command = torch.zeros(2)
        self.gen = torch.Generator().manual_seed(self.cfg.seed)

    def set_model(self, model: Dynamics) -> None:
        """Swap the dynamics backend (e.g. physics rebuilt when the scene's objects changed)."""
        self.model = SubStepped(model, self.cfg.sub_steps) if self.cfg.sub_steps > 1 else model

    # ------------------------------------------------------------------------------------------------ goal
    def cameras(self, cameras: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """(cost cameras at ``width``, the same at ``sample_width``) chosen from the rig's cameras."""
        fine = cost_cameras(cameras, self.cfg.views, self.cfg.width)
        coarse = [c.scaled(self.cfg.sample_width / c.width) for c in fine]
        return fine, coarse

    def set_goal(self, goal: Goal) -> None:
        """A new goal (at the cost width); the normalisation of the visual terms is taken at the next plan."""
        self.goal = goal
        fine_w = goal.cameras[0].width
        coarse = [c.scaled(self.cfg.sample_width / fine_w) for c in goal.cameras]
        self._goal_coarse = with_resolution(goal, coarse)
        self._refs = None
        self._prev = None

    def reset(self) -> None:
        """Forget the warm start (e.g. after the node was disabled)."""
        self._prev = None
        self.last_command = torch.zeros(2)

    # ------------------------------------------------------------------------------------------------ plan
    def plan(self, state: ParticleState, pusher_xyz: Sequence[float], stamp_s: float | None = None) -> PlanResult:
        """Plan from ``state`` (the scene as particles, no batch dims) with the pusher at ``pusher_xyz`` (its
        measured position). ``stamp_s`` (the state's time by default) places the plan in time for warm starts."""
        if self.goal is None:
            raise ConfigError("planner: no goal set")
        cfg = self.cfg
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        stamp_s = state.time_s if stamp_s is None else float(stamp_s)
        dev = torch.device(cfg.device)
        state = state.to(dev)
        pusher_id = state.pusher_id
        g_now = state.to_gaussians()
        static = g_now.subset(g_now.object_ids == 0)
        fine = LayeredRenderer(self.goal.cameras, static, self.background, cfg.render_backend, dev)
        coarse = LayeredRenderer(self._goal_coarse.cameras, static, self.background, cfg.render_backend, dev)
        if self._refs is None and self.goal.moving is not None:
            # the sampling stage's goal rendered at its width (not the cost-width goal resampled), once per goal
            self._goal_coarse = with_resolution(self.goal, self._goal_coarse.cameras, coarse)
        dyn = state if cfg.dynamics_particles == "all" else state.subset(state.object_ids > 0)
        render_sel = moving_mask(dyn.object_ids, pusher_id, cfg.include_pusher)
        moving = _gaussians_of(dyn, None, render_sel)  # scales, colours, opacities of what the cost renders
        p0 = torch.as_tensor(np.asarray(pusher_xyz, dtype=np.float64)[:2], dtype=torch.float32, device=dev)
        kin = dyn.kinematic
        radius = 0.015
        if bool(kin.any()):
            pk = dyn.now[kin, :2]
            radius = float((pk - pk.mean(0)).norm(dim=-1).max())
        target = None
        if cfg.weights.reach > 0:
            target = reach_target(dyn.now, dyn.object_ids, self.goal, pusher_id, radius,
                                  tolerance=cfg.reach_tolerance)
        proposal = None
        proposals: list[torch.Tensor] = []
        if target is not None and cfg.push_proposal:
            obj_xy = dyn.now[target.index, :2].mean(0)
            obstacles = object_discs(dyn.now, dyn.object_ids, exclude=(0, pusher_id, target.object_id),
                                     clearance=radius + cfg.obstacle_margin)
            # push lengths from "the object at its goal" to contact_slack beyond it (the standoff's uncertainty)
            extras = np.linspace(0.0, cfg.contact_slack, max(1, cfg.push_proposals)) if cfg.contact_slack > 0 else [0.0]
            proposals = [push_proposal(p0, obj_xy, target, cfg.horizon, cfg.dt, cfg.max_speed, cfg.push_speed,
                                       radius, obstacles, slack=cfg.contact_slack, extra=float(e)) for e in extras]
            proposal = proposals[0]
        timings["setup"] = time.perf_counter() - t0

        levels = {"fine": (fine, self.goal), "coarse": (coarse, self._goal_coarse)}

        def simulate(u: torch.Tensor) -> list[ParticleState]:
            """u [S, H, 2] -> the predicted states after each control step (batch S)."""
            lin = torch.cat([u, torch.zeros_like(u[..., :1])], dim=-1)
            own = getattr(self.model, "rollout", None)  # physics: the whole sequence in one simulation call
            if callable(own):
                return own(dyn.expand(u.shape[0]), Control(lin), cfg.dt)
            return rollout(self.model, dyn.expand(u.shape[0]), Control(lin), cfg.dt)

        def score(u: torch.Tensor, states: list[ParticleState], level: str
                  ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
            """Total cost [S] and terms per sample of u [S, H, 2] whose rollout is ``states`` (renders at
            ``level``)."""
            renderer, goal = levels[level]
            last = states[-1]
            render_states = states if cfg.render_steps == "all" else [last]
            # every candidate (and every rendered step) in one render call: [T, S, n, 3] positions
            means = torch.stack([st.now[:, render_sel] for st in render_states])
            quats = torch.stack([st.quats_now[:, render_sel] for st in render_states])
            if cfg.batch_render:
                rgb, alpha, depth = renderer.batch(moving, means, quats)
            else:  # one render call per candidate (what the batched call replaces; bench/mpc_rate.py)
                per = [renderer.batch(moving, means[:, s], quats[:, s]) for s in range(u.shape[0])]
                rgb, alpha, depth = (torch.stack(x, dim=1) for x in zip(*per, strict=True))
            acc = {k: v.mean(0) for k, v in visual_terms(rgb, alpha, depth, goal, cfg.pyramid).items()}
            weighted = self._weighted(acc, level)
            total = sum(weighted.values(), torch.zeros(u.shape[0], device=dev))
            terms = [{k: v[s] for k, v in weighted.items()} for s in range(u.shape[0])]
            path = pusher_path(p0, u, cfg.dt)
            extra = {
                "smooth": cfg.weights.smooth * smoothness(u, self.last_command.to(u), cfg.max_speed),
                "bounds": cfg.weights.bounds * bounds_penalty(path, cfg.workspace),
            }
            if target is not None:
                obj = torch.stack([st.now[..., target.index, :2].mean(-2) for st in states], dim=-2)
                extra["reach"] = cfg.weights.reach * reach_cost(obj, path[..., 1:, :], target)
            for k, v in extra.items():
                total = total + v
                for s in range(u.shape[0]):
                    terms[s][k] = v[s]
            return total, terms

        def evaluate(u: torch.Tensor, level: str, grad: bool
                     ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[ParticleState]]:
            """u [S, H, 2] -> total cost [S], terms per sample, final states (renders at ``level``)."""
            with torch.set_grad_enabled(grad):
                states = simulate(u)
                total, terms = score(u, states, level)
            return total, terms, states

        H = cfg.horizon
        zero = torch.zeros(1, H, 2, device=dev)
        if self._refs is None:  # normalisation of the visual terms: "do nothing" at the first plan for this goal
            with torch.no_grad():
                self._refs = {}
                still = simulate(zero)  # one rollout, scored at both widths
                _, t_fine = score(zero, still, "fine")
                _, t_coarse = score(zero, still, "coarse")
                w = self.cfg.weights  # the terms came back weighted: undo the weight to keep the raw reference
                self._refs = {**{f"fine_{k}": max(float(v) / getattr(w, k), 1e-9) for k, v in t_fine[0].items()
                                 if k in ("pixel", "iou", "depth")},
                              **{f"coarse_{k}": max(float(v) / getattr(w, k), 1e-9) for k, v in t_coarse[0].items()
                                 if k in ("pixel", "iou", "depth")}}
        history: list[tuple[str, float]] = []

        # warm start: the previous plan, shifted by the time since it was made
        mean = torch.zeros(H, 2, device=dev)
        if self._prev is not None:
            shift = max(0, round((stamp_s - self._prev[0]) / cfg.dt))
            prev = self._prev[1].to(dev)
            if shift < H:
                mean[: H - shift] = prev[shift:]
        mean = clamp_actions(mean, cfg.max_speed, cfg.max_accel, cfg.dt, self.last_command.to(dev))
        best_u, best_c = mean.clone(), math.inf

        # sampling stage (coarse renders)
        t1 = time.perf_counter()
        std = torch.full((H, 2), cfg.noise_std, device=dev)
        # without Adam steps the returned plan is the best sample and its rollout is reused for the final (fine)
        # evaluation: one dynamics call per replan instead of three (the physics rollouts dominate on a CPU)
        reuse = cfg.grad_iters == 0 and cfg.method != "none" and cfg.samples > 1
        best_states: list[ParticleState] | None = None  # the rollout of the best round's candidates (reuse)
        best_i = 0
        winner = "mean"
        candidate_costs: dict[str, float] = {}
        if cfg.method != "none" and cfg.samples > 0:
            for _ in range(max(cfg.sample_iters, 1)):
                n = cfg.samples
                eps = self._noise(n, H, dev) * std
                cand = mean + eps
                cand[0] = mean  # the mean itself, "do nothing" and the straight pushes always compete
                if n > 1:
                    cand[1] = 0.0
                for j, prop in enumerate(proposals[: max(0, n - 2)]):
                    cand[2 + j] = prop
                cand = clamp_actions(cand, cfg.max_speed, cfg.max_accel, cfg.dt, self.last_command.to(dev))
                with torch.no_grad():
                    c, _, states = evaluate(cand, "coarse", False)
                c = torch.where(torch.isfinite(c), c, torch.full_like(c, 1e9))
                names = ["mean", "zero", *(f"proposal{j}" for j in range(len(proposals)))][:n]
                candidate_costs = {k: float(c[j]) for j, k in enumerate(names)}
                i = int(torch.argmin(c))
                history.append(("sample", float(c[i])))
                if float(c[i]) < best_c:
                    best_c, best_u = float(c[i]), cand[i].clone()
                    best_states, best_i = (states, i) if reuse else (None, 0)
                    winner = {0: "mean", 1: "zero"}.get(i, "proposal" if 2 <= i < 2 + len(proposals) else "sample")
                if cfg.method == "mppi":
                    spread = float((c - c.min()).mean()) + 1e-9
                    w = torch.softmax(-(c - c.min()) / (cfg.temperature * spread), dim=0)
                    mean = (w[:, None, None] * cand).sum(0)
                else:
                    k = max(2, round(cfg.elite_frac * n))
                    elite = cand[torch.argsort(c)[:k]]
                    mean, std = elite.mean(0), elite.std(0).clamp_min(0.01)
                mean = clamp_actions(mean, cfg.max_speed, cfg.max_accel, cfg.dt, self.last_command.to(dev))
        timings["sample"] = time.perf_counter() - t1

        if reuse and best_states is not None:
            # final evaluation at the cost width from the sampled rollouts: the best sample (it is returned) and
            # "do nothing" (candidate 1 of every round) for the divergence check
            t3 = time.perf_counter()
            timings["grad"] = 0.0
            with torch.no_grad():
                both = torch.stack([best_u, torch.zeros(H, 2, device=dev)])
                pair = torch.tensor([best_i, 1], device=best_states[-1].positions.device)
                finals = [st.index(pair) for st in best_states]
                c_all, terms = score(both, finals, "fine")
            pick, zero_i = 0, 1
        else:
            # gradient stage (cost width): start from the better of the best sample and the final mean
            t2 = time.perf_counter()
            with torch.no_grad():
                starts = torch.stack([best_u, mean] if proposal is None or cfg.method != "none" else
                                     [best_u, mean, clamp_actions(proposal, cfg.max_speed, cfg.max_accel, cfg.dt,
                                                                  self.last_command.to(dev))])
                c0, _, _ = evaluate(starts, "fine", False)
            u = starts[int(torch.argmin(c0))].clone().requires_grad_(True)
            if int(torch.argmin(c0)) > 0:
                winner = "mean" if int(torch.argmin(c0)) == 1 else "proposal"
            best_u, best_c = u.detach().clone(), float(c0.min())
            history.append(("grad", best_c))
            if cfg.grad_iters > 0:
                opt = torch.optim.Adam([u], lr=cfg.lr)
                for it in range(cfg.grad_iters):
                    opt.zero_grad()
                    c, _, _ = evaluate(u[None], "fine", True)
                    if it > 0:
                        c_it = float(c[0].detach())
                        history.append(("grad", c_it))
                        if math.isfinite(c_it) and c_it < best_c:
                            best_c, best_u = c_it, u.detach().clone()
                    if not torch.isfinite(c[0]):
                        break
                    c[0].backward()
                    if u.grad is not None and not bool(torch.isfinite(u.grad).all()):
                        break
                    opt.step()
                    with torch.no_grad():
                        u.copy_(clamp_actions(u, cfg.max_speed, cfg.max_accel, cfg.dt, self.last_command.to(dev)))
            timings["grad"] = time.perf_counter() - t2

            # final evaluation of the returned plan and of doing nothing (same scale) for the divergence check
            t3 = time.perf_counter()
            with torch.no_grad():
                both = torch.stack([u.detach(), best_u, torch.zeros(H, 2, device=dev)])
                c_all, terms, finals = evaluate(both, "fine", False)
            pick = 0 if float(c_all[0]) <= float(c_all[1]) else 1
            if pick == 0 and math.isfinite(float(c_all[0])) and float(c_all[0]) < best_c:
                history.append(("grad", float(c_all[0])))
                winner = "grad"
            zero_i = 2
        best_u = both[pick]
        cost, cost_zero = float(c_all[pick]), float(c_all[zero_i])
        final = finals[-1].index(pick)
        with torch.no_grad():
            rgb, _, _ = fine(_gaussians_of(finals[-1], pick, render_sel))
            # per object (not the pusher) its predicted centroid after each control step: [H, 3]
            centroids = {}
            for k in dyn.object_labels():
                if k == pusher_id:
                    continue
                sel = dyn.object_ids == k
                centroids[k] = torch.stack([st.now[pick][sel].mean(0) for st in finals]).cpu().numpy()
        timings["final"] = time.perf_counter() - t3
        diverged = not math.isfinite(cost) or cost > cfg.diverge_factor * max(cost_zero, 1e-9)
        self._prev = (stamp_s, best_u.detach().clone())
        path = pusher_path(p0, best_u, cfg.dt).cpu().numpy()
        z = float(np.asarray(pusher_xyz, dtype=np.float64)[2])
        actions = np.concatenate([best_u.cpu().numpy(), np.zeros((H, 1), np.float32)], axis=1)
        return PlanResult(
            actions=actions, path=np.concatenate([path, np.full((H + 1, 1), z)], axis=1), cost=cost,
            cost_zero=cost_zero, history=history,
            predicted_rgb=(rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy(), predicted=final,
            diverged=diverged, stamp_s=stamp_s, seconds=time.perf_counter() - t0, timings=timings,
            terms={k: float(v) for k, v in terms[pick].items()},
            reach_object=None if target is None else target.object_id, predicted_centroids=centroids,
            winner=winner, proposal=None if proposal is None else proposal.cpu().numpy(),
            candidate_costs=candidate_costs,
        )  # fmt: skip

    def goal_distance(self, state: ParticleState) -> float | None:
        """The largest xy distance [m] of an object's centroid in ``state`` (the scene, unbatched) to its goal
        centroid: the planner's own estimate of how far the goal is. None for goals without centroids (images)."""
        if self.goal is None or not self.goal.centroids:
            return None
        ids = state.object_ids.to(state.now.device)
        d = [float((state.now[ids == k, :2].mean(0) - c[:2].to(state.now)).norm())
             for k, c in self.goal.centroids.items() if bool((ids == k).any())]
        return max(d) if d else None

    def commit(self, command_xy: Sequence[float]) -> None:
        """Tell the planner which command was actually sent (smoothness and acceleration start from it)."""
        self.last_command = torch.as_tensor(np.asarray(command_xy, dtype=np.float32)[:2])

    # ------------------------------------------------------------------------------------------------ helpers
    def _weighted(self, terms: dict[str, torch.Tensor], level: str) -> dict[str, torch.Tensor]:
        """Visual terms weighted and normalised by their "do nothing" value for this goal (raw while it is taken)."""
        w = self.cfg.weights
        refs = self._refs or {}
        return {k: getattr(w, k) * v / refs.get(f"{level}_{k}", 1.0) for k, v in terms.items() if getattr(w, k, 0.0)}

    def _noise(self, n: int, horizon: int, dev: torch.device) -> torch.Tensor:
        """[n, H, 2] unit-variance noise with temporal correlation ``noise_corr`` (AR(1))."""
        w = torch.randn(n, horizon, 2, generator=self.gen).to(dev)
        a = self.cfg.noise_corr
        out = [w[:, 0]]
        for t in range(1, horizon):
            out.append(a * out[-1] + math.sqrt(1 - a * a) * w[:, t])
        return torch.stack(out, dim=1)


def object_discs(positions: torch.Tensor, object_ids: torch.Tensor, exclude: Sequence[int | None] = (),
                 clearance: float = 0.0) -> list[tuple[torch.Tensor, float]]:
    """Every object not in ``exclude`` as a disc on the table: (centroid xy [2], largest xy distance of its
    particles from the centroid + ``clearance``). ``positions`` [N, 3] (now), ``object_ids`` [N]."""
    out = []
    for k in torch.unique(object_ids).tolist():
        if k in exclude:
            continue
        xy = positions[object_ids == k, :2].detach()
        c = xy.mean(0)
        out.append((c, float((xy - c).norm(dim=-1).max()) + clearance))
    return out


def detour(a: torch.Tensor, b: torch.Tensor, obstacles: Sequence[tuple[torch.Tensor, float]], depth: int = 3
           ) -> list[torch.Tensor]:
    """Waypoints after ``a`` up to and including ``b`` whose straight segments keep clear of the ``obstacles``
    (discs: centre xy, radius): the first disc the segment a -> b cuts is passed on the side the segment is on,
    along the two corners of the square around it (recursively, ``depth`` levels). Discs that contain ``a`` or
    ``b`` are ignored (the pusher is already there, or has to go there)."""
    seg = b - a
    length = float(seg.norm())
    if length < 1e-9 or depth <= 0:
        return [b]
    u = seg / length
    hit = None
    for c, r in obstacles:
        if float((a - c).norm()) < r or float((b - c).norm()) < r:
            continue
        t = min(max(float((c - a) @ u), 0.0), length)
        closest = a + t * u
        if float((closest - c).norm()) < r - 1e-6 and (hit is None or t < hit[0]):
            hit = (t, c, r, closest)
    if hit is None:
        return [b]
    _, c, r, closest = hit
    n = closest - c
    # through the centre: pass on the left of the direction of travel (a fixed choice keeps plans consistent)
    n = n / n.norm() if float(n.norm()) > 1e-6 else torch.stack([-u[1], u[0]])
    w1, w2 = c + r * (n - u), c + r * (n + u)
    return [*detour(a, w1, obstacles, depth - 1), *detour(w1, w2, obstacles, depth - 1),
            *detour(w2, b, obstacles, depth - 1)]


def push_proposal(p0: torch.Tensor, obj_xy: torch.Tensor, target: ReachTarget, horizon: int, dt: float,
                  approach_speed: float, push_speed: float, pusher_radius: float,
                  obstacles: Sequence[tuple[torch.Tensor, float]] = (), slack: float = 0.0,
                  extra: float = 0.0) -> torch.Tensor:
    """[H, 2] velocities of a straight push: to the contact point behind the object (``target``: on the line from
    its goal through its centroid, ``standoff`` behind; round the object's side, in a lane clear of it, when the
    pusher starts beside or in front of it; round every other object in ``obstacles``, discs of centre xy and
    radius, see :func:`object_discs`: a straight approach through a bystander knocks it off its goal)
    at ``approach_speed``, then along the line at ``push_speed`` until the object would be at its goal.

    The standoff comes from the Gaussians' extent and overestimates the true contact distance by up to ~1.5 cm
    (Gaussians spread past the surfaces): a pusher already behind the object up to ``slack`` closer than the
    standoff starts pushing from there instead of backing off, and the push goes ``extra`` beyond "the object at
    its goal" (the planner offers several ``extra`` in [0, slack] and its model picks). Without that the push
    stopped short: in mpc-eval the block stalled 1-2 cm from its goal with "do nothing" winning.

    A structured proposal that competes with the samples (the sampler needs many rounds to find a contact from
    noise): computed from the scene's particles and the goal, like the reach term; the cost still decides."""
    to_goal = target.goal_xy - obj_xy
    dist = float(to_goal.norm())
    d = to_goal / max(dist, 1e-6)
    rel = p0 - obj_xy
    behind = -float(rel @ d)  # how far the pusher is behind the centroid along the push line
    standoff = min(target.standoff, max(behind, target.standoff - slack))
    contact = obj_xy - standoff * d
    waypoints = []
    if float(rel @ d) > -0.5 * target.standoff:  # beside or in front: go round the side the pusher is on
        side = torch.stack([-d[1], d[0]])
        side = side if float(rel @ side) >= 0 else -side
        clear = target.standoff + pusher_radius
        # sideways into a lane ``clear`` off the push line, along it to behind the object, then onto the line
        waypoints.append(p0 + max(0.0, clear - float(rel @ side)) * side)
        waypoints.append(obj_xy + clear * side - target.standoff * d)
    waypoints.append(contact)
    if obstacles:  # the approach (not the push) goes round the other objects
        routed, a = [], p0
        for w in waypoints:
            routed += detour(a, w, obstacles)
            a = w
        waypoints = routed
    waypoints.append(contact + (dist + extra) * d)
    speeds = [approach_speed] * (len(waypoints) - 1) + [push_speed]
    pos, out, w = p0.clone(), [], 0
    for _ in range(horizon):
        left = dt  # time left in this control period
        start = pos.clone()
        while left > 1e-9 and w < len(waypoints):
            seg = waypoints[w] - pos
            n = float(seg.norm())
            reach = speeds[w] * left
            if n <= reach:
                pos, left, w = waypoints[w].clone(), left - n / speeds[w], w + 1
            else:
                pos, left = pos + seg * (reach / n), 0.0
        out.append((pos - start) / dt)
    return torch.stack(out)


def _gaussians_of(state: ParticleState, s: int | None, keep: torch.Tensor) -> GaussianSet:
    """The Gaussians of batch element ``s`` of ``state`` (None: an unbatched state) restricted to ``keep``
    (differentiable in positions)."""
    now, quats = (state.now, state.quats_now) if s is None else (state.now[s], state.quats_now[s])
    return GaussianSet(
        means=now[keep], quats=quats[keep], log_scales=state.log_scales[keep],
        colors=state.colors[keep], opacity_logits=state.opacity_logits[keep], object_ids=state.object_ids[keep],
        particle_ids=state.particle_ids[keep],
    )  # fmt: skip
