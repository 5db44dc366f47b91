"""The ablation table of seed 001 (Tables 1-2) on our data: train every row x seed with `vidyn train`, score them
with `vidyn eval` (not a test; hours of CPU: run it niced in the background).

Rows are the base config with one change each (the paper's ablations), plus constant velocity:

    full (dual + HEM)        the base config
    No O-Centric             model.network.object_centric=false (one plain PointConv per layer)
    O-Centric, no P.Fit      model.pose_fit=false
    Soft ID                  model.soft_ids=true (cross-view vote fractions instead of one-hot ids)
    rendering loss only      loss.position=0
    position loss only       loss.render=0
    dual loss, uniform       hem=false

Finished runs (RUNS/<row>_s<seed>/model.pt) are kept; an interrupted one resumes from its checkpoint.

    nice -n 10 .venv/bin/python bench/dynamics_ablation.py --config config/dynamics/bowling.yaml \\
        --test out/dyn/data/test/bowling --seeds 0 1 2 --runs out/dyn/runs/ablation \\
        --out bench/results/dynamics_ablation_bowling
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROWS: dict[str, list[str]] = {
    "full (dual + HEM)": [],
    "No O-Centric": ["model.network.object_centric=false"],
    "O-Centric, no P.Fit": ["model.pose_fit=false"],
    "Soft ID": ["model.soft_ids=true"],
    "rendering loss only": ["loss.position=0"],
    "position loss only": ["loss.render=0"],
    "dual loss, uniform": ["hem=false"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="base training config (the full model)")
    p.add_argument("--test", nargs="+", required=True, help="held-out prepared episodes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), help="subset of the rows (names as above)")
    p.add_argument("--runs", required=True, help="directory for the training runs")
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run (KEY=VALUE)")
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--out", required=True, help="evaluation output directory")
    p.add_argument("--eval-only", action="store_true", help="do not train; evaluate the finished runs")
    p.add_argument("--train-only", action="store_true", help="train the missing runs, do not evaluate")
    args = p.parse_args(argv)
    vidyn = [sys.executable, "-m", "vidyn_ros.cli"]
    runs = Path(args.runs)
    timings = {}
    for name in args.rows:
        if name not in ROWS:
            p.error(f"unknown row {name!r} (known: {list(ROWS)})")
        for seed in args.seeds:
            run = runs / f"{slug(name)}_s{seed}"
            if (run / "model.pt").is_file() or args.eval_only:
                continue
            cmd = [*vidyn, "train", args.config, "--out", str(run), "--resume", "--no-progress", "--set",
                   f"seed={seed}"]
            for o in ROWS[name] + args.set:
                cmd += ["--set", o]
            print(f"[{time.strftime('%H:%M:%S')}] {name} seed {seed}: {' '.join(cmd[2:])}", flush=True)
            t0 = time.monotonic()
            subprocess.run(cmd, check=True)
            timings[f"{slug(name)}_s{seed}"] = round(time.monotonic() - t0, 1)
    if args.train_only:
        return 0
    cmd = [*vidyn, "eval", "--test", *args.test, "--horizon", str(args.horizon), "--stride", str(args.stride),
           "--out", args.out, "--row", "constant velocity=constant_velocity"]
    for name in args.rows:
        members = [str(runs / f"{slug(name)}_s{s}" / "model.pt") for s in args.seeds]
        members = [m for m in members if Path(m).is_file()]
        if members:
            cmd += ["--row", f"{name}={','.join(members)}"]
    print(f"[{time.strftime('%H:%M:%S')}] eval: {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=True)
    out = Path(args.out)
    walls = {}
    for run in sorted(runs.glob("*/model.pt")):
        from vidyn_ros.dynamics.checkpoint import read_checkpoint

        walls[run.parent.name] = json.loads(read_checkpoint(run)["train"]).get("wall_s")
    (out / "ablation_runs.json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": ROWS,
                                                        "seeds": args.seeds, "train_wall_s": walls,
                                                        "this_call_s": timings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
