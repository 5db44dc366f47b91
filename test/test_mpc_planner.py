"""The visual MPC library (vidyn_ros.control): goals, cost, planner, command safety. CPU, tiny synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidyn_ros.control.goal import (
    GoalMove,
    LayeredRenderer,
    goal_from_gaussians,
    goal_from_images,
    goal_from_moves,
    load_goal_moves,
    move_objects,
    resolve_moves,
    save_goal_moves,
)
from vidyn_ros.control.planner import Planner, PlannerConfig, clamp_actions
from vidyn_ros.control.safety import CommandFilter, CommandLimits, Watchdog
from vidyn_ros.control.synthetic import PUSHER_ID, synthetic_cameras, synthetic_scene
from vidyn_ros.dynamics.state import ParticleState, Static
from vidyn_ros.errors import ConfigError
from vidyn_ros.types import GaussianSet

PUSHER_XY = (-0.12, 0.0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _setup(cfg: PlannerConfig, goal_pusher_xy=(-0.06, 0.05)):
    g = synthetic_scene(per_object=24, table=100)
    state = ParticleState.at_rest(g, 10**9, 1 / 30, pusher_id=PUSHER_ID)
    planner = Planner(Static(), cfg, background=(0.3, 0.3, 0.3))
    fine, _ = planner.cameras(synthetic_cameras(2, 160, 120))
    renderer = LayeredRenderer(fine, g.subset(g.object_ids == 0), planner.background)
    goal_g = move_objects(g, {PUSHER_ID: GoalMove(PUSHER_XY, goal_pusher_xy)})
    planner.set_goal(goal_from_gaussians(goal_g, renderer, pusher_id=PUSHER_ID, include_pusher=True))
    return planner, state


def test_one_gradient_iteration_lowers_the_cost():
    # Static backend: only the pusher moves, so a goal image that shows the pusher elsewhere makes the cost depend on
    # the actions through move_kinematic and the renderer; one Adam step must lower it.
    cfg = PlannerConfig(horizon=4, method="none", grad_iters=1, lr=0.05, width=40, sample_width=20, views=2,
                        include_pusher=True, weights=PlannerConfig().weights.__class__(reach=0.0, smooth=0.0))
    planner, state = _setup(cfg)
    res = planner.plan(state, [*PUSHER_XY, 0.04])
    grad_costs = [c for stage, c in res.history if stage == "grad"]
    assert len(grad_costs) >= 2
    assert grad_costs[-1] < grad_costs[0] - 1e-4, res.history
    assert res.cost < res.cost_zero
    assert not res.diverged
    assert res.actions.shape == (4, 3) and np.all(res.actions[:, 2] == 0)
    assert res.path.shape == (5, 3)


def test_receding_horizon_moves_the_pusher_towards_the_goal():
    cfg = PlannerConfig(horizon=4, samples=8, sample_iters=1, grad_iters=2, width=40, sample_width=20,
                        include_pusher=True, max_speed=0.2, weights=PlannerConfig().weights.__class__(reach=0.0))
    planner, state = _setup(cfg, goal_pusher_xy=(-0.04, 0.0))
    res = planner.plan(state, [*PUSHER_XY, 0.04])
    # the first planned action heads along +x (towards the goal 8 cm away)
    assert res.actions[0, 0] > 0.02, res.actions
    assert abs(res.actions[0, 1]) < res.actions[0, 0]
    # warm start: the next plan starts from the shifted previous one
    res2 = planner.plan(state, [*PUSHER_XY, 0.04], stamp_s=state.time_s + cfg.dt)
    assert res2.actions[0, 0] > 0.02


def test_reach_term_targets_the_object_farthest_from_its_goal():
    cfg = PlannerConfig(horizon=4, method="none", grad_iters=0, width=40, sample_width=20)
    g = synthetic_scene(per_object=24, table=100)
    state = ParticleState.at_rest(g, 10**9, 1 / 30, pusher_id=PUSHER_ID)
    planner = Planner(Static(), cfg)
    fine, _ = planner.cameras(synthetic_cameras(2, 160, 120))
    renderer = LayeredRenderer(fine, g.subset(g.object_ids == 0))
    goal, _goal_g = goal_from_moves(g, [GoalMove((0.12, 0.12), (0.12, 0.18)), GoalMove((0.0, 0.0), (0.02, 0.0))],
                                   renderer, pusher_id=PUSHER_ID)
    planner.set_goal(goal)
    res = planner.plan(state, [*PUSHER_XY, 0.04])
    assert res.reach_object == 2  # the blue block has 6 cm to go, the red one 2 cm
    torch.testing.assert_close(goal.centroids[2][:2], torch.tensor([0.12, 0.18]), atol=1e-5, rtol=0)
    assert "reach" in res.terms


def test_goal_moves_file_round_trip_and_errors(tmp_path):
    moves = [GoalMove((0.0, 0.0), (0.05, 0.01), 15.0)]
    path = save_goal_moves(moves, tmp_path / "goal.yaml", comment="test")
    assert load_goal_moves(path) == moves
    bad = tmp_path / "bad.yaml"
    bad.write_text("goals: [{from: [0, 0]}]\n")
    with pytest.raises(ConfigError, match=r"goals\[0\]"):
        load_goal_moves(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_goal_moves(tmp_path / "missing.yaml")
    g = synthetic_scene(per_object=16, table=16)
    with pytest.raises(ConfigError, match="no object within"):
        resolve_moves(g, [GoalMove((0.3, 0.3), (0.0, 0.0))], exclude=[PUSHER_ID])
    assert list(resolve_moves(g, [GoalMove((0.11, -0.13), (0.0, -0.2))], exclude=[PUSHER_ID])) == [3]


def test_goal_from_images_resizes_and_takes_masks():
    cams = synthetic_cameras(1, 40, 30)
    img = np.zeros((120, 160, 3), np.uint8)
    img[:, 80:] = 255
    mask = np.zeros((120, 160), np.int32)
    mask[:60] = 1
    mask[60:] = PUSHER_ID
    goal = goal_from_images([img], cams, masks=[mask], exclude_ids=[PUSHER_ID])
    assert goal.rgb.shape == (1, 30, 40, 3) and goal.alpha.shape == (1, 30, 40)
    assert float(goal.rgb[0, :, :18].max()) < 0.05 and float(goal.rgb[0, :, 22:].min()) > 0.95
    assert float(goal.alpha[0, :13].min()) > 0.95 and float(goal.alpha[0, 17:].max()) < 0.05
    with pytest.raises(ConfigError, match="2 images for 1 cameras"):
        goal_from_images([img, img], cams)


def test_clamp_actions_respects_speed_and_acceleration():
    u = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 0.05]]])
    out = clamp_actions(u, max_speed=0.2, max_accel=1.0, dt=0.1, u_prev=torch.zeros(2))
    assert float(out.norm(dim=-1).max()) <= 0.2 + 1e-6
    steps = torch.cat([out[:, :1], out[:, 1:] - out[:, :-1]], dim=1).norm(dim=-1)
    assert float(steps.max()) <= 0.1 + 1e-6


def test_command_filter_clamps_speed_acceleration_and_workspace():
    f = CommandFilter(CommandLimits(max_speed=0.2, max_accel=1.0, workspace=(-0.3, -0.3, 0.3, 0.3), period_s=0.1))
    v = f([1.0, 0.0, 0.5], 0.0, [0.0, 0.0, 0.04])
    np.testing.assert_allclose(v, [0.1, 0.0, 0.0])  # accel: 1 m/s^2 x 0.1 s from rest; z is never commanded
    v = f([1.0, 0.0, 0.0], 0.1, [0.0, 0.0, 0.04])
    np.testing.assert_allclose(v, [0.2, 0.0, 0.0])  # speed limit
    v = f([0.2, 0.0, 0.0], 0.2, [0.3, 0.0, 0.04])
    np.testing.assert_allclose(v, [0.0, 0.0, 0.0], atol=1e-12)  # at the border: no outward motion
    f.reset()
    v = f([0.05, 0.0, 0.0], 0.0, [0.298, 0.0, 0.04])
    np.testing.assert_allclose(v, [0.02, 0.0, 0.0])  # one period may reach the border, not cross it
    v = f([np.nan, 0.0, 0.0], 0.1, [0.0, 0.0, 0.04])
    np.testing.assert_allclose(v, [0.0, 0.0, 0.0])  # NaN wanted velocity -> zero


def test_watchdog_stale_nan_and_divergence():
    w = Watchdog(scene_timeout_s=0.5, pose_timeout_s=0.5, diverge_factor=10.0)
    assert not w.check(0.0).ok
    w.scene(1.0, True)
    w.pose(1.0, True)
    assert w.check(1.2).ok
    st = w.check(1.6)
    assert not st.ok and "stale" in st.reason
    w.scene(1.6, False, "NaN in the scene")
    w.pose(1.6, True)
    assert w.check(1.6).reason == "NaN in the scene"
    w.scene(1.7, True)
    w.pose(1.7, True)
    w.cost(1.0, False)
    assert w.check(1.7).ok
    w.cost(20.0, False)
    assert "grew" in w.check(1.7).reason
    w.cost(float("nan"), False)
    assert "diverged" in w.check(1.7).reason


def test_layered_renderer_batch_equals_one_call_per_candidate():
    """The planner renders all candidates' final states in one call (LayeredRenderer.batch): same images, alpha,
    depth and position gradients as one render per candidate over the static layer."""
    g = synthetic_scene(per_object=24, table=100)
    renderer = LayeredRenderer(synthetic_cameras(2, 48, 36), g.subset(g.object_ids == 0), (0.3, 0.3, 0.3))
    moving = g.subset((g.object_ids > 0) & (g.object_ids != PUSHER_ID))
    shifts = torch.tensor([[0.0, 0.0, 0.0], [0.03, 0.0, 0.0], [0.0, -0.02, 0.0], [0.05, 0.05, 0.0]])
    means = (moving.means + shifts[:, None, :]).requires_grad_(True)
    rgb, alpha, depth = renderer.batch(moving, means)
    assert rgb.shape == (4, 2, 36, 48, 3) and alpha.shape == depth.shape == (4, 2, 36, 48)
    (rgb.square().sum() + depth.sum()).backward()
    means2 = means.detach().clone().requires_grad_(True)
    loss = 0.0
    for s in range(4):
        r, a, d = renderer(GaussianSet(means=means2[s], quats=moving.quats, log_scales=moving.log_scales,
                                       colors=moving.colors, opacity_logits=moving.opacity_logits,
                                       object_ids=moving.object_ids))
        assert (r - rgb[s]).abs().max() < 1e-5 and (a - alpha[s]).abs().max() < 1e-5
        assert (d - depth[s]).abs().max() < 1e-5
        loss = loss + r.square().sum() + d.sum()
    loss.backward()
    assert means.grad.abs().max() > 0
    assert (means.grad - means2.grad).abs().max() <= 1e-4 * means2.grad.abs().max()
    assert (rgb[0] - rgb[3]).abs().max() > 0.1  # the candidates differ


@pytest.mark.parametrize(("p0", "detour"), [((-0.10, 0.0), False), ((0.10, 0.01), True)])
def test_push_proposal_goes_behind_the_object_then_pushes_it_to_the_goal(p0, detour):
    """The straight-push proposal: to the contact point behind the object (around its side when the pusher starts
    in front, never through it), then along the push line at push_speed until the object would be at its goal."""
    from vidyn_ros.control.cost import ReachTarget
    from vidyn_ros.control.planner import push_proposal

    obj = torch.tensor([0.0, 0.0])
    target = ReachTarget(1, torch.arange(4), torch.tensor([0.05, 0.0]), standoff=0.05)
    u = push_proposal(torch.tensor(p0), obj, target, 40, 0.1, 0.2, 0.1, 0.015)
    path = torch.tensor(p0) + torch.cumsum(u * 0.1, 0)
    speed = u.norm(dim=1)
    assert float(speed.max()) <= 0.2 + 1e-6
    pushing = torch.nonzero((u - torch.tensor([0.1, 0.0])).norm(dim=1) < 1e-5).squeeze(1)
    first = int(pushing[0])
    assert len(pushing) >= 3 and torch.equal(pushing, torch.arange(first, first + len(pushing)))
    approach = path[:first]  # positions on the way to (and at most one period into) the push line
    assert float((approach - obj).norm(dim=1).min()) > 0.045 - 1e-6  # never through the object (standoff 5 cm)
    assert (float(approach[:, 1].abs().max()) > 0.05) == detour  # a detour leaves the push line sideways
    assert abs(float(path[first - 1, 1])) < 1e-5 and -0.05 - 1e-5 <= float(path[first - 1, 0]) < -0.035
    # it stops where the object would be at its goal (contact point + 5 cm)
    assert torch.allclose(path[-1], torch.tensor([0.0, 0.0]), atol=1e-4)
    assert float(speed[-1]) == 0.0


def test_push_proposal_approach_goes_round_a_bystander():
    """A bystander on the straight line from the pusher to the contact point: the proposal's approach keeps clear
    of its disc (a straight approach knocked bystanders off their goals in mpc-eval), then pushes as before."""
    from vidyn_ros.control.cost import ReachTarget
    from vidyn_ros.control.planner import push_proposal

    p0 = torch.tensor([-0.20, 0.0])
    obj = torch.tensor([0.0, 0.0])
    target = ReachTarget(1, torch.arange(4), torch.tensor([0.05, 0.0]), standoff=0.04)
    bystander = (torch.tensor([-0.12, 0.003]), 0.045)
    straight = push_proposal(p0, obj, target, 40, 0.1, 0.2, 0.1, 0.015)
    u = push_proposal(p0, obj, target, 40, 0.1, 0.2, 0.1, 0.015, [bystander])

    def dense(v):  # positions every 1/50 of a control period (the path between samples too)
        fine = v.repeat_interleave(50, 0) * (0.1 / 50)
        return p0 + torch.cumsum(fine, 0)

    def clearance(v):
        return float((dense(v) - bystander[0]).norm(dim=1).min())

    assert clearance(straight) < 0.01  # without it the approach runs through the bystander
    assert clearance(u) >= bystander[1] - 1e-4
    assert float(u.norm(dim=1).max()) <= 0.2 + 1e-6
    path = p0 + torch.cumsum(u * 0.1, 0)
    assert torch.allclose(path[-1], torch.tensor([0.01, 0.0]), atol=1e-4)  # contact + 5 cm: object at its goal


def test_reach_target_stays_on_until_below_the_reach_tolerance():
    """The reach target (and so the proposal) exists while the object is farther than reach_tolerance from its goal:
    the default is below the node's 8 mm goal tolerance (a 1 cm cut-off left 8-10 mm with nothing pulling)."""
    from vidyn_ros.control.cost import reach_target
    from vidyn_ros.control.goal import Goal

    pos = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.0, 0.01, 0.0]])
    ids = torch.tensor([1, 1, 1])
    c = pos[:, :2].mean(0)
    for dist, expect in ((0.009, True), (0.004, False)):
        goal = Goal(cameras=[], rgb=torch.zeros(1, 1, 1, 3), centroids={1: torch.tensor([c[0] + dist, c[1], 0.0])})
        t = reach_target(pos, ids, goal, None, 0.015, tolerance=PlannerConfig().reach_tolerance)
        assert (t is not None) == expect
    assert PlannerConfig().reach_tolerance < 0.008


