"""The physics model as a dynamics backend: ``PhysicsDynamics.step(state, control, dt) -> state``.

Same call as the learned model (``vidyn_ros.dynamics.state.Dynamics``), so the MPC swaps one for the other. A step:

1. body states at t: read back exactly when ``state`` came out of this model (the body states of the last states
   it produced are kept), otherwise fitted from the particle history — each body's pose at t-1 and t by least
   squares (Kabsch) on its particles, its linear velocity from its particles' centroid over t-2 -> t, its angular
   velocity from the poses at t-1 and t (none where they differ by more than a quarter turn: a flipped fit);
2. simulate ``dt`` with the pusher driven by ``control`` (parallel worlds = the state's batch dimensions);
3. move every body's particles rigidly, the pusher's by the control, the table's not at all.

Gradients flow from the new particle positions to the controls, the physical parameters and (through the exact
read-back) to everything earlier in a rollout; fitted body states are not differentiated w.r.t. the particles.
:meth:`PhysicsDynamics.rollout` simulates a whole control sequence in one Newton call (faster than T steps).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidyn_ros.dynamics.state import Control, ParticleState, move_kinematic
from vidyn_ros.geometry_torch import matrix_to_quat, quat_mul, quat_to_axis_angle, quat_to_matrix
from vidyn_ros.physics.model import PhysicsConfig, PhysicsModel, PhysicsParams
from vidyn_ros.physics.scene import PUSHER, STATIC, ParticleBinding, build_from_scene, quat_conj

__all__ = ["BodyState", "PhysicsDynamics", "ScenePhysics", "fit_rigid"]

MAX_TURN_PER_STEP = math.pi / 2  # [rad] a fitted rotation between two frames beyond this is a flip, not a spin


@dataclass
class BodyState:
    """Rigid body states of W worlds: position [W, K, 3], quat [W, K, 4] (wxyz), linear [W, K, 3] [m/s],
    angular [W, K, 3] [rad/s]; the pusher's pose [W, 3], [W, 4]."""

    position: torch.Tensor
    quat: torch.Tensor
    linear: torch.Tensor
    angular: torch.Tensor
    pusher_position: torch.Tensor
    pusher_quat: torch.Tensor


