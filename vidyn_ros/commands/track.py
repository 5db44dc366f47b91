"""`vidyn track BAG --out DIR`: per-Gaussian trajectories of a recorded episode (pseudo labels for dynamics)."""

from __future__ import annotations

import argparse

NAME = "track"
HELP = "track a recorded bag into per-Gaussian trajectories (positions, rotations, object ids)"
DESCRIPTION = (
    "Read the synchronised RGB-D(+mask) frames of BAG (camera poses from its rig_calibration.yaml), initialise the "
    "Gaussian scene on the first frame and track it through the bag. Writes DIR/trajectories.npz (positions [T,N,3], "
    "quats [T,N,4] wxyz, object_ids [N], particle_ids [N] (stable), stamps [T] ns; NaN before a Gaussian existed), "
    "DIR/scene_first.ply and DIR/scene_last.ply (3DGS PLY with object_id), DIR/render_vs_observed.png and "
    "DIR/track.json."
)
ORDER = 41


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="bag directory, or .mcap / .db3 file (with rig_calibration.yaml next to it)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--frames", type=int, default=0, help="stop after this many frames (0 = all)")
    p.add_argument("--cameras", nargs="+", default=None, help="camera names (default: every camera in the bag)")
    p.add_argument("--budget", type=int, default=5000, help="number of Gaussians")
    p.add_argument("--init-iters", type=int, default=60, help="optimisation iterations at initialisation")
    p.add_argument("--iters-per-frame", type=int, default=0, help="per-Gaussian refinement iterations per frame")
    p.add_argument("--downscale", type=int, default=1, help="integer image downscale (4: 640x480 -> 160x120)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch and the render (0 = torch's default; 1 is robust on shared cores)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from vidyn_ros import msgs
    from vidyn_ros.bags import BagReader
    from vidyn_ros.errors import BagError, ConfigError, OutputError
    from vidyn_ros.render import set_cpu_threads
    from vidyn_ros.scene.evaluate import render_psnr, side_by_side, versions
    from vidyn_ros.scene.pipeline import SceneConfig, SceneEstimator
    from vidyn_ros.scene.ply import save_ply

    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    set_cpu_threads(args.threads)
    out = Path(args.out)
    cfg = SceneConfig(device=args.device, budget=args.budget, init_iters=args.init_iters,
                      iters_per_frame=args.iters_per_frame, downscale=args.downscale, seed=args.seed)
    est = SceneEstimator(cfg)
    n = 0
    first_psnr = last_psnr = float("nan")
    times = []
    last = None
    with BagReader(args.bag) as reader:
        # every input check before the output directory and the progress bar: a bad bag is one line on stderr
        if reader.calibration() is None:
            raise BagError(f"{args.bag}: no rig_calibration.yaml in the bag directory (camera poses are needed)")
        cams = args.cameras or reader.camera_names()
        if not cams:
            raise BagError(f"{args.bag}: no camera topics (/<cam>/color/image_raw) in this bag")
        reader.require_topics([t for c in cams for t in (msgs.color_topic(c), msgs.depth_topic(c), msgs.info_topic(c))])
        total = reader.topics[msgs.color_topic(cams[0])].count
        frames = reader.multiview_frames(cameras=args.cameras)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{out}: cannot create output directory ({err.strerror})") from None
        for frame in tqdm(frames, desc="track", unit="frame", total=args.frames or total):
            up = est.update(frame)
            times.append(up.seconds)
            if up.initialised:
                save_ply(up.gaussians, out / "scene_first.ply")
                first_psnr = render_psnr(est, frame)[0]
            last = frame
            n += 1
            if args.frames and n >= args.frames:
                break
    if last is None:
        raise BagError(f"{args.bag}: no complete multi-view frame (color + depth + camera_info of every camera)")
    last_psnr, obs, rgb = render_psnr(est, last)
    side_by_side(obs, rgb, out / "render_vs_observed.png", [c.name for c in last.cameras])
    save_ply(est.gaussians, out / "scene_last.ply")
    traj = est.tracker.trajectories()
    np.savez_compressed(out / "trajectories.npz", **traj)
    report = {
        "command": "vidyn " + " ".join(sys.argv[1:]), "versions": versions(), "bag": str(args.bag), "frames": n,
        "gaussians": int(traj["positions"].shape[1]), "objects": sorted(int(k) for k in est.tracker.objects),
        "psnr_first_db": first_psnr, "psnr_last_db": last_psnr, "init_s": times[0],
        "update_s_mean": float(np.mean(times[1:])) if len(times) > 1 else None,
    }
    (out / "track.json").write_text(json.dumps(report, indent=2))
    print(f"tracked {n} frames, {report['gaussians']} Gaussians, objects {report['objects']}; "
          f"PSNR first {first_psnr:.2f} dB, last {last_psnr:.2f} dB -> {out}/trajectories.npz")
    return 0
