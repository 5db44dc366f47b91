"""Newton (warp) side of the physics model: one tabletop world replicated W times, simulated on a ``wp.Tape`` and
wrapped as a ``torch.autograd.Function`` so that gradients flow from torch losses (pixels, positions) to the initial
body states, the pusher path, external forces and the physical parameters.

Only this module imports warp and newton (they are heavy and compile kernels on first use, cached in
``~/.cache/warp``). Conventions at this boundary are Newton's: transforms are (x, y, z, qx, qy, qz, qw); spatial
velocities are (linear velocity of the centre of mass, angular velocity), both in world axes.

Model (∇Sim, seed 003, section 3.2; Newton's ``SolverSemiImplicit``): rigid bodies integrated by semi-implicit
Euler; compliant contact per contact point with normal force ``f_n = k_e·C + k_d·min(Ċ, 0)`` (C the penetration
depth) and relaxed Coulomb friction ``f_t = -min(k_f·|u_t|, μ·|f_n|)·u_t/|u_t|``. A contact pair uses the mean of the
two shapes' (k_e, k_d, k_f, μ). The narrow phase runs every ``collide_every`` substeps and is not differentiated
(which contacts exist is frozen between collisions); forces through the existing contacts are.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

_INIT_LOCK = threading.Lock()
_KERNELS: dict[str, object] = {}


def _warp():
    """Import and initialise warp once (quietly), define this module's kernels."""
    import warp as wp

    with _INIT_LOCK:
        if not _KERNELS:
            wp.config.quiet = True
            wp.config.log_level = wp.LOG_WARNING  # no banner, no per-module load lines
            wp.init()
            _define_kernels(wp)
    return wp


def _define_kernels(wp) -> None:
    @wp.kernel(enable_backward=False)
    def set_kinematic(
        kin_body: wp.array(dtype=wp.int32),
        kin_q: wp.array(dtype=wp.transform),
        kin_qd: wp.array(dtype=wp.spatial_vector),
        body_q: wp.array(dtype=wp.transform),
        body_qd: wp.array(dtype=wp.spatial_vector),
    ):
        i = wp.tid()
        b = kin_body[i]
        body_q[b] = kin_q[i]
        body_qd[b] = kin_qd[i]

    @wp.kernel(enable_backward=False)
    def set_kinematic_adjoint(
        kin_body: wp.array(dtype=wp.int32),
        adj_body_q: wp.array(dtype=wp.transform),
        adj_body_qd: wp.array(dtype=wp.spatial_vector),
        adj_kin_q: wp.array(dtype=wp.transform),
        adj_kin_qd: wp.array(dtype=wp.spatial_vector),
    ):
        # The forward kernel overwrote these entries: their adjoint belongs to the prescribed path and must not
        # leak into the (passed-through) value from the step before.
        i = wp.tid()
        b = kin_body[i]
        adj_kin_q[i] = adj_kin_q[i] + adj_body_q[b]
        adj_kin_qd[i] = adj_kin_qd[i] + adj_body_qd[b]
        adj_body_q[b] = wp.transform(wp.vec3(0.0), wp.quat(0.0, 0.0, 0.0, 0.0))
        adj_body_qd[b] = wp.spatial_vector()

    @wp.kernel
    def add_body_force(f_ext: wp.array(dtype=wp.spatial_vector), body_f: wp.array(dtype=wp.spatial_vector)):
        b = wp.tid()
        body_f[b] = body_f[b] + f_ext[b]

    _KERNELS.update(set_kinematic=set_kinematic, set_kinematic_adjoint=set_kinematic_adjoint,
                    add_body_force=add_body_force)


@dataclass(frozen=True)
class ShapeSpec:
    """A collision shape at its body's origin (body frame = shape frame). Sizes in MuJoCo's convention: box
    half-extents (x, y, z); sphere (radius,); cylinder and capsule (radius, half-length along the body z axis)."""

    kind: str
    size: tuple[float, ...]


