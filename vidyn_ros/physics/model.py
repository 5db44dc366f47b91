"""The physics model of a tabletop: rigid bodies, a kinematic pusher, the table; differentiable simulation in torch.

Newton's shape (../shared/design/STYLE.md): bodies and parameters -> :class:`PhysicsModel` (builds one Newton model
per number of parallel worlds, on first use) -> :meth:`PhysicsModel.simulate` from an initial body state, a pusher
command sequence and optional external forces -> a :class:`BodyTrajectory`. Everything is a torch tensor; gradients
reach the initial state, the commands, the forces and every :class:`PhysicsParams` field through
``torch.autograd`` (the backward pass runs on warp's Tape, see ``_warp_sim``).

Parameters follow ∇Sim (seed 003): mass m per body and the compliant contact θ = (k_e, k_d, k_f, μ). They are the
values of each object's contact *with the table* (what a block sliding on the table measures). Newton combines two
shapes' materials by their mean, so an object's own material is ``2·pair - table`` with the table's material fixed
(:data:`TABLE`); two objects touching each other then use the mean of their own materials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from vidyn_ros.geometry_torch import axis_angle_to_quat, quat_mul, quat_normalize
from vidyn_ros.physics._warp_sim import Schedule, ShapeSpec, WarpWorld, simulate, unit_inertia

__all__ = [
    "PARAM_NAMES",
    "PRIOR_RANGES",
    "TABLE",
    "Body",
    "BodyTrajectory",
    "PhysicsConfig",
    "PhysicsModel",
    "PhysicsParams",
    "ShapeSpec",
]

PARAM_NAMES = ("mass", "mu", "ke", "kd", "kf")
# The table's own contact material (mu, ke [N/m], kd [N s/m], kf [N s/m]); object-table pairs are identified.
TABLE = {"mu": 0.5, "ke": 2000.0, "kd": 10.0, "kf": 10.0}
# The pusher's own material: more damping than the table, so a push is a push and not a series of bounces (the
# damping stays inside the explicit integrator's limit for a 0.1 kg block at dt_max).
PUSHER_MATERIAL = {"mu": 0.5, "ke": 2000.0, "kd": 40.0, "kf": 10.0}
# Prior ranges of the object-table values (sysid's search box; "average" baseline = their centre, log centre for
# mass and stiffness). The lower ends keep an object's own material (2 pair - table) positive.
PRIOR_RANGES = {
    "mass": (0.02, 2.0),  # kg
    "mu": (0.3, 1.2),
    "ke": (1200.0, 5000.0),  # N/m
    "kd": (6.0, 40.0),  # N s/m
    "kf": (6.0, 40.0),  # N s/m
}
DEFAULT_DENSITY = 600.0  # kg/m^3 (wood-like): the mass of a body before identification


@dataclass(frozen=True)
class PhysicsConfig:
    """How the simulation is stepped.

    Attributes:
        dt_max: longest physics step [s]; a call of ``dt`` seconds uses ``ceil(dt / dt_max)`` equal steps.
            Semi-implicit Euler is explicit in the contact forces: at 1/600 s the default contact is stable but a
            pushed block rocks on its corners (velocity jitter of ~30 %, jagged gradients); at 1/1200 s a push at
            0.3 m/s settles within 30 ms (measured, docs/physics.md).
        stability: a step is also at most what explicit contact integration allows for the lightest body of the
            model's own parameters (:meth:`PhysicsModel.stable_dt`): ``k_e·dt² + 2·k_d·dt ≤ 4·stability·m_eff``.
            Light bodies fitted to thin, partly seen clouds (a 5 g box for a 50 g bowling pin) blew up at dt_max
            (docs/physics.md, "Physics as a predictor"); 0.6 still let one blow up in a pile of pins, 0.3 none of
            the 20 bowling windows. At 0.3 a body above 60 g (m_eff 15 g) keeps dt_max.
        max_refine: at most this many times more steps than dt_max gives (a floor on the step for absurd bodies).
        collide_every: contact detection (Newton's narrow phase) every n physics steps; in between, the contact
            points found are kept (in body frames) and their forces follow the bodies.
        contact_gap: contacts are detected this far before touching [m] (covers the motion between detections).
        angular_damping: Newton's rigid-body angular damping [1/s] (0: none; MuJoCo has none either).
        device: warp device ("cpu", "cuda:0").
    """

    dt_max: float = 1.0 / 1200.0
    stability: float = 0.3
    max_refine: int = 64
    collide_every: int = 4
    contact_gap: float = 0.02
    angular_damping: float = 0.0
    device: str = "cpu"


@dataclass
class PhysicsParams:
    """Per-object physical parameters, tensors [..., K] (leading dims: one set per world, or none = shared).

    Attributes:
        mass: [kg]. mu: Coulomb friction coefficient with the table. ke: contact stiffness [N/m], kd: contact
        damping [N s/m], kf: friction stiffness [N s/m] (friction is kf·v_t below the Coulomb limit), all of the
        object-table contact.
    """

    mass: torch.Tensor
    mu: torch.Tensor
    ke: torch.Tensor
    kd: torch.Tensor
    kf: torch.Tensor

    @classmethod
    def defaults(cls, masses: Sequence[float] | torch.Tensor) -> PhysicsParams:
        m = torch.as_tensor(masses, dtype=torch.float32)
        full = {k: torch.full_like(m, v) for k, v in TABLE.items()}
        return cls(mass=m, **full)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **kw: torch.Tensor) -> PhysicsParams:
        return replace(self, **kw)

    def detach(self) -> PhysicsParams:
        return PhysicsParams(**{k: v.detach() for k, v in self.as_dict().items()})

    def tolist(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v.detach().reshape(-1).tolist()] for k, v in self.as_dict().items()}


@dataclass(frozen=True)
class Body:
    """A rigid body: its object id in the scene, collision shape, and pose at build time (centre, wxyz)."""

    object_id: int
    shape: ShapeSpec
    position: np.ndarray
    quat_wxyz: np.ndarray
    kinematic: bool = False

    @property
    def volume(self) -> float:
        s = self.shape.size
        if self.shape.kind == "box":
            return 8.0 * s[0] * s[1] * s[2]
        if self.shape.kind == "sphere":
            return 4.0 / 3.0 * math.pi * s[0] ** 3
        if self.shape.kind == "cylinder":
            return math.pi * s[0] ** 2 * 2 * s[1]
        return math.pi * s[0] ** 2 * 2 * s[1] + 4.0 / 3.0 * math.pi * s[0] ** 3  # capsule


@dataclass
class BodyTrajectory:
    """Simulated body states at the end of every frame (dynamic bodies only, the pusher excluded).

    Attributes:
        position: [W, F, K, 3] body centres [m]; quat: [W, F, K, 4] (w, x, y, z); linear: [W, F, K, 3] velocity
        [m/s]; angular: [W, F, K, 3] angular velocity [rad/s], world axes. pusher_position: [W, F, 3] and
        pusher_quat [W, F, 4] (the commanded path at the frame ends; empty without a pusher).
    """

    position: torch.Tensor
    quat: torch.Tensor
    linear: torch.Tensor
    angular: torch.Tensor
    pusher_position: torch.Tensor
    pusher_quat: torch.Tensor


def _lever_ratio(shape: ShapeSpec) -> float:
    """max_j R_j² / i_j of a shape (R_j its reach off principal axis j, i_j its unit-mass inertia about it): how much
    lighter than its mass a body feels to a contact at its worst point (see PhysicsModel.stable_dt)."""
    if shape.kind == "sphere":
        return 0.0
    s = shape.size
    ext = np.array(s[:3] if shape.kind == "box" else (s[0], s[0], s[1] + (s[0] if shape.kind == "capsule" else 0)))
    i = np.diag(unit_inertia(shape))
    reach = np.array([ext[1] ** 2 + ext[2] ** 2, ext[0] ** 2 + ext[2] ** 2, ext[0] ** 2 + ext[1] ** 2])
    return float(np.max(reach / np.maximum(i, 1e-12)))


def _wxyz_to_xyzw(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., 1:], q[..., :1]], dim=-1)


def _xyzw_to_wxyz(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., 3:], q[..., :3]], dim=-1)


class PhysicsModel:
    """K dynamic rigid bodies (+ an optional kinematic pusher) on the table; simulate any number of parallel worlds.

    Args:
        bodies: the dynamic bodies (object ids, shapes, build poses).
        pusher: the kinematic pusher body, or None.
        params: per-body parameters [K]; default: mass from the shape at DEFAULT_DENSITY, contact = TABLE values.
        config: stepping (see :class:`PhysicsConfig`).
    """

    def __init__(self, bodies: Sequence[Body], pusher: Body | None = None, params: PhysicsParams | None = None,
                 config: PhysicsConfig | None = None) -> None:
        self.bodies = list(bodies)
        self.pusher = pusher
        self.config = config or PhysicsConfig()
        if params is None:
            params = PhysicsParams.defaults([DEFAULT_DENSITY * b.volume for b in self.bodies])
        self.params = params
        # the longest step, fixed when the model is made (from the parameters it is made with), not per call: the
        # discretisation must not change while sysid varies the parameters, or the loss jumps (and a clip generated
        # with one model is not reproduced by the same model at the truth). After replacing ``params`` with very
        # different masses, set it again: ``model.step_dt = model.stable_dt()``.
        self._unit_inertia = torch.tensor(np.stack([unit_inertia(b.shape) for b in self.bodies]) if self.bodies
                                          else np.zeros((0, 3, 3)), dtype=torch.float32)
        self.step_dt = self.stable_dt()
        self._worlds: dict[int, WarpWorld] = {}

    @property
    def object_ids(self) -> list[int]:
        return [b.object_id for b in self.bodies]

    def world(self, worlds: int) -> WarpWorld:
        """The Newton model for ``worlds`` parallel copies (built once per count; kernels compile once per machine)."""
        if worlds not in self._worlds:
            c = self.config
            self._worlds[worlds] = WarpWorld([b.shape for b in self.bodies], self.pusher.shape if self.pusher else None,
                                             worlds=worlds, device=c.device, contact_gap=c.contact_gap,
                                             angular_damping=c.angular_damping)
        return self._worlds[worlds]

    def initial_pose(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Build-time body centres [K, 3] and rotations [K, 4] (wxyz)."""
        pos = torch.tensor(np.stack([b.position for b in self.bodies]), dtype=torch.float32)
        quat = torch.tensor(np.stack([b.quat_wxyz for b in self.bodies]), dtype=torch.float32)
        return pos, quat

    # ------------------------------------------------------------------------------------------------ parameters
    def _newton_params(self, params: PhysicsParams, world: WarpWorld) -> list[torch.Tensor]:
        """Per-world object parameters -> the Newton model arrays (body mass / inertia and shape materials)."""
        W, K = world.worlds, world.objects
        P = int(world.has_pusher)

        def per_world(v: torch.Tensor) -> torch.Tensor:
            return v.to(torch.float32).expand(W, K) if v.dim() <= 1 else v.to(torch.float32).reshape(W, K)

        mass = per_world(params.mass).clamp_min(1e-4)
        inertia = mass[..., None, None] * self._unit_inertia
        inv_inertia = torch.linalg.inv(self._unit_inertia) / mass[..., None, None]
        # the kinematic pusher: any finite mass (never integrated)
        pm = torch.full((W, P), 1.0)
        pI = torch.eye(3).expand(W, P, 3, 3) * 1e-3
        body_mass = torch.cat([mass, pm], 1).reshape(-1)
        body_inv_mass = torch.cat([1.0 / mass, 1.0 / pm], 1).reshape(-1)
        body_inertia = torch.cat([inertia, pI], 1).reshape(-1, 3, 3)
        body_inv_inertia = torch.cat([inv_inertia, pI * 1e6], 1).reshape(-1, 3, 3)
        shape = []
        for name in ("mu", "ke", "kd", "kf"):
            table = TABLE[name]
            own = (2.0 * per_world(getattr(params, name)) - table).clamp_min(1e-3 * table)
            pusher = torch.full((W, P), PUSHER_MATERIAL[name])
            shape.append(torch.cat([torch.cat([own, pusher], 1).reshape(-1), torch.tensor([table])]))
        return [body_mass, body_inv_mass, body_inertia, body_inv_inertia, *shape]

    # ------------------------------------------------------------------------------------------------ simulation
    def stable_dt(self, params: PhysicsParams | None = None) -> float:
        """Longest step [s] at which the explicit (semi-implicit Euler) contact integration is stable for every body
        with ``params`` (default: the model's own).

        One contact with stiffness k and damping c on an effective mass m_eff, integrated by semi-implicit Euler,
        is stable iff ``k·dt²/m_eff + 2·c·dt/m_eff < 4`` (the update matrix's Jury conditions). m_eff is the mass
        a contact at the worst lever arm sees: ``m / (1 + max_j R_j²·m / I_j)`` (R_j the shape's reach off its
        principal axis j; m/4 for every box, m for a sphere, whose contact normals pass through its centre); k and
        c are the largest the body can meet (the table, another object; not the pusher, whose damping was chosen at
        dt_max for the blocks it pushes). ``config.stability`` < 1 is the margin for several contacts at once.
        """
        p = params or self.params
        c = self.config
        K = len(self.bodies)
        if K == 0:
            return c.dt_max

        def per_body(v: torch.Tensor) -> np.ndarray:
            v = v.detach().to(torch.float64).cpu()
            return (v.reshape(-1, K).min(0).values if v.dim() > 1 else v.expand(K)).numpy()

        def worst(name: str, v: torch.Tensor) -> np.ndarray:
            pair = v.detach().to(torch.float64).cpu()
            pair = (pair.reshape(-1, K).max(0).values if pair.dim() > 1 else pair.expand(K)).numpy()
            own = np.maximum(2.0 * pair - TABLE[name], 1e-3 * TABLE[name])
            out = np.maximum(pair, (own + own.max()) / 2)  # the table; the stiffest other object
            return out  # not the pusher's damping: chosen for dt_max and measured there (PUSHER_MATERIAL)

        mass = np.maximum(per_body(p.mass), 1e-4)
        ke, kd = worst("ke", p.ke), worst("kd", p.kd)
        dts = []
        for k, b in enumerate(self.bodies):
            meff = mass[k] / (1.0 + _lever_ratio(b.shape))
            a, bb, cc = ke[k], 2.0 * kd[k], -4.0 * c.stability * meff  # a dt² + bb dt + cc <= 0
            dts.append((-bb + math.sqrt(bb * bb - 4 * a * cc)) / (2 * a))
        return float(max(min(c.dt_max, min(dts)), c.dt_max / c.max_refine))

    def steps_for(self, dt: float) -> int:
        """Physics steps for a call of ``dt`` seconds: equal steps no longer than ``self.step_dt``."""
        return max(1, math.ceil(dt / self.step_dt - 1e-9))

    def simulate(
        self,
        position: torch.Tensor,
        quat: torch.Tensor,
        linear: torch.Tensor,
        angular: torch.Tensor,
        frames: int,
        frame_dt: float,
        pusher_position: torch.Tensor | None = None,
        pusher_quat: torch.Tensor | None = None,
        pusher_linear: torch.Tensor | None = None,
        pusher_angular: torch.Tensor | None = None,
        forces: torch.Tensor | None = None,
        params: PhysicsParams | None = None,
        worlds: int | None = None,
    ) -> BodyTrajectory:
        """Simulate ``frames`` frames of ``frame_dt`` seconds from an initial body state.

        Args:
            position, quat, linear, angular: initial body state [W, K, 3 / 4 / 3 / 3] (or [K, ...]: one world);
                linear is the centre's velocity [m/s], angular the angular velocity [rad/s], world axes.
            pusher_position [W, 3], pusher_quat [W, 4]: the pusher's pose at the start (None without a pusher).
            pusher_linear [W, F, 3], pusher_angular [W, F, 3] or None: the commanded twist over every frame (held
                for the frame, the /vidyn/cmd semantics); None = still.
            forces: [W, F * steps, K, 3] external force on each body's centre [N] for every physics step, or None.
            params: parameters (default: the model's); [K] shared or [W, K] per world.
            worlds: W (default: from the leading dim of ``position``).
        Returns:
            BodyTrajectory of the F frame ends.
        """
        one = position.dim() == 2
        if one:
            position, quat, linear, angular = (t.unsqueeze(0) for t in (position, quat, linear, angular))
        W = worlds or position.shape[0]
        K = len(self.bodies)
        if position.shape[-2] != K:
            raise ValueError(f"initial state has {position.shape[-2]} bodies, the model {K}")
        world = self.world(W)
        steps = self.steps_for(frame_dt)
        dt = frame_dt / steps
        n = frames * steps
        sched = Schedule(frames=frames, substeps=steps, dt=dt, collide_every=self.config.collide_every)
        f32 = torch.float32
        position, quat, linear, angular = (t.to(f32).expand(W, K, t.shape[-1]) for t in (position, quat, linear,
                                                                                         angular))
        P = int(world.has_pusher)
        q0 = torch.cat([position, _wxyz_to_xyzw(quat_normalize(quat))], -1)
        qd0 = torch.cat([linear, angular], -1)
        if P:
            if pusher_position is None:
                raise ValueError("this model has a pusher: give its pose")
            pp = pusher_position.to(f32).expand(W, 3)
            pq = (pusher_quat.to(f32) if pusher_quat is not None else torch.tensor([1.0, 0, 0, 0])).expand(W, 4)
            still = torch.zeros(W, frames, 3)
            pv = (pusher_linear.to(f32) if pusher_linear is not None else still).expand(W, frames, 3)
            pw = (pusher_angular.to(f32) if pusher_angular is not None else still).expand(W, frames, 3)
            v_step = pv.repeat_interleave(steps, dim=1)  # [W, n, 3]
            w_step = pw.repeat_interleave(steps, dim=1)
            # pose at the start of step i: p0 + sum_{j<i} v_j dt (the command integrated exactly, as the rig does)
            disp = torch.cumsum(v_step * dt, dim=1) - v_step * dt
            path_p = pp[:, None, :] + disp
            dq = axis_angle_to_quat(w_step * dt)
            if pusher_angular is None:
                path_q = pq[:, None, :].expand(W, n, 4)
            else:
                rot = [pq]
                for i in range(n - 1):
                    rot.append(quat_normalize(quat_mul(dq[:, i], rot[-1])))
                path_q = torch.stack(rot, 1)  # [W, n, 4]
            kin_q = torch.cat([path_p, _wxyz_to_xyzw(path_q)], -1).transpose(0, 1)  # [n, W, 7]
            kin_qd = torch.cat([v_step, w_step], -1).transpose(0, 1)  # [n, W, 6]
        else:
            kin_q = torch.zeros(n, 0, 7)
            kin_qd = torch.zeros(n, 0, 6)
        # Newton's body arrays: per world K objects then the pusher
        if P:
            q0 = torch.cat([q0, kin_q[0].unsqueeze(1)], 1)
            qd0 = torch.cat([qd0, kin_qd[0].unsqueeze(1)], 1)
        q0, qd0 = q0.reshape(-1, 7), qd0.reshape(-1, 6)
        ext = None
        if forces is not None:
            f = forces.to(f32).expand(W, n, K, 3)
            wrench = torch.cat([f, torch.zeros_like(f)], -1)  # no torque: forces act on the centre
            if P:
                wrench = torch.cat([wrench, torch.zeros(W, n, P, 6)], 2)
            ext = wrench.transpose(0, 1).reshape(n, -1, 6)
        newton_params = self._newton_params(params or self.params, world)
        q, qd = simulate(world, sched, q0, qd0, newton_params, kin_q, kin_qd, ext)
        B = K + P
        q = q.view(frames, W, B, 7).transpose(0, 1)
        qd = qd.view(frames, W, B, 6).transpose(0, 1)
        traj = BodyTrajectory(
            position=q[:, :, :K, :3], quat=_xyzw_to_wxyz(q[:, :, :K, 3:]),
            linear=qd[:, :, :K, :3], angular=qd[:, :, :K, 3:],
            pusher_position=path_p[:, steps - 1::steps] + v_step[:, steps - 1::steps] * dt if P else torch.zeros(0),
            pusher_quat=quat_normalize(quat_mul(dq[:, steps - 1::steps], path_q[:, steps - 1::steps])) if P
            else torch.zeros(0),
        )  # fmt: skip
        return traj
