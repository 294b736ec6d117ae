"""Reptile (eq. 2.22–2.23): the objective ½‖θ − sg(φ)‖² has gradient θ − φ, so plain SGD
with step β gives θ ← (1 − β)θ + β·mean_k φ_k exactly.

Reptile never evaluates a validation loss, so it may spend a task's validation samples in its
inner loop: with ``Pooled.pooled`` step j runs on the j-th minibatch (as large as D_tr) of
D_tr ∪ D_va, cycling. Steps on different minibatches are what make Reptile more than joint
learning (Nichol et al. 2018, §5: the expected update then contains the inner product of
gradients on different minibatches, which rewards generalising within a task); steps on one
fixed support set reward fitting it. A single step uses D_tr alone, i.e. eq. 2.22."""

import dataclasses

import torch

from metaedge.sdk.meta.core import InnerLoop, adapt, stop_gradient
from metaedge.sdk.meta.defaults import Pooled


def pooled_minibatches(x_tr, y_tr, x_va, y_va, steps: int):
    """(x, y) of each inner step: successive |D_tr|-sized slices of D_tr ∪ D_va, wrapping round."""
    x, y = torch.cat([x_tr, x_va]), torch.cat([y_tr, y_va])
    size, total = x_tr.shape[0], x.shape[0]
    for j in range(steps):
        rows = torch.arange(j * size, (j + 1) * size) % total
        yield x[rows], y[rows]


def adapted_parameters(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    """φ: ``inner.steps`` steps on D_tr (eq. 2.22), or on pooled minibatches."""
    if not inner.of(Pooled).pooled:
        return adapt(params, x_tr, y_tr, inner)
    one = dataclasses.replace(inner, steps=1)
    for x, y in pooled_minibatches(x_tr, y_tr, x_va, y_va, inner.steps):
        params = adapt(params, x, y, one)
    return params


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    adapted = stop_gradient(adapted_parameters(stop_gradient(params), x_tr, y_tr, x_va, y_va, inner))
    pull = sum(0.5 * ((params[k] - adapted[k]) ** 2).sum() for k in params)
    return pull, inner.loss(adapted, x_va, y_va)
