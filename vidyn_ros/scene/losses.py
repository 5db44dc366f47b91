"""Photometric and geometric losses for fitting Gaussians to RGB-D views (torch, differentiable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error. pred/target [..., H, W, 3]; weight [..., H, W] (broadcast over channels) or None."""
    err = (pred - target).abs()
    if weight is None:
        return err.mean()
    w = weight.unsqueeze(-1).expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-8)


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity of two image batches [C, H, W, 3] in [0, 1] (Wang et al. 2004, Gaussian window).

    Separable Gaussian filtering with zero padding, as the 3DGS reference implementation does.
    """
    x = pred.permute(0, 3, 1, 2)
    y = target.permute(0, 3, 1, 2)
    ch = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    kh = g.view(1, 1, 1, -1).expand(ch, 1, 1, window)
    kv = g.view(1, 1, -1, 1).expand(ch, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, kh, padding=(0, window // 2), groups=ch)
        return F.conv2d(t, kv, padding=(window // 2, 0), groups=ch)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean()


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, lambda_ssim: float = 0.2) -> torch.Tensor:
    """3DGS photometric loss (1 − λ)·L1 + λ·(1 − SSIM). pred/target [C, H, W, 3]."""
    loss = (1.0 - lambda_ssim) * l1_loss(pred, target)
    if lambda_ssim > 0:
        loss = loss + lambda_ssim * (1.0 - ssim(pred, target))
    return loss


def depth_loss(pred: torch.Tensor, target: torch.Tensor, max_error: float = 0.1) -> torch.Tensor:
    """L1 depth error [m] over pixels with a measurement (target > 0). pred/target [C, H, W].

    Errors are clipped at ``max_error`` so that depth edges (mixed pixels) do not dominate.
    """
    valid = target > 0
    if not bool(valid.any()):
        return pred.sum() * 0.0
    return (pred[valid] - target[valid]).abs().clamp_max(max_error).mean()


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio [dB] of images in [0, 1]. pred/target [..., H, W, 3]; mask [..., H, W] bool."""
    err = (pred.detach().float() - target.detach().float()) ** 2
    if mask is not None:
        err = err[mask]
    mse = float(err.mean()) if err.numel() else 0.0
    return float("inf") if mse <= 0 else float(-10.0 * torch.log10(torch.tensor(mse)))
