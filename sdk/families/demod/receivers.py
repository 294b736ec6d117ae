"""Receivers compared at meta-test: learned demodulators that adapt on the pilots, and the
model-based receiver (MMSE channel estimate from the pilots + maximum-likelihood detection
on the nominal constellation, which ignores the I/Q imbalance — monograph §5.2).

Every receiver maps (pilot samples, pilot labels, payload samples) for a batch of devices
to class probabilities of the payload [devices, n, classes].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.func import vmap

from metaedge.backends import selection
from metaedge.backends.classical import mmse_ml
from metaedge.deploy.manifest import Selection
from metaedge.sdk.meta.bayes import weight_samples
from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.models.mlp import Params, forward

ENSEMBLE = 100  # weight draws of a Gaussian posterior's predictive at meta-test (as published for the Bayesian demodulator)


class Receiver(Protocol):
    name: str

    def budget(self) -> dict: ...

    def probabilities(self, x_pilots: np.ndarray, y_pilots: np.ndarray, x_payload: np.ndarray) -> np.ndarray: ...


@dataclass
class LearnedReceiver:
    """A demodulator that starts from ``params`` and adapts with ``inner`` on each device's pilots.

    A Bayesian posterior predicts with the average of the probabilities over its weights
    (``ENSEMBLE`` Gaussian draws or the particles), one weight set at a time to bound memory;
    its draws are seeded, so results repeat."""

    name: str
    params: Params
    inner: InnerLoop
    classes: int

    def budget(self) -> dict:
        return {"steps": self.inner.steps, "lr": self.inner.lr, "adapts": ",".join(self.inner.adapt) if self.inner.adapt else "all"}

    @torch.no_grad()
    def _predict(self, adapted: Params, x_payload: torch.Tensor) -> torch.Tensor:
        weights = vmap(weight_samples, in_dims=(0, None, None), randomness="different")(adapted, self.inner.posterior, ENSEMBLE)
        draws = next(iter(weights.values())).shape[1]
        total = sum(vmap(forward)({k: v[:, i] for k, v in weights.items()}, x_payload).exp() for i in range(draws))
        return total / draws

    def probabilities(self, x_pilots, y_pilots, x_payload):
        x_p = torch.as_tensor(x_pilots)
        y_p = torch.nn.functional.one_hot(torch.as_tensor(y_pilots), self.classes).to(torch.float32)
        params = {k: v.detach() for k, v in self.params.items()}
        with torch.random.fork_rng():
            torch.manual_seed(0)
            adapted = vmap(adapt, in_dims=(None, 0, 0, None), randomness="different")(params, x_p, y_p, self.inner)
            return self._predict({k: v.detach() for k, v in adapted.items()}, torch.as_tensor(x_payload)).numpy()


@dataclass
class ModelBasedReceiver:
    """LMMSE estimate ĥ = Σ s*·y / (Σ|s|² + N0/σh²) from the pilots, then ML detection with ĥ.

    Probabilities are the Gaussian posterior over the nominal constellation given ĥ, so
    the decision (argmax) is the ML decision and confidence can be compared with learned
    receivers.
    """

    constellation: np.ndarray
    noise_var: float
    channel_var: float = 1.0
    name: str = "model-based (MMSE + ML)"

    def budget(self) -> dict:
        return {"steps": 0, "lr": 0.0, "adapts": "channel estimate"}

    def probabilities(self, x_pilots, y_pilots, x_payload):
        return mmse_ml(self.constellation, self.noise_var, self.channel_var, x_pilots, y_pilots, x_payload)


@dataclass
class SelectingReceiver:
    """The device's frame rule on the host (``backends.selection``, bundle-format.md §6.2): per device, the adapted
    learned receiver, or the classical one where the adaptation guard or the frame residual says so; ``select``
    None is the guard alone. ``decided`` records, per pilot count, which devices the classical receiver decided."""

    learned: LearnedReceiver
    classical: ModelBasedReceiver
    select: Selection | None
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.learned.name} + selection"
        self.decided: dict[int, list[np.ndarray]] = {}

    def budget(self) -> dict:
        return {**self.learned.budget(), "select": None if self.select is None else dataclasses.asdict(self.select)}

    def probabilities(self, x_pilots, y_pilots, x_payload):
        pilots = x_pilots.shape[1]
        adapted = self.learned.probabilities(x_pilots, y_pilots, np.concatenate([x_pilots, x_payload], 1))
        unadapted = dataclasses.replace(self.learned, inner=dataclasses.replace(self.learned.inner, steps=0))
        with np.errstate(divide="ignore"):
            before = selection.mean_loss(np.log(unadapted.probabilities(x_pilots, y_pilots, x_pilots)), y_pilots)
            after = selection.mean_loss(np.log(adapted[:, :pilots]), y_pilots)
        learned, classical = adapted[:, pilots:], self.classical.probabilities(x_pilots, y_pilots, x_payload)
        choice = selection.choose(before, after, learned, classical, x_pilots, y_pilots, x_payload, self.select)
        self.decided.setdefault(pilots, []).append(choice.classical)
        return np.where(choice.classical[:, None, None], classical, learned)
