"""The meta-learning core's hyperparameter defaults, the one home of each (torch-free, so that help texts can
quote them without loading the core). ``InnerLoop`` and the training configurations take their defaults from here;
a task family's recipes override them per algorithm."""

from __future__ import annotations

from dataclasses import dataclass

# the inner loop (InnerLoop's fields)
INNER = {
    "lr": 0.1,  # step size α
    "steps": 1,  # adaptation steps
    "solver_steps": 5,  # iMAML, ALSET: iterations of the inverse-Hessian solver
    "solver": "cg",  # iMAML, ALSET: conjugate gradients ("neumann": a truncated Neumann series)
    "samples": 4,  # vbmaml: reparameterised weight draws per step
    "kl_weight": 1.0,  # vbmaml: weight of the KL term (1: the variational free energy of eq. 2.32)
    "sharp_in": 0.05,  # sharpmaml: radius α_in of the inner perturbation (eq. 2.14)
    "sharp_out": 0.05,  # sharpmaml: radius α_ot of the outer perturbation
    "es_directions": 16,  # esmaml: random directions n of the estimators (eq. 2.20-2.21)
    "es_delta": 0.02,  # esmaml: smoothing δ
    "es_hessian": False,  # esmaml: the (I − αH_es) correction of eq. 2.18 (else eq. 2.19)
    "proposals": 40,  # modular: simulated-annealing proposals per task
}
DEFAULT_PROX = 1.0  # λ of the proximal inner problem (iMAML, Prox-MAML, ALSET) unless a run says otherwise
DEFAULT_ASSIGNMENT = "anneal"  # modular: how meta-training picks one module per layer (eq. 2.38b)

# names of the extra parameters some algorithms meta-learn beside θ
STEP_PREFIX = "lr."  # Meta-SGD: params["lr.<name>"] is the learned step size of every entry of <name>
LOGSTD_PREFIX = "logstd."  # gaussian: params["logstd.<name>"] is the log standard deviation of every entry of <name>


# -- each algorithm's own options beside the common inner loop (lr, steps, what adapts); ``InnerLoop.options``


@dataclass(frozen=True)
class Proximal:
    """iMAML, Prox-MAML, ALSET: λ of the proximal term λ/2‖φ − θ‖² (eq. 2.4b) and the solver of the implicit
    meta-gradient's linear system ("cg", "neumann"; ALSET also "stochastic", eq. 3.7)."""

    prox: float = DEFAULT_PROX
    solver: str = INNER["solver"]
    solver_steps: int = INNER["solver_steps"]


@dataclass(frozen=True)
class Gaussian:
    """Variational Bayesian MAML: reparameterised weight draws per step, and the weight of the KL term (1: the free
    energy of eq. 2.32; < 1: a tempered posterior)."""

    samples: int = INNER["samples"]
    kl_weight: float = INNER["kl_weight"]


@dataclass(frozen=True)
class Sharp:
    """Sharp-MAML: radii α_in, α_ot of the inner and outer perturbations (eq. 2.14)."""

    sharp_in: float = INNER["sharp_in"]
    sharp_out: float = INNER["sharp_out"]


@dataclass(frozen=True)
class Evolution:
    """ES-MAML: random directions n and smoothing δ of the estimators (eq. 2.20–2.21); with ``es_hessian`` the
    (I − αH_es) correction of eq. 2.18 (else eq. 2.19)."""

    es_directions: int = INNER["es_directions"]
    es_delta: float = INNER["es_delta"]
    es_hessian: bool = INNER["es_hessian"]


@dataclass(frozen=True)
class Modular:
    """Modular meta-learning: how a task picks one module per layer ("anneal", "relaxed"; a device computes
    "exhaustive", eq. 2.38b) and the simulated-annealing proposals per task."""

    assignment: str = DEFAULT_ASSIGNMENT
    proposals: int = INNER["proposals"]


@dataclass(frozen=True)
class Pooled:
    """Reptile: ``pooled`` steps run on successive minibatches of D_tr ∪ D_va instead of the support set."""

    pooled: bool = False
