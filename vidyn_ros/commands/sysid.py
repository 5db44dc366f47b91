"""`vidyn sysid BAG --out DIR`: mass and contact parameters of the objects in a recording (∇Sim, docs/physics.md)."""

from __future__ import annotations

import argparse

NAME = "sysid"
HELP = "identify object masses and friction from a recording: gradient descent through physics + renderer"
DESCRIPTION = (
    "Build the Gaussian scene of BAG's first frame with the deployed perception (segmenter masks, the scene's "
    "settings of the shipped graph), track it through the bag, fit a rigid body to every object and identify the "
    "asked parameters by gradient descent on the pixel loss between the recording and the simulated scene rendered "
    "by the project's renderer (Newton SemiImplicit on a warp Tape + Gaussian rasterisation). Which parameters a "
    "recording identifies is decided first: mass needs a known force on the object (/vidyn/sim/applied_wrench), "
    "friction a free slide, stiffness / damping an impact; others are reported as not identifiable, with the "
    "reason. Writes DIR/sysid.json, DIR/convergence.png, DIR/landscape.png (--landscape) and DIR/final_frame.png."
)
ORDER = 46


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("bag", help="bag directory (with rig_calibration.yaml), e.g. from vidyn launch sim or make-dataset")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--params", nargs="+", default=["mass", "mu"], choices=["mass", "mu", "ke", "kd", "kf"],
                   help="parameters to identify where the recording allows (default mass mu)")
    p.add_argument("--frames", type=ranged(int, "[0, inf)"), default=0, help="use the first N frames (0 = all)")
    p.add_argument("--width", type=ranged(int, "[16, 4096]"), default=160,
                   help="working image width of the pixel loss (integer downscale of the bag's images)")
    p.add_argument("--cameras", nargs="+", default=None, help="camera names (default: every camera in the bag)")
    p.add_argument("--iterations", type=ranged(int, "[0, 10000]"), default=30,
                   help="loss + gradient evaluations of the refinement")
    p.add_argument("--polish", type=ranged(int, "[0, 10000]"), default=40,
                   help="loss evaluations of the derivative-free last stage per motion window (0 = none)")
    p.add_argument("--polish-scan", type=ranged(int, "[0, 1000]"), default=12,
                   help="one free value per window: probe N points each side of the polish's result (0 = none)")
    p.add_argument("--init", choices=["track", "pixels", "prior", "random"], default="track",
                   help="initial values: grid on the tracked paths (default), grid on the pixel loss, prior centre, "
                        "random in the prior box")
    p.add_argument("--grid", type=ranged(int, "[1, 64]"), default=15,
                   help="grid points per parameter for --init (first level)")
    p.add_argument("--max-frames", type=ranged(int, "[1, 1000]"), default=12,
                   help="rendered frames in the pixel loss (spread over the motion)")
    p.add_argument("--depth-weight", type=ranged(float, "[0, inf)"), default=0.0,
                   help="weight of the depth term of the loss (0 = colour only, as ∇Sim)")
    p.add_argument("--landscape", type=ranged(int, "[0, 200]"), default=0,
                   help="also sample the pixel loss at N values of each identified parameter around the estimate")
    p.add_argument("--threads", type=ranged(int, "[0, 1024]"), default=1, help="CPU threads for torch and the render")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0, help="scene seed")


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import sys
    from pathlib import Path

    from vidyn_ros.errors import OutputError
    from vidyn_ros.physics import build_from_scene
    from vidyn_ros.physics.recording import read_bag
    from vidyn_ros.physics.report import convergence_figure, final_frame_figure, landscape, landscape_figure
    from vidyn_ros.physics.sysid import SysidConfig, identify
    from vidyn_ros.provenance import software_versions
    from vidyn_ros.render import set_cpu_threads

    set_cpu_threads(args.threads)
    out = Path(args.out)
    rec = read_bag(args.bag, frames=args.frames, width=args.width, cameras=args.cameras, progress=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create output directory ({err.strerror})") from None
    model, binding = build_from_scene(rec.gaussians, rec.pusher_id)
    cfg = SysidConfig(params=tuple(args.params), iterations=args.iterations, init=args.init, grid=args.grid,
                      polish=args.polish, polish_scan=args.polish_scan, max_frames=args.max_frames,
                      depth_weight=args.depth_weight, seed=args.seed)
    print("physics kernels compile on first use (about 1-2 min on 2 cores, then cached in ~/.cache/warp)")
    res = identify(rec.gaussians, model, binding, rec.observation, cfg, progress=True)
    doc = {
        "command": shlex.join(["vidyn", *sys.argv[1:]]),
        "versions": software_versions("newton", "warp-lang", "torch", "numpy"),
        "bag": str(args.bag), "frames": len(rec.frame_stamps), "scene_s": round(rec.scene_seconds, 1),
        "config": cfg.__dict__ | {"params": list(cfg.params)},
        "bodies": [{"object_id": b.object_id, "shape": b.shape.kind, "size": list(b.shape.size),
                    "position": [round(float(x), 4) for x in b.position]} for b in model.bodies],
        "pusher_id": rec.pusher_id, "wrenches": len(rec.observation.wrenches),
        **res.as_dict(),
    }
    if args.landscape:
        doc["landscape"] = landscape(rec.gaussians, model, binding, rec.observation, res, cfg, args.landscape)
        landscape_figure(doc["landscape"], out / "landscape.png")
    (out / "sysid.json").write_text(json.dumps(doc, indent=2, default=float))
    convergence_figure(res.history, out / "convergence.png")
    final_frame_figure(rec.gaussians, model, binding, rec.observation, res, cfg, out / "final_frame.png")
    print(summary_table(res, model))
    print(f"-> {out}/sysid.json, convergence.png, final_frame.png" + (", landscape.png" if args.landscape else ""))
    return 0


def summary_table(res, model) -> str:
    """One line per body: identified values, or why a parameter is not identifiable."""
    lines = []
    shapes = {b.object_id: b.shape.kind for b in model.bodies}
    for a in res.identifiability:
        est = res.estimates[a.object_id]
        parts = []
        for name, v in est.items():
            if v is not None:
                unit = {"mass": " kg", "ke": " N/m", "kd": " N s/m", "kf": " N s/m"}.get(name, "")
                parts.append(f"{name} = {v:.4g}{unit}")
            else:
                parts.append(f"{name}: not identifiable ({a.reasons.get(name, '')})")
        lines.append(f"object {a.object_id} ({shapes[a.object_id]}, travels {1000 * a.travel_m:.0f} mm): "
                     + "; ".join(parts))
    return "\n".join(lines)
