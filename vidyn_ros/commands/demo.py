"""`vidyn demo`: the closed loop on the simulated rig through the node graph, end to end: cameras -> segmenter ->
live Gaussian scene -> visual MPC -> /vidyn/cmd -> the pusher, on a few seconds of the `push` scenario.

A readable pipeline of steps:

1. check inputs (scenario YAML, goal file, output directory) before anything starts,
2. run the `sim-mpc` graph in this process (sim_rig -> DDS -> segmenter -> scene -> mpc -> sim_rig, and the
   recorder) for ``--seconds`` of sim time, in lockstep: the rig steps once the mpc node's command for the frame is
   out, so every frame is tracked and planned on and the run is deterministic. ``--no-mpc``: the `sim` graph with a
   scripted pusher command source instead (the rig in lockstep with the scene),
3. closed loop (``mpc``): closed_loop.mp4 (camera | scene render | predicted end of plan | goal | plan per frame),
   closed_loop.png (tracking error, prediction error vs horizon, MPC cost, distance to goal) from the bag,
   compare the scene's outputs in the bag with the bag's cameras and ground truth: scene.png (observed | render per
   camera, last frame) and tracking.png (tracked centroids vs ground truth on the table plane),
4. summarise the bag (topics, counts, rates), the scene and closed-loop metrics to summary.txt / summary.json,
5. draw a contact sheet (color | depth | mask per camera) of the last frame from the bag.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

NAME = "demo"
HELP = "run the closed loop (sim rig -> scene -> visual MPC -> pusher) through the nodes; write a bag, video, report"
DESCRIPTION = __doc__.split("\n\n")[0]
ORDER = 10
HOLD_AFTER_GOAL_S = 0.5  # sim time the closed loop goes on once the mpc node says the goal is reached [s]
SIM_GRAPH_OUT = "out/sim/"  # where config/graphs/sim.yaml puts its files
MPC_GRAPH_OUT = "out/sim_mpc/"  # ... and config/graphs/sim-mpc.yaml


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--scenario", default="push", help="scenario name or YAML path (default push)")
    p.add_argument("--seconds", type=ranged(float, "(0, 3600]"), default=None,
                   help="sim time to run [s] (default 6 with the MPC, 3 with --no-mpc)")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0)
    p.add_argument("--scale", type=ranged(float, "(0, 4]"), default=None,
                   help="render scale (0.25 -> 160x120; default: 160x120 with the MPC, 640x480 with --no-mpc)")
    p.add_argument("--no-mpc", action="store_true",
                   help="no closed loop: the sim graph with a scripted pusher (--push-speed along +x)")
    p.add_argument("--backend", default="auto",
                   help="the MPC's dynamics backend: physics, learned, constant_velocity, static; auto (default) = "
                        "physics where vidyn_ros.physics is installed, else static")
    p.add_argument("--goal", default="", help="goal-poses YAML for the MPC (default config/goals/push_demo.yaml)")
    p.add_argument("--push-speed", type=ranged(float, "[-1, 1]"), default=0.1,
                   help="pusher speed along +x [m/s] (default 0.1)")
    p.add_argument("--realtime", action="store_true", help="pace the rig to wall time (default: as fast as possible)")
    p.add_argument("--domain-id", type=ranged(int, "[0, 232]"), default=None, help="ROS_DOMAIN_ID for the graph")
    p.add_argument("--no-scene", action="store_true",
                   help="leave the segmenter and scene nodes out (rig and recorder only)")
    p.add_argument("--scene-width", type=ranged(int, "[8, 4096]"), default=160,
                   help="the scene's working image width: the node downscales the rig's images to about this "
                        "(default 160, i.e. 160x120 from 640x480)")


# ------------------------------------------------------------------------------------------------------------- steps
def check_inputs(args: argparse.Namespace) -> tuple[Any, Path]:
    """Step 1: fail fast with one line (ConfigError / OutputError) before ROS starts."""
    from vidyn_ros.errors import ConfigError, OutputError
    from vidyn_ros.rig.scenario import load_scenario

    if args.seconds is None:
        args.seconds = 3.0 if args.no_mpc else 6.0
    if args.scale is None:
        args.scale = 1.0 if args.no_mpc else 0.25
    if not args.no_mpc:
        if args.no_scene:
            raise ConfigError("--no-scene needs --no-mpc (the MPC plans on the scene)")
        from vidyn_ros.control.goal import load_goal_moves
        from vidyn_ros.paths import config_dir

        args.goal = args.goal or str(config_dir() / "goals" / "push_demo.yaml")
        load_goal_moves(args.goal)  # one-line ConfigError for a missing / malformed goal file
        if args.backend == "auto":
            import importlib.util

            args.backend = "physics" if importlib.util.find_spec("vidyn_ros.physics") else "static"
    scn = load_scenario(args.scenario)
    if not scn.cameras:
        raise ConfigError(f"{args.scenario}: scenario has no cameras")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vidyn_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{out}: output directory is not writable ({err.strerror})") from None
    return scn, out


def make_commander(ctx: Any, speed: float) -> list[Any]:
    """A scripted command source: pushes along +x at ``speed`` m/s, 20 Hz in sim time (stands in for the MPC)."""
    from rclpy.node import Node

    from vidyn_ros import msgs
    from vidyn_ros.nodes import _ros

    class Commander(Node):
        def __init__(self) -> None:
            super().__init__("demo_commander", context=ctx,
                             parameter_overrides=_ros.parameter_overrides({"use_sim_time": True}))
            self.pub = self.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), msgs.CMD_TOPIC, _ros.reliable_qos())
            self.sent = 0
            self.create_timer(0.05, self.tick)

        def tick(self) -> None:
            msg = msgs.twist_stamped_msg([speed, 0.0, 0.0], [0.0, 0.0, 0.0], _ros.now_ns(self))
            _ros.publish_cdr(self.pub, msg, msgs.TWIST_STAMPED)
            self.sent += 1

        def summary(self) -> dict[str, Any]:
            return {"commands_sent": self.sent, "velocity": [speed, 0.0, 0.0]}

    return [Commander()]


def run_sim_graph(args: argparse.Namespace, scn: Any, out: Path) -> dict[str, Any]:
    """Step 2: the `sim` graph with the demo's parameters; a progress bar follows the rig's frames and the scene."""
    from tqdm import tqdm

    from vidyn_ros import graph, msgs
    from vidyn_ros.scene_bag import GAUSSIANS_TOPIC

    n_frames = max(1, round(args.seconds * scn.fps))
    mpc = not args.no_mpc
    spec = graph.load_graph("sim" if args.no_mpc else "sim-mpc")
    graph_out = SIM_GRAPH_OUT if args.no_mpc else MPC_GRAPH_OUT
    overrides = [
        f"sim_rig.scenario={args.scenario}",
        f"sim_rig.seed={args.seed}",
        f"sim_rig.render_scale={float(args.scale)}",
        f"sim_rig.realtime={str(bool(args.realtime)).lower()}",
        f"sim_rig.max_frames={n_frames}",
        "recorder.overwrite=true",  # compression: the recorder's default, zstd (as in `vidyn launch sim`)
    ]
    if args.no_scene:
        spec.nodes = [n for n in spec.nodes if n.node not in ("segmenter", "scene")]
    else:
        from vidyn_ros.scene.deployed import segmenter_config

        width = max(1, round(scn.cameras[0].width * args.scale))  # the images the rig publishes
        # (segmenter and scene take the rig's cameras from the calibration file the rig writes: no camera list here)
        overrides += [
            # synchronous mode: the scene sees every frame (with the MPC: the rig waits for the command of each frame)
            f"sim_rig.lockstep_topic={msgs.CMD_TOPIC if mpc else GAUSSIANS_TOPIC}",
            f"segmenter.stride={segmenter_config(width).stride}",  # the graph's stride is for 640 px wide images
            f"scene.image_downscale={max(1, round(width / args.scene_width))}",
            f"scene.seed={args.seed}",
        ]
    if mpc:
        overrides += [f"mpc.backend={args.backend}", f"mpc.goal_file={args.goal}", f"mpc.seed={args.seed}",
                      f"mpc.scenario={args.scenario}"]
    spec = graph.apply_overrides(spec, overrides)
    # Every file the graph's nodes read or write under out/sim/ (the bag, the rig calibration the rig writes and the
    # recorder and the scene node read, ...) lives in the demo's directory instead, whatever nodes the graph has.
    for node in spec.nodes:
        for key, value in node.parameters.items():
            if isinstance(value, str) and value.startswith(graph_out):
                node.parameters[key] = str(out / value.removeprefix(graph_out))
    bar = tqdm(total=n_frames, desc="sim rig frames", unit="frame", file=sys.stderr)
    scene_t: dict[str, float] = {}  # wall times: first scene update done (initialised), latest update
    reached: dict[str, int] = {}  # rig frame at which the mpc node said the goal is reached
    hold = round(HOLD_AFTER_GOAL_S * scn.fps)

    def progress(nodes: list[Any]) -> bool:
        rig = next((n for n in nodes if n.get_name() == "sim_rig"), None)
        scene = next((n for n in nodes if n.get_name() == "scene"), None)
        if scene is not None:
            updates = int(getattr(scene, "updates", 0))
            if updates and updates != scene_t.get("updates"):
                scene_t.setdefault("initialised", time.monotonic())
                scene_t.update(updates=updates, last=time.monotonic())
            post = f"scene updates {updates}" if updates else "scene initialising"
            planner = next((n for n in nodes if n.get_name() == "mpc"), None)
            if planner is not None and planner.plan is not None:
                post += f", plans {planner.plans}, cost {planner.plan.cost:.3f}"
            if planner is not None and rig is not None:
                if planner.reached:
                    reached.setdefault("frame", rig.frames)
                    post += ", goal reached"
                else:
                    reached.pop("frame", None)
            bar.set_postfix_str(post, refresh=False)
        if rig is not None and rig.frames > bar.n:
            bar.update(rig.frames - bar.n)
        # the goal reached (by the scene's estimate) and held for a moment: the rest of the run would only film the
        # block standing still, so the demo ends here
        return "frame" in reached and rig is not None and rig.frames - reached["frame"] >= hold

    t0 = time.monotonic()
    try:
        commander = (lambda ctx: make_commander(ctx, args.push_speed)) if args.no_mpc else None
        result = graph.run_graph(spec, until=progress, domain_id=args.domain_id, extra_nodes=commander)
    finally:
        bar.close()
    if result.reason == "signal":  # Ctrl-C: stop here (the bag is closed), no report from a cut-short run
        raise KeyboardInterrupt
    if result.fatal:
        from vidyn_ros.errors import VidynError

        name, why = next(iter(result.fatal.items()))
        raise VidynError(f"node {name}: {why}")
    reason = result.reason
    if reason == "done" and "frame" in reached:
        reason = f"goal reached at frame {reached['frame']} (the mpc node's scene estimate), held {hold} frames"
    info: dict[str, Any] = {"wall_s": round(time.monotonic() - t0, 2), "reason": reason,
                            "nodes": result.summaries}
    if scene_t:
        n = int(scene_t["updates"])
        span = scene_t["last"] - scene_t["initialised"]
        info["scene"] = {"updates": n, "initialised_after_s": round(scene_t["initialised"] - t0, 1),
                         "tracking_rate_hz": round((n - 1) / span, 2) if n > 1 and span > 0 else None}
    return info


def scene_report(out: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Step 3: the scene's outputs in the bag vs the bag's cameras and ground truth -> scene.png, tracking.png and
    the scene metrics (centroid error, PSNR of the last renders, #Gaussians, update rate)."""
    from vidyn_ros.scene_bag import draw_scene_views, draw_tracking, last_render_views, scene_status, tracking_from_bag

    bag = out / "bag"
    tr = tracking_from_bag(bag)
    metrics = tr.metrics()
    mean_mm = (metrics["centroid_error_mean_m"] or float("nan")) * 1000
    draw_tracking(tr, out / "tracking.png",
                  title=f"vidyn demo: scene centroids vs ground truth, {tr.frames} frames, mean error {mean_mm:.2f} mm")
    stamp, views = last_render_views(bag)
    draw_scene_views(stamp, views, out / "scene.png",
                     title=f"vidyn demo: observed | live Gaussian scene render, t = {stamp / 1e9:.2f} s (sim)")
    status = scene_status(bag)
    metrics.update({
        "psnr_last_frame_db": {c: round(v["psnr_db"], 2) for c, v in views.items()},
        "gaussians": int(status["gaussians"]) if "gaussians" in status else None,
        "update_s_median": status.get("update_s_median"),
        **(run.get("scene") or {}),
    })  # fmt: skip
    return metrics

