"""Prox-MAML (eq. 2.24–2.29): each task's φ approximately solves the proximal problem
min L(φ) + λ/2‖φ − θ‖² on all of the task's meta-training data (its training and validation
pilots, D^mtr_k), by ``inner.steps`` gradient steps from θ; by stationarity (2.27) the
meta-gradient is λ(θ − φ) (2.28), so the surrogate λ/2‖θ − sg(φ)‖² gives the update (2.29).
The reported loss is the meta-loss (2.24), the proximal objective at φ."""

import torch

from metaedge.sdk.meta.core import InnerLoop, adapt, stop_gradient


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    x, y = torch.cat([x_tr, x_va]), torch.cat([y_tr, y_va])
    phi = stop_gradient(adapt(stop_gradient(params), x, y, inner))
    keys = inner.keys(params)
    pull = sum(0.5 * inner.prox * ((params[k] - phi[k]) ** 2).sum() for k in keys)
    return pull, inner.loss(phi, x, y) + pull.detach()
