"""Soak test of the live scene: the `sim` graph (sim_rig -> segmenter -> scene, as `vidyn launch sim` runs it) for a
long time, the scenario replayed in a loop, objects leaving and re-entering the cameras' view.

What it runs: config/graphs/sim.yaml without the recorder (a 30-minute bag is not the point), the rig at 640x480 in
lockstep with the scene (every frame is tracked, the run does not depend on machine load), `loop: true` (every 20 s of
sim time the world is reset: the blocks jump back to freshly randomised starts, as when someone resets the table), and
a scripted pusher (/vidyn/cmd) that pushes the red block, drives off the table out of every camera's view, waits there
and comes back. The scenario is `push` with the pusher's workspace widened so that it can leave the view
(written next to the results).

What it measures, per scene update (the scene node's SceneEstimator.update is wrapped; nothing else changes):
process RSS, Gaussian count, update time, and against the simulator's truth (/vidyn/sim/object_poses, evaluation
only): scene objects associated with true objects by centroid (Hungarian, 5 cm gate) -> id switches (a true object's
scene id changes), ghosts (a scene object seen in this frame that is no true object, or a second one on the same
true object; held objects are the scene's memory of unseen ones and are not ghosts), true objects in view that the
scene does not track.

    nice -n 10 .venv/bin/python bench/soak.py --minutes 30          # bench/results/soak.{json,png,md}

soak.json holds the summary, the last 500 events and the per-update rows thinned to at most 600 (every n-th), so
that it stays small enough to commit; the PNG plots every row (`--replot soak.json` redraws it from the thinned
rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")

EPISODE_S = 20.0  # the soak scenario's duration: the world is reset this often (sim time)
GATE_M = 0.05  # scene object <-> true object association gate (centroid to body centre)


def soak_scenario(out: Path) -> Path:
    """push.yaml with a 20 s episode and a pusher that may leave the table (and the cameras' view)."""
    import yaml

    from vidyn_ros.rig.scenario import scenario_path

    doc = yaml.safe_load(Path(scenario_path("push")).read_text())
    doc["name"] = "soak_push"
    doc["description"] = "push with a pusher that can leave the cameras' view (bench/soak.py)"
    doc["duration_s"] = EPISODE_S
    doc["pusher"]["workspace"] = [-1.2, -1.2, 1.2, 1.2]
    path = out / "soak_push.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def pusher_command(t_s: float) -> tuple[float, float, float]:
    """The scripted pusher over one 20 s episode (sim time): push the red block along +x, drive off the table to
    x = -1.0 (out of every view), wait, come back towards the blocks."""
    t = t_s % EPISODE_S
    if t < 4.0:
        return (0.1, 0.0, 0.0)  # push the red block
    if t < 9.0:
        return (-0.3, 0.0, 0.0)  # leave: from x ~ 0.25 to ~ -1.0
    if t < 13.0:
        return (0.0, 0.0, 0.0)  # out of view
    if t < 17.0:
        return (0.25, 0.0, 0.0)  # come back
    return (0.0, 0.0, 0.0)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class Recorder:
    """Collects one row per scene update (called from the scene node's worker thread) and ground truth by stamp."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.truth: dict[int, list[Any]] = {}
        self.pending: list[tuple[float, Any]] = []  # (wall time, SceneUpdate) waiting for the truth of its stamp
        self.rows: list[dict[str, float]] = []
        self.owner: dict[int, int] = {}  # true id -> scene id covering it in the last frame it was covered
        self.switches = 0
        self.events: list[dict] = []  # id switches and ghosts, for diagnosis (soak.json)
        self.t0 = time.monotonic()

    def on_truth(self, stamp: int, poses: list[Any]) -> None:
        with self.lock:
            self.truth[stamp] = poses
            while len(self.truth) > 300:
                self.truth.pop(next(iter(self.truth)))
            self._flush()

    def on_update(self, up: Any) -> None:
        if up.initialised:  # the first frame builds the scene (seconds): not a tracking update
            return
        with self.lock:
            self.pending.append((time.monotonic(), up))
            self._flush()

    def _flush(self) -> None:
        keep = []
        for t_wall, up in self.pending:
            if up.stamp_ns in self.truth:
                self._score(t_wall, up, self.truth[up.stamp_ns])
            elif time.monotonic() - t_wall < 30.0:
                keep.append((t_wall, up))
        self.pending = keep

    def _score(self, t_wall: float, up: Any, truth: list[Any]) -> None:
        from scipy.optimize import linear_sum_assignment

        seen = [o for o in up.objects if up.visible.get(o.object_id, False)]
        gt = list(truth)
        ghosts = 0
        if seen and gt:
            d = np.linalg.norm(np.array([o.position for o in seen])[:, None] - np.array([p.position for p in gt])[None],
                               axis=2)
            rows, cols = linear_sum_assignment(np.where(d < GATE_M, d, 1e3))
            matched = {(r, c) for r, c in zip(rows, cols, strict=True) if d[r, c] < GATE_M}
            for r, c in matched:
                true_id, scene_id = gt[c].object_id, seen[r].object_id
                if self.owner.get(true_id, scene_id) != scene_id:
                    self.switches += 1
                    self.events.append({"sim_s": up.stamp_ns * 1e-9, "switch": [true_id, self.owner[true_id],
                                                                                 scene_id]})
                self.owner[true_id] = scene_id
            ghosts = len(seen) - len(matched)
            lone = sorted(set(range(len(seen))) - {r for r, _ in matched})
            if lone:  # what the ghosts are: nearest true object and distance
                self.events.append({"sim_s": up.stamp_ns * 1e-9, "ghosts": [
                    [seen[r].object_id, np.round(seen[r].position, 3).tolist(), gt[int(np.argmin(d[r]))].object_id,
                     round(float(d[r].min()), 3)] for r in lone]})
        else:
            ghosts = len(seen)
        self.rows.append({
            "wall_s": t_wall - self.t0, "sim_s": up.stamp_ns * 1e-9, "rss_mb": rss_mb(),
            "gaussians": float(len(up.gaussians)), "update_ms": up.seconds * 1e3,
            "objects": float(len(up.objects)), "visible": float(len(seen)), "ghosts": float(ghosts),
            "id_switches": float(self.switches),
            "removed": up.stats.get("removed_objects", 0.0), "reassociated": up.stats.get("reassociated_objects", 0.0),
        })
        if up.stats.get("removed_objects") or up.stats.get("reassociated_objects"):
            self.events.append({"sim_s": up.stamp_ns * 1e-9, "removed": up.stats.get("removed_objects", 0.0),
                                "reassociated": up.stats.get("reassociated_objects", 0.0)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock duration")
    p.add_argument("--out", default="bench/results", help="directory for soak.{json,png,md}")
    p.add_argument("--domain-id", type=int, default=97)
    p.add_argument("--replot", metavar="SOAK_JSON", help="only redraw soak.png from the rows of SOAK_JSON")
    args = p.parse_args(argv)
    if args.replot:
        doc = json.loads(Path(args.replot).read_text())
        every = int(doc["summary"].get("rows_every", 1))
        print(plot(doc["rows"], Path(args.replot).parent / "soak.png", window=max(3, 201 // every)))
        return 0

    from rclpy.node import Node

    from vidyn_ros import graph, msgs
    from vidyn_ros.nodes import _ros
    from vidyn_ros.scene_bag import GAUSSIANS_TOPIC

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vidyn_soak_"))  # the run's scenario and calibration: not results
    scenario = soak_scenario(work)
    calib = work / "rig_calibration.yaml"
    spec = graph.load_graph("sim")
    spec.nodes = [n for n in spec.nodes if n.node != "recorder"]
    spec = graph.apply_overrides(spec, [
        f"sim_rig.scenario={scenario}", "sim_rig.max_frames=-1", "sim_rig.loop=true", "sim_rig.realtime=false",
        f"sim_rig.lockstep_topic={GAUSSIANS_TOPIC}", f"sim_rig.calibration_out={calib}",
        f"segmenter.calibration={calib}", f"scene.calibration={calib}", "scene.save_ply=",
    ])
    rec = Recorder()

    class Harness(Node):
        """The scripted pusher (sim time) and the ground-truth listener (evaluation only)."""

        def __init__(self, ctx: Any) -> None:
            super().__init__("soak_harness", context=ctx,
                             parameter_overrides=_ros.parameter_overrides({"use_sim_time": True}))
            self.pub = self.create_publisher(_ros.msg_class(msgs.TWIST_STAMPED), msgs.CMD_TOPIC, _ros.reliable_qos())
            self.create_subscription(_ros.msg_class(msgs.POSE_ARRAY), msgs.OBJECT_POSES_TOPIC, self.on_poses,
                                     _ros.reliable_qos(10), raw=True)
            self.create_timer(0.05, self.tick)

        def tick(self) -> None:
            now = _ros.now_ns(self)
            msg = msgs.twist_stamped_msg(list(pusher_command(now * 1e-9)), [0.0, 0.0, 0.0], now)
            _ros.publish_cdr(self.pub, msg, msgs.TWIST_STAMPED)

        def on_poses(self, raw: bytes) -> None:
            m = msgs.deserialize(bytes(raw), msgs.POSE_ARRAY)
            rec.on_truth(msgs.stamp_to_ns(m.header), msgs.object_poses_from_msg(m))

    def started(nodes: list[Any]) -> None:
        scene = next(n for n in nodes if n.get_name() == "scene")
        update = scene.estimator.update

        def recorded(frame: Any) -> Any:
            up = update(frame)
            rec.on_update(up)
            return up

        scene.estimator.update = recorded

    t_end = time.monotonic() + args.minutes * 60.0
    last_print = [0.0]

    def until(_nodes: list[Any]) -> bool:
        if time.monotonic() - last_print[0] > 60.0 and rec.rows:
            last_print[0] = time.monotonic()
            r = rec.rows[-1]
            print(f"[soak] {r['wall_s'] / 60:.1f} min, sim {r['sim_s']:.0f} s, {len(rec.rows)} updates, RSS "
                  f"{r['rss_mb']:.0f} MB, {r['gaussians']:.0f} Gaussians, update {r['update_ms']:.0f} ms, id switches "
                  f"{r['id_switches']:.0f}, ghosts {r['ghosts']:.0f}", flush=True)
        return time.monotonic() > t_end

    result = graph.run_graph(spec, until=until, domain_id=args.domain_id, on_started=started,
                             extra_nodes=lambda ctx: [Harness(ctx)])
    shutil.rmtree(work, ignore_errors=True)
    report(rec.rows, out, result.reason, args, rec.events)
    return 0


def report(rows: list[dict[str, float]], out: Path, reason: str, args: argparse.Namespace,
           events: list[dict] | None = None) -> None:
    from vidyn_ros.scene.evaluate import versions

    if not rows:
        raise SystemExit("soak: no scene update was recorded")
    t_min = np.array([r["wall_s"] for r in rows]) / 60.0
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    after = t_min >= 1.0  # flat after the first minute?
    if after.sum() < 10:
        after = np.ones_like(after)

    def slope_per_10min(y: np.ndarray) -> float:
        return float(np.polyfit(t_min[after], y[after], 1)[0] * 10.0) if after.sum() > 2 else float("nan")

    windows = np.floor(t_min / 5.0)
    per_window = [{"minutes": f"{5 * w:.0f}-{5 * w + 5:.0f}", "updates": int((windows == w).sum()),
                   "rss_mb": round(float(np.median(col["rss_mb"][windows == w])), 1),
                   "gaussians": int(np.median(col["gaussians"][windows == w])),
                   "update_ms_median": round(float(np.median(col["update_ms"][windows == w])), 1),
                   "ghost_frames": int((col["ghosts"][windows == w] > 0).sum())}
                  for w in np.unique(windows)]
    summary = {
        "command": "python " + " ".join(sys.argv), "stopped": reason, "versions": versions(),
        "load_average_at_end": os.getloadavg(), "updates": len(rows), "wall_min": round(float(t_min[-1]), 2),
        "sim_s": round(float(col["sim_s"][-1] - col["sim_s"][0]), 1),
        "episodes": int((col["sim_s"][-1] - col["sim_s"][0]) // EPISODE_S) + 1,
        "rss_mb_start": round(float(col["rss_mb"][0]), 1),
        "rss_mb_after_1min": round(float(col["rss_mb"][after][0]), 1),
        "rss_mb_end": round(float(col["rss_mb"][-1]), 1),
        "rss_mb_per_10min_after_1min": round(slope_per_10min(col["rss_mb"]), 2),
        "gaussians_min_after_1min": int(col["gaussians"][after].min()),
        "gaussians_max": int(col["gaussians"].max()), "gaussians_end": int(col["gaussians"][-1]),
        "update_ms_per_10min_after_1min": round(slope_per_10min(col["update_ms"]), 2),
        "update_ms_median": round(float(np.median(col["update_ms"])), 1),
        "id_switches": int(col["id_switches"][-1]), "ghost_frames": int((col["ghosts"] > 0).sum()),
        "ghost_frames_after_1min": int((col["ghosts"][after] > 0).sum()), "ghosts_max": int(col["ghosts"].max()),
        "objects_removed": int(col["removed"].sum()), "objects_reassociated": int(col["reassociated"].sum()),
        "per_5min": per_window,
    }
    step = max(1, -(-len(rows) // 600))  # thinned rows: the file stays small (the PNG has every row)
    summary["rows_every"] = step
    summary["events_total"] = len(events or [])
    (out / "soak.json").write_text(json.dumps(
        {"summary": summary, "events": (events or [])[-500:],
         "rows": [{k: round(v, 3) for k, v in r.items()} for r in rows[::step]]}, default=str, indent=None))
    lines = [f"Command: `{summary['command']}`", "",
             "| minutes | updates | RSS [MB] | Gaussians | update median [ms] | frames with a ghost |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {w['minutes']} | {w['updates']} | {w['rss_mb']} | {w['gaussians']} | {w['update_ms_median']} | "
              f"{w['ghost_frames']} |" for w in per_window]
    lines += ["", json.dumps({k: v for k, v in summary.items() if k not in ("per_5min", "versions")}, default=str)]
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "soak.png")
    print((out / "soak.md").read_text())


def rolling(y: np.ndarray, q: float, n: int) -> np.ndarray:
    """The q-th percentile of each window of ``n`` consecutive values (centred; shorter at the ends)."""
    h = n // 2
    return np.array([np.percentile(y[max(0, i - h):i + h + 1], q) for i in range(len(y))])


def plot(rows: list[dict[str, float]], path: Path, window: int = 201) -> Path:
    """soak.png: RSS, Gaussian count, update time (rolling median and 90th percentile over ``window`` updates: one
    update's time varies tenfold with what it does, relocalisation or maintenance, and with the machine's load) and
    id switches / ghosts / objects seen, over wall time."""
    from PIL import Image

    from vidyn_ros.viz import image_grid, line_plot

    t_min = np.array([r["wall_s"] for r in rows]) / 60.0
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    w = max(1, min(window, len(rows)))
    tmp = path.parent
    plots = [line_plot(t_min, {"RSS [MB]": col["rss_mb"]}, tmp / "_rss.png", title="process RSS [MB]",
                       xlabel="wall time [min]"),
             line_plot(t_min, {"Gaussians": col["gaussians"]}, tmp / "_g.png", title="Gaussians",
                       xlabel="wall time [min]"),
             line_plot(t_min, {"median": rolling(col["update_ms"], 50, w), "90th percentile":
                               rolling(col["update_ms"], 90, w)}, tmp / "_u.png",
                       title=f"scene update [ms], over {w} updates", xlabel="wall time [min]"),
             line_plot(t_min, {"id switches": col["id_switches"], "ghosts": col["ghosts"],
                               "objects seen": col["visible"]}, tmp / "_ids.png",
                       title="id switches (cumulative), ghosts, objects seen", xlabel="wall time [min]")]
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in plots]
    image_grid([imgs[:2], imgs[2:]], path, max_tile_width=640)
    for p in plots:
        p.unlink()
    return path


if __name__ == "__main__":
    sys.exit(main())
