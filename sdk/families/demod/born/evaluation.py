"""Quality of Born-machine receivers on new devices: SER, log-loss and calibration.

``exact`` mode adapts with exact gradients and predicts with the exact posterior ensemble
(the host simulator); the device modes (``metaedge.sdk.families.demod.born.device_eval``) run the
Qiskit backend with its shot budget. The frequentist counterpart is the point-estimate
BNN: the binary weights of maximum pilot likelihood (exhaustive search), used alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metaedge.backends.qiskit.model import BornSpec, class_log_probs, logsumexp, pilot_log_likelihood, weight_table
from metaedge.sdk.calibration import reliability
from metaedge.sdk.families.demod.born.learning import InnerConfig, adapt, safe_log
from metaedge.sdk.families.demod.born.simulator import BornSimulator
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.stats import summarise

CHUNK = 50  # devices per batch: [devices, 2^n, symbols, 4] log-probabilities stay ~100 MB


@dataclass
class Scores:
    """Per-symbol outcomes of one receiver, accumulated over devices."""

    ser: list
    nll: list
    confidence: list
    correct: list

    @classmethod
    def empty(cls) -> "Scores":
        return cls([], [], [], [])

    def add(self, log_probs: np.ndarray, labels: np.ndarray) -> None:
        """``log_probs`` [devices, N, 4], ``labels`` [devices, N]."""
        decisions = log_probs.argmax(-1)
        correct = decisions == labels
        self.ser.append(1.0 - correct.mean(axis=1))
        self.nll.append(-np.take_along_axis(log_probs, labels[..., None], -1)[..., 0].mean(axis=1))
        self.confidence.append(np.exp(log_probs.max(-1)).ravel())
        self.correct.append(correct.ravel())

    def summary(self) -> dict:
        ser, nll = np.concatenate(self.ser), np.concatenate(self.nll)
        rel = reliability(np.concatenate(self.confidence), np.concatenate(self.correct))
        return {**summarise(ser), "log_loss": float(nll.mean()), "ece": rel["ece"], "reliability": rel, "per_device_ser": ser.tolist()}


def test_frames(task: DemodConfig, devices: int, seed: int, split: str = "test"):
    """Frames of new devices: ``task.pilots`` known pilots and ``task.payload`` payload symbols each."""
    tasks = DemodTasks(task, seed=seed)
    return tasks.frames(tasks.devices(split, devices), task.pilots, task.payload, tasks.rng(split, 1))


def evaluate_exact(
    spec: BornSpec,
    inner: InnerConfig,
    priors: dict[str, tuple[np.ndarray, np.ndarray | float]],
    task: DemodConfig,
    devices: int = 500,
    seed: int = 0,
    with_point_estimate: bool = True,
    split: str = "test",
) -> dict:
    """Adapt from each prior (θ, step sizes) on every test device's pilots (exact), score the payload."""
    frames = test_frames(task, devices, seed, split)
    sim = BornSimulator(spec)
    table = weight_table(spec.qubits)
    scores = {name: Scores.empty() for name in priors}
    point = Scores.empty()
    for lo in range(0, devices, CHUNK):
        part = slice(lo, min(lo + CHUNK, devices))
        loglik = pilot_log_likelihood(spec, frames.x_tr[part], frames.y_tr[part])
        logs = class_log_probs(spec, frames.x_va[part], table)  # [b, 2^n, N, 4]
        labels = frames.y_va[part]
        for name, (theta, lr) in priors.items():
            angles = torch.tensor(theta, dtype=torch.float64).expand(loglik.shape[0], -1)
            phi = adapt(sim, angles, torch.from_numpy(loglik), inner, lr=torch.as_tensor(lr, dtype=torch.float64))
            log_q = safe_log(sim.probabilities(phi)).numpy()
            scores[name].add(logsumexp(log_q[:, :, None, None] + logs, axis=1), labels)
        if with_point_estimate:
            best = loglik.argmax(axis=1)
            point.add(logs[np.arange(len(best)), best], labels)
    out = {name: s.summary() for name, s in scores.items()}
    if with_point_estimate:
        out["point-estimate BNN"] = point.summary()
    return out


STEP_SIZE_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)


def tune_step_size(spec: BornSpec, inner: InnerConfig, theta: np.ndarray, task: DemodConfig, devices: int = 200, seed: int = 0) -> float:
    """The scalar step size of ``STEP_SIZE_GRID`` with the lowest log-loss on validation devices (exact).

    Baselines get their best step size this way, so meta-learning's per-angle step sizes are
    compared against tuned baselines, not against an arbitrary one.
    """
    priors = {str(lr): (theta, lr) for lr in STEP_SIZE_GRID}
    results = evaluate_exact(spec, inner, priors, task, devices, seed, with_point_estimate=False, split="val")
    return float(min(results, key=lambda k: results[k]["log_loss"]))