class _CountingStatic(Static):
    """The static backend, counting its steps (a real backend: the planner's calls are what is counted)."""

    def __init__(self) -> None:
        self.steps = 0

    def step(self, state, control, dt):
        self.steps += 1
        return super().step(state, control, dt)


def test_without_adam_steps_one_rollout_per_replan_and_the_same_scores():
    """grad_iters 0: the best sample's rollout is reused for the final evaluation (one dynamics rollout per replan
    instead of three: the physics rollouts dominate a CPU replan); its cost and the cost of doing nothing are what
    a fresh evaluation gives."""
    kw = dict(horizon=3, samples=6, sample_iters=1, width=40, sample_width=20, include_pusher=True,
              weights=PlannerConfig().weights.__class__(reach=0.0))
    planner, state = _setup(PlannerConfig(grad_iters=0, **kw))
    model = _CountingStatic()
    planner.set_model(model)
    res = planner.plan(state, [*PUSHER_XY, 0.04])
    assert model.steps == 2 * 3  # "do nothing" once for the normalisation, then one batched rollout
    model.steps = 0
    res2 = planner.plan(state, [*PUSHER_XY, 0.04], stamp_s=state.time_s + 0.1)
    assert model.steps == 3
    assert not res.diverged and np.isfinite(res.cost) and res.cost <= res.cost_zero + 1e-6
    assert res2.predicted_rgb.shape[0] == 2
    assert res.winner in ("mean", "zero", "sample") and set(res.candidate_costs) == {"mean", "zero"}  # no reach
    # the same goal and state through the full path (Adam stage, fresh rollouts): "do nothing" scores the same
    full, _ = _setup(PlannerConfig(grad_iters=1, **kw))
    ref = full.plan(state, [*PUSHER_XY, 0.04])
    assert abs(ref.cost_zero - res.cost_zero) < 1e-5


