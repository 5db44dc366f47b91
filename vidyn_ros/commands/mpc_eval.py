"""`vidyn mpc-eval`: closed-loop MPC on N seeded reachable goals of the push scenario, one row per policy."""

from __future__ import annotations

import argparse

NAME = "mpc-eval"
HELP = "closed-loop MPC on seeded reachable goals: success, final distance, steps, wall time per policy"
DESCRIPTION = (
    "For each of N seeds, a push world and a reachable goal (a block moved 4-8 cm, staged by a scripted push in the "
    "simulator); each policy then drives the pusher in closed loop. Success = every block within 2 cm of its goal at "
    "the end (true poses). Policies: random; oracle (MPPI on the simulator with true poses: evaluation only); "
    "visual-<backend> (segmenter -> Gaussian scene -> visual MPC with a dynamics backend: static, "
    "constant_velocity, physics, learned). Writes OUT/mpc_eval.md, OUT/mpc_eval.json (command, versions, every "
    "episode), OUT/mpc_eval_paths.png (block paths per goal) and OUT/mpc_eval_cost.png (cost vs iteration, "
    "distance vs time)."
)
ORDER = 45


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("--policies", default="random,oracle,visual-physics,visual-learned",
                   help="comma-separated rows: random, oracle, visual-<backend> (default: all four rows)")
    p.add_argument("--goals", type=ranged(int, "[1, 10000]"), default=10,
                   help="number of goals / episodes per policy (seeds SEED..)")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0, help="first seed")
    p.add_argument("--seconds", type=ranged(float, "(0, 3600]"), default=8.0, help="sim time budget per episode [s]")
    p.add_argument("--masks", choices=("segmenter", "true"), default="segmenter",
                   help="visual rows: deployed segmenter masks (default) or the simulator's (an oracle row)")
    p.add_argument("--samples", type=ranged(int, "[1, 100000]"), default=24, help="sampled sequences per round")
    p.add_argument("--sample-iters", type=ranged(int, "[0, 1000]"), default=2, help="sampling rounds per replan")
    p.add_argument("--grad-iters", type=ranged(int, "[0, 1000]"), default=3, help="Adam steps per replan")
    p.add_argument("--horizon", type=ranged(int, "[1, 1000]"), default=8, help="control steps planned ahead")
    p.add_argument("--replan-every", type=ranged(int, "[1, 1000]"), default=1,
                   help="visual rows: replan every n control periods (0.1 s each; in between the plan's next action)")
    p.add_argument("--views", type=ranged(int, "[1, 64]"), default=2, help="cameras the cost renders")
    p.add_argument("--width", type=ranged(int, "[8, 4096]"), default=80, help="cost render width [px]")
    p.add_argument("--reach", type=ranged(float, "[0, 1000]"), default=0.3,
                   help="weight of the reach shaping term (0 = off)")
    p.add_argument("--checkpoint", default="", help="learned backend checkpoint (default: the shipped one)")
    p.add_argument("--out", default="out/mpc_eval", help="output directory")
    p.add_argument("--threads", type=ranged(int, "[0, 1024]"), default=1,
                   help="CPU threads for torch (0 = torch's default)")
    p.add_argument("--jobs", type=ranged(int, "[1, 256]"), default=1,
                   help="episodes run in this many worker processes at once (each with --threads threads); the "
                        "results are the same as with 1, in seed order")


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from tqdm import tqdm

    from vidyn_ros.control.cost import CostWeights
    from vidyn_ros.control.episode import EpisodeConfig, make_policy, run_episode
    from vidyn_ros.control.planner import PlannerConfig
    from vidyn_ros.errors import OutputError
    from vidyn_ros.provenance import software_versions
    from vidyn_ros.render import set_cpu_threads

    policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    ecfg = EpisodeConfig(max_seconds=args.seconds, masks=args.masks, replan_every=args.replan_every)
    pcfg = PlannerConfig(horizon=args.horizon, samples=args.samples, sample_iters=args.sample_iters,
                         grad_iters=args.grad_iters, views=args.views, width=args.width,
                         weights=CostWeights(reach=args.reach)).check()
    for name in policies:  # fail fast on a bad policy name
        make_policy(name, pcfg, 0, ecfg)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create output directory ({err.strerror})") from None
    set_cpu_threads(args.threads)
    results: dict[str, list] = {}
    versions = software_versions("torch", "mujoco", "newton", "warp-lang")
    t0 = time.monotonic()
    for name in policies:
        rows = results.setdefault(name, [])
        bar = tqdm(total=args.goals, desc=name, unit="goal", file=sys.stderr)
        seeds = [args.seed + i for i in range(args.goals)]

        def done(r, rows=rows, bar=bar, name=name) -> None:
            rows.append(r)
            rows.sort(key=lambda x: x.seed)
            _write(out, results, args, ecfg, pcfg, versions, t0)  # after every episode: a long run is never lost
            bar.update(1)
            bar.set_postfix_str(f"success {sum(x.success for x in rows)}/{len(rows)}")
            if r.error:
                tqdm.write(f"{name} seed {r.seed}: {r.error}", file=sys.stderr)

        if args.jobs > 1:
            _run_parallel(name, seeds, pcfg, ecfg, args, done)
        else:
            for seed in seeds:
                pol = make_policy(name, pcfg, seed, ecfg, checkpoint=args.checkpoint)
                done(run_episode(pol, seed, ecfg, pcfg,
                                 progress=lambda t, b=bar: b.set_postfix_str(f"t={t:.1f}s", refresh=False)))
        bar.close()
    print(table(results), end="")
    print(f"wrote {out / 'mpc_eval.md'}, {out / 'mpc_eval.json'}, {out / 'mpc_eval_paths.png'}, "
          f"{out / 'mpc_eval_cost.png'}")
    return 0


