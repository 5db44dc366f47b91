"""The learned particle dynamics (vidyn_ros.dynamics: knn, network, fit, learned, checkpoint, train); CPU, tiny."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from vidyn_ros.dynamics import ConstantVelocity, Control, SubStepped, rollout
from vidyn_ros.dynamics.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vidyn_ros.dynamics.data import FrameSampler, make_batch
from vidyn_ros.dynamics.fit import fit_rigid
from vidyn_ros.dynamics.knn import knn_indices
from vidyn_ros.dynamics.learned import LearnedDynamics, ModelConfig
from vidyn_ros.dynamics.network import NetworkConfig, affinity
from vidyn_ros.dynamics.synthetic import DT, synthetic_episode, tabletop_state
from vidyn_ros.dynamics.train import LossConfig, RolloutLoss, fit_normalizer
from vidyn_ros.geometry_torch import axis_angle_to_quat, quat_to_matrix

SMALL = ModelConfig(network=NetworkConfig(hidden=16, layers=2, weight_dim=4, weight_hidden=8), k=8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomised(model: LearnedDynamics, seed: int = 0, scale: float = 0.3) -> LearnedDynamics:
    """The zero-initialised output layer makes an untrained model exactly constant velocity; tests of the network
    itself need non-zero outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


# ---------------------------------------------------------------------------------------------- knn / affinity
def test_knn_matches_brute_force_and_pads_small_sets():
    p = torch.rand(2, 50, 3, generator=torch.Generator().manual_seed(1))
    idx, valid = knn_indices(p, 6)
    assert idx.shape == (2, 50, 6) and bool(valid.all())
    d = torch.cdist(p, p)
    ref = d.topk(6, largest=False).indices
    assert torch.equal(idx[..., 0], torch.arange(50).expand(2, 50))  # itself first
    assert torch.equal(torch.sort(idx, dim=-1).values, torch.sort(ref, dim=-1).values)
    idx, valid = knn_indices(p[:, :3], 5)  # fewer points than k: padded slots are marked invalid
    assert idx.shape == (2, 3, 5) and valid[..., :3].all() and not valid[..., 3:].any()


def test_affinity_separates_intra_and_inter_object_neighbours():
    state = tabletop_state(120, n_objects=2)
    idx, valid = knn_indices(state.now, 10)
    m = affinity(state.object_ids, None, idx, valid)
    same = state.object_ids[idx] == state.object_ids.view(-1, 1)
    assert bool((m[same] == 1).all()) and bool((m[~same] == 0).all())
    assert 0 < int((~same).sum()) < same.numel()  # both kinds occur (objects stand on the table)
    # soft ids: a one-hot distribution gives the same weights; a 50/50 particle is half-related to both
    n_ids = int(state.object_ids.max()) + 1
    soft = torch.eye(n_ids)[state.object_ids]
    assert torch.equal(affinity(None, soft, idx, valid), m)
    soft[0] = 0.5 * (torch.eye(n_ids)[0] + torch.eye(n_ids)[1])
    ms = affinity(None, soft, idx, valid)
    assert math.isclose(float(ms[0, 0]), 0.5, abs_tol=1e-6)  # itself: 0.25 + 0.25


