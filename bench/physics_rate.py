"""Speed of the differentiable physics (vidyn_ros.physics): forward and backward time per simulated second for the
shipped scenarios, and how many parallel worlds per second a sampling planner gets.

    python bench/physics_rate.py [--scenarios push cube_stack bowling] [--worlds 1 8 32 128] [--repeats 3]

Bodies come from each scenario's true shapes and initial state (timing only: a model built from the scene has the
same bodies). Forward = ``PhysicsModel.simulate`` of 1 s (30 frames, 40 Newton steps each, contacts every 4 steps);
backward = ``loss.backward()`` through warp's Tape for a loss on every body's final position. Parallel worlds: the
push model replicated W times (Newton worlds), one planning horizon of 15 frames (0.5 s) with random pusher
commands, forward only and forward + backward. MPC: what the planner calls (``dynamics.state.rollout`` of
``PhysicsDynamics``, 24 samples x 8 steps of 0.1 s). Writes bench/results/physics_rate.json. CUDA: warp-lang is not
installed on the GPU machine lent to this project (its wheel exceeds the transfer limit), so GPU figures are not
measured; the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidyn_ros.physics.model import Body, PhysicsModel, PhysicsParams, ShapeSpec
from vidyn_ros.rig.scenario import load_scenario


def scenario_model(name: str) -> tuple[PhysicsModel, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    scn = load_scenario(name)
    bodies = [Body(i + 1, ShapeSpec(o.shape, tuple(o.size)), np.asarray(o.position), np.asarray(o.quat_wxyz))
              for i, o in enumerate(scn.objects)]
    pusher = None
    if scn.pusher is not None:
        p = scn.pusher
        pusher = Body(len(bodies) + 1, ShapeSpec(p.shape, tuple(p.size)), np.asarray(p.position),
                      np.array([1.0, 0, 0, 0]), kinematic=True)
    masses = torch.tensor([o.mass for o in scn.objects], dtype=torch.float32)
    model = PhysicsModel(bodies, pusher, params=PhysicsParams.defaults(masses))
    pos, quat = model.initial_pose()
    lin = torch.tensor(np.array([o.velocity for o in scn.objects]), dtype=torch.float32)
    ang = torch.tensor(np.array([o.angular_velocity for o in scn.objects]), dtype=torch.float32)
    return model, pos, quat, lin, ang


def run(model, pos, quat, lin, ang, frames, worlds=1, backward=False, push=None):
    kw = {}
    if model.pusher is not None:
        kw = dict(pusher_position=torch.tensor(model.pusher.position, dtype=torch.float32),
                  pusher_linear=push if push is not None else torch.tensor([0.1, 0.0, 0.0]).expand(worlds, frames, 3))
    t0 = time.perf_counter()
    traj = model.simulate(pos, quat, lin, ang, frames=frames, frame_dt=1 / 30, worlds=worlds, **kw)
    t1 = time.perf_counter()
    if backward:
        traj.position[:, -1].sum().backward()
    return t1 - t0, time.perf_counter() - t1


def mpc_rollout(repeats: int, samples: int = 24, horizon: int = 8, dt: float = 0.1) -> dict:
    """What the visual MPC's physics backend costs: ``dynamics.state.rollout`` of ``PhysicsDynamics`` built from a
    synthetic push scene (3 objects + pusher, ~600 Gaussians), ``samples`` worlds, ``horizon`` steps of ``dt``."""
    from vidyn_ros.dynamics.state import Control, ParticleState, rollout
    from vidyn_ros.physics import PhysicsDynamics
    from vidyn_ros.physics.synthetic import SyntheticObject, synthetic_scene

    g = synthetic_scene([SyntheticObject(1, ShapeSpec("box", (0.03, 0.03, 0.03)), (0.0, 0.0, 0.03)),
                         SyntheticObject(2, ShapeSpec("box", (0.04, 0.025, 0.025)), (0.12, 0.12, 0.025)),
                         SyntheticObject(3, ShapeSpec("cylinder", (0.03, 0.03)), (0.1, -0.14, 0.03)),
                         SyntheticObject(4, ShapeSpec("cylinder", (0.015, 0.04)), (-0.06, 0.0, 0.042))],
                        per_object=150, table_half=0.0)
    state = ParticleState.at_rest(g, stamp_ns=10**9, dt=1 / 30, pusher_id=4)
    phys = PhysicsDynamics.from_state(state)
    gen = torch.Generator().manual_seed(0)
    u = (torch.rand(samples, horizon, 3, generator=gen) - 0.5) * 0.4
    u[..., 2] = 0
    rollout(phys, state.expand(samples), Control(u[:, :1]), dt)  # build the S-world model
    f_only, fb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            rollout(phys, state.expand(samples), Control(u), dt)
        f_only.append(time.perf_counter() - t0)
        ur = u.clone().requires_grad_(True)
        t0 = time.perf_counter()
        states = rollout(phys, state.expand(samples), Control(ur), dt)
        states[-1].now.sum().backward()
        fb.append(time.perf_counter() - t0)
    out = {"samples": samples, "horizon_steps": horizon, "dt_s": dt, "forward_s": float(np.median(f_only)),
           "forward_backward_s": float(np.median(fb))}
    print(f"MPC rollout ({samples} samples x {horizon} steps of {dt} s, dynamics.state.rollout): "
          f"{out['forward_s']:.2f} s forward, {out['forward_backward_s']:.2f} s with gradients", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="+", default=["push", "cube_stack", "bowling"])
    ap.add_argument("--worlds", nargs="+", type=int, default=[1, 8, 32, 128])
    ap.add_argument("--horizon", type=int, default=15, help="planning horizon [frames] for the parallel worlds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/physics_rate.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    rows = []
    for name in args.scenarios:
        model, pos, quat, lin, ang = scenario_model(name)
        run(model, pos, quat, lin, ang, 2)  # build + load kernels
        fwd, bwd = [], []
        for _ in range(args.repeats):
            p = pos.clone().requires_grad_(True)
            f, b = run(model, p, quat, lin, ang, 30, backward=True)
            fwd.append(f)
            bwd.append(b)
        rows.append({"scenario": name, "bodies": len(model.bodies), "pusher": model.pusher is not None,
                     "steps_per_second": 30 * model.steps_for(1 / 30),
                     "forward_s_per_sim_s": float(np.median(fwd)), "backward_s_per_sim_s": float(np.median(bwd))})
        print(f"{name:10s} {len(model.bodies):2d} bodies  forward {np.median(fwd):.2f} s  backward "
              f"{np.median(bwd):.2f} s  per simulated second", flush=True)
    worlds = []
    model, pos, quat, lin, ang = scenario_model("push")
    g = torch.Generator().manual_seed(0)
    for W in args.worlds:
        push = (torch.rand(W, args.horizon, 3, generator=g) - 0.5) * 0.6
        push[..., 2] = 0
        run(model, pos, quat, lin, ang, 2, worlds=W, push=push[:, :2])  # build the W-world model
        f_only, fb = [], []
        for _ in range(args.repeats):
            f_only.append(run(model, pos, quat, lin, ang, args.horizon, worlds=W, push=push)[0])
            pr = push.clone().requires_grad_(True)
            f, b = run(model, pos, quat, lin, ang, args.horizon, worlds=W, backward=True, push=pr)
            fb.append(f + b)
        worlds.append({"worlds": W, "horizon_frames": args.horizon, "forward_s": float(np.median(f_only)),
                       "forward_backward_s": float(np.median(fb)),
                       "rollouts_per_s_forward": W / float(np.median(f_only)),
                       "rollouts_per_s_forward_backward": W / float(np.median(fb))})
        print(f"push x{W:4d} worlds, {args.horizon}-frame rollouts: {W / np.median(f_only):7.1f}/s forward, "
              f"{W / np.median(fb):7.1f}/s with gradients", flush=True)
    # the planner's call: dynamics.state.rollout of PhysicsDynamics (one Newton call per step) on a scene state
    mpc = mpc_rollout(args.repeats)
    load_after = os.getloadavg()
    doc = {"command": shlex.join(["python", *sys.argv]), "machine": "2 shared CPU cores, torch 1 thread",
           "load_avg_before_after": [round(load[0], 2), round(load_after[0], 2)],
           "versions": {m: __import__(m).__version__ for m in ("warp", "newton", "torch")},
           "cuda": "not measured: warp-lang (149 MB wheel) cannot travel to the GPU machine lent to this project",
           "scenarios": rows, "parallel_worlds": worlds, "mpc_rollout": mpc}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"-> {out} (load average {load[0]:.2f} -> {load_after[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