def test_push_proposal_does_not_back_off_within_the_slack_and_pushes_extra():
    """A pusher behind the object but closer than the standoff (which overestimates contact) pushes from where it
    is, never backing off; ``extra`` pushes that much past "the object at its goal". Without slack the proposal
    backs off to the standoff first and pushes only the goal distance: it stopped short (stalls in mpc-eval)."""
    from vidyn_ros.control.cost import ReachTarget
    from vidyn_ros.control.planner import push_proposal

    obj = torch.tensor([0.0, 0.0])
    target = ReachTarget(1, torch.arange(4), torch.tensor([0.02, 0.0]), standoff=0.06)
    p0 = torch.tensor([-0.05, 0.0])  # 1 cm closer than the standoff
    old = push_proposal(p0, obj, target, 10, 0.1, 0.2, 0.1, 0.015)
    assert float(old[0, 0]) < 0  # backs off first
    u = push_proposal(p0, obj, target, 10, 0.1, 0.2, 0.1, 0.015, slack=0.015, extra=0.01)
    assert bool((u[:, 0] >= -1e-7).all())  # never backs off
    end = p0 + (u * 0.1).sum(0)
    assert torch.allclose(end, torch.tensor([-0.05 + 0.02 + 0.01, 0.0]), atol=1e-5)
    far = push_proposal(torch.tensor([-0.09, 0.0]), obj, target, 10, 0.1, 0.2, 0.1, 0.015, slack=0.015)
    path = torch.tensor([-0.09, 0.0]) + torch.cumsum(far * 0.1, 0)
    # from farther away than the standoff: the push starts at the standoff (the slack does not shorten it)
    assert float(path[:, 0].max()) == pytest.approx(-0.06 + 0.02, abs=1e-5)


