"""Ingest benchmark: 4 cameras at 640x480 -> synchronised MultiViewFrames, and the segmenter's per-frame time.

Measures
1. RealSense recordings: four recordings (made from the simulated `push` rig with pyrealsense2's software_device +
   recorder) played in real time through the same code as the `realsense` node (CameraSupervisor: pipeline,
   rs.align, pairing) into the MultiViewSynchronizer.
   - rate: complete MultiViewFrames per second,
   - latency: MultiViewFrame ready minus the moment the SDK handed over the *first* of its four views (so it includes
     align, the wait for the other cameras, and synchronisation). Recordings carry synthetic timestamps, so this is
     measured from SDK delivery, not from the exposure; with cameras in the host clock domain (global time, as the
     node configures them) the frame stamp is that instant plus the transport delay.
2. rosbag2 bag (MCAP): the same frames as CDR messages read with BagReader, decoded and synchronised by the
   TopicSynchronizer as fast as possible: rate, and per-set latency from feeding its first message to ready.
3. Segmenter: InstanceSegmenter.segment per MultiViewFrame (4 views) at 640x480 and 160x120 [ms], with the mean IoU
   against the simulator's masks; a PNG (color | true mask | predicted mask per camera) is written next to the JSON.

Usage:  .venv/bin/python bench/ingest.py [--frames 45] [--out bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "osmesa")


def render(frames: int, scale: float) -> list:
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.sim import SimRig

    with SimRig(load_scenario("push"), seed=0, render_scale=scale) as rig:
        rig.set_pusher_velocity([0.1, 0.0, 0.0])
        return [rig.step().frame for _ in range(frames)]


def bench_recordings(frames: list, tmp: Path) -> dict:
    from vidyn_ros.rig.realsense import CameraSupervisor, RealSenseConfig, record_views
    from vidyn_ros.rig.sync import MultiViewSynchronizer

    cams = [v.camera for v in frames[0].views]
    paths = dict(zip((c.name for c in cams), record_views(frames, tmp), strict=True))

    lock = threading.Lock()
    first_arrival: dict[int, float] = {}  # stamp -> earliest SDK delivery of a view with that stamp
    latencies: list[float] = []
    ready_t: list[float] = []
    sync = MultiViewSynchronizer([c.name for c in cams], slop_ns=10_000_000)
    sup: CameraSupervisor

    def on_frame(name, f):
        arrival = sup.cameras[name].last_arrival_s
        with lock:
            first_arrival[f.stamp_ns] = min(first_arrival.get(f.stamp_ns, arrival), arrival)
            sync.set_camera_info(name, f.camera)
            sync.add(name, "color", f.stamp_ns, f.color)
            out = sync.add(name, "depth", f.stamp_ns, f.depth)
            now = time.perf_counter()
            for mv in out:
                t_first = min(first_arrival.pop(v.stamp_ns, now) for v in mv.views)
                latencies.append(now - t_first)
                ready_t.append(now)

    sup = CameraSupervisor([RealSenseConfig(name=c.name, recording=str(paths[c.name])) for c in cams], on_frame)
    t0 = time.perf_counter()
    sup.start()
    while time.perf_counter() - t0 < len(frames) / 30 + 10:
        if all(st.state == "disconnected" for st in sup.status.values()):
            break
        time.sleep(0.05)
    sup.stop()
    delivered = {n: st.frames for n, st in sup.status.items()}
    rate = (len(ready_t) - 1) / (ready_t[-1] - ready_t[0]) if len(ready_t) > 1 else 0.0
    return {"source": "4 RealSense recordings, real-time playback", "size": f"{cams[0].width}x{cams[0].height}",
            "recorded_frames": len(frames), "delivered_per_camera": delivered, "multiview_frames": len(ready_t),
            "rate_hz": rate, "latency_ms_median": 1e3 * float(np.median(latencies)) if latencies else None,
            "latency_ms_p95": 1e3 * float(np.percentile(latencies, 95)) if latencies else None,
            "sync": sync.stats.as_dict()}


def bench_bag(frames: list, tmp: Path) -> dict:
    from vidyn_ros import msgs
    from vidyn_ros.bags import BagReader, BagWriter
    from vidyn_ros.rig.sync import TopicSynchronizer

    bag = tmp / "bag"
    with BagWriter(bag, storage="mcap") as w:
        for f in frames:
            for topic, msgtype, msg, stamp in msgs.rig_frame_messages(f, include_ground_truth=False):
                w.write(topic, msgtype, msg, stamp)
    cams = [v.camera.name for v in frames[0].views]
    sync = TopicSynchronizer(cams, slop_ns=10_000_000)
    topics = list(sync.topics())
    latencies = []
    first_fed: dict[int, float] = {}
    n = 0
    t0 = time.perf_counter()
    with BagReader(bag) as r:
        for topic, msgtype, stamp, cdr in r.messages(topics):
            first_fed.setdefault(stamp, time.perf_counter())
            out = sync.add_message(topic, msgtype, cdr)
            now = time.perf_counter()
            for mv in out:
                latencies.append(now - first_fed.pop(mv.stamp_ns, now))
                n += 1
    dt = time.perf_counter() - t0
    return {"source": "rosbag2 MCAP, read + decode + sync as fast as possible",
            "size": f"{frames[0].views[0].camera.width}x{frames[0].views[0].camera.height}",
            "multiview_frames": n, "rate_hz": n / dt, "latency_ms_median": 1e3 * float(np.median(latencies)),
            "latency_ms_p95": 1e3 * float(np.percentile(latencies, 95)), "sync": sync.sync.stats.as_dict()}


def bench_segmenter(frames: list, png: Path | None = None, stride: int = 1) -> dict:
    from vidyn_ros.rig.segmentation import InstanceSegmenter, SegmenterConfig, episode_metrics

    seg = InstanceSegmenter(SegmenterConfig(stride=stride))
    seg.segment(frames[0])  # warm-up: imports, first plane fit
    seg.reset()
    times, pred, gt = [], [], []
    for f in frames:
        r = seg.segment(f)
        times.append(r.timings_ms["total"])
        pred.append(r.masks)
        gt.append([v.mask for v in f.views])
    m = episode_metrics(pred, gt)
    if png is not None:
        from vidyn_ros.viz import colorize_mask, image_grid

        rows = [[v.color, colorize_mask(g), colorize_mask(p)] for v, g, p in zip(frames[-1].views, gt[-1], pred[-1],
                                                                                  strict=True)]
        image_grid(rows, png)
    size = f"{frames[0].views[0].camera.width}x{frames[0].views[0].camera.height}"
    return {"size": size, "stride": stride, "frames": len(frames), "ms_median": float(np.median(times)),
            "ms_p95": float(np.percentile(times, 95)), "mean_iou": m["mean_iou"], "id_switches": m["id_switches"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=45, help="frames per camera (30 fps)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    from vidyn_ros.commands.make_dataset import software_versions

    print(f"rendering {args.frames} frames of `push` (4 cameras, 640x480 and 160x120) ...", flush=True)
    full = render(args.frames, 1.0)
    small = render(args.frames, 0.25)
    with tempfile.TemporaryDirectory() as tmp:
        print("recordings ...", flush=True)
        rec = bench_recordings(full, Path(tmp))
        print("bag ...", flush=True)
        bag = bench_bag(full, Path(tmp))
    print("segmenter ...", flush=True)
    seg = [bench_segmenter(full, out.with_name("ingest_segmentation.png")), bench_segmenter(full, stride=2),
           bench_segmenter(small)]
    result = {"command": sys.argv, "versions": software_versions(), "cpu_count": os.cpu_count(),
              "load_avg": os.getloadavg(), "ingest": [rec, bag], "segmenter": seg}
    out.write_text(json.dumps(result, indent=2, default=str))

    print(f"\n{'ingest source':<48} {'size':>8} {'sets':>5} {'rate Hz':>8} {'lat med ms':>10} {'lat p95 ms':>10}")
    for r in (rec, bag):
        print(f"{r['source']:<48} {r['size']:>8} {r['multiview_frames']:>5} {r['rate_hz']:>8.1f} "
              f"{r['latency_ms_median']:>10.1f} {r['latency_ms_p95']:>10.1f}")
    print(f"recordings: delivered per camera {rec['delivered_per_camera']} of {rec['recorded_frames']}; "
          f"sync {rec['sync']}")
    print(f"\n{'segmenter (4 views)':<20} {'stride':>6} {'frames':>6} {'ms med':>7} {'ms p95':>7} {'IoU':>6} "
          f"{'id sw':>5}")
    for s in seg:
        print(f"{s['size']:<20} {s['stride']:>6} {s['frames']:>6} {s['ms_median']:>7.1f} {s['ms_p95']:>7.1f} "
              f"{s['mean_iou']:>6.3f} {s['id_switches']:>5}")
    print(f"\nwrote {out} and {out.with_name('ingest_segmentation.png')} (load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
