"""The learned particle dynamics of seed 001 as a ``Dynamics`` backend: ``step(state, control, dt) -> state``.

Composition (graphcast style; each piece has one job):

    features(state, control)  ->  Normalizer.inputs  ->  ParticleNet  ->  Normalizer.outputs
        ->  residual integration (on top of constant velocity)  ->  per-object pose fit (P.Fit)
        ->  static background, kinematic pusher  ->  state.advance

**Features** per particle (``FEATURES``): the paper's f = [v_{t-1}, v_t, z_{t-1}, z_t] (velocities in m/s, heights
in m above the table) plus what makes the model action-conditioned and tells it which particles cannot move:
the commanded pusher velocity u on the pusher's (kinematic) particles (0 elsewhere), a kinematic flag and a
background flag. Nothing depends on x or y: the model is invariant to translations along the table.

**Outputs** per particle: a linear and an angular term in normalised units. With ``output: acceleration``
(default) they are accelerations [m/s², rad/s²] on top of the last velocities (v_{t+1} = v_t + a·dt,
ω_{t+1} = ω_t + α·dt), so a network that outputs 0 is exactly the constant-velocity baseline, and the last layer
starts at 0. With ``output: velocity`` they are v_{t+1} and ω_{t+1} themselves. Either way the update is a residual
x_{t+1} = x_t + v_{t+1}·dt in per-second units, so ``SubStepped(model, n)`` predicts at n times the trained rate
(SRVP's refinement of Δt, seed 002).

**P.Fit** (``pose_fit``): each object's particles are moved by the least-squares rigid transform of their predicted
motion (``fit.fit_rigid``), which also gives their rotation; without it every particle rotates by its own predicted
ω·dt. **Ids**: one-hot object ids, or the state's ``soft_ids`` (vote fractions) with ``soft_ids: true``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn

from vidyn_ros.geometry_torch import axis_angle_to_quat, quat_mul, quat_normalize, quat_to_axis_angle

from .fit import fit_rigid
from .knn import knn_indices
from .network import NetworkConfig, ParticleNet, affinity, gather_neighbours
from .state import Control, ParticleState, move_kinematic

FEATURES = ("vx_prev", "vy_prev", "vz_prev", "vx", "vy", "vz", "z_prev", "z", "ux", "uy", "uz", "kinematic",
            "background")
OUTPUTS = ("ax", "ay", "az", "wx", "wy", "wz")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a learned dynamics model apart from its weights (saved inside checkpoints)."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    k: int = 16  # neighbours of the one object-agnostic KNN
    length_scale: float = 0.02  # [m] relative positions are divided by this before h
    output: str = "acceleration"  # acceleration (residual on constant velocity) | velocity
    pose_fit: bool = True  # per-object rigid fit of the predicted motion (P.Fit)
    soft_ids: bool = False  # affinities from the state's soft id distributions instead of one-hot ids
    static_background: bool = True  # background particles (object id 0) never move

    def __post_init__(self) -> None:
        if self.output not in ("acceleration", "velocity"):
            raise ValueError(f"model output must be 'acceleration' or 'velocity', got {self.output!r}")
        if self.k < 1:
            raise ValueError(f"model k must be >= 1, got {self.k}")
        if self.length_scale <= 0:
            raise ValueError(f"model length_scale must be > 0, got {self.length_scale}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Strict: unknown keys raise ValueError (a config from a newer version is not silently half-read)."""
        d = dict(d)
        net = d.pop("network", {}) or {}
        _check_keys(NetworkConfig, net, "network")
        _check_keys(cls, d, "model")
        return cls(network=NetworkConfig(**net), **d)


def _check_keys(cls: type, d: dict, where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown} (known: {sorted(known)})")


