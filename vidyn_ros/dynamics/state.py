"""One particle state and one ``step(state, control, dt) -> state`` for every dynamics backend.

The learned particle dynamics (seed 001), the Newton physics model (seed 003) and the baselines all implement
:class:`Dynamics`, so the visual MPC swaps one for another with one parameter. As in graphcast, a backend knows one
step; rollouts and sub-stepping are wrappers (:func:`rollout`, :class:`SubStepped`).

Shapes: ``B...`` are leading batch dimensions (none for one scene; ``[S]`` for S sampled action sequences of a
planner; ``[B]`` for a training batch of the same scene). Per-particle attributes that do not move (ids, scale,
colour, opacity) are shared by the whole batch: ``[N, ...]``. A history axis of length ``HISTORY`` holds t-2, t-1, t
(last = now).

A state is a snapshot: its tensors are never written in place by the library (``advance`` builds new ones), so a
consumer that keeps the last three states keeps three different states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch

from vidyn_ros.errors import VidynError
from vidyn_ros.geometry_torch import (
    axis_angle_to_quat,
    quat_mul,
    quat_normalize,
    quat_to_axis_angle,
    rotate,
)
from vidyn_ros.types import GaussianSet

HISTORY = 3  # t-2, t-1, t: two velocities, as the paper's features f = [v_{t-1}, v_t, z_{t-1}, z_t]


class InvalidStateError(VidynError):
    """A particle state that no backend can step (NaN positions, mismatched shapes, < 3 snapshots)."""


@dataclass(frozen=True)
class ParticleState:
    """Gaussians as particles with a short history (see the module docstring for shapes).

    Attributes:
        positions: [B..., 3, N, 3] world positions [m] at t-2, t-1, t.
        quats: [B..., 3, N, 4] unit rotations (w, x, y, z) at t-2, t-1, t.
        stamps_ns: times of the three history entries [ns] (sim time on the simulated rig).
        particle_ids: [N] int64 stable ids (``GaussianSet.particle_ids``): the same particle across states and files.
        object_ids: [N] int64 object id, 0 = background / table.
        log_scales: [N, 3] Gaussian log standard deviations (carried for rendering).
        colors: [N, 3] RGB in [0, 1] (carried for rendering).
        opacity_logits: [N] (carried for rendering).
        valid: [N] bool, False for a particle without a full history (born inside the window: its history is
            padded with its first position and rotation, i.e. zero velocity).
        pusher_id: object id whose particles are kinematic (moved by the control, not predicted); None: no pusher.
        soft_ids: optional [N, K] distribution of each particle over the objects ``soft_id_labels`` (e.g. the
            cross-view vote fractions); None means one-hot of ``object_ids``.
        soft_id_labels: [K] int64 object ids of the ``soft_ids`` columns.
    """

    positions: torch.Tensor
    quats: torch.Tensor
    stamps_ns: tuple[int, int, int]
    particle_ids: torch.Tensor
    object_ids: torch.Tensor
    log_scales: torch.Tensor
    colors: torch.Tensor
    opacity_logits: torch.Tensor
    valid: torch.Tensor
    pusher_id: int | None = None
    soft_ids: torch.Tensor | None = None
    soft_id_labels: torch.Tensor | None = None

    # ------------------------------------------------------------------ shape and views
    def __len__(self) -> int:
        return int(self.particle_ids.shape[0])

    @property
    def batch_shape(self) -> torch.Size:
        return self.positions.shape[:-3]

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def now(self) -> torch.Tensor:
        """[B..., N, 3] positions at t."""
        return self.positions[..., -1, :, :]

    @property
    def quats_now(self) -> torch.Tensor:
        """[B..., N, 4] rotations at t."""
        return self.quats[..., -1, :, :]

    @property
    def time_s(self) -> float:
        return self.stamps_ns[-1] * 1e-9

    def step_seconds(self, k: int = -1) -> float:
        """Length [s] of the history interval ending at entry ``k`` (-1: t-1 -> t, -2: t-2 -> t-1)."""
        k = k % HISTORY
        if k == 0:
            raise ValueError("the first history entry has no interval before it")
        return max((self.stamps_ns[k] - self.stamps_ns[k - 1]) * 1e-9, 1e-9)

    def velocity(self, k: int = -1) -> torch.Tensor:
        """[B..., N, 3] finite-difference velocity [m/s] over the interval ending at history entry ``k``."""
        k = k % HISTORY
        return (self.positions[..., k, :, :] - self.positions[..., k - 1, :, :]) / self.step_seconds(k)

    @property
    def kinematic(self) -> torch.Tensor:
        """[N] bool: the pusher's particles (moved by the control)."""
        if self.pusher_id is None:
            return torch.zeros_like(self.valid)
        return self.object_ids == self.pusher_id

    def object_labels(self) -> list[int]:
        """Object ids present, background (0) excluded, sorted."""
        return [int(k) for k in torch.unique(self.object_ids).tolist() if k != 0]

    # ------------------------------------------------------------------ building new states
    def advance(self, positions: torch.Tensor, quats: torch.Tensor, dt: float) -> ParticleState:
        """The state one step of ``dt`` seconds later: new positions [B..., N, 3] and rotations [B..., N, 4] at
        t + dt become "now"; the oldest history entry is dropped. Batch dimensions broadcast with the state's."""
        batch = torch.broadcast_shapes(self.batch_shape, positions.shape[:-2], quats.shape[:-2])
        hist_p = self.positions.expand(*batch, *self.positions.shape[-3:])
        hist_q = self.quats.expand(*batch, *self.quats.shape[-3:])
        new_p = torch.cat([hist_p[..., 1:, :, :], positions.expand(*batch, *positions.shape[-2:]).unsqueeze(-3)], -3)
        new_q = torch.cat([hist_q[..., 1:, :, :], quats.expand(*batch, *quats.shape[-2:]).unsqueeze(-3)], -3)
        stamps = (self.stamps_ns[1], self.stamps_ns[2], self.stamps_ns[2] + round(dt * 1e9))
        return replace(self, positions=new_p, quats=new_q, stamps_ns=stamps)

    def expand(self, *batch: int) -> ParticleState:
        """The same state repeated over new leading batch dimensions (views, no copy)."""
        return replace(
            self,
            positions=self.positions.expand(*batch, *self.positions.shape[-3:]),
            quats=self.quats.expand(*batch, *self.quats.shape[-3:]),
        )

    def index(self, i: int | tuple[int, ...]) -> ParticleState:
        """One element of the batch."""
        return replace(self, positions=self.positions[i], quats=self.quats[i])

    def subset(self, keep: torch.Tensor) -> ParticleState:
        """Only the particles ``keep`` ([N] bool or indices)."""
        soft = self.soft_ids[keep] if self.soft_ids is not None else None
        return replace(
            self,
            positions=self.positions[..., keep, :],
            quats=self.quats[..., keep, :],
            particle_ids=self.particle_ids[keep],
            object_ids=self.object_ids[keep],
            log_scales=self.log_scales[keep],
            colors=self.colors[keep],
            opacity_logits=self.opacity_logits[keep],
            valid=self.valid[keep],
            soft_ids=soft,
        )

    def to(self, device: torch.device | str) -> ParticleState:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self, positions=mv(self.positions), quats=mv(self.quats), particle_ids=mv(self.particle_ids),
            object_ids=mv(self.object_ids), log_scales=mv(self.log_scales), colors=mv(self.colors),
            opacity_logits=mv(self.opacity_logits), valid=mv(self.valid), soft_ids=mv(self.soft_ids),
            soft_id_labels=mv(self.soft_id_labels),
        )  # fmt: skip

    def detach(self) -> ParticleState:
        return replace(self, positions=self.positions.detach(), quats=self.quats.detach())

    def to_gaussians(self, batch_index: int | tuple[int, ...] = ()) -> GaussianSet:
        """The Gaussians at t (of one batch element) for the renderer."""
        return GaussianSet(
            means=self.now[batch_index],
            quats=self.quats_now[batch_index],
            log_scales=self.log_scales,
            colors=self.colors,
            opacity_logits=self.opacity_logits,
            object_ids=self.object_ids,
            particle_ids=self.particle_ids,
        )

    def validate(self) -> ParticleState:
        """Raise InvalidStateError when the state cannot be stepped (shapes, NaN/inf). Returns self."""
        n = len(self)
        if self.positions.shape[-3:] != (HISTORY, n, 3) or self.quats.shape[-3:] != (HISTORY, n, 4):
            raise InvalidStateError(
                f"particle state: positions {tuple(self.positions.shape)} / quats {tuple(self.quats.shape)} do not "
                f"match [..., {HISTORY}, {n}, 3/4]"
            )
        for name in ("positions", "quats"):
            t = getattr(self, name)
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).any(-1).sum())
                raise InvalidStateError(f"particle state: {bad} non-finite {name} entries")
        if not (self.stamps_ns[0] < self.stamps_ns[1] < self.stamps_ns[2]):
            raise InvalidStateError(f"particle state: stamps {self.stamps_ns} are not increasing")
        return self

    # ------------------------------------------------------------------ from the scene
    @classmethod
    def from_snapshots(
        cls,
        snapshots: Sequence[GaussianSet],
        stamps_ns: Sequence[int],
        pusher_id: int | None = None,
    ) -> ParticleState:
        """A state from the scene's last three GaussianSets (oldest first), aligned by ``particle_ids``.

        The particle set is that of the newest snapshot. A particle missing from an older snapshot (born since) is
        padded with its next known position and marked not valid. Raises InvalidStateError on fewer than three
        snapshots, non-increasing stamps or non-finite values.
        """
        if len(snapshots) != HISTORY or len(stamps_ns) != HISTORY:
            raise InvalidStateError(f"particle state needs {HISTORY} snapshots, got {len(snapshots)}")
        last = snapshots[-1]
        ids = last.particle_ids
        n = len(last)
        pos = [None] * HISTORY
        rot = [None] * HISTORY
        valid = torch.ones(n, dtype=torch.bool, device=last.device)
        pos[-1], rot[-1] = last.means.detach(), quat_normalize(last.quats.detach())
        for h in range(HISTORY - 2, -1, -1):  # newest to oldest: missing entries copy the next newer one
            g = snapshots[h]
            p, q = pos[h + 1].clone(), rot[h + 1].clone()
            # where is each current particle in snapshot h? (ids sorted once; searchsorted is O(N log N))
            order = torch.argsort(g.particle_ids)
            sorted_ids = g.particle_ids[order]
            at = torch.searchsorted(sorted_ids, ids).clamp_max(max(len(g) - 1, 0))
            found = sorted_ids[at] == ids if len(g) else torch.zeros(n, dtype=torch.bool, device=last.device)
            src = order[at[found]]
            p[found] = g.means.detach()[src].to(p.dtype)
            q[found] = quat_normalize(g.quats.detach()[src]).to(q.dtype)
            valid &= found
            pos[h], rot[h] = p, q
        state = cls(
            positions=torch.stack(pos), quats=torch.stack(rot),
            stamps_ns=(int(stamps_ns[0]), int(stamps_ns[1]), int(stamps_ns[2])),
            particle_ids=ids.clone(), object_ids=last.object_ids.clone(), log_scales=last.log_scales.detach().clone(),
            colors=last.colors.detach().clone(), opacity_logits=last.opacity_logits.detach().clone(), valid=valid,
            pusher_id=pusher_id,
        )  # fmt: skip
        return state.validate()

    @classmethod
    def at_rest(cls, gaussians: GaussianSet, stamp_ns: int, dt: float, pusher_id: int | None = None) -> ParticleState:
        """A state whose history is the same snapshot three times (everything at rest) ending at ``stamp_ns``."""
        step = round(dt * 1e9)
        stamps = [stamp_ns - 2 * step, stamp_ns - step, stamp_ns]
        return cls.from_snapshots([gaussians] * HISTORY, stamps, pusher_id=pusher_id)


