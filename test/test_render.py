"""CPU tests of the differentiable Gaussian renderer (torch reference backend)."""

from __future__ import annotations

import numpy as np
import torch

from vidyn_ros.geometry import look_at
from vidyn_ros.render import _torch_backend as tb
from vidyn_ros.render import render
from vidyn_ros.render._dispatch import camera_tensors
from vidyn_ros.types import CameraModel, GaussianSet

ORIGIN = np.zeros(3)


def random_scene(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> GaussianSet:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.6, 0.6, 0.1])
    return GaussianSet(
        means=means.to(dtype),
        quats=torch.randn(n, 4, generator=g).to(dtype),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * 0.01 + 0.003).to(dtype),
        colors=torch.rand(n, 3, generator=g).to(dtype),
        # opacities below 0.99 keep every pixel away from the 0.999 clamp
        opacity_logits=(torch.randn(n, generator=g).clamp(-3, 3) + 0.5).to(dtype),
        object_ids=torch.zeros(n, dtype=torch.long),
    )


def ring_cameras(n: int = 4, width: int = 160, height: int = 120, f: float = 150.0) -> list[CameraModel]:
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    angles = np.linspace(0, 2 * np.pi, n + 1)[:n]
    return [
        CameraModel(f"cam{i}", width, height, K, look_at(np.array([0.8 * np.cos(a), 0.8 * np.sin(a), 0.6]), ORIGIN))
        for i, a in enumerate(angles)
    ]


def test_culled_matches_brute_force_on_random_scene() -> None:
    scene = random_scene(200)
    cams = ring_cameras(2)
    out = render(scene, cams, background=(0.2, 0.3, 0.4), backend="torch")
    viewmats, Ks, W, H = camera_tensors(cams, torch.device("cpu"), torch.float32)
    ref = tb.rasterize_dense(
        scene.means, scene.quats, scene.scales, scene.opacities, scene.colors, viewmats, Ks, W, H,
        backgrounds=torch.tensor([[0.2, 0.3, 0.4]] * 2),
    )
    assert out.alpha.max() > 0.5  # the scene is actually in view
    for key in ("rgb", "depth", "alpha"):
        assert (getattr(out, key) - ref[key]).abs().max() < 1e-5, key


def test_empty_scene_renders_background() -> None:
    scene = random_scene(0)
    out = render(scene, ring_cameras(1), background=(0.1, 0.5, 0.9), backend="torch")
    assert out.rgb.shape == (1, 120, 160, 3)
    assert torch.allclose(out.rgb, torch.tensor([0.1, 0.5, 0.9]).expand(1, 120, 160, 3))
    assert out.alpha.abs().max() == 0 and out.depth.abs().max() == 0
