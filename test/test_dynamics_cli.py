"""The dynamics commands end to end on a tiny simulated episode: make-dataset -> make-trainset (deployed segmenter +
tracking, no ground truth) -> train (resume, curves) -> eval (vs ground truth); and their one-line errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from vidyn_ros.cli import main

os.environ.setdefault("MUJOCO_GL", "osmesa")


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    d = tmp_path_factory.mktemp("dyn_cli")
    assert main(["make-dataset", "bowling", "--episodes", "1", "--seed", "3", "--frames", "14", "--scale", "0.25",
                 "--out", str(d / "bags")]) == 0
    assert main(["make-trainset", str(d / "bags"), "--out", str(d / "train"), "--budget", "500",
                 "--init-iters", "10"]) == 0
    return d


def test_make_trainset_writes_tracked_episodes_without_ground_truth(trainset, capsys):
    from vidyn_ros.dynamics.data import Episode

    ep_dir = trainset / "train" / "bags_episode_0000"
    ep = Episode.load(ep_dir)
    assert ep.images.shape[:2] == (14, 4) and ep.images.shape[2:] == (120, 160, 3)
    assert ep.positions.shape[0] == 14 and np.isfinite(ep.positions[0]).all(-1).sum() >= 400
    assert ep.scenario == "bowling" and ep.pusher_id is None  # bowling has no pusher
    assert ep.soft_ids is not None and np.allclose(ep.soft_ids.sum(1), 1.0, atol=1e-4)
    src = json.loads((ep_dir / "source.json").read_text())
    assert src["track"]["masks"] == "segmenter"  # the deployed segmenter, not the simulator's masks
    index = yaml.safe_load((trainset / "train" / "trainset.yaml").read_text())
    assert index["episodes"][0]["status"] == "prepared"
    # a second run keeps what is there (resume)
    assert main(["make-trainset", str(trainset / "bags"), "--out", str(trainset / "train")]) == 0
    assert "0 episode(s) prepared, 1 kept" in capsys.readouterr().out


def test_train_resume_and_eval(trainset, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": [str(trainset / "train")], "rollout": 2, "batch": 2, "steps": 3, "checkpoint_every": 2,
        "log_every": 1, "loss": {"render_views": 1},
        "model": {"k": 8, "network": {"hidden": 16, "layers": 2, "weight_dim": 4}},
    }))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    rows = (run / "losses.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 4
    assert (run / "losses.png").stat().st_size > 1000 and (run / "model.pt").is_file()
    # more steps from the last checkpoint: the history continues, nothing is redone
    assert main(["train", str(cfg), "--out", str(run), "--resume", "--set", "steps=5", "--no-progress"]) == 0
    rows = (run / "losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    from vidyn_ros.dynamics import load_checkpoint
    from vidyn_ros.dynamics.checkpoint import read_checkpoint

    model = load_checkpoint(run / "model.pt")
    assert model.cfg.network.hidden == 16
    train = json.loads(read_checkpoint(run / "model.pt")["train"])
    assert train["step"] == 5 and train["config"]["steps"] == 5 and train["scenarios"] == ["bowling"]

    out = tmp_path / "eval"
    assert main(["eval", "--test", str(trainset / "train"), "--row", "static=static",
                 "--row", "constant velocity=constant_velocity", "--row", f"tiny={run}/model.pt",
                 "--horizon", "3", "--stride", "3", "--out", str(out)]) == 0
    doc = json.loads((out / "eval.json").read_text())
    by = {r["name"]: r["metrics"] for r in doc["rows"]}
    assert set(by) == {"static", "constant velocity", "tiny"}
    for m in by.values():
        assert all(0 < v < 0.2 for v in m["cd_m"]) and len(m["cd_m"]) == 3
        assert 0 < m["delta_avg_tabletop"][-1] <= 1 and 10 < m["psnr"]["3"] < 60
    # the ball rolls at ~1 m/s: standing still is wrong by centimetres, constant velocity much less so
    assert by["static"]["cd_moving_m"][-1] > 1.5 * by["constant velocity"]["cd_moving_m"][-1]
    for f in ("eval.md", "cd_vs_horizon.png", "paths.png", "frames.png"):
        assert (out / f).stat().st_size > 200, f


@pytest.mark.parametrize("how", ["nan", "raise", "flies_off"])
def test_a_backend_that_blows_up_is_scored_frozen_and_counted(trainset, how, tmp_path):
    """Physics through a violent contact can turn non-finite: the window is counted as diverged and scored as the
    last finite prediction, instead of the evaluation stopping with 'x must be finite'."""
    from dataclasses import replace

    from vidyn_ros.dynamics.evaluate import aggregate, evaluate_backend, load_eval_set, results_table
    from vidyn_ros.dynamics.state import ConstantVelocity, InvalidStateError

    class BlowsUpAfterTwoSteps(ConstantVelocity):
        def __init__(self) -> None:
            self.calls = 0

        def step(self, state, control, dt):
            self.calls += 1
            nxt = super().step(state, control, dt)
            if self.calls % 3 == 0:  # the third step of every window
                if how == "raise":  # a backend that checks its own output
                    raise InvalidStateError("particle state: 52 non-finite positions entries")
                pos = nxt.positions.clone()
                pos[..., -1, :, :] = float("nan") if how == "nan" else 1e6  # flies_off: finite, but 30 Gm/s
                nxt = replace(nxt, positions=pos)
            return nxt

    episodes = load_eval_set([trainset / "train"])
    bad = evaluate_backend(BlowsUpAfterTwoSteps(), episodes, horizon=4, stride=3, render_h=(4,))
    cv = evaluate_backend(ConstantVelocity(), episodes, horizon=4, stride=3, render_h=(4,))
    assert bad["diverged_windows"] == bad["windows"] >= 2 and cv["diverged_windows"] == 0
    assert np.isfinite(bad["cd_m"]).all() and np.isfinite(bad["psnr"][4])
    assert bad["cd_m"][:2] == pytest.approx(cv["cd_m"][:2])  # identical until it blows up
    # and the figures, which roll the same backends out
    from vidyn_ros.dynamics.evaluate import frames_figure, paths_figure

    model = BlowsUpAfterTwoSteps()
    assert paths_figure([("bad", model)], episodes[0], 2, 4, tmp_path / "paths.png").stat().st_size > 1000
    assert frames_figure(model, episodes[0], 2, [1, 4], tmp_path / "frames.png").stat().st_size > 1000
    row = {"name": "bad", "members": ["x"], "metrics": aggregate([bad])}
    assert f"| {bad['windows']}/{bad['windows']} |" in results_table([row], [1, 4])


@pytest.mark.parametrize("case", ["missing_config", "bad_yaml", "unknown_key", "no_data", "bad_row", "bad_ckpt"])
def test_dynamics_commands_fail_in_one_line(tmp_path, capsys, case):
    cfg = tmp_path / "c.yaml"
    if case == "missing_config":
        argv = ["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]
    elif case == "bad_yaml":
        cfg.write_text("data: [\n")
        argv = ["train", str(cfg), "--out", str(tmp_path / "r")]
    elif case == "unknown_key":
        cfg.write_text("data: [x]\nlearning_rate: 0.1\n")
        argv = ["train", str(cfg), "--out", str(tmp_path / "r")]
    elif case == "no_data":
        cfg.write_text(f"data: [{tmp_path / 'nothing'}]\n")
        argv = ["train", str(cfg), "--out", str(tmp_path / "r")]
    elif case == "bad_row":
        argv = ["eval", "--test", str(tmp_path), "--row", "no-equals-sign", "--out", str(tmp_path / "e")]
    else:
        (tmp_path / "bad.pt").write_bytes(b"nope")
        argv = ["eval", "--test", str(tmp_path), "--row", f"x={tmp_path / 'bad.pt'}", "--out", str(tmp_path / "e")]
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "error" in err[0] and "Traceback" not in err[0], err
