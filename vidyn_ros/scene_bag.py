"""The live scene's outputs as recorded in a bag, checked against the bag's own cameras and ground truth (ROS-free).

What the scene node publishes (``/vidyn/scene/objects`` markers, ``/vidyn/scene/render/<cam>``, ``/diagnostics``,
``/vidyn/scene/gaussians``) is read back here and compared with what the rig published in the same bag:

- :func:`scene_objects`: per-object tracked centroids from the centroid spheres of ``/vidyn/scene/objects``
  (marker id 3k, namespace ``objects``, see ``scene.export.object_markers``);
- :func:`tracking_from_bag`: centroid tracking error against ``/vidyn/sim/object_poses`` with the same metric as
  ``vidyn eval-scene`` (``scene.metrics.CentroidTracker``: the first tracked centroid carried by the ground-truth
  rigid motion is the reference), and :func:`draw_tracking` (top view of the table: reference vs tracked);
- :func:`last_render_views` / :func:`draw_scene_views`: observed | rendered | difference per camera at the last
  stamp that has a render for every camera, with PSNR at the render's (working) resolution;
- :func:`scene_status`: the scene node's /diagnostics values (rate, update time, #Gaussians).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidyn_ros import msgs
from vidyn_ros.bags import BagReader
from vidyn_ros.errors import BagError
from vidyn_ros.types import ObjectPose

# The scene node's topics (vidyn_ros/nodes/scene.py, which imports rclpy and so cannot be imported here).
GAUSSIANS_TOPIC = "/vidyn/scene/gaussians"
OBJECTS_TOPIC = "/vidyn/scene/objects"
RENDER_TOPIC = "/vidyn/scene/render/{cam}"
MARKER_SPHERE = 2  # visualization_msgs/Marker.SPHERE


def objects_from_markers(msg: Any) -> list[ObjectPose]:
    """visualization_msgs/MarkerArray from the scene node -> one ObjectPose per object (tracked centroid; the
    sphere marker carries no rotation, so quat is identity)."""
    out = []
    for m in msg.markers:
        if m.ns == "objects" and m.type == MARKER_SPHERE and m.id % 3 == 0:
            p = m.pose.position
            out.append(ObjectPose(int(m.id) // 3, np.array([p.x, p.y, p.z]), np.array([1.0, 0.0, 0.0, 0.0])))
    return out


def scene_objects(reader: BagReader, topic: str = OBJECTS_TOPIC) -> Iterator[tuple[int, list[ObjectPose]]]:
    """(stamp [ns], tracked objects) per /vidyn/scene/objects message; the stamp is the frame's (bag stamp)."""
    for _t, _mt, stamp, msg in reader.decoded([topic]):
        yield stamp, objects_from_markers(msg)


@dataclass
class Tracking:
    """Tracked vs reference centroid per object over the frames the scene processed (metres, world frame)."""

    stamps: dict[int, list[int]] = field(default_factory=dict)  # object id -> frame stamps [ns]
    tracked: dict[int, np.ndarray] = field(default_factory=dict)  # id -> [T, 3] scene centroid
    reference: dict[int, np.ndarray] = field(default_factory=dict)  # id -> [T, 3] first centroid moved by the gt
    errors: dict[int, np.ndarray] = field(default_factory=dict)  # id -> [T] |tracked - reference|
    ground_truth_path: dict[int, np.ndarray] = field(default_factory=dict)  # id -> [F, 3] gt body positions, all frames
    frames: int = 0  # scene updates matched with a ground-truth message

    def metrics(self) -> dict[str, Any]:
        all_err = np.concatenate(list(self.errors.values())) if self.errors else np.zeros(0)
        per = {str(k): round(float(v.mean()), 5) for k, v in sorted(self.errors.items())}
        travel = {str(k): round(float(np.linalg.norm(v[-1] - v[0])), 4) for k, v in sorted(self.reference.items())}
        return {
            "frames": self.frames,
            "objects": len(self.errors),
            "centroid_error_mean_m": round(float(np.mean([v.mean() for v in self.errors.values()])), 5)
            if self.errors else None,
            "centroid_error_max_m": round(float(all_err.max()), 5) if all_err.size else None,
            "centroid_error_mean_per_object_m": per,
            "ground_truth_travel_m": travel,
        }  # fmt: skip


