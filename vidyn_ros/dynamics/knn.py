"""k nearest neighbours of every particle: ONE object-agnostic search over all particles (seed 001).

CPU: scipy's cKDTree (the fastest option measured on these cores; torch-cluster, pytorch3d and pykeops have no wheels
for this torch). CUDA: brute-force ``torch.cdist`` + ``topk`` in row chunks (exact; no build step). Indices carry no
gradient: neighbourhoods are recomputed from the positions at t every step.
"""

from __future__ import annotations

import numpy as np
import torch

# row chunk of the CUDA brute-force search: chunk x N distances live at once (4096 x 50k floats = 800 MB)
_CUDA_CHUNK = 4096


def knn_indices(points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` nearest neighbours of every point, itself included (first).

    Args:
        points: [B..., N, 3] positions (any device).
    Returns:
        idx: [B..., N, k] int64 neighbour indices into the N points (same device).
        valid: [B..., N, k] bool; False where N < k (the slot repeats the point itself and must be ignored).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    batch, n = points.shape[:-2], points.shape[-2]
    flat = points.detach().reshape(-1, n, 3)
    kk = min(k, n)
    if n == 0:
        idx = torch.zeros(*batch, 0, k, dtype=torch.long, device=points.device)
        return idx, torch.zeros_like(idx, dtype=torch.bool)
    if flat.device.type == "cuda":
        out = torch.stack([_knn_torch(p, kk) for p in flat])
    else:
        out = torch.from_numpy(np.stack([_knn_kdtree(p.numpy(), kk) for p in flat.float()]))
    out = out.to(points.device)
    valid = torch.ones(*out.shape, dtype=torch.bool, device=points.device)
    if kk < k:  # pad with the point itself, masked out
        pad = torch.arange(n, device=points.device).view(1, n, 1).expand(out.shape[0], n, k - kk)
        out = torch.cat([out, pad], dim=-1)
        valid = torch.cat([valid, torch.zeros_like(pad, dtype=torch.bool)], dim=-1)
    return out.reshape(*batch, n, k), valid.reshape(*batch, n, k)


def _knn_kdtree(p: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    _, idx = cKDTree(p).query(p, k=k)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(p), k)
    # the query point comes first (distance 0), except for exact duplicates: put it first explicitly
    own = np.arange(len(p))
    first_is_self = idx[:, 0] == own
    if not first_is_self.all():
        bad = np.nonzero(~first_is_self)[0]
        for i in bad:
            row = [j for j in idx[i] if j != i][: k - 1]
            idx[i] = [i, *row]
    return idx


def _knn_torch(p: torch.Tensor, k: int) -> torch.Tensor:
    n = p.shape[0]
    rows = []
    for s in range(0, n, _CUDA_CHUNK):
        d = torch.cdist(p[s : s + _CUDA_CHUNK], p)
        d[torch.arange(d.shape[0], device=p.device), torch.arange(s, s + d.shape[0], device=p.device)] = -1.0
        rows.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(rows)
