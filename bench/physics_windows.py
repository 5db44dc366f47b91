"""Why the physics predictor blew up on tracked scenes: the evaluation windows of ``vidyn eval``, physics only.

    python bench/physics_windows.py out/dyn/data/test/bowling [--windows 1,2,12] [--verbose]

For every window (the same windows as ``vidyn eval --horizon 10 --stride 8``): bodies fitted to the tracked scene at
the window's start, how deep the fitted shapes reach into each other and into the table (before the separation
``build_from_scene`` now does), physics steps per frame, and the rollout with the recorded commands under four
variants — the default, without the stability bound on the step (``stability`` = inf: 1/1200 s), without the
separation, without both — counting windows that diverged (``evaluate.step_or_hold``: non-finite or a particle
faster than 50 m/s) and the fastest body. Prints a markdown table (docs/physics.md, "Physics as a predictor").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vidyn_ros.dynamics.data import make_batch
from vidyn_ros.dynamics.evaluate import load_eval_set, step_or_hold
from vidyn_ros.dynamics.state import Control
from vidyn_ros.physics.dynamics import PhysicsDynamics
from vidyn_ros.physics.model import PhysicsConfig
from vidyn_ros.physics.scene import build_from_scene
from vidyn_ros.physics.shapes import lowest_point, separate

VARIANTS = {"default (bounded step, separated)": (PhysicsConfig(), True),
            "step 1/1200 s (no bound)": (PhysicsConfig(stability=1e9), True),
            "not separated": (PhysicsConfig(), False),
            "neither": (PhysicsConfig(stability=1e9), False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("test", help="a prepared held-out episode directory (vidyn make-trainset)")
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--windows", default="", help="comma-separated window indices (default: all)")
    ap.add_argument("--verbose", action="store_true", help="print every window's bodies and overlaps")
    a = ap.parse_args()
    torch.set_num_threads(1)
    only = {int(w) for w in a.windows.split(",") if w}
    stats = {name: {"diverged": [], "vmax": [], "steps": [], "wall": 0.0} for name in VARIANTS}
    overlap, ground, light = [], [], []
    wi = -1
    for ev in load_eval_set([a.test]):
        ep = ev.episode
        for t in range(2, len(ep) - a.horizon, a.stride):
            wi += 1
            if only and wi not in only:
                continue
            batch = make_batch(ep, np.array([t]), a.horizon, with_images=False)
            s0 = batch.state.index(0)
            raw, _ = build_from_scene(s0.to_gaussians(), s0.pusher_id, separate_overlaps=False)
            bodies = raw.bodies
            pairs = 0.0
            for i in range(len(bodies)):
                for j in range(i + 1, len(bodies)):
                    bi, bj = bodies[i], bodies[j]
                    # the pair lifted 1 m: its overlap only, not the table's (no iterations: nothing moves)
                    lifted = np.stack([bi.position, bj.position]) + np.array([0, 0, 1.0])
                    _, d, _ = separate([bi.shape, bj.shape], lifted, np.stack([bi.quat_wxyz, bj.quat_wxyz]),
                                       np.ones(2, dtype=bool), iterations=0)
                    pairs = max(pairs, d)
            below = max(-lowest_point(b.shape, b.position, b.quat_wxyz) for b in bodies)
            overlap.append(pairs)
            ground.append(below)
            light.append(float(raw.params.mass.min()))
            line = [f"window {wi} ({ev.name} t={t}): {len(bodies)} bodies, lightest {light[-1] * 1e3:.1f} g, "
                    f"shapes overlap {pairs * 1e3:.1f} mm, into the table {max(below, 0) * 1e3:.1f} mm"]
            if a.verbose:
                for k, b in enumerate(bodies):
                    line.append(f"    body {k} (object {b.object_id}): {b.shape.kind} "
                                f"{tuple(round(x * 100, 2) for x in b.shape.size)} cm, "
                                f"{float(raw.params.mass[k]) * 1e3:.1f} g, centre z {b.position[2] * 100:.2f} cm")
            for name, (cfg, sep) in VARIANTS.items():
                t0 = time.perf_counter()
                phys = PhysicsDynamics.from_state(s0, config=cfg, separate_overlaps=sep)
                s, div, vmax, at = s0, False, 0.0, 0
                for h in range(a.horizon):
                    s, div = step_or_hold(phys, s, Control(batch.controls.linear[0, h]), batch.dt)
                    if div:
                        at = h + 1
                        break
                    v = phys.body_state(s).linear.norm(dim=-1)
                    vmax = max(vmax, float(v.max()) if bool(torch.isfinite(v).all()) else float("inf"))
                st = stats[name]
                st["diverged"].append(div)
                st["vmax"].append(vmax)
                st["steps"].append(phys.model.steps_for(batch.dt))
                st["wall"] += time.perf_counter() - t0
                line.append(f"    {name}: {phys.model.steps_for(batch.dt)} steps/frame, "
                            + (f"diverged at step {at}" if div else f"fastest body {vmax:.2f} m/s"))
            print("\n".join(line), flush=True)
    n = len(overlap)
    mm = 1e3
    print(f"\n{n} windows: fitted shapes overlap each other by up to {max(overlap) * mm:.1f} mm (median "
          f"{np.median(overlap) * mm:.1f}), reach into the table by up to {max(ground) * mm:.1f} mm (median "
          f"{np.median(ground) * mm:.1f}); lightest body {min(light) * mm:.1f} g (median {np.median(light) * mm:.1f})")
    print("\n| variant | diverged | fastest body, median / max of the sane windows [m/s] | steps per frame "
          "| wall [s] |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, st in stats.items():
        ok = [v for v, d in zip(st["vmax"], st["diverged"], strict=True) if not d]
        vm = f"{np.median(ok):.2f} / {max(ok):.2f}" if ok else "–"
        print(f"| {name} | {sum(st['diverged'])}/{n} | {vm} | {min(st['steps'])}–{max(st['steps'])} | "
              f"{st['wall']:.0f} |")


if __name__ == "__main__":
    main()
