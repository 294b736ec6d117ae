"""The per-frame choice between the adapted learned receiver and the classical one (bundle-format.md §6.2): the
frame residual, the margin, the guard; numpy alone."""

import numpy as np
import pytest

from metaedge.backends.selection import GUARD_NATS, choose, frame_residuals, mean_loss
from metaedge.deploy.manifest import Selection

POINTS = np.array([-3, -1, 1, 3], np.float64)  # four classes on a line, unit spacing 2


def frame_residual(pilots, labels, payload, decisions, classes):
    return frame_residuals(pilots, labels, payload, [decisions], classes)[0]


def _frame(rng, n: int, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Samples [n, 2] of classes drawn uniformly: class c sits at (POINTS[c], 0) plus Gaussian noise."""
    labels = rng.integers(0, 4, n)
    samples = np.stack([POINTS[labels], np.zeros(n)], -1) + noise * rng.standard_normal((n, 2))
    return samples.astype(np.float32), labels


def _onehot(decisions: np.ndarray) -> np.ndarray:
    return np.eye(4)[decisions]


def test_the_true_split_of_a_frame_has_a_smaller_residual_than_a_split_with_a_displaced_boundary():
    rng = np.random.default_rng(0)
    pilots, labels = _frame(rng, 4)
    payload, truth = _frame(rng, 400)
    displaced = np.digitize(payload[:, 0], [-1.4, 0.6, 2.6])  # boundaries moved by 0.6 from the ML ones (-2, 0, 2)
    assert (displaced != truth).mean() > 0.05
    assert frame_residual(pilots, labels, payload, truth, 4) < 0.8 * frame_residual(pilots, labels, payload, displaced, 4)


def test_the_residual_is_the_mean_squared_distance_to_the_class_means_and_batches_over_frames():
    rng = np.random.default_rng(1)
    frames = [(*_frame(rng, 3), *_frame(rng, 50)) for _ in range(4)]
    batched = frame_residual(*(np.stack([f[i] for f in frames]) for i in range(4)), 4)
    for (pilots, labels, payload, decisions), value in zip(frames, batched):
        z, k = np.concatenate([pilots, payload]).astype(np.float64), np.concatenate([labels, decisions])
        means = {c: z[k == c].mean(0) for c in set(k.tolist())}
        expected = np.mean([np.sum((z[i] - means[k[i]]) ** 2) for i in range(len(z))])
        assert value == pytest.approx(expected, rel=1e-12)
        assert frame_residual(pilots, labels, payload, decisions, 4) == pytest.approx(value, rel=1e-12)


def test_the_classical_receiver_decides_only_when_its_residual_is_below_the_learned_ones_by_the_margin():
    rng = np.random.default_rng(2)
    pilots, labels = _frame(rng, 4)
    payload, truth = _frame(rng, 400)
    wrong = np.digitize(payload[:, 0], [-1.4, 0.6, 2.6])
    r_true = frame_residual(pilots, labels, payload, truth, 4)
    r_wrong = frame_residual(pilots, labels, payload, wrong, 4)
    ok = np.zeros(())
    picked = choose(ok, ok, _onehot(wrong), _onehot(truth), pilots, labels, payload, Selection(0.05, 1000))
    assert picked.classical and not picked.diverged
    assert (picked.residual_learned, picked.residual_classical) == (r_wrong, r_true)
    just_above = 1 - r_true / r_wrong + 1e-9  # the margin at which the classical receiver's residual no longer suffices
    assert not choose(ok, ok, _onehot(wrong), _onehot(truth), pilots, labels, payload, Selection(just_above, 1000)).classical
    tie = choose(ok, ok, _onehot(truth), _onehot(truth), pilots, labels, payload, Selection(0.0, 1000))
    assert not tie.classical and tie.reason(0.0, 0.0) is None
    assert "frame residual" in picked.reason(0.0, 0.0)


def test_the_guard_hands_a_diverged_frame_to_the_classical_receiver_and_never_to_theta():
    rng = np.random.default_rng(3)
    pilots, labels = _frame(rng, 4)
    payload, truth = _frame(rng, 100)
    learned, classical = _onehot(truth), _onehot(truth)  # equal decisions: only the guard can pick the classical one
    before = np.asarray(1.0)
    for after in (np.asarray(1.0 + GUARD_NATS + 1e-6), np.asarray(np.nan), np.asarray(np.inf)):
        for select in (None, Selection(0.05, 1000)):
            choice = choose(before, after, learned, classical, pilots, labels, payload, select)
            assert choice.classical and choice.diverged and choice.reason(1.0, float(after)).startswith("adaptation diverged")
        without = choose(
            before, after, learned, None, pilots, labels, payload, Selection(0.05, 1000)
        )  # no classical receiver: the learned one, flagged
        assert not without.classical and without.diverged
    assert not choose(before, np.asarray(1.0 + GUARD_NATS), learned, classical, pilots, labels, payload, None).classical


def test_non_finite_learned_probabilities_are_decided_by_the_classical_receiver():
    rng = np.random.default_rng(4)
    pilots, labels = _frame(rng, 4)
    payload, truth = _frame(rng, 100)
    learned = np.full((100, 4), np.nan)
    with np.errstate(invalid="ignore"):
        after = mean_loss(np.log(learned[:4]), labels)
    choice = choose(np.asarray(1.0), after, learned, _onehot(truth), pilots, labels, payload, Selection(0.05, 1000))
    assert choice.classical and choice.diverged


def test_mean_loss_batches_over_frames():
    log_probs = np.log(np.array([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.25, 0.75]]]))
    labels = np.array([[0, 0], [1, 1]])
    np.testing.assert_allclose(mean_loss(log_probs, labels), [-(np.log(0.5) + np.log(0.9)) / 2, -(np.log(0.8) + np.log(0.75)) / 2])
    assert mean_loss(log_probs[0], labels[0]) == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2)


def test_the_residuals_read_the_first_samples_only_and_a_non_finite_score_counts_as_class_0():
    """bundle-format §6.2: the frame residual counts the first min(N, S) payload samples; a sample whose learned
    scores are not all finite is class 0 in the learned split."""
    rng = np.random.default_rng(5)
    pilots, labels = _frame(rng, 4)
    payload, truth = _frame(rng, 300)
    ok, head = np.zeros(()), Selection(0.05, 100)
    first = choose(ok, ok, _onehot(truth), _onehot(truth), pilots, labels, payload, head)
    later = payload.copy()
    later[100:] = 50.0  # beyond the first 100 samples: the residuals cannot see it
    again = choose(ok, ok, _onehot(truth), _onehot(truth), pilots, labels, later, head)
    assert (again.residual_learned, again.residual_classical) == (first.residual_learned, first.residual_classical)
    scores = _onehot(truth).astype(np.float64)
    scores[:10] = np.nan
    zeroed = truth.copy()
    zeroed[:10] = 0
    choice = choose(ok, ok, scores, _onehot(truth), pilots, labels, payload, head)
    assert choice.residual_learned == frame_residual(pilots, labels, payload[:100], zeroed[:100], 4)
