"""The demodulator: an MLP on received I/Q samples (2→10→30→30→16 by default), ReLU, log-softmax
(and, with one output, the regressor of the sinusoid benchmark).

Functional on purpose: ``forward(params, x)`` takes the parameter dict explicitly, so the
same definition is vmapped over tasks during meta-training, differentiated twice by MAML,
and traced into plain graphs at export. For CAVIA, ``params["context"]`` holds the task
context vector, concatenated to every input sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

Params = dict[str, Tensor]
Loss = Callable[[Params, Tensor, Tensor], Tensor]  # (parameters, samples, targets) → mean loss over the samples
LAYER_BIAS = re.compile(r"^l(\d+)\.bias$")


@dataclass(frozen=True)
class MLPSpec:
    sizes: tuple[int, ...] = (2, 10, 30, 30, 16)
    context: int = 0  # CAVIA context inputs (0: none)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, in the canonical order used everywhere (files, graphs)."""
        shapes: dict[str, tuple[int, ...]] = {}
        fan_in = self.sizes[0] + self.context
        for i, fan_out in enumerate(self.sizes[1:]):
            shapes[f"l{i}.weight"] = (fan_in, fan_out)
            shapes[f"l{i}.bias"] = (fan_out,)
            fan_in = fan_out
        if self.context:
            shapes["context"] = (self.context,)
        return shapes

    def init(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """PyTorch's default Linear initialisation, U(±1/√fan_in), drawn from a numpy generator; context starts at 0."""
        params = {}
        for name, shape in self.shapes().items():
            if name == "context":
                params[name] = np.zeros(shape, np.float32)
                continue
            fan_in = shape[0] if name.endswith(".weight") else params[name.replace(".bias", ".weight")].shape[0]
            bound = 1.0 / np.sqrt(fan_in)
            params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        return params

    def to_dict(self) -> dict:
        return {"sizes": list(self.sizes), "context": self.context}

    @staticmethod
    def from_dict(d: dict) -> "MLPSpec":
        return MLPSpec(sizes=tuple(int(s) for s in d["sizes"]), context=int(d.get("context", 0)))


def outputs(params: Params, x: Tensor) -> Tensor:
    """The network's raw outputs for samples ``x`` [n, features] → [n, outputs]."""
    h = x
    if "context" in params:
        ctx = params["context"]
        h = torch.cat([h, ctx.expand(h.shape[0], ctx.shape[-1])], dim=-1)
    i = 0
    while f"l{i + 1}.weight" in params:
        h = torch.relu(torch.addmm(params[f"l{i}.bias"], h, params[f"l{i}.weight"]))
        i += 1
    return torch.addmm(params[f"l{i}.bias"], h, params[f"l{i}.weight"])


def forward(params: Params, x: Tensor) -> Tensor:
    """Class log-probabilities for samples ``x`` [n, features] → [n, classes]."""
    return torch.log_softmax(outputs(params, x), dim=-1)


def is_regressor(params: Params) -> bool:
    """A network with one output is a regressor (squared error); with more, a classifier (cross-entropy)."""
    depth = max(int(m.group(1)) for k in params if (m := LAYER_BIAS.match(k)))
    return params[f"l{depth}.bias"].shape[-1] == 1


def task_loss(params: Params, x: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy −mean Σ onehot·log p, written with one-hot labels (exports exactly, where integer labels with a
    mean-reduced NLL do not), or for a regressor the mean squared error against ``target`` [n, 1]."""
    if is_regressor(params):
        return ((outputs(params, x) - target) ** 2).mean()
    return -(target * forward(params, x)).sum(-1).mean()
