"""The one interface every device backend implements, and the frame procedure most of them share.

A device talks to its receiver through ``Backend`` alone: ``load`` a verified bundle once,
then one ``frame`` per received frame (adapt on the pilots from θ, decide the payload),
``selftest`` before an image is confirmed, ``close`` at reset or shutdown. ``Receiver`` is
the frame procedure of a receiver that adapts in place (reset to θ, adapt, predict) with
the adaptation guard; a backend built on it implements those steps and inherits ``frame``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from metaedge.deploy.bundle import Bundle

GUARD_NATS = 0.5  # an adaptation may not raise the mean pilot loss by more than this (nats)


class BackendError(RuntimeError):
    """The backend cannot run this bundle or input; the message says why."""


@dataclass(frozen=True)
class Frame:
    """One received frame as the backend sees it (validated by the device)."""

    pilots: np.ndarray  # [P, F] float32
    labels: np.ndarray | None  # [P] int64, the class of each pilot; None for a predictor, whose pilots carry none
    payload: np.ndarray  # [N, F] float32


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced; ``outputs`` are class probabilities [N, M] (classifier) or outputs [N, O] (predictor)."""

    outputs: np.ndarray
    steps: int
    adapt_s: float
    infer_s: float
    loss_before: float | None = None  # mean −log p of the pilots' classes at θ (classifiers)
    loss_after: float | None = None  # … after adaptation
    fused: bool = False  # adaptation and inference ran as one call
    fallback: str | None = None  # why the adapted receiver was not used, if it was not


@dataclass(frozen=True)
class AdaptReport:
    steps: int
    seconds: float


@dataclass(frozen=True)
class SelftestReport:
    passed: bool
    max_error: float
    tolerance: float
    checks: int


@dataclass(frozen=True)
class Resources:
    """What the loaded receiver needs, for the device profile's resource check and ``info``."""

    parameter_bytes: int  # θ plus the adapted copy
    artifact_bytes: int  # bundle bytes kept in flash
    parameters: int  # scalar parameters
    costs: dict = field(default_factory=dict)  # target-specific execution costs (circuits and shots per frame, …)


class Backend(Protocol):
    target: str

    @classmethod
    def inspect(cls, bundle: Bundle) -> None: ...  # content checks at upload, before the image is committed

    def load(self, bundle: Bundle) -> Resources: ...

    def frame(self, frame: Frame) -> FrameResult: ...

    def selftest(self) -> SelftestReport: ...

    def close(self) -> None: ...  # release the runtime (Lava's processes); idempotent


class Receiver:
    """``frame`` for a receiver that adapts its parameters in place.

    Subclasses implement ``reset`` (back to θ), ``adapt`` (on the pilots), ``predict`` (class probabilities
    or outputs for samples) and, for classifiers, ``log_probs``; a backend that can run a whole frame in one
    call overrides ``fused_log_probs``. The guard: when adaptation raises the pilots' mean loss by more than
    ``GUARD_NATS`` (or makes it non-finite), the payload is decided by the bundle's classical receiver
    (``classical``, which ``load`` sets from the task) or, for a bundle without one, with θ.
    """

    @classmethod
    def inspect(cls, bundle: Bundle) -> None:
        """Refuse (``BackendError``) content this target never runs; called at upload, without loading anything."""

    classical: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None  # set by load (§6.1)

    def reset(self) -> None:
        raise NotImplementedError

    def adapt(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray | None) -> AdaptReport:
        raise NotImplementedError

    def predict(self, samples: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fused_log_probs(self, frame: Frame) -> tuple[np.ndarray, float, int] | None:
        """Log-probabilities of pilots and payload (concatenated) after adaptation, the seconds and the steps,
        in one call; None where this backend or bundle has no such call."""
        return None

    def frame(self, frame: Frame) -> FrameResult:
        self.reset()
        if frame.labels is None:
            return self._predictor_frame(frame)
        before = mean_loss(self.log_probs(frame.pilots), frame.labels)
        fused = self.fused_log_probs(frame)
        probs = None
        if fused is not None:
            log_probs, adapt_s, steps = fused
            pilots = len(frame.labels)
            after, infer_s, probs = mean_loss(log_probs[:pilots], frame.labels), 0.0, np.exp(log_probs[pilots:])
        else:
            report = self.adapt(frame.pilots, frame.labels)
            after, adapt_s, steps = mean_loss(self.log_probs(frame.pilots), frame.labels), report.seconds, report.steps
        fallback = None
        if not np.isfinite(after) or after > before + GUARD_NATS:
            start, diverged = time.perf_counter(), f"pilot loss {before:.3g} → {after:.3g} after adaptation"
            if self.classical is not None:  # the bundle's classical receiver (spec §6.1), never the unadapted θ
                probs, fallback = self.classical(frame.pilots, frame.labels, frame.payload), f"{diverged}; decoded with the classical receiver"
            else:
                self.reset()
                probs, fallback = self.predict(frame.payload), f"{diverged}; decoded with θ"
            infer_s = time.perf_counter() - start
        if probs is None:
            start = time.perf_counter()
            probs = self.predict(frame.payload)
            infer_s = time.perf_counter() - start
        return FrameResult(
            outputs=probs,
            steps=steps,
            adapt_s=adapt_s,
            infer_s=infer_s,
            loss_before=before,
            loss_after=after,
            fused=fused is not None,
            fallback=fallback,
        )

    def _predictor_frame(self, frame: Frame) -> FrameResult:
        """A predictor fits on its pilots (the past of the signal) and predicts from the payload; no guard."""
        report = self.adapt(frame.pilots, None)
        start = time.perf_counter()
        outputs = self.predict(frame.payload)
        return FrameResult(outputs=outputs, steps=report.steps, adapt_s=report.seconds, infer_s=time.perf_counter() - start)


def mean_loss(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean −log p of ``labels`` under class log-probabilities [n, classes] (NaN or ∞ when they are)."""
    with np.errstate(all="ignore"):
        return float(-log_probs[np.arange(len(labels)), labels].mean())
