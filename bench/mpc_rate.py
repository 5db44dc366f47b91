"""Replanning time of the visual MPC per control step, by backend and render setting (CPU or CUDA).

    .venv/bin/python bench/mpc_rate.py                          # CPU: the push scene from the deployed path
    .venv/bin/python bench/mpc_rate.py --save-scene s.pt        # ... and save it (for a machine without MuJoCo)
    python bench/mpc_rate.py --scene bench/data/mpc_push_scene.pt --device cuda   # GPU: no MuJoCo / open3d / warp

bench/data/mpc_push_scene.pt is that scene, saved (plain tensors: loads with ``weights_only=True``).

What one replan does is vidyn_ros.control.planner.Planner.plan (sampling rounds over batched rollouts, Adam steps
through backend + renderer, a final evaluation): the table reports its median wall time over ``--repeats`` replans
after one warm-up, the rate it allows, and the time per stage. Rows: every backend that is installed, then the
render settings that decide the cost of a replan (cost width, number of cost views, rendering every predicted step
instead of the final one, and one render call per candidate instead of one batched call) for the first backend.
Success rates for the settings come from ``vidyn mpc-eval``, not from here. Writes
OUT/mpc_rate_<device>[_<renderer>].json and .md (--out, default bench/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vidyn_ros.control.backends import default_sub_steps, make_backend
from vidyn_ros.control.goal import GoalMove, LayeredRenderer, goal_from_moves
from vidyn_ros.control.planner import Planner, PlannerConfig
from vidyn_ros.dynamics.state import ParticleState, pusher_object_id
from vidyn_ros.errors import VidynError

PUSHER_START = (-0.15, 0.0, 0.042)


def build_scene(budget: int) -> dict:
    """The push scene of seed 0 through the deployed path (segmenter masks, 160x120), as the mpc node sees it."""
    from vidyn_ros.rig.sim import SimRig
    from vidyn_ros.scene.deployed import DeployedSegmenter, scene_config
    from vidyn_ros.scene.pipeline import SceneEstimator

    with SimRig("push", seed=0, render_scale=0.25, masks=False) as rig:
        rf = rig.observe()
        width = rig.cameras[0].width
        est = SceneEstimator(scene_config(width, budget=budget, init_iters=40))
        up = est.update(DeployedSegmenter(width=width)(rf.frame))
        pusher = next(p.position for p in rf.object_poses if p.object_id == rig.pusher_id)
        return {"gaussians": up.gaussians.detach().to("cpu"), "cameras": list(rig.cameras),
                "background": tuple(float(v) for v in est.background), "pusher": pusher.tolist(),
                "red_xy": next(p.position[:2] for p in rf.object_poses if p.object_id == 1).tolist()}


def save_scene(scene: dict, path: str) -> None:
    """The scene as plain tensors / numbers (no pickled classes: loads with ``weights_only=True``)."""
    g = scene["gaussians"]
    doc = {"gaussians": {k: getattr(g, k) for k in ("means", "quats", "log_scales", "colors", "opacity_logits",
                                                     "object_ids", "particle_ids")},
           "cameras": [{"name": c.name, "width": int(c.width), "height": int(c.height),
                        "K": torch.as_tensor(np.asarray(c.K, dtype=np.float64)),
                        "T_world_cam": torch.as_tensor(np.asarray(c.T_world_cam, dtype=np.float64))}
                       for c in scene["cameras"]],
           "background": list(scene["background"]), "pusher": list(scene["pusher"]), "red_xy": list(scene["red_xy"])}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(doc, path)


def load_scene(path: str) -> dict:
    from vidyn_ros.types import CameraModel, GaussianSet

    try:
        doc = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"{path}: scene file not found") from None
    return {"gaussians": GaussianSet(**doc["gaussians"]),
            "cameras": [CameraModel(c["name"], c["width"], c["height"], c["K"].numpy(), c["T_world_cam"].numpy())
                        for c in doc["cameras"]],
            "background": tuple(doc["background"]), "pusher": list(doc["pusher"]), "red_xy": list(doc["red_xy"])}


def one_setting(scene: dict, backend: str, cfg: PlannerConfig, device: str, repeats: int) -> dict:
    g = scene["gaussians"].to(device)
    pid = pusher_object_id(g.object_ids, g.means, scene["pusher"])
    state = ParticleState.at_rest(g, 10**9, 1 / 30, pusher_id=pid)
    cfg = replace(cfg, device=device, sub_steps=cfg.sub_steps or default_sub_steps(backend, cfg.dt))
    model = make_backend(backend, state, device=device)
    planner = Planner(model, cfg, background=scene["background"])
    fine, _ = planner.cameras(scene["cameras"])
    renderer = LayeredRenderer(fine, g.subset(g.object_ids == 0), planner.background, cfg.render_backend, device)
    red = scene["red_xy"]
    goal, _ = goal_from_moves(g, [GoalMove((red[0], red[1]), (red[0] + 0.06, red[1]))], renderer, pusher_id=pid)
    planner.set_goal(goal)
    times, stages = [], []
    for i in range(repeats + 1):  # the first replan warms up (kernels, allocations) and is not counted
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        res = planner.plan(state, scene["pusher"], stamp_s=1.0 + i * cfg.dt)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(res.seconds)
            stages.append(res.timings)
    med = float(np.median(times))
    return {
        "backend": backend, "device": device, "width": cfg.width, "views": cfg.views, "render_steps": cfg.render_steps,
        "render_backend": cfg.render_backend, "batch_render": cfg.batch_render, "samples": cfg.samples,
        "sample_iters": cfg.sample_iters, "grad_iters": cfg.grad_iters, "horizon": cfg.horizon,
        "replan_s_median": round(med, 4),
        "rate_hz": round(1.0 / med, 2), "stages_s": {k: round(float(np.median([s[k] for s in stages])), 4)
                                                     for k in stages[0]},
        "gaussians": len(g), "dynamics_particles": int((g.object_ids > 0).sum()),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backends", default="static,constant_velocity,physics,learned")
    ap.add_argument("--scene", default="", help="a scene saved with --save-scene (default: build it with MuJoCo)")
    ap.add_argument("--save-scene", default="", help="save the built scene here and go on")
    ap.add_argument("--budget", type=int, default=3000, help="Gaussians of the built scene (the sim-mpc graph's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--sample-iters", type=int, default=2)
    ap.add_argument("--grad-iters", type=int, default=3)
    ap.add_argument("--render-backend", default="auto", help="auto (gsplat on CUDA when installed), torch, gsplat")
    ap.add_argument("--no-variants", action="store_true", help="skip the render-setting rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    from vidyn_ros.render import set_cpu_threads

    set_cpu_threads(args.threads)
    scene = load_scene(args.scene) if args.scene else build_scene(args.budget)
    if args.save_scene:
        save_scene(scene, args.save_scene)
    base = PlannerConfig(samples=args.samples, sample_iters=args.sample_iters, grad_iters=args.grad_iters,
                         render_backend=args.render_backend)
    rows, skipped = [], {}
    settings = [(b, base) for b in args.backends.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"mpc_rate_{args.device.split(':')[0]}"
    stem += "" if args.render_backend == "auto" else f"_{args.render_backend}"

    def write() -> None:
        doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": platform.node(),
               "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "rows": rows, "skipped": skipped}
        (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
        (out / f"{stem}.md").write_text(table(rows, doc) + "".join(f"- {k}: skipped ({v})\n"
                                                                  for k, v in skipped.items()))

    first_ok = None
    i = 0
    while i < len(settings):
        backend, cfg = settings[i]
        i += 1
        try:
            rows.append(one_setting(scene, backend, cfg, args.device, args.repeats))
        except (VidynError, ImportError, RuntimeError) as err:
            skipped[backend] = str(err).splitlines()[0][:200]
            print(f"{backend}: skipped ({skipped[backend]})", flush=True)
            continue
        print(json.dumps(rows[-1]), flush=True)
        write()
        if first_ok is None and not args.no_variants:
            first_ok = backend
            settings += [(backend, replace(base, width=40)), (backend, replace(base, width=160)),
                         (backend, replace(base, views=1)), (backend, replace(base, views=4)),
                         (backend, replace(base, render_steps="all")), (backend, replace(base, batch_render=False))]
    write()
    print(table(rows, {"loadavg": os.getloadavg()}), end="")
    return 0


def table(rows: list[dict], doc: dict) -> str:
    lines = [f"load average {tuple(round(v, 2) for v in doc['loadavg'])}", "",
             "| backend | device | renderer | candidates per render call | cost width | views | rendered steps | "
             "samples x rounds | Adam steps | replan [s] | rate [Hz] | sample / grad / final [s] |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        st = r["stages_s"]
        per_call = "all (batched)" if r.get("batch_render", True) else "1 (loop)"
        lines.append(f"| {r['backend']} | {r['device']} | {r['render_backend']} | {per_call} | {r['width']} | "
                     f"{r['views']} | "
                     f"{r['render_steps']} | {r['samples']} x {r['sample_iters']} | {r['grad_iters']} | "
                     f"{r['replan_s_median']:.3f} | {r['rate_hz']:.1f} | {st['sample']:.3f} / {st['grad']:.3f} / "
                     f"{st['final']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
