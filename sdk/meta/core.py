"""The bilevel core (monograph §3, eq. 3.1): inner adaptation φ_k = adapt(θ, D_tr_k) and the
outer meta-gradient of the average over tasks of L(D_va_k, φ_k), batched with ``torch.func``.

An algorithm is one pure per-task function
``objective(θ, x_tr, y_tr, x_va, y_va, inner) -> (objective, validation loss)`` whose
gradient with respect to θ is that task's meta-gradient. The core vmaps it over the task
axis and differentiates the task average once with autograd: θ is shared by every task,
so one backward pass yields the averaged meta-gradient without per-task gradient copies.
No Python loop over tasks runs in the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, vmap

from metaedge.sdk.meta import bayes, modular
from metaedge.sdk.meta.defaults import INNER, STEP_PREFIX, Evolution, Gaussian, Modular, Pooled, Proximal, Sharp
from metaedge.sdk.models.mlp import Loss, Params
from metaedge.sdk.models.mlp import task_loss as mlp_loss

Objective = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class InnerLoop:
    """Few-shot adaptation: ``steps`` SGD steps of size ``lr`` on the parameters named in ``adapt``.

    ``posterior`` "gaussian" or "particles" makes the adapted model a distribution (see ``bayes``). What one
    algorithm alone needs is its ``options`` (``defaults.Proximal``, ``Gaussian``, ``Sharp``, ``Evolution``,
    ``Modular``, ``Pooled``; None where it needs nothing more). ``loss`` is the task family's loss
    L(params, samples, targets), which every algorithm differentiates."""

    lr: float = INNER["lr"]
    steps: int = INNER["steps"]
    adapt: tuple[str, ...] | None = None  # None: every model parameter adapts (learned step sizes never do)
    posterior: str = "point"  # "point", "gaussian" (mean + log-std nets) or "particles" (SVGD)
    options: Proximal | Gaussian | Sharp | Evolution | Modular | Pooled | None = None
    loss: Loss = mlp_loss  # the family's loss; the MLP classifier's cross-entropy unless a family says

    def keys(self, params: Params) -> tuple[str, ...]:
        if self.adapt is not None:
            return self.adapt
        return tuple(k for k in params if not k.startswith(STEP_PREFIX))

    def of(self, kind: type):
        """This loop's options if they are of ``kind``, else ``kind``'s defaults."""
        return self.options if isinstance(self.options, kind) else kind()

    @property
    def prox(self) -> float:
        """λ of the proximal term the inner steps carry (0: none)."""
        return self.options.prox if isinstance(self.options, Proximal) else 0.0

    @property
    def assignment(self) -> str:
        """How a task picks its modules ("" for a network without modules)."""
        return self.options.assignment if isinstance(self.options, Modular) else ""


def step_size(params: Params, key: str, inner: InnerLoop):
    """The step size of parameter ``key``: its learned tensor (Meta-SGD) or the scalar ``inner.lr``."""
    return params.get(STEP_PREFIX + key, inner.lr)


# -- inner updates: each one way of moving θ on a task's pilots; ``adapt`` picks one by the form of θ and the loop --
Update = Callable[[Params, Tensor, Tensor, "InnerLoop", "Params | None", "Params | None"], Params]


def sgd_update(params: Params, x: Tensor, onehot: Tensor, inner: InnerLoop, anchor: Params | None, noise: Params | None) -> Params:
    """``inner.steps`` steps φ ← φ − α∘(∇L_tr(φ) + λ(φ − anchor)) on the adapted parameters: plain SGD (λ = 0),
    Meta-SGD's learned rates α (``step_size``), a proximal term toward ``anchor`` (default: θ)."""
    keys = inner.keys(params)
    fast = {k: params[k] for k in keys}
    anchor = params if anchor is None else anchor
    for _ in range(inner.steps):
        g = grad(lambda f: inner.loss({**params, **f}, x, onehot))(fast)
        if inner.prox:
            g = {k: g[k] + inner.prox * (fast[k] - anchor[k]) for k in keys}
        fast = {k: fast[k] - step_size(params, k, inner) * g[k] for k in keys}
    return {**params, **fast}


