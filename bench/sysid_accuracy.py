"""Accuracy of system identification (vidyn_ros.physics.sysid) with ∇Sim's Table-1 baselines.

    python bench/sysid_accuracy.py self   [--n 10] [--protocols mass mu mass+mu] [--rows pixels track+pixels 3d]
    python bench/sysid_accuracy.py mujoco [--episodes 4] # cross-engine: MuJoCo bags through the deployed perception

**self** (self-consistent): N boxes / cylinders of random size, mass (log-uniform 0.05-1 kg) and friction (0.35-1.0)
each get a known impulse (0.5-1 m/s) on the table; the "video" is our Newton model rendered by our renderer (2
cameras, 80x60, 16 frames); identification starts from a sampling initialisation on the pixel loss over the whole
prior box (no knowledge of the truth), then L-BFGS and the derivative-free polish on the pixel loss; and as
``vidyn sysid`` does, first a fit on the tracked paths (perfect tracking: the simulated paths), then the pixel
loss. Protocols: mass only (μ known, ∇Sim Table 1), μ only, and both. Baselines: "average" (the prior box's
centre), "random" (mean error of uniform draws in the box) and the 3D-supervised fit on the true body paths (∇Sim's
"diffphysics").

**mujoco** (cross-engine): variants of config/scenarios/sysid.yaml with random masses and frictions are rendered by
the MuJoCo rig (``vidyn make-dataset``); ``vidyn sysid``'s path reads each bag (segmenter masks, tracked scene, the
applied wrenches) and identifies mass and μ of the three objects. Truth: the scenario's masses and MuJoCo's contact
friction (the larger of object and table coefficients; the table's is below every object's). Rows: the deployed
path, the average baseline, and a 3D-supervised fit on the true poses of /vidyn/sim/object_poses (oracle).

Writes bench/results/sysid/{self_consistent,mujoco}.json, table_*.md and figures (landscapes, convergence).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidyn_ros.physics import PRIOR_RANGES, PhysicsParams, ShapeSpec, build_from_scene
from vidyn_ros.physics.sysid import SysidConfig, identify, impulse_wrenches, prior_centre, render_observation

OUT = Path("bench/results/sysid")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def random_errors(name: str, truths: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Mean absolute and relative error of values drawn uniformly (log-uniformly for mass) from the prior box."""
    rng = np.random.default_rng(seed)
    lo, hi = PRIOR_RANGES[name]
    v = np.exp(rng.uniform(np.log(lo), np.log(hi), draws)) if name == "mass" else rng.uniform(lo, hi, draws)
    t = np.asarray(truths)[:, None]
    return float(np.mean(np.abs(v - t))), float(np.mean(np.abs(v - t) / t))


def summary(name: str, est: list[float], truth: list[float]) -> dict:
    e, t = np.asarray(est), np.asarray(truth)
    r = np.abs(e - t) / t
    return {"n": len(e), "mean_abs_err": float(np.mean(np.abs(e - t))), "mean_rel_err": float(np.mean(r)),
            "median_rel_err": float(np.median(r)), "max_rel_err": float(np.max(r))}


# --------------------------------------------------------------------------------------------------- self-consistent
PROTOCOLS = {"mass": ("mass",), "mu": ("mu",), "mass+mu": ("mass", "mu")}
ROWS = {"pixels": "sysid: pixel loss only (sampled init on pixels, L-BFGS, polish)",
        "track+pixels": "sysid: tracked-path init + pixel loss (the vidyn sysid default; perfect tracking here)",
        "3d": "3D supervision (true paths)"}


