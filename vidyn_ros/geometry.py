"""Small rotation / transform helpers (numpy). Quaternions are (w, x, y, z)."""

from __future__ import annotations

import numpy as np


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """[..., 4] (w, x, y, z) -> [..., 3, 3] rotation matrices (normalises first)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return R.reshape((*q.shape[:-1], 3, 3))


def matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices -> [..., 4] (w, x, y, z) with w >= 0."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    xyzw = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    wxyz *= np.where(wxyz[:, :1] < 0, -1.0, 1.0)
    return wxyz.reshape((*R.shape[:-2], 4))


def make_se3(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """Camera-to-world 4x4 for a camera at ``eye`` looking at ``target`` (OpenCV axes: x right, y down, z forward);
    ``up`` defaults to world z."""
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along `up`
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_se3(np.stack([x, y, z], axis=1), eye)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of the relative rotation R_a^T R_b in degrees."""
    c = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pixel_rays(width: int, height: int, K: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Per-pixel viewing rays [H, W, 3] of a pinhole camera in its own frame, scaled to z = 1: ((u - cx) / fx,
    (v - cy) / fy, 1) at integer pixel coordinates (OpenCV convention). Depth z times the ray is the 3D point."""
    u = (np.arange(width, dtype=dtype) - dtype(K[0, 2])) / dtype(K[0, 0])
    v = (np.arange(height, dtype=dtype) - dtype(K[1, 2])) / dtype(K[1, 1])
    rays = np.ones((height, width, 3), dtype=dtype)
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    return rays


def backproject(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray | None = None) -> np.ndarray:
    """Depth image [m] (HxW) -> HxWx3 points (camera frame, or world frame if T_world_cam is given)."""
    h, w = depth.shape
    pts = pixel_rays(w, h, K) * depth.astype(np.float64)[..., None]
    if T_world_cam is not None:
        pts = pts @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    return pts
