"""Worker of test_dynamics_ddp.py, started by torchrun: one rank's gradient of the rollout loss under DDP.

Every rank builds the same model and episode, takes its share of the fixed windows (rank r: windows r, r+W, ...),
runs DistributedDataParallel(RolloutLoss) forward + backward; rank 0 saves the averaged gradients to argv[1].
"""

import sys

import numpy as np
import torch

from vidyn_ros.dynamics.train import RolloutLoss, init_distributed


def main() -> None:
    from test_dynamics_ddp import WINDOWS, fixed_problem  # same directory as this script

    torch.set_num_threads(1)
    rank, world = init_distributed("cpu")
    model, ep, loss_cfg = fixed_problem()
    from vidyn_ros.dynamics.data import make_batch

    batch = make_batch(ep, np.array(WINDOWS[rank::world]), 3)
    ddp = torch.nn.parallel.DistributedDataParallel(RolloutLoss(model, loss_cfg, "torch"))
    loss, _, _ = ddp(batch)
    loss.backward()
    if rank == 0:
        torch.save({k: p.grad.clone() for k, p in model.named_parameters()}, sys.argv[1])
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
