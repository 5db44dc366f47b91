"""Closed-loop episodes on the simulated rig without ROS (what ``vidyn mpc-eval`` runs; the nodes run the same
library calls over DDS in ``vidyn launch sim-mpc`` and ``vidyn demo``).

One episode: a seeded ``push`` world, a reachable goal (:func:`sample_goal`), then every control period a policy
chooses the pusher velocity, which passes the command filter and drives the rig for ``dt`` (3 frames at 30 fps).
Policies:

- ``random``: smoothed random velocities (a floor),
- ``oracle``: MPPI on the simulator itself with the true object poses and a state cost (the distance of every object
  to its goal): the ∇Sim "state-based" comparison, with a perfect model. Evaluation only: it reads ground truth.
- ``visual``: the deployed path: segmenter masks -> Gaussian scene -> :class:`~vidyn_ros.control.planner.Planner`
  with a dynamics backend and a goal image rendered from the first scene with the goal object moved. The pusher's
  position is the robot's own (proprioception); object ground truth is only used for scoring.

Success = every block within ``tolerance`` (2 cm) of its goal position at the end (true poses). An episode ends
after ``max_seconds`` of sim time, or when the policy says it is done (visual: every object's scene centroid within
``done_tolerance`` of its goal centroid; oracle: the same on true poses).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidyn_ros.control.goal import GoalMove
from vidyn_ros.control.planner import PlannerConfig, clamp_actions
from vidyn_ros.control.safety import CommandFilter, CommandLimits
from vidyn_ros.types import ObjectPose


@dataclass
class EpisodeConfig:
    """Closed-loop episode settings (see the module docstring)."""

    scenario: str = "push"
    render_scale: float = 0.25  # 160x120: the deployed scene's working resolution (sim.yaml: 640x480 / 4)
    max_seconds: float = 8.0  # sim time budget per episode [s]
    tolerance: float = 0.02  # success: every block this close to its goal [m]
    done_tolerance: float = 0.008  # the policy stops when its own estimate is this close [m]
    masks: str = "segmenter"  # segmenter (deployed) | true (oracle masks, a labelled extra row)
    scene_budget: int = 3000  # Gaussians (the sim graph's 5000 halves the eval's speed; docs/mpc.md)
    scene_init_iters: int = 40
    replan_every: int = 1  # visual policy: replan every n control periods (in between: the plan's next action)
    goal_min: float = 0.04  # goal displacement of the moved block [m]
    goal_max: float = 0.08


@dataclass
class GoalSpec:
    """A reachable goal (ground truth, for scoring): the moved object and every object's goal position."""

    object_id: int
    start: dict[int, np.ndarray]  # sim object id -> start position (xyz)
    goal: dict[int, np.ndarray]  # sim object id -> goal position (xyz)
    direction: np.ndarray  # push direction (xy unit vector) used to verify reachability

    def move(self) -> GoalMove:
        """What the visual planner is told: the object at its start goes to its goal."""
        s, g = self.start[self.object_id], self.goal[self.object_id]
        return GoalMove((float(s[0]), float(s[1])), (float(g[0]), float(g[1])))


@dataclass
class EpisodeResult:
    policy: str
    seed: int
    success: bool
    final_distance: float  # largest final distance of any block to its goal [m]
    distances: dict[int, float]
    steps: int  # control steps taken
    sim_seconds: float
    wall_seconds: float
    plan_seconds: float  # mean replanning time [s] (0 for policies without planning)
    goal: GoalSpec
    paths: dict[int, np.ndarray]  # sim object id -> [T, 2] true xy over the episode (pusher included)
    costs: list[float] = field(default_factory=list)  # plan cost per control step (visual)
    first_history: list[tuple[str, float]] = field(default_factory=list)  # cost per iteration of the first plan
    distance_trace: list[float] = field(default_factory=list)  # largest block-goal distance per control step
    error: str = ""


# ---------------------------------------------------------------------------------------------------- goals
def _radius_xy(rig: Any, oid: int) -> float:
    shape, size = rig.object_shapes[oid]
    if shape == "box":
        return float(math.hypot(size[0], size[1]))
    return float(size[0])


