"""The random-edge graph neural network (REGNN) power allocator of monograph §5.5 (eq. 5.27, after Eisen &
Ribeiro): layer l maps node features Z (V × F) to σ(Σ_{k<K} S^k Z A_{l,k} + b_l) with the slot's channel
matrix as graph shift S (normalised by its Frobenius norm so its powers stay bounded), ReLU between
layers and a sigmoid at the end: p = f(G | φ) ∈ [0, 1]^V. Node inputs: a one, and the link's direct gain
as log10 g_ii less its mean over the slot's links (with ones alone the filters see the gains only through
a shift whose entries span orders of magnitude, and training drifted to every link at full power). The
policy sees gains only, not the noise power: that is what a period's few slots teach the adaptation.
Any number of links works. Parameters ``l<i>.filter``
[K, F_in, F_out] and ``l<i>.bias`` [F_out]; a ``l<i>.`` prefix per layer is what modular meta-learning
swaps.

The loss is the negative sum-rate (eq. 5.26, 5.28) of the powers, averaged over slots, unsupervised.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metaedge.sdk.models.mlp import Params


def is_regnn(params: Params) -> bool:
    return "l0.filter" in params


def gains(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Samples [N, V² + 2] → gain matrices [N, V, V], noise powers [N] and interference couplings [N]."""
    v = math.isqrt(x.shape[-1] - 2)
    return x[:, :-2].reshape(-1, v, v), x[:, -2], x[:, -1]


def powers(params: Params, x: Tensor) -> Tensor:
    """Transmit powers [N, V] in [0, 1] for the slots ``x``."""
    g, _, _ = gains(x)
    shift = g / g.flatten(1).norm(dim=-1).clamp_min(1e-30)[:, None, None]
    direct = torch.diagonal(g, dim1=-2, dim2=-1)
    active = (direct > 0).to(g.dtype)
    level = torch.log10(direct.clamp_min(1e-30))
    centred = (level - (level * active).sum(-1, keepdim=True) / active.sum(-1, keepdim=True).clamp_min(1)) * active
    z = torch.stack([torch.ones_like(centred), centred], -1)
    depth = sum(1 for k in params if k.endswith(".filter"))
    for i in range(depth):
        taps = params[f"l{i}.filter"]
        diffused, total = z, 0
        for k in range(taps.shape[0]):
            total = total + diffused @ taps[k]
            diffused = shift.transpose(-1, -2) @ diffused  # receiver i aggregates Σ_j G[j, i] z_j
        z = total + params[f"l{i}.bias"]
        z = torch.relu(z) if i < depth - 1 else torch.sigmoid(z)
    return z[..., 0]


def sum_rate(g: Tensor, noise: Tensor, coupling: Tensor, p: Tensor) -> Tensor:
    """Σ_j log2(1 + G[j,j] p_j / (σ² + c Σ_{i≠j} G[i,j] p_i)) per slot (eq. 5.26, the interference scaled by the
    period's coupling c): [N]."""
    direct = torch.diagonal(g, dim1=-2, dim2=-1) * p
    interference = (g.transpose(-1, -2) @ p[..., None])[..., 0] - direct
    return torch.log2(1 + direct / (noise[:, None] + coupling[:, None] * interference)).sum(-1)


def task_loss(params: Params, x: Tensor, _target: Tensor) -> Tensor:
    """−mean sum-rate over the slots (eq. 5.28)."""
    return -sum_rate(*gains(x), powers(params, x)).mean()
