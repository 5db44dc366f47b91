"""Write the model card (YAML) of a shipped learned-dynamics checkpoint from its own provenance and `vidyn eval`
results (not a test).

    .venv/bin/python bench/dynamics_model_card.py models/particle_dynamics.pt \\
        --eval bench/results/dynamics_shipped_bowling/eval.json bench/results/dynamics_shipped_cube_stack/eval.json \\
        bench/results/dynamics_shipped_push/eval.json --out models/particle_dynamics.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml


def _at(d: dict, h: int) -> float:
    return d[str(h)] if str(h) in d else d[h]  # JSON turned the horizon keys into strings


def _pick(row: dict, H: int) -> dict:
    """The row's headline numbers at horizons 1, 5 and H."""
    m = row["metrics"]
    out = {f"cd_cm_h{h}": round(100 * m["cd_m"][h - 1], 3) for h in sorted({1, min(5, H), H})}
    out.update({
        f"cd_moving_cm_h{H}": round(100 * m["cd_moving_m"][H - 1], 3),
        f"delta_avg_1_2_4cm_h{H}": round(m["delta_avg_tabletop"][H - 1], 4),
        f"delta_avg_5_10_20cm_h{H}": round(m["delta_avg_paper"][H - 1], 4),
        f"psnr_db_h{H}": round(_at(m["psnr"], H), 2),
        f"ssim_h{H}": round(_at(m["ssim"], H), 4),
    })
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--eval", nargs="*", default=[], help="eval.json files of vidyn eval runs on held-out episodes")
    p.add_argument("--row", default="", help="the eval row of this checkpoint (default: the one that lists it)")
    p.add_argument("--hardware", default="2 shared CPU cores (no GPU), torch 1 thread")
    p.add_argument("--recipe", default="config/dynamics/shipped.yaml (its header lists the make-dataset / "
                   "make-trainset commands and seeds of the training and held-out episodes)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from vidyn_ros.dynamics.checkpoint import load_checkpoint_with_info

    ckpt = Path(args.checkpoint)
    model, doc = load_checkpoint_with_info(ckpt)
    train = doc["train"]
    cfg = train.get("config", {})
    card = {
        "name": ckpt.stem,
        "file": ckpt.name,
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
        "what": "learned object-centric PointConv particle dynamics (seed 001): Gaussians as particles, one KNN, "
                "object + relational PointConv with id affinity, residual on constant velocity, per-object pose fit; "
                "action-conditioned on the pusher command (vidyn_ros.dynamics, docs/dynamics.md)",
        "load": "vidyn_ros.dynamics.load_checkpoint(path) (torch.load weights_only: no pickled code)",
        "parameters": int(sum(q.numel() for q in model.parameters())),
        "model": model.cfg.to_dict(),
        "data": {
            "scenarios": train.get("scenarios"),
            "episodes": len(train.get("episodes", [])),
            "episode_names": train.get("episodes"),
            "source": "simulated rig (MuJoCo) 640x480 x 4 cameras -> deployed segmenter masks -> scene tracking "
                      "(vidyn track): pseudo position labels; frames at 160x120 for the rendering loss; pusher "
                      "commands from /vidyn/cmd. Simulator ground truth was not used for training.",
            "training_sets": cfg.get("data"),
            "recipe": args.recipe,
        },
        "training": {
            "command": train.get("command"),
            "config": cfg,
            "steps": train.get("step"),
            "seed": cfg.get("seed"),
            "wall_time_s": train.get("wall_s"),
            "hardware": args.hardware,
            "world_size": train.get("world_size"),
            "final_loss": train.get("final_loss"),
            "versions": train.get("versions"),
        },
        "metrics": {},
    }
    for f in args.eval:
        ev = json.loads(Path(f).read_text())
        rows = ev["rows"]
        mine = next((r for r in rows if (args.row and r["name"] == args.row)
                     or any(Path(m).resolve() == ckpt.resolve() or Path(m).name == ckpt.name
                            for m in r["members"] if m.endswith(".pt"))), None)
        base = next((r for r in rows if r["members"] == ["constant_velocity"]), None)
        if mine is None:
            continue
        H = ev["horizon"]
        key = ",".join(ev.get("scenarios") or [Path(f).parent.name])

        entry = {"held_out_episodes": len(ev["test"]), "windows": ev["windows"], "horizon": H, "model": _pick(mine, H),
                 "command": ev["command"]}
        if base is not None:
            entry["constant_velocity"] = _pick(base, H)
            cd_m, cd_b = mine["metrics"]["cd_m"][H - 1], base["metrics"]["cd_m"][H - 1]
            entry[f"cd_h{H}_vs_constant_velocity"] = f"{100 * (cd_m - cd_b) / cd_b:+.1f} %"
        card["metrics"][key] = entry
    out = Path(args.out)
    out.write_text("# Model card, written by bench/dynamics_model_card.py from the checkpoint's provenance and vidyn "
                   "eval.\n" + yaml.safe_dump(card, sort_keys=False, width=118))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
