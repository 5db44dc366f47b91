"""Scene estimation on the simulated rig (push, 4 cameras at 160x120): initialisation quality, ids, tracking."""

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "osmesa")

from vidyn_ros.metrics import true_object_ids
from vidyn_ros.scene.losses import psnr
from vidyn_ros.scene.metrics import CentroidTracker, IdAssociation, truth_metrics
from vidyn_ros.scene.pipeline import SceneConfig, SceneEstimator

N_FRAMES = 20


@pytest.fixture(scope="module")
def push_run():
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.sim import SimRig

    torch.manual_seed(0)
    frames = []
    with SimRig(load_scenario("push"), seed=0, render_scale=0.25) as rig:
        rig.set_pusher_velocity([0.3, 0.0, 0.0])  # reaches the red block at ~0.12 m within the episode
        for _ in range(N_FRAMES):
            frames.append(rig.step())
        shapes = rig.object_shapes
    est = SceneEstimator(SceneConfig(budget=5000, init_iters=30, seed=0))
    first = est.update(frames[0].frame)
    rgb, _ = est.render(frames[0].frame.cameras)
    init = {
        "gaussians": first.gaussians.clone(),
        "psnr": psnr(torch.from_numpy(rgb).float() / 255,
                     torch.from_numpy(np.stack([v.color for v in frames[0].frame.views])).float() / 255),
        # true masks in, ids scored against the true object each Gaussian lies on
        "ids": truth_metrics(first.gaussians, shapes, frames[0].object_poses, IdAssociation(oracle=True)),
    }
    ct = CentroidTracker(associate=False)
    ct.add(first.objects, frames[0].object_poses)
    updates = [first]
    for rf in frames[1:]:
        up = est.update(rf.frame)
        ct.add(up.objects, rf.object_poses)
        updates.append(up)
    return {"frames": frames, "est": est, "init": init, "centroids": ct, "updates": updates, "shapes": shapes}


def test_initialisation_psnr(push_run):
    # measured 29.7 dB with 5000 Gaussians after 30 iterations
    assert push_run["init"]["psnr"] >= 28.0
    assert 4000 <= len(push_run["init"]["gaussians"]) <= 5000


def test_object_ids_by_vote(push_run):
    acc = push_run["init"]["ids"]
    assert acc["id_accuracy"] >= 0.95, acc
    assert acc["id_accuracy_objects"] >= 0.95, acc
    ids = set(push_run["init"]["gaussians"].object_ids.unique().tolist())
    assert ids == {0, 1, 2, 3, 4}  # background, 3 blocks, the pusher


def test_vote_recovers_scrambled_ids(push_run):
    """Scramble the ids, then vote (views with Γ < 0.2 abstain): voted Gaussians get the id of the true object they
    lie on (simulator truth: the nearest true surface), not merely the vote's own earlier output."""
    from vidyn_ros.render import render
    from vidyn_ros.scene.init import make_targets
    from vidyn_ros.scene.voting import vote_from_contributions

    g = push_run["init"]["gaussians"].clone()
    truth = torch.as_tensor(true_object_ids(g.means.numpy(), push_run["shapes"], push_run["frames"][0].object_poses))
    scrambled = torch.randint(0, 5, truth.shape, generator=torch.Generator().manual_seed(0))
    t = make_targets(push_run["frames"][0].frame)
    with torch.no_grad():
        out = render(g, t.cameras, masks=t.mask + 1, background=push_run["est"].background)
    voted = vote_from_contributions(out.mask_contribution, out.mask_ids - 1, 0.2, fallback=scrambled)
    has_vote = (out.mask_contribution.max(dim=1).values >= 0.2).any(dim=0)
    assert float(has_vote.float().mean()) >= 0.6
    assert float((voted == truth)[has_vote].float().mean()) >= 0.97
    obj = has_vote & (truth > 0)
    assert int(obj.sum()) > 300 and float((voted == truth)[obj].float().mean()) >= 0.95


