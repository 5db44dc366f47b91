"""The shipped learned-dynamics model (models/particle_dynamics.pt) and its model card: what the mpc and dynamics
nodes load by default."""

from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

from vidyn_ros.paths import models_dir

MODEL = models_dir() / "particle_dynamics.pt"
CARD = models_dir() / "particle_dynamics.yaml"


def test_card_describes_the_shipped_file():
    card = yaml.safe_load(CARD.read_text())
    assert card["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest(), "the card is for another checkpoint"
    assert card["training"]["command"].startswith("vidyn train") and card["training"]["steps"] > 0
    assert card["data"]["episodes"] > 0 and "not used for training" in card["data"]["source"]
    assert card["metrics"], "the card carries no held-out evaluation"
    for entry in card["metrics"].values():
        assert entry["model"]["cd_cm_h1"] > 0 and entry["constant_velocity"]["cd_cm_h1"] > 0


def test_shipped_model_loads_without_pickle_and_predicts_action_conditioned():
    from vidyn_ros.control.backends import default_checkpoint
    from vidyn_ros.dynamics import Control, load_checkpoint, rollout
    from vidyn_ros.dynamics.synthetic import DT, tabletop_state

    assert default_checkpoint() == str(MODEL)
    model = load_checkpoint(MODEL)  # torch.load(weights_only=True) inside
    state = tabletop_state(600, pusher=True)
    with torch.no_grad():
        pushed = rollout(model, state, [Control(torch.tensor([0.1, 0.0, 0.0]))] * 3, DT)
        held = rollout(model, state, [Control(torch.tensor([0.0, 0.0, 0.0]))] * 3, DT)
    assert all(torch.isfinite(s.now).all() for s in pushed + held)
    pusher = state.kinematic
    assert pusher.any()
    # the kinematic pusher follows the command exactly: 3 steps at 0.1 m/s along +x
    moved = (pushed[-1].now[pusher] - state.now[pusher]).mean(0)
    assert moved[0].item() == pytest.approx(3 * 0.1 * DT, rel=1e-4) and abs(moved[1].item()) < 1e-6
    assert torch.allclose(held[-1].now[pusher], state.now[pusher], atol=1e-6)
    # the static background never moves
    table = state.object_ids == 0
    assert torch.equal(pushed[-1].now[table], state.now[table])
