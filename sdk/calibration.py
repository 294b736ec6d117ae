"""Calibration of soft decisions: expected calibration error and reliability diagrams (numpy).

Confidence is the probability a receiver gives its decision; a calibrated receiver is right
with that frequency. Bins are equal-width over [0, 1] (10 by default, as is customary);
ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|.
"""

from __future__ import annotations

import numpy as np


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Per-bin count, mean confidence and accuracy (None for empty bins), and the ECE."""
    confidence, correct = np.ravel(confidence).astype(np.float64), np.ravel(correct).astype(np.float64)
    index = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    acc_sum = np.bincount(index, weights=correct, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, accuracy = conf_sum / count, acc_sum / count
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / max(len(confidence), 1))
    as_list = lambda a: [None if c == 0 else float(v) for v, c in zip(a, count)]  # noqa: E731
    return {"bins": bins, "count": count.tolist(), "confidence": as_list(mean_conf), "accuracy": as_list(accuracy), "ece": ece}