def tracking_from_bag(bag: str | Path | BagReader) -> Tracking:
    """Match every /vidyn/scene/objects message with the ground truth of the same stamp (``eval-scene``'s metric).

    Raises BagError when the bag has no scene objects or no ground truth.
    """
    from vidyn_ros.scene.metrics import CentroidTracker, pose_matrix

    reader = bag if isinstance(bag, BagReader) else BagReader(bag)
    try:
        for topic in (OBJECTS_TOPIC, msgs.OBJECT_POSES_TOPIC):
            if topic not in reader.topics:
                raise BagError(f"{reader.path}: no {topic} messages")
        gt = dict(reader.object_poses())
        est = list(scene_objects(reader))
    finally:
        if not isinstance(bag, BagReader):
            reader.close()
    out = Tracking()
    for stamp in sorted(gt):
        for p in gt[stamp]:
            out.ground_truth_path.setdefault(p.object_id, []).append(np.asarray(p.position, dtype=np.float64))
    out.ground_truth_path = {k: np.asarray(v) for k, v in out.ground_truth_path.items()}
    ct = CentroidTracker()
    tracked: dict[int, list[np.ndarray]] = {}
    reference: dict[int, list[np.ndarray]] = {}
    for stamp, objs in sorted(est, key=lambda x: x[0]):
        if stamp not in gt or not objs:
            continue
        out.frames += 1
        errs = ct.add(objs, gt[stamp])
        by_id = {ct.id_map.get(o.object_id): o for o in objs}  # scene ids -> the true ids errors are keyed by
        for k, e in errs.items():
            c = np.asarray(by_id[k].position, dtype=np.float64)
            tracked.setdefault(k, []).append(c)
            # the reference point itself (CentroidTracker.add keeps only the distance): the same formula
            c0, T0 = ct.ref[k]
            g = next(p for p in gt[stamp] if p.object_id == k)
            M = pose_matrix(g) @ np.linalg.inv(T0)
            reference.setdefault(k, []).append(M[:3, :3] @ c0 + M[:3, 3])
            out.stamps.setdefault(k, []).append(stamp)
            out.errors.setdefault(k, []).append(e)
    out.tracked = {k: np.asarray(v) for k, v in tracked.items()}
    out.reference = {k: np.asarray(v) for k, v in reference.items()}
    out.errors = {k: np.asarray(v) for k, v in out.errors.items()}
    return out


def _color(object_id: int) -> tuple[int, int, int]:
    """The scene's marker colour for an object, darkened so lines stay visible on white."""
    from vidyn_ros.scene.export import object_color

    return tuple(int(200 * c) for c in object_color(object_id))