def sample_goal(rig: Any, rng: np.random.Generator, goal_min: float = 0.04, goal_max: float = 0.08,
                tries: int = 300) -> GoalSpec:
    """A goal that a straight push reaches: pick a block, a direction and a distance; stage the push in the
    simulator (pusher placed behind the block, 0.1 m/s along the direction, physics only) and take where the block
    actually ends as its goal. Rejected when another object would be in the way, the block ends too close to the
    table's edge, or anything else moves. The rig's state is restored afterwards."""
    s0 = rig.get_state()
    pusher = rig.pusher_id
    poses = {p.object_id: p.position.copy() for p in rig.object_poses() if p.object_id != pusher}
    ids = sorted(poses)
    z0 = float(next(p.position[2] for p in rig.object_poses() if p.object_id == pusher))
    x0, y0, x1, y1 = rig.scenario.pusher.workspace
    try:
        for _ in range(tries):
            k = int(rng.choice(ids))
            theta = rng.uniform(0, 2 * math.pi)
            d = rng.uniform(goal_min, goal_max)
            u = np.array([math.cos(theta), math.sin(theta)])
            p = poses[k][:2]
            g = p + d * u
            if np.abs(g).max() > 0.22:
                continue
            approach = p - (_radius_xy(rig, k) + 0.015 + 0.01) * u
            if not (x0 + 0.02 < approach[0] < x1 - 0.02 and y0 + 0.02 < approach[1] < y1 - 0.02):
                continue
            clear = True
            for j in ids:
                if j == k:
                    continue
                q = poses[j][:2]
                # distance from object j to the swept segment approach -> goal
                seg = g - approach
                t = float(np.clip(np.dot(q - approach, seg) / np.dot(seg, seg), 0, 1))
                if np.linalg.norm(q - (approach + t * seg)) < _radius_xy(rig, j) + _radius_xy(rig, k) + 0.03:
                    clear = False
                    break
            if not clear:
                continue
            rig.set_state(s0)
            rig.set_pusher_position([approach[0], approach[1], z0])
            rig.set_pusher_velocity([0.1 * u[0], 0.1 * u[1], 0.0])
            for _ in range(math.ceil((d + 0.01) / 0.1 * rig.fps)):
                rig.step(render=False)
            rig.set_pusher_velocity([0.0, 0.0, 0.0])
            for _ in range(10):
                rig.step(render=False)
            end = {p.object_id: p.position.copy() for p in rig.object_poses() if p.object_id != pusher}
            moved = np.linalg.norm(end[k][:2] - p)
            others = max((np.linalg.norm(end[j][:2] - poses[j][:2]) for j in ids if j != k), default=0.0)
            if moved < 0.6 * d or others > 0.003 or np.abs(end[k][:2]).max() > 0.24:
                continue
            goal = {j: (end[k] if j == k else poses[j]).copy() for j in ids}
            return GoalSpec(object_id=k, start={j: poses[j].copy() for j in ids}, goal=goal, direction=u)
    finally:
        rig.set_state(s0)
    raise RuntimeError(f"no reachable goal found in {tries} tries")


def goal_distances(poses: list[ObjectPose], goal: GoalSpec) -> dict[int, float]:
    """Sim object id -> xy distance of its true position to its goal [m]."""
    by_id = {p.object_id: p.position for p in poses}
    return {k: float(np.linalg.norm(by_id[k][:2] - g[:2])) for k, g in goal.goal.items()}


# ---------------------------------------------------------------------------------------------------- policies
class RandomPolicy:
    """Smoothed random velocities up to ``max_speed`` (never done)."""

    name = "random"
    needs_frames = False

    def __init__(self, cfg: PlannerConfig, seed: int) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.v = np.zeros(2)

    def reset(self, rig: Any, goal: GoalSpec) -> None:
        self.v = np.zeros(2)

    def act(self, rig: Any, t_s: float, scene: Any) -> tuple[bool, np.ndarray]:
        w = self.rng.normal(0, self.cfg.max_speed, 2)
        self.v = 0.6 * self.v + 0.4 * w
        return False, np.array([*self.v, 0.0])


