"""Sharp-MAML (eq. 2.13–2.15): MAML with sharpness-aware perturbations of both levels. The inner
gradient is taken at θ + ε + ε_k, where ε_k = α_in·∇L_tr(θ)/‖·‖ (2.14a) and ε = α_ot·∇_θL_va(φ̃(θ))/‖·‖
with φ̃ = θ − α∇L_tr(θ + ε_k) (2.14b–c); then φ = θ + ε − α∇L_tr(θ + ε + ε_k) (2.13b). As in SAM, the
perturbations are constants of the outer gradient (only their points of evaluation move with θ)."""

from torch.func import grad

from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.meta.defaults import Sharp


def _along(g, radius):
    norm = sum((v**2).sum() for v in g.values()).sqrt() + 1e-12
    return {k: (radius * v / norm).detach() for k, v in g.items()}


def _shifted(params, shift):
    return {k: v + shift[k] if k in shift else v for k, v in params.items()}


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    keys = inner.keys(params)
    theta = {k: v.detach() for k, v in params.items()}
    eps_k = _along(grad(lambda f: inner.loss({**theta, **f}, x_tr, y_tr))({k: theta[k] for k in keys}), inner.of(Sharp).sharp_in)

    def val_after_step(p):
        stepped = adapt(_shifted(p, eps_k), x_tr, y_tr, inner)
        return inner.loss({k: stepped[k] - eps_k[k] if k in eps_k else stepped[k] for k in stepped}, x_va, y_va)

    eps = _along({k: v for k, v in grad(val_after_step)(theta).items() if k in keys}, inner.of(Sharp).sharp_out)
    shifted = adapt(_shifted(params, {k: eps[k] + eps_k[k] for k in keys}), x_tr, y_tr, inner)
    phi = {k: shifted[k] - eps_k[k] if k in keys else shifted[k] for k in shifted}
    loss = inner.loss(phi, x_va, y_va)
    return loss, loss
