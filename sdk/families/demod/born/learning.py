"""Per-task variational learning (eq. 2.32) and meta-learning of the prior (eq. 2.33–2.35), exact.

Per task, the device minimises the variational free energy over the circuit angles ϕ,

    F(ϕ) = −E_{q(w|ϕ)}[log p(D_tr | w)] + λ · KL(q(·|ϕ) ‖ q(·|θ)),

by ``steps`` gradient steps from ϕ = θ: the meta-learned θ is both the prior and the
starting point. On the host the expectation and the KL are exact sums over all 2^n weight
vectors. The gradient autograd computes equals the parameter-shift rule the device uses,
½(E_{ϕ+π/2·e_i}[ℓ] − E_{ϕ−π/2·e_i}[ℓ]) with ℓ(w) = −log p(D|w) + λ·log(q(w|ϕ)/q(w|θ)) held
fixed (Σ_w ∂q = 0 removes the derivative of the log), which a test checks.

Meta-learning (eq. 2.33) differentiates through the inner steps; the validation loss
(eq. 2.35) is the per-symbol predictive log-loss −log Σ_w q(w|ϕ) p(c|y, w), the quantity the
device's ensemble predictor is judged by. Joint learning fits one circuit to all tasks'
data with no inner loop.
"""

from __future__ import annotations

import torch

from metaedge.sdk.families.demod.born.config import InnerConfig
from metaedge.sdk.families.demod.born.simulator import BornSimulator

TINY = 1e-30


def safe_log(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(TINY))


def free_energy(probs: torch.Tensor, prior: torch.Tensor, loglik: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """F per task [B] from q(·|ϕ) and q(·|θ) [B, 2^n] and log p(D|w) [B, 2^n]."""
    return -(probs * loglik).sum(-1) + kl_weight * (probs * (safe_log(probs) - safe_log(prior))).sum(-1)


def adapt(
    sim: BornSimulator,
    theta: torch.Tensor,
    loglik: torch.Tensor,
    inner: InnerConfig,
    lr: torch.Tensor | float | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """ϕ after ``inner.steps`` exact gradient steps on F from θ [B, P]; differentiable in θ with ``create_graph``.

    ``lr``: step sizes, a scalar or one per angle [P] (meta-learned); default ``inner.lr``.
    """
    lr = inner.lr if lr is None else lr
    prior = sim.probabilities(theta)
    if not create_graph:
        prior = prior.detach()
    phi = theta if create_graph else theta.detach()
    for _ in range(inner.steps):
        if not create_graph:
            phi = phi.detach().requires_grad_(True)
        energy = free_energy(sim.probabilities(phi), prior, loglik, inner.kl_weight).sum()
        (grad,) = torch.autograd.grad(energy, phi, create_graph=create_graph)
        phi = phi - lr * grad
    return phi if create_graph else phi.detach()


def predictive_log_probs(probs: torch.Tensor, label_logs: torch.Tensor) -> torch.Tensor:
    """log Σ_w q(w) p(c_j | y_j, w) [B, N] from q [B, 2^n] and per-weight label log-probs [B, 2^n, N]."""
    return torch.logsumexp(safe_log(probs)[:, :, None] + label_logs, dim=1)


def predictive_nll(probs: torch.Tensor, label_logs: torch.Tensor) -> torch.Tensor:
    """Mean per-symbol predictive log-loss (eq. 2.35 per symbol)."""
    return -predictive_log_probs(probs, label_logs).mean()