class OraclePolicy:
    """MPPI on a copy of the simulator's state (true poses, perfect model), state cost + the same reach shaping.

    Evaluation only (reads ground truth)."""

    name = "oracle"
    needs_frames = False

    def __init__(self, cfg: PlannerConfig, seed: int, done_tolerance: float) -> None:
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(seed)
        self.done_tolerance = done_tolerance
        self.mean = torch.zeros(cfg.horizon, 2, dtype=torch.float64)
        self.last = torch.zeros(2, dtype=torch.float64)
        self.plan_seconds: list[float] = []

    def reset(self, rig: Any, goal: GoalSpec) -> None:
        self.goal = goal
        self.mean.zero_()
        self.last.zero_()
        self.frames = max(1, round(self.cfg.dt * rig.fps))
        self.radius = _radius_xy(rig, goal.object_id) + 0.015 + 0.005

    def _cost(self, rig: Any, u: np.ndarray) -> float:
        g = self.goal
        pusher_xy = []
        obj_xy = []
        for t in range(u.shape[0]):
            rig.set_pusher_velocity([u[t, 0], u[t, 1], 0.0])
            for _ in range(self.frames):
                rig.step(render=False)
            poses = {p.object_id: p.position for p in rig.object_poses()}
            pusher_xy.append(poses[rig.pusher_id][:2])
            obj_xy.append(poses[g.object_id][:2])
        dist = sum(np.linalg.norm(poses[k][:2] - v[:2]) for k, v in g.goal.items())
        reach = 0.0
        for pp, oo in zip(pusher_xy, obj_xy, strict=True):
            to = g.goal[g.object_id][:2] - oo
            n = np.linalg.norm(to)
            if n > 0.01:
                reach += np.linalg.norm(pp - (oo - self.radius * to / n))
        smooth = float(np.sum(np.diff(np.vstack([self.last.numpy(), u]), axis=0) ** 2)) / self.cfg.max_speed ** 2
        return dist / 0.05 + 0.3 * reach / len(pusher_xy) / 0.1 + self.cfg.weights.smooth * smooth / u.shape[0]

    def act(self, rig: Any, t_s: float, scene: Any) -> tuple[bool, np.ndarray]:
        d = goal_distances(rig.object_poses(), self.goal)
        if max(d.values()) < self.done_tolerance:
            return True, np.zeros(3)
        t0 = time.perf_counter()
        cfg = self.cfg
        s0 = rig.get_state()
        H = cfg.horizon
        mean = torch.cat([self.mean[1:], torch.zeros(1, 2, dtype=torch.float64)])
        best_u, best_c = mean.clone(), math.inf
        for _ in range(max(1, cfg.sample_iters)):
            eps = torch.randn(cfg.samples, H, 2, generator=self.gen, dtype=torch.float64) * cfg.noise_std
            for t in range(1, H):
                eps[:, t] = cfg.noise_corr * eps[:, t - 1] + math.sqrt(1 - cfg.noise_corr ** 2) * eps[:, t]
            cand = mean + eps
            cand[0] = mean
            cand = clamp_actions(cand, cfg.max_speed, cfg.max_accel, cfg.dt, self.last)
            costs = []
            for s in range(cfg.samples):
                rig.set_state(s0)
                costs.append(self._cost(rig, cand[s].numpy()))
            c = torch.tensor(costs, dtype=torch.float64)
            i = int(torch.argmin(c))
            if float(c[i]) < best_c:
                best_c, best_u = float(c[i]), cand[i].clone()
            spread = float((c - c.min()).mean()) + 1e-9
            w = torch.softmax(-(c - c.min()) / (cfg.temperature * spread), dim=0)
            mean = clamp_actions((w[:, None, None] * cand).sum(0), cfg.max_speed, cfg.max_accel, cfg.dt, self.last)
        rig.set_state(s0)
        self.mean = best_u
        self.last = best_u[0].clone()
        self.plan_seconds.append(time.perf_counter() - t0)
        return False, np.array([float(best_u[0, 0]), float(best_u[0, 1]), 0.0])


