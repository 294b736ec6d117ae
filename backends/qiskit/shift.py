"""The parameter-shift rule and the free-energy gradient a device computes from measured frequencies (numpy).

Every parameter k of the ansatz drives one RY(ϕ_k) = exp(−iϕ_k Y/2), so for any f that does
not depend on ϕ, ∂_k E_{q(·|ϕ)}[f] = ½(E at ϕ + π/2·e_k − E at ϕ − π/2·e_k). One adaptation
step evaluates the 2P + 1 settings of ``shift_settings`` in a single PUB.
"""

from __future__ import annotations

import numpy as np


def shift_settings(phi: np.ndarray) -> np.ndarray:
    """[2P + 1, P] angle settings: row 0 is ϕ, rows 1 + 2k and 2 + 2k are ϕ ± π/2·e_k."""
    p = phi.shape[0]
    settings = np.repeat(phi[None, :], 2 * p + 1, axis=0)
    k = np.arange(p)
    settings[1 + 2 * k, k] += np.pi / 2
    settings[2 + 2 * k, k] -= np.pi / 2
    return settings


def shift_gradient(distributions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """∂_k E_q[f] [P] from the distributions of the 2P + 1 settings [2P + 1, 2^n] and f on every outcome [2^n]."""
    expectations = distributions @ values
    return 0.5 * (expectations[1::2] - expectations[2::2])