def _episode_worker(name: str, seed: int, pcfg, ecfg, checkpoint: str, threads: int):
    """One episode in a worker process (spawned: its own torch / MuJoCo state)."""
    from vidyn_ros.control.episode import make_policy, run_episode
    from vidyn_ros.render import set_cpu_threads

    set_cpu_threads(threads)
    return run_episode(make_policy(name, pcfg, seed, ecfg, checkpoint=checkpoint), seed, ecfg, pcfg)


def _run_parallel(name: str, seeds: list[int], pcfg, ecfg, args: argparse.Namespace, done) -> None:
    """Episodes of one policy in ``args.jobs`` worker processes; ``done(result)`` as each finishes."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(args.jobs, len(seeds)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_episode_worker, name, seed, pcfg, ecfg, args.checkpoint, args.threads)
                   for seed in seeds]
        for f in as_completed(futures):
            done(f.result())


def table(results: dict[str, list]) -> str:
    import numpy as np

    lines = ["| policy | success | final distance mean / max [cm] | steps (mean) | sim time [s] | wall per episode "
             "[s] | replan [s] |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in results.items():
        if not rows:
            continue
        ok = sum(r.success for r in rows)
        d = np.array([r.final_distance for r in rows]) * 100
        plan = [r.plan_seconds for r in rows if r.plan_seconds > 0]
        lines.append(f"| {name} | {ok}/{len(rows)} ({100 * ok / len(rows):.0f} %) | {d.mean():.1f} / {d.max():.1f} | "
                     f"{np.mean([r.steps for r in rows]):.1f} | {np.mean([r.sim_seconds for r in rows]):.1f} | "
                     f"{np.mean([r.wall_seconds for r in rows]):.1f} | "
                     f"{np.mean(plan) if plan else 0:.2f} |")
    return "\n".join(lines) + "\n"


def _write(out, results, args, ecfg, pcfg, versions, t0) -> None:
    import json
    import sys
    import time
    from dataclasses import asdict

    def episode(r) -> dict:
        return {
            "seed": r.seed, "success": r.success, "final_distance_m": round(r.final_distance, 5),
            "distances_m": {str(k): round(v, 5) for k, v in r.distances.items()}, "steps": r.steps,
            "sim_seconds": round(r.sim_seconds, 3), "wall_seconds": round(r.wall_seconds, 2),
            "plan_seconds_mean": round(r.plan_seconds, 4), "error": r.error,
            "goal": {"object_id": r.goal.object_id,
                     "start": {str(k): v.round(5).tolist() for k, v in r.goal.start.items()},
                     "goal": {str(k): v.round(5).tolist() for k, v in r.goal.goal.items()}},
            "costs": [round(c, 5) for c in r.costs], "first_plan_history": r.first_history,
            "distance_trace_m": [round(d, 5) for d in r.distance_trace],
        }  # fmt: skip

    doc = {"command": " ".join(["vidyn", *sys.argv[1:]]), "versions": versions,
           "episode_config": asdict(ecfg), "planner_config": asdict(pcfg),
           "wall_seconds_total": round(time.monotonic() - t0, 1),
           "policies": {k: [episode(r) for r in v] for k, v in results.items()}}
    (out / "mpc_eval.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "mpc_eval.md").write_text(f"`{doc['command']}`\n\n" + table(results))
    plot_paths(results, out / "mpc_eval_paths.png")
    plot_costs(results, out / "mpc_eval_cost.png")


def plot_paths(results: dict[str, list], path) -> None:
    """Per goal (columns) and policy (rows): every object's true path (moved block red, others blue, pusher grey),
    the moved block's start (o) and goal (x), and a 2 cm circle (green = success)."""
    from PIL import Image, ImageDraw

    from vidyn_ros.control.plots import path_panel, save

    names = [n for n, rows in results.items() if rows]
    n_goals = max(len(results[n]) for n in names)
    cell, label = 150, 110
    img = Image.new("RGB", (max(label + cell * n_goals, 760), 30 + cell * len(names)), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((6, 6), "mpc-eval: moved block (red) from o to x (2 cm circle: green = success), other blocks (blue), "
           "pusher (grey); table +-0.3 m", fill=(0, 0, 0))
    for i, name in enumerate(names):
        d.text((6, 30 + cell * i + cell // 2), name, fill=(0, 0, 0))
        for j, r in enumerate(results[name]):
            k = r.goal.object_id
            paths = [(xy, (214, 39, 40) if oid == k else (31, 119, 180) if oid in r.goal.goal else (150, 150, 150),
                      2 if oid in r.goal.goal else 1) for oid, xy in r.paths.items()]
            s, g = r.goal.start[k], r.goal.goal[k]
            path_panel(d, (label + cell * j, 30 + cell * i, label + cell * (j + 1), 30 + cell * (i + 1)), paths,
                       marks=[(s[0], s[1], "o", (214, 39, 40)), (g[0], g[1], "x", (0, 0, 0))],
                       circles=[(g[0], g[1], 0.02, (44, 160, 44) if r.success else (214, 39, 40))],
                       title=f"seed {r.seed}: {r.final_distance * 100:.1f} cm")
    save(img, path)


def plot_costs(results: dict[str, list], path) -> None:
    """Left: cost per iteration of the first replan (visual rows: sampling rounds, then Adam steps). Right: the
    largest block-goal distance over the control steps (mean over goals), every row."""
    import numpy as np
    from PIL import Image, ImageDraw

    from vidyn_ros.control.plots import line_panel, save

    img = Image.new("RGB", (1000, 380), (255, 255, 255))
    d = ImageDraw.Draw(img)
    left, right = [], []
    for name, rows in results.items():
        hist = [r.first_history for r in rows if r.first_history]
        if hist:
            n = min(len(h) for h in hist)
            grad = [[c for s, c in h[:n]] for h in hist]
            left.append((name, list(range(n)), np.mean(grad, axis=0).tolist()))
        traces = [r.distance_trace for r in rows if r.distance_trace]
        if traces:
            n = max(len(t) for t in traces)
            arr = np.array([t + [t[-1]] * (n - len(t)) for t in traces]) * 100
            right.append((name, list(range(n)), arr.mean(0).tolist()))
    line_panel(d, (0, 0, 500, 380), left, "first replan: cost per iteration (sampling rounds, then Adam steps)",
               "iteration")
    line_panel(d, (500, 0, 1000, 380), right, "largest block-goal distance [cm], mean over goals (line: 2 cm)",
               "control step", hline=2.0, ymin=0.0)
    save(img, path)
