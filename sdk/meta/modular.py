"""Modular meta-learning (eq. 2.38): θ is a set of M candidate modules per layer (every tensor has a
leading module axis); a task's model picks one module per layer, and only the choice adapts.

The assignment is chosen on the task's training pilots (what a device has at test; eq. 2.38b
writes the validation loss of meta-training), by either
- ``anneal``: simulated annealing over assignments — propose one layer's module at random,
  accept by the Metropolis rule at a geometrically falling temperature, keep the best visited —
  with a fixed number of proposals so it vmaps over tasks;
- ``exhaustive``: the best of all M^L assignments (what a deployed receiver computes); or
- ``relaxed``: per-layer logits over the modules, a softmax-weighted mixture of the modules as
  the model, logits adapted by ``inner.steps`` gradient steps from 0 (uniform) — differentiable,
  so the outer gradient flows through the adaptation as in MAML.
The outer problem (2.38a) is the validation loss of the assembled model; with annealing the
gradient reaches exactly the selected modules.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, vmap

from metaedge.sdk.models.mlp import Loss, Params, forward

ANNEAL_T0, ANNEAL_T1 = 0.5, 0.005  # temperatures of the first and last proposal (the loss is a cross-entropy in nats)


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


def anneal(params: Params, x: Tensor, onehot: Tensor, proposals: int, task_loss: Loss) -> Params:
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


def relaxed_logits(params: Params, x: Tensor, onehot: Tensor, lr: float, steps: int, logits: Tensor, task_loss: Loss) -> Tensor:
    """``steps`` gradient steps of size ``lr`` on the per-layer module logits, from ``logits``."""
    for _ in range(steps):
        logits = logits - lr * grad(lambda z: task_loss(mixture(params, z), x, onehot))(logits)
    return logits


def relaxed(params: Params, x: Tensor, onehot: Tensor, lr: float, steps: int, task_loss: Loss) -> Params:
    count, depth = next(iter(params.values())).shape[0], len(layers(params))
    start = torch.zeros(depth, count, dtype=next(iter(params.values())).dtype)
    return mixture(params, relaxed_logits(params, x, onehot, lr, steps, start, task_loss))


# -- the deployed form (docs/bundle-format.md §7.5) ----------------------------------------------
# A device keeps every module and adapts only the assignment: per-layer logits whose softmax mixes the
# modules. Annealing's random proposals would have to be reproduced, so a device instead searches all
# M^L assignments on the pilots and takes the best, which annealing approximates; logits of 0 for the
# chosen module and UNCHOSEN for the others make the mixture that network exactly.
ASSIGNMENT = "assignment"
UNCHOSEN = -1e4  # exp(−10⁴) underflows to 0 in float32
MAX_ASSIGNMENTS = 4096  # M^L networks a device scores per frame


def deployable(params: Params) -> Params:
    """θ as a device holds it: the modules and the assignment logits, 0 (a uniform mixture) until adapted."""
    count, depth = next(iter(params.values())).shape[0], len(layers(params))
    return {**params, ASSIGNMENT: torch.zeros(depth, count, dtype=next(iter(params.values())).dtype)}


def modules_of(params: Params) -> Params:
    return {k: v for k, v in params.items() if k != ASSIGNMENT}


def assigned_forward(params: Params, x: Tensor, model: Callable[[Params, Tensor], Tensor] = forward) -> Tensor:
    """``model``'s output (default: the MLP's class log-probabilities) for the network the assignment logits select
    (or mix)."""
    return model(mixture(modules_of(params), params[ASSIGNMENT]), x)


def best_choice(params: Params, x: Tensor, onehot: Tensor, task_loss: Loss) -> Tensor:
    """The module per layer of the assignment with the lowest loss on (x, onehot) among all M^L (row-major
    enumeration, the first among equal losses)."""
    count, depth = next(iter(params.values())).shape[0], len(layers(params))
    combos = torch.cartesian_prod(*[torch.arange(count)] * depth).reshape(count**depth, depth)
    names = layers(params)
    networks = {k: v[combos[:, names.index(k.split(".")[0])]] for k, v in params.items()}
    losses = vmap(task_loss, in_dims=(0, None, None))(networks, x, onehot)
    return combos.index_select(0, torch.argmin(losses).reshape(1))[0]  # a tensor index: traceable, exportable


def exhaustive(params: Params, x: Tensor, onehot: Tensor, task_loss: Loss) -> Params:
    """The network of the best assignment on the pilots (what a device computes; annealing approximates it)."""
    return assemble(params, best_choice(params, x, onehot, task_loss).detach())


def best_assignment(params: Params, x: Tensor, onehot: Tensor, task_loss: Loss) -> Tensor:
    """Logits selecting ``best_choice``: 0 for the chosen module of each layer, UNCHOSEN for the others."""
    count = next(iter(params.values())).shape[0]
    selected = best_choice(params, x, onehot, task_loss)[:, None] == torch.arange(count)[None, :]
    return torch.where(selected, torch.zeros((), dtype=x.dtype), torch.full((), UNCHOSEN, dtype=x.dtype))


def adapt_assignment(params: Params, x: Tensor, onehot: Tensor, relaxed_steps: int | None, lr: float, task_loss: Loss) -> Params:
    """The device's adaptation: the best assignment (``relaxed_steps`` None), or gradient steps on the logits."""
    modules = modules_of(params)
    if relaxed_steps is None:
        return {**params, ASSIGNMENT: best_assignment(modules, x, onehot, task_loss)}
    return {**params, ASSIGNMENT: relaxed_logits(modules, x, onehot, lr, relaxed_steps, params[ASSIGNMENT], task_loss)}
