"""Meta-learning algorithms, each a small ``task_gradient`` on the shared bilevel core."""
from __future__ import annotations

from dataclasses import dataclass

from metaedge.sdk.algorithms import fomaml, imaml, joint, maml, reptile
from metaedge.sdk.algorithms.core import InnerLoop, Objective, adapt, compiled_meta_gradient, meta_gradient, to_batch
from metaedge.sdk.errors import UserError


@dataclass(frozen=True)
class Algorithm:
    name: str
    objective: Objective
    summary: str
    context: bool = False        # CAVIA: the model takes context inputs and only the context adapts
    meta_learned: bool = True    # False for joint learning (no inner loop in training)
    learned_steps: bool = False  # Meta-SGD: per-parameter step sizes are meta-learned with θ
    proximal: bool = False       # iMAML: the inner problem has the proximal term λ/2‖φ − θ‖²

    def inner(self, lr: float, steps: int, prox: float = 1.0, solver_steps: int = 5) -> InnerLoop:
        return InnerLoop(lr=lr, steps=steps, adapt=("context",) if self.context else None,
                         prox=prox if self.proximal else 0.0, solver_steps=solver_steps)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("maml", maml.objective, "MAML, second order through the inner steps (eq. 2.1-2.3)"),
        Algorithm("fomaml", fomaml.objective, "first-order MAML (eq. 2.16-2.17)"),
        Algorithm("reptile", reptile.objective, "Reptile, pseudo-gradient theta - phi (eq. 2.22-2.23)"),
        Algorithm("cavia", maml.objective, "CAVIA, only context inputs adapt (eq. 2.39-2.40)", context=True),
        Algorithm("metasgd", maml.objective, "Meta-SGD: MAML with per-parameter step sizes meta-learned with theta",
                  learned_steps=True),
        Algorithm("imaml", imaml.objective, "iMAML, proximal inner problem and implicit meta-gradient by conjugate "
                  "gradients (eq. 2.4-2.8)", proximal=True),
        Algorithm("joint", joint.objective, "joint learning on pooled tasks, fine-tuned at test (eq. 1.2)", meta_learned=False),
    )
}


EXPORTABLE = tuple(name for name, a in ALGORITHMS.items() if not a.proximal)   # iMAML's anchored step: not yet


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UserError(f"unknown algorithm '{name}'; choose one of: {', '.join(ALGORITHMS)}") from None


__all__ = ["ALGORITHMS", "EXPORTABLE", "Algorithm", "InnerLoop", "adapt", "compiled_meta_gradient", "get_algorithm", "meta_gradient", "to_batch"]
