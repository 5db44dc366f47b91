"""The one rendering interface. Backends: ``torch`` (CPU/CUDA reference, differentiable) and ``gsplat`` (CUDA).

``render`` draws one scene; ``render_batch`` draws B configurations of the same Gaussians (e.g. the predicted
futures of B candidate action sequences: only positions and rotations differ) in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vidyn_ros.types import CameraModel, GaussianSet


@dataclass
class RenderOutput:
    """Rendered views, stacked over cameras.

    Attributes:
        rgb: [C, H, W, 3] colour in [0, 1] (composited over ``background``).
        depth: [C, H, W] expected depth along the optical axis [m] (alpha-normalised; 0 where alpha ~ 0).
        alpha: [C, H, W] accumulated opacity.
        mask_contribution: [C, M, N] Γ_{c,m}^{(i)} = max over pixels u of mask m in view c of
            γ_c^{(i)}(u) = α_c^{(i)}(u) Π_{j in front of i} (1 − α_c^{(j)}(u)); only when ``masks`` were given.
            Mask m corresponds to instance id ``mask_ids[m]``.
        mask_ids: [M] the instance ids (>0) that the M rows of ``mask_contribution`` stand for.
        visible: [C, N] bool, Gaussian i touched at least one pixel of view c.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    mask_contribution: torch.Tensor | None = None
    mask_ids: torch.Tensor | None = None
    visible: torch.Tensor | None = None


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
    """Render ``gaussians`` from each camera at the camera's own resolution (use ``CameraModel.scaled`` to shrink).

    Args:
        gaussians: the scene (any device; output is on the same device).
        cameras: C pinhole cameras (intrinsics + camera-to-world pose).
        background: RGB in [0, 1] composited behind the Gaussians.
        masks: optional [C, H, W] int instance masks (0 = background); fills ``mask_contribution`` for id voting.
        backend: "auto" (gsplat when the Gaussians are on CUDA and gsplat is importable, else torch), "torch", "gsplat".
        near, far: clipping distances [m]; Gaussians behind ``near`` are culled.
    """
    from vidyn_ros.render import _dispatch

    return _dispatch.render(gaussians, cameras, background=background, masks=masks, backend=backend, near=near, far=far)


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
    """Render B configurations of ``gaussians`` in one call: positions ``means`` [..., N, 3] and rotations ``quats``
    [..., N, 4] (default: the set's own) with any leading batch dims; scales, opacities and colours are the set's.

    Equal, value and gradient, to calling :func:`render` once per configuration (tested), but all views go through
    one projection and one rasterisation (gsplat: one ``rasterization`` call with batch dims; torch: as few
    intersect / composite calls as its pixel budget allows). Outputs have the leading batch dims before the camera
    dim: rgb [..., C, H, W, 3], depth / alpha [..., C, H, W], visible [..., C, N]. No masks (id voting is per scene).
    """
    from vidyn_ros.render import _dispatch

    return _dispatch.render_batch(gaussians, cameras, means, quats, background=background, backend=backend,
                                  near=near, far=far)