UPDATES: dict[str, Update] = {
    "sgd": sgd_update,
    # a Gaussian posterior steps on the free energy, its prior being ``anchor`` (default: θ); fixed ``noise`` draws
    # are an exported receiver's
    "gaussian": lambda p, x, y, inner, anchor, noise: bayes.gaussian_adapt(
        p, x, y, inner.lr, inner.steps, inner.of(Gaussian).samples, inner.of(Gaussian).kl_weight, noise, anchor, inner.loss
    ),
    "particles": lambda p, x, y, inner, anchor, noise: bayes.svgd_adapt(p, x, y, inner.lr, inner.steps, inner.loss),
    # module assignment in meta-training: one module per layer by annealing, the exact search, or a softmax mixture
    "anneal": lambda p, x, y, inner, anchor, noise: modular.anneal(p, x, y, inner.of(Modular).proposals, inner.loss),
    "exhaustive": lambda p, x, y, inner, anchor, noise: modular.exhaustive(p, x, y, inner.loss),
    "relaxed": lambda p, x, y, inner, anchor, noise: modular.relaxed(p, x, y, inner.lr, inner.steps, inner.loss),
    # a deployed modular receiver: only its assignment logits adapt (the exact search, or steps on the logits)
    "assignment": lambda p, x, y, inner, anchor, noise: modular.adapt_assignment(
        p, x, y, inner.steps if inner.assignment == "relaxed" else None, inner.lr, inner.loss
    ),
}


def update_of(params: Params, inner: InnerLoop) -> str:
    """Which inner update adapts ``params`` under ``inner``."""
    if modular.ASSIGNMENT in params:
        return "assignment"
    if inner.posterior != "point":
        return inner.posterior
    return inner.assignment or "sgd"


def adapt(params: Params, x: Tensor, onehot: Tensor, inner: InnerLoop, anchor: Params | None = None, noise: Params | None = None) -> Params:
    """φ = adapt(θ, D_tr): the inner update that fits θ's form (``UPDATES``), differentiable with respect to θ (and a
    learned α). ``anchor``: where a proximal term or a Gaussian prior pulls (default θ; a device taking one step at a
    time passes θ); ``noise``: a Gaussian posterior's fixed draws."""
    return UPDATES[update_of(params, inner)](params, x, onehot, inner, anchor, noise)


def proximal_residual(params: Params, x: Tensor, onehot: Tensor, inner: InnerLoop) -> Tensor:
    """How far the inner steps are from the proximal minimum: ‖∇L_tr(φ) + λ(φ − θ)‖ / ‖∇L_tr(θ)‖ (0 at the
    minimum, 1 where the steps made no progress). iMAML's and Prox-MAML's meta-gradients assume it near 0; steps too
    large for the loss's curvature oscillate and leave it near 1."""
    keys = inner.keys(params)
    phi = adapt(params, x, onehot, inner)
    loss_grad = lambda p: grad(lambda f: inner.loss({**params, **f}, x, onehot))({k: p[k] for k in keys})  # noqa: E731
    at_phi, at_theta = loss_grad(phi), loss_grad(params)
    norm = lambda g: torch.sqrt(sum((v**2).sum() for v in g.values()))  # noqa: E731
    return norm({k: at_phi[k] + inner.prox * (phi[k] - params[k]) for k in keys}) / norm(at_theta).clamp_min(1e-12)


def predictive_loss(params: Params, x: Tensor, onehot: Tensor, inner: InnerLoop) -> Tensor:
    """Loss of the predictive distribution (eq. 2.35); the plain loss for a point estimate."""
    return bayes.predictive_loss(params, x, onehot, inner.posterior, inner.of(Gaussian).samples, inner.loss)


def dot(a: Params, b: Params) -> Tensor:
    """The inner product of two parameter dicts: Σ over parameters of their elementwise products."""
    return sum((a[k] * b[k]).sum() for k in a)


