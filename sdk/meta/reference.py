"""The straightforward per-task loop (clone, adapt, accumulate), as the incumbent libraries
run MAML and FOMAML. It is the baseline of ``metaedge bench meta-train`` and an
independent reference for the batched core in tests; it is never used for training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaedge.sdk.meta.core import InnerLoop
from metaedge.sdk.models.mlp import Params


def per_task_meta_gradient(params: Params, batch: tuple[Tensor, ...], inner: InnerLoop, second_order: bool) -> tuple[Params, Tensor]:
    """MAML (``second_order``) or FOMAML meta-gradient, one task at a time with autograd."""
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    keys = inner.keys(theta)
    x_tr, y_tr, x_va, y_va = batch
    tasks = x_tr.shape[0]
    total = torch.zeros(())
    for t in range(tasks):
        fast = dict(theta) if second_order else {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        for _ in range(inner.steps):
            loss = inner.loss(fast, x_tr[t], y_tr[t])
            grads = torch.autograd.grad(loss, [fast[k] for k in keys], create_graph=second_order)
            fast = {**fast, **{k: fast[k] - inner.lr * g for k, g in zip(keys, grads)}}
        val = inner.loss(fast, x_va[t], y_va[t]) / tasks
        if second_order:
            val.backward()
        else:
            leaves = {k: v for k, v in fast.items()}
            grads = torch.autograd.grad(val, list(leaves.values()), allow_unused=True)
            for (k, _), g in zip(leaves.items(), grads):
                if g is not None:
                    theta[k].grad = g if theta[k].grad is None else theta[k].grad + g
        total = total + val.detach()
    zero = {k: torch.zeros_like(v) for k, v in theta.items()}
    return {k: (v.grad if v.grad is not None else zero[k]) for k, v in theta.items()}, total


def per_task_objective_gradient(objective, params: Params, batch: tuple[Tensor, ...], inner: InnerLoop) -> tuple[Params, Tensor]:
    """Any algorithm's meta-gradient with its own per-task objective called one task at a time (no vmap),
    each backward pass accumulating into θ's gradients: the loop baseline for every algorithm."""
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    tasks = batch[0].shape[0]
    total = torch.zeros(())
    for t in range(tasks):
        value, loss = objective(theta, *(b[t] for b in batch), inner)
        (value / tasks).backward()
        total = total + loss.detach() / tasks
    return {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in theta.items()}, total