def unit_inertia(shape: ShapeSpec) -> np.ndarray:
    """[3, 3] inertia [kg m^2] of the solid shape with unit mass about its centre, body axes."""
    s = shape.size
    if shape.kind == "box":
        x, y, z = (2 * s[0]) ** 2, (2 * s[1]) ** 2, (2 * s[2]) ** 2
        return np.diag([y + z, x + z, x + y]) / 12.0
    if shape.kind == "sphere":
        return np.eye(3) * 0.4 * s[0] ** 2
    if shape.kind == "cylinder":
        r, h = s[0], 2 * s[1]
        a = (3 * r * r + h * h) / 12.0
        return np.diag([a, a, 0.5 * r * r])
    if shape.kind == "capsule":
        # cylinder of length 2h plus two hemispheres, masses split by volume
        r, h = s[0], s[1]
        vc, vs = np.pi * r * r * 2 * h, 4.0 / 3.0 * np.pi * r**3
        mc, ms = vc / (vc + vs), vs / (vc + vs)
        izz = mc * 0.5 * r * r + ms * 0.4 * r * r
        ixx = mc * (3 * r * r + 4 * h * h) / 12.0 + ms * (0.4 * r * r + h * h + 0.75 * h * r)
        return np.diag([ixx, ixx, izz])
    raise ValueError(f"unknown shape kind {shape.kind!r}")


class WarpWorld:
    """W copies of one tabletop world in one Newton model: K dynamic bodies, optionally a kinematic pusher (body K
    of each world), and the table as a ground plane shared by all worlds (worlds do not collide with each other).

    Body index of (world w, body k) is ``w * bodies_per_world + k``; shape index of body k's shape in world w is
    ``w * bodies_per_world + k``; the ground plane is the last shape.
    """

    def __init__(
        self,
        shapes: list[ShapeSpec],
        pusher: ShapeSpec | None,
        worlds: int = 1,
        device: str = "cpu",
        contact_gap: float = 0.02,
        angular_damping: float = 0.0,
    ) -> None:
        wp = _warp()
        import newton

        if worlds < 1:
            raise ValueError(f"worlds must be >= 1, got {worlds}")
        self.device = device
        self.worlds = int(worlds)
        self.objects = len(shapes)
        self.has_pusher = pusher is not None
        self.bodies_per_world = self.objects + int(self.has_pusher)
        one = newton.ModelBuilder(up_axis=newton.Axis.Z)
        cfg = newton.ModelBuilder.ShapeConfig(density=1000.0, gap=contact_gap)
        # free bodies without joints: SemiImplicit integrates them all the same, and skips its joint kernel
        for k, s in enumerate(shapes):
            b = one.add_link(label=f"object{k}")
            _add_shape(one, b, s, cfg)
        if pusher is not None:
            b = one.add_link(label="pusher", is_kinematic=True)
            _add_shape(one, b, pusher, cfg)
        top = newton.ModelBuilder(up_axis=newton.Axis.Z)
        top.replicate(one, self.worlds)
        self.ground_shape = top.add_ground_plane(cfg=newton.ModelBuilder.ShapeConfig(gap=contact_gap))
        self.model = top.finalize(device=device, requires_grad=True)
        m = self.model
        if m.body_count != self.worlds * self.bodies_per_world or m.shape_count != m.body_count + 1:
            raise RuntimeError(f"unexpected Newton layout: {m.body_count} bodies, {m.shape_count} shapes")
        self.pipeline = newton.CollisionPipeline(m, requires_grad=False)
        self.solver = newton.solvers.SolverSemiImplicit(m, angular_damping=angular_damping)
        self.control = m.control()  # allocated once: the solver would build one every step for None
        self.unit_inertia = np.stack([unit_inertia(s) for s in shapes]) if shapes else np.zeros((0, 3, 3))
        idx = np.arange(m.body_count).reshape(self.worlds, self.bodies_per_world)
        self.object_bodies = idx[:, : self.objects]  # [W, K]
        self.pusher_bodies = idx[:, self.objects] if self.has_pusher else np.zeros(0, dtype=np.int64)  # [W]
        self._kin_body = wp.array(self.pusher_bodies.astype(np.int32), dtype=wp.int32, device=device)
        self.lock = threading.Lock()  # one simulation at a time per model (its material arrays are shared)

    @property
    def body_count(self) -> int:
        return int(self.model.body_count)

    def state(self):
        """A body-only Newton State (a third of the cost of ``Model.state()``, which also sets up every custom
        attribute); velocities and forces zero, poses uninitialised."""
        import newton

        wp = _warp()
        m = self.model
        s = newton.State()
        s.body_q = wp.empty_like(m.body_q, requires_grad=True)
        s.body_qd = wp.zeros_like(m.body_qd, requires_grad=True)
        s.body_f = wp.zeros_like(m.body_qd, requires_grad=True)
        return s

    @property
    def shape_count(self) -> int:
        return int(self.model.shape_count)


