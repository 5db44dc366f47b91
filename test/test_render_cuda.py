"""GPU parity: gsplat backend vs the torch reference backend (skips without CUDA or without gsplat).

gsplat is never imported at collection time (it JIT-compiles / loads its CUDA extension): the tests call
``render(..., backend="gsplat")``, which imports it lazily.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_render import PARAMS, ring_cameras
from test_render import random_scene as cpu_random_scene

from vidyn_ros.render import render
from vidyn_ros.types import CameraModel, GaussianSet

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("gsplat") is None, reason="needs gsplat"),
]


def random_scene(n: int, seed: int = 0) -> GaussianSet:
    """The CPU tests' random scene (same draws), on the GPU."""
    return cpu_random_scene(n, seed).to("cuda")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def masks_for(cams: list[CameraModel]) -> torch.Tensor:
    H, W = cams[0].height, cams[0].width
    m = torch.zeros(len(cams), H, W, dtype=torch.int64, device="cuda")
    m[:, : H // 2, : W // 2] = 1
    m[:, H // 3 :, W // 3 :] = 4
    return m


@pytest.mark.parametrize(("n", "width", "height"), [(2000, 160, 120), (5000, 320, 240)])
def test_gsplat_and_torch_images_agree(n: int, width: int, height: int) -> None:
    scene = random_scene(n)
    cams = ring_cameras(4, width, height, 150.0 * width / 160)
    bg = (0.1, 0.2, 0.3)
    a = render(scene, cams, background=bg, backend="gsplat")
    b = render(scene, cams, background=bg, backend="torch")
    assert a.rgb.shape == b.rgb.shape == (4, height, width, 3)
    assert b.alpha.mean() > 0.1  # the scene fills a good part of the views
    assert psnr(a.rgb, b.rgb) > 40.0
    assert psnr(a.alpha, b.alpha) > 40.0
    lit = (a.alpha > 0.5) & (b.alpha > 0.5)
    assert (a.depth - b.depth)[lit].abs().mean() < 1e-3 * b.depth[lit].mean()
    # without masks gsplat's `visible` is the cheap superset (screen box overlaps the image)
    assert not (b.visible & ~a.visible).any()


def test_gsplat_and_torch_gradients_agree() -> None:
    cams = ring_cameras(4, 160, 120)
    w = torch.rand(4, 120, 160, 5, generator=torch.Generator().manual_seed(1)).cuda()

    def grads(backend: str) -> list[torch.Tensor]:
        s = random_scene(2000, seed=2)
        for p in PARAMS:
            getattr(s, p).requires_grad_(True)
        out = render(s, cams, background=(0.5, 0.5, 0.5), backend=backend)
        loss = (out.rgb * w[..., :3]).sum() + (out.depth * w[..., 3]).sum() + (out.alpha * w[..., 4]).sum()
        loss.backward()
        return [getattr(s, p).grad for p in PARAMS]

    for name, ga, gb in zip(PARAMS, grads("gsplat"), grads("torch"), strict=True):
        cos = torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0).item()
        assert cos > 0.99, f"{name}: gradient cosine {cos:.4f}"


def test_mask_contribution_and_visibility_agree() -> None:
    scene = random_scene(2000, seed=3)
    cams = ring_cameras(4, 160, 120)
    masks = masks_for(cams)
    a = render(scene, cams, masks=masks, backend="gsplat")
    b = render(scene, cams, masks=masks, backend="torch")
    assert a.mask_ids.tolist() == b.mask_ids.tolist() == [1, 4]
    assert a.mask_contribution.shape == b.mask_contribution.shape == (4, 2, 2000)
    assert (a.mask_contribution - b.mask_contribution).abs().max() < 1e-3
    assert b.mask_contribution.max() > 0.5
    assert (a.visible != b.visible).float().mean() < 1e-3


def test_torch_backend_on_cuda_matches_cpu() -> None:
    scene = random_scene(1000, seed=4)
    cams = ring_cameras(2, 160, 120)
    a = render(scene, cams, backend="torch")
    b = render(scene.to("cpu"), cams, backend="torch")
    for key in ("rgb", "depth", "alpha"):
        assert (getattr(a, key).cpu() - getattr(b, key)).abs().max() < 1e-4, key


def test_auto_picks_gsplat_on_cuda_and_handles_empty_scene() -> None:
    empty = random_scene(0)
    out = render(empty, ring_cameras(2), background=(0.3, 0.3, 0.3))  # auto -> gsplat
    assert out.alpha.abs().max() == 0
    assert torch.allclose(out.rgb, torch.full_like(out.rgb, 0.3))


def test_batched_gsplat_matches_per_configuration_and_torch() -> None:
    """render_batch with gsplat (one rasterization call with batch dims) = gsplat per configuration (values,
    gradients of the per-configuration means) and agrees with the torch backend's batched render."""
    from vidyn_ros.render import render_batch

    scene = random_scene(1500, seed=5)
    cams = ring_cameras(2, 80, 60, 75.0)
    g = torch.Generator(device="cuda").manual_seed(0)
    means0 = scene.means + 0.02 * torch.randn(6, 1500, 3, generator=g, device="cuda")
    w = torch.rand(6, 2, 60, 80, 3, generator=g, device="cuda")

    def batched(backend: str) -> tuple[object, torch.Tensor]:
        m = means0.clone().requires_grad_(True)
        out = render_batch(scene, cams, m, background=(0.2, 0.2, 0.2), backend=backend)
        ((out.rgb * w).sum() + out.alpha.sum()).backward()
        return out, m.grad

    a, ga = batched("gsplat")
    assert a.rgb.shape == (6, 2, 60, 80, 3)
    m = means0.clone().requires_grad_(True)
    loss = 0.0
    for b in range(6):
        out = render(replace(scene, means=m[b]), cams, background=(0.2, 0.2, 0.2),
                     backend="gsplat")
        assert (out.rgb - a.rgb[b]).abs().max() < 1e-4
        loss = loss + (out.rgb * w[b]).sum() + out.alpha.sum()
    loss.backward()
    assert torch.nn.functional.cosine_similarity(ga.flatten(), m.grad.flatten(), dim=0).item() > 0.999
    t, gt = batched("torch")
    assert psnr(a.rgb, t.rgb) > 40.0
    assert torch.nn.functional.cosine_similarity(ga.flatten(), gt.flatten(), dim=0).item() > 0.99
