"""Rig throughput: how fast the simulated 4-camera rig renders offline, and how fast its images move over DDS.

Measures
1. offline render: SimRig `push`, 4 cameras x (color + depth + mask), at 640x480 and 160x120 [frames/s];
   plus the cost of turning one rig frame into CDR messages (vidyn_ros.msgs) [ms].
2. DDS: 4 x (640x480 rgb8 + 16UC1 depth + 16UC1 mask) = 12 messages (8.6 MB) per frame, raw CDR bytes, reliable
   QoS, publisher -> subscriber
   - in one process (two nodes, one context),
   - across two processes with the shipped shared-memory profile (config/fastdds_shm.xml),
   - across two processes with Fast DDS defaults (VIDYN_NO_SHM=1), for comparison;
   each back-to-back ("max": complete frames/s received) and paced at 30 Hz (frame latency: last message of a frame
   received minus the frame's publish start, and the fraction of frames that arrived complete).

Usage:  .venv/bin/python bench/rig_throughput.py [--quick] [--out bench/results/rig_throughput.json]
Prints a table and writes JSON (with the command line and versions) next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "osmesa")

N_CAMS = 4
W, H = 640, 480


# ------------------------------------------------------------------------------------------------------ offline render
def bench_render(scale: float, n_frames: int) -> dict[str, Any]:
    from tqdm import tqdm

    from vidyn_ros import msgs
    from vidyn_ros.rig.sim import SimRig

    with SimRig("push", seed=0, render_scale=scale, masks=True) as rig:
        rig.step()  # warm-up: GL context, buffers
        times, conv = [], []
        for _ in tqdm(range(n_frames), desc=f"render {rig.cameras[0].width}x{rig.cameras[0].height}", leave=False):
            t0 = time.perf_counter()
            rf = rig.step()
            t1 = time.perf_counter()
            raws = [msgs.serialize(m, t) for _topic, t, m, _s in msgs.rig_frame_messages(rf)]
            t2 = time.perf_counter()
            times.append(t1 - t0)
            conv.append(t2 - t1)
        w, h = rig.cameras[0].width, rig.cameras[0].height
    return {
        "resolution": f"{w}x{h}",
        "cameras": N_CAMS,
        "frames": n_frames,
        "render_fps": round(1.0 / float(np.median(times)), 2),
        "render_ms_median": round(float(np.median(times)) * 1e3, 2),
        "to_cdr_ms_median": round(float(np.median(conv)) * 1e3, 2),
        "bytes_per_frame": sum(len(r) for r in raws),
    }


# ----------------------------------------------------------------------------------------------------------------- DDS
def _frame_templates() -> list[tuple[str, bytearray]]:
    """12 CDR messages of one rig frame (random content, fixed seed); the stamp is patched per frame."""
    from vidyn_ros import msgs

    rng = np.random.default_rng(0)
    out = []
    for c in range(N_CAMS):
        cam = f"bench{c}"
        fid = msgs.camera_frame_id(cam)
        color = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = rng.uniform(0.3, 2.0, (H, W)).astype(np.float32)
        mask = rng.integers(0, 5, (H, W)).astype(np.int32)
        out.append((msgs.color_topic(cam), bytearray(msgs.serialize(msgs.image_msg(color, 0, fid, "rgb8")))))
        out.append((msgs.depth_topic(cam), bytearray(msgs.serialize(msgs.depth_msg(depth, 0, fid)))))
        out.append((msgs.mask_topic(cam), bytearray(msgs.serialize(msgs.mask_msg(mask, 0, fid)))))
    return out


def _stamp_of(raw: bytes) -> int:
    sec, nsec = struct.unpack_from("<iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def _publish_frames(node: Any, mode: str, seconds: float, settle_s: float = 0.5) -> int:
    """Publisher side: wait for subscribers, then publish frames (back-to-back or at 30 Hz). Returns frames sent."""
    from vidyn_ros import msgs
    from vidyn_ros.nodes import _ros

    templates = _frame_templates()
    cls = _ros.msg_class(msgs.IMAGE)
    pubs = [node.create_publisher(cls, topic, _ros.reliable_qos(depth=5)) for topic, _ in templates]
    t_end = time.monotonic() + 30
    while not all(p.get_subscription_count() > 0 for p in pubs) and time.monotonic() < t_end:
        time.sleep(0.02)
    time.sleep(settle_s)  # reader-side matching completes slightly after the writer sees the reader
    sent = 0
    t0 = time.monotonic()
    period = 1.0 / 30.0
    while time.monotonic() - t0 < seconds:
        now = time.time_ns()
        for pub, (_topic, tmpl) in zip(pubs, templates, strict=True):
            struct.pack_into("<iI", tmpl, 4, now // 1_000_000_000, now % 1_000_000_000)
            pub.publish(bytes(tmpl))
        sent += 1
        if mode == "30hz":
            due = t0 + sent * period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return sent


class _Receiver:
    """Subscriber side: counts messages per frame stamp; a frame is complete when all 12 arrived."""

    def __init__(self, node: Any) -> None:
        from vidyn_ros import msgs
        from vidyn_ros.nodes import _ros

        self.lock = threading.Lock()
        self.frames: dict[int, list[float]] = {}
        cls = _ros.msg_class(msgs.IMAGE)
        for topic, _ in _frame_templates_topics():
            node.create_subscription(cls, topic, self._on, _ros.reliable_qos(depth=5), raw=True)

    def _on(self, raw: bytes) -> None:
        t = time.time_ns()
        with self.lock:
            self.frames.setdefault(_stamp_of(raw), []).append(t)

    def stats(self, sent: int, seconds: float) -> dict[str, Any]:
        with self.lock:
            complete = {s: ts for s, ts in self.frames.items() if len(ts) == 3 * N_CAMS}
        lat = np.array([(max(ts) - s) / 1e6 for s, ts in complete.items()]) if complete else np.zeros(0)
        return {
            "frames_sent": sent,
            "frames_complete": len(complete),
            "complete_fraction": round(len(complete) / sent, 3) if sent else 0.0,
            "fps_received": round(len(complete) / seconds, 1),
            "latency_ms_median": round(float(np.median(lat)), 2) if lat.size else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
            "mbytes_per_s": round(len(complete) * _FRAME_BYTES / seconds / 1e6, 1),
        }


def _frame_templates_topics() -> list[tuple[str, None]]:
    from vidyn_ros import msgs

    out = []
    for c in range(N_CAMS):
        cam = f"bench{c}"
        out += [(msgs.color_topic(cam), None), (msgs.depth_topic(cam), None), (msgs.mask_topic(cam), None)]
    return out


_FRAME_BYTES = N_CAMS * (W * H * 3 + 2 * W * H * 2)


def _context(domain: int) -> Any:
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain)
    return ctx


def _spin_thread(ctx: Any, node: Any) -> tuple[threading.Event, threading.Thread]:
    from rclpy.executors import SingleThreadedExecutor

    stop = threading.Event()

    def loop() -> None:
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)
        ex.remove_node(node)
        ex.shutdown()

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return stop, th


def bench_dds_in_process(mode: str, seconds: float, domain: int) -> dict[str, Any]:
    import rclpy
    from rclpy.node import Node

    from vidyn_ros.nodes import _ros

    _ros.setup_fastdds_env()
    ctx = _context(domain)
    sub_node = Node("bench_sub", context=ctx)
    pub_node = Node("bench_pub", context=ctx)
    rx = _Receiver(sub_node)
    stop, th = _spin_thread(ctx, sub_node)
    try:
        sent = _publish_frames(pub_node, mode, seconds)
        time.sleep(0.5)  # drain
    finally:
        stop.set()
        th.join(5)
        pub_node.destroy_node()
        sub_node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return rx.stats(sent, seconds)


def bench_dds_two_processes(mode: str, seconds: float, domain: int, shm: bool) -> dict[str, Any]:
    import rclpy
    from rclpy.node import Node

    from vidyn_ros.nodes import _ros

    env = dict(os.environ)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if shm:
        env.pop("VIDYN_NO_SHM", None)
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(_ros.fastdds_profile_path())
    else:
        env["VIDYN_NO_SHM"] = "1"
    # This process must use the same transport settings as the publisher; the env is read at rclpy.init.
    saved = {k: os.environ.get(k) for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "VIDYN_NO_SHM")}
    for k in saved:
        if k in env:
            os.environ[k] = env[k]
        else:
            os.environ.pop(k, None)
    try:
        ctx = _context(domain)
        sub_node = Node("bench_sub", context=ctx)
        rx = _Receiver(sub_node)
        stop, th = _spin_thread(ctx, sub_node)
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--role", "pub", "--mode", mode, "--seconds", str(seconds),
                 "--domain", str(domain)],
                env=env, capture_output=True, text=True, timeout=seconds + 90)
            time.sleep(0.5)  # the last frames still in flight
        finally:  # also when the publisher hangs (TimeoutExpired): stop spinning, free the participant
            stop.set()
            th.join(5)
            sub_node.destroy_node()
            rclpy.try_shutdown(context=ctx)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["publisher failed"])[-1]}
    sent = json.loads(proc.stdout.strip().splitlines()[-1])["sent"]
    out = rx.stats(sent, seconds)
    if "cannot publish" in proc.stderr:
        out["publisher_errors"] = proc.stderr.count("cannot publish")
    return out


def _role_pub(args: argparse.Namespace) -> int:
    """The publisher process of the two-process benchmark."""
    import rclpy
    from rclpy.node import Node

    ctx = _context(args.domain)
    node = Node("bench_pub", context=ctx)
    try:
        sent = _publish_frames(node, args.mode, args.seconds)
        time.sleep(0.5)  # let the last frames go out before the participant disappears
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    print(json.dumps({"sent": sent}))
    return 0


# ---------------------------------------------------------------------------------------------------------------- main
def _versions() -> dict[str, str]:
    from vidyn_ros.commands.make_dataset import software_versions

    return {**software_versions(), "cpus": str(os.cpu_count())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer frames and shorter DDS runs")
    p.add_argument("--seconds", type=float, default=None, help="duration of each DDS run [s] (default 4, quick 2)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "rig_throughput.json"))
    p.add_argument("--domain", type=int, default=int(os.environ.get("VIDYN_BENCH_DOMAIN", "88")))
    p.add_argument("--skip-render", action="store_true")
    p.add_argument("--role", choices=["main", "pub"], default="main", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["max", "30hz"], default="max", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "pub":
        return _role_pub(args)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    results: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]), "versions": _versions()}

    if not args.skip_render:
        results["render"] = [bench_render(1.0, 8 if args.quick else 20), bench_render(0.25, 20 if args.quick else 60)]
    dds = []
    for mode in ("max", "30hz"):
        dds.append({"setup": "one process", "mode": mode, **bench_dds_in_process(mode, seconds, args.domain)})
        dds.append({"setup": "two processes, SHM profile", "mode": mode,
                    **bench_dds_two_processes(mode, seconds, args.domain, shm=True)})
        dds.append({"setup": "two processes, Fast DDS defaults", "mode": mode,
                    **bench_dds_two_processes(mode, seconds, args.domain, shm=False)})
    results["dds"] = dds

    print("\n== offline render, SimRig push, 4 cameras x (color + depth + mask) ==")
    print(f"{'resolution':>10} {'fps':>7} {'render ms':>10} {'to CDR ms':>10} {'MB/frame':>9}")
    for r in results.get("render", []):
        print(f"{r['resolution']:>10} {r['render_fps']:>7.2f} {r['render_ms_median']:>10.1f} "
              f"{r['to_cdr_ms_median']:>10.1f} {r['bytes_per_frame'] / 1e6:>9.2f}")
    print(f"\n== DDS, 4 x (640x480 rgb8 + depth + mask) per frame ({_FRAME_BYTES / 1e6:.1f} MB), reliable, "
          f"{seconds:g} s per run ==")
    print(f"{'setup':<34} {'mode':<5} {'sent':>5} {'complete':>8} {'fps':>6} {'MB/s':>6} {'lat ms':>7} {'p95':>7}")
    for r in dds:
        if "error" in r:
            print(f"{r['setup']:<34} {r['mode']:<5} error: {r['error']}")
            continue
        lat = "-" if r["latency_ms_median"] is None else f"{r['latency_ms_median']:.1f}"
        p95 = "-" if r["latency_ms_p95"] is None else f"{r['latency_ms_p95']:.1f}"
        print(f"{r['setup']:<34} {r['mode']:<5} {r['frames_sent']:>5} {r['frames_complete']:>8} "
              f"{r['fps_received']:>6.1f} {r['mbytes_per_s']:>6.0f} {lat:>7} {p95:>7}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