def summarise(out: Path, run: dict[str, Any], argv: list[str], scene: dict[str, Any] | None,
              loop: dict[str, Any] | None = None) -> dict[str, Any]:
    """Step 4: bag summary + ground-truth motion + scene metrics -> summary.json and summary.txt."""
    import numpy as np

    from vidyn_ros.bags import BagReader, bag_summary, format_summary
    from vidyn_ros.commands.make_dataset import software_versions

    bag = out / "bag"
    summary = bag_summary(bag)
    with BagReader(bag) as r:
        poses = list(r.object_poses()) if "/vidyn/sim/object_poses" in r.topics else []
    motion = {}
    if len(poses) >= 2:
        first, last = poses[0][1], poses[-1][1]
        for a, b in zip(first, last, strict=False):
            motion[str(a.object_id)] = round(float(np.linalg.norm(b.position - a.position)), 4)
    doc = {
        "command": " ".join(argv),
        "versions": software_versions(),
        "run": run,
        "ground_truth_displacement_m": motion,
        "scene": scene,
        "closed_loop": loop,
        "bag": summary,
    }
    (out / "summary.json").write_text(json.dumps(doc, indent=2, default=str))
    lines = [
        f"vidyn demo: {doc['command']}",
        f"wall time: {run['wall_s']} s; stopped: {run['reason']}",
        *(f"node {k}: {json.dumps(v, default=str)}" for k, v in run["nodes"].items() if k != "recorder"),
        "object displacement over the run (ground truth) [m]: "
        + ", ".join(f"id {k}: {v:.3f}" for k, v in motion.items()),
        *scene_lines(scene),
        *loop_lines(loop),
        "",
        format_summary(summary),
    ]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    return doc


