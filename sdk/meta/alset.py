"""ALSET (monograph §3.2.2, Algorithm 10): the generic stochastic bilevel solver. For an upper
function f(θ, ϕ) and a lower function g(θ, ϕ), ϕ takes T gradient steps on g, then θ moves along

    h_f = ∇_θ f − ∇²_θϕ g · [∇²_ϕϕ g]⁻¹ ∇_ϕ f                                   (eq. 3.6, 3.10)

with the inverse applied by conjugate gradients, a truncated Neumann series, or the stochastic
Neumann estimator (3.7) — only Hessian-vector and mixed second-derivative products are formed.
Meta-learning problems are special cases (§3.2.3): with g = ⟨∇L_tr(θ), ϕ − θ⟩ + ‖ϕ − θ‖²/2α it is
MAML (3.11), with g = L_tr(ϕ) + λ/2‖ϕ − θ‖² it is iMAML (3.14); ``tests`` show both equivalences.
The ``alset`` algorithm solves iMAML's problem.

The stochastic estimator is N/L·∏_{n=1}^{N'}(I − H/L) with N' uniform on {0, …, N−1} (so that its mean
is the truncated series (1/L)Σ_{j<N}(I − H/L)^j → H⁻¹; the monograph indexes N' from 1). Batched over
tasks it forms all N partial products and keeps the drawn one, and we take L = 1/α, the curvature
bound under which the inner gradient steps themselves are stable.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad

from metaedge.sdk.meta.core import InnerLoop, conjugate_gradient, dot, hessian_vector_product
from metaedge.sdk.meta.defaults import Proximal
from metaedge.sdk.models.mlp import Loss, Params

Bilevel = Callable[[Params, Params], Tensor]


def lower_steps(g: Bilevel, theta: Params, phi: Params, lr: float, steps: int) -> Params:
    """ϕ ← ϕ − β∇_ϕ g(θ, ϕ), ``steps`` times (eq. 3.8a, 3.9)."""
    for _ in range(steps):
        d = grad(g, argnums=1)(theta, phi)
        phi = {k: phi[k] - lr * d[k] for k in phi}
    return phi


def inverse_hessian_product(g: Bilevel, theta: Params, phi: Params, rhs: Params, solver: str, steps: int, curvature: float) -> Params:
    """[∇²_ϕϕ g]⁻¹ rhs by ``solver``: "cg", "neumann" (deterministic truncated series) or "stochastic" (eq. 3.7)."""
    hvp = hessian_vector_product(lambda p: g(theta, p), phi)
    if solver == "cg":
        return conjugate_gradient(hvp, rhs, steps)
    terms, term = [rhs], rhs
    for _ in range(steps - 1):
        hv = hvp(term)
        term = {k: term[k] - hv[k] / curvature for k in term}
        terms.append(term)
    if solver == "neumann":
        return {k: sum(t[k] for t in terms) / curvature for k in rhs}
    drawn = torch.randint(0, steps, ())
    return {k: steps / curvature * sum(torch.where(drawn == j, t[k], torch.zeros_like(t[k])) for j, t in enumerate(terms)) for k in rhs}


def hypergradient(f: Bilevel, g: Bilevel, theta: Params, phi: Params, solver: str, steps: int, curvature: float) -> Params:
    """h_f of eq. 3.10 at (θ, ϕ)."""
    grad_theta_f, grad_phi_f = grad(f, argnums=(0, 1))(theta, phi)
    v = inverse_hessian_product(g, theta, phi, grad_phi_f, solver, steps, curvature)
    mixed = grad(lambda t: dot(grad(g, argnums=1)(t, phi), v))(theta)  # ∇²_θϕ g · v
    return {k: grad_theta_f[k] - mixed[k] for k in theta}


def maml_problem(x_tr, y_tr, x_va, y_va, lr: float, task_loss: Loss) -> tuple[Bilevel, Bilevel]:
    """Eq. 3.11: the lower problem whose minimiser is MAML's one-step φ = θ − α∇L_tr(θ)."""

    def g(theta, phi):
        g_tr = grad(task_loss)(theta, x_tr, y_tr)
        return sum((g_tr[k] * (phi[k] - theta[k])).sum() + ((phi[k] - theta[k]) ** 2).sum() / (2 * lr) for k in theta)

    return (lambda theta, phi: task_loss(phi, x_va, y_va)), g


def imaml_problem(x_tr, y_tr, x_va, y_va, lam: float, task_loss: Loss) -> tuple[Bilevel, Bilevel]:
    """Eq. 3.14: iMAML's proximal lower problem."""

    def g(theta, phi):
        return task_loss(phi, x_tr, y_tr) + lam / 2 * sum(((phi[k] - theta[k]) ** 2).sum() for k in theta)

    return (lambda theta, phi: task_loss(phi, x_va, y_va)), g


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    theta = {k: v.detach() for k, v in params.items()}
    f, g = imaml_problem(x_tr, y_tr, x_va, y_va, inner.prox, inner.loss)
    phi = {k: v.detach() for k, v in lower_steps(g, theta, theta, inner.lr, inner.steps).items()}
    h = hypergradient(f, g, theta, phi, inner.of(Proximal).solver, inner.of(Proximal).solver_steps, 1.0 / inner.lr)
    surrogate = sum((params[k] * h[k].detach()).sum() for k in params)
    return surrogate, inner.loss(phi, x_va, y_va)
