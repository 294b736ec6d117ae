"""iMAML (eq. 2.4–2.8): φ approximately minimises L_tr(φ) + λ/2‖φ − θ‖² (``inner.steps`` steps of
gradient descent on it, from θ), and the meta-gradient is the implicit one,
(I + ∇²L_tr(φ)/λ)⁻¹ ∇L_va(φ), solved from Hessian-vector products — memory does not grow with
the inner steps, because nothing is differentiated through them. Written as the surrogate
⟨θ, sg(u)⟩, whose gradient with respect to θ is u."""

from torch.func import grad

from metaedge.sdk.meta.core import InnerLoop, adapt, implicit_gradient, stop_gradient
from metaedge.sdk.meta.defaults import Proximal


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    theta = stop_gradient(params)
    phi = stop_gradient(adapt(theta, x_tr, y_tr, inner))
    keys = inner.keys(params)
    fast = {k: phi[k] for k in keys}
    val_grad = grad(lambda f: inner.loss({**phi, **f}, x_va, y_va))(fast)
    own = inner.of(Proximal)
    u = implicit_gradient(lambda f: inner.loss({**phi, **f}, x_tr, y_tr), val_grad, fast, own.prox, own.solver_steps, own.solver)
    surrogate = sum((params[k] * u[k].detach()).sum() for k in keys)
    return surrogate, inner.loss(phi, x_va, y_va)