def _add_shape(builder, body: int, s: ShapeSpec, cfg) -> None:
    if s.kind == "box":
        builder.add_shape_box(body, hx=s.size[0], hy=s.size[1], hz=s.size[2], cfg=cfg)
    elif s.kind == "sphere":
        builder.add_shape_sphere(body, radius=s.size[0], cfg=cfg)
    elif s.kind == "cylinder":
        builder.add_shape_cylinder(body, radius=s.size[0], half_height=s.size[1], cfg=cfg)
    elif s.kind == "capsule":
        builder.add_shape_capsule(body, radius=s.size[0], half_height=s.size[1], cfg=cfg)
    else:
        raise ValueError(f"unknown shape kind {s.kind!r}")


# the model arrays the parameters are written to, in the order of the Function's parameter inputs
_BODY_PARAMS = ("body_mass", "body_inv_mass", "body_inertia", "body_inv_inertia")
_SHAPE_PARAMS = ("shape_material_mu", "shape_material_ke", "shape_material_kd", "shape_material_kf")


@dataclass
class Schedule:
    """How a simulation call is cut into steps: ``frames`` outputs, each ``substeps`` steps of ``dt`` seconds,
    contacts re-detected every ``collide_every`` substeps."""

    frames: int
    substeps: int
    dt: float
    collide_every: int


class _Simulate(torch.autograd.Function):
    """torch -> Newton -> torch, with the backward pass on the warp Tape.

    Inputs (torch, float32, on the model's device): body_q0 [Bc, 7], body_qd0 [Bc, 6]; the four body parameter
    arrays [Bc], [Bc], [Bc, 3, 3], [Bc, 3, 3]; the four shape material arrays [Sc]; kinematic pusher transforms and
    velocities for every substep [n, P, 7], [n, P, 6] (P = worlds with a pusher, else 0); external body wrenches
    [n, Bc, 6] (force, torque at the centre of mass, world axes) or an empty tensor.
    Outputs: body_q [F, Bc, 7], body_qd [F, Bc, 6] at the end of every frame.
    """

    @staticmethod
    def forward(ctx, world: WarpWorld, sched: Schedule, body_q0, body_qd0, *rest):  # type: ignore[override]
        wp = _warp()
        params = rest[:8]
        kin_q, kin_qd, ext_f = rest[8], rest[9], rest[10]
        m = world.model
        n = sched.frames * sched.substeps
        with world.lock:
            _assign_params(wp, m, params)
            states = [world.state() for _ in range(n + 1)]
            states[0].body_q.assign(wp.from_torch(body_q0.detach().contiguous(), dtype=wp.transform))
            states[0].body_qd.assign(wp.from_torch(body_qd0.detach().contiguous(), dtype=wp.spatial_vector))
            kq = [_grad_array(wp, kin_q[i], wp.transform, world.device) for i in range(n)] if world.has_pusher else []
            kqd = [_grad_array(wp, kin_qd[i], wp.spatial_vector, world.device) for i in range(n)] \
                if world.has_pusher else []
            fe = [_grad_array(wp, ext_f[i], wp.spatial_vector, world.device) for i in range(n)] if ext_f.numel() else []
            contacts = []
            tape = wp.Tape()
            with tape:
                for i in range(n):
                    _substep(wp, world, sched, tape, states, i, kq, kqd, fe, contacts)
            out_q = torch.stack([wp.to_torch(states[(f + 1) * sched.substeps].body_q).clone()
                                 for f in range(sched.frames)])
            out_qd = torch.stack([wp.to_torch(states[(f + 1) * sched.substeps].body_qd).clone()
                                  for f in range(sched.frames)])
        ctx.world, ctx.sched, ctx.tape, ctx.states = world, sched, tape, states
        ctx.kq, ctx.kqd, ctx.fe, ctx.contacts = kq, kqd, fe, contacts
        ctx.params = [p.detach().clone() for p in params]
        ctx.shapes = (kin_q.shape, kin_qd.shape, ext_f.shape)
        return out_q.view(sched.frames, -1, 7), out_qd.view(sched.frames, -1, 6)

    @staticmethod
    def backward(ctx, grad_q, grad_qd):  # type: ignore[override]
        wp = _warp()
        world, sched, tape, states = ctx.world, ctx.sched, ctx.tape, ctx.states
        m = world.model
        with world.lock:
            _assign_params(wp, m, ctx.params)  # another call may have changed them since our forward
            for name in _BODY_PARAMS + _SHAPE_PARAMS:
                getattr(m, name).grad.zero_()
            grads = {}
            for f in range(sched.frames):
                s = states[(f + 1) * sched.substeps]
                grads[s.body_q] = wp.from_torch(grad_q[f].contiguous().clone(), dtype=wp.transform)
                grads[s.body_qd] = wp.from_torch(grad_qd[f].contiguous().clone(), dtype=wp.spatial_vector)
            tape.backward(grads=grads)
            g_q0 = wp.to_torch(states[0].body_q.grad).clone()
            g_qd0 = wp.to_torch(states[0].body_qd.grad).clone()
            g_params = [wp.to_torch(getattr(m, name).grad).clone().view(p.shape)
                        for name, p in zip(_BODY_PARAMS + _SHAPE_PARAMS, ctx.params, strict=True)]
            kq_shape, kqd_shape, fe_shape = ctx.shapes
            g_kq = torch.stack([wp.to_torch(a.grad).clone() for a in ctx.kq]).view(kq_shape) if ctx.kq else None
            g_kqd = torch.stack([wp.to_torch(a.grad).clone() for a in ctx.kqd]).view(kqd_shape) if ctx.kqd else None
            g_fe = torch.stack([wp.to_torch(a.grad).clone() for a in ctx.fe]).view(fe_shape) if ctx.fe else None
            tape.zero()
        ctx.tape = ctx.states = ctx.kq = ctx.kqd = ctx.fe = ctx.contacts = None  # free the buffers
        return (None, None, g_q0, g_qd0, *g_params, g_kq, g_kqd, g_fe)


