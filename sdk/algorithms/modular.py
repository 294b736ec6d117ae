"""Modular meta-learning (eq. 2.38): θ is a set of M candidate modules per layer (every tensor has a
leading module axis); a task's model picks one module per layer, and only the choice adapts.

The assignment is chosen on the task's training pilots (what a device has at test; eq. 2.38b
writes the validation loss of meta-training), by either
- ``anneal``: simulated annealing over assignments — propose one layer's module at random,
  accept by the Metropolis rule at a geometrically falling temperature, keep the best visited —
  with a fixed number of proposals so it vmaps over tasks; or
- ``relaxed``: per-layer logits over the modules, a softmax-weighted mixture of the modules as
  the model, logits adapted by ``inner.steps`` gradient steps from 0 (uniform) — differentiable,
  so the outer gradient flows through the adaptation as in MAML.
The outer problem (2.38a) is the validation loss of the assembled model; with annealing the
gradient reaches exactly the selected modules.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad

from metaedge.sdk.models import Params, task_loss

ANNEAL_T0, ANNEAL_T1 = 0.5, 0.005   # temperatures of the first and last proposal (the loss is a cross-entropy in nats)


def layers(params: Params) -> list[str]:
    """Layer prefixes ("l0", "l1", …) in order; every layer owns its weight and bias modules."""
    return sorted({k.split(".")[0] for k in params}, key=lambda name: int(name[1:]))


def assemble(params: Params, choice: Tensor) -> Params:
    """The network whose layer i uses module ``choice[i]``."""
    names = layers(params)
    return {k: v.index_select(0, choice[names.index(k.split(".")[0])].reshape(1))[0] for k, v in params.items()}


def mixture(params: Params, logits: Tensor) -> Params:
    """The network whose layer i is the softmax(logits[i])-weighted mixture of its modules."""
    names = layers(params)
    weights = torch.softmax(logits, dim=-1)
    return {k: torch.tensordot(weights[names.index(k.split(".")[0])], v, dims=1) for k, v in params.items()}


def anneal(params: Params, x: Tensor, onehot: Tensor, proposals: int) -> Params:
    count, depth = next(iter(params.values())).shape[0], len(layers(params))
    choice = torch.randint(0, count, (depth,))
    loss = task_loss(assemble(params, choice), x, onehot)
    best, best_loss = choice, loss
    for step in range(proposals):
        temperature = ANNEAL_T0 * (ANNEAL_T1 / ANNEAL_T0) ** (step / max(proposals - 1, 1))
        layer = torch.randint(0, depth, ())
        proposal = torch.where(torch.arange(depth) == layer, torch.randint(0, count, ()), choice)
        new_loss = task_loss(assemble(params, proposal), x, onehot)
        accept = torch.rand(()) < torch.exp(torch.clamp(-(new_loss - loss) / temperature, max=0.0))
        choice, loss = torch.where(accept, proposal, choice), torch.where(accept, new_loss, loss)
        improved = loss < best_loss
        best, best_loss = torch.where(improved, choice, best), torch.where(improved, loss, best_loss)
    return assemble(params, best.detach())


def relaxed(params: Params, x: Tensor, onehot: Tensor, lr: float, steps: int) -> Params:
    count, depth = next(iter(params.values())).shape[0], len(layers(params))
    logits = torch.zeros(depth, count, dtype=next(iter(params.values())).dtype)
    for _ in range(steps):
        logits = logits - lr * grad(lambda z: task_loss(mixture(params, z), x, onehot))(logits)
    return mixture(params, logits)
