"""`vidyn eval-scene SCENARIO...`: run the simulated rig into the scene estimator and score it against ground truth."""

from __future__ import annotations

import argparse

NAME = "eval-scene"
HELP = "score the live Gaussian scene on simulated scenarios (drift, Chamfer distance, id accuracy, PSNR)"
DESCRIPTION = (
    "For each SCENARIO (a shipped name such as push, cube_stack, bowling, or a scenario YAML) and episode, simulate "
    "the rig and run the deployed perception path on it, as `vidyn launch sim` does: the rig at 640x480, the weight-"
    "free segmenter's masks, the scene with the shipped graph's settings (image_downscale 4, 5000 Gaussians, rigid "
    "tracking). Scores against the simulator's truth: drift of the tracked centroids, Chamfer distance of each "
    "object's Gaussians to its true surface, id accuracy against the true object each Gaussian lies on, PSNR. A second "
    "row per scenario, labelled 'oracle masks', feeds the simulator's true masks instead (--masks to choose). Prints "
    "and writes a table (OUT/eval_scene.md), all numbers with the command line and versions (OUT/eval_scene.json) and "
    "a side-by-side PNG (observed | rendered | difference) of each scenario's last frame."
)
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario name(s) or YAML path(s)")
    p.add_argument("--masks", nargs="+", choices=["segmenter", "oracle"], default=["segmenter", "oracle"],
                   help="mask sources to evaluate: segmenter = the deployed path (headline), oracle = the simulator's "
                        "true masks (an upper bound); default both")
    p.add_argument("--episodes", type=ranged(int, "[1, 10000]"), default=1,
                   help="episodes per scenario (seeds SEED, SEED+1, ...)")
    p.add_argument("--frames", type=ranged(int, "[0, inf)"), default=0,
                   help="frames per episode (0 = the scenario's duration)")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0, help="first seed")
    p.add_argument("--scale", type=ranged(float, "(0, 4]"), default=1.0,
                   help="render scale of the simulated cameras (default 1.0: 640x480 as deployed; the segmenter "
                        "stride and the scene's downscale follow the width unless given)")
    p.add_argument("--out", default="out/eval_scene", help="output directory")
    p.add_argument("--budget", type=ranged(int, "[1, 10000000]"), default=None,
                   help="number of Gaussians (default: the graph's)")
    p.add_argument("--init-iters", type=ranged(int, "[0, 100000]"), default=None,
                   help="optimisation iterations at initialisation "
                   "(default: the graph's)")
    p.add_argument("--iters-per-frame", type=ranged(int, "[0, 10000]"), default=None,
                   help="per-Gaussian refinement iterations per frame (default: the graph's, 0 = rigid tracking)")
    p.add_argument("--downscale", type=ranged(int, "[1, 64]"), default=None,
                   help="integer image downscale for fusion and rendering (default: the graph's 4 at 640 px, scaled "
                        "with the width)")
    p.add_argument("--eval-every", type=ranged(int, "[1, 100000]"), default=10,
                   help="evaluate Chamfer, ids and PSNR every N frames")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=ranged(int, "[0, 1024]"), default=1,
                   help="CPU threads for torch and the render (0 = torch's default; 1 is robust on shared cores)")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from vidyn_ros.errors import OutputError
    from vidyn_ros.render import set_cpu_threads
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.scene.deployed import deployed_parameters, scene_config
    from vidyn_ros.scene.evaluate import MASK_LABELS, results_table, run_episode, write_results

    widths = set()
    for name in args.scenarios:  # fail fast on a bad name / YAML before any long run
        scn = load_scenario(name)
        widths.add(round(scn.cameras[0].width * args.scale) if scn.cameras else 0)
    try:  # ... and on an unwritable output directory (the results are written after minutes of simulation)
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{args.out}: cannot create output directory ({err.strerror})") from None
    set_cpu_threads(args.threads)
    overrides = {"device": args.device, "seed": args.seed}
    for key in ("budget", "init_iters", "iters_per_frame", "downscale"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    width = widths.pop() if len(widths) == 1 else None
    results = []
    for name in args.scenarios:
        scn = load_scenario(name)
        cfg = scene_config(round(scn.cameras[0].width * args.scale), **overrides)
        for masks in args.masks:
            for e in range(args.episodes):
                seed = args.seed + e
                stem = name.rsplit("/", 1)[-1].removesuffix(".yaml")
                png = f"{args.out}/side_by_side_{stem}_seed{seed}{'' if masks == 'segmenter' else '_' + masks}.png"
                r = run_episode(name, seed, args.frames, dataclasses.replace(cfg, seed=seed), masks=masks,
                                render_scale=args.scale, eval_every=args.eval_every, png=png)
                results.append(r)
                print(f"{stem} seed {seed}, {MASK_LABELS[masks]}: drift {r.centroid_error_m * 1000:.2f} mm, Chamfer "
                      f"{r.chamfer_m * 100:.2f} cm, id accuracy {r.id_accuracy * 100:.1f} %, "
                      f"PSNR {r.psnr_db:.2f} dB, {r.hz:.1f} Hz")
    print(results_table(results), end="")
    md, js = write_results(results, scene_config(width, **overrides) if width else None, args.out,
                           extra={"deployed": deployed_parameters(width)})
    print(f"wrote {md} and {js}")
    return 0