def _grad_array(wp, t: torch.Tensor, dtype, device: str):
    """A warp copy of a torch tensor with a gradient buffer."""
    return wp.array(t.detach().to("cpu", torch.float32).contiguous().numpy(), dtype=dtype, device=device,
                    requires_grad=True)


def _assign_params(wp, m, params) -> None:
    f32 = wp.float32
    dtypes = (f32, f32, wp.mat33, wp.mat33, f32, f32, f32, f32)
    for name, p, dt in zip(_BODY_PARAMS + _SHAPE_PARAMS, params, dtypes, strict=True):
        getattr(m, name).assign(wp.from_torch(p.detach().contiguous().clone(), dtype=dt))


def _substep(wp, world: WarpWorld, sched: Schedule, tape, states, i: int, kq, kqd, fe, contacts) -> None:
    s_in, s_out = states[i], states[i + 1]
    if world.has_pusher:
        wp.launch(_KERNELS["set_kinematic"], dim=len(world.pusher_bodies),
                  inputs=[world._kin_body, kq[i], kqd[i]], outputs=[s_in.body_q, s_in.body_qd],
                  device=world.device, record_tape=False)

        def adjoint(i=i, s_in=s_in) -> None:
            wp.launch(_KERNELS["set_kinematic_adjoint"], dim=len(world.pusher_bodies),
                      inputs=[world._kin_body, s_in.body_q.grad, s_in.body_qd.grad, kq[i].grad, kqd[i].grad],
                      device=world.device)

        tape.record_func(adjoint, [s_in.body_q, s_in.body_qd, kq[i], kqd[i]])
    if i % sched.collide_every == 0:
        c = world.pipeline.contacts()
        world.pipeline.collide(s_in, c)
        contacts.append(c)
    if fe:
        wp.launch(_KERNELS["add_body_force"], dim=world.body_count, inputs=[fe[i]], outputs=[s_in.body_f],
                  device=world.device)
    world.solver.step(s_in, s_out, world.control, contacts[-1], sched.dt)


def simulate(world: WarpWorld, sched: Schedule, body_q0: torch.Tensor, body_qd0: torch.Tensor,
             params: list[torch.Tensor], kin_q: torch.Tensor, kin_qd: torch.Tensor,
             ext_f: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable simulation (see :class:`_Simulate` for shapes). Returns body_q [F, Bc, 7], body_qd [F, Bc, 6]."""
    if ext_f is None:
        ext_f = torch.zeros(0, dtype=body_q0.dtype, device=body_q0.device)
    return _Simulate.apply(world, sched, body_q0, body_qd0, *params, kin_q, kin_qd, ext_f)
