"""Meta-test: symbol error rate of each receiver on fresh devices, for several pilot counts.

Every device sends one frame of max(pilots) pilots and ``payload`` payload symbols; a
receiver with P pilots uses the first P of them, so all pilot counts and all receivers
see the same devices, channels, noise and payload (paired comparison). Confidence
intervals are 95 % normal intervals over devices (symbol errors within a device are
correlated through its channel, so devices are the independent unit). Because every
receiver sees the same devices, each learned receiver is also compared with the reference
(model-based) receiver by the per-device difference of SERs and its 95 % interval: a
paired comparison, much tighter than comparing two marginal intervals.

Calibration: every symbol's confidence (the probability of its decision) is binned over all
devices, giving the expected calibration error (10 equal bins) and a reliability diagram per
receiver and pilot count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from metaedge.sdk.calibration import reliability
from metaedge.sdk.families.demod.receivers import Receiver
from metaedge.sdk.families.demod.task import DemodTasks, Split
from metaedge.sdk.stats import summarise

CHUNK_SYMBOLS = 200_000  # devices × payload per chunk, bounds memory of the payload pass


@dataclass
class SerResult:
    name: str
    budget: dict
    run: str | None = None
    algo: str | None = None
    ser: dict[int, dict] = field(default_factory=dict)  # pilots → {"ser", "ci95", "ece"[, "vs_reference"]}
    reliability: dict[int, dict] = field(default_factory=dict)  # pilots → reliability diagram (see calibration)
    errors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # pilots → per-device SER

    def compare_with(self, reference: "SerResult") -> None:
        """Add the paired difference to ``reference`` (negative: this receiver makes fewer errors)."""
        for p, errors in self.errors.items():
            diff = summarise(errors - reference.errors[p])
            self.ser[p]["vs_reference"] = {
                "reference": reference.name,
                "diff": diff["ser"],
                "ci95": diff["ci95"],
                "better": bool(diff["ci95"][1] < 0),
                "worse": bool(diff["ci95"][0] > 0),
            }

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "run": self.run,
            "algo": self.algo,
            "budget": self.budget,
            "ser": {str(p): v for p, v in self.ser.items()},
            "reliability": {str(p): v for p, v in self.reliability.items()},
        }


def evaluate(
    receivers: Sequence[tuple[Receiver, dict]],
    tasks: DemodTasks,
    pilots: Sequence[int],
    devices: int,
    payload: int,
    split: Split = "test",
    progress: Callable[[int], None] | None = None,
    reference: str | None = None,
) -> list[SerResult]:
    """SER per receiver and pilot count on ``devices`` devices of ``split``; paired with ``reference`` if named."""
    devs = tasks.devices(split, devices)
    frame = tasks.frames(devs, max(pilots), payload, tasks.rng(split, 1))
    per_chunk = max(1, CHUNK_SYMBOLS // payload)
    results = []
    for receiver, info in receivers:
        result = SerResult(name=receiver.name, budget=receiver.budget(), **info)
        for p in pilots:
            errors = np.empty(devices)
            confidence, correct = np.empty((devices, payload), np.float32), np.empty((devices, payload), bool)
            for start in range(0, devices, per_chunk):
                sl = slice(start, start + per_chunk)
                probs = receiver.probabilities(frame.x_tr[sl, :p], frame.y_tr[sl, :p], frame.x_va[sl])
                correct[sl] = probs.argmax(-1) == frame.y_va[sl]
                errors[sl] = 1.0 - correct[sl].mean(1)
                confidence[sl] = probs.max(-1)
            result.errors[p] = errors
            result.reliability[p] = reliability(confidence, correct)
            result.ser[p] = {**summarise(errors), "ece": result.reliability[p]["ece"]}
            if progress:
                progress(1)
        results.append(result)
    ref = next((r for r in results if r.name == reference), None)
    for r in results:
        if ref is not None and r is not ref:
            r.compare_with(ref)
    return results
