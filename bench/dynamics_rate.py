"""Learned-dynamics step time vs number of Gaussians (not a test: prints a table, writes JSON + markdown).

One ``LearnedDynamics.step`` (KNN included) on a synthetic tabletop (half the Gaussians on the table, half on three
cubes, one sliding: vidyn_ros.dynamics.synthetic), forward only (what the node and a sampling planner run) and
forward + backward of the predicted positions (what training and a gradient planner run). The model is the shipped
checkpoint's architecture (models/*.pt; --checkpoint to pick another, or the default ModelConfig without one).
Rows also give the KNN alone and the share of particles the network runs on (the receptive field of the moving
ones: the static table outside it is skipped exactly).

    .venv/bin/python bench/dynamics_rate.py                                 # CPU, 1 thread (the node's default)
    .venv/bin/python bench/dynamics_rate.py --threads 2 --tag cpu2t
    .venv/bin/python bench/dynamics_rate.py --device cuda --gaussians 5000 50000 200000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def _time(fn, repeats: int, device: str) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of ``fn()`` over ``repeats`` runs after one warm-up. On a
    shared machine the CPU time is the load-independent figure (with 1 torch thread it is the wall time of an idle
    core)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def _bench_state(model, state, repeats: int, device: str) -> dict[str, float]:
    """KNN, forward and forward + backward times [ms] of one step from ``state``; share of particles networked."""
    from dataclasses import replace

    from vidyn_ros.dynamics import Control
    from vidyn_ros.dynamics.knn import knn_indices
    from vidyn_ros.dynamics.learned import _receptive_field
    from vidyn_ros.dynamics.synthetic import DT

    ctrl = Control(torch.tensor([0.1, 0.0, 0.0], device=device))

    def fwd() -> None:
        with torch.no_grad():
            model.step(state, ctrl, DT)

    def fwd_bwd() -> None:
        s = replace(state, positions=state.positions.detach().requires_grad_(True))
        model.step(s, ctrl, DT).now.square().sum().backward()

    def knn() -> None:
        knn_indices(state.now, model.cfg.k)

    n = len(state)
    idx, valid = knn_indices(state.now.reshape(-1, n, 3), model.cfg.k)
    sel, _, _ = _receptive_field((state.object_ids != 0) & ~state.kinematic, idx, valid, model.cfg.network.layers)
    row: dict[str, float] = {"network_share": round(len(sel) / n, 3)}
    for name, fn in (("knn", knn), ("forward", fwd), ("forward_backward", fwd_bwd)):
        wall, cpu = _time(fn, repeats, device)
        row[f"{name}_ms"] = 1000 * wall
        row[f"{name}_cpu_ms"] = 1000 * cpu
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--gaussians", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000, 50000])
    p.add_argument("--batch", type=int, default=1, help="batch dimension (a sampling planner's S)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--checkpoint", default="", help="model to time (default: the shipped one, else ModelConfig())")
    p.add_argument("--tag", default="", help="results file suffix (default: device + threads)")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    from vidyn_ros.render import set_cpu_threads

    set_cpu_threads(args.threads)
    from vidyn_ros.dynamics import LearnedDynamics, load_checkpoint
    from vidyn_ros.dynamics.synthetic import tabletop_state
    from vidyn_ros.paths import models_dir
    from vidyn_ros.provenance import software_versions

    ckpt = args.checkpoint or next((str(q) for q in sorted(models_dir().glob("*.pt"))), "")
    model = load_checkpoint(ckpt, args.device) if ckpt else LearnedDynamics().to(args.device).eval()
    with torch.no_grad():  # a trained-looking residual (the zero-initialised last layer would skip nothing real)
        if not ckpt:
            for q in model.net.decode[-1].parameters():
                q.normal_(0, 0.01)
    rows = []
    for n in args.gaussians:
        state = tabletop_state(n, pusher=True).to(args.device)
        if args.batch > 1:
            state = state.expand(args.batch)
        row = {"gaussians": n, "batch": args.batch, **_bench_state(model, state, args.repeats, args.device)}
        rows.append(row)
        print(f"{n:>7} Gaussians x{args.batch}: knn {row['knn_ms']:7.1f} ms  forward {row['forward_ms']:8.1f} ms "
              f"(CPU {row['forward_cpu_ms']:.1f})  forward+backward {row['forward_backward_ms']:8.1f} ms "
              f"(CPU {row['forward_backward_cpu_ms']:.1f})  (network on {100 * row['network_share']:.0f} %)",
              flush=True)
    dev = args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(args.device)
    tag = args.tag or (f"cpu{args.threads}t" if args.device == "cpu" else "cuda")
    header = ("| Gaussians | batch | KNN [ms] (CPU) | step forward [ms] (CPU) | step forward+backward [ms] (CPU) "
              "| network on |\n| --- | --- | --- | --- | --- | --- |\n")
    md = header + "".join(
        f"| {r['gaussians']} | {r['batch']} | {r['knn_ms']:.1f} ({r['knn_cpu_ms']:.1f}) "
        f"| {r['forward_ms']:.1f} ({r['forward_cpu_ms']:.1f}) "
        f"| {r['forward_backward_ms']:.1f} ({r['forward_backward_cpu_ms']:.1f}) "
        f"| {100 * r['network_share']:.0f} % |\n" for r in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), "device": dev,
            "threads": torch.get_num_threads(), "load_avg_1min": round(load, 2), "checkpoint": ckpt or None,
            "model": model.cfg.to_dict(), "versions": software_versions("torch", "scipy"), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"dynamics_rate_{tag}.json").write_text(json.dumps(meta, indent=2))
    (out / f"dynamics_rate_{tag}.md").write_text(
        f"`{meta['command']}` on {dev}, {meta['threads']} thread(s), load {load:.2f}, model "
        f"{Path(ckpt).name if ckpt else 'default ModelConfig'}\n\n" + md)
    print(md, end="")
    print(f"wrote {out}/dynamics_rate_{tag}.json/.md (load average {load:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