def test_tracking_push_centroid_error_below_1cm(push_run):
    ct = push_run["centroids"]
    frames = push_run["frames"]
    gt0 = {p.object_id: p.position for p in frames[0].object_poses}
    gt1 = {p.object_id: p.position for p in frames[-1].object_poses}
    moved = {k: float(np.linalg.norm(gt1[k] - gt0[k])) for k in gt0}
    assert moved[4] > 0.15 and moved[1] > 0.03  # the pusher moved and pushed the red block: not a static test
    assert ct.mean() < 0.01, ct.mean_per_object()
    assert ct.max() < 0.01, ct.mean_per_object()
    assert all(u.visible[k] for u in push_run["updates"] for k in (1, 2, 3, 4))


def test_trajectories_follow_objects(push_run):
    tr = push_run["est"].tracker.trajectories()
    n = len(push_run["est"].gaussians)
    assert tr["positions"].shape == (N_FRAMES, n, 3) and tr["quats"].shape == (N_FRAMES, n, 4)
    assert tr["stamps"].shape == (N_FRAMES,) and np.all(np.diff(tr["stamps"]) > 0)
    n0 = len(push_run["init"]["gaussians"])
    assert n > n0  # densification added Gaussians where the pushed block uncovered the table
    assert np.isnan(tr["positions"][0, n0:]).all() and np.isfinite(tr["positions"][-1, n0:]).all()
    # NaN only before a Gaussian existed: from its first sample on, position and rotation stay finite (objects,
    # background and densified Gaussians alike) — the dynamics' pseudo labels must not carry NaNs
    born = np.argmax(np.isfinite(tr["positions"][:, :, 0]), axis=0)
    alive = np.arange(N_FRAMES)[:, None] >= born[None, :]
    assert (born[:n0] == 0).all()
    assert np.isfinite(tr["positions"][alive]).all() and np.isnan(tr["positions"][~alive]).all()
    assert np.isfinite(tr["quats"][alive]).all()
    np.testing.assert_allclose(np.linalg.norm(tr["quats"][alive], axis=-1), 1.0, atol=1e-5)
    bg = (tr["object_ids"] == 0) & np.isfinite(tr["positions"][0, :, 0])
    np.testing.assert_array_equal(tr["positions"][0, bg], tr["positions"][-1, bg])  # background is static
    pusher = tr["object_ids"] == 4
    dx = tr["positions"][-1, pusher, 0] - tr["positions"][0, pusher, 0]
    gt = next(p.position for p in push_run["frames"][-1].object_poses if p.object_id == 4)[0] - \
        next(p.position for p in push_run["frames"][0].object_poses if p.object_id == 4)[0]
    assert abs(float(np.nanmedian(dx)) - gt) < 0.005


def _tracker(push_run, **cfg):
    from vidyn_ros.scene.init import fuse_views
    from vidyn_ros.scene.track import Tracker

    first = push_run["frames"][0].frame
    tr = Tracker(push_run["init"]["gaussians"], dataclasses.replace(push_run["est"].cfg.track, **cfg),
                 cameras=first.cameras, model_cloud=fuse_views(first), stamp_ns=first.stamp_ns)
    tr.background = push_run["est"].background
    tr.record(first.stamp_ns)
    return tr


def _relabelled(frame, old: int, new: int):
    f = copy.deepcopy(frame)
    for v in f.views:
        v.mask = np.where(v.mask == old, new, v.mask)
    return f


def test_a_new_instance_id_for_a_known_object_is_reassociated_not_copied(push_run):
    """The segmenter loses block 3 and calls it 7 from frame 1 on (same colour, same place): the scene keeps one
    block 3 (7 is an alias of it) instead of spawning a second copy; block 3 stays tracked."""
    tracker = _tracker(push_run)
    n0 = len(tracker.gaussians)
    ct = CentroidTracker(associate=False)
    for rf in push_run["frames"][1:5]:
        stats = tracker.step(_relabelled(rf.frame, 3, 7))
        ct.add(tracker.object_poses(), rf.object_poses)
    assert tracker.aliases == {7: 3} and tracker.reassociated == [(7, 3)] and 7 not in tracker.objects
    assert stats["visible_objects"] == 4 and tracker.objects[3].visible and len(tracker.gaussians) == n0
    assert ct.mean_per_object()[3] < 0.002


