"""CPU tests of the differentiable Gaussian renderer (torch reference backend).

Analytic cases use a camera at the origin looking along +z (T_world_cam = I), so a Gaussian at (x, y, z) projects to
(f x / z + cx, f y / z + cy) and pixel (u, v)'s centre is at integer (u, v) (OpenCV convention).
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from vidyn_ros.errors import ConfigError
from vidyn_ros.geometry import look_at
from vidyn_ros.render import RenderOutput, render
from vidyn_ros.render import _torch_backend as tb
from vidyn_ros.render._dispatch import camera_tensors
from vidyn_ros.types import CameraModel, GaussianSet

ORIGIN = np.zeros(3)
PARAMS = ("means", "quats", "log_scales", "colors", "opacity_logits")


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def gaussians(
    means: list[list[float]],
    sigma: float | list[float],
    colors: list[list[float]],
    opacity: float | list[float],
    dtype: torch.dtype = torch.float32,
) -> GaussianSet:
    """Isotropic Gaussians from plain lists."""
    n = len(means)
    sig = torch.as_tensor(sigma, dtype=dtype).expand(n)
    op = torch.as_tensor(opacity, dtype=dtype).expand(n)
    return GaussianSet(
        means=torch.tensor(means, dtype=dtype).reshape(n, 3),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n, dtype=dtype).reshape(n, 4),
        log_scales=sig.log()[:, None].expand(n, 3).clone(),
        colors=torch.tensor(colors, dtype=dtype).reshape(n, 3),
        opacity_logits=torch.log(op / (1 - op)),
        object_ids=torch.arange(1, n + 1),
    )


def axis_camera(width: int = 31, height: int = 21, f: float = 100.0) -> CameraModel:
    """Camera at the origin looking along +z; the principal point is the centre pixel ((W-1)/2, (H-1)/2)."""
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return CameraModel("axis", width, height, K, np.eye(4))


def random_scene(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> GaussianSet:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.6, 0.6, 0.1])
    return GaussianSet(
        means=means.to(dtype),
        quats=torch.randn(n, 4, generator=g).to(dtype),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * 0.01 + 0.003).to(dtype),
        colors=torch.rand(n, 3, generator=g).to(dtype),
        # opacities up to sigmoid(3.5) = 0.97 stay clear of the 0.999 clamp
        opacity_logits=(torch.randn(n, generator=g).clamp(-3, 3) + 0.5).to(dtype),
        object_ids=torch.randint(0, 4, (n,), generator=g),
    )


def ring_cameras(n: int = 4, width: int = 160, height: int = 120, f: float = 150.0) -> list[CameraModel]:
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    angles = np.linspace(0, 2 * np.pi, n + 1)[:n]
    return [
        CameraModel(f"cam{i}", width, height, K, look_at(np.array([0.8 * np.cos(a), 0.8 * np.sin(a), 0.6]), ORIGIN))
        for i, a in enumerate(angles)
    ]


def dense_reference(scene: GaussianSet, cams: list[CameraModel], background: torch.Tensor) -> dict[str, torch.Tensor]:
    viewmats, Ks, W, H = camera_tensors(cams, scene.device, scene.means.dtype)
    return tb.rasterize_dense(
        scene.means, scene.quats, scene.scales, scene.opacities, scene.colors, viewmats, Ks, W, H,
        backgrounds=background.expand(len(cams), 3),
    )


# --- gradients -------------------------------------------------------------------------------------------------


def test_gradcheck_float64_tiny_scene() -> None:
    """Analytic compositing backward + autograd projection vs finite differences, also w.r.t. the camera pose."""
    scene = gaussians(
        [[0.0, 0.0, 0.0], [0.02, 0.01, 0.05], [-0.02, 0.0, -0.03], [0.01, -0.02, 0.02]],
        [0.03, 0.025, 0.035, 0.02], [[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9], [0.7, 0.7, 0.1]],
        [0.7, 0.5, 0.8, 0.6], dtype=torch.float64,
    )
    rng = torch.Generator().manual_seed(0)
    quats = torch.randn(4, 4, dtype=torch.float64, generator=rng)  # anisotropic, rotated
    log_scales = scene.log_scales + 0.3 * torch.randn(4, 3, dtype=torch.float64, generator=rng)
    cam = CameraModel("c", 8, 6, np.array([[8.0, 0, 3.5], [0, 8.0, 2.5], [0, 0, 1]]),
                      look_at(np.array([0.0, -0.3, 0.2]), ORIGIN))
    viewmat = torch.tensor(np.linalg.inv(cam.T_world_cam), dtype=torch.float64)[None]
    Ks = torch.tensor(cam.K, dtype=torch.float64)[None]
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)

    def f(means, quats, log_scales, colors, logits, viewmat):
        o = tb.rasterize(means, quats, log_scales.exp(), logits.sigmoid(), colors, viewmat, Ks, 8, 6, backgrounds=bg)
        return o["rgb"], o["depth"], o["alpha"]

    inputs = [t.detach().clone().requires_grad_(True)
              for t in (scene.means, quats, log_scales, scene.colors, scene.opacity_logits, viewmat)]
    alpha = f(*inputs)[2]
    assert alpha.max() > 0.5 and (alpha > 0).sum() > 30  # the scene covers most of the 8x6 image
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradients_match_brute_force_autograd() -> None:
    """On a random 200-Gaussian scene the analytic backward equals autograd through the dense cumprod renderer."""
    scene = random_scene(200, seed=3)
    cams = ring_cameras(2, 64, 48, 60.0)
    bg = torch.tensor([0.2, 0.3, 0.4])
    w = torch.rand(2, 48, 64, 5, generator=torch.Generator().manual_seed(1))

    def grads(fn) -> list[torch.Tensor]:
        s = scene.clone()
        for p in PARAMS:
            getattr(s, p).requires_grad_(True)
        rgb, depth, alpha = fn(s)
        loss = (rgb * w[..., :3]).sum() + (depth * w[..., 3]).sum() + (alpha * w[..., 4]).sum()
        loss.backward()
        return [getattr(s, p).grad for p in PARAMS]

    def culled(s: GaussianSet) -> tuple[torch.Tensor, ...]:
        out = render(s, cams, background=bg, backend="torch")
        return out.rgb, out.depth, out.alpha

    def dense(s: GaussianSet) -> tuple[torch.Tensor, ...]:
        out = dense_reference(s, cams, bg)
        return out["rgb"], out["depth"], out["alpha"]

    for name, g1, g2 in zip(PARAMS, grads(culled), grads(dense), strict=True):
        assert g1.abs().max() > 0, name
        assert (g1 - g2).abs().max() <= 1e-4 * g2.abs().max() + 1e-6, name


# --- culling ---------------------------------------------------------------------------------------------------


def test_culled_matches_brute_force_on_random_scene() -> None:
    scene = random_scene(200)
    cams = ring_cameras(2)
    bg = torch.tensor([0.2, 0.3, 0.4])
    masks = torch.zeros(2, 120, 160, dtype=torch.int64)
    masks[:, 20:70, 30:100] = 5
    masks[:, 60:110, 80:150] = 2
    out = render(scene, cams, background=bg, masks=masks, backend="torch")
    ref = dense_reference(scene, cams, bg)
    assert out.alpha.max() > 0.5 and (out.alpha > 0.1).float().mean() > 0.1  # the scene is in view
    for key in ("rgb", "depth", "alpha"):
        assert (getattr(out, key) - ref[key]).abs().max() < 1e-5, key
    # Γ and visibility from the pair path = per-mask max of the brute-force γ
    assert out.mask_ids.tolist() == [2, 5]
    gamma = ref["gamma"]  # [C, HW, N]
    flat = masks.reshape(2, -1)
    for m, mid in enumerate([2, 5]):
        expect = torch.where((flat == mid)[..., None], gamma, torch.zeros_like(gamma)).amax(1)  # [C, N]
        assert (out.mask_contribution[:, m] - expect).abs().max() < 1e-5
    assert torch.equal(out.visible, (gamma > 0).any(1))
    assert out.visible.any()


def test_output_shapes_dtype_and_background_per_camera() -> None:
    scene = random_scene(50, dtype=torch.float64)
    cams = ring_cameras(3, 40, 30, 40.0)
    bg = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out = render(scene, cams, background=bg, backend="torch")
    assert out.rgb.shape == (3, 30, 40, 3) and out.depth.shape == (3, 30, 40) and out.alpha.shape == (3, 30, 40)
    assert out.rgb.dtype == torch.float64 and out.visible.shape == (3, 50)
    assert out.mask_contribution is None and out.mask_ids is None
    empty = out.alpha == 0
    assert empty.any()
    for c in range(3):
        assert torch.equal(out.rgb[c][empty[c]], bg[c].expand(int(empty[c].sum()), 3))


# --- analytic cases ----------------------------------------------------------------------------------------------


def test_isotropic_gaussian_peak_and_footprint() -> None:
    """Peak = colour · opacity at the projected centre; the alpha profile is a Gaussian of std √((σf/z)² + 0.3)."""
    sigma, z, f, o = 0.03, 1.0, 100.0, 0.8
    cam = axis_camera(41, 31, f)
    out = render(gaussians([[0.0, 0.0, z]], sigma, [[0.2, 0.6, 1.0]], o), [cam], backend="torch")
    alpha = out.alpha[0].double()
    assert torch.argmax(alpha).item() == 15 * 41 + 20  # centre pixel (u=20, v=15)
    assert alpha[15, 20].item() == pytest.approx(o, abs=1e-6)
    assert out.rgb[0, 15, 20].tolist() == pytest.approx([0.2 * o, 0.6 * o, 1.0 * o], abs=1e-6)
    # fit std from the row profile: ln(alpha / o) = -d² / (2 s²)
    d = torch.arange(1, 8, dtype=torch.float64)
    prof = alpha[15, 20 + 1 : 20 + 8]
    s2 = -(d * d) / (2 * torch.log(prof / o))
    s_fit = math.sqrt(float(s2.mean()))
    assert s_fit == pytest.approx(math.sqrt((sigma * f / z) ** 2 + tb.EPS2D), rel=1e-3)
    assert s_fit == pytest.approx(sigma * f / z, rel=0.02)
    assert torch.allclose(alpha[15, 20 - 7 : 20].flip(0), prof)  # symmetric
    # footprint ends where alpha drops below 1/255
    r_cut = math.sqrt(2 * math.log(o * 255)) * s_fit
    row = alpha[15]
    lit = torch.nonzero(row > 0).squeeze(1)
    assert (lit.max() - 20).item() == math.floor(r_cut) and (20 - lit.min()).item() == math.floor(r_cut)


def test_occlusion_order_and_input_order_independence() -> None:
    cam = axis_camera()
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    near_red = gaussians([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], [0.05, 0.1], [red, blue], 0.97)
    centre = render(near_red, [cam], backend="torch").rgb[0, 10, 15]
    assert centre[0] > 0.95 and centre[2] < 0.05
    near_blue = gaussians([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]], [0.1, 0.05], [red, blue], 0.97)
    centre = render(near_blue, [cam], backend="torch").rgb[0, 10, 15]
    assert centre[2] > 0.95 and centre[0] < 0.05
    # the same scene with the Gaussians listed in the other order renders identically
    scene = random_scene(100, seed=7)
    cams = ring_cameras(2, 64, 48, 60.0)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    a = render(scene, cams, backend="torch")
    b = render(scene.subset(perm), cams, backend="torch")
    assert (a.rgb - b.rgb).abs().max() < 1e-6 and (a.depth - b.depth).abs().max() < 1e-6
    assert torch.equal(a.visible[:, perm], b.visible)


def test_empty_scene_renders_background() -> None:
    scene = random_scene(0)
    out = render(scene, ring_cameras(1), background=(0.1, 0.5, 0.9), backend="torch")
    assert out.rgb.shape == (1, 120, 160, 3)
    assert torch.allclose(out.rgb, torch.tensor([0.1, 0.5, 0.9]).expand(1, 120, 160, 3))
    assert out.alpha.abs().max() == 0 and out.depth.abs().max() == 0 and out.visible.shape == (1, 0)


def test_gaussians_behind_the_camera_contribute_nothing() -> None:
    cam = axis_camera()
    front = gaussians([[0.0, 0.0, 1.0]], 0.05, [[0.0, 1.0, 0.0]], 0.9)
    # behind the camera, huge, opaque: a wrong sign in the projection would cover the whole image
    behind = gaussians([[0.0, 0.0, -1.0], [0.05, 0.0, -0.3], [0.0, 0.0, 0.005]], 0.5, [[1.0, 0.0, 0.0]] * 3, 0.99)
    only_behind = render(behind, [cam], backend="torch")
    assert only_behind.alpha.abs().max() == 0 and not only_behind.visible.any()
    both = GaussianSet(**{k: torch.cat([getattr(front, k), getattr(behind, k)]) for k in (*PARAMS, "object_ids")})
    for p in PARAMS:
        getattr(both, p).requires_grad_(True)
    a = render(front, [cam], backend="torch")
    b = render(both, [cam], backend="torch")
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha)
    assert b.visible[0].tolist() == [True, False, False, False]
    b.rgb.sum().backward()
    assert both.means.grad[1:].abs().max() == 0 and torch.isfinite(both.means.grad).all()


def test_depth_is_z_of_a_single_gaussian() -> None:
    cam = axis_camera()
    out = render(gaussians([[0.02, -0.01, 1.5]], 0.05, [[0.5, 0.5, 0.5]], 0.99), [cam], backend="torch")
    lit = out.alpha[0] > 0
    assert lit.sum() > 50
    # expected depth is alpha-normalised, so every lit pixel sees exactly z; unlit pixels are 0
    assert torch.allclose(out.depth[0][lit], torch.tensor(1.5), atol=1e-6)
    assert out.depth[0][~lit].abs().max() == 0
    # two at different depths: the normalised expectation lies between, weighted towards the nearer one
    two = render(gaussians([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], [0.05, 0.1], [[1, 0, 0], [0, 0, 1]], 0.5), [cam],
                 backend="torch")
    d = two.depth[0, 10, 15].item()
    w1, w2 = 0.5, 0.5 * 0.5  # γ of the near and the far Gaussian at the centre pixel
    assert d == pytest.approx((w1 * 1.0 + w2 * 2.0) / (w1 + w2), abs=1e-5)


def test_mask_contribution_side_by_side_and_occluded() -> None:
    cam = axis_camera(81, 21)
    # A left (u = 10), B right (u = 70), C right behind A (same ray, hidden by A's wide opaque core)
    scene = gaussians(
        [[-0.3, 0.0, 1.0], [0.3, 0.0, 1.0], [-0.6, 0.0, 2.0]],
        [0.06, 0.03, 0.01], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0.9995, 0.7, 0.9],
    )
    masks = torch.zeros(1, 21, 81, dtype=torch.int32)
    masks[0, :, :40] = 3
    masks[0, :, 40:] = 7
    out = render(scene, [cam], masks=masks, backend="torch")
    assert out.mask_ids.tolist() == [3, 7]
    G = out.mask_contribution[0]  # [M=2, N=3]
    assert G.shape == (2, 3)
    assert G[0, 0].item() == pytest.approx(0.999, abs=1e-5)  # A's peak (alpha clamps at 0.999), in its own mask
    assert G[1, 1].item() == pytest.approx(0.7, abs=1e-5)  # B's peak
    assert G[1, 0] == 0 and G[0, 1] == 0  # nothing in the other mask
    assert G[0, 2] < 0.01 * G[0, 0]  # C is behind A's opaque core
    assert int(torch.argmax(G[:, 0])) == 0 and int(torch.argmax(G[:, 1])) == 1
    # without A in front, C shows up in mask 3 with its full peak
    alone = render(scene.subset(torch.tensor([1, 2])), [cam], masks=masks, backend="torch")
    assert alone.mask_contribution[0, 0, 1].item() == pytest.approx(0.9, abs=1e-5)


# --- interface ---------------------------------------------------------------------------------------------------


def test_bad_arguments_raise_config_errors() -> None:
    scene = random_scene(10)
    cams = ring_cameras(2, 40, 30)
    with pytest.raises(ConfigError, match="backend"):
        render(scene, cams, backend="vulkan")
    with pytest.raises(ConfigError, match="CUDA"):
        render(scene, cams, backend="gsplat")
    with pytest.raises(ConfigError, match="resolution"):
        render(scene, [cams[0], cams[1].scaled(0.5)])
    with pytest.raises(ConfigError, match="masks"):
        render(scene, cams, masks=torch.zeros(1, 30, 40, dtype=torch.int64))
    with pytest.raises(ConfigError, match="no cameras"):
        render(scene, [])


def test_auto_backend_on_cpu_is_torch_and_gsplat_not_imported() -> None:
    code = (
        "import sys, torch, numpy as np\n"
        "from vidyn_ros.render import render\n"
        "from vidyn_ros.types import GaussianSet, CameraModel\n"
        "g = GaussianSet(torch.zeros(1, 3) + torch.tensor([0, 0, 1.0]), torch.tensor([[1.0, 0, 0, 0]]),"
        " torch.full((1, 3), -3.0), torch.ones(1, 3), torch.ones(1), torch.ones(1, dtype=torch.long))\n"
        "cam = CameraModel('c', 16, 12, np.array([[10.0, 0, 7.5], [0, 10.0, 5.5], [0, 0, 1]]))\n"
        "out = render(g, [cam])\n"
        "assert out.alpha.max() > 0.3\n"
        "assert 'gsplat' not in sys.modules, 'gsplat imported on a CPU-only render'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_projection_matches_gsplat_reference_implementation() -> None:
    """Our EWA projection equals gsplat's own pure-torch twin (same Jacobian clamp, dilation, conic layout)."""
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")  # pure torch; importing it compiles nothing
    scene = random_scene(300, seed=5)
    cams = ring_cameras(3, 64, 48, 60.0)
    viewmats, Ks, W, H = camera_tensors(cams, torch.device("cpu"), torch.float32)
    Kg = tb.gsplat_intrinsics(Ks)
    ours = tb.project(scene.means, scene.quats, scene.scales, scene.opacities, viewmats, Kg, W, H)
    covars, _ = torch_impl._quat_scale_to_covar_preci(scene.quats, scene.scales, True, False, triu=False)
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        scene.means, covars, viewmats, Kg, W, H, eps2d=tb.EPS2D
    )
    valid = (ours.radii > 0).any(-1)
    assert valid.sum() > 100
    assert ((radii > 0).any(-1) | ~valid).all()  # gsplat's 3.33-sigma boxes contain our opacity-aware ones
    assert torch.allclose(ours.means2d[valid], means2d[valid], atol=1e-4)
    assert torch.allclose(ours.depths, depths, atol=1e-6)
    assert torch.allclose(ours.conics[valid], conics[valid], rtol=1e-4, atol=1e-6)


