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
shifted by +0.5 px on entry (:func:`gsplat_intrinsics`). (gsplat 1.5.3 clamps alpha at 0.999, not 0.99; we follow the
code. Its ``sigma < 0`` skip only triggers on rounding and is not reproduced.)

How the CPU path stays cheap:

- Culling is per pixel rather than per 16x16 tile: each Gaussian is paired only with the pixels inside its
  ``alpha >= 1/255`` ellipse, enumerated row by row (clipped to gsplat's box). Outside that ellipse alpha is below the
  threshold anyway (``o < 1`` so the 3.33 cap never cuts into it), so this gives gsplat's image while evaluating far
  fewer (pixel, Gaussian) pairs than tile binning.
- The pairs are sorted by (pixel, depth) and composited with a segmented exclusive cumulative sum of
  ``log(1 - alpha)`` (float64, so one global cumsum keeps per-pixel precision); the dead pairs behind a finished pixel
  are dropped before anything carries gradients.
- The compositing backward is written by hand (:class:`_Composite`, gsplat's backward vectorised with a per-pixel
  suffix sum), so autograd never records per-pair graphs.
- Each view is processed in cache-sized bands of rows (:data:`BAND_PIXELS`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat include/Common.h
ALPHA_MAX = 0.999  # clamp in gsplat's rasteriser
T_MIN = 1e-4  # a pixel is "done" once its transmittance would fall to this
EXTEND_MAX = 3.33  # sigma extent cap in gsplat's projection
EPS2D = 0.3  # px², low-pass dilation of the 2D covariance
_LOG_T_MIN = math.log(T_MIN)
# CPU work unit of the torch backend: each view is processed in bands of rows of about this many pixels, so that the
# (pixel, Gaussian) pair arrays stay cache-sized. Measured (1 thread, bench scene, fwd+bwd of 4 views): 5k Gaussians at
# 160x120 150 -> 104 ms vs one batch over all views; at 320x240 830 -> 390 ms. Smaller bands were not faster.
BAND_PIXELS = 160 * 120
# Intra-op threads for the CPU work of this backend (None: leave torch's setting). Measured on 2 cores, 5k Gaussians,
# 4 views 160x120, fwd+bwd: with the other core free, 2 threads 84 ms vs 1 thread 107 ms; with the other core busy
# (other nodes / processes), OpenMP's spin-waiting made 2 threads 2-10x slower than 1. One thread is the robust default
# on a shared machine; env VIDYN_RENDER_THREADS=N overrides it (0: torch's own setting).
CPU_THREADS: int | None = int(os.environ.get("VIDYN_RENDER_THREADS", "1")) or None


def set_cpu_threads(n: int) -> None:
    """Threads for this process's CPU torch work, render included: ``torch.set_num_threads(n)`` and
    :data:`CPU_THREADS` = n. 0 leaves torch's setting and lets the render use it too. One knob for a process (the scene
    node's ``threads`` parameter, ``vidyn track / eval-scene --threads``)."""
    global CPU_THREADS
    if n < 0:
        raise ValueError(f"threads must be >= 0, got {n}")
    if n > 0:
        torch.set_num_threads(n)
    CPU_THREADS = n or None


@contextmanager
def cpu_threads(device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU work with :data:`CPU_THREADS` intra-op threads, restoring torch's setting after."""
    n = CPU_THREADS
    prev = torch.get_num_threads()
    if device.type != "cpu" or not n or prev == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


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
    p = project_batch(means[None], quats[None], scales, opacities, viewmats, Ks, width, height, near, far, eps2d)
    return Projected(means2d=p.means2d[0], conics=p.conics[0], depths=p.depths[0], radii=p.radii[0])


def project_batch(
    means: torch.Tensor,  # [B, N, 3]
    quats: torch.Tensor,  # [B, N, 4]
    scales: torch.Tensor,  # [N, 3] or [B, N, 3]
    opacities: torch.Tensor,  # [N] or [B, N]
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3] gsplat convention
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = EPS2D,
) -> Projected:
    """:func:`project` of B configurations of the same N Gaussians (e.g. candidate futures) at once: every field of
    the result has leading dims [B, C, N]."""
    R = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,bnj->bcni", R, means) + t[None, :, None, :]  # [B, C, N, 3]
    M = quat_to_rotmat(quats) * scales.unsqueeze(-2)  # [B, N, 3, 3] = R_q S
    RM = torch.einsum("cij,bnjk->bcnik", R, M)  # camera-frame R S, [B, C, N, 3, 3]

    x, y, z = means_c.unbind(-1)
    with torch.no_grad():
        z_ok = (z > near) & (z < far)
    # Culled entries must not produce inf/nan that would poison gradients through the masked-out branch.
    z = torch.where(z_ok, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]: broadcast against [B, C, N]
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
    # J [B, C, N, 2, 3]; J RM gives the 2x3 factor whose Gram matrix is the 2D covariance.
    j00 = fx * rz
    j02 = -fx * tx * rz * rz
    j11 = fy * rz
    j12 = -fy * ty * rz * rz
    A0 = j00[..., None] * RM[..., 0, :] + j02[..., None] * RM[..., 2, :]  # [B, C, N, 3]
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
        o = opacities.detach()
        o = (o[None, None, :] if o.dim() == 1 else o[:, None, :]).expand_as(z)
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
    """(pixel, splat) intersections that contribute, sorted by pixel and, within a pixel, front to back.

    Attributes:
        splat: [P] int32 (int64 for huge images) index of the splat (flattened (camera, Gaussian) entry).
        pixel: [P] same dtype, flattened pixel index into [C * H * W].
        run_last: [n_pixels] int64 position of each pixel's last pair (pixels without pairs: anything valid).
        alpha: [P] the pair's alpha (no grad).
        trans: [P] transmittance in front of the pair, T = Π_{j in front} (1 − α_j) (no grad).
        row0: image row of pixel id 0 (a band's first row; 0 for whole images).
    """

    splat: torch.Tensor
    pixel: torch.Tensor
    run_last: torch.Tensor
    alpha: torch.Tensor
    trans: torch.Tensor
    row0: int = 0

    @property
    def weight(self) -> torch.Tensor:
        """[P] γ = α T, the pair's contribution to its pixel (the id-voting statistic)."""
        return self.alpha * self.trans


def _expand(counts: torch.Tensor, dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """For counts [K] -> (owner [sum], rank within owner [sum]): a ragged arange, as ``dtype`` indices.

    int32 where it fits: on CPU these index arrays are the bulk of the memory traffic.
    """
    counts = counts.to(dtype)
    total = int(counts.sum())
    owner = torch.repeat_interleave(
        torch.arange(counts.numel(), device=counts.device, dtype=dtype), counts, output_size=total
    )
    first = torch.cumsum(counts, 0, dtype=dtype) - counts
    return owner, torch.arange(total, device=counts.device, dtype=dtype) - first.index_select(0, owner)


def _runs(pixel: torch.Tensor, n_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For sorted ``pixel`` [P]: per pixel id [n_pixels], the position of its first pair and its number of pairs."""
    counts = torch.bincount(pixel, minlength=n_pixels)
    return torch.cumsum(counts, 0) - counts, counts


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
    rows: tuple[int, int] | None = None,
) -> Pairs:
    """Find the contributing (pixel, splat) pairs of projected splats (gsplat pixel convention), front to back,
    with each pair's alpha and transmittance.

    Only splats with radii > 0 take part; ``Pairs.splat`` indexes the S inputs. Candidates are enumerated row by
    row inside each splat's ``alpha >= 1/255`` ellipse (clipped to its box and the image), so almost no candidate is
    wasted, then the exact alpha test decides. ``rows = (r0, r1)`` restricts to image rows r0..r1-1 of a single
    camera (cam_ids all 0); pixel ids then count from the band's first pixel (``Pairs.row0 = r0``).
    """
    device, dtype = means2d.device, means2d.dtype
    sid = torch.nonzero((radii > 0).any(-1)).squeeze(1)
    # Front to back: stable depth order, so equal depths keep input order (gsplat's radix sort is stable too).
    sid = sid.index_select(0, torch.sort(depths.index_select(0, sid), stable=True).indices)
    mx, my = means2d[:, 0].index_select(0, sid), means2d[:, 1].index_select(0, sid)
    ca, cb, cc = (conics[:, k].index_select(0, sid) for k in range(3))
    o = opacities.index_select(0, sid)
    rx = radii[:, 0].index_select(0, sid).to(dtype)
    ry = radii[:, 1].index_select(0, sid).to(dtype)
    log_o = torch.log(o)
    e2 = 2.0 * (log_o - math.log(ALPHA_THRESHOLD))  # alpha >= 1/255  <=>  2 sigma <= e2
    # Rows: pixel row v has its centre at v + 0.5.
    r0, r1 = (0, height) if rows is None else rows
    v0 = torch.ceil(my - ry - 0.5).clamp(r0, r1 - 1).long()
    v1 = torch.floor(my + ry - 0.5).clamp(r0 - 1, r1 - 1).long()
    n_cams = int(cam_ids.max()) + 1 if cam_ids.numel() else 1
    # int32 pair indices while pixel ids and pair counts fit (always, at camera resolutions)
    it = torch.int32 if n_cams * height * width < 2**31 - 1 else torch.int64
    row_owner, row_rank = _expand((v1 - v0 + 1).clamp_min(0), it)
    # Everything per row from here on: rows are ~10x fewer than pairs, so per-pair work is a few gathers from them.
    v = v0.index_select(0, row_owner) + row_rank
    a_r, b_r, c_r = ca.index_select(0, row_owner), cb.index_select(0, row_owner), cc.index_select(0, row_owner)
    mx_r = mx.index_select(0, row_owner)
    dy = v.to(dtype) + 0.5 - my.index_select(0, row_owner)
    # a dx² + 2 b dx dy + c dy² <= e2 solved for dx, widened a little so rounding never drops a pixel.
    disc = dy * dy * (b_r * b_r - a_r * c_r) + a_r * e2.index_select(0, row_owner)
    half = torch.sqrt(disc.clamp_min(0.0)) / a_r + 1e-3
    centre = mx_r - b_r * dy / a_r
    rx_r = rx.index_select(0, row_owner)
    u0 = torch.ceil(torch.maximum(centre - half, mx_r - rx_r) - 0.5).clamp(0, width - 1).long()
    u1 = torch.floor(torch.minimum(centre + half, mx_r + rx_r) - 0.5).clamp(-1, width - 1).long()
    counts = torch.where(disc >= 0, (u1 - u0 + 1).clamp_min(0), torch.zeros_like(u0))
    if int(counts.sum()) >= 2**31 - 1:
        it = torch.int64
    pix_row, rank = _expand(counts, it)
    if pix_row.numel() == 0:
        e = torch.zeros(0, dtype=torch.long, device=device)
        f = torch.zeros(0, dtype=dtype, device=device)
        return Pairs(e, e, e, f, f, r0)
    # sigma − ln o along a row is a quadratic in dx = (u + 0.5) − mx:  A dx² + B dx + C0.
    A = 0.5 * a_r
    B = b_r * dy
    C0 = 0.5 * c_r * dy * dy - log_o.index_select(0, row_owner)
    dx0 = u0.to(dtype) + 0.5 - mx_r  # dx at the row's first pixel
    row_pixel = ((cam_ids.index_select(0, sid).index_select(0, row_owner) * height + v - r0) * width + u0).to(it)
    rank_f = rank.to(dtype)
    dx = dx0.index_select(0, pix_row) + rank_f
    q = (A.index_select(0, pix_row) * dx + B.index_select(0, pix_row)) * dx + C0.index_select(0, pix_row)
    alpha = torch.exp(-q).clamp_max(ALPHA_MAX)  # = min(0.999, o exp(−sigma))
    # Below-threshold candidates (only rounding at the ellipse rim) get alpha 0: no effect on T, dropped below.
    alpha = torch.where(alpha >= ALPHA_THRESHOLD, alpha, torch.zeros_like(alpha))
    pixel = row_pixel.index_select(0, pix_row) + rank
    # Stable sort by pixel keeps the front-to-back order within each pixel. Narrow keys sort faster on CPU (int16
    # 1.8 ms, int32 3.1 ms, int64 5.6 ms for 400k keys), and a band's pixel ids fit in int16.
    n_pix = n_cams * height * width if rows is None else (r1 - r0) * width
    if n_pix <= 2**15 - 1 and device.type == "cpu":
        pixel, order = torch.sort(pixel.to(torch.int16), stable=True)
        pixel = pixel.to(it)
    else:
        pixel, order = torch.sort(pixel, stable=True)
    alpha = alpha.index_select(0, order)
    first, _ = _runs(pixel, n_pix)
    log1m = torch.log1p(-alpha).double()
    # Exclusive per-pixel cumsum of log(1 - alpha): one global float64 cumsum minus its value at the run start.
    excl = torch.cumsum(log1m, 0) - log1m
    log_t = excl - excl.index_select(0, first.clamp_max(excl.numel() - 1)).index_select(0, pixel)
    # gsplat stops a pixel at the first Gaussian that would bring T to <= 1e-4 (that one excluded). T only falls
    # along a pixel's run, so the live pairs are a prefix of each run.
    live = torch.nonzero((log_t + log1m > _LOG_T_MIN) & (alpha > 0)).squeeze(1)
    pixel = pixel.index_select(0, live)
    first, counts = _runs(pixel, n_pix)
    row_splat = sid.index_select(0, row_owner)  # [rows]: one gather fewer per pair than going through row_owner
    splat = row_splat.index_select(0, pix_row.index_select(0, order.index_select(0, live)))
    return Pairs(
        splat=splat,
        pixel=pixel,
        run_last=(first + counts - 1).clamp_min(0),
        alpha=alpha.index_select(0, live),
        trans=torch.exp(log_t.index_select(0, live).to(dtype)),
        row0=r0,
    )


def _sum_by(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """out[i] = Σ values[index == i], [n]. A weighted bincount: on CPU ~1.5x faster than ``index_add_``."""
    if index.numel() == 0:  # bincount of nothing is int64
        return values.new_zeros(n)
    return torch.bincount(index, weights=values, minlength=n)


class _Composite(torch.autograd.Function):
    """Front-to-back compositing over precomputed pairs with an analytic backward (gsplat's rasterize backward,
    vectorised): the forward reuses the no-grad alphas and transmittances of :func:`intersect`, and the backward
    needs one per-pixel suffix sum instead of autograd's graph over all pairs.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, splat, pixel, run_last, alpha, trans, width, height,
                n_pixels, row0):
        w = alpha * trans
        D = features.shape[1]
        feats_t = features.t().contiguous()  # [D, S]: 1-D gathers from contiguous rows are the fast path on CPU
        cols = [_sum_by(pixel, w * feats_t[k].index_select(0, splat), n_pixels) for k in range(D)]
        cols.append(_sum_by(pixel, w, n_pixels))
        ctx.save_for_backward(means2d, conics, opacities, feats_t, splat, pixel, run_last, alpha, trans)
        ctx.size = (width, height, row0)
        return torch.stack(cols, dim=1)

    @staticmethod
    def backward(ctx, grad_out):
        with cpu_threads(grad_out.device):
            return _Composite._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        means2d, conics, opacities, feats_t, splat, pixel, run_last, alpha, trans = ctx.saved_tensors
        width, height, row0 = ctx.size
        D, S = feats_t.shape
        dtype, device = feats_t.dtype, feats_t.device
        grads = [None] * 13
        if splat.numel() == 0:
            grads[:4] = [torch.zeros_like(means2d), torch.zeros_like(conics), torch.zeros_like(opacities),
                         torch.zeros(S, D, dtype=dtype, device=device)]
            return tuple(grads)

        def scatter(x: torch.Tensor) -> torch.Tensor:  # per-pair [P] -> per-splat sums [S]
            return _sum_by(splat, x, S)

        w = alpha * trans
        grad_t = grad_out.t().contiguous()  # [D + 1, n_pixels]
        # g_p = <dL/dout[pixel], (features of the pair's splat, 1)>: the loss change per unit weight of the pair.
        g = grad_t[D].index_select(0, pixel)
        v_feat = []
        for k in range(D):
            gk = grad_t[k].index_select(0, pixel)
            g = g + gk * feats_t[k].index_select(0, splat)
            v_feat.append(scatter(w * gk))
        # dL/dα_k = T_k g_k − (Σ_{j behind k} w_j g_j) / (1 − α_k): a per-pixel suffix sum, from one float64 cumsum.
        incl = torch.cumsum((w * g).double(), 0)
        behind = (incl.index_select(0, run_last).index_select(0, pixel) - incl).to(dtype)
        v_alpha = trans * g - behind / (1.0 - alpha)
        # α = min(0.999, o e^{−σ}): no gradient where clamped; otherwise dα/do = α / o and dα/dσ = −α.
        va = torch.where(alpha < ALPHA_MAX, v_alpha * alpha, torch.zeros_like(alpha))
        # pixel centres through small per-pixel tables: a cache-resident gather beats integer % and // on every pair
        ids = torch.arange(int(run_last.numel()), device=device)
        u = ((ids % width).to(dtype) + 0.5).index_select(0, pixel)
        v = (((torch.div(ids, width, rounding_mode="floor") + row0) % height).to(dtype) + 0.5).index_select(0, pixel)
        dx = means2d[:, 0].contiguous().index_select(0, splat) - u
        dy = means2d[:, 1].contiguous().index_select(0, splat) - v
        # σ = ½ a dx² + b dx dy + ½ c dy² with (a, b, c) per splat: scatter the pair moments once, apply the conic
        # per splat afterwards (no per-pair conic gathers).
        vdx = va * dx  # −v_σ dx, with v_σ = −va
        vdy = va * dy
        s_x, s_y = scatter(vdx), scatter(vdy)
        s_xx, s_xy, s_yy = scatter(vdx * dx), scatter(vdx * dy), scatter(vdy * dy)
        a, b, c = conics.unbind(1)
        v_means2d = -torch.stack([a * s_x + b * s_y, c * s_y + b * s_x], 1)
        v_conics = -torch.stack([0.5 * s_xx, s_xy, 0.5 * s_yy], 1)
        v_opac = scatter(va) / opacities.clamp_min(1e-30)  # splats without pairs: 0 / (sigmoid underflow) stays 0
        grads[:4] = [v_means2d, v_conics, v_opac, torch.stack(v_feat, 1)]
        return tuple(grads)


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
    """Differentiable front-to-back compositing over ``pairs`` (from :func:`intersect` on the same splats).

    Returns the accumulated features [n_pixels, D] (Σ w f) and alpha [n_pixels] (Σ w = 1 − T_final), w = α T.
    Gradients flow to means2d, conics, opacities and features.
    """
    out = _Composite.apply(
        means2d, conics, opacities, features, pairs.splat, pairs.pixel, pairs.run_last, pairs.alpha, pairs.trans,
        width, height, n_pixels, pairs.row0,
    )
    D = features.shape[1]
    return out[:, :D], out[:, D]


def rasterize(
    means: torch.Tensor,  # [N, 3] or [B, N, 3]
    quats: torch.Tensor,  # [N, 4] or [B, N, 4]
    scales: torch.Tensor,  # [N, 3] (or [B, N, 3])
    opacities: torch.Tensor,  # [N] (or [B, N])
    colors: torch.Tensor,  # [N, 3] (or [B, N, 3])
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

    Batched: ``means`` [B, N, 3] and ``quats`` [B, N, 4] are B configurations of the same Gaussians (scales,
    opacities and colours shared, or given per configuration with the same leading B); every output then has a
    leading B ([B, C, H, W, 3] ...). All B x C views go through one projection and as few intersect / composite
    calls as the pixel budget allows (no masks in a batched call).
    """
    diff = (means, quats, scales, opacities, colors, viewmats, backgrounds)
    rest = (Ks, width, height, masks, mask_ids, near, far)
    if means.device.type == "cpu" and torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in diff
    ):
        # One autograd node for the whole render, so that the backward too runs under cpu_threads().
        rgb, depth, alpha, visible, contrib = _Rasterize.apply(rest, *diff)
        out = {"rgb": rgb, "depth": depth, "alpha": alpha, "visible": visible}
        if masks is not None:
            out["mask_contribution"] = contrib
        return out
    with cpu_threads(means.device):
        return _rasterize(*diff[:6], Ks, width, height, backgrounds, masks, mask_ids, near, far)


class _Rasterize(torch.autograd.Function):
    """The whole CPU render as one autograd node: the forward records the inner graph on detached copies of the
    inputs, the backward replays it under :func:`cpu_threads`. Without this the graph's many small ops would run their
    backward with torch's global thread count (see :data:`CPU_THREADS` for why that hurts).
    """

    @staticmethod
    def forward(ctx, rest, means, quats, scales, opacities, colors, viewmats, backgrounds):
        Ks, width, height, masks, mask_ids, near, far = rest
        inputs = [means, quats, scales, opacities, colors, viewmats, backgrounds]
        leaves = [None if t is None else t.detach().requires_grad_(t.requires_grad) for t in inputs]
        with torch.enable_grad(), cpu_threads(means.device):
            out = _rasterize(*leaves[:6], Ks, width, height, leaves[6], masks, mask_ids, near, far)
        ctx.leaves = leaves
        ctx.outs = (out["rgb"], out["depth"], out["alpha"])
        contrib = out.get("mask_contribution", means.new_zeros(0))
        ctx.mark_non_differentiable(out["visible"], contrib)
        return out["rgb"].detach(), out["depth"].detach(), out["alpha"].detach(), out["visible"], contrib

    @staticmethod
    def backward(ctx, g_rgb, g_depth, g_alpha, _g_vis, _g_contrib):
        leaves = ctx.leaves
        need = [t for t in leaves if t is not None and t.requires_grad]
        outs, grads = [], []
        for o, g in zip(ctx.outs, (g_rgb, g_depth, g_alpha), strict=True):
            if g is not None and o.requires_grad:
                outs.append(o)
                grads.append(g)
        got: list[torch.Tensor | None] | tuple[torch.Tensor | None, ...] = [None] * len(need)
        if outs:
            # retain_graph: the outer graph may be replayed (retain_graph=True, gradcheck); the inner one goes with ctx
            with cpu_threads(leaves[0].device):
                got = torch.autograd.grad(outs, need, grads, allow_unused=True, retain_graph=True)
        it = iter(got)
        return (None, *[next(it) if t is not None and t.requires_grad else None for t in leaves])


# Pixels per intersect / composite call on CUDA (several whole views at once: fewer kernel launches); on CPU the
# cache-sized BAND_PIXELS decides.
CUDA_GROUP_PIXELS = 4_000_000


def _per_view(t: torch.Tensor, B: int, C: int, dims: int) -> torch.Tensor:
    """A per-Gaussian attribute shared ([N, ...], ``dims`` dims) or per configuration ([B, N, ...]) ->
    [B * C, N, ...]: one row per (configuration, view)."""
    t = (t[None] if t.dim() == dims else t).unsqueeze(1)
    return t.expand(B, C, *t.shape[2:]).reshape(B * C, *t.shape[2:])


def _rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    backgrounds: torch.Tensor | None,
    masks: torch.Tensor | None,
    mask_ids: torch.Tensor | None,
    near: float,
    far: float,
) -> dict[str, torch.Tensor]:
    batched = means.dim() == 3
    if batched and masks is not None:
        raise ValueError("rasterize: masks are not supported with batched means")
    if not batched:
        means, quats = means[None], quats[None]
    B, N = means.shape[:2]
    C = viewmats.shape[0]
    H, W = height, width
    V = B * C  # views: (configuration, camera) pairs
    device = means.device
    Kg = gsplat_intrinsics(Ks.to(means.dtype))
    proj = project_batch(means, quats, scales, opacities, viewmats.to(means.dtype), Kg, W, H, near, far)
    m2 = proj.means2d.reshape(V, N, 2)
    con = proj.conics.reshape(V, N, 3)
    z = proj.depths.reshape(V, N)
    radii = proj.radii.reshape(V, N, 2)
    op = _per_view(opacities, B, C, 1)
    feats = torch.cat([_per_view(colors, B, C, 2), z[..., None]], dim=-1)  # [V, N, 4]
    # Work units: on CPU cache-sized (BAND_PIXELS): several small views per call, or one view in bands of rows;
    # on CUDA many whole views per call.
    budget = BAND_PIXELS if device.type == "cpu" else CUDA_GROUP_PIXELS
    per_call = max(1, budget // (H * W))
    band = H if device.type == "cuda" else max(1, min(H, BAND_PIXELS // W))
    accs, alphas, visible, contrib = [], [], [], []
    for v0 in range(0, V, per_call):
        v1 = min(V, v0 + per_call)
        n_v = v1 - v0
        m2_g, con_g = m2[v0:v1].reshape(-1, 2), con[v0:v1].reshape(-1, 3)
        op_g, z_g, feats_g = op[v0:v1].reshape(-1), z[v0:v1].reshape(-1), feats[v0:v1].reshape(-1, 4)
        rad_g = radii[v0:v1].reshape(-1, 2)
        cam_ids = torch.arange(n_v, device=device).repeat_interleave(N)
        bands = [(0, H)] if n_v > 1 or band >= H else [(r0, min(H, r0 + band)) for r0 in range(0, H, band)]
        acc_v, alpha_v, vis_v, contrib_v = [], [], None, None
        for r0, r1 in bands:
            rows = None if (r0, r1) == (0, H) else (r0, r1)
            pairs = intersect(m2_g.detach(), con_g.detach(), op_g.detach(), z_g.detach(), rad_g, cam_ids, W, H,
                              rows=rows)
            acc, alpha = composite(pairs, m2_g, con_g, op_g, feats_g, n_v * (r1 - r0) * W, W, H)
            acc_v.append(acc)
            alpha_v.append(alpha)
            vis = visible_from_pairs(pairs, n_v, N)
            vis_v = vis if vis_v is None else vis_v | vis
            if masks is not None:
                g = contribution(pairs, masks[v0:v1, r0:r1], mask_ids, n_v, N)
                contrib_v = g if contrib_v is None else torch.maximum(contrib_v, g)
        accs.append(torch.cat(acc_v).reshape(n_v, H, W, 4))
        alphas.append(torch.cat(alpha_v).reshape(n_v, H, W))
        visible.append(vis_v)
        if masks is not None:
            contrib.append(contrib_v)
    acc = torch.cat(accs).reshape(B, C, H, W, 4)
    alpha = torch.cat(alphas).reshape(B, C, H, W)
    rgb = acc[..., :3]
    if backgrounds is not None:
        rgb = rgb + (1.0 - alpha)[..., None] * backgrounds[None, :, None, None, :].to(rgb.dtype)
    depth = acc[..., 3] / alpha.clamp_min(1e-10)
    out = {"rgb": rgb, "depth": depth, "alpha": alpha, "visible": torch.cat(visible).reshape(B, C, N)}
    if masks is not None:
        out["mask_contribution"] = torch.cat(contrib)[None]
    if not batched:
        out = {k: v[0] for k, v in out.items()}
    return out


def visible_from_pairs(pairs: Pairs, C: int, N: int) -> torch.Tensor:
    """[C, N] bool: the (camera, Gaussian) entry contributes to at least one pixel."""
    vis = torch.zeros(C * N, dtype=torch.bool, device=pairs.splat.device)
    vis.index_fill_(0, pairs.splat, True)
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
    tensors, a plain cumprod and autograd. Only for tests on small scenes (the reference for the culled path).

    Returns rgb, depth, alpha like :func:`rasterize` plus gamma [C, H*W, N], every pixel's γ per Gaussian.
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
    gamma = torch.zeros_like(w).scatter(2, idx[:, None, :].expand_as(w), w)  # back to input order
    return {"rgb": rgb, "depth": acc_z / acc_a.clamp_min(1e-10), "alpha": acc_a, "gamma": gamma}