def self_consistent(n: int, seed: int, iterations: int, protocols: list[str] | None = None,
                    rows: list[str] | None = None) -> dict:
    from vidyn_ros.physics.synthetic import SyntheticObject, synthetic_scene
    from vidyn_ros.rig.scenario import load_scenario

    rng = np.random.default_rng(seed)
    cams = [c.scaled(1 / 8) for c in load_scenario("push").cameras[:2]]
    cases = []
    for i in range(n):
        kind = ["box", "cylinder"][i % 2]
        size = tuple(rng.uniform(0.02, 0.04, 3)) if kind == "box" else tuple(rng.uniform(0.02, 0.035, 2))
        h = size[2] if kind == "box" else size[1]
        obj = SyntheticObject(1, ShapeSpec(kind, tuple(float(s) for s in size)), (0.0, 0.0, float(h)),
                              color=tuple(rng.uniform(0.2, 0.9, 3)))
        g = synthetic_scene([obj], per_object=200, table_half=0.25, seed=i)
        model, binding = build_from_scene(g)
        mass = float(np.exp(rng.uniform(np.log(0.05), np.log(1.0))))
        mu = float(rng.uniform(0.35, 1.0))
        v0 = float(rng.uniform(0.5, 1.0))
        ang = rng.uniform(0, 2 * np.pi)
        impulse = mass * v0 * np.array([np.cos(ang), np.sin(ang), 0.0])
        true = PhysicsParams(mass=torch.tensor([mass]), mu=torch.tensor([mu]), ke=torch.tensor([2000.0]),
                             kd=torch.tensor([10.0]), kf=torch.tensor([10.0]))
        w = impulse_wrenches([(0.1, impulse, model.bodies[0].position)], duration_s=1 / 120)
        obs = render_observation(g, model, binding, true, cams, frames=16, fps=30, wrenches=w)
        case = {"case": i, "shape": kind, "size": [float(s) for s in size], "mass": mass, "mu": mu, "v0": v0,
                "fit": model.bodies[0].shape.kind, "runs": {}}
        for proto, names in ((p, PROTOCOLS[p]) for p in protocols or PROTOCOLS):
            for row, init, kw in ((r, {"pixels": "pixels"}.get(r, "track"),
                                   {"true_paths": obs.tracked} if r == "3d" else {}) for r in rows or ROWS):
                model.params = true.replace(**{p: torch.tensor([prior_centre(p)]) for p in names})
                cfg = SysidConfig(params=names, init=init, grid=(9 if init == "pixels" else 15) if len(names) == 1
                                  else (7 if init == "pixels" else 15), iterations=iterations, seed=seed + i)
                t0 = time.perf_counter()
                res = identify(g, model, binding, obs, cfg, **kw)
                est = res.estimates[1]
                case["runs"][f"{proto}/{row}"] = {"init": res.initial[1], "estimate": est,
                                                   "seconds": time.perf_counter() - t0,
                                                   "evaluations": len(res.history), "loss": res.history[-1]["loss"]}
                if i == 0 and row == "pixels" and proto == (protocols or list(PROTOCOLS))[-1]:
                    from vidyn_ros.physics.report import convergence_figure

                    convergence_figure(res.history, OUT / "convergence_self.png",
                                       title=f"self-consistent, {proto}: pixel loss and parameter change")
            print(f"case {i} {kind} m={mass:.4f} mu={mu:.3f} {proto}: " + "; ".join(
                f"{row} " + ", ".join(f"{p}={case['runs'][f'{proto}/{row}']['estimate'][p]:.7g}" for p in names)
                for row in rows or ROWS), flush=True)
        cases.append(case)
        if i == 0:  # ∇Sim Fig. 2: the loss landscape in mass (0.1x-5x) and friction
            from vidyn_ros.physics.sysid import loss_curve

            cfg = SysidConfig(params=("mass", "mu"))
            land = {}
            for p, f in (("mass", np.geomspace(0.1, 5.0, 25)), ("mu", np.linspace(0.5, 1.5, 25))):
                tv = mass if p == "mass" else mu
                vals = (tv * f).tolist()
                land[p] = {"true": tv, "values": vals,
                           "loss": loss_curve(g, model, binding, obs, true, p, 0, vals, cfg)}
            (OUT / "landscape_self.json").write_text(json.dumps(land, indent=2))
            from vidyn_ros.physics.report import landscape_figure

            landscape_figure({k: {**v, "estimate": v["true"], "object_id": 1} for k, v in land.items()},
                             OUT / "landscape_self.png")
    out = {"cases": cases}
    tab = {}
    for proto in protocols or PROTOCOLS:
        for p in proto.split("+"):
            t = [c[p] for c in cases]
            tab[f"{proto}:{p}"] = {
                **{ROWS[r]: summary(p, [c["runs"][f"{proto}/{r}"]["estimate"][p] for c in cases], t)
                   for r in rows or ROWS},
                "average (prior centre)": summary(p, [prior_centre(p)] * len(t), t),
                "random (uniform in the prior box)": dict(zip(("mean_abs_err", "mean_rel_err"), random_errors(p, t),
                                                              strict=True)),
            }
    out["table"] = tab
    return out