def test_camera_pose_given_as_tensor_gets_a_gradient() -> None:
    """A T_world_cam tensor with requires_grad (pose refinement) receives d(render)/d(pose) = finite differences."""
    scene = random_scene(150, seed=6, dtype=torch.float64)
    cam = ring_cameras(1, 48, 36, 45.0)[0]
    T0 = torch.tensor(cam.T_world_cam, dtype=torch.float64)
    target = render(scene, [cam], backend="torch").rgb.detach()

    def loss(shift: torch.Tensor) -> torch.Tensor:
        T = T0.clone()
        T[:3, 3] = T[:3, 3] + shift
        out = render(scene, [replace(cam, T_world_cam=T)], background=(0.5, 0.5, 0.5), backend="torch")
        return ((out.rgb - target) ** 2).sum()

    shift = torch.tensor([0.01, -0.005, 0.008], dtype=torch.float64, requires_grad=True)
    loss(shift).backward()
    eps = 1e-6
    fd = torch.stack([(loss(shift.detach() + eps * e) - loss(shift.detach() - eps * e)) / (2 * eps)
                      for e in torch.eye(3, dtype=torch.float64)])
    assert shift.grad.abs().max() > 1e-3
    assert torch.allclose(shift.grad, fd, rtol=1e-3, atol=1e-6)


