"""The particle state / step interface every dynamics backend shares (vidyn_ros.dynamics.state)."""

from __future__ import annotations

import math

import pytest
import torch

from vidyn_ros.dynamics import (
    ConstantVelocity,
    Control,
    Dynamics,
    InvalidStateError,
    ParticleState,
    Static,
    SubStepped,
    pusher_object_id,
    rollout,
    stack_positions,
)
from vidyn_ros.geometry_torch import (
    axis_angle_to_quat,
    matrix_to_quat,
    quat_mul,
    quat_to_axis_angle,
    quat_to_matrix,
)
from vidyn_ros.types import GaussianSet

DT = 1 / 30
NS = round(DT * 1e9)


def _gaussians(means: torch.Tensor, object_ids, particle_ids=None) -> GaussianSet:
    n = len(means)
    return GaussianSet(
        means=means.float(), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), log_scales=torch.full((n, 3), -5.0),
        colors=torch.rand(n, 3, generator=torch.Generator().manual_seed(0)), opacity_logits=torch.zeros(n),
        object_ids=torch.as_tensor(object_ids),
        particle_ids=None if particle_ids is None else torch.as_tensor(particle_ids),
    )  # fmt: skip


def _moving_state(v=(0.3, 0.0, 0.0), pusher_id=None) -> ParticleState:
    base = torch.tensor([[0.0, 0, 0.02], [0.01, 0, 0.02], [0.2, 0.1, 0.03]])
    v = torch.tensor(v)
    snaps = [_gaussians(base + v * DT * k, [1, 1, 2]) for k in range(3)]
    return ParticleState.from_snapshots(snaps, [0, NS, 2 * NS], pusher_id=pusher_id)


def test_quaternion_helpers_round_trip():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(50, 3, generator=g)
    q = axis_angle_to_quat(v)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(50))
    R = quat_to_matrix(q)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(50, 3, 3), atol=1e-5, rtol=0)
    q2 = matrix_to_quat(R)
    torch.testing.assert_close(q2 * torch.sign(q2[:, :1] * q[:, :1]), q, atol=1e-5, rtol=0)
    # axis-angle round trip for angles below pi
    small = v / v.norm(dim=-1, keepdim=True) * torch.rand(50, 1, generator=g) * 3.0
    torch.testing.assert_close(quat_to_axis_angle(axis_angle_to_quat(small)), small, atol=1e-4, rtol=0)
    # composition: two quarter turns about z = a half turn
    qz = axis_angle_to_quat(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(quat_to_matrix(quat_mul(qz, qz)), torch.diag(torch.tensor([-1.0, -1.0, 1.0])),
                               atol=1e-6, rtol=0)
    # the gradient at zero rotation is finite (Taylor branch)
    z = torch.zeros(3, requires_grad=True)
    axis_angle_to_quat(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_from_snapshots_aligns_by_particle_id_and_pads_newborns():
    a = _gaussians(torch.tensor([[0.0, 0, 0], [1.0, 0, 0]]), [1, 2], particle_ids=[10, 11])
    # next snapshot: order changed, particle 12 is born
    b = _gaussians(torch.tensor([[1.1, 0, 0], [0.1, 0, 0], [5.0, 0, 0]]), [2, 1, 1], particle_ids=[11, 10, 12])
    c = _gaussians(torch.tensor([[0.2, 0, 0], [5.1, 0, 0], [1.2, 0, 0]]), [1, 1, 2], particle_ids=[10, 12, 11])
    s = ParticleState.from_snapshots([a, b, c], [0, NS, 2 * NS])
    assert s.particle_ids.tolist() == [10, 12, 11]
    torch.testing.assert_close(s.positions[:, 0, 0], torch.tensor([0.0, 0.1, 0.2]))
    torch.testing.assert_close(s.positions[:, 2, 0], torch.tensor([1.0, 1.1, 1.2]))
    torch.testing.assert_close(s.positions[:, 1, 0], torch.tensor([5.0, 5.0, 5.1]))  # padded with its first position
    assert s.valid.tolist() == [True, False, True]
    torch.testing.assert_close(s.velocity(-1)[0], torch.tensor([0.1 / DT, 0, 0]), rtol=1e-4, atol=1e-4)


def test_state_rejects_nan_and_bad_history():
    g = _gaussians(torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]]), [1, 1])
    with pytest.raises(InvalidStateError, match="non-finite positions"):
        ParticleState.from_snapshots([g, g, g], [0, 1, 2])
    ok = _gaussians(torch.zeros(2, 3), [1, 1])
    with pytest.raises(InvalidStateError, match="not increasing"):
        ParticleState.from_snapshots([ok, ok, ok], [0, 5, 5])
    with pytest.raises(InvalidStateError, match="needs 3 snapshots"):
        ParticleState.from_snapshots([ok, ok], [0, 1])