def scene_lines(scene: dict[str, Any] | None) -> list[str]:
    """summary.txt lines for the scene metrics."""
    if not scene:
        return ["scene: not run"]
    if "error" in scene:
        return [f"scene: FAILED: {scene['error']}"]
    err = scene.get("centroid_error_mean_m")
    per = ", ".join(f"id {k}: {v * 1000:.2f}" for k, v in scene["centroid_error_mean_per_object_m"].items())
    psnr = scene["psnr_last_frame_db"]
    return [
        f"scene: {scene['updates'] if 'updates' in scene else scene['frames']} updates, "
        f"{scene['gaussians']} Gaussians, initialised after {scene.get('initialised_after_s')} s (wall), tracking "
        f"{scene.get('tracking_rate_hz')} Hz, median update {scene.get('update_s_median')} s",
        f"scene centroid error vs ground truth over {scene['frames']} frames [mm]: mean "
        f"{err * 1000 if err is not None else float('nan'):.2f}, max "
        f"{(scene['centroid_error_max_m'] or float('nan')) * 1000:.2f} (per object: {per})",
        "scene render PSNR, last frame [dB]: " + ", ".join(f"{c} {v:.1f}" for c, v in psnr.items()),
    ]


def loop_report(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Step 3 (closed loop): closed_loop.mp4 / .png / _frame.png and the loop's metrics from the bag."""
    from vidyn_ros.control.report import mpc_report

    loop = mpc_report(out / "bag", out, args.goal)
    loop["backend"] = args.backend
    return loop


def loop_lines(loop: dict[str, Any] | None) -> list[str]:
    """summary.txt lines for the closed loop."""
    if not loop:
        return []
    if "error" in loop:
        return [f"closed loop: FAILED: {loop['error']}"]
    final = ", ".join(f"id {k}: {v * 100:.1f}" for k, v in loop["final_distance_m"].items())
    pred = ", ".join(f"{e * 1000:.1f}" for e in loop["prediction_error_vs_horizon_m"])
    return [
        f"closed loop ({loop['backend']} backend): {'SUCCESS' if loop['success'] else 'not reached'}: every block "
        f"within {loop['tolerance_m'] * 100:.0f} cm of its goal at the end (ground truth) -> final distances [cm]: "
        f"{final} (the moved block started {loop['start_distance_m'] * 100:.1f} cm away)",
        f"closed loop: {loop['plans']} plans, {loop['commands']} commands, median replanning time "
        f"{loop['solve_s_median']} s, cost first / last plan {loop['cost_first_last']}",
        f"prediction error vs horizon (1..H control periods) [mm]: {pred or 'n/a'}",
    ]


def contact_sheet(out: Path) -> Path:
    """Step 5: the last complete multi-view frame in the bag -> contact_sheet.png (color | depth | mask)."""
    from vidyn_ros.bags import BagReader
    from vidyn_ros.errors import BagError
    from vidyn_ros.viz import contact_sheet as draw

    last = None
    with BagReader(out / "bag") as r:
        for frame in r.multiview_frames():
            last = frame
    if last is None:
        raise BagError(f"{out / 'bag'}: no complete multi-view frame recorded")
    return draw(last, out / "contact_sheet.png", title=f"vidyn demo, t = {last.stamp_ns / 1e9:.2f} s (sim)")


def run(args: argparse.Namespace) -> int:
    from vidyn_ros.errors import VidynError

    scn, out = check_inputs(args)
    print(f"[1/5] scenario {scn.name!r}: {len(scn.cameras)} cameras, {scn.fps:g} fps; output {out}", flush=True)
    if args.no_mpc:
        what = "sim_rig -> DDS -> recorder" + ("" if args.no_scene else " + segmenter -> scene, in lockstep")
    else:
        what = (f"sim_rig -> segmenter -> scene -> mpc ({args.backend} backend, goal {args.goal}) -> sim_rig, "
                "in lockstep")
    print(f"[2/5] running the {'sim' if args.no_mpc else 'sim-mpc'} graph for {args.seconds:g} s of sim time ({what})",
          flush=True)
    run_info = run_sim_graph(args, scn, out)
    scene = loop = None
    if not args.no_mpc:
        print("[3/5] closed loop: video and summary from the bag", flush=True)
        try:
            loop = loop_report(args, out)
        except VidynError as err:
            print(f"vidyn demo: closed loop: {err}", file=sys.stderr, flush=True)
            loop = {"error": str(err)}
    if not args.no_scene:
        print(f"[3/5] {'' if args.no_mpc else 'scene: '}comparing the scene with the cameras and the ground truth",
              flush=True)
        try:
            scene = scene_report(out, run_info)
        except VidynError as err:  # e.g. the scene never initialised: still write the summary and contact sheet
            print(f"vidyn demo: scene: {err}", file=sys.stderr, flush=True)
            scene = {"error": str(err), **(run_info.get("scene") or {})}
    print("[4/5] summarising the bag", flush=True)
    doc = summarise(out, run_info, ["vidyn", *sys.argv[1:]], scene, loop)
    print("[5/5] drawing the contact sheet", flush=True)
    sheet = contact_sheet(out)
    counts = doc["bag"]["topics"]
    print(f"\nbag:           {out / 'bag'}  ({doc['bag']['message_count']} messages on {len(counts)} topics, "
          f"{doc['bag']['duration_s']:.2f} s)")
    print(f"summary:       {out / 'summary.txt'}  (+ summary.json)")
    print(f"contact sheet: {sheet}")
    if scene is not None:
        if "error" not in scene:
            print(f"scene:         {out / 'scene.png'} (observed | render), {out / 'tracking.png'} (vs ground truth)")
        for line in scene_lines(scene):
            print(f"               {line}")
    if loop is not None:
        if "error" not in loop:
            print(f"closed loop:   {loop['video']} (camera | scene | predicted | goal | plan per frame), "
                  f"{loop['summary_png']} (tracking, prediction, cost, distance to goal)")
        for line in loop_lines(loop):
            print(f"               {line}")
    print(f"wall time:     {run_info['wall_s']} s")
    failed = (scene is not None and "error" in scene) or (loop is not None and "error" in loop)
    return 1 if failed else 0
