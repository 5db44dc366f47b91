"""Plain data types shared by every layer. No ROS, no torch at import time.

Conventions (docs/ARCHITECTURE.md):
- SI units; depth inside the library in metres (float32), on the wire in millimetres (uint16, 0 = no data).
- One fixed frame ``world`` (table frame, z up, origin on the table surface).
- Camera extrinsics are camera-to-world 4x4 matrices with OpenCV camera axes (x right, y down, z forward).
- Quaternions are (w, x, y, z) inside the library; (x, y, z, w) only in ROS messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is heavy; only the types are needed here
    import torch


# Object (instance) ids have one width end to end: they arrive as 16UC1 masks (/<cam>/mask), and the segmenter, the
# scene, PointCloud2 (object_id), PLY (float, exact) and marker ids (3k..3k+2 in int32) all hold 0..OBJECT_ID_MAX.
OBJECT_ID_MAX = 65535


@dataclass(frozen=True)
class CameraModel:
    """A pinhole camera: intrinsics, image size, pose in the world frame.

    Attributes:
        name: camera name, also the topic prefix (``/<name>/color/image_raw``).
        width, height: image size [px].
        K: 3x3 intrinsic matrix [px].
        T_world_cam: 4x4 camera-to-world transform (OpenCV camera axes).
        distortion_model: ROS CameraInfo distortion model ("plumb_bob", "rational_polynomial", ...).
        D: distortion coefficients in that model's order (zeros for an ideal pinhole).
    """

    name: str
    width: int
    height: int
    K: np.ndarray
    T_world_cam: np.ndarray = field(default_factory=lambda: np.eye(4))
    distortion_model: str = "plumb_bob"
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def T_cam_world(self) -> np.ndarray:  # noqa: N802 - T_a_b is the transform convention used throughout
        """World-to-camera 4x4 transform."""
        return invert_se3(self.T_world_cam)

    def scaled(self, factor: float) -> CameraModel:
        """The same camera rendering at ``factor`` times the resolution (e.g. 0.25 for 640x480 -> 160x120)."""
        K = self.K.copy().astype(np.float64)
        K[0, :] *= factor
        K[1, :] *= factor
        # Pixel centres: a pixel u covers [u, u+1); keep the principal point consistent under scaling.
        K[0, 2] = (self.K[0, 2] + 0.5) * factor - 0.5
        K[1, 2] = (self.K[1, 2] + 0.5) * factor - 0.5
        return replace(self, K=K, width=round(self.width * factor), height=round(self.height * factor))

    def with_pose(self, T_world_cam: np.ndarray) -> CameraModel:
        return replace(self, T_world_cam=np.asarray(T_world_cam, dtype=np.float64))


@dataclass
class CameraFrame:
    """One camera's images at one instant (numpy, as they come off the wire).

    Attributes:
        camera: the camera that took it.
        stamp_ns: capture time [ns] (sim time for the simulated rig).
        color: HxWx3 uint8 RGB.
        depth: HxW float32 depth [m] along the optical axis, aligned to color; 0 = no data.
        mask: HxW int32 instance ids, 0 = background/table; None when no mask source is running.
    """

    camera: CameraModel
    stamp_ns: int
    color: np.ndarray
    depth: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class MultiViewFrame:
    """One synchronised multi-view RGB-D set: what the scene consumes per timestep."""

    stamp_ns: int
    views: list[CameraFrame]

    @property
    def cameras(self) -> list[CameraModel]:
        return [v.camera for v in self.views]

    def view(self, name: str) -> CameraFrame:
        for v in self.views:
            if v.camera.name == name:
                return v
        raise KeyError(f"no camera named {name!r} in this frame (have {[v.camera.name for v in self.views]})")

    def to_torch(self, device: str = "cpu") -> dict[str, torch.Tensor]:
        """Stacked tensors: color [C,H,W,3] float in [0,1], depth [C,H,W] m, mask [C,H,W] int64 (if all have one)."""
        import torch

        out = {
            "color": torch.from_numpy(np.stack([v.color for v in self.views])).to(device).float() / 255.0,
            "depth": torch.from_numpy(np.stack([v.depth for v in self.views]).astype(np.float32)).to(device),
        }
        if all(v.mask is not None for v in self.views):
            out["mask"] = torch.from_numpy(np.stack([v.mask for v in self.views]).astype(np.int64)).to(device)
        return out


@dataclass
class ObjectPose:
    """Ground-truth or estimated rigid pose of one object in the world frame."""

    object_id: int
    position: np.ndarray  # [3] metres
    quat_wxyz: np.ndarray  # [4]
    linear_velocity: np.ndarray | None = None  # [3] m/s
    angular_velocity: np.ndarray | None = None  # [3] rad/s


@dataclass(frozen=True)
class AppliedWrench:
    """A known external wrench of one actuator (e.g. a force-controlled poker), held from ``stamp_ns`` until the next
    one (the /vidyn/cmd semantics): actuation, not ground truth. World frame, about the world origin: ``force`` [N]
    and ``torque`` = p x force [N m] for a force applied at point p, so the force's line of action (through the
    object it pushes) is known without knowing which object that is."""

    stamp_ns: int
    force: tuple[float, float, float]
    torque: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def line_point(self) -> tuple[float, float, float] | None:
        """The point of the line of action closest to the world origin (None for a zero force)."""
        f = self.force
        n2 = f[0] ** 2 + f[1] ** 2 + f[2] ** 2
        if n2 <= 0.0:
            return None
        t = self.torque
        c = (f[1] * t[2] - f[2] * t[1], f[2] * t[0] - f[0] * t[2], f[0] * t[1] - f[1] * t[0])  # f x tau
        return (c[0] / n2, c[1] / n2, c[2] / n2)


@dataclass
class RigFrame:
    """What a simulated rig yields per frame: the multi-view images plus ground truth (evaluation only), and the
    changes of applied external forces since the previous frame (actuation, e.g. a scenario's impulse events)."""

    frame: MultiViewFrame
    object_poses: list[ObjectPose]
    wrenches: list[AppliedWrench] = field(default_factory=list)


@dataclass
class GaussianSet:
    """A set of 3D Gaussians, each a particle with an object id (torch tensors, one device).

    Attributes:
        means: [N, 3] centres in the world frame [m].
        quats: [N, 4] rotations, (w, x, y, z), not necessarily normalised (normalise before use).
        log_scales: [N, 3] log of the per-axis standard deviations [log m].
        colors: [N, 3] RGB in [0, 1].
        opacity_logits: [N] pre-sigmoid opacities.
        object_ids: [N] int64, 0 = background / table.
        particle_ids: [N] int64 stable identity of each Gaussian: it keeps its id while it lives (tracking,
            snapshots, files), and ids of removed Gaussians are not reused by the scene that made them. None at
            construction: 0..N-1.
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    colors: torch.Tensor
    opacity_logits: torch.Tensor
    object_ids: torch.Tensor
    particle_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.particle_ids is None:
            import torch

            self.particle_ids = torch.arange(self.means.shape[0], dtype=torch.int64, device=self.means.device)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def scales(self) -> torch.Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        return self.opacity_logits.sigmoid()

    @property
    def device(self) -> Any:
        return self.means.device

    def to(self, device: Any) -> GaussianSet:
        return GaussianSet(**{k: getattr(self, k).to(device) for k in _GAUSSIAN_FIELDS})

    def detach(self) -> GaussianSet:
        return GaussianSet(**{k: getattr(self, k).detach() for k in _GAUSSIAN_FIELDS})

    def clone(self) -> GaussianSet:
        return GaussianSet(**{k: getattr(self, k).clone() for k in _GAUSSIAN_FIELDS})

    def subset(self, index: torch.Tensor) -> GaussianSet:
        return GaussianSet(**{k: getattr(self, k)[index] for k in _GAUSSIAN_FIELDS})


_GAUSSIAN_FIELDS = ("means", "quats", "log_scales", "colors", "opacity_logits", "object_ids", "particle_ids")


def invert_se3(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform."""
    R = T[:3, :3]
    t = T[:3, 3]
    out = np.eye(4, dtype=np.result_type(T, np.float64))
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out