def test_unmatched_new_id_spawns_and_a_lost_object_is_held_then_removed(push_run):
    """Block 3 vanishes as id 3 and a new id 7 appears that cannot be confirmed as block 3 (re-association off): 7
    spawns new Gaussians; 3 is held (pose frozen, not visible, not extrapolated) and, after remove_after_s, removed
    with its Gaussians; particle ids of the others are unchanged and never reused."""
    frames = push_run["frames"]
    dt = (frames[1].frame.stamp_ns - frames[0].frame.stamp_ns) * 1e-9
    tracker = _tracker(push_run, reassociate_fitness=1.01, remove_after_s=2.5 * dt)
    pids0 = set(tracker.gaussians.particle_ids.tolist())
    ids0 = tracker.gaussians.object_ids.numpy().copy()
    tracker.step(_relabelled(frames[1].frame, 3, 7))
    assert 7 in tracker.objects and tracker.objects[7].visible
    assert not tracker.objects[3].visible and tracker.objects[3].held_frames == 1
    np.testing.assert_allclose(tracker.objects[3].T, np.eye(4))  # held where it was
    new_pids = set(tracker.gaussians.particle_ids[tracker.gaussians.object_ids == 7].tolist())
    assert new_pids and not new_pids & pids0
    for rf in frames[2:5]:
        stats = tracker.step(_relabelled(rf.frame, 3, 7))
    assert 3 not in tracker.objects and tracker.removed == [3] and stats["held_objects"] == 0
    kept = set(tracker.gaussians.particle_ids.tolist())
    pids_of_3 = set(push_run["init"]["gaussians"].particle_ids[torch.as_tensor(ids0 == 3)].tolist())
    assert kept == (pids0 - pids_of_3) | new_pids  # the others keep their ids
    tr = tracker.trajectories()
    gone = tr["object_ids"] == 3
    assert gone.sum() == (ids0 == 3).sum()
    t_removed = int(np.argmax(np.isnan(tr["positions"][:, gone, 0]).all(axis=1)))
    assert t_removed >= 3 and np.isfinite(tr["positions"][:t_removed, gone]).all()  # held until removed
    assert np.isnan(tr["positions"][t_removed:, gone]).all()
    np.testing.assert_array_equal(tr["positions"][t_removed - 1, gone], tr["positions"][0, gone])


def test_a_removed_object_that_returns_gets_its_id_back(push_run):
    """Block 3 is out of sight (masked out) longer than remove_after_s: removed with its Gaussians; it comes back as
    a new instance id 9 at its place: restored as object 3 (the archive), with fresh particle ids, no second copy."""
    frames = push_run["frames"]
    dt = (frames[1].frame.stamp_ns - frames[0].frame.stamp_ns) * 1e-9
    tracker = _tracker(push_run, remove_after_s=2.5 * dt)
    n3 = int((tracker.gaussians.object_ids == 3).sum())
    old_pids = set(tracker.gaussians.particle_ids[tracker.gaussians.object_ids == 3].tolist())
    for rf in frames[1:5]:
        tracker.step(_relabelled(rf.frame, 3, 0))
    assert 3 not in tracker.objects and 3 in tracker.archive and not (tracker.gaussians.object_ids == 3).any()
    ct = CentroidTracker(associate=False)
    for rf in frames[5:8]:
        stats = tracker.step(_relabelled(rf.frame, 3, 9))
        ct.add(tracker.object_poses(), rf.object_poses)
    assert 9 not in tracker.objects and tracker.aliases == {9: 3} and 3 not in tracker.archive
    assert tracker.objects[3].visible and stats["visible_objects"] == 4
    pids = tracker.gaussians.particle_ids[tracker.gaussians.object_ids == 3].tolist()
    assert len(pids) == n3 and not set(pids) & old_pids  # its Gaussians back, under fresh particle ids
    assert ct.mean_per_object()[3] < 0.003