def test_only_the_relational_conv_carries_information_between_objects():
    """Changing the velocities of object 2 changes object 1's prediction through the relational convolution only:
    with its weights zeroed, object 1 is blind to every other object (the affinity splits the one KNN exactly)."""
    model = _randomised(LearnedDynamics(replace(SMALL, pose_fit=False, static_background=False)), seed=7)
    state = tabletop_state(200, n_objects=2)
    other = state.object_ids == 2
    state = replace(state, positions=state.positions - other.view(-1, 1) * torch.tensor([0.04, 0.0, 0.0]))  # touch
    hist = state.positions.clone()
    hist[:2, other] += torch.tensor([0.01, -0.02, 0.0])  # same positions at t (same neighbours), other velocities
    changed = replace(state, positions=hist)
    obj1 = state.object_ids == 1
    a = model.step(state, None, DT).now[obj1]
    assert float((model.step(changed, None, DT).now[obj1] - a).detach().abs().max()) > 1e-6
    M, H = SMALL.network.weight_dim, SMALL.network.hidden
    with torch.no_grad():
        for block in model.net.blocks:
            block.W.weight[:, M * H :] = 0  # the relational half of W_l [vec_obj; vec_rel]
    a = model.step(state, None, DT).now[obj1]
    torch.testing.assert_close(model.step(changed, None, DT).now[obj1], a, atol=0, rtol=0)
    # normalised weights: each kind's affinities sum to 1 over the neighbourhood (or 0 when there is none)
    idx, valid = knn_indices(state.now.unsqueeze(0), 8)
    w = model.net.conv_weights(affinity(state.object_ids, None, idx, valid), valid).sum(dim=-2)  # [1, N, 2]
    torch.testing.assert_close(w[..., 0], torch.ones_like(w[..., 0]))
    assert bool(((w[..., 1] - 1).abs() < 1e-5).logical_or(w[..., 1] == 0).all())
    plain = LearnedDynamics(replace(SMALL, network=replace(SMALL.network, object_centric=False)))
    assert plain.net.conv_weights(affinity(state.object_ids, None, idx, valid), valid).shape[-1] == 1


# ---------------------------------------------------------------------------------------------- the model
def test_step_shapes_batches_and_rollout():
    model = _randomised(LearnedDynamics(SMALL))
    state = tabletop_state(150, pusher=True)
    out = model.step(state, Control(torch.tensor([0.1, 0.0, 0.0])), DT)
    assert out.positions.shape == state.positions.shape and out.quats.shape == state.quats.shape
    batched = state.expand(4)
    ctrl = Control(torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0)) * 0.1)
    states = rollout(model, batched, ctrl, DT)
    assert len(states) == 5 and states[-1].now.shape == (4, 150, 3)
    assert torch.isfinite(states[-1].positions).all() and torch.isfinite(states[-1].quats).all()
    # per-element controls move each batch element's pusher by its own command
    kin = state.kinematic
    moved = states[0].now[:, kin].mean(1) - state.now[kin].mean(0)
    torch.testing.assert_close(moved, ctrl.linear[:, 0] * DT, atol=1e-6, rtol=0)
    # the background stays where it is
    bg = state.object_ids == 0
    assert torch.equal(states[-1].now[:, bg], state.now[bg].expand(4, -1, -1))


def test_untrained_model_is_constant_velocity():
    state = tabletop_state(150)
    model = LearnedDynamics(replace(SMALL, static_background=False, pose_fit=False))
    ours, cv = model.step(state, None, DT), ConstantVelocity().step(state, None, DT)
    torch.testing.assert_close(ours.now, cv.now)
    torch.testing.assert_close(ours.quats_now, cv.quats_now)
    # P.Fit of a pure translation is the translation itself
    fit = LearnedDynamics(replace(SMALL, static_background=False)).step(state, None, DT)
    torch.testing.assert_close(fit.now, cv.now, atol=1e-6, rtol=0)


def test_invariant_to_translation_along_the_table():
    model = _randomised(LearnedDynamics(SMALL), seed=3)
    state = tabletop_state(160, pusher=True)
    shift = torch.tensor([0.37, -0.21, 0.0])
    moved = replace(state, positions=state.positions + shift)
    ctrl = Control(torch.tensor([0.05, 0.02, 0.0]))
    a, b = model.step(state, ctrl, DT), model.step(moved, ctrl, DT)
    torch.testing.assert_close(b.now - shift, a.now, atol=2e-6, rtol=0)
    torch.testing.assert_close(b.quats_now, a.quats_now, atol=1e-6, rtol=0)
    # ... but not along z (the features carry the height above the table)
    up = replace(state, positions=state.positions + torch.tensor([0.0, 0.0, 0.05]))
    assert float((model.step(up, ctrl, DT).now - 0.05 - a.now)[:, 2].abs().max()) > 1e-5