def conjugate_gradient(operator: Callable[[Params], Params], rhs: Params, steps: int) -> Params:
    """x ≈ A⁻¹ rhs for a symmetric positive definite A given only as ``operator`` (v ↦ Av), ``steps``
    iterations from x = 0; a fixed count keeps it vmappable."""
    x = {k: torch.zeros_like(v) for k, v in rhs.items()}
    r, p = rhs, rhs
    rr = dot(r, r)
    for _ in range(steps):
        ap = operator(p)
        alpha = rr / (dot(p, ap) + 1e-30)
        x = {k: x[k] + alpha * p[k] for k in x}
        r = {k: r[k] - alpha * ap[k] for k in r}
        rr_next = dot(r, r)
        p = {k: r[k] + (rr_next / (rr + 1e-30)) * p[k] for k in p}
        rr = rr_next
    return x


def hessian_vector_product(loss: Callable[[Params], Tensor], at: Params) -> Callable[[Params], Params]:
    """v ↦ ∇²loss(at)·v, forward-over-reverse."""
    return lambda v: torch.func.jvp(grad(loss), (at,), (v,))[1]


def implicit_gradient(train_loss: Callable[[Params], Tensor], rhs: Params, phi: Params, lam: float, steps: int, solver: str = "cg") -> Params:
    """u = (I + ∇²L_tr(φ)/λ)⁻¹ rhs (the implicit meta-gradient of eq. 2.8 when rhs = ∇L_va(φ)), from
    Hessian-vector products only: ``steps`` iterations of conjugate gradients, or of the Neumann
    series Σ_j (−∇²L_tr/λ)^j rhs (which needs ‖∇²L_tr‖ < λ). Fixed iteration counts keep it vmappable."""
    hvp = hessian_vector_product(train_loss, phi)
    if solver == "neumann":
        term, total = rhs, rhs
        for _ in range(steps):
            hv = hvp(term)
            term = {k: -hv[k] / lam for k in term}
            total = {k: total[k] + term[k] for k in total}
        return total
    return conjugate_gradient(lambda v: {k: v[k] + hv / lam for k, hv in hvp(v).items()}, rhs, steps)


def stop_gradient(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def task_mean(objective: Objective, batch: tuple[Tensor, ...], inner: InnerLoop) -> Callable[[Params], tuple[Tensor, Tensor]]:
    """θ ↦ (mean objective, mean validation loss) over the leading task axis of ``batch``."""
    per_task = vmap(objective, in_dims=(None, 0, 0, 0, 0, None), randomness="different")

    def mean(theta: Params) -> tuple[Tensor, Tensor]:
        objectives, losses = per_task(theta, *batch, inner)
        return objectives.mean(), losses.mean()

    return mean


def meta_gradient(objective: Objective, params: Params, batch: tuple[Tensor, ...], inner: InnerLoop) -> tuple[Params, Tensor]:
    """(∇θ of the task-averaged objective, task-averaged validation loss) for a batch of tasks.

    Eager path: the vmapped forward is differentiated by autograd, which in eager mode is faster
    than ``torch.func.grad`` around the vmap (``metaedge bench meta-train`` times both paths).
    """
    theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    objective_mean, loss = task_mean(objective, batch, inner)(theta)
    grads = torch.autograd.grad(objective_mean, list(theta.values()), allow_unused=True)
    return ({k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(theta.items(), grads)}, loss.detach())


def compiled_meta_gradient(objective: Objective, inner: InnerLoop) -> Callable[[Params, tuple[Tensor, ...]], tuple[Params, Tensor]]:
    """The same meta-gradient, written purely with ``torch.func`` and ``torch.compile``d.

    Costs a one-off compilation and then runs faster than the eager path (``metaedge bench meta-train``
    reports both and the compile time); worth it for runs of thousands of iterations.
    """

    def step(params: Params, batch: tuple[Tensor, ...]) -> tuple[Params, Tensor]:
        grads, (_, loss) = grad_and_value(task_mean(objective, batch, inner), has_aux=True)(params)
        return grads, loss

    return torch.compile(step)


def to_batch(x_tr, y_tr, x_va, y_va, classes: int) -> tuple[Tensor, ...]:
    """numpy task arrays → (x_tr, onehot_tr, x_va, onehot_va) tensors with a leading task axis."""

    def onehot(y):
        return torch.nn.functional.one_hot(torch.as_tensor(y), classes).to(torch.float32)

    return torch.as_tensor(x_tr), onehot(y_tr), torch.as_tensor(x_va), onehot(y_va)