def test_row_bands_give_the_same_render_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processing each view in bands of rows (the CPU work unit) changes nothing but speed."""
    scene = random_scene(300, seed=8)
    cams = ring_cameras(2, 64, 48, 60.0)
    masks = torch.zeros(2, 48, 64, dtype=torch.int64)
    masks[:, 5:30, 10:40] = 1
    masks[:, 20:47, 30:60] = 2

    def run() -> tuple[RenderOutput, list[torch.Tensor]]:
        s = scene.clone()
        for p in PARAMS:
            getattr(s, p).requires_grad_(True)
        out = render(s, cams, masks=masks, background=(0.3, 0.3, 0.3), backend="torch")
        (out.rgb.sum() + out.depth.sum() + out.alpha.sum()).backward()
        return out, [getattr(s, p).grad for p in PARAMS]

    whole, g_whole = run()
    monkeypatch.setattr(tb, "BAND_PIXELS", 64 * 7)  # 7-row bands: 48 rows do not split evenly
    banded, g_banded = run()
    for key in ("rgb", "depth", "alpha", "mask_contribution"):
        assert (getattr(whole, key) - getattr(banded, key)).abs().max() < 1e-6, key
    assert torch.equal(whole.visible, banded.visible)
    for name, a, b in zip(PARAMS, g_whole, g_banded, strict=True):  # equal up to float summation order
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), name


def test_cpu_thread_setting_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend runs its CPU work on CPU_THREADS threads but leaves torch's global setting as it found it."""
    monkeypatch.setattr(tb, "CPU_THREADS", 1)  # not the global 2 below, whatever the environment or earlier tests set
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        scene = random_scene(50)
        scene.means.requires_grad_(True)
        out = render(scene, ring_cameras(1, 32, 24, 30.0), backend="torch")
        assert torch.get_num_threads() == 2
        out.rgb.sum().backward()
        assert torch.get_num_threads() == 2 and scene.means.grad is not None
    finally:
        torch.set_num_threads(prev)