def test_pose_fit_recovers_rigid_motion_with_finite_gradients():
    g = torch.Generator().manual_seed(0)
    # a cube's corners: a symmetric point set (equal singular values: the SVD backward divides by zero here)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64) * 0.02
    flat = torch.rand(20, 3, generator=g, dtype=torch.float64) * torch.tensor([0.05, 0.05, 0.0], dtype=torch.float64)
    src = torch.cat([corners, flat]).unsqueeze(0)
    groups = torch.cat([torch.zeros(8, dtype=torch.long), torch.ones(20, dtype=torch.long)])
    rotvec = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, -0.25]], dtype=torch.float64, requires_grad=True)
    R_true = quat_to_matrix(axis_angle_to_quat(rotvec))
    t_true = torch.tensor([[0.01, 0.02, -0.01], [0.03, 0.0, 0.0]], dtype=torch.float64)
    dst = (R_true[groups] @ src[0].unsqueeze(-1)).squeeze(-1) + t_true[groups]
    _, R, t = fit_rigid(src, dst.unsqueeze(0), groups, 2)
    torch.testing.assert_close(R[0], R_true, atol=1e-8, rtol=0)
    torch.testing.assert_close(t[0], t_true, atol=1e-8, rtol=0)
    R.sum().backward()
    assert torch.isfinite(rotvec.grad).all() and float(rotvec.grad.abs().sum()) > 0
    # identity motion of a degenerate (single-point) group is the identity, no NaN
    _, R1, _ = fit_rigid(src[:, :1], src[:, :1], torch.zeros(1, dtype=torch.long), 1)
    torch.testing.assert_close(R1[0, 0], torch.eye(3, dtype=torch.float64))


def test_pose_fit_keeps_objects_rigid_over_a_rollout():
    model = _randomised(LearnedDynamics(SMALL), seed=5)
    state = tabletop_state(150)
    states = rollout(model, state, [None] * 4, DT)
    for k in (1, 2, 3):
        obj = state.object_ids == k
        d0 = torch.cdist(state.now[obj], state.now[obj])
        d4 = torch.cdist(states[-1].now[obj], states[-1].now[obj])
        torch.testing.assert_close(d4, d0, atol=1e-5, rtol=0)
    free = _randomised(LearnedDynamics(replace(SMALL, pose_fit=False)), seed=5)
    obj = state.object_ids == 1
    d_free = torch.cdist(rollout(free, state, [None] * 4, DT)[-1].now[obj], state.now[obj] * 0 + state.now[obj])
    assert float((d_free - torch.cdist(state.now[obj], state.now[obj])).abs().max()) > 1e-5


def test_sub_steps_are_residual_updates():
    """n sub-steps of dt/n stay consistent with one step of dt (first-order: the difference shrinks with dt)."""
    model = _randomised(LearnedDynamics(replace(SMALL, pose_fit=False)), seed=2, scale=0.05)
    state = tabletop_state(120)
    one = model.step(state, None, DT).now
    four = SubStepped(model, 4).step(state, None, DT).now
    moved = (one - state.now).norm(dim=-1).max()
    assert float((four - one).norm(dim=-1).max()) < 0.5 * float(moved)
    assert abs(SubStepped(model, 4).step(state, None, DT).stamps_ns[-1] - state.stamps_ns[-1] - DT * 1e9) < 4


