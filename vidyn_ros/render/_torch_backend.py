"""Pure-PyTorch reference rasteriser (CPU or CUDA), differentiable, following gsplat 1.5.3's conventions.

Conventions copied from gsplat's CUDA kernels (``ProjectionEWA3DGSFused.cu``, ``RasterizeToPixels3DGSFwd.cu``) so
the two backends agree to float precision:

- EWA projection with the Jacobian evaluated at the view-frustum-clamped mean (``persp_proj``), 2D covariance dilated
  by ``eps2d = 0.3`` px² (low-pass filter).
- Gaussians with depth outside (near, far), det <= 0 or opacity < 1/255 are culled; the screen-space extent is the
  opacity-aware ``min(3.33, sqrt(2 ln(255 o)))`` sigma box.
- ``alpha = min(0.999, o exp(-½ dᵀ Σ⁻¹ d))``, pairs with ``alpha < 1/255`` are skipped, front-to-back compositing by
  depth; a pixel stops at the first Gaussian that would bring its transmittance to ``<= 1e-4`` (that one excluded).

Internally pixel centres are at ``j + 0.5`` like gsplat; the public intrinsics (OpenCV: centre at integer ``j``) are
shifted by +0.5 px on entry (:func:`gsplat_intrinsics`).

Culling is per pixel rather than per 16x16 tile: every Gaussian is paired only with the pixels of its own extent box
and pairs below the alpha threshold are dropped. Inside the box the ellipse ``alpha >= 1/255`` is the exact support
(``o < 1`` so the 3.33 cap never cuts into it), so this gives the same image as gsplat's tile binning while evaluating
far fewer (pixel, Gaussian) pairs, which is what makes the CPU path cheap. The pairs are sorted by (pixel, depth) and
composited with a segmented exclusive cumulative sum of ``log(1 - alpha)`` (in float64, so that one global cumsum over
all pixels keeps per-pixel precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat include/Common.h
ALPHA_MAX = 0.999  # clamp in gsplat's rasteriser
T_MIN = 1e-4  # a pixel is "done" once its transmittance would fall to this
EXTEND_MAX = 3.33  # sigma extent cap in gsplat's projection
EPS2D = 0.3  # px², low-pass dilation of the 2D covariance
_LOG_T_MIN = math.log(T_MIN)


def gsplat_intrinsics(Ks: torch.Tensor) -> torch.Tensor:
    """OpenCV intrinsics (pixel u's centre at u) -> gsplat's (centre at u + 0.5). Ks: [C, 3, 3]."""
    Ks = Ks.clone()
    Ks[:, 0, 2] += 0.5
    Ks[:, 1, 2] += 0.5
    return Ks


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[N, 4] (w, x, y, z), any norm -> [N, 3, 3]."""
    q = F.normalize(quats, p=2, dim=-1)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return R.reshape((*q.shape[:-1], 3, 3))


@dataclass
class Projected:
    """Per (camera, Gaussian) screen-space quantities, gsplat pixel convention.

    Attributes:
        means2d: [C, N, 2] projected centres [px].
        conics: [C, N, 3] upper triangle (a, b, c) of the inverse dilated 2D covariance.
        depths: [C, N] z in the camera frame [m].
        radii: [C, N, 2] int32 half-extent of the screen box [px]; 0 = culled.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor


def project(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3] gsplat convention
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = EPS2D,
) -> Projected:
    """EWA projection of 3D Gaussians (gsplat's ``fully_fused_projection``, pinhole, classic mode).

    Differentiable w.r.t. means, quats, scales and viewmats; culled entries carry finite values and zero gradient.
    """
    R = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3] = R_q S
    RM = torch.einsum("cij,njk->cnik", R, M)  # camera-frame R S, [C, N, 3, 3]

    x, y, z = means_c.unbind(-1)
    with torch.no_grad():
        z_ok = (z > near) & (z < far)
    # Culled entries must not produce inf/nan that would poison gradients through the masked-out branch.
    z = torch.where(z_ok, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    # J [C, N, 2, 3]; J RM gives the 2x3 factor whose Gram matrix is the 2D covariance.
    j00 = fx * rz
    j02 = -fx * tx * rz * rz
    j11 = fy * rz
    j12 = -fy * ty * rz * rz
    A0 = j00[..., None] * RM[..., 0, :] + j02[..., None] * RM[..., 2, :]  # [C, N, 3]
    A1 = j11[..., None] * RM[..., 1, :] + j12[..., None] * RM[..., 2, :]
    s00 = (A0 * A0).sum(-1) + eps2d
    s01 = (A0 * A1).sum(-1)
    s11 = (A1 * A1).sum(-1) + eps2d
    det = s00 * s11 - s01 * s01
    with torch.no_grad():
        det_ok = det > 0
    det = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([s11 / det, -s01 / det, s00 / det], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():
        o = opacities.detach()[None, :].expand_as(z)
        o_ok = o >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(o.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(EXTEND_MAX)
        rx = torch.ceil(extend * s00.detach().sqrt())
        ry = torch.ceil(extend * s11.detach().sqrt())
        mx, my = means2d.detach().unbind(-1)
        valid = z_ok & det_ok & o_ok & ((rx > 0) | (ry > 0))
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1).int() * valid[..., None]
    return Projected(means2d=means2d, conics=conics, depths=means_c[..., 2], radii=radii)


@dataclass
class Pairs:
    """(pixel, Gaussian) intersections that contribute, sorted by pixel then front to back.

    Attributes:
        splat: [P] int64 index into the flattened [C * N] (camera, Gaussian) entries.
        pixel: [P] int64 flattened pixel index into [C * H * W].
        seg_start: [P] int64 position of the first pair of the same pixel.
        weight: [P] γ = α T of the pair (no grad): the contribution statistic.
    """

    splat: torch.Tensor
    pixel: torch.Tensor
    seg_start: torch.Tensor
    weight: torch.Tensor


def _alpha(
    px: torch.Tensor, py: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, conic: torch.Tensor, opac: torch.Tensor
) -> torch.Tensor:
    """Per-pair alpha (before the threshold). px..opac: [P]; conic [P, 3]. Returns [P] and sigma [P]."""
    dx = mx - px
    dy = my - py
    sigma = 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy
    return (opac * torch.exp(-sigma)).clamp_max(ALPHA_MAX), sigma


def _segment_log_transmittance(log1m: torch.Tensor, seg_start: torch.Tensor) -> torch.Tensor:
    """Exclusive per-segment cumsum of log(1 - alpha) in float64. log1m, seg_start: [P] (segments contiguous)."""
    cs = torch.cumsum(log1m.double(), dim=0)
    excl = cs - log1m.double()
    return excl - excl.index_select(0, seg_start)


@torch.no_grad()
def intersect(
    means2d: torch.Tensor,  # [S, 2]
    conics: torch.Tensor,  # [S, 3]
    opacities: torch.Tensor,  # [S]
    depths: torch.Tensor,  # [S]
    radii: torch.Tensor,  # [S, 2]
    cam_ids: torch.Tensor,  # [S]
    width: int,
    height: int,
) -> Pairs:
    """Find the contributing (pixel, splat) pairs of already-projected splats (gsplat pixel convention).

    Only splats with radii > 0 are considered; ``Pairs.splat`` indexes the S inputs.
    """
    device = means2d.device
    valid = (radii > 0).any(-1)
    sid = torch.nonzero(valid).squeeze(1)
    # Front to back: stable depth order, so equal depths keep input order (gsplat's radix sort is stable too).
    sid = sid[torch.sort(depths[sid], stable=True).indices]
    m = means2d[sid]
    r = radii[sid].to(m.dtype)
    # Pixel j's centre is at j + 0.5; the box [m - r, m + r] contains the whole alpha >= 1/255 ellipse.
    u0 = torch.ceil(m[:, 0] - r[:, 0] - 0.5).clamp(0, width - 1).long()
    u1 = torch.floor(m[:, 0] + r[:, 0] - 0.5).clamp(0, width - 1).long()
    v0 = torch.ceil(m[:, 1] - r[:, 1] - 0.5).clamp(0, height - 1).long()
    v1 = torch.floor(m[:, 1] + r[:, 1] - 0.5).clamp(0, height - 1).long()
    bw = (u1 - u0 + 1).clamp_min(0)
    bh = (v1 - v0 + 1).clamp_min(0)
    counts = bw * bh
    total = int(counts.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Pairs(empty, empty, empty, torch.zeros(0, dtype=means2d.dtype, device=device))
    owner = torch.repeat_interleave(torch.arange(sid.numel(), device=device), counts, output_size=total)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - first.index_select(0, owner)
    bw_o = bw.index_select(0, owner)
    u = u0.index_select(0, owner) + local % bw_o
    v = v0.index_select(0, owner) + torch.div(local, bw_o, rounding_mode="floor")
    splat = sid.index_select(0, owner)
    alpha, sigma = _alpha(
        u.to(m.dtype) + 0.5, v.to(m.dtype) + 0.5, m[owner, 0], m[owner, 1], conics[splat], opacities[splat]
    )
    keep = (alpha >= ALPHA_THRESHOLD) & (sigma >= 0)
    splat, u, v, alpha = splat[keep], u[keep], v[keep], alpha[keep]
    pixel = (cam_ids.index_select(0, splat) * height + v) * width + u
    # Stable sort by pixel keeps the front-to-back order within each pixel. int32 keys sort much faster on CPU.
    key = pixel.int() if pixel.numel() and int(pixel.max()) < 2**31 - 1 else pixel
    order = torch.sort(key, stable=True).indices
    splat, pixel, alpha = splat[order], pixel[order], alpha[order]
    seg_start = _seg_start(pixel)
    log1m = torch.log1p(-alpha)
    log_t = _segment_log_transmittance(log1m, seg_start)
    live = (log_t + log1m.double()) > _LOG_T_MIN  # exclusive stop, as in gsplat
    # Everything behind a stop is dead too: T only falls along the segment, so `live` is already a prefix per pixel.
    splat, pixel, alpha, log_t = splat[live], pixel[live], alpha[live], log_t[live]
    seg_start = _seg_start(pixel)
    weight = alpha * torch.exp(log_t).to(alpha.dtype)
    return Pairs(splat=splat, pixel=pixel, seg_start=seg_start, weight=weight.to(means2d.dtype))


def _seg_start(pixel: torch.Tensor) -> torch.Tensor:
    """For sorted ``pixel`` [P], the index of the first entry of each entry's run."""
    if pixel.numel() == 0:
        return pixel.clone()
    is_start = torch.ones_like(pixel, dtype=torch.bool)
    is_start[1:] = pixel[1:] != pixel[:-1]
    idx = torch.arange(pixel.numel(), device=pixel.device)
    return torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), 0).values