# --------------------------------------------------------------------------------------------------- MuJoCo
def mujoco(episodes: int, seed: int, iterations: int, keep: bool) -> dict:
    import yaml

    from vidyn_ros.physics.recording import read_bag
    from vidyn_ros.rig.scenario import scenario_path

    base = yaml.safe_load(scenario_path("sysid").read_text())
    rng = np.random.default_rng(seed)
    work = Path("out/sysid_bench")  # bags (~50 MB each) stay out of the repository
    work.mkdir(parents=True, exist_ok=True)
    objects = []
    for e in range(episodes):
        doc = json.loads(json.dumps(base))
        truth = {}
        for k, o in enumerate(doc["objects"]):
            o["mass"] = float(np.exp(rng.uniform(np.log(0.08), np.log(0.6))))
            o["friction"] = float(rng.uniform(0.3, 0.8))
            truth[k + 1] = {"name": o["name"], "mass": o["mass"], "mu": max(o["friction"], 0.2)}
        for ev in doc["events"]:
            k = [o["name"] for o in doc["objects"]].index(ev["object"])
            j = np.asarray(ev["impulse"], dtype=float)
            v0 = float(rng.uniform(0.6, 1.0))
            ev["impulse"] = [float(x) for x in j / np.linalg.norm(j) * v0 * doc["objects"][k]["mass"]]
            truth[k + 1]["v0"] = v0
        doc["name"] = f"sysid_{e}"
        scn = work / f"sysid_{e}.yaml"
        scn.write_text(yaml.safe_dump(doc, sort_keys=False))
        bag_dir = work / f"sysid_{e}"
        if not (bag_dir / "episode_0000" / "metadata.yaml").exists():
            subprocess.run([sys.executable, "-m", "vidyn_ros.cli", "make-dataset", str(scn), "--episodes", "1",
                            "--seed", str(seed + e), "--out", str(bag_dir), "--overwrite"], check=True)
        bag = bag_dir / "episode_0000"
        t0 = time.perf_counter()
        rec = read_bag(bag, with_truth=True)
        scene_s = time.perf_counter() - t0
        model, binding = build_from_scene(rec.gaussians, rec.pusher_id)
        # match scene objects (segmenter ids) to true objects by position at the first frame (evaluation only)
        true0 = {p.object_id: p.position for p in rec.truth[0]}
        match = {}
        for b in model.bodies:
            tid = min(true0, key=lambda t: np.linalg.norm(true0[t][:2] - b.position[:2]))
            match[b.object_id] = tid
        rows = {}
        for row in ("deployed", "3d_true_states"):
            cfg = SysidConfig(params=("mass", "mu"), iterations=iterations, init="track", grid=9)
            kw = {}
            if row == "3d_true_states":
                paths = {}
                for b in model.bodies:
                    tid = match[b.object_id]
                    paths[b.object_id] = np.array([next(p.position for p in fr if p.object_id == tid)
                                                   for fr in rec.truth])
                kw["true_paths"] = paths
            t0 = time.perf_counter()
            res = identify(rec.gaussians, model, binding, rec.observation, cfg, progress=False, **kw)
            rows[row] = {"estimates": res.estimates, "seconds": time.perf_counter() - t0,
                         "identifiability": res.as_dict()["identifiability"]}
            if e == 0 and row == "deployed":
                from vidyn_ros.physics.report import convergence_figure, final_frame_figure, landscape, landscape_figure

                convergence_figure(res.history, OUT / "convergence_mujoco.png",
                                   title="MuJoCo bag, deployed path: pixel loss and parameter change (3 windows)")
                final_frame_figure(rec.gaussians, model, binding, rec.observation, res, cfg,
                                   OUT / "final_frame_mujoco.png")
                land = landscape(rec.gaussians, model, binding, rec.observation, res, cfg, 15)
                (OUT / "landscape_mujoco.json").write_text(json.dumps(land, indent=2))
                landscape_figure(land, OUT / "landscape_mujoco.png")
        for b in model.bodies:
            t = truth[match[b.object_id]]
            entry = {"episode": e, "scene_id": b.object_id, "true_id": match[b.object_id], **t,
                     "fitted_shape": b.shape.kind, "scene_s": scene_s}
            for row, r in rows.items():
                entry[row] = r["estimates"][b.object_id]
            objects.append(entry)
            print(f"episode {e} {t['name']}: true m={t['mass']:.3f} mu={t['mu']:.2f}; deployed "
                  f"{entry['deployed']}; 3d {entry['3d_true_states']}", flush=True)
        if not keep:
            import shutil

            shutil.rmtree(bag_dir, ignore_errors=True)
    tab = {}
    for p in ("mass", "mu"):
        ok = [o for o in objects if o["deployed"].get(p) is not None]
        t = [o[p] for o in ok]
        tab[p] = {
            "sysid (deployed path: segmenter, tracked scene, pixels)": summary(p, [o["deployed"][p] for o in ok], t),
            "3D supervision (true poses, oracle)": summary(p, [o["3d_true_states"][p] for o in ok], t),
            "average (prior centre)": summary(p, [prior_centre(p)] * len(t), t),
            "random (uniform in the prior box)": dict(zip(("mean_abs_err", "mean_rel_err"), random_errors(p, t),
                                                          strict=True)),
        }
    return {"objects": objects, "table": tab}


