"""Which receiver decides a frame: the adapted learned one or the bundle's classical one (bundle-format.md §6.2).

Two checks, in order, on one frame (or a batch of frames: leading axes are frames):

- the **guard**: an adaptation that leaves the pilots' mean loss non-finite or more than ``GUARD_NATS``
  above its value at θ diverged, and the classical receiver decides the frame;
- the **frame residual** (bundles whose fallback has ``select``): each receiver's decisions on the first
  ``samples`` payload samples, with the pilots' known classes, split those samples into classes; the residual of
  that split is the mean squared distance of every sample to the mean of its class. A device's received
  samples of one class form one Gaussian cluster of the channel noise's spread, whatever the channel gain
  and the transmitter's impairments, so the split with the smaller residual has the higher classification
  likelihood under equal spherical clusters (Scott and Symons, Biometrics 27, 1971). The classical
  receiver decides the frame when its residual is below the learned one's by more than the margin
  (relative); ties keep the learned receiver.

The host's evaluation (``metaedge eval --select``) and every device backend call ``choose``, so both score
the same rule. A linear predictor's selection (§15.5) lives with its fit, in ``backends.linear.predictor``; its
defaults live here with the classifiers'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaedge.deploy.manifest import Holdout, Selection

GUARD_NATS = 0.5  # an adaptation may not raise the mean pilot loss by more than this (nats)
# what exporters write in task.fallback.select: the margin chosen on validation devices, and enough payload samples
# for the residual (docs/results/shift.md)
SELECT = Selection(margin=0.05, samples=256)
HOLDOUT = Holdout(margin=0.3, windows=4)  # a linear predictor's (bundle-format.md §15.5), chosen on validation frames (docs/results/tasks.md)


@dataclass(frozen=True)
class Choice:
    """The decision per frame (arrays over the leading frame axes; 0-d for one frame)."""

    classical: np.ndarray  # bool: the classical receiver decides the frame
    diverged: np.ndarray  # bool: the guard found the adaptation diverged
    residual_learned: np.ndarray | None  # the frame residual of each receiver's split (None without selection)
    residual_classical: np.ndarray | None

    def reason(self, loss_before: float, loss_after: float) -> str | None:
        """One frame's reason for not using the adapted learned receiver (None when it decides the frame)."""
        if self.diverged:
            return f"adaptation diverged (pilot loss {loss_before:.3g} → {loss_after:.3g})"
        if self.classical:
            return f"frame residual {float(self.residual_classical):.4g} (classical) < {float(self.residual_learned):.4g} (learned)"
        return None


def mean_loss(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean −log p of ``labels`` [..., P] under class log-probabilities [..., P, M] (NaN or ∞ when they are)."""
    flat = log_probs.reshape(-1, log_probs.shape[-1])
    picked = flat[np.arange(len(flat)), labels.reshape(-1)].reshape(labels.shape)
    with np.errstate(all="ignore"):
        return -np.add.reduce(picked, -1) / labels.shape[-1]


def diverged(loss_before: np.ndarray, loss_after: np.ndarray) -> np.ndarray:
    """The guard: the pilots' mean loss after adaptation is not finite or rose by more than ``GUARD_NATS``."""
    return ~np.isfinite(loss_after) | (loss_after > loss_before + GUARD_NATS)


def frame_residuals(pilots: np.ndarray, labels: np.ndarray, payload: np.ndarray, decisions: list[np.ndarray], classes: int) -> list[np.ndarray]:
    """For each set of payload ``decisions`` ([..., N]), the mean squared distance of the frame's samples to their
    class means, the pilots' classes taken from ``labels`` ([..., P]); samples [..., n, F]. Float64; one value per
    frame. Computed as (Σ‖z‖² − Σ_c ‖S_c‖²/n_c)/K with S_c the sum of class c's n_c samples: the same sum, without
    gathering a mean per sample, and one ``bincount`` per feature for every set and frame at once."""
    samples = np.concatenate([pilots, payload], axis=-2).astype(np.float64)
    lead, count, features = samples.shape[:-2], samples.shape[-2], samples.shape[-1]
    samples = samples.reshape(-1, count, features)
    sets, frames, pilot_count = len(decisions), len(samples), labels.shape[-1]
    index = np.empty((sets, frames, count), np.int64)  # one bin per (set, frame, class)
    index[:, :, :pilot_count] = labels.reshape(frames, pilot_count)
    for k, chosen in enumerate(decisions):
        index[k, :, pilot_count:] = chosen.reshape(frames, count - pilot_count)
    index += (np.arange(sets * frames) * classes).reshape(sets, frames, 1)
    index = index.ravel()
    bins = sets * frames * classes
    members = np.maximum(np.bincount(index, minlength=bins), 1)
    # one bincount for every feature: bin (set, frame, class) × F + feature
    sums = np.bincount((index[:, None] * features + np.arange(features)).ravel(), weights=np.tile(samples.ravel(), sets), minlength=bins * features)
    between = (sums**2).reshape(bins, features) @ np.ones(features) / members
    residual = ((samples**2).sum((-1, -2)) - between.reshape(sets, frames, classes).sum(-1)) / count
    return list(np.maximum(residual, 0.0).reshape(sets, *lead))


def choose(
    loss_before: np.ndarray,
    loss_after: np.ndarray,
    learned: np.ndarray,
    classical: np.ndarray | None,
    pilots: np.ndarray,
    labels: np.ndarray,
    payload: np.ndarray,
    select: Selection | None,
) -> Choice:
    """The receiver of each frame from the pilots' losses at θ and adapted, and each receiver's class scores
    (probabilities or logits: only their argmax counts) of the payload ``learned``/``classical`` [..., N, M]; the
    residuals count the first ``select.samples`` payload samples. Without a
    classical receiver the learned one always decides (a diverged frame is reported, never decided with θ);
    ``select`` None: the guard alone."""
    flagged = np.asarray(diverged(np.asarray(loss_before), np.asarray(loss_after)))
    if classical is None:
        return Choice(np.zeros_like(flagged), flagged, None, None)
    if select is None:
        return Choice(flagged, flagged, None, None)
    head = select.samples
    learned, payload = learned[..., :head, :], payload[..., :head, :]
    decisions, fallback = learned.argmax(-1), classical[..., :head, :].argmax(-1)
    if not np.isfinite(learned).all():  # a non-finite score decides nothing: class 0
        decisions = np.where(np.isfinite(learned).all(-1), decisions, 0)
    r_learned, r_classical = frame_residuals(pilots, labels, payload, [decisions, fallback], learned.shape[-1])
    picked = flagged | (r_classical < (1.0 - select.margin) * r_learned)
    return Choice(picked, flagged, r_learned, r_classical)