def test_failed_registration_holds_the_pose_and_decays_the_velocity(push_run):
    """With no registration accepted (min_fitness above 1), every object is held: pose frozen (no constant-velocity
    extrapolation), marked not visible, its velocity decayed frame by frame; seen again, it is tracked from there."""
    frames = push_run["frames"]
    tracker = _tracker(push_run)
    for rf in frames[1:4]:
        tracker.step(rf.frame)
    pusher = tracker.objects[4]
    v0 = np.linalg.norm(pusher.velocity)
    assert v0 > 0.005  # 0.3 m/s: 1 cm per frame
    T0 = pusher.T.copy()
    tracker.cfg.min_fitness = 1.01
    tracker.step(frames[4].frame)
    tracker.step(frames[5].frame)
    assert not pusher.visible and pusher.held_frames == 2
    np.testing.assert_array_equal(pusher.T, T0)
    assert np.linalg.norm(pusher.velocity) == pytest.approx(v0 * 0.25)  # velocity_decay 0.5 per held frame
    tracker.cfg.min_fitness = 0.3
    tracker.step(frames[6].frame)
    gt, gt0 = (next(p.position for p in frames[i].object_poses if p.object_id == 4) for i in (6, 0))
    # (a cylinder's turn about its axis is not observable: compare the centroid)
    assert pusher.visible and np.linalg.norm(pusher.position() - (pusher.centroid + gt - gt0)) < 0.005


def test_maintenance_votes_new_gaussians_prunes_to_the_cap_and_extends_the_icp_model(push_run):
    """maintain(): densification fills a surface the scene has not seen and its points join the object's ICP model;
    new Gaussians get their ids by the cross-view vote (wrong pixel labels are corrected to the true object they lie
    on, right ones stay); the count is pruned to max_gaussians; particle ids stay unique, new ones are never old."""
    from vidyn_ros.scene.init import make_targets

    frames, shapes = push_run["frames"], push_run["shapes"]
    tracker = _tracker(push_run)
    for rf in frames[1:11]:
        tracker.step(rf.frame)
    rf = frames[10]
    # make the upper part of block 2 a surface the scene has never seen: no Gaussians there, not in its ICP model
    top = 0.02  # block 2 is 5 cm tall: its upper 3 cm go
    tracker._keep(~((tracker.gaussians.object_ids.numpy() == 2) & (tracker.canonical[:, 2] > top)))
    mp, mn = tracker._model[2]
    tracker._model[2] = (mp[mp[:, 2] <= top], mn[mp[:, 2] <= top])
    model_before = len(tracker._model[2][0])
    stats = tracker.maintain(make_targets(rf.frame), 300)
    assert stats["densified"] > 20 and tracker.pending_vote.sum() == stats["densified"]
    assert len(tracker._model[2][0]) > model_before + 20  # the ICP model follows densification
    # half of the new Gaussians get a wrong label (the far block 3's, as a segmentation error might), then vote
    g = tracker.gaussians
    pend = np.flatnonzero(tracker.pending_vote)
    truth = dict(zip(g.particle_ids[pend].tolist(),
                     true_object_ids(g.means[pend].numpy(), shapes, rf.object_poses).tolist(), strict=True))
    assert np.mean([g.object_ids[i] == truth[int(g.particle_ids[i])] for i in pend]) > 0.95  # pixel labels
    mislabelled = set(g.particle_ids[pend[::2]].tolist())
    for i in pend[::2]:
        tracker._move_to_object(int(i), 3)
    cap = len(g) - 400
    tracker.cfg.max_gaussians = cap
    before = set(g.particle_ids.tolist())
    stats = tracker.maintain(make_targets(rf.frame), 300)
    g = tracker.gaussians
    assert stats["pruned"] >= 400 and len(g) <= cap and stats["densified"] == 0  # at the cap: no room to densify
    ids = dict(zip(g.particle_ids.tolist(), g.object_ids.tolist(), strict=True))
    right = [ids[p] == truth[p] for p in truth if p in ids and p not in mislabelled]
    fixed = [ids[p] == truth[p] for p in mislabelled if p in ids and ids[p] != 3]
    assert len(right) > 20 and np.mean(right) > 0.95  # the vote keeps right labels right
    assert len(fixed) > 0.3 * len(mislabelled) and np.mean(fixed) > 0.8  # and corrects wrong ones it sees clearly
    tracker.cfg.max_gaussians = cap + 300
    tracker.maintain(make_targets(rf.frame), 300)
    pids = tracker.gaussians.particle_ids.numpy()
    assert len(np.unique(pids)) == len(pids)
    new = set(pids.tolist()) - before
    assert new and min(new) > max(before)  # fresh ids, never an earlier (pruned) one


