"""`vidyn train CONFIG.yaml --out RUN`: train the learned particle dynamics (seed 001) from prepared episodes."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train the learned particle dynamics on prepared episodes (vidyn make-trainset)"
DESCRIPTION = (
    "Train the object-centric PointConv particle dynamics with K-step rollouts, rendering + position loss and "
    "(optionally) hard example mining, as configured by CONFIG (YAML; keys in docs/dynamics.md, examples in "
    "config/dynamics/). Writes RUN/config.yaml, RUN/losses.csv and RUN/losses.png (loss curves), "
    "RUN/checkpoint_last.pt (with optimiser state; --resume continues from it) and RUN/model.pt (the final model: "
    "config + normalisation + weights, enough to rebuild it). Several processes: "
    "torchrun --nproc_per_node=N -m vidyn_ros.cli train CONFIG --out RUN (gloo on CPU, nccl on CUDA)."
)
ORDER = 43


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run configuration (YAML)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dots for nesting, YAML values), e.g. --set steps=200 "
                        "--set model.pose_fit=false; repeatable")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint_last.pt if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    import torch

    from vidyn_ros.dynamics.train import Trainer, init_distributed, load_train_config
    from vidyn_ros.errors import ConfigError, OutputError
    from vidyn_ros.render import set_cpu_threads

    cfg = load_train_config(args.config, args.set)
    if cfg.threads < 0:
        raise ConfigError(f"{args.config}: threads must be >= 0, got {cfg.threads}")
    set_cpu_threads(cfg.threads)
    out = Path(args.out)
    if (out / "model.pt").exists() and not args.resume:
        raise OutputError(f"{out}: already holds a trained model.pt (use --resume to continue, or another --out)")
    rank, world = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, out, resume=args.resume, progress=not args.no_progress,
                          command=shlex.join(["vidyn", *sys.argv[1:]]))
        final = trainer.run()
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == 0:
        last = trainer.history[-1] if trainer.history else {}
        print(f"vidyn train: {trainer.step} steps in {trainer.wall_s / 60:.1f} min, final loss "
              f"{last.get('loss', float('nan')):.4f} -> {final} (curves: {out / 'losses.png'})")
    return 0