def test_sampling_stage_goal_is_rendered_at_its_width():
    """The sampling stage's goal (sample_width) is a render of the goal's Gaussians at that width, so the goal
    configuration scores 0 there too (the cost-width goal resampled scored 0.78-0.98 of "do nothing" at the goal
    on the push scene: the sampling stage was nearly blind)."""
    from vidyn_ros.control.cost import visual_terms
    from vidyn_ros.control.goal import moving_mask

    cfg = PlannerConfig(horizon=2, samples=3, sample_iters=1, grad_iters=0, width=80, sample_width=40)
    g = synthetic_scene(per_object=24, table=100)
    state = ParticleState.at_rest(g, 10**9, 1 / 30, pusher_id=PUSHER_ID)
    planner = Planner(Static(), cfg, background=(0.3, 0.3, 0.3))
    fine, coarse = planner.cameras(synthetic_cameras(2, 160, 120))
    static = g.subset(g.object_ids == 0)
    goal, goal_g = goal_from_moves(g, [GoalMove((0.0, 0.0), (0.05, 0.0))],
                                   LayeredRenderer(fine, static, planner.background), pusher_id=PUSHER_ID)
    assert goal.moving is not None
    planner.set_goal(goal)
    planner.plan(state, [*PUSHER_XY, 0.04])
    rc = LayeredRenderer(coarse, static, planner.background)
    at = visual_terms(*rc(goal_g.subset(moving_mask(goal_g.object_ids, PUSHER_ID))), planner._goal_coarse, (1, 4, 8))
    now = visual_terms(*rc(g.subset(moving_mask(g.object_ids, PUSHER_ID))), planner._goal_coarse, (1, 4, 8))
    assert planner._goal_coarse.rgb.shape[1:3] == (coarse[0].height, coarse[0].width)
    assert float(at["pixel"]) < 1e-8 and float(at["depth"]) < 1e-6
    assert float(now["pixel"]) > 1e-5 and float(now["depth"]) > 1e-3
