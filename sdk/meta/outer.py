"""θ and its optimizer: one outer step is a task batch's meta-gradient and an Adam (or SGD) step. Every family
whose θ is trained through the batched core steps this way; ``fit`` runs it for a fixed budget in memory (the
benchmarks), ``meta.trainer.train`` with validation, the best θ kept and early stopping (the run directories)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from metaedge.sdk.meta.core import InnerLoop, Objective, meta_gradient

Params = dict[str, Tensor]
Gradient = Callable[[Params, Any], tuple[Params, Tensor]]  # (θ, batch) → (meta-gradient per learned parameter, loss)


class OuterLoop:
    """θ (``learned`` of its entries move; default all) and the optimizer that moves them."""

    def __init__(self, theta: Params, gradient: Gradient, outer_lr: float, optimizer: str = "adam", learned: list[str] | None = None) -> None:
        self.params = {k: v.detach().clone() for k, v in theta.items()}
        self.learned = list(self.params) if learned is None else learned
        leaves = [self.params[k].requires_grad_(True) for k in self.learned]
        self.opt = torch.optim.Adam(leaves, lr=outer_lr) if optimizer == "adam" else torch.optim.SGD(leaves, lr=outer_lr)
        self.gradient = gradient

    @property
    def theta(self) -> Params:
        """θ now, detached (not to be modified)."""
        return {k: v.detach() for k, v in self.params.items()}

    def step(self, batch: Any, finite_only: bool = False) -> float | None:
        """One outer step on ``batch``; its meta-loss. With ``finite_only``, a batch whose loss or meta-gradient is not
        finite moves nothing (θ and the optimizer's state stay) and the step returns None."""
        grads, loss = self.gradient(self.theta, batch)
        if finite_only and not (torch.isfinite(loss) and all(torch.isfinite(grads[k]).all() for k in self.learned)):
            return None
        for k in self.learned:
            self.params[k].grad = grads[k]
        self.opt.step()
        return float(loss)


def of_objective(objective: Objective, inner: InnerLoop) -> Gradient:
    """The meta-gradient of one algorithm's objective, batched over the tasks."""
    return lambda theta, batch: meta_gradient(objective, theta, batch, inner)


def fit(
    objective: Objective,
    theta: Params,
    inner: InnerLoop,
    batches: Callable[[int], tuple[Tensor, ...]],
    iterations: int,
    outer_lr: float,
    progress: Callable[[int, Params, float], None] | None = None,
) -> Params:
    """θ after ``iterations`` Adam steps; ``batches(i)`` gives step i's task batch; ``progress(i, θ, loss)``
    follows every step (θ detached, not to be modified)."""
    loop = OuterLoop(theta, of_objective(objective, inner), outer_lr)
    for it in range(1, iterations + 1):
        loss = loop.step(batches(it))
        if progress:
            progress(it, loop.theta, loss)
    return loop.theta
