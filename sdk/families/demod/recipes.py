"""Per-algorithm training defaults for the demodulation task, shared by ``metaedge train``
(for every flag the user leaves unset) and ``metaedge demo``.

Chosen by measurement on validation devices (never the meta-test devices); the runs behind
each choice are in docs/results/algorithms.md ("How the recipes were chosen"). What differs
between algorithms is the inner loop: CAVIA adapts only 10 context inputs and needs a larger
step than full-network MAML; FOMAML adapts only the input layer, because its first-order
meta-gradient cannot teach a one-step update of the whole network to undo a channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metaedge.sdk.options import Progress, command, silent

# every algorithm's: the outer loop's budget, and a tempered Gaussian posterior (w = 0.1 of the KL term, where
# eq. 2.32's w = 1 stalls with a few pilots; only vbmaml reads it)
COMMON = {"tasks_per_batch": 5, "outer_lr": 3e-3, "iterations": 6000, "val_every": 250, "patience": 12, "kl_weight": 0.1}

RECIPES: dict[str, dict] = {
    "maml": {"inner_lr": 0.1, "inner_steps": 1},
    "fomaml": {"inner_lr": 0.3, "inner_steps": 1, "adapt": "input"},
    # one Reptile step is nearly joint learning, and steps on one support set overfit it; steps through pooled
    # minibatches of pilots and validation symbols generalise
    "reptile": {"inner_lr": 0.05, "inner_steps": 10, "inner_data": "pooled"},
    "cavia": {"inner_lr": 1.0, "inner_steps": 1},
    "metasgd": {"inner_lr": 0.1, "inner_steps": 1},
    # the implicit meta-gradient holds only where the proximal problem (λ = 1) is solved: many small steps, because
    # meta-training sharpens the loss and larger steps turn unstable
    "imaml": {"inner_lr": 0.02, "inner_steps": 40},
    "sharpmaml": {"inner_lr": 0.1, "inner_steps": 1},
    "proxmaml": {"inner_lr": 0.1, "inner_steps": 5},
    "esmaml": {"inner_lr": 0.1, "inner_steps": 1},
    "alset": {"inner_lr": 0.02, "inner_steps": 40, "solver": "stochastic", "solver_steps": 10},  # iMAML's problem, iMAML's steps
    "vbmaml": {"inner_lr": 0.1, "inner_steps": 2},  # as published for the Bayesian demodulator
    "bmaml": {"inner_lr": 0.1, "inner_steps": 1},
    "modular": {"inner_lr": 1.0, "inner_steps": 5},  # used by --assignment relaxed (logit steps); annealing ignores them
    "joint": {"inner_lr": 0.1, "inner_steps": 1},
}


def recipe(algo: str) -> dict:
    """Training defaults for ``algo`` (TrainConfig field → value)."""
    return {**COMMON, **RECIPES.get(algo, {})}


def summary(field: str) -> str:
    """``field``'s recipe values for help texts, e.g. "recipe: 1; imaml, alset 40; reptile 10": the value most
    algorithms take, then the algorithms that differ; for a field only some recipes set, just those."""
    values = {algo: recipe(algo)[field] for algo in RECIPES if field in recipe(algo)}
    counts = {value: list(values.values()).count(value) for value in values.values()}
    ordered = sorted(counts, key=lambda v: (-counts[v], str(v)))
    every = len(values) == len(RECIPES)
    text = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    groups = [f"{', '.join(a for a, v in values.items() if v == value)} {text(value)}" for value in ordered[1 if every else 0 :]]
    return "; ".join([f"recipe: {text(ordered[0])}"] + groups if every else (["recipe: " + "; ".join(groups)] if groups else []))


@dataclass(frozen=True)
class AlgorithmList:
    """list the meta-learning algorithms (--json for scripts)

    The algorithms `metaedge train demod --algo NAME` accepts, with their monograph equations and training recipe."""

    EXAMPLES: ClassVar[str] = "\nexamples:\n  metaedge algorithms\n  metaedge algorithms --json | jq '.[].name'\n"


def listing(options: AlgorithmList, progress: Progress = silent) -> list[dict]:
    """Every algorithm with its recipe's step size, steps, what adapts and on which data."""
    from metaedge.sdk.meta import ALGORITHMS

    return [
        {
            "name": a.name,
            "summary": a.summary,
            "inner_lr": own["inner_lr"],
            "inner_steps": own["inner_steps"],
            "adapts": "context" if a.context else own.get("adapt", "all"),
            "inner_data": own.get("inner_data", "support"),
        }
        for a, own in ((a, recipe(a.name)) for a in ALGORITHMS.values())
    ]


def listing_text(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        steps = f"α={r['inner_lr']:g}, {r['inner_steps']} step{'s' if r['inner_steps'] != 1 else ''}"
        steps += (f", {r['adapts']}" if r["adapts"] != "all" else "") + (f", {r['inner_data']}" if r["inner_data"] != "support" else "")
        lines.append(f"{r['name']:<10} {steps:<25} {r['summary']}")
    return "\n".join(lines)


ALGORITHM_LIST = command("algorithms", AlgorithmList, "metaedge.sdk.families.demod.recipes:listing")
