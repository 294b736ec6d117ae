"""Density-ratio estimate of log q(w|ϕ) / q(w|θ) from measured samples only (numpy).

On hardware a Born machine gives samples, not probabilities, so the KL term of the free
energy needs an estimate. We use the classic density-ratio trick: a logistic classifier
that tells samples of q(·|ϕ) from samples of q(·|θ) has logit log(q_ϕ/q_θ) + log(N_ϕ/N_θ).
Its features are the spins s = 2b − 1 and their pairwise products (1 + n + n(n−1)/2 of
them), L2-regularised, fitted by Newton's method on the outcome histogram.

Why this and not MMD: the classifier estimates the KL of eq. 2.32 itself, the quantity the
host meta-trained with, so device and host optimise the same objective; MMD would swap in
a different divergence. Why pairwise features: a tabular (one-hot) classifier is the
unregularised frequency ratio, which is undefined for outcomes one sample set never hit —
most outcomes at 12 qubits — while first- and second-order spin statistics are what a few
hundred shots estimate well. The ansatz's entanglers couple neighbours, so low-order terms
carry most of the ratio; where they do not, the estimate is the closest pairwise
exponential-family ratio (a bias, stated in the bundle specification).
"""

from __future__ import annotations

import numpy as np

from metaedge.backends.qiskit.model import weight_table

NEWTON_STEPS = 25
L2 = 1.0


def pairwise_features(qubits: int) -> np.ndarray:
    """[2^n, 1 + n + n(n−1)/2]: bias, spins, products of spin pairs, for every outcome."""
    s = weight_table(qubits)
    i, j = np.triu_indices(qubits, k=1)
    return np.concatenate([np.ones((len(s), 1)), s, s[:, i] * s[:, j]], axis=1)


def log_density_ratio(counts_p: np.ndarray, counts_q: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Estimate log p(w)/q(w) for every outcome [2^n] from shot counts of p and of q [2^n]."""
    n_p, n_q = counts_p.sum(), counts_q.sum()
    beta = np.zeros(features.shape[1])
    penalty = np.full(features.shape[1], L2)
    penalty[0] = 0.0
    total = counts_p + counts_q
    for _ in range(NEWTON_STEPS):
        prob = 1.0 / (1.0 + np.exp(-(features @ beta)))
        gradient = features.T @ (total * prob - counts_p) + penalty * beta
        hessian = (features * (total * prob * (1.0 - prob))[:, None]).T @ features + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return features @ beta - np.log(n_p / n_q)