def test_scene_updates_are_snapshots(push_run):
    """SceneUpdate.gaussians is the state after that update and stays so: a consumer keeping the last three
    (the dynamics model) holds three different states."""
    est = SceneEstimator(dataclasses.replace(push_run["est"].cfg, init_iters=2, budget=800))
    ups = [est.update(rf.frame) for rf in push_run["frames"][:4]]
    means = [u.gaussians.means.clone() for u in ups]
    est.update(push_run["frames"][4].frame)
    for u, m in zip(ups, means, strict=True):
        assert torch.equal(u.gaussians.means, m)  # unchanged by later updates
    assert ups[-1].gaussians.means.data_ptr() != est.gaussians.means.data_ptr()
    pusher = ups[-1].gaussians.object_ids == 4
    assert float((ups[-1].gaussians.means[pusher] - ups[1].gaussians.means[pusher]).norm(dim=1).mean()) > 0.01


def test_refinement_keeps_rigid_objects(push_run):
    """A few per-Gaussian refinement steps (rendering + rigidity) leave the centroid error small."""
    from vidyn_ros.scene.init import fuse_views, make_targets
    from vidyn_ros.scene.track import Tracker

    est = push_run["est"]
    cfg = dataclasses.replace(est.cfg.track, refine_iters=2)
    first = push_run["frames"][0].frame
    tracker = Tracker(push_run["init"]["gaussians"], cfg, cameras=first.cameras, model_cloud=fuse_views(first))
    tracker.background = est.background
    ct = CentroidTracker(associate=False)
    ct.add(tracker.object_poses(), push_run["frames"][0].object_poses)
    for rf in push_run["frames"][1:4]:
        stats = tracker.step(rf.frame, make_targets(rf.frame))
        ct.add(tracker.object_poses(), rf.object_poses)
    assert np.isfinite(stats["refine_loss"])
    assert ct.max() < 0.01, ct.mean_per_object()


def test_invalid_depth_counts_as_no_data(push_run):
    """NaN / inf depth (holes from a driver or a library caller) is no data: refinement, densification and the
    rigid step stay finite and on target."""
    est = copy.deepcopy(push_run["est"])
    est.cfg.iters_per_frame = 1
    est.n_updates = est.cfg.densify_every  # this update also densifies (renders, compares, back-projects)
    rf = push_run["frames"][-1]
    f = copy.deepcopy(rf.frame)
    for i, v in enumerate(f.views):
        v.depth[::7, ::5] = np.inf if i % 2 else np.nan  # scattered bad pixels
        v.depth[40:60, 60:90] = np.nan  # and a block
    n_before = len(est.gaussians)
    up = est.update(f)
    assert np.isfinite(up.loss) and torch.isfinite(up.gaussians.means).all()
    assert torch.isfinite(up.gaussians.colors).all() and torch.isfinite(up.gaussians.opacity_logits).all()
    assert len(up.gaussians) >= n_before
    gt = {p.object_id: p.position for p in rf.object_poses}
    prev = {p.object_id: p.position for p in push_run["updates"][-1].objects}
    for p in up.objects:  # the same frame again: every object stays where the clean frame put it
        assert np.linalg.norm(p.position - prev[p.object_id]) < 0.003, p.object_id
        assert p.object_id in gt
