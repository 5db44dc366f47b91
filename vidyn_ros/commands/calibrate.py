"""`vidyn calibrate`: every camera's camera-to-world pose from one capture of the ChArUco target -> calibration YAML."""

from __future__ import annotations

import argparse

NAME = "calibrate"
HELP = "estimate the rig's camera poses from one capture of the ChArUco board (writes rig_calibration.yaml)"
DESCRIPTION = (
    "Estimate every camera's camera-to-world pose from one capture of a ChArUco board lying on the table; the board "
    "defines the world frame (origin at its centre on the table surface, z up, x along the board's columns). The "
    "capture comes from exactly one source: --scenario (the simulated rig; the result is compared with the truth), "
    "--bag (the first synchronised frame of a rosbag2 bag), --recordings (RealSense SDK recordings) or --serials "
    "(connected RealSense cameras). Writes the calibration YAML, a PNG with the detected and reprojected corners, and "
    "a JSON report (errors per camera, command line, versions)."
)
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", help="simulated rig scenario with the board (e.g. 'calibration')")
    src.add_argument("--bag", help="rosbag2 bag with the rig's camera topics")
    src.add_argument("--recordings", nargs="+", metavar="FILE", help="RealSense recordings (.db3/.bag), one per camera")
    src.add_argument("--serials", nargs="+", metavar="SERIAL", help="serial numbers of connected RealSense cameras")
    p.add_argument("--names", nargs="+", help="camera names for --recordings/--serials (default cam0, cam1, ...)")
    p.add_argument("--target", help="target YAML (default: the shipped board, config/scenarios/calibration.yaml)")
    p.add_argument("--out", default="rig_calibration.yaml", help="calibration YAML to write (default: %(default)s)")
    p.add_argument("--min-corners", type=ranged(int, "[4, 10000]"), default=6,
                   help="fewest ChArUco corners per camera (default 6)")
    p.add_argument("--skip-failed", action="store_true", help="leave out cameras that do not see the board")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0,
                   help="seed of the simulated rig (--scenario)")


def _capture_sim(args):
    import numpy as np

    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.sim import SimRig

    with SimRig(load_scenario(args.scenario), seed=args.seed, render_scale=1.0, masks=False) as rig:
        truth = {c.name: c.T_world_cam for c in rig.cameras}
        frame = rig.observe().frame
    # Perception must not see the true poses: strip them (the estimate fills them in).
    for v in frame.views:
        v.camera = v.camera.with_pose(np.eye(4))
    return frame, truth, {}


def _capture_bag(args):
    from vidyn_ros.bags import BagReader
    from vidyn_ros.errors import BagError

    with BagReader(args.bag) as reader:
        for frame in reader.multiview_frames(masks=False):
            return frame, None, {}
    raise BagError(f"{args.bag}: no complete multi-view frame (color + depth + camera_info of every camera)")


def _capture_realsense(args):
    from vidyn_ros.errors import CameraError
    from vidyn_ros.rig.realsense import CameraDisconnectedError, RealSenseCamera, RealSenseConfig
    from vidyn_ros.types import MultiViewFrame

    sources = args.recordings or args.serials
    names = args.names or [f"cam{i}" for i in range(len(sources))]
    if len(names) != len(sources):
        raise CameraError(f"--names gives {len(names)} names for {len(sources)} cameras")
    views, serials = [], {}
    for name, src in zip(names, sources, strict=True):
        cfg = RealSenseConfig(name=name, recording=src) if args.recordings else RealSenseConfig(name=name, serial=src)
        with RealSenseCamera(cfg) as cam:
            frame = None
            for _ in range(30):  # live cameras: let auto exposure settle for a second; recordings: the first frame
                try:
                    frame = cam.read() or frame
                except CameraDisconnectedError:
                    break  # a recording shorter than that: keep the last frame it gave
                if frame is not None and args.recordings:
                    break
            if frame is None:
                raise CameraError(f"{name}: no frame from {cfg.source()}")
            views.append(frame)
            if cam.serial:
                serials[name] = cam.serial
    return MultiViewFrame(stamp_ns=views[0].stamp_ns, views=views), None, serials


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from vidyn_ros.errors import OutputError
    from vidyn_ros.rig.calibration import CharucoTarget, calibrate_rig, draw_detections, load_target, pose_errors
    from vidyn_ros.rig.calibration_io import save_rig_calibration

    target = load_target(args.target) if args.target else CharucoTarget()
    if args.scenario:
        frame, truth, serials = _capture_sim(args)
    elif args.bag:
        frame, truth, serials = _capture_bag(args)
    else:
        frame, truth, serials = _capture_realsense(args)
    estimates = calibrate_rig(frame, target, min_corners=args.min_corners, skip_failed=args.skip_failed)

    out = Path(args.out)
    save_rig_calibration(out, {n: e.T_world_cam for n, e in estimates.items()}, serials,
                         comment=f"written by: vidyn calibrate {' '.join(sys.argv[2:])}")
    png = draw_detections(frame, estimates, target, out.with_name(out.stem + "_detections.png"))
    report = {"command": sys.argv, "versions": _versions(), "target": target.__dict__, "cameras": {}}
    head = f"{'camera':<10} {'corners':>7} {'rms px':>7}"
    print(head + (f" {'rot err deg':>11} {'trans err mm':>12}" if truth else ""))
    for name, e in estimates.items():
        row = {"corners": len(e.corner_ids), "rms_px": e.rms_px, "translation": e.T_world_cam[:3, 3].tolist()}
        line = f"{name:<10} {len(e.corner_ids):>7} {e.rms_px:>7.3f}"
        if truth and name in truth:
            rot, trans = pose_errors(e.T_world_cam, truth[name])
            row.update(rotation_error_deg=rot, translation_error_mm=trans * 1000)
            line += f" {rot:>11.3f} {trans * 1000:>12.2f}"
        report["cameras"][name] = row
        print(line)
    missing = [v.camera.name for v in frame.views if v.camera.name not in estimates]
    if missing:
        print(f"not calibrated (target not seen): {', '.join(missing)}")
    report_path = out.with_name(out.stem + "_report.json")
    try:
        report_path.write_text(json.dumps(report, indent=2, default=str))
    except OSError as err:
        raise OutputError(f"{report_path}: cannot write report ({err.strerror or err})") from None
    print(f"wrote {out}, {png}, {report_path}")
    return 0


def _versions() -> dict:
    from vidyn_ros.provenance import software_versions

    return software_versions("opencv-python-headless", "numpy", "mujoco", "pyrealsense2")