def test_soft_ids_used_when_configured():
    state = tabletop_state(120)
    n_ids = int(state.object_ids.max()) + 1
    soft = torch.full((120, n_ids), 1.0 / n_ids)  # uninformative: every pair equally related
    s = replace(state, soft_ids=soft, soft_id_labels=torch.arange(n_ids))
    hard = _randomised(LearnedDynamics(replace(SMALL, pose_fit=False)), seed=1)
    soft_model = LearnedDynamics(replace(SMALL, pose_fit=False, soft_ids=True))
    soft_model.load_state_dict(hard.state_dict())
    assert not torch.allclose(hard.step(s, None, DT).now, soft_model.step(s, None, DT).now)


# ---------------------------------------------------------------------------------------------- training
def test_short_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    ep = synthetic_episode(n=160, frames=12, speed=0.6)
    model = LearnedDynamics(replace(SMALL, pose_fit=True))
    fit_normalizer(model, [ep], frames=20)
    batch = make_batch(ep, np.array([3, 4]), 3)
    loss_fn = RolloutLoss(model, LossConfig(render=3.0, position=1.0), render_backend="torch")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        loss, per_window, parts = loss_fn(batch)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(loss_fn(batch)[0])
    assert per_window.shape == (2,) and parts["render_l1"] > 0 and parts["position_huber"] > 0
    assert last < 0.6 * first, (first, last)


def test_hem_draws_hard_frames_more_often():
    ep = synthetic_episode(n=60, frames=20)
    s = FrameSampler([ep], horizon=3, hem=True, seed=0, uniform_mix=0.2)
    starts = s.starts[0]
    s.update(0, starts, np.where(starts == starts[5], 10.0, 0.1))
    p = s.probabilities(0)
    assert math.isclose(p.sum(), 1.0) and p[5] > 0.5 and p.min() >= 0.2 / len(starts) - 1e-12
    counts = np.bincount(np.concatenate([s.sample(2)[1] for _ in range(200)]), minlength=30)
    assert counts[starts[5]] > 3 * np.median(counts[starts])
    u = FrameSampler([ep], horizon=3, hem=False, seed=0)
    u.update(0, starts, np.where(starts == starts[5], 10.0, 0.1))
    assert np.allclose(u.probabilities(0), 1.0 / len(starts))


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_reload_gives_identical_predictions(tmp_path):
    model = _randomised(LearnedDynamics(replace(SMALL, soft_ids=False)), seed=4)
    model.normalizer.set(torch.rand(13) * 0.1, torch.rand(13) + 0.5, torch.rand(6) + 0.5)
    path = save_checkpoint(tmp_path / "m.pt", model, train={"note": "test"})
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    state = tabletop_state(100, pusher=True)
    ctrl = Control(torch.tensor([0.1, 0.05, 0.0]))
    a = rollout(model.eval(), state, [ctrl] * 3, DT)[-1]
    b = rollout(loaded, state, [ctrl] * 3, DT)[-1]
    assert torch.equal(a.positions, b.positions) and torch.equal(a.quats, b.quats)


@pytest.mark.parametrize("case", ["missing", "directory", "garbage", "truncated", "foreign", "pickled_code",
                                  "incompatible_config", "wrong_shapes", "nan_weights"])
