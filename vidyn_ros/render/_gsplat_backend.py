"""gsplat (CUDA) backend: ``gsplat.rasterization`` for the images, the torch pair path for the id-voting statistics.

gsplat is imported inside :func:`rasterize` only: importing it JIT-compiles / loads its CUDA extension.

Conventions: gsplat puts pixel j's centre at j + 0.5, our intrinsics at j (OpenCV), so K's principal point is shifted
by +0.5 px on the way in (``_torch_backend.gsplat_intrinsics``). gsplat's "RGB+ED" depth is the alpha-normalised
expected z, as in our contract; colours are post-activation (``sh_degree=None``).

Γ (mask_contribution) is not produced by gsplat: it is computed without grad by re-running
:func:`vidyn_ros.render._torch_backend.intersect` on gsplat's own projected 2D Gaussians (``meta`` means2d, conics,
opacities, depths, radii), so it describes exactly the splats gsplat rasterised. ``visible`` comes from the same pairs
(exact: the Gaussian contributes to some pixel) when masks are given or ``exact_visible``; otherwise it is gsplat's
``radii > 0`` (the screen box overlaps the image and the Gaussian is not culled), a superset that costs nothing. The
pair path at 640x480 x 4 views x 50k Gaussians is tens of millions of pairs, too much to pay on every frame at 30 Hz
just for ``visible``.
"""

from __future__ import annotations

import torch

from vidyn_ros.render import _torch_backend as tb


def rasterize(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] (w, x, y, z)
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, 3]
    viewmats: torch.Tensor,  # [C, 4, 4] world-to-camera
    Ks: torch.Tensor,  # [C, 3, 3] OpenCV convention
    width: int,
    height: int,
    backgrounds: torch.Tensor | None = None,  # [C, 3]
    masks: torch.Tensor | None = None,  # [C, H, W] int
    mask_ids: torch.Tensor | None = None,  # [M]
    near: float = 0.01,
    far: float = 1e10,
    exact_visible: bool = False,
) -> dict[str, torch.Tensor]:
    """Same outputs as :func:`vidyn_ros.render._torch_backend.rasterize`, rendered by gsplat (float32, CUDA)."""
    from gsplat import rasterization

    C, N = viewmats.shape[0], means.shape[0]
    f32 = torch.float32
    Kg = tb.gsplat_intrinsics(Ks.to(f32))
    if N == 0:  # gsplat's kernels do not accept empty inputs
        alpha = means.new_zeros(C, height, width, dtype=f32)
        bg = backgrounds if backgrounds is not None else means.new_zeros(C, 3, dtype=f32)
        out = {"rgb": bg[:, None, None, :].expand(C, height, width, 3).clone(), "depth": alpha.clone(), "alpha": alpha}
        out["visible"] = torch.zeros(C, 0, dtype=torch.bool, device=means.device)
        if masks is not None:
            out["mask_contribution"] = means.new_zeros(C, int(mask_ids.numel()), 0, dtype=f32)
        return out
    render_colors, render_alphas, meta = rasterization(
        means.to(f32),
        quats.to(f32),
        scales.to(f32),
        opacities.to(f32),
        colors.to(f32),
        viewmats.to(f32),
        Kg,
        width,
        height,
        near_plane=near,
        far_plane=far,
        eps2d=tb.EPS2D,
        packed=False,  # meta then holds dense [C, N, ...] projections, which the Γ path below indexes directly
        render_mode="RGB+ED",
        backgrounds=None if backgrounds is None else backgrounds.to(f32),
        rasterize_mode="classic",
    )
    out = {
        "rgb": render_colors[..., :3],
        "depth": render_colors[..., 3],
        "alpha": render_alphas[..., 0],
    }
    out["visible"] = (meta["radii"] > 0).any(-1)
    if masks is not None or exact_visible:
        visible, contrib = [], []
        no_cam = torch.zeros(N, dtype=torch.long, device=means.device)
        with torch.no_grad():
            for c in range(C):  # one view at a time bounds the memory of the pair arrays
                pairs = tb.intersect(
                    meta["means2d"][c].detach(), meta["conics"][c].detach(), meta["opacities"][c].detach(),
                    meta["depths"][c].detach(), meta["radii"][c], no_cam, width, height,
                )
                visible.append(tb.visible_from_pairs(pairs, 1, N)[0])
                if masks is not None:
                    contrib.append(tb.contribution(pairs, masks[c : c + 1], mask_ids, 1, N)[0])
        out["visible"] = torch.stack(visible)
        if masks is not None:
            out["mask_contribution"] = torch.stack(contrib)
    return out


def rasterize_batch(
    means: torch.Tensor,  # [B, N, 3]
    quats: torch.Tensor,  # [B, N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, 3]
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3] OpenCV convention
    width: int,
    height: int,
    backgrounds: torch.Tensor | None = None,  # [C, 3]
    near: float = 0.01,
    far: float = 1e10,
) -> dict[str, torch.Tensor]:
    """B configurations of the same Gaussians in one ``gsplat.rasterization`` call (its leading batch dims):
    rgb [B, C, H, W, 3], depth / alpha [B, C, H, W], visible [B, C, N] (``radii > 0``: no masks here)."""
    from gsplat import rasterization

    B, N = means.shape[:2]
    C = viewmats.shape[0]
    f32 = torch.float32
    if N == 0:
        alpha = means.new_zeros(B, C, height, width, dtype=f32)
        bg = backgrounds if backgrounds is not None else means.new_zeros(C, 3, dtype=f32)
        rgb = bg[None, :, None, None, :].expand(B, C, height, width, 3).clone()
        return {"rgb": rgb, "depth": alpha.clone(), "alpha": alpha,
                "visible": torch.zeros(B, C, 0, dtype=torch.bool, device=means.device)}
    Kg = tb.gsplat_intrinsics(Ks.to(f32))

    def per_batch(t: torch.Tensor) -> torch.Tensor:  # shared [X, ...] -> [B, X, ...] (gsplat wants every batch dim)
        return t.to(f32).expand(B, *t.shape).contiguous()

    render_colors, render_alphas, meta = rasterization(
        means.to(f32).contiguous(),
        quats.to(f32).contiguous(),
        per_batch(scales),
        per_batch(opacities),
        per_batch(colors),
        per_batch(viewmats),
        per_batch(Kg),
        width,
        height,
        near_plane=near,
        far_plane=far,
        eps2d=tb.EPS2D,
        packed=False,
        render_mode="RGB+ED",
        backgrounds=None if backgrounds is None else per_batch(backgrounds),
        rasterize_mode="classic",
    )
    return {
        "rgb": render_colors[..., :3],
        "depth": render_colors[..., 3],
        "alpha": render_alphas[..., 0],
        "visible": (meta["radii"] > 0).any(-1),
    }
