"""`vidyn eval --test DIR --row NAME=SPEC ...`: dynamics backends vs simulator truth on held-out episodes."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = "score dynamics backends (learned checkpoints, baselines) on held-out episodes: CD, δ, PSNR/SSIM vs horizon"
DESCRIPTION = (
    "Roll each backend forward from the tracked scene of held-out prepared episodes (vidyn make-trainset) with the "
    "recorded pusher commands, and compare the predicted object particles with points on the true object surfaces "
    "(simulator truth from the episodes' bags) at horizons 1..H: Chamfer distance, δ (1/2/4 and 5/10/20 cm), the "
    "same CD for moving objects only, and PSNR/SSIM of the rendered prediction against the real frames. A row is "
    "NAME=SPEC[,SPEC...] where SPEC is a checkpoint, a glob of checkpoints (several training seeds: mean ± std) or "
    "a baseline (constant_velocity, static) or physics (rigid bodies fitted to the scene, Newton; physics:FILE takes "
    "friction and density from a vidyn sysid result). Writes OUT/eval.md, OUT/eval.json, OUT/cd_vs_horizon.png, "
    "OUT/paths.png (true vs predicted object paths) and OUT/frames.png (observed vs predicted frames)."
)
ORDER = 44


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("--test", nargs="+", required=True, help="prepared held-out episodes (training-set dirs)")
    p.add_argument("--row", action="append", default=[], metavar="NAME=SPEC[,SPEC...]",
                   help="a table row (repeatable); default: constant velocity and the shipped model")
    p.add_argument("--horizon", type=ranged(int, "[1, 1000]"), default=10, help="predicted steps H")
    p.add_argument("--stride", type=ranged(int, "[1, 100000]"), default=8, help="frames between evaluation windows")
    p.add_argument("--sub-steps", type=ranged(int, "[1, 100]"), default=1,
                   help="model steps per frame interval (residual sub-steps)")
    p.add_argument("--episodes", type=ranged(int, "[0, inf)"), default=0,
                   help="at most this many test episodes (0 = all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=ranged(int, "[0, 1024]"), default=1, help="CPU threads for torch and the render")
    p.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                   help="write paths.png and frames.png")
    p.add_argument("--out", required=True, help="output directory")


def _rows(specs: list[str]) -> list[tuple[str, list[str]]]:
    import glob
    from pathlib import Path

    from vidyn_ros.dynamics.checkpoint import CheckpointError
    from vidyn_ros.dynamics.evaluate import BASELINES
    from vidyn_ros.errors import ConfigError

    if not specs:
        from vidyn_ros.control.backends import default_checkpoint

        return [("constant velocity", ["constant_velocity"]), ("learned (shipped)", [default_checkpoint()])]
    rows = []
    for item in specs:
        name, sep, members = item.partition("=")
        if not sep or not name.strip() or not members.strip():
            raise ConfigError(f"--row {item!r}: expected NAME=SPEC[,SPEC...]")
        out = []
        for m in members.split(","):
            m = m.strip()
            if m in BASELINES or m.startswith("physics:"):
                out.append(m)
                continue
            found = sorted(glob.glob(m))
            if not found:
                raise CheckpointError(f"{m}: checkpoint not found (row {name!r})")
            out += [str(Path(f)) for f in found]
        rows.append((name.strip(), out))
    return rows


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from vidyn_ros.dynamics.evaluate import (
        aggregate,
        evaluate_backend,
        frames_figure,
        load_eval_set,
        make_dynamics,
        most_moving_window,
        paths_figure,
        results_table,
    )
    from vidyn_ros.errors import OutputError
    from vidyn_ros.provenance import software_versions
    from vidyn_ros.render import set_cpu_threads
    from vidyn_ros.viz import line_plot

    set_cpu_threads(args.threads)
    rows = _rows(args.row)
    episodes = load_eval_set(args.test)
    if args.episodes:
        episodes = episodes[: args.episodes]
    members = {spec: make_dynamics(spec, args.device) for _, specs in rows for spec in specs}  # fail fast
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create output directory ({err.strerror})") from None
    n_win = sum(len(range(2, len(ev.episode) - args.horizon, args.stride)) for ev in episodes)
    render_h = sorted({1, args.horizon})
    results = []
    with tqdm(total=n_win * len(members), desc="eval", unit="window", disable=None) as bar:
        per_spec = {}
        for spec, (model, info) in members.items():
            bar.set_postfix_str(Path(spec).parent.name or spec)
            per_spec[spec] = {**evaluate_backend(model, episodes, args.horizon, args.stride, render_h,
                                                 args.sub_steps, progress=lambda: bar.update(1)), "info": info}
    for name, specs in rows:
        results.append({"name": name, "members": specs, "per_member": [per_spec[s] for s in specs],
                        "metrics": aggregate([per_spec[s] for s in specs])})
    horizons = sorted({1, min(5, args.horizon), args.horizon})
    table = results_table(results, horizons)
    scenarios = sorted({ev.episode.scenario for ev in episodes})
    header = (f"Held-out episodes: {len(episodes)} ({', '.join(scenarios)}), {n_win} windows of {args.horizon} steps "
              f"(stride {args.stride}); CD / δ vs the true object surfaces (pusher excluded); mean ± std over each "
              f"row's checkpoints.\n\n")
    (out / "eval.md").write_text(header + table)
    doc = {"command": shlex.join(["vidyn", *sys.argv[1:]]), "versions": software_versions("torch", "numpy", "scipy"),
           "test": [ev.name for ev in episodes], "scenarios": scenarios, "horizon": args.horizon,
           "stride": args.stride, "sub_steps": args.sub_steps, "windows": n_win, "rows": results}
    (out / "eval.json").write_text(json.dumps(doc, indent=2, default=float))
    hs = list(range(1, args.horizon + 1))
    line_plot(hs, {r["name"]: [100 * v for v in r["metrics"]["cd_m"]] for r in results}, out / "cd_vs_horizon.png",
              title=f"Chamfer distance to the true surfaces ({', '.join(scenarios)})", xlabel="horizon [steps]",
              ylabel="CD [cm]", markers=True)
    if args.figures and episodes:
        ev = episodes[0]
        t = most_moving_window(ev, args.horizon)
        firsts = [(name, members[specs[0]][0]) for name, specs in rows]
        paths_figure(firsts, ev, t, args.horizon, out / "paths.png")
        learned = next(((n, members[s[0]][0]) for n, s in rows if s[0] not in ("constant_velocity", "static")),
                       firsts[0])
        frames_figure(learned[1], ev, t, sorted({1, min(5, args.horizon), args.horizon}), out / "frames.png",
                      label=learned[0])
    print(header + table, end="")
    figs = ", paths.png, frames.png" if args.figures else ""
    print(f"wrote {out / 'eval.md'}, eval.json, cd_vs_horizon.png{figs}")
    return 0
