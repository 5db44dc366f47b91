"""Scene update rate vs number of Gaussians and cameras (not a test: prints a table, writes JSON + markdown).

CPU (default): simulated `push` rig at 160x120 (render_scale 0.25), torch reference renderer.
CUDA (--device cuda): 640x480 (render_scale 1.0) with gsplat, e.g. 4 cameras x 50k Gaussians.

For each (cameras, Gaussians, refinement iterations): initialise on the first frame (few iterations: speed, not
quality, is measured here), then time ``SceneEstimator.update`` on the following frames (the pusher moves the red
block). Reports the mean update time and rate, and the mean centroid tracking error as a sanity check.

    .venv/bin/python bench/scene_rate.py                      # CPU table (a few minutes on 2 cores)
    .venv/bin/python bench/scene_rate.py --device cuda --scale 1.0 --gaussians 50000 --cameras 4 --iters 0 2 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "osmesa")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", type=float, default=0.25, help="sim render scale (0.25: 160x120, 1.0: 640x480)")
    p.add_argument("--gaussians", type=int, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    p.add_argument("--iters", type=int, nargs="+", default=[0, 2], help="refinement iterations per frame")
    p.add_argument("--frames", type=int, default=8, help="timed tracking frames per configuration")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch and the render (as the scene node's default; 0 = torch default)")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    from vidyn_ros.render import set_cpu_threads

    set_cpu_threads(args.threads)

    from tqdm import tqdm

    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.sim import SimRig
    from vidyn_ros.scene.evaluate import versions
    from vidyn_ros.scene.metrics import CentroidTracker
    from vidyn_ros.scene.pipeline import SceneConfig, SceneEstimator
    from vidyn_ros.types import MultiViewFrame

    with SimRig(load_scenario("push"), seed=0, render_scale=args.scale) as rig:
        rig.set_pusher_velocity([0.3, 0.0, 0.0])
        rig_frames = [rig.step() for _ in range(args.frames + 1)]
    h, w = rig_frames[0].frame.views[0].color.shape[:2]
    backend = "auto"
    rows = []
    combos = [(c, n, k) for c in args.cameras for n in args.gaussians for k in args.iters]
    for n_cam, n_g, iters in tqdm(combos, desc="configurations"):
        frames = [MultiViewFrame(rf.frame.stamp_ns, rf.frame.views[:n_cam]) for rf in rig_frames]
        cfg = SceneConfig(device=args.device, backend=backend, budget=n_g, init_iters=3, iters_per_frame=iters)
        est = SceneEstimator(cfg)
        ct = CentroidTracker(associate=False)  # true masks: the scene's ids are the true ids
        t0 = time.perf_counter()
        up = est.update(frames[0])
        init_s = time.perf_counter() - t0
        ct.add(up.objects, rig_frames[0].object_poses)
        times = []
        for f, rf in zip(frames[1:], rig_frames[1:], strict=True):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            up = est.update(f)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            ct.add(up.objects, rf.object_poses)
        # rendering alone (what the node's /vidyn/scene/render topics cost)
        t = time.perf_counter()
        est.render(frames[0].cameras)
        render_s = time.perf_counter() - t
        mean = float(np.mean(times))
        rows.append({
            "cameras": n_cam, "gaussians": len(est.gaussians), "budget": n_g, "refine_iters": iters,
            "update_ms": mean * 1000, "hz": 1.0 / mean, "init_s": init_s, "render_ms": render_s * 1000,
            "centroid_error_mm": ct.mean() * 1000,
        })  # fmt: skip
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    lines = [
        f"Scene update rate, {dev}, {w}x{h}, backend {backend}, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}",
        "",
        "| cameras | Gaussians | refine iters/frame | update [ms] | rate [Hz] | render all views [ms] "
        "| centroid err [mm] |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['cameras']} | {r['gaussians']} | {r['refine_iters']} | {r['update_ms']:.0f} "
                     f"| {r['hz']:.1f} | {r['render_ms']:.0f} | {r['centroid_error_mm']:.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if args.device.startswith("cuda") else "cpu"
    (out / f"scene_rate_{tag}.md").write_text(f"Command: `{' '.join(sys.argv)}`\n\n{table}")
    (out / f"scene_rate_{tag}.json").write_text(json.dumps({
        "command": sys.argv, "versions": versions(), "device": dev, "resolution": [w, h],
        "load_average": os.getloadavg(), "rows": rows, "config": {k: v for k, v in vars(args).items()},
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
