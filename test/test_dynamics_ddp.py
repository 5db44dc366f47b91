"""Multi-process training (torchrun + DDP, gloo on CPU) gives the gradients of one process on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vidyn_ros.dynamics.data import make_batch
from vidyn_ros.dynamics.learned import LearnedDynamics, ModelConfig
from vidyn_ros.dynamics.network import NetworkConfig
from vidyn_ros.dynamics.synthetic import synthetic_episode
from vidyn_ros.dynamics.train import LossConfig, RolloutLoss, fit_normalizer

WINDOWS = [2, 4, 5, 7]  # start frames of the fixed batch (2 per rank)


def fixed_problem():
    """The same model (seeded weights, non-zero output layer), episode and loss on every process."""
    torch.manual_seed(0)
    cfg = ModelConfig(network=NetworkConfig(hidden=16, layers=2, weight_dim=4, weight_hidden=8), k=8)
    model = LearnedDynamics(replace(cfg, pose_fit=True))
    with torch.no_grad():
        for p in model.net.decode.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    ep = synthetic_episode(n=120, frames=11, speed=0.6)
    fit_normalizer(model, [ep], frames=10)
    return model, ep, LossConfig(render=3.0, position=1.0)


def test_two_gloo_processes_give_the_single_process_gradient(tmp_path):
    out = tmp_path / "ddp_grads.pt"
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(here / "dynamics_ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ddp = torch.load(out, weights_only=True)

    torch.set_num_threads(1)
    model, ep, loss_cfg = fixed_problem()
    loss, _, _ = RolloutLoss(model, loss_cfg, "torch")(make_batch(ep, np.array(WINDOWS), 3))
    loss.backward()
    single = {k: p.grad for k, p in model.named_parameters()}
    assert set(single) == set(ddp)
    total = sum(float(g.abs().sum()) for g in single.values())
    assert total > 0
    for k, g in single.items():
        torch.testing.assert_close(ddp[k], g, atol=1e-6, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
