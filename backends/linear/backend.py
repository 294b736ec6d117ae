"""The ``linear`` target: a channel predictor fitted per frame in closed form (bundle-format.md §15).

Per frame, from the bias Θ in the bundle: the frame's pilot channels give N = P − L − δ + 1 windows with
their targets; for the decomposed form the basis comes from the same channels; the filter is the ridge
solution toward Θ (``predictor.fit``); the payload's windows are mapped δ slots ahead (``predictor.predict``).
Channels travel as real rows [Re h_0 … Re h_{S−1}, Im h_0 … Im h_{S−1}], float32; the arithmetic is float64.
"""

from __future__ import annotations

import time

import numpy as np

from metaedge.backends.base import AdaptReport, BackendError, Receiver, Resources, SelftestReport
from metaedge.backends.linear import predictor as pr
from metaedge.deploy import manifest as m
from metaedge.deploy.bundle import Bundle


def to_complex(rows: np.ndarray) -> np.ndarray:
    half = rows.shape[-1] // 2
    return rows[..., :half].astype(np.float64) + 1j * rows[..., half:].astype(np.float64)


def to_rows(channels: np.ndarray) -> np.ndarray:
    return np.concatenate([channels.real, channels.imag], -1).astype(np.float32)


class LinearBackend(Receiver):
    target = "linear"

    def __init__(self) -> None:
        self.bundle: Bundle | None = None
        self.fitted = None

    @classmethod
    def configure(cls, threads: int, options: dict) -> "LinearBackend":
        return cls()

    def load(self, bundle: Bundle) -> Resources:
        if bundle.target != self.target:
            raise BackendError(f"bundle target is '{bundle.target}', this device runs '{self.target}'")
        task = bundle.manifest.task
        if not task.predictor:
            raise BackendError("the linear target runs predictors: task.outputs is missing")
        if len(task.features) % 2 or task.outputs != len(task.features):
            raise BackendError(f"task.outputs must equal the {len(task.features)} features (2S: real parts, then imaginary), got {task.outputs}")
        try:
            p = bundle.manifest.section("predictor")
            self.form, self.lam, self.rank = p["form"], float(p["lam"]), p["rank"]
            self.window = pr.Window(length=int(p["window"]), lag=int(p["lag"]))
            self.entries = len(bundle.manifest.task.features) // 2
        except (KeyError, TypeError, ValueError) as e:
            raise BackendError(f"manifest 'predictor' section is invalid: {e}") from None
        if self.form not in pr.FORMS or not (self.lam > 0) or self.window.length < 1 or self.window.lag < 1:
            raise BackendError(f"predictor form must be one of {', '.join(pr.FORMS)}, lam > 0, window and lag ≥ 1")
        if self.rank != "aic" and not (type(self.rank) is int and 1 <= self.rank <= self.entries):
            raise BackendError(f"predictor rank must be 'aic' or an integer in [1, {self.entries}]")
        theta = bundle.tensors(m.THETA)
        d = self.window.length * (self.entries if self.form == "naive" else 1)
        shape = (d, self.entries if self.form == "naive" else 1)
        if any(theta.get(k) is None or theta[k].shape != shape or not np.isfinite(theta[k]).all() for k in ("bias.re", "bias.im")):
            raise BackendError(f"θ must hold finite 'bias.re' and 'bias.im' of shape {list(shape)}")
        self.bias = theta["bias.re"].astype(np.float64) + 1j * theta["bias.im"].astype(np.float64)
        fallback = task.fallback  # a predictor's can only be the conventional fit, with its hold-out selection (§15.5)
        self.holdout = fallback.select if fallback is not None else None
        self.bundle = bundle
        self.fitted = None
        size = self.bias.size * 16
        return Resources(parameter_bytes=2 * size, artifact_bytes=bundle.size(), parameters=2 * self.bias.size)

    def adapt(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray | None = None) -> AdaptReport:
        start = time.perf_counter()
        channels = to_complex(pilot_samples)
        samples = len(channels) - self.window.length - self.window.lag + 1
        if samples < 1:
            raise BackendError(
                f"a frame needs at least {self.window.slots(1)} pilot channels (window {self.window.length} + lag "
                f"{self.window.lag} − 1); got {len(channels)}"
            )
        self.fitted, conventional, learned, other = pr.fit_selected(
            self.form, self.window, self.lam, channels, samples, self.bias, self.rank, self.holdout
        )
        receiver, why = "learned", None
        if conventional:
            receiver = "classical"
            why = (
                f"hold-out error {float(other):.4g} (conventional) < {float(learned):.4g} (learned) on the last {self.holdout.windows} pilot windows"
            )
        return AdaptReport(steps=1, seconds=time.perf_counter() - start, receiver=receiver, fallback=why)

    def predict(self, samples: np.ndarray) -> np.ndarray:
        if len(samples) < self.window.length:
            raise BackendError(f"the payload needs at least {self.window.length} channels (one window)")
        if self.fitted is None:  # no pilots yet: the bias itself predicts (naive), or nothing to project on
            raise BackendError("adapt on the frame's pilots first")
        return to_rows(pr.predict(self.form, self.window, *self.fitted, to_complex(samples)))

    def reset(self) -> None:
        self.fitted = None

    def selftest(self) -> SelftestReport:
        vectors = self.bundle.tensors(m.SELFTEST)
        atol = self.bundle.manifest.selftest.atol
        try:
            self.reset()
            self.adapt(vectors["pilots"])
            got = self.predict(vectors["history"])
            self.reset()
            error = float(np.abs(got - vectors["predictions"]).max())
        except (KeyError, ValueError, BackendError, np.linalg.LinAlgError):
            return SelftestReport(False, float("inf"), atol, 1)
        return SelftestReport(error <= atol, error, atol, 1)

    def close(self) -> None:
        self.fitted = None
