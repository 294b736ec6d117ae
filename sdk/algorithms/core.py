"""The bilevel core (monograph §3, eq. 3.1): inner adaptation φ_k = adapt(θ, D_tr_k) and the
outer meta-gradient of the average over tasks of L(D_va_k, φ_k), batched with ``torch.func``.

An algorithm is one pure per-task function
``objective(θ, x_tr, y_tr, x_va, y_va, inner) -> (objective, validation loss)`` whose
gradient with respect to θ is that task's meta-gradient. The core vmaps it over the task
axis and differentiates the task average once with autograd: θ is shared by every task,
so one backward pass yields the averaged meta-gradient without per-task gradient copies.
No Python loop over tasks runs in the hot path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, vmap

from metaedge.sdk.models.mlp import Params, task_loss

Objective = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class InnerLoop:
    """Few-shot adaptation: ``steps`` SGD steps of size ``lr`` on the parameters named in ``adapt``."""

    lr: float = 0.1
    steps: int = 1
    adapt: tuple[str, ...] | None = None  # None: every parameter adapts

    def keys(self, params: Params) -> tuple[str, ...]:
        return tuple(params) if self.adapt is None else self.adapt


def adapt(params: Params, x: Tensor, onehot: Tensor, inner: InnerLoop) -> Params:
    """φ = θ − α∇L_tr(θ), repeated ``inner.steps`` times; differentiable with respect to θ."""
    keys = inner.keys(params)
    fast = {k: params[k] for k in keys}
    for _ in range(inner.steps):
        g = grad(lambda f: task_loss({**params, **f}, x, onehot))(fast)
        fast = {k: fast[k] - inner.lr * g[k] for k in keys}
    return {**params, **fast}


def stop_gradient(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def meta_gradient(objective: Objective, params: Params, batch: tuple[Tensor, ...], inner: InnerLoop) -> tuple[Params, Tensor]:
    """(∇θ of the task-averaged objective, task-averaged validation loss) for a batch of tasks."""
    theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    per_task = vmap(objective, in_dims=(None, 0, 0, 0, 0, None))
    objectives, losses = per_task(theta, *batch, inner)
    grads = torch.autograd.grad(objectives.mean(), list(theta.values()), allow_unused=True)
    return (
        {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(theta.items(), grads)},
        losses.mean().detach(),
    )


def to_batch(x_tr, y_tr, x_va, y_va, classes: int) -> tuple[Tensor, ...]:
    """numpy task arrays → (x_tr, onehot_tr, x_va, onehot_va) tensors with a leading task axis."""
    def onehot(y):
        return torch.nn.functional.one_hot(torch.as_tensor(y), classes).to(torch.float32)

    return torch.as_tensor(x_tr), onehot(y_tr), torch.as_tensor(x_va), onehot(y_va)