class VisualPolicy:
    """The deployed path: segmenter -> scene -> Planner(backend) towards a goal image made from the first scene."""

    needs_frames = True

    def __init__(self, cfg: PlannerConfig, backend: str, seed: int, done_tolerance: float, checkpoint: str = "",
                 background: tuple[float, float, float] = (0.0, 0.0, 0.0), replan_every: int = 1) -> None:
        self.cfg = cfg
        self.replan_every = max(1, replan_every)
        self.calls = 0
        self.backend = backend
        self.name = f"visual-{backend}"
        self.seed = seed
        self.done_tolerance = done_tolerance
        self.checkpoint = checkpoint
        self.background = background
        self.plan_seconds: list[float] = []
        self.costs: list[float] = []
        self.first_history: list[tuple[str, float]] = []
        self.last_plan: Any = None

    def reset(self, rig: Any, goal: GoalSpec) -> None:
        self.goal = goal
        self.planner = None
        self.history: deque = deque(maxlen=3)

    def _state(self, pusher_xyz: np.ndarray) -> Any:
        from vidyn_ros.dynamics.state import ParticleState, pusher_object_id

        stamps = [s for s, _ in self.history]
        snaps = [g for _, g in self.history]
        last = snaps[-1]
        pid = pusher_object_id(last.object_ids, last.means, pusher_xyz)
        if len(snaps) == 3 and len({len(s) for s in snaps}) == 1:
            return ParticleState.from_snapshots(snaps, stamps, pusher_id=pid)
        return ParticleState.at_rest(last, stamps[-1], 1 / 30, pusher_id=pid)

    def observe(self, stamp_ns: int, gaussians: Any) -> None:
        self.history.append((stamp_ns, gaussians.detach().clone()))

    def act(self, rig: Any, t_s: float, cameras: Any) -> tuple[bool, np.ndarray]:
        from vidyn_ros.control.backends import make_backend
        from vidyn_ros.control.goal import LayeredRenderer, goal_from_moves
        from vidyn_ros.control.planner import Planner

        pusher_xyz = next(p.position for p in rig.object_poses() if p.object_id == rig.pusher_id)  # proprioception
        state = self._state(pusher_xyz)
        if self.planner is None:
            from dataclasses import replace

            from vidyn_ros.control.backends import default_sub_steps

            model = make_backend(self.backend, state, checkpoint=self.checkpoint)
            cfg = replace(self.cfg, sub_steps=self.cfg.sub_steps or default_sub_steps(self.backend, self.cfg.dt))
            self.planner = Planner(model, cfg, background=self.background)
            fine, _ = self.planner.cameras(cameras)
            g = state.to_gaussians()
            renderer = LayeredRenderer(fine, g.subset(g.object_ids == 0), self.background)
            goal, _ = goal_from_moves(g, [self.goal.move()], renderer, pusher_id=state.pusher_id)
            self.planner.set_goal(goal)
        # done when every object's scene centroid is within done_tolerance of its goal centroid (visual estimate)
        dist = self.planner.goal_distance(state)
        if dist is not None and dist < self.done_tolerance:
            return True, np.zeros(3)
        k = self.calls % self.replan_every
        self.calls += 1
        if k and self.last_plan is not None and k < len(self.last_plan.actions):
            return False, self.last_plan.actions[k]  # between replans: the plan's action for this period
        res = self.planner.plan(state, pusher_xyz, stamp_s=t_s)
        self.last_plan = res
        self.plan_seconds.append(res.seconds)
        self.costs.append(res.cost)
        if not self.first_history:
            self.first_history = list(res.history)
        if res.diverged:
            return False, np.zeros(3)
        return False, res.actions[0]


