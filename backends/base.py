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
from typing import Protocol

import numpy as np

from metaedge.backends import classical, selection
from metaedge.deploy.bundle import Bundle
from metaedge.deploy.manifest import Selection, Task


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
    receiver: str = "learned"  # which receiver decided the payload: "learned" (adapted) or "classical" (§6.1)
    diverged: bool = False  # the adaptation guard fired
    fallback: str | None = None  # why the adapted receiver did not decide, or why it was doubted (a diverged one kept)
    residuals: tuple[float, float] | None = None  # frame residuals (learned, classical) of the selection, §6.2
    select_s: float = 0.0  # the classical receiver and the selection


@dataclass(frozen=True)
class AdaptReport:
    steps: int
    seconds: float
    receiver: str = "learned"  # a predictor's: "classical" where its selection chose the conventional fit (§15.5)
    fallback: str | None = None  # … and why


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
    call overrides ``fused_log_probs``. ``load`` calls ``fall_back_to(task)``: the bundle's classical receiver
    then decides the frames whose adaptation diverged or, with a selection margin, whose frame residual says
    so (``selection``, bundle-format.md §6.2); the unadapted θ never decides a frame.
    """

    @classmethod
    def inspect(cls, bundle: Bundle) -> None:
        """Refuse (``BackendError``) content this target never runs; called at upload, without loading anything."""

    classical: classical.Classical | None = None  # §6.1, set by fall_back_to
    select: Selection | None = None  # §6.2, set by fall_back_to

    def fall_back_to(self, task: Task) -> None:
        """Take the task's classical receiver and per-frame selection (none for a task without ``fallback``)."""
        self.classical = classical.receiver_of(task)
        self.select = task.fallback.select if task.fallback is not None else None

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
        before = float(selection.mean_loss(self.log_probs(frame.pilots), frame.labels))
        fused = self.fused_log_probs(frame)
        if fused is not None:
            log_probs, adapt_s, steps = fused
            pilots = len(frame.labels)
            after, infer_s, probs = float(selection.mean_loss(log_probs[:pilots], frame.labels)), 0.0, np.exp(log_probs[pilots:])
        else:
            report = self.adapt(frame.pilots, frame.labels)
            after, adapt_s, steps = float(selection.mean_loss(self.log_probs(frame.pilots), frame.labels)), report.seconds, report.steps
            start = time.perf_counter()
            probs = self.predict(frame.payload)
            infer_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = channel = None  # the classical receiver's, where the selection or a diverged adaptation needs them
        head = frame.payload if self.select is None else frame.payload[: self.select.samples]  # what the selection reads
        if self.classical is not None and (self.select is not None or selection.diverged(before, after)):
            channel = self.classical.channel(frame.pilots, frame.labels)
            scores = self.classical.logits(channel, head)
        choice = selection.choose(before, after, probs, scores, frame.pilots, frame.labels, frame.payload, self.select)
        outputs = probs
        if choice.classical:
            outputs = classical.softmax(scores if len(head) == len(frame.payload) else self.classical.logits(channel, frame.payload))
        select_s = time.perf_counter() - start
        residuals = None if choice.residual_learned is None else (float(choice.residual_learned), float(choice.residual_classical))
        return FrameResult(
            outputs=outputs,
            steps=steps,
            adapt_s=adapt_s,
            infer_s=infer_s,
            loss_before=before,
            loss_after=after,
            fused=fused is not None,
            receiver="classical" if choice.classical else "learned",
            diverged=bool(choice.diverged),
            fallback=choice.reason(before, after),
            residuals=residuals,
            select_s=select_s,
        )

    def _predictor_frame(self, frame: Frame) -> FrameResult:
        """A predictor fits on its pilots (the past of the signal) and predicts from the payload; no guard (its
        backend may choose the conventional fit, §15.5, and says so in the report)."""
        report = self.adapt(frame.pilots, None)
        start = time.perf_counter()
        outputs = self.predict(frame.payload)
        return FrameResult(
            outputs=outputs,
            steps=report.steps,
            adapt_s=report.seconds,
            infer_s=time.perf_counter() - start,
            receiver=report.receiver,
            fallback=report.fallback,
        )
