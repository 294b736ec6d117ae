"""Reptile (eq. 2.22–2.23): the objective ½‖θ − sg(φ)‖² has gradient θ − φ, so plain SGD
with step β gives θ ← (1 − β)θ + β·mean_k φ_k exactly."""
from metaedge.sdk.algorithms.core import InnerLoop, adapt, stop_gradient
from metaedge.sdk.models import task_loss


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    adapted = stop_gradient(adapt(stop_gradient(params), x_tr, y_tr, inner))
    pull = sum(0.5 * ((params[k] - adapted[k]) ** 2).sum() for k in params)
    return pull, task_loss(adapted, x_va, y_va)