def make_policy(name: str, cfg: PlannerConfig, seed: int, ecfg: EpisodeConfig, checkpoint: str = "",
                background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Any:
    """``random``, ``oracle`` or ``visual-<backend>`` (static, constant_velocity, physics, learned)."""
    if name == "random":
        return RandomPolicy(cfg, seed)
    if name == "oracle":
        return OraclePolicy(cfg, seed, ecfg.done_tolerance)
    if name.startswith("visual-"):
        return VisualPolicy(cfg, name.removeprefix("visual-"), seed, ecfg.done_tolerance, checkpoint, background,
                            ecfg.replan_every)
    from vidyn_ros.errors import ConfigError

    raise ConfigError(f"unknown policy {name!r} (random, oracle, visual-<backend>)")


# ---------------------------------------------------------------------------------------------------- episode
def run_episode(policy: Any, seed: int, ecfg: EpisodeConfig, pcfg: PlannerConfig,
                progress: Any = None) -> EpisodeResult:
    """One closed-loop episode (see the module docstring). ``progress(t_s)`` is called every control step."""
    from vidyn_ros.rig.sim import SimRig

    t_wall = time.perf_counter()
    with SimRig(ecfg.scenario, seed=seed, render_scale=ecfg.render_scale,
                masks=ecfg.masks == "true") as rig:
        goal = sample_goal(rig, np.random.default_rng(seed), ecfg.goal_min, ecfg.goal_max)
        policy.reset(rig, goal)
        filt = CommandFilter(CommandLimits(pcfg.max_speed, pcfg.max_accel, pcfg.workspace, pcfg.dt))
        per_action = max(1, round(pcfg.dt * rig.fps))
        seg = est = None
        if policy.needs_frames:
            from vidyn_ros.scene.deployed import DeployedSegmenter, scene_config
            from vidyn_ros.scene.pipeline import SceneEstimator

            width = rig.cameras[0].width
            seg = DeployedSegmenter(width=width) if ecfg.masks == "segmenter" else None
            est = SceneEstimator(scene_config(width, budget=ecfg.scene_budget, init_iters=ecfg.scene_init_iters,
                                              seed=seed))
            policy.background = None  # set from the scene's estimate below
        paths: dict[int, list[np.ndarray]] = {p.object_id: [] for p in rig.object_poses()}
        rf = rig.observe() if policy.needs_frames else None
        steps, k, error = 0, 0, ""
        trace: list[float] = []
        while True:
            poses = rig.object_poses()
            for p in poses:
                paths[p.object_id].append(p.position[:2].copy())
            if est is not None:
                frame = seg(rf.frame) if seg is not None else rf.frame
                up = est.update(frame)
                if policy.background is None:
                    policy.background = tuple(float(v) for v in est.background)
                policy.observe(up.stamp_ns, up.gaussians)
            if k % per_action == 0:
                trace.append(max(goal_distances(poses, goal).values()))
                if rig.time_s >= ecfg.max_seconds:
                    break
                try:
                    done, v = policy.act(rig, rig.time_s, rig.cameras)
                except Exception as err:  # a backend failing mid-episode is a result (reported), not a crash
                    error = f"{type(err).__name__}: {err}"
                    done, v = True, np.zeros(3)
                if done:
                    break
                pusher = next(p.position for p in poses if p.object_id == rig.pusher_id)
                cmd = filt(v, rig.time_s, pusher)
                if hasattr(policy, "planner") and policy.planner is not None:
                    policy.planner.commit(cmd)
                rig.set_pusher_velocity(cmd)
                steps += 1
                if progress is not None:
                    progress(rig.time_s)
            rf = rig.step(render=policy.needs_frames)
            k += 1
        rig.set_pusher_velocity([0.0, 0.0, 0.0])
        for _ in range(5):  # let anything still sliding come to rest before scoring
            rig.step(render=False)
        dist = goal_distances(rig.object_poses(), goal)
        sim_s = rig.time_s
    plans = getattr(policy, "plan_seconds", [])
    return EpisodeResult(
        policy=policy.name, seed=seed, success=max(dist.values()) <= ecfg.tolerance and not error,
        final_distance=max(dist.values()), distances=dist, steps=steps, sim_seconds=sim_s,
        wall_seconds=time.perf_counter() - t_wall, plan_seconds=float(np.mean(plans)) if plans else 0.0, goal=goal,
        paths={k2: np.array(v) for k2, v in paths.items()}, costs=list(getattr(policy, "costs", [])),
        first_history=list(getattr(policy, "first_history", [])), distance_trace=trace, error=error,
    )  # fmt: skip
