"""`vidyn track BAG --out DIR`: per-Gaussian trajectories of a recorded episode (pseudo labels for dynamics)."""

from __future__ import annotations

import argparse

NAME = "track"
HELP = "track a recorded bag into per-Gaussian trajectories (positions, rotations, object ids)"
DESCRIPTION = (
    "Read the synchronised RGB-D frames of BAG (camera poses from its rig_calibration.yaml), segment them with the "
    "deployed weight-free segmenter (as `vidyn launch sim` / `rig` do; --masks bag takes the bag's /<cam>/mask "
    "instead), initialise the Gaussian scene on the first frame and track it through the bag. Writes "
    "DIR/trajectories.npz (positions [T,N,3], "
    "quats [T,N,4] wxyz, object_ids [N], particle_ids [N] (stable), stamps [T] ns; NaN before a Gaussian existed), "
    "DIR/scene_first.ply and DIR/scene_last.ply (3DGS PLY with object_id), DIR/render_vs_observed.png and "
    "DIR/track.json."
)
ORDER = 41


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("bag", help="bag directory, or .mcap / .db3 file (with rig_calibration.yaml next to it)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--frames", type=ranged(int, "[0, inf)"), default=0, help="stop after this many frames (0 = all)")
    p.add_argument("--cameras", nargs="+", default=None, help="camera names (default: every camera in the bag)")
    p.add_argument("--budget", type=ranged(int, "[1, 10000000]"), default=5000, help="number of Gaussians")
    p.add_argument("--init-iters", type=ranged(int, "[0, 100000]"), default=60,
                   help="optimisation iterations at initialisation")
    p.add_argument("--iters-per-frame", type=ranged(int, "[0, 10000]"), default=0,
                   help="per-Gaussian refinement iterations per frame")
    p.add_argument("--masks", choices=["segmenter", "bag"], default="segmenter",
                   help="instance masks: segmenter (default) = the deployed weight-free segmenter run on the bag's "
                        "frames, with the shipped graph's settings; bag = the bag's /<cam>/mask topics (e.g. a "
                        "recording of the segmenter node or of an external mask source). A simulated bag's true masks "
                        "(/vidyn/sim/<cam>/mask) are ground truth and never used")
    p.add_argument("--downscale", type=ranged(int, "[1, 64]"), default=None,
                   help="integer image downscale for fusion and rendering (default: the shipped graph's, 4 at 640x480 "
                        "and scaled with the image width: 1 at 160x120)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=ranged(int, "[0, 1024]"), default=1,
                   help="CPU threads for torch and the render (0 = torch's default; 1 is robust on shared cores)")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import sys
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from vidyn_ros import msgs
    from vidyn_ros.bags import BagReader
    from vidyn_ros.errors import BagError, OutputError
    from vidyn_ros.render import set_cpu_threads
    from vidyn_ros.scene.deployed import DeployedSegmenter, scene_config
    from vidyn_ros.scene.evaluate import render_psnr, side_by_side, versions
    from vidyn_ros.scene.pipeline import SceneEstimator
    from vidyn_ros.scene.ply import save_ply

    set_cpu_threads(args.threads)
    out = Path(args.out)
    est: SceneEstimator | None = None  # made on the first frame: the deployed settings depend on the image size
    segment = DeployedSegmenter() if args.masks == "segmenter" else None
    seg_ms: list[float] = []
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
        if segment is None:
            missing = [msgs.mask_topic(c) for c in cams if msgs.mask_topic(c) not in reader.topics]
            if missing:
                raise BagError(f"{args.bag}: no {missing[0]} in this bag (--masks bag needs the cameras' instance "
                               "masks; the default --masks segmenter makes them)")
        total = reader.topics[msgs.color_topic(cams[0])].count
        frames = reader.multiview_frames(cameras=cams, masks=segment is None)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{out}: cannot create output directory ({err.strerror})") from None
        for frame in tqdm(frames, desc="track", unit="frame", total=args.frames or total):
            if est is None:
                width = frame.views[0].camera.width
                overrides = {"budget": args.budget, "init_iters": args.init_iters,
                             "iters_per_frame": args.iters_per_frame, "device": args.device, "seed": args.seed}
                if args.downscale is not None:
                    overrides["downscale"] = args.downscale
                est = SceneEstimator(scene_config(width, **overrides))
            if segment is not None:
                frame = segment(frame)
                seg_ms.append(segment.last_ms)
            up = est.update(frame)
            times.append(up.seconds)
            if up.initialised:
                save_ply(up.gaussians, out / "scene_first.ply")
                first_psnr = render_psnr(est, frame)[0]
            last = frame
            n += 1
            if args.frames and n >= args.frames:
                break
    if last is None or est is None:
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
        "masks": args.masks, "scene_config": dataclasses.asdict(est.cfg),
        "segmenter_config": dataclasses.asdict(segment.config) if segment is not None and segment.config else None,
        "segmenter_ms_mean": float(np.mean(seg_ms)) if seg_ms else None,
    }
    (out / "track.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"tracked {n} frames, {report['gaussians']} Gaussians, objects {report['objects']}; "
          f"PSNR first {first_psnr:.2f} dB, last {last_psnr:.2f} dB -> {out}/trajectories.npz")
    return 0
