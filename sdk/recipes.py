"""Per-algorithm training defaults for the demodulation task, shared by ``metaedge train``
(for every flag the user leaves unset) and ``metaedge demo``.

Chosen by measurement on validation devices (never the meta-test devices); the README
records the runs. What differs between algorithms is the inner loop: CAVIA adapts only
10 context inputs and needs a larger step than full-network MAML; FOMAML adapts only the
input layer (its first-order meta-gradient cannot teach a one-step update of the whole
network to undo a channel; an input-layer step can: validation SER over 1-32 pilots 0.73
with every layer, 0.45 with the input layer, α from {0.1, 0.3, 1.0} on validation).
"""
from __future__ import annotations

COMMON = {"tasks_per_batch": 5, "outer_lr": 3e-3, "iterations": 6000, "val_every": 250, "patience": 12}

RECIPES: dict[str, dict] = {
    "maml": {"inner_lr": 0.1, "inner_steps": 1},
    "fomaml": {"inner_lr": 0.3, "inner_steps": 1, "adapt": "input"},  # all layers: validation SER 0.73; input layer: 0.45
    # One Reptile step is nearly joint learning, and steps on one support set overfit it; steps through pooled
    # minibatches of pilots and validation symbols generalise. Validation SER at 8 pilots (trained there): 5 steps of 0.3
    # on the pilots 0.54; pooled: 10 of 0.1 0.29, 10 of 0.05 0.26, 20 of 0.05 0.24 (twice the time; 20 tasks per batch
    # and 25000 iterations: 0.17)
    "reptile": {"inner_lr": 0.05, "inner_steps": 10, "inner_data": "pooled"},
    "cavia": {"inner_lr": 1.0, "inner_steps": 1},
    "metasgd": {"inner_lr": 0.1, "inner_steps": 1},
    # iMAML's implicit meta-gradient holds only where the proximal problem (λ = 1, TrainConfig.prox) is solved: 5 steps of
    # 0.1 are too few on the flat initial loss, and more steps of 0.1 turn unstable as meta-training sharpens θ (top
    # Hessian eigenvalue of a device's loss 0.4-0.6 at the initialisation, 17-120 after). Best validation SER (pilots 4-8, 16 devices per batch; 500 or 1000 iterations): 5 steps of 0.1
    # 0.85 (500); 20 of 0.1 0.45 (500); 40 of 0.1 0.50 (1000); λ = 5, 10 of 0.1 0.74 (1000); 40 of 0.02 0.27 (1000,
    # still falling with a steadily falling meta-loss)
    "imaml": {"inner_lr": 0.02, "inner_steps": 40},
    "sharpmaml": {"inner_lr": 0.1, "inner_steps": 1},
    "proxmaml": {"inner_lr": 0.1, "inner_steps": 5},  # steps toward the proximal minimum; 40 of 0.02 did not help (0.485 vs 0.511)
    "esmaml": {"inner_lr": 0.1, "inner_steps": 1},
    # ALSET solves iMAML's problem, so it takes iMAML's steps. Best validation SER (pilots 4-8, 16 devices per batch):
    # 5 steps of 0.1 0.53 at iteration 250, its meta-loss then diverging; 40 of 0.02 0.23 at 500 (of 1000)
    "alset": {"inner_lr": 0.02, "inner_steps": 40, "solver": "stochastic", "solver_steps": 10},
    "vbmaml": {"inner_lr": 0.1, "inner_steps": 2},   # as published for the Bayesian demodulator
    "bmaml": {"inner_lr": 0.1, "inner_steps": 1},
    "modular": {"inner_lr": 1.0, "inner_steps": 5},  # used by --assignment relaxed (logit steps); annealing ignores them
    "joint": {"inner_lr": 0.1, "inner_steps": 1},
}


def recipe(algo: str) -> dict:
    """Training defaults for ``algo`` (TrainConfig field → value)."""
    return {**COMMON, **RECIPES.get(algo, {})}