class Normalizer(nn.Module):
    """Input / output scaling fitted on the training set (buffers: saved and loaded with the weights)."""

    def __init__(self, n_in: int = len(FEATURES), n_out: int = len(OUTPUTS)) -> None:
        super().__init__()
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))
        self.register_buffer("out_std", torch.ones(n_out))

    def set(self, in_mean: torch.Tensor, in_std: torch.Tensor, out_std: torch.Tensor) -> None:
        self.in_mean.copy_(in_mean)
        self.in_std.copy_(in_std.clamp_min(1e-6))
        self.out_std.copy_(out_std.clamp_min(1e-6))

    def inputs(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.in_mean) / self.in_std

    def outputs(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.out_std


def angular_velocity(state: ParticleState) -> torch.Tensor:
    """[B..., N, 3] world-frame angular velocity [rad/s] of each particle over the last history interval."""
    q_prev, q_now = state.quats[..., -2, :, :], state.quats_now
    q_inv = q_prev * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q_prev.dtype, device=q_prev.device)
    return quat_to_axis_angle(quat_mul(q_now, q_inv)) / state.step_seconds(-1)


def particle_features(state: ParticleState, control: Control | None) -> torch.Tensor:
    """[B..., N, len(FEATURES)] raw (unnormalised) features; see the module docstring."""
    v_prev, v_now = state.velocity(-2), state.velocity(-1)
    z_prev = state.positions[..., -2, :, 2:3]
    z_now = state.positions[..., -1, :, 2:3]
    batch = v_now.shape[:-2]
    n = len(state)
    kin = state.kinematic.to(v_now.dtype).view(n, 1).expand(*batch, n, 1)
    bg = (state.object_ids == 0).to(v_now.dtype).view(n, 1).expand(*batch, n, 1)
    if control is None:
        u = torch.zeros_like(v_now)
    else:
        u = control.linear.to(v_now.dtype).expand(*batch, 3).unsqueeze(-2) * kin
    return torch.cat([v_prev, v_now, z_prev, z_now, u, kin, bg], dim=-1)