def test_snapshot_is_not_aliased_to_the_scene():
    g = _gaussians(torch.zeros(2, 3), [1, 1])
    s = ParticleState.at_rest(g, 10 * NS, DT)
    g.means += 1.0  # the scene moves on in place
    assert float(s.now.abs().max()) == 0.0


def test_constant_velocity_extrapolates_and_advances_history():
    s = _moving_state()
    out = ConstantVelocity().step(s, None, DT)
    torch.testing.assert_close(out.now, s.now + torch.tensor([0.3 * DT, 0, 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.positions[..., :2, :, :], s.positions[..., 1:, :, :])
    assert out.stamps_ns == (NS, 2 * NS, 3 * NS)
    assert s.stamps_ns == (0, NS, 2 * NS)  # the input is untouched


def test_constant_velocity_keeps_angular_velocity():
    q0 = axis_angle_to_quat(torch.tensor([0.0, 0.0, 0.0]))
    q1 = axis_angle_to_quat(torch.tensor([0.0, 0.0, 0.1]))
    q2 = axis_angle_to_quat(torch.tensor([0.0, 0.0, 0.2]))
    s = _moving_state(v=(0.0, 0.0, 0.0))
    s = ParticleState(**{**s.__dict__, "quats": torch.stack([q0, q1, q2])[:, None, :].expand(3, 3, 4).clone()})
    out = ConstantVelocity().step(s, None, DT)
    torch.testing.assert_close(quat_to_axis_angle(out.quats_now), torch.tensor([0.0, 0, 0.3]).expand(3, 3),
                               atol=1e-5, rtol=0)


def test_pusher_follows_the_control_and_batches_broadcast():
    s = _moving_state(v=(0.0, 0.0, 0.0), pusher_id=2)
    controls = Control(torch.tensor([[0.1, 0.0, 0.0], [0.0, -0.2, 0.0]]))  # two sampled actions: batch [2]
    out = Static().step(s, controls, DT)
    assert out.batch_shape == (2,)
    torch.testing.assert_close(out.now[0, 2], s.now[2] + torch.tensor([0.1 * DT, 0, 0]))
    torch.testing.assert_close(out.now[1, 2], s.now[2] + torch.tensor([0, -0.2 * DT, 0]))
    torch.testing.assert_close(out.now[:, :2], s.now[:2].expand(2, 2, 3))  # objects stay (Static)
    # rotation about the pusher's centroid (a single particle: it turns in place)
    spin = Static().step(s, Control(torch.zeros(3), torch.tensor([0.0, 0.0, math.pi / 2 / DT])), DT)
    torch.testing.assert_close(spin.now[2], s.now[2])
    torch.testing.assert_close(quat_to_axis_angle(spin.quats_now[2]), torch.tensor([0, 0, math.pi / 2]))


def test_control_gradients_flow_through_a_rollout():
    s = _moving_state(v=(0.0, 0.0, 0.0), pusher_id=2)
    u = torch.zeros(2, 5, 3, requires_grad=True)  # [S=2, T=5, 3]
    states = rollout(ConstantVelocity(), s, Control(u), DT)
    assert len(states) == 5
    traj = stack_positions(states)  # [2, 5, N, 3]
    assert traj.shape == (2, 5, 3, 3)
    traj[..., -1, 2, 0].sum().backward()  # final x of the pusher
    # x_T = x_0 + sum_t u_t dt (constant velocity carries a push on: later steps also repeat earlier ones)
    assert float(u.grad[..., 0].min()) > 0
    assert float(u.grad[..., 1:].abs().max()) == 0.0


def test_substepping_matches_for_constant_velocity_and_protocol():
    s = _moving_state()
    one = ConstantVelocity().step(s, None, DT)
    four = SubStepped(ConstantVelocity(), 4).step(s, None, DT)
    torch.testing.assert_close(four.now, one.now, atol=1e-6, rtol=0)
    assert isinstance(ConstantVelocity(), Dynamics) and isinstance(SubStepped(Static(), 2), Dynamics)
    with pytest.raises(ValueError):
        SubStepped(Static(), 0)


def test_subset_and_gaussians_round_trip():
    s = _moving_state()
    sub = s.subset(s.object_ids == 1)
    assert len(sub) == 2 and sub.positions.shape == (3, 2, 3)
    g = sub.to_gaussians()
    assert g.particle_ids.tolist() == s.particle_ids[:2].tolist()
    torch.testing.assert_close(g.means, s.now[:2])


def test_pusher_is_the_object_at_the_robots_end_effector():
    s = _moving_state()
    assert pusher_object_id(s.object_ids, s.now, [0.2, 0.1, 0.04]) == 2
    assert pusher_object_id(s.object_ids, s.now, [0.005, 0.0, 0.02]) == 1
    assert pusher_object_id(s.object_ids, s.now, [0.5, 0.5, 0.0]) is None  # nothing within 3 cm