def fit_rigid(local: torch.Tensor, world: torch.Tensor, weight: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares rigid transform (Kabsch) with ``world ≈ R @ local + t``.

    Args:
        local: [M, 3] points in the body frame; world: [..., M, 3] observed; weight: [M] (default 1).
    Returns:
        R [..., 3, 3], t [..., 3].
    """
    w = torch.ones(local.shape[0], dtype=world.dtype) if weight is None else weight.to(world.dtype)
    w = w / w.sum().clamp_min(1e-12)
    lc = (w[:, None] * local).sum(0)
    wc = (w[:, None] * world).sum(-2)
    H = ((local - lc) * w[:, None]).transpose(0, 1) @ (world - wc.unsqueeze(-2))  # [..., 3, 3]
    U, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.det(V @ U.transpose(-1, -2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = V @ D @ U.transpose(-1, -2)
    t = wc - (R @ lc.unsqueeze(-1)).squeeze(-1)
    return R, t


class PhysicsDynamics:
    """Newton rigid-body physics of the scene as a :class:`~vidyn_ros.dynamics.state.Dynamics` backend.

    Args:
        model: the physics model (bodies, pusher, parameters).
        binding: where each particle sits on its body (from :func:`~vidyn_ros.physics.scene.build_from_scene`).
    """

    def __init__(self, model: PhysicsModel, binding: ParticleBinding) -> None:
        self.model = model
        self.binding = binding
        self._exact: dict[int, tuple[weakref.ref, BodyState]] = {}
        self._mapped: tuple[torch.Tensor, ParticleBinding] | None = None

    @classmethod
    def from_state(cls, state: ParticleState, params: PhysicsParams | None = None,
                   config: PhysicsConfig | None = None, **kw) -> PhysicsDynamics:
        """Build from a scene snapshot (its newest entry; the first batch element if batched)."""
        idx = (0,) * len(state.batch_shape)
        model, binding = build_from_scene(state.to_gaussians(idx), state.pusher_id, params=params, config=config, **kw)
        return cls(model, binding)

    @property
    def params(self) -> PhysicsParams:
        return self.model.params

    @params.setter
    def params(self, value: PhysicsParams) -> None:
        self.model.params = value

    # ------------------------------------------------------------------------------------------ state <-> bodies
    def _binding_for(self, state: ParticleState) -> ParticleBinding:
        """The binding in the state's particle order (particles the model has not seen are attached to their
        object's body at the fitted pose, or stay static)."""
        b = self.binding
        ids = state.particle_ids.to("cpu")
        if len(ids) == len(b.particle_ids) and torch.equal(ids, b.particle_ids):
            return b
        if self._mapped is not None and self._mapped[0] is ids:
            return self._mapped[1]
        order = torch.argsort(b.particle_ids)
        sorted_ids = b.particle_ids[order]
        at = torch.searchsorted(sorted_ids, ids).clamp_max(max(len(sorted_ids) - 1, 0))
        found = sorted_ids[at] == ids if len(sorted_ids) else torch.zeros(len(ids), dtype=torch.bool)
        src = order[at]
        n = len(ids)
        body = torch.full((n,), STATIC, dtype=torch.int64)
        body[found] = b.body[src[found]]
        lp = state.now[(0,) * len(state.batch_shape)].detach().to("cpu", torch.float32).clone()
        lq = state.quats_now[(0,) * len(state.batch_shape)].detach().to("cpu", torch.float32).clone()
        lp[found] = b.local_position[src[found]]
        lq[found] = b.local_quat[src[found]]
        oids = state.object_ids.to("cpu")
        new = ~found
        if bool(new.any()):
            # new particles of an object with a body ride it from where they are now
            obj_to_body = {m.object_id: k for k, m in enumerate(self.model.bodies)}
            if self.model.pusher is not None:
                obj_to_body[self.model.pusher.object_id] = PUSHER
            known = ParticleBinding(ids, body.clone(), lp.clone(), lq.clone(), oids, b.pusher_position, b.pusher_quat)
            bs = self._fit_bodies(state, known)
            for i in torch.nonzero(new).squeeze(-1).tolist():
                k = obj_to_body.get(int(oids[i]), STATIC)
                if k == STATIC:
                    continue
                if k == PUSHER:
                    x, q = bs.pusher_position[0], bs.pusher_quat[0]
                else:
                    x, q = bs.position[0, k], bs.quat[0, k]
                R = quat_to_matrix(q)
                body[i] = k
                lp[i] = R.transpose(0, 1) @ (lp[i] - x)
                lq[i] = quat_mul(quat_conj(q), lq[i])
        mapped = ParticleBinding(ids, body, lp, lq, oids, b.pusher_position, b.pusher_quat)
        self._mapped = (ids, mapped)
        return mapped

    def _fit_bodies(self, state: ParticleState, binding: ParticleBinding) -> BodyState:
        """Body poses at t-1 and t by Kabsch on each body's particles; the linear velocity from the particles'
        centroid over the whole history (t-2 -> t), the angular from the poses at t-1 and t."""
        with torch.no_grad():
            W = math.prod(state.batch_shape)
            pos = state.positions.detach().to("cpu", torch.float32).reshape(W, *state.positions.shape[-3:])
            valid = state.valid.to("cpu")
            K = len(self.model.bodies)
            dt = state.step_seconds(-1)
            dt2 = dt + state.step_seconds(-2)
            poses = {}
            for k in [*range(K), PUSHER]:
                sel = binding.body == k
                if k == PUSHER and (self.model.pusher is None or not bool(sel.any())):
                    continue
                if not bool(sel.any()):
                    raise ValueError(f"body {k} has no particles in this state")
                w = (valid[sel] | ~valid[sel].any()).float()
                R1, t1 = fit_rigid(binding.local_position[sel], pos[:, -1, sel], w)
                R0, _ = fit_rigid(binding.local_position[sel], pos[:, -2, sel], w)
                wn = (w / w.sum().clamp_min(1e-12))[:, None]
                drift = ((pos[:, -1, sel] - pos[:, -3, sel]) * wn).sum(-2)  # of the particles' centroid [W, 3]
                poses[k] = (R0, R1, t1, drift)
            if K:
                R0, R1, t1, drift = (torch.stack([poses[k][i] for k in range(K)], 1) for i in range(4))
                # the particles' centroid over both intervals of the history: tracked poses jitter by millimetres per
                # frame and a fitted rotation's jitter moves a fitted centre off the centroid. Against the true
                # velocities of the held-out bowling windows (220 bodies): Kabsch centres over the last interval
                # mean 0.125 m/s off (max 2.8; assuming rest: 0.063), over both intervals 0.074 (max 1.5), the
                # centroid over both 0.040 (max 0.8). Lags an acceleration by half a frame.
                lin = drift / dt2
                rot = quat_to_axis_angle(matrix_to_quat(R1 @ R0.transpose(-1, -2)))
                # a turn of more than 90° in one frame is a fit that flipped between two near-symmetric poses of a
                # tracked cloud (exactly 180°: 94 rad/s at 30 fps, seen on bowling pins), not a motion: no spin
                ang = torch.where(rot.norm(dim=-1, keepdim=True) > MAX_TURN_PER_STEP, torch.zeros_like(rot), rot) / dt
                quat = matrix_to_quat(R1)
            else:
                t1 = lin = ang = torch.zeros(W, 0, 3)
                quat = torch.zeros(W, 0, 4)
            if PUSHER in poses:
                pp, pq = poses[PUSHER][2], matrix_to_quat(poses[PUSHER][1])
            else:
                pp = binding.pusher_position.expand(W, 3)
                pq = binding.pusher_quat.expand(W, 4)
            return BodyState(t1, quat, lin, ang, pp, pq)

    def body_state(self, state: ParticleState) -> BodyState:
        """Body states at the state's time t: exact for a state this model produced, else fitted."""
        hit = self._exact.get(id(state.positions))
        if hit is not None and hit[0]() is state.positions:
            return hit[1]
        return self._fit_bodies(state, self._binding_for(state))

    def produced(self, state: ParticleState) -> bool:
        """Whether ``state`` is one this model produced (and still remembers): stepping it continues exactly."""
        hit = self._exact.get(id(state.positions))
        return hit is not None and hit[0]() is state.positions

    def _remember(self, state: ParticleState, bs: BodyState) -> None:
        key = id(state.positions)
        self._exact = {k: v for k, v in self._exact.items() if v[0]() is not None}
        self._exact[key] = (weakref.ref(state.positions), bs)

    # ------------------------------------------------------------------------------------------------ stepping
    def _controls(self, state: ParticleState, controls: Sequence[Control | None], W: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        lin, ang, any_ang = [], [], False
        for c in controls:
            if c is None:
                lin.append(torch.zeros(W, 3))
                ang.append(torch.zeros(W, 3))
                continue
            lin.append(c.linear.to(torch.float32).cpu().expand(*state.batch_shape, 3).reshape(W, 3))
            if c.angular is not None:
                any_ang = True
                ang.append(c.angular.to(torch.float32).cpu().expand(*state.batch_shape, 3).reshape(W, 3))
            else:
                ang.append(torch.zeros(W, 3))
        return torch.stack(lin, 1), (torch.stack(ang, 1) if any_ang else None)

    def rollout(self, state: ParticleState, controls: Control | Sequence[Control | None], dt: float,
                params: PhysicsParams | None = None) -> list[ParticleState]:
        """The states after each control (a sequence, or one Control with a time axis [B..., T, 3]), in one
        simulation call. Same result as ``dynamics.state.rollout(self, ...)`` up to float rounding."""
        seq = [controls.at(t) for t in range(controls.horizon)] if isinstance(controls, Control) else list(controls)
        if not seq:
            return []
        state.validate()
        batch = state.batch_shape
        W = math.prod(batch)
        binding = self._binding_for(state)
        bs = self.body_state(state)
        lin, ang = self._controls(state, seq, W)
        traj = self.model.simulate(bs.position, bs.quat, bs.linear, bs.angular, frames=len(seq), frame_dt=dt,
                                   pusher_position=bs.pusher_position, pusher_quat=bs.pusher_quat,
                                   pusher_linear=lin, pusher_angular=ang, params=params, worlds=W)
        out = []
        device, dtype = state.positions.device, state.positions.dtype
        for f, c in enumerate(seq):
            p, q = binding.pose(traj.position[:, f], traj.quat[:, f], traj.pusher_position[:, f] if
                                self.model.pusher is not None else None,
                                traj.pusher_quat[:, f] if self.model.pusher is not None else None)
            p = p.reshape(*batch, *p.shape[-2:]).to(device, dtype)
            q = q.reshape(*batch, *q.shape[-2:]).to(device, dtype)
            if self.model.pusher is None and state.pusher_id is not None:
                p, q = move_kinematic(state, c, dt, p, q)
            state = state.advance(p, q, dt)
            nb = BodyState(traj.position[:, f], traj.quat[:, f], traj.linear[:, f], traj.angular[:, f],
                           traj.pusher_position[:, f] if self.model.pusher is not None else bs.pusher_position,
                           traj.pusher_quat[:, f] if self.model.pusher is not None else bs.pusher_quat)
            self._remember(state, nb)
            out.append(state)
        return out

    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        """The state ``dt`` seconds later (see the module docstring)."""
        return self.rollout(state, [control], dt)[0]



class ScenePhysics:
    """A physics backend for any scene: builds a :class:`PhysicsDynamics` from the state it is given and rebuilds it
    whenever a state did not come out of it (a new evaluation window, a changed scene), with one parameter set for
    every object: friction ``mu`` (object-table), mass = ``density`` x the fitted shape's volume, contact defaults.

    ``ScenePhysics.from_sysid(json)`` takes those from a ``vidyn sysid`` result (mean identified friction, mean
    identified density), the "identified physics" of the evaluation tables.
    """

    def __init__(self, mu: float | None = None, density: float | None = None, config: PhysicsConfig | None = None,
                 source: str = "defaults") -> None:
        from vidyn_ros.physics.model import DEFAULT_DENSITY, TABLE

        self.mu = float(TABLE["mu"] if mu is None else mu)
        self.density = float(DEFAULT_DENSITY if density is None else density)
        self.config = config
        self.source = source
        self.dynamics: PhysicsDynamics | None = None
        self.builds = 0

    @classmethod
    def from_sysid(cls, path: str, config: PhysicsConfig | None = None) -> ScenePhysics:
        """Parameters from a ``vidyn sysid`` sysid.json (VidynError when it has no identified value)."""
        import json

        from vidyn_ros.errors import VidynError

        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise VidynError(f"{path}: cannot read a sysid result ({err})") from None
        mus, dens = [], []
        shapes = {b["object_id"]: b for b in doc.get("bodies", [])}
        for oid, est in doc.get("estimates", {}).items():
            if est.get("mu") is not None:
                mus.append(est["mu"])
            b = shapes.get(int(oid))
            if est.get("mass") is not None and b is not None:
                from vidyn_ros.physics.model import Body, ShapeSpec

                vol = Body(0, ShapeSpec(b["shape"], tuple(b["size"])), np.zeros(3), np.array([1.0, 0, 0, 0])).volume
                dens.append(est["mass"] / vol)
        if not mus and not dens:
            raise VidynError(f"{path}: no identified mass or friction in this sysid result")
        return cls(mu=float(np.mean(mus)) if mus else None, density=float(np.mean(dens)) if dens else None,
                   config=config, source=str(path))

    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        d = self.dynamics
        if d is None or not d.produced(state):
            d = PhysicsDynamics.from_state(state, config=self.config)
            bodies = d.model.bodies
            d.params = PhysicsParams.defaults([self.density * b.volume for b in bodies]).replace(
                mu=torch.full((len(bodies),), self.mu))
            d.model.step_dt = d.model.stable_dt()  # stable for these masses (an identified density may be lower)
            self.dynamics = d
            self.builds += 1
        return d.step(state, control, dt)
