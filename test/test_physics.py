"""Differentiable physics of the scene (vidyn_ros.physics): Newton rigid bodies, gradients vs finite differences,
the Dynamics interface. Tiny scenes; warp kernels compile once per machine (~1-2 min on 2 cores, cached in
~/.cache/warp), after that each test takes a second or two."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidyn_ros.dynamics.state import ConstantVelocity, Control, Dynamics, ParticleState, rollout
from vidyn_ros.physics import PhysicsDynamics, PhysicsModel, PhysicsParams
from vidyn_ros.physics.model import Body, ShapeSpec
from vidyn_ros.physics.shapes import fit_shape, surface_points
from vidyn_ros.physics.synthetic import SyntheticObject, synthetic_scene

DT = 1 / 30
BOX = ShapeSpec("box", (0.03, 0.03, 0.03))
PUSHER = ShapeSpec("cylinder", (0.015, 0.04))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _box_model(pusher: bool = True) -> PhysicsModel:
    box = Body(1, BOX, np.array([0.0, 0.0, 0.03]), np.array([1.0, 0, 0, 0]))
    p = Body(2, PUSHER, np.array([-0.05, 0.0, 0.042]), np.array([1.0, 0, 0, 0]), kinematic=True) if pusher else None
    return PhysicsModel([box], p)


def _simulate(model: PhysicsModel, mass, mu, v0, push, frames: int = 8, ke=2000.0, kd=10.0, kf=10.0,
              pusher_x: float = -0.05, force: float = 0.0):
    """Box x position at each frame end. ``push``: [F, 3] pusher velocities (or None without a pusher)."""
    params = PhysicsParams(mass=mass.reshape(1), mu=mu.reshape(1), ke=torch.tensor([ke]), kd=torch.tensor([kd]),
                           kf=torch.tensor([kf]))
    zero = torch.zeros(1, 3)
    lin = torch.stack([v0, torch.zeros(()), torch.zeros(())]).reshape(1, 3)
    kw = {}
    if model.pusher is not None:
        kw = dict(pusher_position=torch.tensor([pusher_x, 0.0, 0.042]), pusher_linear=push.reshape(1, frames, 3))
    if force:  # along +x on the box's centre during the first half frame (1/60 s)
        f = torch.zeros(1, frames * model.steps_for(DT), 1, 3)
        f[:, : model.steps_for(DT) // 2, 0, 0] = force
        kw["forces"] = f
    traj = model.simulate(torch.tensor([[0.0, 0.0, 0.03]]), torch.tensor([[1.0, 0, 0, 0]]), lin, zero, frames=frames,
                          frame_dt=DT, params=params, **kw)
    return traj.position[0, :, 0, 0]


def _fd(f, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Central finite differences of a scalar function of a tensor, entry by entry."""
    g = torch.zeros_like(x)
    flat = x.detach().reshape(-1)
    for i in range(flat.numel()):
        d = torch.zeros_like(flat)
        d[i] = eps
        g.view(-1)[i] = (f((flat + d).view_as(x)) - f((flat - d).view_as(x))) / (2 * eps)
    return g


def test_gradients_match_finite_differences_mass_friction_velocity():
    """A box gets a known push (a force on its centre for 1/60 s) and slides to rest (the sysid setting): the
    gradients of where it stops w.r.t. mass, μ and its initial velocity."""
    model = _box_model(pusher=False)
    mass, mu, v0 = (torch.tensor(v, requires_grad=True) for v in (0.2, 0.6, 0.1))
    x = _simulate(model, mass, mu, v0, None, force=6.0)
    assert 0.01 < float(x[-1].detach()) < 0.1  # pushed forward
    x[-1].backward()
    with torch.no_grad():
        fd_m = _fd(lambda m: _simulate(model, m, mu, v0, None, force=6.0)[-1], mass.detach(), 1e-3)
        fd_mu = _fd(lambda u: _simulate(model, mass, u, v0, None, force=6.0)[-1], mu.detach(), 1e-3)
        fd_v = _fd(lambda v: _simulate(model, mass, mu, v, None, force=6.0)[-1], v0.detach(), 1e-3)
    for name, g, fd in (("mass", mass.grad, fd_m), ("mu", mu.grad, fd_mu), ("v0", v0.grad, fd_v)):
        assert abs(float(fd)) > 1e-3, name  # each parameter matters here (else the check is empty)
        torch.testing.assert_close(g, fd, rtol=0.05, atol=2e-3, msg=f"{name}: autograd {g} vs fd {fd}")