def draw_tracking(tr: Tracking, path: str | Path, title: str = "", panel: int = 520) -> Path:
    """PNG with two panels. Left, the table plane seen from above (x right, y up): per object the reference path
    (coloured line: the first tracked centroid moved by the ground-truth motion), the tracked centroids (black dots)
    and the ground-truth path of objects the scene did not track (grey). Right: centroid error [mm] per object over
    sim time."""
    from PIL import Image, ImageDraw

    from vidyn_ros.errors import OutputError

    W, H = 2 * panel + 60, panel + 70
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    top, left = 44, 50
    plot = panel - 40

    # ---- left: table plane
    paths = [v[:, :2] for v in tr.reference.values()] + [v[:, :2] for v in tr.tracked.values()]
    paths += [v[:, :2] for k, v in tr.ground_truth_path.items() if k not in tr.tracked]
    pts = np.concatenate(paths) if paths else np.zeros((1, 2))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = float(max(hi - lo)) + 0.08  # 4 cm margin on each side
    mid = (lo + hi) / 2
    x0, y0 = mid - span / 2

    def px(xy: np.ndarray) -> list[tuple[float, float]]:
        u = left + (xy[:, 0] - x0) / span * plot
        v = top + (1.0 - (xy[:, 1] - y0) / span) * plot
        return list(zip(u.tolist(), v.tolist(), strict=True))

    step = 0.05 if span < 0.6 else 0.1
    for g in np.arange(np.ceil(x0 / step) * step, x0 + span, step):
        u = px(np.array([[g, y0]]))[0][0]
        d.line([(u, top), (u, top + plot)], fill=(228, 228, 228))
        d.text((u - 14, top + plot + 4), f"{g:+.2f}", fill=(90, 90, 90))
    for g in np.arange(np.ceil(y0 / step) * step, y0 + span, step):
        v = px(np.array([[x0, g]]))[0][1]
        d.line([(left, v), (left + plot, v)], fill=(228, 228, 228))
        d.text((6, v - 6), f"{g:+.2f}", fill=(90, 90, 90))
    d.rectangle([left, top, left + plot, top + plot], outline=(120, 120, 120))
    d.text((left, top - 14), "table plane, x right / y up [m]", fill=(60, 60, 60))
    for k, v in tr.ground_truth_path.items():
        if k not in tr.tracked and len(v) > 1:
            d.line(px(v[:, :2]), fill=(170, 170, 170), width=2)
    for k in sorted(tr.tracked):
        ref, est = tr.reference[k], tr.tracked[k]
        if len(ref) > 1:
            d.line(px(ref[:, :2]), fill=_color(k), width=5)
        for u, v in px(est[:, :2]):
            d.ellipse([u - 1, v - 1, u + 1, v + 1], fill=(0, 0, 0))
        u, v = px(ref[:1, :2])[0]
        d.ellipse([u - 5, v - 5, u + 5, v + 5], outline=_color(k), width=2)  # where the object started
        d.text((u + 8, v + 4), f"id {k}", fill=_color(k))

    # ---- right: error over time
    ox = 2 * left + plot + 20
    pw = W - ox - 20
    errs_mm = {k: v * 1000 for k, v in tr.errors.items()}
    emax = max((float(v.max()) for v in errs_mm.values()), default=1.0)
    emax = max(1.0, float(np.ceil(emax)))
    stamps = [s for v in tr.stamps.values() for s in v]
    t_lo, t_hi = (min(stamps) / 1e9, max(stamps) / 1e9) if stamps else (0.0, 1.0)
    t_span = max(t_hi - t_lo, 1e-6)
    d.rectangle([ox, top, ox + pw, top + plot], outline=(120, 120, 120))
    d.text((ox, top - 14), "centroid error vs ground truth [mm] over sim time [s]", fill=(60, 60, 60))
    for i in range(5):
        e = emax * i / 4
        v = top + plot - e / emax * plot
        d.line([(ox, v), (ox + pw, v)], fill=(228, 228, 228))
        d.text((ox - 30, v - 6), f"{e:.2f}", fill=(90, 90, 90))
    for i in range(5):
        t = t_lo + t_span * i / 4
        u = ox + (t - t_lo) / t_span * pw
        d.text((u - 12, top + plot + 4), f"{t:.2f}", fill=(90, 90, 90))
    for row, k in enumerate(sorted(errs_mm)):
        t = np.asarray(tr.stamps[k]) / 1e9
        xy = list(zip((ox + (t - t_lo) / t_span * pw).tolist(), (top + plot - errs_mm[k] / emax * plot).tolist(),
                      strict=True))
        if len(xy) > 1:
            d.line(xy, fill=_color(k), width=2)
        travel = float(np.linalg.norm(tr.reference[k][-1] - tr.reference[k][0])) * 1000
        d.text((ox + 8, top + 6 + 14 * row), f"id {k}: mean {errs_mm[k].mean():.2f} mm, max {errs_mm[k].max():.2f} mm, "
               f"moved {travel:.0f} mm", fill=_color(k))

    d.text((8, 4), title or "scene: tracked object centroids vs ground truth", fill=(0, 0, 0))
    d.text((8, 20), "coloured line: first tracked centroid moved by the ground-truth motion; black dots: tracked "
           "centroid per frame; circle: start; grey: untracked ground truth", fill=(90, 90, 90))
    path = Path(path)
    try:
        img.save(path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write image ({err.strerror or err})") from None
    return path


def _downscale_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Block-mean an HxWx3 image down to h x w (integer factor), else nearest: the scene's working resolution."""
    H, W = img.shape[:2]
    if (H, W) == (h, w):
        return img
    if H % h == 0 and W % w == 0:
        f = H // h
        return img.reshape(h, f, w, W // w, -1).mean(axis=(1, 3)).round().astype(np.uint8)
    ys, xs = (np.arange(h) * H // h), (np.arange(w) * W // w)
    return img[ys][:, xs]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR [dB] of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def last_render_views(bag: str | Path, cameras: Sequence[str] | None = None) -> tuple[int, dict[str, dict]]:
    """The last stamp with a scene render for every camera, and per camera {observed, render, observed_full}
    (HxWx3 uint8: the observed image block-averaged to the render's resolution, the render, the observed image as
    recorded) and ``psnr_db`` of the first two. BagError if there is none."""
    with BagReader(bag) as r:
        cams = list(cameras or r.camera_names())
        topics = {RENDER_TOPIC.format(cam=c): c for c in cams}
        have = [t for t in topics if t in r.topics]
        if len(have) != len(topics):
            raise BagError(f"{r.path}: no scene renders recorded for {sorted(set(topics) - set(have))}")
        renders: dict[int, dict[str, Any]] = {}
        for topic, _mt, stamp, msg in r.decoded(list(topics)):
            renders.setdefault(stamp, {})[topics[topic]] = msg
        full = [s for s, v in renders.items() if len(v) == len(cams)]
        if not full:
            raise BagError(f"{r.path}: no stamp has a scene render for every camera")
        stamp = max(full)
        observed = {}
        for topic, _mt, _s, msg in r.decoded([msgs.color_topic(c) for c in cams], start_ns=stamp, stop_ns=stamp + 1):
            observed[topic.split("/")[1]] = msgs.image_to_array(msg)
    out = {}
    for c in cams:
        if c not in observed:
            raise BagError(f"{bag}: no {msgs.color_topic(c)} image at {stamp / 1e9:.3f} s to compare the render with")
        ren = msgs.image_to_array(renders[stamp][c])[..., :3]
        obs = _downscale_to(observed[c][..., :3], *ren.shape[:2])
        out[c] = {"observed": obs, "observed_full": observed[c][..., :3], "render": ren, "psnr_db": psnr(obs, ren)}
    return stamp, out


def draw_scene_views(stamp: int, views: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """PNG: one row per camera, observed | scene render | |difference| x4 at the working resolution (from
    :func:`last_render_views`)."""
    from vidyn_ros.viz import image_grid

    rows, labels = [], []
    for c, v in views.items():
        diff = np.clip(np.abs(v["observed"].astype(np.int16) - v["render"].astype(np.int16)) * 4, 0, 255)
        # the recorded image first: image_grid sizes every tile like the first (nearest), so renders at the working
        # resolution are shown enlarged next to the full-resolution observation
        rows.append([v.get("observed_full", v["observed"]), v["render"], diff.astype(np.uint8)])
        h, w = v["render"].shape[:2]
        labels.append([f"{c} observed", f"scene render {w}x{h}, PSNR {v['psnr_db']:.1f} dB", "|difference| x4"])
    return image_grid(rows, path, labels, title=title or f"t = {stamp / 1e9:.2f} s (sim)")


def scene_status(bag: str | Path, node: str = "scene") -> dict[str, Any]:
    """The scene node's /diagnostics: last values (rate_hz, gaussians, objects, ...) and the median ``update_s``
    over the tracking updates it reported. Empty if the bag has no status from that node."""
    last: dict[str, str] = {}
    update_s: list[float] = []
    with BagReader(bag) as r:
        if msgs.DIAGNOSTICS_TOPIC not in r.topics:
            return {}
        for _t, _mt, _s, msg in r.decoded([msgs.DIAGNOSTICS_TOPIC]):
            for st in msg.status:
                if st.name.strip("/").split("/")[-1] != node:
                    continue
                values = {kv.key: kv.value for kv in st.values}
                if not values:
                    continue
                last = {"message": st.message, **values}
                if st.message == "tracking" and "update_s" in values:
                    update_s.append(float(values["update_s"]))
    if not last:
        return {}
    out: dict[str, Any] = dict(last)
    if update_s:
        out["update_s_median"] = round(float(np.median(update_s)), 4)
    return out