def test_set_cpu_threads_sets_torch_and_the_render(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidyn_ros.render import set_cpu_threads

    monkeypatch.setattr(tb, "CPU_THREADS", tb.CPU_THREADS)  # restored after the test
    prev = torch.get_num_threads()
    try:
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1 and tb.CPU_THREADS == 1
        torch.set_num_threads(2)
        set_cpu_threads(0)  # torch's setting stays, and the render uses it
        assert torch.get_num_threads() == 2 and tb.CPU_THREADS is None
        with pytest.raises(ValueError):
            set_cpu_threads(-1)
    finally:
        torch.set_num_threads(prev)


def test_far_plane_numpy_masks_and_render_torch() -> None:
    from vidyn_ros.render import render_torch

    cam = axis_camera()
    scene = gaussians([[0.0, 0.0, 1.0], [0.6, 0.0, 5.0]], [0.03, 0.2], [[1, 0, 0], [0, 1, 0]], 0.9)
    masks = np.zeros((1, 21, 31), dtype=np.int32)
    masks[0, :, 16:] = 2
    near_only = render_torch(scene, [cam], far=3.0, masks=masks)
    both = render_torch(scene, [cam], far=100.0, masks=masks)
    assert near_only.visible[0].tolist() == [True, False]
    assert both.visible[0].tolist() == [True, True]
    assert near_only.mask_ids.tolist() == [2] and near_only.mask_contribution[0, 0, 1] == 0
    assert both.mask_contribution[0, 0, 1].item() == pytest.approx(0.9, abs=1e-3)  # its centre (u = 27) is in mask 2


# --- batched configurations (render_batch) ---------------------------------------------------------------------


def batch_of_configurations(scene: GaussianSet, B: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """B perturbed copies of the scene's means [B, N, 3] and quats [B, N, 4] (like B candidate futures)."""
    g = torch.Generator().manual_seed(seed)
    means = scene.means + 0.02 * torch.randn(B, *scene.means.shape, generator=g, dtype=scene.means.dtype)
    quats = scene.quats + 0.2 * torch.randn(B, *scene.quats.shape, generator=g, dtype=scene.quats.dtype)
    return means, quats


@pytest.mark.parametrize("band_pixels", [None, 64 * 7])
def test_render_batch_equals_one_render_per_configuration(monkeypatch: pytest.MonkeyPatch,
                                                          band_pixels: int | None) -> None:
    """render_batch of B configurations = B render calls: images, depth, alpha, visibility and the gradients of
    every input (per-configuration means / quats, shared scales / colours / opacities). Several small views share
    one intersect call by default; 7-row bands split each view instead."""
    from vidyn_ros.render import render_batch

    if band_pixels is not None:
        monkeypatch.setattr(tb, "BAND_PIXELS", band_pixels)
    scene = random_scene(200, seed=3)
    cams = ring_cameras(2, 48, 36, 45.0)
    means0, quats0 = batch_of_configurations(scene, 3)
    bg = (0.2, 0.3, 0.4)
    target = torch.rand(3, 2, 36, 48, 3, generator=torch.Generator().manual_seed(1))

    def leaves() -> tuple[GaussianSet, torch.Tensor, torch.Tensor]:
        s = scene.clone()
        for p in ("log_scales", "colors", "opacity_logits"):
            getattr(s, p).requires_grad_(True)
        return s, means0.clone().requires_grad_(True), quats0.clone().requires_grad_(True)

    s, means, quats = leaves()
    batch = render_batch(s, cams, means, quats, background=bg, backend="torch")
    assert batch.rgb.shape == (3, 2, 36, 48, 3) and batch.visible.shape == (3, 2, 200)
    ((batch.rgb - target).square().sum() + batch.depth.sum() + batch.alpha.sum()).backward()

    s2, means2, quats2 = leaves()
    loop_loss = 0.0
    for b in range(3):
        g = replace(s2, means=means2[b], quats=quats2[b])
        out = render(g, cams, background=bg, backend="torch")
        for key in ("rgb", "depth", "alpha"):
            assert (getattr(out, key) - getattr(batch, key)[b]).abs().max() < 1e-5, key
        assert torch.equal(out.visible, batch.visible[b])
        loop_loss = loop_loss + (out.rgb - target[b]).square().sum() + out.depth.sum() + out.alpha.sum()
    loop_loss.backward()
    assert batch.alpha.mean() > 0.05  # the configurations are in view
    for a, b, name in [(means.grad, means2.grad, "means"), (quats.grad, quats2.grad, "quats"),
                       *[(getattr(s, p).grad, getattr(s2, p).grad, p) for p in ("log_scales", "colors",
                                                                                  "opacity_logits")]]:
        assert a.abs().max() > 0, name
        assert (a - b).abs().max() <= 1e-4 * b.abs().max(), name


def test_render_batch_leading_dims_default_quats_and_bad_shapes() -> None:
    from vidyn_ros.render import render_batch

    scene = random_scene(60, seed=4)
    cams = ring_cameras(1, 32, 24, 30.0)
    means = scene.means.expand(2, 3, 60, 3)  # any leading dims; quats default to the set's own
    out = render_batch(scene, cams, means, background=(0.1, 0.1, 0.1))
    one = render(scene, cams, background=(0.1, 0.1, 0.1))
    assert out.rgb.shape == (2, 3, 1, 24, 32, 3) and out.alpha.shape == (2, 3, 1, 24, 32)
    assert (out.rgb - one.rgb).abs().max() < 1e-6
    with pytest.raises(ConfigError, match="means"):
        render_batch(scene, cams, scene.means[:10][None])
    with pytest.raises(ConfigError, match="quats"):
        render_batch(scene, cams, means, scene.quats[None])