def composite(
    pairs: Pairs,
    means2d: torch.Tensor,  # [S, 2]
    conics: torch.Tensor,  # [S, 3]
    opacities: torch.Tensor,  # [S]
    features: torch.Tensor,  # [S, D]
    n_pixels: int,
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable front-to-back compositing over the given pairs.

    Returns the accumulated features [n_pixels, D] (Σ w f) and alpha [n_pixels] (Σ w = 1 - T_final).
    """
    dtype = means2d.dtype
    D = features.shape[1]
    if pairs.splat.numel() == 0:
        z = means2d.sum() * 0.0  # keep the graph connected so backward() works on an empty render
        return features.new_zeros(n_pixels, D) + z, means2d.new_zeros(n_pixels) + z
    s = pairs.splat
    u = (pairs.pixel % width).to(dtype) + 0.5
    v = (torch.div(pairs.pixel, width, rounding_mode="floor") % height).to(dtype) + 0.5
    # 1-D index_select per column is much faster on CPU than gathering rows of a 2-D table.
    mx = means2d[:, 0].index_select(0, s)
    my = means2d[:, 1].index_select(0, s)
    con = torch.stack([conics[:, k].index_select(0, s) for k in range(3)], dim=1)
    op = opacities.index_select(0, s)
    alpha, _ = _alpha(u, v, mx, my, con, op)
    log1m = torch.log1p(-alpha)
    T = torch.exp(_segment_log_transmittance(log1m, pairs.seg_start)).to(dtype)
    w = alpha * T
    acc = []
    for k in range(D):
        acc.append(torch.zeros(n_pixels, dtype=dtype, device=w.device).index_add(
            0, pairs.pixel, w * features[:, k].index_select(0, s)))
    alpha_img = torch.zeros(n_pixels, dtype=dtype, device=w.device).index_add(0, pairs.pixel, w)
    return torch.stack(acc, dim=1), alpha_img


def rasterize(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, 3]
    viewmats: torch.Tensor,  # [C, 4, 4] world-to-camera
    Ks: torch.Tensor,  # [C, 3, 3] OpenCV convention (pixel u's centre at u)
    width: int,
    height: int,
    backgrounds: torch.Tensor | None = None,  # [C, 3]
    masks: torch.Tensor | None = None,  # [C, H, W] int, 0 = background
    mask_ids: torch.Tensor | None = None,  # [M]
    near: float = 0.01,
    far: float = 1e10,
) -> dict[str, torch.Tensor]:
    """Render C views. Returns rgb [C,H,W,3], depth [C,H,W] (expected, alpha-normalised), alpha [C,H,W],
    visible [C,N] bool, and when ``masks`` is given mask_contribution [C,M,N] (no grad) for ``mask_ids`` [M].
    """
    C, N = viewmats.shape[0], means.shape[0]
    H, W = height, width
    Kg = gsplat_intrinsics(Ks.to(means.dtype))
    proj = project(means, quats, scales, opacities, viewmats.to(means.dtype), Kg, W, H, near, far)
    cam_ids = torch.arange(C, device=means.device).repeat_interleave(N)
    means2d = proj.means2d.reshape(C * N, 2)
    conics = proj.conics.reshape(C * N, 3)
    depths = proj.depths.reshape(C * N)
    op = opacities[None, :].expand(C, N).reshape(C * N)
    pairs = intersect(
        means2d.detach(), conics.detach(), op.detach(), depths.detach(), proj.radii.reshape(C * N, 2), cam_ids, W, H
    )
    feats = torch.cat([colors[None].expand(C, N, 3).reshape(C * N, 3), depths[:, None]], dim=1)
    acc, alpha = composite(pairs, means2d, conics, op, feats, C * H * W, W, H)
    acc = acc.reshape(C, H, W, 4)
    alpha = alpha.reshape(C, H, W)
    rgb = acc[..., :3]
    if backgrounds is not None:
        rgb = rgb + (1.0 - alpha)[..., None] * backgrounds[:, None, None, :].to(rgb.dtype)
    depth = acc[..., 3] / alpha.clamp_min(1e-10)
    out = {"rgb": rgb, "depth": depth, "alpha": alpha}
    out["visible"] = _visible(pairs, C, N, means.device)
    if masks is not None:
        out["mask_contribution"] = contribution(pairs, masks, mask_ids, C, N)
    return out


def _visible(pairs: Pairs, C: int, N: int, device: torch.device) -> torch.Tensor:
    vis = torch.zeros(C * N, dtype=torch.bool, device=device)
    vis[pairs.splat] = True
    return vis.reshape(C, N)


@torch.no_grad()
def contribution(
    pairs: Pairs, masks: torch.Tensor, mask_ids: torch.Tensor, C: int, N: int
) -> torch.Tensor:
    """Γ [C, M, N]: per view and mask, the max over the mask's pixels of each Gaussian's γ = α T.

    ``pairs.splat`` indexes flattened (camera, Gaussian) entries [C * N]; masks [C, H, W]; mask_ids [M] sorted.
    """
    M = int(mask_ids.numel())
    out = torch.zeros(C * M * N, dtype=pairs.weight.dtype, device=masks.device)
    if M == 0 or pairs.pixel.numel() == 0:
        return out.reshape(C, M, N)
    ids = masks.reshape(-1).long().index_select(0, pairs.pixel)  # instance id under each pair's pixel
    row = torch.searchsorted(mask_ids, ids).clamp_max(M - 1)
    hit = (ids > 0) & (mask_ids.index_select(0, row) == ids)
    cam = torch.div(pairs.splat, N, rounding_mode="floor")
    gid = pairs.splat - cam * N
    key = (cam * M + row) * N + gid
    out.scatter_reduce_(0, key[hit], pairs.weight[hit], reduce="amax", include_self=True)
    return out.reshape(C, M, N)


def rasterize_dense(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    backgrounds: torch.Tensor | None = None,
    near: float = 0.01,
    far: float = 1e10,
) -> dict[str, torch.Tensor]:
    """Brute-force twin of :func:`rasterize` without any culling: every Gaussian against every pixel, [C, H*W, N]
    tensors and a plain cumprod. Only for tests on small scenes (the reference for the culled path).
    """
    C, N = viewmats.shape[0], means.shape[0]
    H, W = height, width
    Kg = gsplat_intrinsics(Ks.to(means.dtype))
    proj = project(means, quats, scales, opacities, viewmats.to(means.dtype), Kg, W, H, near, far)
    valid = (proj.radii > 0).any(-1)  # [C, N]
    order = torch.sort(torch.where(valid, proj.depths, torch.full_like(proj.depths, math.inf)), dim=1, stable=True)
    idx = order.indices  # [C, N] front to back
    m2 = torch.gather(proj.means2d, 1, idx[..., None].expand(C, N, 2))
    con = torch.gather(proj.conics, 1, idx[..., None].expand(C, N, 3))
    val = torch.gather(valid, 1, idx)
    z = torch.gather(proj.depths, 1, idx)
    op = opacities[idx]  # [C, N]
    col = colors[idx]  # [C, N, 3]
    vs, us = torch.meshgrid(torch.arange(H, dtype=means.dtype), torch.arange(W, dtype=means.dtype), indexing="ij")
    px = us.reshape(1, -1, 1) + 0.5
    py = vs.reshape(1, -1, 1) + 0.5
    dx = m2[:, None, :, 0] - px
    dy = m2[:, None, :, 1] - py
    sigma = 0.5 * (con[:, None, :, 0] * dx * dx + con[:, None, :, 2] * dy * dy) + con[:, None, :, 1] * dx * dy
    alpha = (op[:, None, :] * torch.exp(-sigma)).clamp_max(ALPHA_MAX)  # [C, HW, N]
    use = (alpha >= ALPHA_THRESHOLD) & (sigma >= 0) & val[:, None, :]
    alpha = torch.where(use, alpha, torch.zeros_like(alpha))
    T_incl = torch.cumprod(1.0 - alpha, dim=2)
    T_excl = torch.cat([torch.ones_like(T_incl[..., :1]), T_incl[..., :-1]], dim=2)
    live = (T_incl > T_MIN).detach()
    w = alpha * T_excl * live
    rgb = torch.einsum("cpn,cnk->cpk", w, col).reshape(C, H, W, 3)
    acc_a = w.sum(-1).reshape(C, H, W)
    acc_z = (w * z[:, None, :]).sum(-1).reshape(C, H, W)
    if backgrounds is not None:
        rgb = rgb + (1.0 - acc_a)[..., None] * backgrounds[:, None, None, :].to(rgb.dtype)
    return {"rgb": rgb, "depth": acc_z / acc_a.clamp_min(1e-10), "alpha": acc_a}
