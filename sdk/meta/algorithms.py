"""The algorithm registry: each algorithm a small objective on the shared bilevel core (``core``)."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metaedge.sdk.errors import UserError
from metaedge.sdk.meta.defaults import LOGSTD_PREFIX, STEP_PREFIX, Evolution, Gaussian, Modular, Pooled, Proximal, Sharp

if TYPE_CHECKING:
    from metaedge.sdk.meta.core import InnerLoop, Objective
    from metaedge.sdk.models.mlp import Loss

# --adapt: the parameters the inner loop moves. Adapting the input layer alone lets a receiver undo a device's
# channel (a linear map of the received I/Q) while the layers after it stay the meta-learned demapper; the device
# then adapts 30 numbers instead of 1,786.
ADAPTED: dict[str, tuple[str, ...] | None] = {"all": None, "input": ("l0.weight", "l0.bias")}
# algorithms whose meta-gradient reaches parameters that do not adapt (Reptile's θ − φ, iMAML's implicit gradient
# and Prox-MAML's λ(θ − φ) are zero there, so those parameters would never learn)
PARTIAL_ADAPTATION = ("maml", "fomaml", "metasgd")


@dataclass(frozen=True)
class Algorithm:
    """``implementation``: the meta-objective, or the name of the module of ``metaedge.sdk.meta`` that defines it as
    ``objective`` (loaded on first use, so that listing the algorithms needs no torch)."""

    name: str
    implementation: "Objective | str"
    summary: str
    context: bool = False  # CAVIA: the model takes context inputs and only the context adapts
    meta_learned: bool = True  # False for joint learning (no inner loop in training)
    learned_steps: bool = False  # Meta-SGD: per-parameter step sizes are meta-learned with θ
    posterior: str = "point"  # Bayesian forms: "gaussian" (mean + log-std nets) or "particles" (SVGD)
    options: type | None = None  # its own options beside the common inner loop (``meta.defaults``)

    @property
    def objective(self) -> "Objective":
        if callable(self.implementation):
            return self.implementation
        return importlib.import_module(f"metaedge.sdk.meta.{self.implementation}").objective

    @property
    def proximal(self) -> bool:
        """The inner problem has the proximal term λ/2‖φ − θ‖² (iMAML, Prox-MAML, ALSET)."""
        return self.options is Proximal

    @property
    def modular(self) -> bool:
        """A set of modules per layer; each task picks one per layer."""
        return self.options is Modular

    @property
    def stacked(self) -> bool:
        """θ holds several networks on a leading axis (particles or modules)."""
        return self.posterior == "particles" or self.modular

    def theta_shapes(self, model: dict[str, tuple[int, ...]], stack: int, adapt: str = "all") -> dict[str, tuple[int, ...]]:
        """Names and shapes of what this algorithm meta-learns, given the network's own parameter shapes,
        for stacked forms the number of particles or modules, and what adapts (``ADAPTED``; Meta-SGD learns a
        step size for each adapted entry)."""
        if self.stacked:
            return {k: (stack, *shape) for k, shape in model.items()}
        adapted = ADAPTED[adapt] or tuple(model)
        steps = {STEP_PREFIX + k: model[k] for k in adapted} if self.learned_steps else {}
        posterior = {LOGSTD_PREFIX + k: shape for k, shape in model.items()} if self.posterior == "gaussian" else {}
        return {**model, **steps, **posterior}

    def inner(self, lr: float, steps: int, adapt: tuple[str, ...] | None = None, loss: "Loss | None" = None, **given: Any) -> InnerLoop:
        """This algorithm's inner loop; ``adapt`` names the parameters that adapt (None: all; CAVIA: its context,
        always); ``given`` values (not None) of its own options' fields set them, the others are not its own."""
        from metaedge.sdk.meta.core import InnerLoop

        own = {f.name for f in dataclasses.fields(self.options)} if self.options else set()
        options = self.options(**{k: v for k, v in given.items() if k in own and v is not None}) if self.options else None
        loop = InnerLoop(lr=lr, steps=steps, adapt=("context",) if self.context else adapt, posterior=self.posterior, options=options)
        return loop if loss is None else dataclasses.replace(loop, loss=loss)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("maml", "maml", "MAML, second order through the inner steps (eq. 2.1-2.3)"),
        Algorithm("fomaml", "fomaml", "first-order MAML (eq. 2.16-2.17)"),
        Algorithm(
            "reptile",
            "reptile",
            "Reptile, pseudo-gradient theta - phi (eq. 2.22-2.23); pooled: steps on minibatches of pilots and validation symbols",
            options=Pooled,
        ),
        Algorithm("cavia", "maml", "CAVIA, only context inputs adapt (eq. 2.39-2.40)", context=True),
        Algorithm("metasgd", "maml", "Meta-SGD: MAML with per-parameter step sizes meta-learned with theta", learned_steps=True),
        Algorithm(
            "imaml", "imaml", "iMAML, proximal inner problem and implicit meta-gradient by conjugate gradients (eq. 2.4-2.8)", options=Proximal
        ),
        Algorithm("sharpmaml", "sharp", "Sharp-MAML: MAML with sharpness-aware perturbations of both levels (eq. 2.13-2.15)", options=Sharp),
        Algorithm(
            "proxmaml",
            "proxmaml",
            "Prox-MAML: proximal inner problem on all task data, meta-gradient lambda(theta - phi) (eq. 2.24-2.29)",
            options=Proximal,
        ),
        Algorithm(
            "esmaml", "esmaml", "ES-MAML: zeroth-order, evolution-strategies gradient (and Hessian) estimates (eq. 2.18-2.21)", options=Evolution
        ),
        Algorithm(
            "alset",
            "alset",
            "ALSET, the generic stochastic bilevel solver, on iMAML's problem with the stochastic Neumann inverse (Algorithm 10, eq. 3.6-3.10)",
            options=Proximal,
        ),
        Algorithm(
            "vbmaml",
            "maml",
            "variational Bayesian MAML: Gaussian mean and log-std nets, free-energy inner steps, predictive log-loss (eq. 2.32-2.35)",
            posterior="gaussian",
            options=Gaussian,
        ),
        Algorithm(
            "bmaml", "maml", "BMAML: an ensemble of particles moved by Stein variational gradient descent (eq. 2.36-2.37)", posterior="particles"
        ),
        Algorithm(
            "modular",
            "maml",
            "modular meta-learning: M modules per layer, each task picks one per layer "
            "by simulated annealing or a relaxed (softmax) assignment (eq. 2.38)",
            options=Modular,
        ),
        Algorithm("joint", "joint", "joint learning on pooled tasks, fine-tuned at test (eq. 1.2)", meta_learned=False),
    )
}


def register(algorithm: Algorithm) -> None:
    """Add (or replace) an algorithm: every trainer, exporter and command that takes an algorithm name then knows it."""
    ALGORITHMS[algorithm.name] = algorithm


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UserError(f"unknown algorithm '{name}'; choose one of: {', '.join(ALGORITHMS)}") from None
