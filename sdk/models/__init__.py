"""Functional models: parameters are a flat dict of tensors so that vmap, grad and export can trace them."""
from metaedge.sdk.models.mlp import MLPSpec, forward, task_loss

__all__ = ["MLPSpec", "forward", "task_loss"]
