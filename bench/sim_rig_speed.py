"""Simulated rig speed: physics step and multi-camera render time per frame, per scenario and resolution.

For each shipped scenario (4 cameras) at 640x480 and 160x120: median and minimum wall time of
``SimRig.step(render=False)`` (physics only) and of ``SimRig.observe()`` (colour + depth + mask for every camera),
plus the CPU time of ``observe()``, which barely changes when other jobs share the machine. Writes a markdown
table and JSON to bench/results/sim_rig_speed.{md,json}, and a filmstrip of each scenario (cam0 colour at 0, 0.33,
0.67, 1, 1.5 s; the push scenario's pusher moving along +x) to sim_rig_scenarios.png.

    MUJOCO_GL=osmesa .venv/bin/python bench/sim_rig_speed.py [--frames 20] [--scenarios push]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def measure(name: str, scale: float, frames: int) -> dict:
    """Median physics step and 4-camera colour + depth + mask render per frame of one scenario at one scale."""
    from vidyn_ros.rig.sim import SimRig

    with SimRig(name, seed=0, render_scale=scale, masks=True) as rig:
        rig.set_pusher_velocity([0.1, 0.0, 0.0])
        rig.observe()  # warm-up: GL context and buffers
        phys, rend, cpu = [], [], []
        for _ in range(frames):
            t0 = time.perf_counter()
            rig.step(render=False)
            t1 = time.perf_counter()
            c1 = time.process_time()
            rig.observe()
            t2 = time.perf_counter()
            cpu.append(time.process_time() - c1)
            phys.append(t1 - t0)
            rend.append(t2 - t1)
        cam = rig.cameras[0]
    return {
        "scenario": name, "scale": scale, "cameras": len(rig.cameras), "width": cam.width, "height": cam.height,
        "render_rgbd_mask_ms": round(1e3 * float(np.median(rend)), 2),
        # the minimum is the best estimate of the uncontended cost on a shared machine
        "render_rgbd_mask_ms_min": round(1e3 * float(np.min(rend)), 2),
        # CPU time (all threads of this process) barely depends on what else runs on the machine
        "render_cpu_ms": round(1e3 * float(np.median(cpu)), 2),
        "physics_ms": round(1e3 * float(np.median(phys)), 2),
    }


def filmstrip(names: list[str], path: Path) -> Path:
    from vidyn_ros.rig.sim import SimRig
    from vidyn_ros.viz import image_grid

    frames_at = [0, 10, 20, 30, 45]
    rows, labels = [], []
    for name in names:
        with SimRig(name, seed=0, render_scale=0.5, masks=False) as rig:
            rig.set_pusher_velocity([0.1, 0.0, 0.0])
            row, lab = [], []
            for k in range(frames_at[-1] + 1):
                if k in frames_at:
                    row.append(rig.render_only([rig.cameras[0]]).views[0].color)
                    lab.append(f"{name} t={rig.time_s:.2f} s")
                rig.step(render=False)
        rows.append(row)
        labels.append(lab)
    return image_grid(rows, path, labels, max_tile_width=240, title="simulated rig scenarios, cam0 (seed 0)")


def main() -> None:
    from vidyn_ros.rig.scenario import scenario_names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--scenarios", nargs="*", default=None, help="default: all shipped scenarios")
    args = ap.parse_args()
    rows = []
    for name in args.scenarios or scenario_names():
        for scale in (1.0, 0.25):
            rows.append(measure(name, scale, args.frames))
            print(rows[-1], flush=True)
    import mujoco

    meta = {"mujoco": mujoco.__version__, "gl": os.environ.get("MUJOCO_GL"), "cpu_count": os.cpu_count(),
            "machine": platform.platform(), "frames": args.frames, "loadavg_1min": round(os.getloadavg()[0], 2)}
    lines = ["| scenario | cameras | size | physics / frame [ms] | render colour+depth+mask, wall [ms] median (min) "
             "| render, CPU time [ms] median |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['cameras']} | {r['width']}x{r['height']} | {r['physics_ms']} | "
                     f"{r['render_rgbd_mask_ms']} ({r['render_rgbd_mask_ms_min']}) | {r['render_cpu_ms']} |")
    md = "\n".join(lines) + f"\n\n{meta}\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sim_rig_speed.md").write_text(md)
    (RESULTS / "sim_rig_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(md)
    print("wrote", filmstrip(args.scenarios or scenario_names(), RESULTS / "sim_rig_scenarios.png"))


if __name__ == "__main__":
    main()
