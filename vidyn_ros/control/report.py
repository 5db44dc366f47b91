"""The closed loop's record, read back from its bag (ROS-free): an MP4 (camera | scene render | predicted future |
goal | plan, per frame), a PNG summary (tracking error, prediction error vs horizon, MPC cost, distance to goal over
time) and the numbers behind them. ``vidyn demo`` calls :func:`mpc_report` on the bag of the ``sim-mpc`` graph.

Ground truth (/vidyn/sim/object_poses) is used here for scoring only: the distance of every object to its goal (the
goal file's moves resolved against the true start poses) and the tracking error.
"""

from __future__ import annotations

from bisect import bisect_right
from pathlib import Path
from typing import Any

import numpy as np

from vidyn_ros import msgs

PLAN_TOPIC = "/vidyn/mpc/plan"
PREDICTION_TOPIC = "/vidyn/mpc/prediction"
RENDER = "/vidyn/mpc/render/{cam}"
SCENE_RENDER = "/vidyn/scene/render/{cam}"
GOAL = "/vidyn/goal/image/{cam}"


def _latest(stamps: list[int], values: list[Any], t: int) -> Any:
    i = bisect_right(stamps, t) - 1
    return values[i] if i >= 0 else None


def read_loop(bag: str | Path, cam: str = "cam0") -> dict[str, Any]:
    """Everything the report needs from a closed-loop bag, keyed by header stamp [ns]."""
    from vidyn_ros.bags import BagReader
    from vidyn_ros.scene_bag import scene_objects

    out: dict[str, Any] = {"frames": {}, "scene": {}, "pred": {}, "goal": None, "plans": {}, "predictions": {},
                           "poses": {}, "scene_objects": {}, "costs": [], "cmds": {}}
    with BagReader(bag) as r:
        have = set(r.topics)

        def images(topic: str) -> dict[int, np.ndarray]:
            if topic not in have:
                return {}
            return {msgs.stamp_to_ns(m.header): msgs.image_to_array(m) for _t, _mt, _s, m in r.decoded([topic])}

        out["frames"] = images(msgs.color_topic(cam))
        out["scene"] = images(SCENE_RENDER.format(cam=cam))
        out["pred"] = images(RENDER.format(cam=cam))
        goals = images(GOAL.format(cam=cam))
        out["goal"] = next(iter(goals.values()), None)
        if PLAN_TOPIC in have:
            for _t, _mt, _s, m in r.decoded([PLAN_TOPIC]):
                out["plans"][msgs.stamp_to_ns(m.header)] = np.array(
                    [[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in m.poses])
        if PREDICTION_TOPIC in have:
            for _t, _mt, _s, m in r.decoded([PREDICTION_TOPIC]):
                if m.markers:
                    out["predictions"][msgs.stamp_to_ns(m.markers[0].header)] = {
                        int(mk.id): np.array([[p.x, p.y, p.z] for p in mk.points]) for mk in m.markers}
        if msgs.OBJECT_POSES_TOPIC in have:
            out["poses"] = dict(r.object_poses())
        if "/vidyn/scene/objects" in have:
            out["scene_objects"] = dict(scene_objects(r))
        if msgs.CMD_TOPIC in have:
            for _t, _mt, _s, m in r.decoded([msgs.CMD_TOPIC]):
                out["cmds"][msgs.stamp_to_ns(m.header)] = msgs.twist_from_msg(m)[0]
        if msgs.DIAGNOSTICS_TOPIC in have:
            for _t, _mt, _s, m in r.decoded([msgs.DIAGNOSTICS_TOPIC]):
                for st in m.status:
                    if st.name.strip("/").split("/")[-1] == "mpc" and st.message == "planning":
                        v = {kv.key: kv.value for kv in st.values}
                        out["costs"].append((msgs.stamp_to_ns(m.header), float(v.get("cost", "nan")),
                                             float(v.get("cost_zero", "nan")), float(v.get("solve_s", "nan"))))
    return out


def goal_positions(goal_file: str | Path, first_poses: list[Any], pusher_id: int | None) -> dict[int, np.ndarray]:
    """True object id -> goal position (xy): moved objects per the goal file (nearest true start within 6 cm),
    every other object where it started."""
    from vidyn_ros.control.goal import load_goal_moves

    starts = {p.object_id: np.asarray(p.position[:2], dtype=np.float64) for p in first_poses
              if p.object_id != pusher_id}
    goal = dict(starts)
    for m in load_goal_moves(goal_file):
        k = min(starts, key=lambda i: np.linalg.norm(starts[i] - np.asarray(m.from_xy)))
        if np.linalg.norm(starts[k] - np.asarray(m.from_xy)) <= 0.06:
            goal[k] = np.asarray(m.to_xy, dtype=np.float64)
    return goal


def prediction_errors(data: dict[str, Any], dt: float) -> list[float]:
    """Mean over plans and objects of |predicted centroid after h control periods - the scene's tracked centroid at
    that time| for h = 1..H [m] (the scene's own later estimate is the reference: same ids, no ground truth)."""
    so = data["scene_objects"]
    stamps = sorted(so)
    errs: dict[int, list[float]] = {}
    for t0, paths in data["predictions"].items():
        for oid, path in paths.items():
            for h in range(1, len(path)):
                t = t0 + round(h * dt * 1e9)
                i = bisect_right(stamps, t) - 1
                if i < 0 or stamps[-1] < t or abs(stamps[i] - t) > 20_000_000:
                    continue
                obj = next((o for o in so[stamps[i]] if o.object_id == oid), None)
                if obj is not None:
                    errs.setdefault(h, []).append(float(np.linalg.norm(path[h] - obj.position)))
    return [float(np.mean(errs[h])) for h in sorted(errs)]


def mpc_report(bag: str | Path, out: str | Path, goal_file: str | Path, cam: str = "cam0", dt: float = 0.1,
               fps: float = 30.0, tolerance: float = 0.02) -> dict[str, Any]:
    """Write OUT/closed_loop.mp4, OUT/closed_loop.png, OUT/closed_loop_frame.png (a frame of the video, for the
    README) and return the closed loop's metrics."""
    data = read_loop(bag, cam)
    out = Path(out)
    poses = data["poses"]
    if not poses or not data["frames"]:
        from vidyn_ros.errors import BagError

        raise BagError(f"{bag}: no camera frames or ground truth to report the closed loop on")
    pstamps = sorted(poses)
    pusher_id = max(p.object_id for p in poses[pstamps[0]])  # the pusher is the last id (docs/scenarios.md)
    goal = goal_positions(goal_file, poses[pstamps[0]], pusher_id)
    dist_t = []
    for s in pstamps:
        by = {p.object_id: p.position[:2] for p in poses[s]}
        dist_t.append(max(float(np.linalg.norm(by[k] - g)) for k, g in goal.items()))
    final = {k: float(np.linalg.norm({p.object_id: p.position[:2] for p in poses[pstamps[-1]]}[k] - g))
             for k, g in goal.items()}
    success = max(final.values()) <= tolerance
    from vidyn_ros.scene_bag import tracking_from_bag

    try:
        tr = tracking_from_bag(bag)
    except Exception:  # a run without scene objects still gets the other panels
        tr = None
    pred_err = prediction_errors(data, dt)
    video, frame_png = _video(data, goal, pusher_id, out, fps)
    summary_png = _summary(data, tr, pred_err, pstamps, dist_t, out / "closed_loop.png", tolerance)
    solve = [c[3] for c in data["costs"] if np.isfinite(c[3])]
    start = {p.object_id: p.position[:2] for p in poses[pstamps[0]]}
    moved = [k for k in goal if np.linalg.norm(goal[k] - start[k]) > 1e-6]
    return {
        "success": success, "tolerance_m": tolerance,
        "final_distance_m": {str(k): round(v, 4) for k, v in final.items()},
        "start_distance_m": round(dist_t[0], 4), "moved_objects": moved,
        "plans": len(data["plans"]), "commands": len(data["cmds"]),
        "solve_s_median": round(float(np.median(solve)), 3) if solve else None,
        "cost_first_last": [round(data["costs"][0][1], 4), round(data["costs"][-1][1], 4)] if data["costs"] else None,
        "prediction_error_vs_horizon_m": [round(e, 4) for e in pred_err],
        "video": str(video), "summary_png": str(summary_png), "frame_png": str(frame_png),
    }  # fmt: skip


def _tile(img: np.ndarray | None, w: int, h: int, label: str) -> np.ndarray:
    import cv2

    if img is None:
        t = np.full((h, w, 3), 40, np.uint8)
    else:
        a = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
        t = cv2.resize(a[..., :3].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    t = t.copy()
    cv2.rectangle(t, (0, 0), (w, 16), (0, 0, 0), -1)
    cv2.putText(t, label, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return t


def _plan_tile(data: dict[str, Any], goal: dict[int, np.ndarray], pusher_id: int, t: int, size: int) -> np.ndarray:
    """Table plane seen from above: true object trails so far, goal positions (x, 2 cm circle), the current plan."""
    from PIL import Image, ImageDraw

    from vidyn_ros.control.plots import path_panel

    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    pst = sorted(s for s in data["poses"] if s <= t)
    trails: dict[int, list[np.ndarray]] = {}
    for s in pst:
        for p in data["poses"][s]:
            trails.setdefault(p.object_id, []).append(p.position[:2])
    cols = {1: (214, 39, 40), 2: (31, 119, 180), 3: (44, 160, 44)}
    paths = [(np.array(v), (120, 120, 120) if k == pusher_id else cols.get(k, (148, 103, 189)), 2)
             for k, v in trails.items()]
    plan_stamps = sorted(data["plans"])
    plan = _latest(plan_stamps, [data["plans"][s] for s in plan_stamps], t)
    if plan is not None:
        paths.append((plan[:, :2], (255, 127, 14), 3))
    marks = [(float(g[0]), float(g[1]), "x", (0, 0, 0)) for g in goal.values()]
    circles = [(float(g[0]), float(g[1]), 0.02, (0, 150, 0)) for g in goal.values()]
    path_panel(d, (0, 0, size, size), paths, marks, circles, lim=0.25, title="plan (orange), paths, goals x")
    return np.asarray(img)


def _video(data: dict[str, Any], goal: dict[int, np.ndarray], pusher_id: int, out: Path, fps: float
           ) -> tuple[Path, Path]:
    import cv2

    from vidyn_ros.errors import OutputError

    W, H = 320, 240
    stamps = sorted(data["frames"])
    keys = {k: sorted(data[k]) for k in ("scene", "pred")}
    path = out / "closed_loop.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (5 * W, H + 20))
    if not writer.isOpened():
        raise OutputError(f"{path}: cannot open an MP4 writer (OpenCV without the mp4v codec?)")
    frame_png = out / "closed_loop_frame.png"
    pick = stamps[min(len(stamps) - 1, int(len(stamps) * 0.6))]  # a frame in mid-push for the README
    try:
        for t in stamps:
            tiles = [
                _tile(data["frames"][t], W, H, "camera cam0"),
                _tile(_latest(keys["scene"], [data["scene"][k] for k in keys["scene"]], t), W, H,
                      "live Gaussian scene (render)"),
                _tile(_latest(keys["pred"], [data["pred"][k] for k in keys["pred"]], t), W, H,
                      "predicted end of plan"),
                _tile(data["goal"], W, H, "goal image"),
                _tile(_plan_tile(data, goal, pusher_id, t, H), W, H, "plan (table from above)"),
            ]
            row = np.concatenate(tiles, axis=1)
            bar = np.full((20, row.shape[1], 3), 255, np.uint8)
            cmd = _latest(sorted(data["cmds"]), [data["cmds"][k] for k in sorted(data["cmds"])], t)
            text = f"t = {t / 1e9:5.2f} s (sim)   command {0 if cmd is None else np.linalg.norm(cmd):.3f} m/s"
            cv2.putText(bar, text, (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            img = np.concatenate([bar, row], axis=0)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if t == pick:
                from PIL import Image

                Image.fromarray(img).save(frame_png)
    finally:
        writer.release()
    return path, frame_png


def _summary(data: dict[str, Any], tr: Any, pred_err: list[float], pstamps: list[int], dist_t: list[float],
             path: Path, tolerance: float) -> Path:
    from PIL import Image, ImageDraw

    from vidyn_ros.control.plots import line_panel, save

    img = Image.new("RGB", (1000, 640), (255, 255, 255))
    d = ImageDraw.Draw(img)
    series = []
    if tr is not None:
        for k in sorted(tr.errors):
            series.append((f"object {k}", [s / 1e9 for s in tr.stamps[k]], (tr.errors[k] * 1000).tolist()))
    line_panel(d, (0, 0, 500, 320), series, "scene tracking error vs ground truth [mm]", "sim time [s]", ymin=0.0)
    line_panel(d, (500, 0, 1000, 320), [("mean over plans and objects", list(range(1, len(pred_err) + 1)),
                                         [e * 1000 for e in pred_err])],
               "prediction error vs horizon [mm] (vs the scene's later estimate)", "control periods ahead", ymin=0.0)
    costs = data["costs"]
    line_panel(d, (0, 320, 500, 640), [("plan cost", [c[0] / 1e9 for c in costs], [c[1] for c in costs]),
                                       ("cost of doing nothing", [c[0] / 1e9 for c in costs], [c[2] for c in costs])],
               "MPC cost per replan (1 = no progress at the goal's start)", "sim time [s]", ymin=0.0)
    line_panel(d, (500, 320, 1000, 640), [("largest object-goal distance", [s / 1e9 for s in pstamps],
                                           [x * 100 for x in dist_t])],
               f"distance to goal [cm] (ground truth; line: {tolerance * 100:.0f} cm)", "sim time [s]",
               hline=tolerance * 100, ymin=0.0)
    return save(img, path)
