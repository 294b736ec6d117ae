"""MAML (eq. 2.1–2.3): the validation loss of the adapted parameters, differentiated through
the inner SGD steps (second order). CAVIA (eq. 2.39–2.40) is the same objective with only
the context adapting."""
from metaedge.sdk.algorithms.core import InnerLoop, adapt
from metaedge.sdk.models.mlp import task_loss


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    loss = task_loss(adapt(params, x_tr, y_tr, inner), x_va, y_va)
    return loss, loss
