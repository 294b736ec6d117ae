"""Functional models: parameters are a flat dict of tensors so that vmap, grad and export can trace them.

``task_loss`` is the one loss every algorithm differentiates; it picks the model family from the
parameter names (an ``enc.``/``dec.`` pair is the learned link, ``rtn.`` layers before an MLP its receiver,
graph filters the REGNN power allocator, anything else the MLP)."""
from torch import Tensor

from metaedge.sdk.models import autoencoder, mlp, regnn
from metaedge.sdk.models.mlp import MLPSpec, Params, forward


def task_loss(params: Params, x: Tensor, target: Tensor) -> Tensor:
    if autoencoder.is_autoencoder(params):
        return autoencoder.task_loss(params, x, target)
    if autoencoder.has_rtn(params):   # a learned link's receiver with its radio-transformer network, on its own
        return autoencoder.receiver_loss(params, x, target)
    if regnn.is_regnn(params):
        return regnn.task_loss(params, x, target)
    return mlp.task_loss(params, x, target)


__all__ = ["MLPSpec", "Params", "forward", "task_loss"]