def table_md(tab: dict, title: str) -> str:
    lines = [f"{title}\n", "| parameter | approach | n | mean abs. err. | mean rel. err. | median rel. | max rel. |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, rows in tab.items():
        for name, s in rows.items():
            cells = [f"{s[k]:.3g}" if k in s else "-" for k in ("mean_abs_err", "mean_rel_err", "median_rel_err",
                                                               "max_rel_err")]
            lines.append(f"| {key} | {name} | {s.get('n', '-')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["self", "mujoco"])
    ap.add_argument("--n", type=int, default=10, help="self: objects / initialisations")
    ap.add_argument("--episodes", type=int, default=4, help="mujoco: episodes (3 objects each)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), help="self: protocols (default: all)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), help="self: approaches (default: all)")
    ap.add_argument("--keep-bags", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if args.part == "self":
        doc = self_consistent(args.n, args.seed, args.iterations, args.protocols, args.rows)
        name, title = "self_consistent", "Self-consistent (video of our own Newton model, ∇Sim's setting)"
    else:
        doc = mujoco(args.episodes, args.seed, args.iterations, args.keep_bags)
        name, title = "mujoco", "Cross-engine (MuJoCo bags, deployed perception)"
    doc = {"command": shlex.join(["python", *sys.argv]), "wall_s": round(time.perf_counter() - t0, 1),
           "load_avg_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "versions": {m: __import__(m).__version__ for m in ("warp", "newton", "torch")}, **doc}
    (OUT / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float))
    md = table_md(doc["table"], title)
    (OUT / f"table_{name}.md").write_text(md)
    print(md)
    print(f"-> {OUT}/{name}.json ({doc['wall_s']} s)")
    return 0 if all(math.isfinite(v.get("mean_rel_err", 0)) for r in doc["table"].values() for v in r.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