def test_bad_checkpoints_are_one_line_errors(tmp_path, case):
    good = save_checkpoint(tmp_path / "good.pt", LearnedDynamics(SMALL))
    path = tmp_path / "bad.pt"
    if case == "missing":
        path = tmp_path / "nope.pt"
    elif case == "directory":
        path = tmp_path
    elif case == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[:300])
    elif case == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif case == "pickled_code":
        torch.save({"format": "vidyn-particle-dynamics", "version": 1, "x": _Evil()}, path)
    else:
        doc = torch.load(good, weights_only=True)
        if case == "incompatible_config":
            doc["model_config"] = '{"network": {"hidden": 16, "colour": 3}}'
        elif case == "wrong_shapes":
            doc["model_config"] = doc["model_config"].replace('"hidden": 16', '"hidden": 24')
        else:
            k = next(k for k in doc["state_dict"] if k.endswith("weight"))
            doc["state_dict"][k] = torch.full_like(doc["state_dict"][k], float("nan"))
        torch.save(doc, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_receptive_field_pruning_is_exact():
    """Running the network only on the moving particles' receptive field gives the same predictions as on all."""
    model = _randomised(LearnedDynamics(replace(SMALL, pose_fit=False)), seed=9)
    state = tabletop_state(400, pusher=True).expand(2)
    state = replace(state, positions=state.positions + torch.tensor([[[[0.0, 0.0, 0.0]]], [[[0.01, 0.02, 0.0]]]]))
    ctrl = Control(torch.tensor([[0.1, 0.0, 0.0], [0.0, -0.1, 0.0]]))
    pruned = model.step(state, ctrl, DT)
    model.prune = False
    full = model.step(state, ctrl, DT)
    torch.testing.assert_close(pruned.positions, full.positions, atol=1e-6, rtol=0)
    torch.testing.assert_close(pruned.quats, full.quats, atol=1e-6, rtol=0)
    from vidyn_ros.dynamics.learned import _receptive_field

    idx, valid = knn_indices(state.now, SMALL.k)
    sel, _, _ = _receptive_field(state.object_ids != 0, idx, valid, SMALL.network.layers)
    assert 0 < int((state.object_ids[sel] == 0).sum()) < int((state.object_ids == 0).sum())  # some of the table


def test_brute_force_knn_of_the_cuda_path_matches_the_kd_tree(monkeypatch):
    """The CUDA search (chunked cdist + topk) is device-agnostic code: run it on CPU tensors against cKDTree."""
    from vidyn_ros.dynamics import knn as knn_mod

    monkeypatch.setattr(knn_mod, "_CUDA_CHUNK", 7)  # several chunks, a ragged last one
    p = torch.rand(40, 3, generator=torch.Generator().manual_seed(2))
    brute = knn_mod._knn_torch(p, 5)
    tree = torch.from_numpy(knn_mod._knn_kdtree(p.numpy(), 5))
    assert torch.equal(brute[:, 0], torch.arange(40))
    assert torch.equal(torch.sort(brute, 1).values, torch.sort(tree, 1).values)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_step_on_cuda_matches_cpu():
    model = _randomised(LearnedDynamics(SMALL), seed=11)
    state = tabletop_state(300, pusher=True)
    ctrl = Control(torch.tensor([0.1, 0.0, 0.0]))
    cpu = model.step(state, ctrl, DT)
    gpu = model.to("cuda").step(state.to("cuda"), Control(ctrl.linear.cuda()), DT)
    torch.testing.assert_close(gpu.positions.cpu(), cpu.positions, atol=1e-5, rtol=0)


def test_live_predictor_builds_scene_backends_lazily_and_refuses_nan(monkeypatch):
    from vidyn_ros.control import backends
    from vidyn_ros.dynamics.predict import LivePredictor, SceneBuiltBackend
    from vidyn_ros.dynamics.synthetic import tabletop_gaussians

    built = []

    def fake_make_backend(name, state=None, device="cpu", **kw):  # physics itself is not what is tested here
        built.append((name, tuple(state.object_labels())))
        return ConstantVelocity()

    monkeypatch.setattr(backends, "make_backend", fake_make_backend)
    live = LivePredictor(SceneBuiltBackend("physics"), horizon=3)
    g = tabletop_gaussians(90, 2)
    ns = round(DT * 1e9)
    assert "waiting" in live.update(0, g) and "waiting" in live.update(ns, g)
    pred = live.update(2 * ns, g)
    assert pred.horizon == 3 and built == [("physics", (1, 2))] and set(pred.paths) == {1, 2}
    live.update(3 * ns, g)
    assert len(built) == 1  # same objects: not rebuilt
    bad = g.clone()
    bad.means[4, 1] = float("nan")
    assert "non-finite" in live.update(4 * ns, bad) and len(live.history) == 0