@dataclass(frozen=True)
class Control:
    """The pusher's commanded motion over one step, in the world frame (geometry_msgs/Twist semantics).

    Attributes:
        linear: [B..., 3] velocity [m/s].
        angular: [B..., 3] angular velocity [rad/s] about the pusher's centroid; None: no rotation.
    """

    linear: torch.Tensor
    angular: torch.Tensor | None = None

    @classmethod
    def zero(cls, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Control:
        return cls(torch.zeros(3, device=device, dtype=dtype))

    def at(self, t: int) -> Control:
        """Entry ``t`` of a control sequence with a time axis at dim -2 ([B..., T, 3])."""
        return Control(self.linear[..., t, :], None if self.angular is None else self.angular[..., t, :])

    @property
    def horizon(self) -> int:
        """Length of the time axis of a control sequence ([B..., T, 3])."""
        return int(self.linear.shape[-2])


@runtime_checkable
class Dynamics(Protocol):
    """What every dynamics backend implements (learned, physics, baselines)."""

    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        """The state ``dt`` seconds later. ``control`` moves the pusher over the step; None holds it still."""
        ...


# ---------------------------------------------------------------------- helpers every backend uses
def move_kinematic(
    state: ParticleState, control: Control | None, dt: float, positions: torch.Tensor, quats: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Overwrite the pusher's particles in predicted ``positions`` [B..., N, 3] / ``quats`` [B..., N, 4] by the
    kinematic motion the control prescribes from t (translation by v·dt, rotation by ω·dt about its centroid).
    Differentiable in the control. Returns broadcast (positions, quats)."""
    kin = state.kinematic
    if not bool(kin.any()):
        return positions, quats
    p_now = state.now[..., kin, :]
    q_now = state.quats_now[..., kin, :]
    if control is None:
        new_p, new_q = p_now, q_now
    else:
        v = control.linear.to(p_now.dtype)
        new_p = p_now + (v * dt).unsqueeze(-2)
        new_q = q_now
        if control.angular is not None:
            dq = axis_angle_to_quat(control.angular.to(p_now.dtype) * dt).unsqueeze(-2)
            c = p_now.mean(dim=-2, keepdim=True)
            new_p = c + (v * dt).unsqueeze(-2) + rotate(dq, p_now - c)
            new_q = quat_normalize(quat_mul(dq, q_now))
    batch = torch.broadcast_shapes(positions.shape[:-2], new_p.shape[:-2])
    positions = positions.expand(*batch, *positions.shape[-2:]).clone()
    quats = quats.expand(*batch, *quats.shape[-2:]).clone()
    positions[..., kin, :] = new_p.expand(*batch, *new_p.shape[-2:])
    quats[..., kin, :] = new_q.expand(*batch, *new_q.shape[-2:])
    return positions, quats


def pusher_object_id(
    object_ids: torch.Tensor, positions: torch.Tensor, pusher_xyz: Sequence[float], max_distance: float = 0.03
) -> int | None:
    """The object id whose particles lie closest to the pusher's known position (the robot's own end-effector
    pose: proprioception, not object ground truth), or None if no object's nearest particle is within
    ``max_distance`` [m]. ``object_ids`` [N], ``positions`` [N, 3]; background (0) is never the pusher."""
    p = torch.as_tensor(pusher_xyz, dtype=positions.dtype, device=positions.device)
    fg = object_ids > 0
    if not bool(fg.any()):
        return None
    d = (positions[fg] - p).norm(dim=-1)
    i = int(torch.argmin(d))
    return int(object_ids[fg][i]) if float(d[i]) <= max_distance else None


def rollout(
    model: Dynamics, state: ParticleState, controls: Control | Sequence[Control | None], dt: float
) -> list[ParticleState]:
    """Autoregressive rollout: the states after each of the ``controls`` (a sequence, or one Control with a time
    axis [B..., T, 3]), each ``dt`` seconds apart. Returns T states (the input state excluded)."""
    seq: list[Control | None] = (
        [controls.at(t) for t in range(controls.horizon)] if isinstance(controls, Control) else list(controls)
    )
    out = []
    for c in seq:
        state = model.step(state, c, dt)
        out.append(state)
    return out


def stack_positions(states: Sequence[ParticleState]) -> torch.Tensor:
    """[B..., T, N, 3] positions at t of each state (e.g. a rollout)."""
    return torch.stack([s.now for s in states], dim=-3)


class SubStepped:
    """``n`` steps of ``dt / n`` per call (SRVP's residual refinement of Δt at test time, ../shared/seeds/002)."""

    def __init__(self, model: Dynamics, n: int) -> None:
        if n < 1:
            raise ValueError(f"sub-steps must be >= 1, got {n}")
        self.model, self.n = model, n

    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        for _ in range(self.n):
            state = self.model.step(state, control, dt / self.n)
        return state


class ConstantVelocity:
    """Baseline: every particle keeps its last linear velocity and its last angular velocity (no interaction)."""

    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        ratio = dt / state.step_seconds(-1)
        p = state.now + state.velocity(-1) * dt
        q_prev, q_now = state.quats[..., -2, :, :], state.quats_now
        q_inv = q_prev * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q_prev.dtype, device=q_prev.device)
        w = quat_to_axis_angle(quat_mul(q_now, q_inv)) * ratio  # world-frame rotation over the last interval
        q = quat_normalize(quat_mul(axis_angle_to_quat(w), q_now))
        p, q = move_kinematic(state, control, dt, p, q)
        return state.advance(p, q, dt)


class Static:
    """Baseline: nothing moves but the pusher."""

    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        p, q = move_kinematic(state, control, dt, state.now, state.quats_now)
        return state.advance(p, q, dt)
