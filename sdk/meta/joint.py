"""Joint learning (eq. 1.2): one model for the pooled data of all tasks, no adaptation during
training (it is fine-tuned on the pilots at meta-test, like every learned method)."""

import torch

from metaedge.sdk.meta.core import InnerLoop


def objective(params, x_tr, y_tr, x_va, y_va, inner: InnerLoop):
    loss = inner.loss(params, torch.cat([x_tr, x_va]), torch.cat([y_tr, y_va]))
    return loss, loss
