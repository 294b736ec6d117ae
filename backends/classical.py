"""The classical receiver a demodulation bundle falls back to (bundle-format.md §6.1), with numpy alone.

LMMSE estimate of a flat channel from the pilots, ĥ = Σ s*·y / (Σ|s|² + N0/σh²), then ML
detection on the nominal constellation with ĥ; the class probabilities are the Gaussian
posterior given ĥ, so the decision is the ML decision and the confidence is comparable with a
learned receiver's. The host's model-based baseline is the same receiver, batched over frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaedge.deploy.manifest import Task


@dataclass(frozen=True)
class Classical:
    """MMSE channel estimate + ML detection on ``constellation`` (complex [M]); leading axes are frames."""

    constellation: np.ndarray
    noise_var: float
    channel_var: float

    def channel(self, pilots: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """ĥ [...] from the pilots [..., P, 2] of classes ``labels`` [..., P]."""
        y = pilots[..., 0] + 1j * pilots[..., 1]
        s = self.constellation[labels]
        return (np.conj(s) * y).sum(-1) / ((np.abs(s) ** 2).sum(-1) + self.noise_var / self.channel_var)

    def logits(self, channel: np.ndarray, payload: np.ndarray) -> np.ndarray:
        """Class logits [..., N, M] of ``payload`` [..., N, 2]: −|y − ĥ·s_c|²/N0 less its per-sample constant −|y|²/N0,
        so one real product per sample and class: (2·Re(conj(ĥ s_c)·y) − |ĥ s_c|²)/N0, float32 (ĥ in float64).
        Their softmax is the posterior, their argmax the ML decision."""
        points = channel[..., None] * self.constellation  # [..., M] received points
        rails = (np.stack([points.real, points.imag], -2) * (2.0 / self.noise_var)).astype(np.float32)  # [..., 2, M]
        return np.asarray(payload, np.float32) @ rails - ((np.abs(points) ** 2) / self.noise_var).astype(np.float32)[..., None, :]

    def probabilities(self, pilots: np.ndarray, labels: np.ndarray, payload: np.ndarray) -> np.ndarray:
        """Class probabilities [..., N, M] of the payload."""
        return softmax(self.logits(self.channel(pilots, labels), payload))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, float32 (as a device reports them), computed in place: float32 ``logits`` are
    overwritten. The largest logit is taken at the argmax and the sum is a product with ones (numpy's max and sum
    over a short last axis cost several times more)."""
    flat = logits.reshape(-1, logits.shape[-1]).astype(np.float32, copy=False)
    np.subtract(flat, flat[np.arange(len(flat)), flat.argmax(-1)][:, None], out=flat)
    np.exp(flat, out=flat)
    flat /= (flat @ np.ones(flat.shape[-1], np.float32))[:, None]
    return flat.reshape(logits.shape)


def mmse_ml(constellation: np.ndarray, noise_var: float, channel_var: float, pilots, labels, payload) -> np.ndarray:
    """Class probabilities [..., N, M] of ``payload`` [..., N, 2] from ``pilots`` [..., P, 2] of classes ``labels`` [..., P]."""
    return Classical(np.asarray(constellation, np.complex128), noise_var, channel_var).probabilities(pilots, labels, payload)


def receiver_of(task: Task) -> Classical | None:
    """The task's classical receiver, or None if it has none."""
    fallback = task.fallback
    if fallback is None:
        return None
    return Classical(np.asarray(fallback.constellation, np.complex128), fallback.noise_var, fallback.channel_var)
