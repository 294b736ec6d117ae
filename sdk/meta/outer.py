"""The plain outer loop shared by the benchmarks that meta-train in memory (sinusoid, learned link, power
control): Adam on θ with the batched meta-gradient of one algorithm, a fresh task batch per step.
(``metaedge train demod`` has its own loop with validation, checkpoints and resume: ``sdk.training``.)"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from metaedge.sdk.meta.core import InnerLoop, Objective, meta_gradient

Params = dict[str, Tensor]


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
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
    opt = torch.optim.Adam(theta.values(), lr=outer_lr)
    for it in range(1, iterations + 1):
        grads, loss = meta_gradient(objective, {k: v.detach() for k, v in theta.items()}, batches(it), inner)
        for k, v in theta.items():
            v.grad = grads[k]
        opt.step()
        if progress:
            progress(it, {k: v.detach() for k, v in theta.items()}, float(loss))
    return {k: v.detach() for k, v in theta.items()}
