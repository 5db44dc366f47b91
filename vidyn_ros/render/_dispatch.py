"""Turn the public ``render(GaussianSet, [CameraModel])`` call into backend tensors and pick the backend."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import torch

from vidyn_ros.errors import ConfigError
from vidyn_ros.render.api import RenderOutput
from vidyn_ros.types import CameraModel, GaussianSet

BACKENDS = ("auto", "torch", "gsplat")


def camera_tensors(
    cameras: Sequence[CameraModel], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """viewmats [C, 4, 4] (world-to-camera), Ks [C, 3, 3] (OpenCV pixel centres), width, height.

    All cameras must share one resolution because the outputs are stacked [C, H, W]. A ``T_world_cam`` given as a
    torch tensor (e.g. requires_grad, for pose refinement) stays in the graph: the torch backend is differentiable
    w.r.t. the camera pose.
    """
    if len(cameras) == 0:
        raise ConfigError("render: no cameras given")
    sizes = {(int(c.width), int(c.height)) for c in cameras}
    if len(sizes) != 1:
        raise ConfigError(f"render: all cameras must have one resolution, got {sorted(sizes)} (use CameraModel.scaled)")
    (width, height) = sizes.pop()
    views = []
    for c in cameras:
        T = c.T_world_cam
        if isinstance(T, torch.Tensor):
            T = T.to(device=device, dtype=dtype)
            R, t = T[:3, :3], T[:3, 3]
            top = torch.cat([R.T, (-R.T @ t)[:, None]], dim=1)  # rigid inverse, differentiable
            views.append(torch.cat([top, T.new_tensor([[0.0, 0.0, 0.0, 1.0]])], dim=0))
        else:
            # Invert in float64 numpy: a float32 inverse of a pose far from the origin loses millimetres.
            views.append(torch.as_tensor(np.linalg.inv(np.asarray(T, dtype=np.float64)), dtype=dtype, device=device))
    Ks = np.stack([np.asarray(c.K, dtype=np.float64) for c in cameras])
    return torch.stack(views), torch.as_tensor(Ks, dtype=dtype, device=device), width, height


def gsplat_available() -> bool:
    """True when gsplat is installed (does not import it: that would JIT-compile CUDA)."""
    return importlib.util.find_spec("gsplat") is not None


def choose_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"render: unknown backend {backend!r} (choose one of {', '.join(BACKENDS)})")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise ConfigError("render: backend 'gsplat' needs the Gaussians on a CUDA device")
    return backend


def background_tensor(
    background: torch.Tensor | Sequence[float], C: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """[3] or [C, 3] -> [C, 3]."""
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.shape == (3,):
        bg = bg[None].expand(C, 3)
    if bg.shape != (C, 3):
        raise ConfigError(f"render: background must have shape [3] or [{C}, 3], got {list(bg.shape)}")
    return bg


def mask_tensors(
    masks: torch.Tensor | np.ndarray, C: int, height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """masks [C, H, W] int -> (masks int64 on device, sorted unique instance ids > 0 [M])."""
    m = torch.as_tensor(masks, device=device)
    if m.shape != (C, height, width):
        raise ConfigError(f"render: masks must have shape [{C}, {height}, {width}], got {list(m.shape)}")
    m = m.long()
    ids = torch.unique(m)
    return m, ids[ids > 0]


def render(
    gaussians: GaussianSet,
    cameras: Sequence[CameraModel],
    *,
    background: torch.Tensor | Sequence[float] = (0.0, 0.0, 0.0),
    masks: torch.Tensor | None = None,
    backend: str = "auto",
    near: float = 0.01,
    far: float = 100.0,
) -> RenderOutput:
    """See :func:`vidyn_ros.render.api.render`."""
    device = gaussians.means.device
    dtype = gaussians.means.dtype
    which = choose_backend(backend, device)
    viewmats, Ks, width, height = camera_tensors(cameras, device, dtype)
    C = viewmats.shape[0]
    bg = background_tensor(background, C, device, dtype)
    mask_t, mask_ids = (None, None) if masks is None else mask_tensors(masks, C, height, width, device)
    args = (
        gaussians.means,
        gaussians.quats,
        gaussians.log_scales.exp(),
        gaussians.opacity_logits.sigmoid(),
        gaussians.colors,
        viewmats,
        Ks,
        width,
        height,
    )
    if which == "gsplat":
        from vidyn_ros.render import _gsplat_backend

        out = _gsplat_backend.rasterize(*args, backgrounds=bg, masks=mask_t, mask_ids=mask_ids, near=near, far=far)
    else:
        from vidyn_ros.render import _torch_backend

        out = _torch_backend.rasterize(*args, backgrounds=bg, masks=mask_t, mask_ids=mask_ids, near=near, far=far)
    return RenderOutput(
        rgb=out["rgb"],
        depth=out["depth"],
        alpha=out["alpha"],
        mask_contribution=out.get("mask_contribution"),
        mask_ids=mask_ids,
        visible=out.get("visible"),
    )


def render_torch(
    gaussians: GaussianSet,
    cameras: Sequence[CameraModel],
    **kwargs: object,
) -> RenderOutput:
    """The reference twin: :func:`render` with ``backend="torch"`` (works on CPU and CUDA tensors)."""
    return render(gaussians, cameras, backend="torch", **kwargs)  # type: ignore[arg-type]


def render_batch(
    gaussians: GaussianSet,
    cameras: Sequence[CameraModel],
    means: torch.Tensor,
    quats: torch.Tensor | None = None,
    *,
    background: torch.Tensor | Sequence[float] = (0.0, 0.0, 0.0),
    backend: str = "auto",
    near: float = 0.01,
    far: float = 100.0,
) -> RenderOutput:
    """See :func:`vidyn_ros.render.api.render_batch`."""
    N = len(gaussians)
    if means.dim() < 2 or means.shape[-2:] != (N, 3):
        raise ConfigError(f"render_batch: means must have shape [..., {N}, 3], got {list(means.shape)}")
    lead = tuple(means.shape[:-2])
    if quats is None:
        quats = gaussians.quats.expand(*lead, N, 4)
    if tuple(quats.shape) != (*lead, N, 4):
        raise ConfigError(f"render_batch: quats must have shape {[*lead, N, 4]}, got {list(quats.shape)}")
    device, dtype = means.device, means.dtype
    which = choose_backend(backend, device)
    viewmats, Ks, width, height = camera_tensors(cameras, device, dtype)
    C = viewmats.shape[0]
    bg = background_tensor(background, C, device, dtype)
    B = int(np.prod(lead)) if lead else 1
    args = (
        means.reshape(B, N, 3),
        quats.reshape(B, N, 4),
        gaussians.log_scales.exp(),
        gaussians.opacity_logits.sigmoid(),
        gaussians.colors,
        viewmats,
        Ks,
        width,
        height,
    )
    if which == "gsplat":
        from vidyn_ros.render import _gsplat_backend

        out = _gsplat_backend.rasterize_batch(*args, backgrounds=bg, near=near, far=far)
    else:
        from vidyn_ros.render import _torch_backend

        out = _torch_backend.rasterize(*args, backgrounds=bg, near=near, far=far)

    def unflatten(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*lead, *t.shape[1:])

    return RenderOutput(rgb=unflatten(out["rgb"]), depth=unflatten(out["depth"]), alpha=unflatten(out["alpha"]),
                        visible=unflatten(out["visible"]))