def test_sliding_box_stops_where_coulomb_says():
    """No pusher: a box launched at v0 slides d = v0^2 / (2 μ g) (the ∇Sim contact model, Newton's integrator)."""
    model = _box_model(pusher=False)
    x = _simulate(model, torch.tensor(0.2), torch.tensor(0.5), torch.tensor(0.5), None, frames=10)
    assert float(x[-1]) == pytest.approx(0.5**2 / (2 * 0.5 * 9.81), rel=0.05)


def test_gradient_of_an_action_sequence_matches_finite_differences():
    """The pusher starts touching the box (when contact starts between two contact detections depends
    discontinuously on the commands: exact local gradients, a jagged loss; see docs/physics.md)."""
    model = _box_model()
    push = torch.tensor([[0.2, 0.0, 0.0], [0.3, 0.05, 0.0], [0.25, -0.05, 0.0], [0.3, 0.0, 0.0]], requires_grad=True)
    args = (torch.tensor(0.2), torch.tensor(0.6), torch.tensor(0.0))
    x = _simulate(model, *args, push, frames=4, pusher_x=-0.0449)
    x[-1].backward()
    # horizontal commands only (the vertical one presses the pusher onto the box's top edge: a tiny, jagged effect)
    with torch.no_grad():
        fd = _fd(lambda p: _simulate(model, *args, torch.cat([p, push[:, 2:].detach()], 1), frames=4,
                                     pusher_x=-0.0449)[-1], push[:, :2].detach(), 3e-3)
    assert float(fd[:, 0].abs().max()) > 0.01
    torch.testing.assert_close(push.grad[:, :2], fd, rtol=0.1, atol=2e-3)


def _scene_state(pusher_x: float = -0.05) -> ParticleState:
    g = synthetic_scene([SyntheticObject(1, BOX, (0.0, 0.0, 0.03)),
                         SyntheticObject(2, PUSHER, (pusher_x, 0.0, 0.042), color=(0.1, 0.1, 0.1))], per_object=120)
    return ParticleState.at_rest(g, stamp_ns=10**9, dt=DT, pusher_id=2)


def test_physics_step_is_a_dynamics_backend_interchangeable_with_others():
    state = _scene_state()
    phys = PhysicsDynamics.from_state(state)
    assert isinstance(phys, Dynamics)
    assert [b.shape.kind for b in phys.model.bodies] == ["box"] and phys.model.pusher is not None
    box = state.object_ids == 1
    push = Control(torch.tensor([0.15, 0.0, 0.0]))
    # a learned model (small, random weights: an untrained one is exactly constant velocity) with the real
    # architecture, its kinematic / background handling and per-object rigid fit
    from vidyn_ros.dynamics.learned import LearnedDynamics, ModelConfig
    from vidyn_ros.dynamics.network import NetworkConfig

    learned = LearnedDynamics(ModelConfig(network=NetworkConfig(hidden=16, layers=2, weight_dim=4, weight_hidden=8),
                                          k=8))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in learned.net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    assert isinstance(learned, Dynamics)
    # alternate physics, the learned model and constant velocity through the shared rollout
    mixed = [phys, learned, phys, phys, ConstantVelocity(), learned, phys, learned]

    class Alternating:
        def __init__(self) -> None:
            self.k = 0

        def step(self, s, c, dt):
            m = mixed[self.k % len(mixed)]
            self.k += 1
            return m.step(s, c, dt)

    with torch.no_grad():
        states = rollout(Alternating(), state, [push] * 12, DT)
        # the learned steps are real predictions (not constant velocity), and physics carries on from them
        lv, cv = learned.step(states[0], push, DT), ConstantVelocity().step(states[0], push, DT)
    assert len(states) == 12
    assert float((lv.now[box] - cv.now[box]).abs().max()) > 1e-6
    for s in states:
        s.validate()
        assert s.positions.shape == state.positions.shape
    x = [float(s.now[box, 0].mean()) for s in states]
    assert x[-1] - x[0] > 0.02  # the pusher reached the box and pushed it along +x
    # the table never moves, the pusher follows its command exactly
    torch.testing.assert_close(states[-1].now[state.object_ids == 0], state.now[state.object_ids == 0])
    pusher = state.object_ids == 2
    shift = states[-1].now[pusher] - state.now[pusher]
    torch.testing.assert_close(shift, torch.tensor([0.15 * 12 * DT, 0.0, 0.0]).expand_as(shift), atol=1e-5, rtol=0)


