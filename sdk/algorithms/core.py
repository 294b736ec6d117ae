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
from torch.func import grad, grad_and_value, vmap

from metaedge.sdk.models.mlp import Params, task_loss

Objective = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class InnerLoop:
    """Few-shot adaptation: ``steps`` SGD steps of size ``lr`` on the parameters named in ``adapt``."""

    lr: float = 0.1
    steps: int = 1
    adapt: tuple[str, ...] | None = None  # None: every model parameter adapts (learned step sizes never do)

    def keys(self, params: Params) -> tuple[str, ...]:
        if self.adapt is not None:
            return self.adapt
        return tuple(k for k in params if not k.startswith(STEP_PREFIX))


STEP_PREFIX = "lr."  # Meta-SGD: params["lr.<name>"] is the learned step size of every entry of <name>


def step_size(params: Params, key: str, inner: InnerLoop):
    """The step size of parameter ``key``: its learned tensor (Meta-SGD) or the scalar ``inner.lr``."""
    return params.get(STEP_PREFIX + key, inner.lr)


def adapt(params: Params, x: Tensor, onehot: Tensor, inner: InnerLoop) -> Params:
    """φ = θ − α∘∇L_tr(θ), repeated ``inner.steps`` times; differentiable with respect to θ (and α)."""
    keys = inner.keys(params)
    fast = {k: params[k] for k in keys}
    for _ in range(inner.steps):
        g = grad(lambda f: task_loss({**params, **f}, x, onehot))(fast)
        fast = {k: fast[k] - step_size(params, k, inner) * g[k] for k in keys}
    return {**params, **fast}


def stop_gradient(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def task_mean(objective: Objective, batch: tuple[Tensor, ...], inner: InnerLoop) -> Callable[[Params], tuple[Tensor, Tensor]]:
    """θ ↦ (mean objective, mean validation loss) over the leading task axis of ``batch``."""
    per_task = vmap(objective, in_dims=(None, 0, 0, 0, 0, None))

    def mean(theta: Params) -> tuple[Tensor, Tensor]:
        objectives, losses = per_task(theta, *batch, inner)
        return objectives.mean(), losses.mean()

    return mean


def meta_gradient(objective: Objective, params: Params, batch: tuple[Tensor, ...], inner: InnerLoop) -> tuple[Params, Tensor]:
    """(∇θ of the task-averaged objective, task-averaged validation loss) for a batch of tasks.

    Eager path: the vmapped forward is differentiated by autograd, which in eager mode is
    ~1.4× faster than ``torch.func.grad`` around the vmap (measured, 32 tasks).
    """
    theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    objective_mean, loss = task_mean(objective, batch, inner)(theta)
    grads = torch.autograd.grad(objective_mean, list(theta.values()), allow_unused=True)
    return (
        {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(theta.items(), grads)},
        loss.detach(),
    )


def compiled_meta_gradient(objective: Objective, inner: InnerLoop) -> Callable[[Params, tuple[Tensor, ...]], tuple[Params, Tensor]]:
    """The same meta-gradient, written purely with ``torch.func`` and ``torch.compile``d.

    Costs a one-off compilation (4–20 s on 2 cores) and then runs ~3× faster than the eager
    path (``metaedge bench meta-train``); worth it for runs of thousands of iterations.
    """
    def step(params: Params, batch: tuple[Tensor, ...]) -> tuple[Params, Tensor]:
        grads, (_, loss) = grad_and_value(task_mean(objective, batch, inner), has_aux=True)(params)
        return grads, loss

    return torch.compile(step)


def to_batch(x_tr, y_tr, x_va, y_va, classes: int) -> tuple[Tensor, ...]:
    """numpy task arrays → (x_tr, onehot_tr, x_va, onehot_va) tensors with a leading task axis."""
    def onehot(y):
        return torch.nn.functional.one_hot(torch.as_tensor(y), classes).to(torch.float32)

    return torch.as_tensor(x_tr), onehot(y_tr), torch.as_tensor(x_va), onehot(y_va)