def _receptive_field(out: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, layers: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The particles whose features can reach the outputs of ``out`` ([N] bool) through ``layers`` convolutions
    (its ``layers``-hop neighbourhood over the batch's KNN graphs), and the KNN re-indexed into that subset.

    Exact for the outputs of ``out``: a particle j hops away needs only its state after ``layers - j`` convolutions,
    whose inputs lie within j + 1 <= layers hops; neighbours outside the subset (of particles exactly ``layers``
    hops away, whose deeper states nobody reads) are masked. With a static background this skips most of the
    table. Returns (sel [M] indices, idx [B, M, k], valid [B, M, k]).
    """
    B, N, k = idx.shape
    reach = out.view(1, N).expand(B, N).clone()
    for _ in range(layers):  # scatter_add: duplicate neighbour indices count, never overwrite
        hits = (valid & reach.unsqueeze(-1)).reshape(B, N * k).to(torch.int32)
        reach = reach | (torch.zeros(B, N, dtype=torch.int32, device=idx.device)
                         .scatter_add_(1, idx.reshape(B, N * k), hits) > 0)
    sel = torch.nonzero(reach.any(dim=0)).squeeze(1)
    remap = torch.full((N,), -1, dtype=torch.long, device=idx.device)
    remap[sel] = torch.arange(len(sel), device=idx.device)
    sub = remap[idx[:, sel]]
    inside = sub >= 0
    own = torch.arange(len(sel), device=idx.device).view(1, -1, 1).expand_as(sub)
    return sel, torch.where(inside, sub, own), valid[:, sel] & inside


class LearnedDynamics(nn.Module):
    """Object-centric PointConv particle dynamics (seed 001); implements ``Dynamics.step``."""

    prune = True  # run the network only on the receptive field of the particles that can move (exact; see below)

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        if self.cfg.network.in_features != len(FEATURES) or self.cfg.network.out_features != len(OUTPUTS):
            raise ValueError(f"network must map {len(FEATURES)} features to {len(OUTPUTS)} outputs")
        self.net = ParticleNet(self.cfg.network)
        self.normalizer = Normalizer()

    # ------------------------------------------------------------------ one step
    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        p, q = self.predict(state, control, dt)
        return state.advance(p, q, dt)

    def predict(self, state: ParticleState, control: Control | None, dt: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions [B..., N, 3] and rotations [B..., N, 4] at t + dt (what ``step`` advances the state by)."""
        cfg = self.cfg
        batch = state.batch_shape
        n = len(state)
        dtype = state.positions.dtype
        x_now = state.now.expand(*batch, n, 3).reshape(-1, n, 3)
        q_now = state.quats_now.expand(*batch, n, 4).reshape(-1, n, 4)
        B = x_now.shape[0]
        feats = particle_features(state, control).reshape(B, n, len(FEATURES))
        idx, valid = knn_indices(x_now, cfg.k)
        ids, soft = state.object_ids, (state.soft_ids if cfg.soft_ids else None)
        sel = None
        if self.prune and cfg.static_background:
            sel, idx, valid = _receptive_field((ids != 0) & ~state.kinematic, idx, valid, cfg.network.layers)
            x_sub, feats = x_now[:, sel], feats[:, sel]
            ids, soft = ids[sel], (soft[sel] if soft is not None else None)
        else:
            x_sub = x_now
        rel = (gather_neighbours(x_sub, idx) - x_sub.unsqueeze(-2)) / cfg.length_scale
        m_obj = affinity(None if soft is not None else ids, soft, idx, valid).to(dtype)
        out = self.normalizer.outputs(self.net(self.normalizer.inputs(feats).to(dtype), idx, rel, m_obj, valid))
        if sel is not None:  # particles outside the receptive field of the moving ones: no output needed
            out = out.new_zeros(B, n, out.shape[-1]).index_copy(1, sel, out)
        lin, ang = out[..., :3], out[..., 3:]
        if cfg.output == "acceleration":
            v_next = state.velocity(-1).reshape(B, n, 3) + lin * dt
            w_next = angular_velocity(state).reshape(B, n, 3) + ang * dt
        else:
            v_next, w_next = lin, ang
        x_next = x_now + v_next * dt
        q_next = quat_normalize(quat_mul(axis_angle_to_quat(w_next * dt), q_now))
        if cfg.pose_fit:
            x_next, q_next = self._pose_fit(state, x_now, q_now, x_next, q_next)
        if cfg.static_background:
            still = (state.object_ids == 0).view(1, n, 1)
            x_next = torch.where(still, x_now, x_next)
            q_next = torch.where(still, q_now, q_next)
        x_next = x_next.reshape(*batch, n, 3)
        q_next = q_next.reshape(*batch, n, 4)
        return move_kinematic(state, control, dt, x_next, q_next)

    def _pose_fit(self, state: ParticleState, x_now: torch.Tensor, q_now: torch.Tensor, x_next: torch.Tensor,
                  q_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace each object's predicted motion by its least-squares rigid transform (background excluded)."""
        labels, groups = torch.unique(state.object_ids, return_inverse=True)
        obj = labels[groups] != 0
        if not bool(obj.any()):
            return x_next, q_next
        qk, R, t = fit_rigid(x_now, x_next, groups, len(labels))
        R_i, t_i, q_i = R[:, groups], t[:, groups], qk[:, groups]  # [B, N, ...] per particle
        x_fit = (R_i @ x_now.unsqueeze(-1)).squeeze(-1) + t_i
        q_fit = quat_normalize(quat_mul(q_i, q_now))
        sel = obj.view(1, -1, 1)
        return torch.where(sel, x_fit, x_next), torch.where(sel, q_fit, q_next)

    # ------------------------------------------------------------------ helpers
    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def with_config(self, **changes) -> LearnedDynamics:
        """A fresh (untrained) model with some config fields changed (ablations)."""
        return LearnedDynamics(replace(self.cfg, **changes))
