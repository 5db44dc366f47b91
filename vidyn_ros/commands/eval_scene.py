"""`vidyn eval-scene SCENARIO...`: run the simulated rig into the scene estimator and score it against ground truth."""

from __future__ import annotations

import argparse

NAME = "eval-scene"
HELP = "score the live Gaussian scene on simulated scenarios (centroid error, PSNR, id accuracy)"
DESCRIPTION = (
    "For each SCENARIO (a shipped name such as push, cube_stack, bowling, or a scenario YAML) and episode, simulate "
    "the rig, initialise the Gaussian scene on the first frame and track it through the episode. Prints and writes a "
    "quality table (OUT/eval_scene.md), all numbers with the command line and versions (OUT/eval_scene.json) and a "
    "side-by-side PNG (observed | rendered | difference) of each scenario's last frame."
)
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario name(s) or YAML path(s)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per scenario (seeds SEED, SEED+1, ...)")
    p.add_argument("--frames", type=int, default=0, help="frames per episode (0 = the scenario's duration)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--scale", type=float, default=0.25, help="render scale of the simulated cameras (0.25: 160x120)")
    p.add_argument("--out", default="out/eval_scene", help="output directory")
    p.add_argument("--budget", type=int, default=5000, help="number of Gaussians")
    p.add_argument("--init-iters", type=int, default=60, help="optimisation iterations at initialisation")
    p.add_argument("--iters-per-frame", type=int, default=2,
                   help="per-Gaussian refinement iterations per frame (appearance + positions; 0 = rigid only)")
    p.add_argument("--downscale", type=int, default=1, help="integer image downscale for the rendering losses")
    p.add_argument("--eval-every", type=int, default=10, help="evaluate PSNR and id accuracy every N frames")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch and the render (0 = torch's default; 1 is robust on shared cores)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vidyn_ros.errors import ConfigError, OutputError
    from vidyn_ros.render import set_cpu_threads
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.scene.evaluate import results_table, run_episode, write_results
    from vidyn_ros.scene.pipeline import SceneConfig

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.scale <= 0:
        raise ConfigError(f"--scale must be > 0, got {args.scale}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    for name in args.scenarios:  # fail fast on a bad name / YAML before any long run
        load_scenario(name)
    try:  # ... and on an unwritable output directory (the results are written after minutes of simulation)
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{args.out}: cannot create output directory ({err.strerror})") from None
    set_cpu_threads(args.threads)
    cfg = SceneConfig(device=args.device, budget=args.budget, init_iters=args.init_iters,
                      iters_per_frame=args.iters_per_frame, downscale=args.downscale, seed=args.seed)
    results = []
    for name in args.scenarios:
        for e in range(args.episodes):
            seed = args.seed + e
            stem = name.rsplit("/", 1)[-1].removesuffix(".yaml")
            png = f"{args.out}/side_by_side_{stem}_seed{seed}.png"
            results.append(run_episode(name, seed, args.frames, cfg, render_scale=args.scale,
                                       eval_every=args.eval_every, png=png))
            r = results[-1]
            print(f"{stem} seed {seed}: centroid error {r.centroid_error_m * 1000:.2f} mm, PSNR {r.psnr_db:.2f} dB, "
                  f"id accuracy {r.id_accuracy * 100:.1f} %, {r.hz:.1f} Hz")
    print(results_table(results), end="")
    md, js = write_results(results, cfg, args.out)
    print(f"wrote {md} and {js}")
    return 0
