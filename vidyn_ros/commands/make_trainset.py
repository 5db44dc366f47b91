"""`vidyn make-trainset DATASET... --out DIR`: recorded episodes -> dynamics training episodes (tracked + frames)."""

from __future__ import annotations

import argparse

NAME = "make-trainset"
HELP = "turn recorded episodes (make-dataset / record) into training episodes for the learned dynamics"
DESCRIPTION = (
    "For every episode bag of each DATASET directory (written by vidyn make-dataset; or a single bag directory), "
    "track it with the Gaussian scene (vidyn track, deployed segmenter masks) into per-Gaussian trajectories (the "
    "pseudo position labels), and store them with the colour frames at the training resolution (rendering targets), "
    "the pusher commands from /vidyn/cmd and the pusher's object id (found at the robot's known end-effector start "
    "position). Simulator ground truth is not used. Writes DIR/<dataset>_<episode>/{episode.npz,images.npy,"
    "source.json,track/} and DIR/trainset.yaml (command, versions, episodes). Episodes already prepared are skipped "
    "(an interrupted run resumes); --overwrite redoes them."
)
ORDER = 42


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="make-dataset directories (with dataset.yaml) or single bag directories")
    p.add_argument("--out", required=True, help="training-set directory")
    p.add_argument("--budget", type=ranged(int, "[10, 10000000]"), default=2000, help="Gaussians per scene")
    p.add_argument("--episodes", type=ranged(int, "[0, inf)"), default=0,
                   help="at most this many episodes per dataset (0 = all)")
    p.add_argument("--pusher-xyz", type=ranged(float, "[-100, 100]"), nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="the pusher's end-effector position at the first frame (default: the dataset scenario's "
                        "pusher start; none: no pusher)")
    p.add_argument("--init-iters", type=ranged(int, "[0, 100000]"), default=None,
                   help="scene optimisation iterations at initialisation (default: vidyn track's)")
    p.add_argument("--threads", type=ranged(int, "[0, 1024]"), default=1, help="CPU threads for torch and the render")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0, help="scene seed")
    p.add_argument("--overwrite", action="store_true", help="redo episodes that are already prepared")


def _dataset_episodes(path, limit: int) -> tuple[list, str, tuple | None]:
    """(bag directories, scenario name, pusher start) of a make-dataset directory or one bag directory."""
    from pathlib import Path

    import yaml

    from vidyn_ros.dynamics.data import DataError
    from vidyn_ros.errors import ConfigError
    from vidyn_ros.rig.scenario import load_scenario

    d = Path(path)
    meta = d / "dataset.yaml"
    if meta.is_file():
        try:
            doc = yaml.safe_load(meta.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{meta}: not readable YAML ({str(err).splitlines()[0]})") from None
        bags = [d / e["bag"] for e in doc.get("episodes", []) if e.get("complete", True)]
        scen_file = d / doc.get("scenario_file", "scenario.yaml")
        scenario = str(doc.get("scenario", ""))
        scn = load_scenario(str(scen_file) if scen_file.is_file() else scenario) if scenario else None
    elif (d / "metadata.yaml").is_file():
        bags, scn, scenario = [d], None, ""
    else:
        raise DataError(f"{d}: neither a make-dataset directory (dataset.yaml) nor a bag directory (metadata.yaml)")
    if limit:
        bags = bags[:limit]
    pusher = tuple(scn.pusher.position) if scn is not None and scn.pusher is not None else None
    return bags, (scn.name if scn is not None else scenario), pusher


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import shlex
    import sys
    from pathlib import Path

    import yaml
    from tqdm import tqdm

    from vidyn_ros.dynamics.data import EPISODE_FILE, INDEX_FILE
    from vidyn_ros.dynamics.prepare import prepare_episode
    from vidyn_ros.errors import OutputError
    from vidyn_ros.provenance import software_versions
    from vidyn_ros.render import set_cpu_threads

    set_cpu_threads(args.threads)
    jobs = []
    for ds in args.datasets:
        bags, scenario, pusher = _dataset_episodes(ds, args.episodes)
        if args.pusher_xyz is not None:
            pusher = tuple(args.pusher_xyz)
        stem = Path(ds).resolve().name
        jobs += [(bag, f"{stem}_{Path(bag).name}", scenario, pusher) for bag in bags]
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create directory ({err.strerror})") from None
    index = {
        "command": shlex.join(["vidyn", *sys.argv[1:]]),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": software_versions("torch", "numpy", "open3d"),
        "settings": {"budget": args.budget, "seed": args.seed, "tracking": "vidyn track defaults (deployed segmenter "
                     "masks, the shipped graph's image downscale)", "labels": "scene tracking (pseudo labels)"},
        "episodes": [],
    }
    done = 0
    for bag, name, scenario, pusher in tqdm(jobs, desc="make-trainset", unit="episode", disable=None):
        ep_dir = out / name
        entry = {"name": name, "bag": str(bag), "scenario": scenario}
        if (ep_dir / EPISODE_FILE).is_file() and not args.overwrite:
            entry["status"] = "kept (already prepared)"
        else:
            extra = [] if args.init_iters is None else ["--init-iters", str(args.init_iters)]
            ep = prepare_episode(bag, ep_dir, budget=args.budget, seed=args.seed, threads=args.threads,
                                 pusher_xyz=pusher, scenario=scenario, track_args=extra)
            entry.update(status="prepared", frames=len(ep), gaussians=int(ep.positions.shape[1]),
                         pusher_id=ep.pusher_id)
            done += 1
        index["episodes"].append(entry)
        (out / INDEX_FILE).write_text(yaml.safe_dump(index, sort_keys=False))
    print(f"vidyn make-trainset: {done} episode(s) prepared, {len(jobs) - done} kept -> {out}")
    return 0
