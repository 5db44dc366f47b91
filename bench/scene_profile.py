"""Where a live scene update's time goes: the segmenter and scene nodes' work per frame, stage by stage, without DDS.

The deployed path of `vidyn launch sim` / `vidyn demo` (config/graphs/sim.yaml): 4 cameras at 640x480, the segmenter
(stride 2), the scene at image_downscale 4 (160x120), 5000 Gaussians, rigid tracking, renders published every
update. The same library calls the nodes make, in one process, on the `push` scenario with the pusher moving:

  segmenter node  decode + synchronise colour/depth/camera_info (TopicSynchronizer on CDR bytes), segment, encode masks
  scene node      decode + synchronise (with masks), SceneEstimator.update (its stages from SceneUpdate.stats),
                  object markers, render of every view for /vidyn/scene/render/<cam> + encode, PointCloud2 encode

DDS transport itself is not included (shared memory: ~4 ms per 4-camera frame, bench/rig_throughput.py).
Prints a table of medians, writes bench/results/scene_profile.{json,md,png}.

    .venv/bin/python bench/scene_profile.py [--frames 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")

SCENE_STAGES = [  # (label, SceneUpdate.stats key), in pipeline order
    ("targets (stack + downscale views)", "t_targets_ms"),
    ("fuse (back-project 4 views)", "t_fuse_ms"),
    ("new ids (spawn / re-associate)", "t_new_ids_ms"),
    ("registration (ICP per object)", "t_register_ms"),
    ("apply poses to Gaussians", "t_apply_ms"),
    ("refinement", "t_refine_ms"),
    ("maintenance render (every 5th)", "t_maintain_render_ms"),
    ("vote + prune (every 5th)", "t_vote_prune_ms"),
    ("densify (every 5th)", "t_densify_ms"),
    ("trajectory record", "t_record_ms"),
    ("snapshot + object poses", "t_snapshot_ms"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60, help="profiled frames after the initialisation")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the nodes' default)")
    p.add_argument("--render-every", type=int, default=1, help="scene node parameter render_every")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)

    from tqdm import tqdm

    from vidyn_ros import msgs
    from vidyn_ros.render import set_cpu_threads
    from vidyn_ros.rig.segmentation import InstanceSegmenter
    from vidyn_ros.rig.sim import SimRig
    from vidyn_ros.rig.sync import TopicSynchronizer
    from vidyn_ros.scene.deployed import scene_config, segmenter_config
    from vidyn_ros.scene.evaluate import versions
    from vidyn_ros.scene.export import gaussian_fields, object_markers
    from vidyn_ros.scene.pipeline import SceneEstimator

    set_cpu_threads(args.threads)
    rows: list[dict[str, float]] = []
    with SimRig("push", seed=0, render_scale=1.0) as rig:
        rig.set_pusher_velocity([0.1, 0.0, 0.0])  # the demo's push speed
        poses = {c.name: c.T_world_cam for c in rig.cameras}
        cams = [c.name for c in rig.cameras]
        width = rig.cameras[0].width
        seg = InstanceSegmenter(segmenter_config(width))
        seg_sync = TopicSynchronizer(cams, with_mask=False, poses=poses)
        scene_sync = TopicSynchronizer(cams, with_mask=True, poses=poses)
        est = SceneEstimator(scene_config(width, keep_trajectories=False))  # as the node: no trajectories
        ds = est.cfg.downscale
        for i in tqdm(range(args.frames + 1), desc="frames", unit="frame"):
            rf = rig.step()
            row: dict[str, float] = {}
            # what sim_rig publishes: colour, depth, camera_info per camera (CDR bytes, as on the wire)
            raw = [(t, mt, msgs.serialize(m, mt)) for t, mt, m, _ in msgs.rig_frame_messages(rf.frame)
                   if not t.endswith("/mask")]
            # ---- segmenter node
            t0 = time.perf_counter()
            frames = [f for t, mt, b in raw for f in seg_sync.add_message(t, mt, b)]
            row["seg: decode + sync"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            result = seg.segment(frames[-1])
            row["seg: segment"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            mask_raw = [(msgs.mask_topic(v.camera.name), msgs.IMAGE,
                         msgs.serialize(msgs.mask_msg(m, v.stamp_ns, msgs.camera_frame_id(v.camera.name)),
                                        msgs.IMAGE)) for v, m in zip(frames[-1].views, result.masks, strict=True)]
            row["seg: encode masks"] = (time.perf_counter() - t0) * 1e3
            # ---- scene node
            t0 = time.perf_counter()
            frames = [f for t, mt, b in raw + mask_raw for f in scene_sync.add_message(t, mt, b)]
            row["scene: decode + sync"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            up = est.update(frames[-1])
            row["scene: update (total)"] = (time.perf_counter() - t0) * 1e3
            for label, key in SCENE_STAGES:
                row[f"scene.update: {label}"] = up.stats.get(key, 0.0)
            t0 = time.perf_counter()
            msgs.serialize(msgs.marker_array_msg(object_markers(up.gaussians, up.objects, up.visible), up.stamp_ns,
                                                 "world"), msgs.MARKER_ARRAY)
            row["scene: object markers"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            if i % max(args.render_every, 1) == 0:
                cams_ds = [c.scaled(1.0 / ds) for c in frames[-1].cameras] if ds > 1 else frames[-1].cameras
                rgb, _ = est.render(cams_ds)
                for c, img in zip(cams_ds, rgb, strict=True):
                    msgs.serialize(msgs.image_msg(img, up.stamp_ns, msgs.camera_frame_id(c.name), "rgb8"), msgs.IMAGE)
            row["scene: render views + encode"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            msgs.serialize(msgs.pointcloud2_msg(gaussian_fields(up.gaussians), up.stamp_ns, "world"),
                           msgs.POINTCLOUD2)
            row["scene: PointCloud2 encode"] = (time.perf_counter() - t0) * 1e3
            row["gaussians"] = float(len(up.gaussians))
            if i > 0:  # the first frame initialises the scene
                rows.append(row)
    keys = [k for k in rows[0] if k != "gaussians"]
    med = {k: float(np.median([r[k] for r in rows])) for k in keys}
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    seg_total = sum(v for k, v in mean.items() if k.startswith("seg:"))
    scene_total = sum(v for k, v in mean.items() if k.startswith("scene:") and not k.startswith("scene.update"))
    load = os.getloadavg()
    lines = [f"Command: `python {' '.join(sys.argv)}`; push, 4 x 640x480, scene at 1/{ds} "
             f"({rows[0]['gaussians']:.0f} Gaussians), {len(rows)} frames, {args.threads} torch thread(s), "
             f"load average {load[0]:.1f}", "",
             "| stage | median [ms] | mean [ms] | share of its node (mean) |", "| --- | ---: | ---: | ---: |"]
    for k in keys:
        total = seg_total if k.startswith("seg:") else scene_total
        share = f"{100 * mean[k] / total:.0f} %" if total > 0 else "-"
        lines.append(f"| {k} | {med[k]:.1f} | {mean[k]:.1f} | {share} |")
    lines += [f"| **segmenter node per frame** | | **{seg_total:.1f}** | |",
              f"| **scene node per frame** | | **{scene_total:.1f}** | |"]
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scene_profile.md").write_text(table)
    (out / "scene_profile.json").write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "versions": versions(), "load_average": load, "frames": len(rows),
        "median_ms": med, "mean_ms": mean, "segmenter_node_ms": seg_total, "scene_node_ms": scene_total,
        "per_frame": rows}, indent=2))
    _plot(mean, out / "scene_profile.png", f"node path per frame (mean over {len(rows)} frames, load {load[0]:.1f})")
    return 0


def _plot(mean: dict[str, float], path: Path, title: str) -> None:
    """Horizontal bars, one per stage (segmenter orange, scene blue), PIL only."""
    from PIL import Image, ImageDraw

    items = [(k, v) for k, v in mean.items() if k != "scene: update (total)"]
    left, bar_w, row_h, top = 330, 420, 20, 30
    img = Image.new("RGB", (left + bar_w + 70, top + row_h * len(items) + 30), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((8, 8), title, fill=(0, 0, 0))
    vmax = max((v for _, v in items), default=1.0) or 1.0
    for i, (k, v) in enumerate(items):
        y = top + i * row_h
        d.text((8, y + 4), k[:52], fill=(0, 0, 0))
        col = (255, 127, 14) if k.startswith("seg") else (31, 119, 180)
        d.rectangle([left, y + 3, left + bar_w * v / vmax, y + row_h - 3], fill=col)
        d.text((left + bar_w * v / vmax + 4, y + 4), f"{v:.1f} ms", fill=(0, 0, 0))
    img.save(path)


if __name__ == "__main__":
    sys.exit(main())
