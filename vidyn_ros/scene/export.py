"""ROS-free views of a scene for publishing: PointCloud2 field arrays and object marker descriptions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vidyn_ros.geometry import quat_wxyz_to_matrix
from vidyn_ros.types import GaussianSet, ObjectPose

# The /vidyn/scene/gaussians field order (topic contract).
CLOUD_FIELDS = (
    "x", "y", "z", "rgb", "opacity", "scale_x", "scale_y", "scale_z", "rot_w", "rot_x", "rot_y", "rot_z", "object_id",
    "particle_id",
)  # fmt: skip


def gaussian_fields(g: GaussianSet) -> dict[str, np.ndarray]:
    """Per-Gaussian arrays in CLOUD_FIELDS order: floats [N], ``rgb`` [N,3] uint8 (packed by msgs.pointcloud2_msg),
    scales in metres (not log), unit quaternions (w, x, y, z), object_id int32 (0..OBJECT_ID_MAX), particle_id uint32
    (stable across messages: the dynamics node aligns particles by it)."""
    g = g.detach().to("cpu")
    means = g.means.float().numpy()
    scales = g.log_scales.exp().float().numpy()
    q = g.quats.float().numpy()
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    rgb = (np.clip(g.colors.float().numpy(), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return {
        "x": means[:, 0], "y": means[:, 1], "z": means[:, 2], "rgb": rgb,
        "opacity": g.opacity_logits.sigmoid().float().numpy(),
        "scale_x": scales[:, 0], "scale_y": scales[:, 1], "scale_z": scales[:, 2],
        "rot_w": q[:, 0], "rot_x": q[:, 1], "rot_y": q[:, 2], "rot_z": q[:, 3],
        "object_id": g.object_ids.numpy().astype(np.int32),
        "particle_id": g.particle_ids.numpy().astype(np.uint32),
    }  # fmt: skip


def gaussians_from_fields(fields: dict[str, np.ndarray], device: str = "cpu") -> GaussianSet:
    """The inverse of :func:`gaussian_fields` (a /vidyn/scene/gaussians cloud read by ``msgs.pointcloud2_to_arrays``):
    a GaussianSet with log scales, unit quaternions and opacity logits; ``particle_ids`` from a ``particle_id`` field
    when the cloud has one (else 0..N-1). Raises VidynError naming a missing field."""
    import torch

    from vidyn_ros.errors import VidynError

    missing = [f for f in CLOUD_FIELDS if f not in fields and f != "particle_id"]
    if missing:
        raise VidynError(f"scene cloud lacks field(s) {missing}")

    def col(*names: str) -> torch.Tensor:
        return torch.as_tensor(np.stack([np.asarray(fields[n], dtype=np.float32) for n in names], axis=1),
                               device=device)

    rgb = np.asarray(fields["rgb"])
    colors = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    op = np.clip(np.asarray(fields["opacity"], dtype=np.float64), 1e-6, 1 - 1e-6)
    pid = fields.get("particle_id")
    return GaussianSet(
        means=col("x", "y", "z"), quats=col("rot_w", "rot_x", "rot_y", "rot_z"),
        log_scales=col("scale_x", "scale_y", "scale_z").clamp_min(1e-9).log(),
        colors=torch.as_tensor(colors, device=device).reshape(-1, 3),
        opacity_logits=torch.as_tensor(np.log(op / (1 - op)).astype(np.float32), device=device),
        object_ids=torch.as_tensor(np.asarray(fields["object_id"]).astype(np.int64), device=device),
        particle_ids=None if pid is None else torch.as_tensor(np.asarray(pid).astype(np.int64), device=device),
    )  # fmt: skip


def object_color(object_id: int) -> tuple[float, float, float]:
    """A stable distinct colour per id (golden-ratio hue walk)."""
    import colorsys

    return colorsys.hsv_to_rgb((object_id * 0.618033988749895) % 1.0, 0.75, 0.95)


def object_boxes(g: GaussianSet, objects: Sequence[ObjectPose]) -> list[dict]:
    """Oriented box per object: {object_id, centroid [3], center [3], quat_wxyz [4], size [3]}.

    The box is aligned with the object's tracked rotation and spans its Gaussian centres (5th-95th percentile,
    so a few stray Gaussians do not inflate it).
    """
    ids = g.object_ids.detach().cpu().numpy()
    means = g.means.detach().cpu().numpy().astype(np.float64)
    out = []
    for p in objects:
        pts = means[ids == p.object_id]
        if len(pts) == 0:
            continue
        R = quat_wxyz_to_matrix(np.asarray(p.quat_wxyz))
        c = np.asarray(p.position, dtype=np.float64)
        local = (pts - c) @ R
        lo, hi = np.percentile(local, 5, axis=0), np.percentile(local, 95, axis=0)
        out.append({
            "object_id": int(p.object_id), "centroid": c, "center": c + R @ ((lo + hi) / 2),
            "quat_wxyz": np.asarray(p.quat_wxyz, dtype=np.float64), "size": np.maximum(hi - lo, 1e-3),
        })  # fmt: skip
    return out


def object_markers(g: GaussianSet, objects: Sequence[ObjectPose], visible: dict[int, bool] | None = None) -> list[dict]:
    """Keyword dicts for ``msgs.marker_array_msg``: per object a centroid sphere, an oriented box and an id label.

    Marker ids are 3k, 3k+1, 3k+2 for object k (namespace ``objects``), so RViz replaces them frame to frame.
    Objects not visible in the current frame are drawn half transparent.
    """
    out: list[dict] = []
    for b in object_boxes(g, objects):
        k = b["object_id"]
        a = 1.0 if (visible is None or visible.get(k, True)) else 0.35
        col = (*object_color(k), a)
        out.append(dict(kind="sphere", marker_id=3 * k, ns="objects", position=b["centroid"], scale=0.015, color=col))
        out.append(dict(kind="cube", marker_id=3 * k + 1, ns="objects", position=b["center"],
                        quat_wxyz=b["quat_wxyz"], scale=b["size"], color=(*object_color(k), 0.3 * a)))
        out.append(dict(kind="text", marker_id=3 * k + 2, ns="objects",
                        position=b["center"] + np.array([0.0, 0.0, b["size"].max() / 2 + 0.03]),
                        scale=0.03, color=(1.0, 1.0, 1.0, a), text=f"id {k}"))
    return out
