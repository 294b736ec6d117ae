"""Bayesian meta-learning (monograph §2.4): the adapted model is a distribution over weights,
and predictions average over it (eq. 2.35).

Two forms of the distribution share one parameter dict:
- ``gaussian``: a mean net (the model's own names) and a log-std net (``logstd.<name>``), a
  diagonal Gaussian. The prior p(ϕ|θ) is θ's Gaussian; per task q starts at the prior and
  takes steps on the variational free energy (eq. 2.32), estimated with reparameterised
  samples, with the KL term in closed form.
- ``particles``: every tensor has a leading axis of M particles (BMAML, eq. 2.36–2.37); per
  task the particles move by Stein variational gradient descent from θ's particles.

Everything is a pure function of the parameter dict, so the bilevel core vmaps and
differentiates it like the point-estimate algorithms (random draws need ``vmap(...,
randomness="different")``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import grad, vmap

from metaedge.sdk.meta.defaults import LOGSTD_PREFIX
from metaedge.sdk.models.mlp import Loss, Params, forward, is_regressor, outputs


def means(params: Params) -> Params:
    return {k: v for k, v in params.items() if not k.startswith(LOGSTD_PREFIX)}


def gaussian_samples(params: Params, count: int, noise: Params | None = None) -> Params:
    """``count`` weight draws μ + σ·ε from the diagonal Gaussian, stacked on a leading axis; ε fresh from torch's
    generator, or ``noise`` (name → [count, *shape]): the fixed draws an exported receiver reproduces."""
    mu = means(params)
    if noise is None:
        noise = {k: torch.randn((count, *v.shape), dtype=v.dtype) for k, v in mu.items()}
    return {k: v + params[LOGSTD_PREFIX + k].exp() * noise[k] for k, v in mu.items()}


def gaussian_kl(q: Params, p: Params, with_means: bool = True) -> Tensor:
    """KL(q ‖ p) of two diagonal Gaussians in closed form, summed over every weight; ``with_means=False``
    leaves out the quadratic term Σ(μ_q − μ_p)²/2σ_p², which ``gaussian_adapt`` handles exactly."""
    total = torch.zeros(())
    for k, mu_q in means(q).items():
        ls_q, ls_p, mu_p = q[LOGSTD_PREFIX + k], p[LOGSTD_PREFIX + k], p[k]
        spread = ((mu_q - mu_p) ** 2 if with_means else 0.0) + torch.exp(2 * ls_q)
        total = total + (ls_p - ls_q + spread / (2 * torch.exp(2 * ls_p)) - 0.5).sum()
    return total


def free_energy(
    q: Params, prior: Params, x: Tensor, onehot: Tensor, samples: int, kl_weight: float, with_means: bool, noise: Params | None, loss: Loss
) -> Tensor:
    """Eq. 2.32 per pilot: E_q[cross-entropy] (``samples`` reparameterised draws) + w·KL(q ‖ prior) / N
    (w = 1 is the variational free energy; w < 1 tempers the prior's pull)."""
    draws = gaussian_samples(q, samples, noise)
    expected = vmap(loss, in_dims=(0, None, None))(draws, x, onehot).mean()
    return expected + kl_weight * gaussian_kl(q, prior, with_means) / sample_count(x)


def gaussian_adapt(
    params: Params,
    x: Tensor,
    onehot: Tensor,
    lr: float,
    steps: int,
    samples: int,
    kl_weight: float,
    noise: Params | None,
    prior: Params | None,
    loss: Loss,
) -> Params:
    """``steps`` steps on the free energy from q = prior = θ, means and log-stds both adapting.

    The KL's pull on the means, (μ_q − μ_p)²/2σ_p²N, is stiff where the prior is tight (plain
    gradient descent diverges once α > 2σ_p²N), so each step takes it exactly — a proximal
    (forward-backward) step: μ ← (μ − α g + κ μ_p)/(1 + κ) with κ = wα/σ_p²N. A tight prior keeps
    its mean, a wide one lets the pilots move it as MAML would. Fixed ``noise`` serves every step (a device's
    draws); ``prior`` (default: ``params``) is θ when a device starts a step from an adapted q."""
    q = dict(params)
    prior = params if prior is None else {**params, **prior}
    n = sample_count(x)
    for _ in range(steps):
        g = grad(free_energy)(q, prior, x, onehot, samples, kl_weight, False, noise, loss)
        stepped = {}
        for k, v in q.items():
            if k.startswith(LOGSTD_PREFIX):
                stepped[k] = v - lr * g[k]
            else:
                kappa = kl_weight * lr / (n * torch.exp(2 * prior[LOGSTD_PREFIX + k]))
                stepped[k] = (v - lr * g[k] + kappa * prior[k]) / (1 + kappa)
        q = stepped
    return q


def sample_count(x: Tensor) -> Tensor:
    """The number of samples N as a tensor: a Python int from ``x.shape`` would be frozen into an exported graph
    at the example's pilot count."""
    return x.new_ones(x.shape[0]).sum()


def lower_median(t: Tensor) -> Tensor:
    """``torch.median`` of all entries (the lower median), written with ``topk``: ONNX has no median operator,
    and this way the adaptation step exports."""
    flat = t.flatten()
    return torch.topk(flat, (flat.shape[0] - 1) // 2 + 1, largest=False).values.max()  # max: whatever order TopK returns


def svgd_adapt(params: Params, x: Tensor, onehot: Tensor, lr: float, steps: int, loss: Loss) -> Params:
    """Eq. 2.37 with log p(ϕ|D) = −N·L(ϕ) (no extra prior term: θ's particles carry the prior) and an RBF
    kernel whose bandwidth follows the median heuristic. Written with the mean loss L, so the driving
    term's step is α and the repulsive term is scaled by 1/N."""
    particles = dict(params)
    n = sample_count(x)
    for _ in range(steps):
        count = next(iter(particles.values())).shape[0]
        losses = vmap(grad(loss), in_dims=(0, None, None))(particles, x, onehot)
        flat = torch.cat([v.reshape(count, -1) for v in particles.values()], dim=1)
        sq = (flat[:, None, :] - flat[None, :, :]).pow(2).sum(-1)  # cdist's gradient is NaN at 0
        bandwidth = (lower_median(sq) / math.log(count + 1)).clamp_min(1e-8)
        kernel = torch.exp(-sq / bandwidth)  # [m, j] = κ(ϕ_m, ϕ_j)
        pull = kernel.sum(0)  # Σ_m κ(ϕ_m, ϕ_j)
        moved = {}
        for k, v in particles.items():
            flat_v, flat_g = v.reshape(count, -1), losses[k].reshape(count, -1)
            drive = -kernel.T @ flat_g  # Σ_m κ_mj (−∇L(ϕ_m))
            repulse = (2.0 / bandwidth) * (pull[:, None] * flat_v - kernel.T @ flat_v)  # Σ_m ∇_{ϕ_m} κ(ϕ_m, ϕ_j)
            moved[k] = v + lr / count * (drive + repulse / n).reshape(v.shape)
        particles = moved
    return particles


def weight_samples(params: Params, posterior: str, samples: int, noise: Params | None = None) -> Params:
    """The weights the predictive averages over, on a leading axis: Gaussian draws (fresh, or from ``noise``), the
    particles, or θ itself."""
    if posterior == "gaussian":
        return gaussian_samples(params, samples, noise)
    if posterior == "particles":
        return params
    return {k: v[None] for k, v in params.items()}


def log_predictive(params: Params, x: Tensor, posterior: str, samples: int, noise: Params | None = None) -> Tensor:
    """log of the predictive p(y|x) = mean over weights of p(y|x, w) (eq. 2.35), [n, classes]."""
    if posterior == "point":
        return forward(params, x)
    draws = weight_samples(params, posterior, samples, noise)
    logp = vmap(forward, in_dims=(0, None))(draws, x)
    return torch.logsumexp(logp, dim=0) - math.log(logp.shape[0])


def mean_prediction(params: Params, x: Tensor, posterior: str, samples: int) -> Tensor:
    """A regressor's prediction averaged over the weights (the predictive mean), [n, 1]."""
    return vmap(outputs, in_dims=(0, None))(weight_samples(params, posterior, samples), x).mean(0)


def predictive_loss(params: Params, x: Tensor, target: Tensor, posterior: str, samples: int, loss: Loss) -> Tensor:
    """Log-loss of the predictive (eq. 2.35 per symbol); for a regressor the squared error of the mean
    prediction over the weights. A point estimate gives its plain loss."""
    if posterior == "point":
        return loss(params, x, target)
    if is_regressor(params):
        return ((mean_prediction(params, x, posterior, samples) - target) ** 2).mean()
    return -(target * log_predictive(params, x, posterior, samples)).sum(-1).mean()
