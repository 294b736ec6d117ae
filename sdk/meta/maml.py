"""MAML (eq. 2.1–2.3): the validation loss of the adapted parameters, differentiated through
the inner SGD steps (second order). CAVIA (eq. 2.39–2.40) is the same objective with only
the context adapting; the Bayesian forms (eq. 2.33–2.36) the same with a distribution adapted
and the predictive's log-loss on the validation pilots."""

from metaedge.sdk.meta.core import InnerLoop, adapt, predictive_loss


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    loss = predictive_loss(adapt(params, x_tr, y_tr, inner), x_va, y_va, inner)
    return loss, loss
