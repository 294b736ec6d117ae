"""The classical receiver a demodulation bundle falls back to (bundle-format.md §6.1), with numpy alone.

LMMSE estimate of a flat channel from the pilots, ĥ = Σ s*·y / (Σ|s|² + N0/σh²), then ML
detection on the nominal constellation with ĥ; the class probabilities are the Gaussian
posterior given ĥ, so the decision is the ML decision and the confidence is comparable with a
learned receiver's. The host's model-based baseline is the same function, batched over frames.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from metaedge.deploy.manifest import Task


def mmse_ml(constellation: np.ndarray, noise_var: float, channel_var: float, pilots, labels, payload) -> np.ndarray:
    """Class probabilities [..., N, M] of ``payload`` [..., N, 2] from ``pilots`` [..., P, 2] of classes ``labels``
    [..., P]; leading axes are frames."""
    y_p = pilots[..., 0] + 1j * pilots[..., 1]
    s_p = constellation[labels]
    h = (np.conj(s_p) * y_p).sum(-1) / ((np.abs(s_p) ** 2).sum(-1) + noise_var / channel_var)
    y = payload[..., 0] + 1j * payload[..., 1]
    logits = -(np.abs(y[..., :, None] - h[..., None, None] * constellation) ** 2) / noise_var
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)


def receiver_of(task: Task) -> Callable | None:
    """The task's classical receiver as ``(pilots, labels, payload) → probabilities``, or None if it has none."""
    fallback = task.fallback
    if fallback is None:
        return None
    points = np.asarray(fallback.constellation, np.complex128)
    return lambda pilots, labels, payload: mmse_ml(points, fallback.noise_var, fallback.channel_var, pilots, labels, payload)
