"""FOMAML (eq. 2.16–2.17): the Jacobian ∂φ/∂θ is replaced by the identity, so the
meta-gradient is the validation gradient evaluated at φ. Written as φ = θ + sg(φ − θ):
its value is φ and its derivative with respect to θ is the identity."""

from metaedge.sdk.meta.core import InnerLoop, adapt, stop_gradient


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    adapted = adapt(stop_gradient(params), x_tr, y_tr, inner)
    straight_through = {k: params[k] + (adapted[k] - params[k].detach()) for k in params}
    loss = inner.loss(straight_through, x_va, y_va)
    return loss, loss