def test_step_chains_exactly_and_rollout_equals_steps_in_parallel_worlds():
    state = _scene_state()
    phys = PhysicsDynamics.from_state(state)
    box = state.object_ids == 1
    v = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.25, 0.05, 0.0]])  # 3 worlds
    batched = state.expand(3)
    stepped = rollout(phys, batched, [Control(v)] * 6, DT)
    once = phys.rollout(batched, Control(v[:, None, :].expand(3, 6, 3)), DT)
    torch.testing.assert_close(stepped[-1].now, once[-1].now, atol=1e-4, rtol=0)  # float rounding only
    moved = (stepped[-1].now[:, box].mean(1) - state.now[box].mean(0))[:, 0]
    assert float(moved[1]).__abs__() < 1e-4 < float(moved[0]) < float(moved[2]) + 0.02  # world 1 never pushed


def test_gradients_through_the_renderer_match_finite_differences():
    """pixels -> renderer -> Gaussians -> body states -> (pusher commands, mass): a tiny camera above the box."""
    from vidyn_ros.geometry import look_at
    from vidyn_ros.render import render_torch
    from vidyn_ros.types import CameraModel

    state = _scene_state(pusher_x=-0.0445)  # touching the box: no impact inside the horizon (see above)
    phys = PhysicsDynamics.from_state(state)
    K = np.array([[40.0, 0, 20], [0, 40.0, 15], [0, 0, 1]])
    cam = CameraModel("top", 40, 30, K, look_at(np.array([0.05, -0.25, 0.35]), np.array([0.02, 0.0, 0.0])))
    target = render_torch(state.to_gaussians(), [cam]).rgb.detach()

    def loss_actions(v: torch.Tensor) -> torch.Tensor:
        s = phys.rollout(state, Control(v.expand(4, 3)), DT)[-1]
        return ((render_torch(s.to_gaussians(), [cam]).rgb - target) ** 2).mean()

    v = torch.tensor([0.3, 0.02, 0.0], requires_grad=True)
    loss_actions(v).backward()
    with torch.no_grad():
        fd = _fd(loss_actions, v.detach(), 3e-3)
    assert float(fd[0]) > 1e-3  # pushing further moves the box away from where it is in the target
    torch.testing.assert_close(v.grad[:2], fd[:2], rtol=0.1, atol=float(fd.abs().max()) * 0.05)

    model, binding = phys.model, phys.binding
    steps = model.steps_for(DT)
    force = torch.zeros(1, 4 * steps, 1, 3)
    force[:, : steps // 2, 0, 0] = 6.0  # a known push on the box for 1/60 s (no pusher motion)
    pos, quat = model.initial_pose()

    def loss_mass(m: torch.Tensor) -> torch.Tensor:
        params = model.params.replace(mass=m.reshape(1))
        traj = model.simulate(pos, quat, torch.zeros(1, 3), torch.zeros(1, 3), frames=4, frame_dt=DT,
                              pusher_position=binding.pusher_position, forces=force, params=params)
        p, q = binding.pose(traj.position[0, -1], traj.quat[0, -1])
        g = state.to_gaussians()
        g.means, g.quats = p, q
        return ((render_torch(g, [cam]).rgb - target) ** 2).mean()

    m = torch.tensor(0.25, requires_grad=True)
    loss_mass(m).backward()
    with torch.no_grad():
        fd = _fd(loss_mass, m.detach(), 2e-3)
    assert float(fd) < -1e-3  # heavier: moves less, closer to the target
    torch.testing.assert_close(m.grad, fd, rtol=0.1, atol=0.0)


@pytest.mark.parametrize("kind,size,yaw", [("box", (0.04, 0.025, 0.025), 0.5), ("cylinder", (0.03, 0.03), 0.0),
                                           ("sphere", (0.03,), 0.0), ("box", (0.025, 0.025, 0.025), 1.2)])
def test_shape_fit_recovers_primitives_from_visible_surfaces(kind, size, yaw):
    rng = np.random.default_rng(0)
    shape = ShapeSpec(kind, size)
    pts = surface_points(shape, 300, rng)
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    centre = np.array([0.1, -0.05, size[-1] if kind != "box" else size[2]])
    if kind == "sphere":
        centre[2] = size[0]
    fit = fit_shape(pts @ R.T + centre + rng.normal(0, 0.0005, (len(pts), 3)))
    assert fit.shape.kind == kind
    np.testing.assert_allclose(sorted(fit.shape.size), sorted(size), atol=0.003)
    np.testing.assert_allclose(fit.center, centre, atol=0.003)


def _impulse_clip(frames: int = 12, impulse=(0.25, 0.05, 0.0), mass: float = 0.3):
    """The ∇Sim setting in miniature: a box on the table gets a known impulse; the 'video' is our own model rendered
    by our renderer (two 80x60 cameras)."""
    from vidyn_ros.physics import build_from_scene
    from vidyn_ros.physics.sysid import impulse_wrenches, render_observation
    from vidyn_ros.rig.scenario import load_scenario

    g = synthetic_scene([SyntheticObject(1, BOX, (0.0, 0.0, 0.03))], per_object=150, table_half=0.25)
    model, binding = build_from_scene(g)
    cams = [c.scaled(1 / 8) for c in load_scenario("push").cameras[:2]]
    true = PhysicsParams(mass=torch.tensor([mass]), mu=torch.tensor([0.5]), ke=torch.tensor([2000.0]),
                         kd=torch.tensor([10.0]), kf=torch.tensor([10.0]))
    w = impulse_wrenches([(0.1, np.array(impulse), model.bodies[0].position)], duration_s=1 / 120) \
        if any(impulse) else []
    obs = render_observation(g, model, binding, true, cams, frames=frames, fps=30, wrenches=w)
    return g, model, binding, obs, true


def test_sysid_recovers_a_mass_from_a_newton_generated_clip():
    from vidyn_ros.physics.sysid import SysidConfig, identify

    g, model, binding, obs, true = _impulse_clip()
    model.params = true.replace(mass=torch.tensor([0.05]))  # a wrong starting model
    res = identify(g, model, binding, obs, SysidConfig(params=("mass", "ke"), init="track", iterations=10, grid=9,
                                                       polish=0))
    est = res.estimates[1]
    assert abs(est["mass"] - 0.3) / 0.3 < 1e-3, res.history
    assert est["ke"] is None  # a slide has no impact: stiffness is not identifiable, and no number is made up
    reasons = res.identifiability[0].reasons
    assert "no impact" in reasons["ke"]
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_sysid_polish_takes_the_last_digits_without_gradients():
    """The derivative-free last stage alone (after one gradient step from a coarse 3-point grid) on the
    3D-supervised loss (no rendering: cheap): the self-consistent loss is exactly 0 at the truth, and Brent's search
    on loss values gets there to ~1e-6 of the mass from a start ~10 % off."""
    from vidyn_ros.physics.sysid import SysidConfig, identify

    g, model, binding, obs, true = _impulse_clip(frames=8, mass=0.17)
    model.params = true.replace(mass=torch.tensor([0.05]))
    cfg = SysidConfig(params=("mass",), init="track", grid=3, grid_levels=1, iterations=1, polish=20, polish_scan=0)
    res = identify(g, model, binding, obs, cfg, true_paths=obs.tracked)
    stages = [h["stage"] for h in res.history]
    assert stages[0] == "true states" and stages[-1] == "true states, polish", stages
    before = abs(res.history[0]["mass"][0] - 0.17) / 0.17  # where the gradient stage left it
    after = abs(res.estimates[1]["mass"] - 0.17) / 0.17
    assert after < 1e-5 < 1e-2 < before, (before, after)


def test_polish_scan_finds_a_narrow_basin_behind_a_bump():
    """The shape measured on a box's μ (pixel loss, docs/physics.md): the true basin is ±3e-4 wide and a dip 1.1e-3
    away draws Brent's search; the scan around Brent's result finds the basin, Brent again finds its bottom. A pure
    function of the normalised value: no simulation."""
    from vidyn_ros.physics.sysid import SysidConfig, _polish

    truth, dip = 0.5, 0.5 - 1.1e-3

    def loss(u: float) -> float:
        return 1e3 * (u - truth) ** 2 if abs(u - truth) < 3e-4 else 1e-4 + abs(u - dip)

    found = {}
    for scan in (0, 12):
        best = [math.inf, None]

        def evaluate(z, best=best):
            v = loss(float(z["mu"][0]))
            if v < best[0]:
                best[:] = [v, float(z["mu"][0])]
            return torch.tensor(v)

        start = {"mu": torch.tensor([truth + 0.02])}  # where a gradient stage might leave it
        _polish(start, [0], {"mu": torch.tensor([True])}, ["mu"], SysidConfig(polish=40, polish_scan=scan), evaluate)
        found[scan] = best[1]
    assert abs(found[0] - dip) < 1e-5  # Brent alone: the dip
    assert abs(found[12] - truth) < 1e-6, found


def test_sysid_says_clearly_when_nothing_can_be_identified():
    from vidyn_ros.physics.sysid import SysidConfig, SysidError, identify

    g, model, binding, obs, _ = _impulse_clip(frames=6, impulse=(0.0, 0.0, 0.0))
    with pytest.raises(SysidError, match="nothing moves in this recording"):
        identify(g, model, binding, obs, SysidConfig(params=("mass",)))
    # it moves (an impulse) but no known force acts on it: mass is not identifiable from a recording without one
    g, model, binding, obs, _ = _impulse_clip(frames=8)
    obs.wrenches = []
    with pytest.raises(SysidError, match=r"identifies none of mass.*no known force acts on it"):
        identify(g, model, binding, obs, SysidConfig(params=("mass",)))


def test_vidyn_sysid_cli_one_line_errors(tmp_path):
    """Through the real CLI: a bag without calibration, and a recording in which nothing moves (MuJoCo rig, two
    160x120 cameras, 4 frames through the deployed segmenter + scene) end with one line and exit code 2."""
    import os
    import subprocess
    import sys

    from vidyn_ros.bags import BagWriter, write_rig_episode
    from vidyn_ros.rig.scenario import parse_scenario
    from vidyn_ros.rig.sim import SimRig

    def run(*argv: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, MUJOCO_GL="osmesa")
        return subprocess.run([sys.executable, "-m", "vidyn_ros.cli", "sysid", *argv], env=env, capture_output=True,
                              text=True, timeout=600)

    from vidyn_ros import msgs

    with BagWriter(tmp_path / "no_calib") as w:
        w.write("/t", msgs.CLOCK, msgs.clock_msg(10**8), 10**8)
    proc = run(str(tmp_path / "no_calib"), "--out", str(tmp_path / "o1"))
    assert proc.returncode == 2 and "no rig_calibration.yaml" in proc.stderr and "Traceback" not in proc.stderr

    scn = parse_scenario({"duration_s": 1.0, "table": {"friction": 0.2},
                          "objects": [{"name": "block", "shape": "box", "size": [0.03, 0.03, 0.03],
                                       "position": [0.0, 0.0, 0.03], "color": "red"}],
                          "cameras": {"ring": {"count": 2, "radius": 0.45, "height": 0.4}}})
    with SimRig(scn, render_scale=0.25) as rig:
        frames = [rig.observe()] + [rig.step() for _ in range(3)]
    bag = write_rig_episode(tmp_path / "still", frames)
    proc = run(str(bag), "--out", str(tmp_path / "o2"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "%|" not in ln and "Warp" not in ln]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert lines and "nothing moves in this recording" in lines[-1] and "Traceback" not in proc.stderr


def test_tracked_pile_of_light_overlapping_bodies_does_not_blow_up():
    """What made the physics predictor blow up on bowling (docs/physics.md, "Physics as a predictor"): bodies fitted
    to tracked pins are light (a thin 5 g box for a 50 g pin) and overlap each other by millimetres. Semi-implicit
    Euler at 1/1200 s is unstable for the light one, and the overlap's penalty force launches it. Fitted shapes are
    separated before simulating and the step follows the lightest body, so a pile at rest stays (nearly) at rest."""
    thin = ShapeSpec("box", (0.039, 0.007, 0.0036))  # 4.7 g at the default density: the light body of the failure
    pin = ShapeSpec("box", (0.04, 0.012, 0.012))
    g = synthetic_scene([SyntheticObject(1, thin, (0.0, 0.0, 0.0036)),
                         SyntheticObject(2, pin, (0.0, 0.016, 0.012), color=(0.1, 0.1, 0.9)),  # 3 mm into the thin
                         SyntheticObject(3, pin, (0.0, -0.016, 0.0115), color=(0.1, 0.9, 0.1))],  # 3.5, 0.5 mm down
                        per_object=150)
    state = ParticleState.at_rest(g, stamp_ns=10**9, dt=DT)
    phys = PhysicsDynamics.from_state(state)
    assert phys.model.steps_for(DT) > 40  # the thin body needs a shorter step than dt_max
    # nothing overlaps any more, nothing reaches into the table
    from vidyn_ros.physics.shapes import lowest_point, separate

    bodies = phys.model.bodies
    _, deepest, _ = separate([b.shape for b in bodies], np.stack([b.position for b in bodies]),
                             np.stack([b.quat_wxyz for b in bodies]), np.ones(len(bodies), dtype=bool))
    assert deepest < 2e-4
    assert min(lowest_point(b.shape, b.position, b.quat_wxyz) for b in bodies) > -1e-4
    states = phys.rollout(state, [None] * 6, DT)
    moved = (states[-1].now - state.now).norm(dim=-1)
    assert bool(torch.isfinite(moved).all())
    assert float(moved.max()) < 0.01, float(moved.max())  # settles by millimetres; before the fix: metres or NaN


def test_heavy_blocks_keep_the_default_step_and_light_ones_get_a_stable_one():
    """The step from the stability bound only shortens for light bodies: a block above 60 g keeps 1/1200 s
    (the MPC's push scenes keep their speed); a 5 g one gets what k_e dt² + 2 k_d dt <= 4 * 0.3 * m/4 allows."""
    def model(mass: float) -> PhysicsModel:
        return PhysicsModel([Body(1, ShapeSpec("box", (0.02, 0.02, 0.02)), np.zeros(3), np.array([1.0, 0, 0, 0]))],
                            params=PhysicsParams.defaults([mass]))

    assert model(0.065).steps_for(DT) == 40 and model(1.0).steps_for(DT) == 40
    light = model(0.005)
    meff = 0.005 / 4  # a box's contact at its worst lever arm
    dt = light.step_dt
    assert 2000 * dt**2 + 2 * 10 * dt == pytest.approx(4 * 0.3 * meff, rel=1e-6)
    assert light.steps_for(DT) == math.ceil(DT / dt - 1e-9)


def test_shape_fit_of_a_partly_seen_object_stays_above_the_table():
    """The top cap of a partly seen object (a shallow cloud) fits a big sphere centred below the table by plain
    least squares (a 5 cm sphere 3 cm under the table on a bowling pin); the fit keeps every candidate above it."""
    from vidyn_ros.physics.shapes import lowest_point

    rng = np.random.default_rng(1)
    d = rng.normal(size=(400, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    cap = d[d[:, 2] > 0.85] * 0.06 + np.array([0.0, 0.0, -0.035])  # the top 1.5 cm of a sphere centred 3.5 cm down
    cap = cap[cap[:, 2] > 0]
    fit = fit_shape(cap)
    assert lowest_point(fit.shape, fit.center, fit.quat_wxyz) > -0.0151  # at most the floor tolerance


def test_separate_pushes_overlapping_blocks_apart_sideways_not_into_the_table():
    """Two blocks fitted side by side on the table, 13 mm into each other (bowling, episode 1, frame 58): pushing
    along the nearest face of the deepest point pushed one down into the table and the table lifted it back, for ever
    (the overlap stayed 12.9 mm and the pins launched at 5 m/s); the shortest sideways separating axis moves them
    apart (not up: stacking two blocks that lie side by side)."""
    from vidyn_ros.physics.shapes import lowest_point, separate

    shapes = [ShapeSpec("box", (0.0395, 0.0203, 0.0137)), ShapeSpec("box", (0.0394, 0.0300, 0.0120))]
    centres = np.array([[0.2636, 0.0556, 0.0137], [0.3010, 0.0574, 0.0120]])
    quats = np.array([[0.96294, 0.0, 0.0, 0.26973], [0.98602, 0.0, 0.0, 0.16661]])
    out, before, after = separate(shapes, centres, quats, np.ones(2, dtype=bool))
    assert before > 0.01 and after < 2e-4, (before, after)
    np.testing.assert_allclose(out[:, 2], centres[:, 2], atol=1e-6)  # sideways: both still rest on the table
    assert min(lowest_point(s, c, q) for s, c, q in zip(shapes, out, quats, strict=True)) > -1e-6
    # half each of the shortest sideways move (4.0 cm: their long sides overlap; the deepest surface point is only
    # 13 mm in), not across the table
    np.testing.assert_allclose(np.linalg.norm(out - centres, axis=1), 0.020, atol=0.001)
