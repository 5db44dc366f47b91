"""Closed-loop evaluation pieces that run in seconds: reachable goals staged in the simulator, a short episode, and
the mpc-eval command's input errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from vidyn_ros.control.episode import EpisodeConfig, goal_distances, make_policy, run_episode, sample_goal
from vidyn_ros.control.planner import PlannerConfig
from vidyn_ros.rig.sim import SimRig

REPO = Path(__file__).resolve().parent.parent


def test_sample_goal_is_reachable_and_restores_the_rig():
    with SimRig("push", seed=3, render_scale=0.25, masks=False) as rig:
        before = rig.get_state()
        goal = sample_goal(rig, np.random.default_rng(3))
        np.testing.assert_array_equal(rig.get_state(), before)  # staging the push left no trace
        k = goal.object_id
        moved = float(np.linalg.norm(goal.goal[k][:2] - goal.start[k][:2]))
        assert 0.024 <= moved <= 0.085, moved  # 60 %..100 % of the 4-8 cm push actually happened
        assert all(np.array_equal(goal.goal[j], goal.start[j]) for j in goal.goal if j != k)
        d = goal_distances(rig.object_poses(), goal)
        assert d[k] == moved and max(v for j, v in d.items() if j != k) == 0.0
        # the same seed draws the same goal
        again = sample_goal(rig, np.random.default_rng(3))
        np.testing.assert_allclose(again.goal[k], goal.goal[k])


def test_random_policy_episode_is_scored_against_ground_truth():
    ecfg = EpisodeConfig(max_seconds=0.5)
    pcfg = PlannerConfig()
    res = run_episode(make_policy("random", pcfg, 1, ecfg), 1, ecfg, pcfg)
    assert res.steps == 5 and not res.success and res.final_distance > ecfg.tolerance
    assert set(res.distances) == {1, 2, 3} and res.goal.object_id in res.distances
    assert len(res.paths[4]) > 10  # the pusher's path (id 4) was recorded every frame


def test_mpc_eval_rejects_an_unknown_policy_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vidyn_ros.cli", "mpc-eval", "--policies", "random,telepathy",
                           "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown policy 'telepathy'" in proc.stderr and "Traceback" not in proc.stderr
