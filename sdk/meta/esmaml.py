"""ES-MAML (eq. 2.18–2.21): MAML with every gradient replaced by an evolution-strategies estimate
from loss values at random points, so no backpropagation runs through the network (the
meta-gradient still flows through the surrogate ⟨θ, sg(g)⟩).

Estimators, with u_i ~ N(0, I) drawn per task: the gradient (2.20) in its antithetic form
(1/n)Σ u_i [L(ϕ + δu_i) − L(ϕ − δu_i)]/2δ — the same Gaussian-smoothed gradient as the one-sided
form, with far lower variance — and the Hessian (2.21) with L(ϕ) subtracted from every L(ϕ + δu_i)
(unbiased as well, because E[uuᵀ − I] = 0). φ = θ − α∇̂L_tr(θ) (one step per ``inner.steps``);
the meta-gradient is ∇̂L_va(φ) (2.19), or (I − αH_es)∇̂L_va(φ) with ``Evolution.es_hessian`` (2.18).
"""

import torch
from torch.func import vmap

from metaedge.sdk.meta.defaults import Evolution


def _flat(params, keys):
    return torch.cat([params[k].reshape(-1) for k in keys])


def _unflat(vector, like, keys):
    out, start = dict(like), 0
    for k in keys:
        n = like[k].numel()
        out[k] = vector[start : start + n].reshape(like[k].shape)
        start += n
    return out


def _losses(params, keys, points, x, y, loss):
    """The task loss at each row of ``points`` (flattened adapted parameters)."""
    return vmap(lambda p: loss(_unflat(p, params, keys), x, y))(points)


def es_gradient(params, keys, x, y, directions, delta, loss):
    center = _flat(params, keys)
    u = torch.randn(directions, center.numel(), dtype=center.dtype)
    diff = _losses(params, keys, center + delta * u, x, y, loss) - _losses(params, keys, center - delta * u, x, y, loss)
    return (u * diff[:, None]).mean(0) / (2 * delta)


def es_hessian_product(params, keys, x, y, vector, directions, delta, loss):
    """H_es·v of eq. 2.21 (with L(ϕ) as baseline), never forming the d × d matrix."""
    center = _flat(params, keys)
    u = torch.randn(directions, center.numel(), dtype=center.dtype)
    values = _losses(params, keys, center + delta * u, x, y, loss) - loss(params, x, y)
    return ((values * (u @ vector))[:, None] * u).mean(0) / delta**2 - values.mean() * vector / delta**2


def objective(params, x_tr, y_tr, x_va, y_va, inner):
    keys, es = inner.keys(params), inner.of(Evolution)
    theta = {k: v.detach() for k, v in params.items()}
    phi = theta
    for _ in range(inner.steps):
        step = es_gradient(phi, keys, x_tr, y_tr, es.es_directions, es.es_delta, inner.loss)
        phi = _unflat(_flat(phi, keys) - inner.lr * step, phi, keys)
    g = es_gradient(phi, keys, x_va, y_va, es.es_directions, es.es_delta, inner.loss)
    if es.es_hessian:
        g = g - inner.lr * es_hessian_product(theta, keys, x_tr, y_tr, g, es.es_directions, es.es_delta, inner.loss)
    surrogate = (_flat(params, keys) * g.detach()).sum()
    return surrogate, inner.loss(phi, x_va, y_va)
