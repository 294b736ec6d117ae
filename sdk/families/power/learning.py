"""Training, adaptation and scoring of the REGNN power allocator (monograph §5.5); its benchmark is ``bench``."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.func import vmap

from metaedge.sdk.families.power import model as regnn
from metaedge.sdk.families.power.config import PowerBench
from metaedge.sdk.families.power.task import PowerTasks
from metaedge.sdk.meta import get_algorithm
from metaedge.sdk.meta.core import adapt
from metaedge.sdk.meta.defaults import DEFAULT_ASSIGNMENT
from metaedge.sdk.meta.outer import fit


def initial(method: str, cfg: PowerBench) -> dict[str, torch.Tensor]:
    """θ before training: one REGNN, or for modular ``modules`` independently initialised ones, stacked."""
    rng = np.random.default_rng([cfg.seed, 1])
    if method != "modular":
        return {k: torch.from_numpy(v) for k, v in cfg.model.init(rng).items()}
    draws = [cfg.model.init(rng) for _ in range(cfg.modules)]
    return {k: torch.from_numpy(np.stack([d[k] for d in draws])) for k in draws[0]}


def inner(method: str, cfg: PowerBench, assignment: str = DEFAULT_ASSIGNMENT):
    """The adaptation of ``method``; modular meta-learning picks its modules by annealing in meta-training and by
    ``assignment`` on a new topology ("exhaustive": the exact argmin of eq. 5.32 over all M^L, what a device does)."""
    return get_algorithm(method).inner(cfg.inner_lr, cfg.inner_steps, proposals=cfg.proposals, assignment=assignment, loss=regnn.task_loss)


def period_data(env: PowerTasks, split: str, periods: int, slots: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Topologies of ``split`` and a fixed data set of ``slots`` slots for each."""
    topologies = env.topologies(split, periods)
    return topologies, env.slots(topologies, slots, env.rng(split, index))


def meta_training(method: str, periods: int, cfg: PowerBench) -> tuple:
    """What training ``method`` on ``periods`` periods needs: (objective, θ₀, inner loop, batches), ``batches(i)``
    step i's periods, their N_tr adaptation and N_va validation slots."""
    torch.manual_seed(cfg.seed)
    env = PowerTasks(cfg.power, seed=cfg.seed)
    _, data = period_data(env, "train", periods, cfg.train_slots + cfg.val_slots, 1)
    data = torch.from_numpy(data)
    rng = env.rng("train", 2)
    unused = torch.zeros(cfg.tasks_per_batch, 1, 1)

    def batch(_: int) -> tuple[torch.Tensor, ...]:
        chosen = torch.from_numpy(rng.choice(periods, cfg.tasks_per_batch, replace=periods < cfg.tasks_per_batch))
        d = data[chosen]
        return d[:, : cfg.train_slots], unused.expand(-1, cfg.train_slots, 1), d[:, cfg.train_slots :], unused.expand(-1, cfg.val_slots, 1)

    return get_algorithm(method).objective, initial(method, cfg), inner(method, cfg), batch


def train(method: str, periods: int, cfg: PowerBench, progress: Callable[[int, dict, float], None] | None = None) -> dict:
    """θ meta-trained (or jointly trained) on the fixed data sets of ``periods`` meta-training periods."""
    return fit(*meta_training(method, periods, cfg), cfg.iterations, cfg.outer_lr, progress)


def new_topology_rates(method: str | None, theta: dict | None, cfg: PowerBench, split: str = "test") -> np.ndarray:
    """Mean sum-rate per slot on each test period after adapting on its N_tr slots. References (``method``):
    None, every link at full power; "optimised", powers optimised for every scored slot itself (an oracle that
    knows that slot's gains, noise and coupling: gradient ascent on the sum-rate, a local optimum)."""
    env = PowerTasks(cfg.power, seed=cfg.seed)
    topologies, adaptation = period_data(env, split, cfg.test_periods, cfg.train_slots, 1)
    scored = torch.from_numpy(env.slots(topologies, cfg.test_slots, env.rng(split, 2)))
    g, noise, coupling = vmap(regnn.gains)(scored)
    if method is None:
        return vmap(regnn.sum_rate)(g, noise, coupling, (torch.diagonal(g, dim1=-2, dim2=-1) > 0).float()).mean(-1).numpy()
    if method == "optimised":
        return optimised_powers_rate(g.flatten(0, 1), noise.flatten(0, 1), coupling.flatten(0, 1)).reshape(g.shape[:2]).mean(-1).numpy()
    loop = inner(method, cfg, assignment="exhaustive")
    unused = torch.zeros(cfg.train_slots, 1)
    adapted = vmap(lambda x: adapt(theta, x, unused, loop), randomness="different")(torch.from_numpy(adaptation))
    with torch.no_grad():
        p = vmap(regnn.powers)({k: v.detach() for k, v in adapted.items()}, scored)
        return vmap(regnn.sum_rate)(g, noise, coupling, p).mean(-1).numpy()


def optimised_powers_rate(g: torch.Tensor, noise: torch.Tensor, coupling: torch.Tensor, steps: int = 500) -> torch.Tensor:
    """Sum-rate [slots] of powers σ(z) optimised per slot by Adam from p = ½ (``steps`` steps)."""
    z = torch.zeros(g.shape[:2], dtype=g.dtype, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.1)
    for _ in range(steps):
        loss = -regnn.sum_rate(g, noise, coupling, torch.sigmoid(z)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return regnn.sum_rate(g, noise, coupling, torch.sigmoid(z))
