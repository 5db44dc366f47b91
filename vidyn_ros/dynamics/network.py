"""Object-centric point convolution (seed 001, "Object / Relational PointConv with ID affinity").

One object-agnostic KNN over all particles; two convolutions per layer share it and differ only in the affinity
weight m_{i,0} of neighbour i of point 0:

    Object PointConv      m_{i,0} = w_iᵀ w_0          (close to 1 for the same object)
    Relational PointConv  m_{i,0} = 1 − w_iᵀ w_0      (close to 1 for a different object)

    y_0 = W_l vec( (1 / Σ_i m_{i,0}) Σ_{p_i ∈ N(p_0)} m_{i,0} h(p_i − p_0) x_iᵀ )

with h an MLP of the relative position. w is the one-hot (or soft) id vector; the background / table is a class of
its own, so a particle's relational neighbours include the table it stands on. Without object-centric modelling
("No O-Centric" ablation) one PointConv with m = 1 takes their place.

The network is ROS-free and state-free: features in, per-particle outputs out (see ``learned.py`` for what the
features and outputs mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the particle network (saved inside every checkpoint)."""

    in_features: int = 13  # see learned.FEATURES
    out_features: int = 6  # linear (3) + angular (3)
    hidden: int = 32  # per-particle feature width
    layers: int = 3  # object/relational PointConv blocks
    weight_dim: int = 8  # M: output width of h (the PointConv weight net)
    weight_hidden: int = 16  # hidden width of h
    object_centric: bool = True  # False: one plain PointConv (m = 1) per layer ("No O-Centric")


def affinity(ids: torch.Tensor | None, soft: torch.Tensor | None, idx: torch.Tensor, valid: torch.Tensor
             ) -> torch.Tensor:
    """Same-object affinity m_{i,0} = w_iᵀ w_0 of every neighbour.

    Args:
        ids: [N] int object ids (one-hot w), or None when ``soft`` is given.
        soft: [N, K] id distributions (soft w, rows sum to 1), or None.
        idx: [B..., N, k] neighbour indices; valid: [B..., N, k] bool.
    Returns:
        [B..., N, k] in [0, 1]; 0 for invalid neighbour slots.
    """
    if soft is not None:
        w0 = soft.view(*([1] * (idx.dim() - 2)), *soft.shape)  # [1.., N, K]
        wi = soft[idx]  # [B..., N, k, K]
        m = (wi * w0.unsqueeze(-2)).sum(-1)
    else:
        assert ids is not None
        m = (ids[idx] == ids.view(*([1] * (idx.dim() - 2)), -1, 1)).to(torch.float32)
    return m * valid


def gather_neighbours(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, N, C], idx [B, N, k] -> [B, N, k, C] (x of each neighbour)."""
    B, N, C = x.shape
    k = idx.shape[-1]
    flat = (idx + torch.arange(B, device=idx.device).view(B, 1, 1) * N).reshape(-1)
    # index_select: its backward is index_add (fast on CPU); x[flat] would backward through index_put(accumulate)
    return x.reshape(B * N, C).index_select(0, flat).view(B, N, k, C)


class Block(nn.Module):
    """One layer: object + relational PointConv (or one plain PointConv) and a residual MLP update.

    Both convolutions' ``W_l vec(...)`` are one Linear over the concatenated aggregates (= W_obj vec_obj +
    W_rel vec_rel); their weight nets h come precomputed from ``ParticleNet.weight_net`` (see there).
    """

    def __init__(self, cfg: NetworkConfig, n_conv: int) -> None:
        super().__init__()
        H = cfg.hidden
        self.W = nn.Linear(n_conv * cfg.weight_dim * H, H)
        self.update = nn.Sequential(nn.Linear(2 * H, H), nn.SiLU(), nn.Linear(H, H))

    def forward(self, x: torch.Tensor, idx: torch.Tensor, hm: torch.Tensor) -> torch.Tensor:
        """x [B, N, H]; idx [B, N, k]; hm [B, N, k, n_conv * M]: each conv's (m / Σm) h(p_i − p_0)."""
        xj = gather_neighbours(x, idx)  # [B, N, k, H]
        agg = hm.transpose(-1, -2) @ xj  # [B, N, n_conv * M, H]: Σ_i m_i h_i x_iᵀ / Σ m, for every conv
        y = self.W(agg.flatten(-2))
        return x + self.update(torch.cat([nn.functional.silu(y), x], dim=-1))


class ParticleNet(nn.Module):
    """Per-particle features -> per-particle outputs through ``layers`` object-centric PointConv blocks.

    The weight nets h of all convolutions read the same relative positions, so they share one hidden layer and
    differ in their output layer (one Linear producing every conv's M weights): the paper's per-conv h with a shared
    first layer, computed once per step instead of once per conv.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.n_conv = 2 if cfg.object_centric else 1
        self.encode = nn.Sequential(nn.Linear(cfg.in_features, H), nn.SiLU(), nn.Linear(H, H))
        self.weight_net = nn.Sequential(nn.Linear(3, cfg.weight_hidden), nn.SiLU(),
                                        nn.Linear(cfg.weight_hidden, cfg.layers * self.n_conv * cfg.weight_dim))
        self.blocks = nn.ModuleList(Block(cfg, self.n_conv) for _ in range(cfg.layers))
        self.decode = nn.Sequential(nn.SiLU(), nn.Linear(H, H), nn.SiLU(), nn.Linear(H, cfg.out_features))
        # zero output at initialisation: the learned model starts as its residual's base (constant velocity)
        nn.init.zeros_(self.decode[-1].weight)
        nn.init.zeros_(self.decode[-1].bias)

    def conv_weights(self, m_obj: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[B, N, k, n_conv] normalised affinities m / Σ_i m of each conv (object, relational | plain)."""
        if self.cfg.object_centric:
            m = torch.stack([m_obj, (1.0 - m_obj) * valid], dim=-1)
        else:
            m = valid.to(m_obj.dtype).unsqueeze(-1)
        return m / m.sum(dim=-2, keepdim=True).clamp_min(1e-6)  # no neighbour of that kind: all 0

    def forward(self, features: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor, m_obj: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
        """features [B, N, F]; idx / m_obj / valid [B, N, k]; rel [B, N, k, 3] -> [B, N, out_features]."""
        cfg = self.cfg
        B, N, k = idx.shape
        a = self.conv_weights(m_obj.to(features.dtype), valid)  # [B, N, k, n_conv]
        h = self.weight_net(rel).view(B, N, k, cfg.layers, self.n_conv, cfg.weight_dim)
        hm = (h * a.view(B, N, k, 1, self.n_conv, 1)).flatten(-2)  # [B, N, k, layers, n_conv * M]
        x = self.encode(features)
        # unbind, not hm[..., layer, :]: the backward of an indexed slice allocates and zero-fills all of hm per layer
        for block, hm_layer in zip(self.blocks, hm.unbind(dim=-2), strict=True):
            x = block(x, idx, hm_layer)
        return self.decode(x)
