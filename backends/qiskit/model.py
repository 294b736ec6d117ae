"""The Born-machine binary neural network, in numpy: shared by the host trainer and the device.

A circuit of ``qubits`` qubits is measured; bitstring b ∈ {0,1}^n gives binary weights
w = 2b − 1, weight i from qubit i. Bitstrings are indexed little-endian, as Qiskit prints
them: outcome index k = Σ_i b_i 2^i, so qubit 0 is the rightmost character of Qiskit's
bitstring and the lowest bit of k.

The network demodulates QPSK whose constellation is rotated by an unknown per-device phase
and distorted by I/Q imbalance. Its features are projections of the received sample y on n
fixed directions α_i = π·i/n: f_i = Re(y·e^{−jα_i}) and g_i = Im(y·e^{−jα_i}). The weights
select a direction d = Σ w_i e^{jα_i}; the two logits κ·w·f = κ·Re(y·d̄) and κ·w·g =
κ·Im(y·d̄) are the in-phase and quadrature bit decisions after derotating y by d's angle.
With n = 5 the 32 weight vectors cover the circle in 11.25° steps. The class of
constellation point (I, Q) ∈ {±1}² (index 2·[I > 0] + [Q > 0], as ``qam_constellation(4)``)
has log p = log σ(s_I·l_I) + log σ(s_Q·l_Q), s = ±1 the sign of that rail.

The ansatz is hardware-efficient: ``layers`` + 1 layers of RY rotations, one per qubit,
with a chain of CX gates (q → q + 1) between successive layers — the linear coupling of
5-qubit IBM devices. Parameter k is the RY angle of qubit k mod n in layer k // n.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

CLASSES = 4  # QPSK
MAX_QUBITS = 12


@dataclass(frozen=True)
class BornSpec:
    """Everything a device needs to rebuild the network around the circuit."""

    qubits: int = 5
    layers: int = 2
    logit_scale: float = 1.0  # κ

    def __post_init__(self) -> None:
        if not 1 <= self.qubits <= MAX_QUBITS:
            raise ValueError(f"qubits {self.qubits} must lie in 1..{MAX_QUBITS} (one qubit per binary weight)")
        if self.layers < 0:
            raise ValueError(f"layers {self.layers} must be ≥ 0")
        if not (math.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise ValueError(f"logit_scale {self.logit_scale} must be a positive number")

    @property
    def parameters(self) -> int:
        return self.qubits * (self.layers + 1)

    @property
    def outcomes(self) -> int:
        return 2**self.qubits

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BornSpec":
        return cls(qubits=int(data["qubits"]), layers=int(data["layers"]), logit_scale=float(data["logit_scale"]))


def gates(spec: BornSpec) -> list[tuple]:
    """The ansatz as a gate list: ("ry", qubit, parameter index) and ("cx", control, target)."""
    out: list[tuple] = []
    for layer in range(spec.layers + 1):
        out += [("ry", q, layer * spec.qubits + q) for q in range(spec.qubits)]
        if layer < spec.layers:
            out += [("cx", q, q + 1) for q in range(spec.qubits - 1)]
    return out


def uniform_prior(spec: BornSpec) -> np.ndarray:
    """Angles whose Born machine is uniform over all weight vectors (RY(π/2) on |0⟩, then identities)."""
    theta = np.zeros(spec.parameters)
    theta[: spec.qubits] = np.pi / 2
    return theta


def weight_table(qubits: int) -> np.ndarray:
    """[2^n, n] float64: row k holds the weights w = 2b − 1 of outcome k (b_i = bit i of k)."""
    k = np.arange(2**qubits)[:, None]
    bits = (k >> np.arange(qubits)[None, :]) & 1
    return 2.0 * bits - 1.0


def outcome_index(bits: np.ndarray) -> np.ndarray:
    """Outcome indices k of bit arrays [..., n] (column i = qubit i)."""
    return (bits.astype(np.int64) << np.arange(bits.shape[-1])).sum(-1)


def features(samples: np.ndarray, qubits: int) -> tuple[np.ndarray, np.ndarray]:
    """In-phase and quadrature projections f, g [..., N, n] of received samples [..., N, 2] (I, Q)."""
    alpha = np.pi * np.arange(qubits) / qubits
    y = samples[..., 0].astype(np.float64) + 1j * samples[..., 1].astype(np.float64)
    rotated = y[..., None] * np.exp(-1j * alpha)
    return rotated.real, rotated.imag


def rail_signs() -> np.ndarray:
    """[4, 2] signs (s_I, s_Q) of each QPSK class: class 2·[I > 0] + [Q > 0]."""
    c = np.arange(CLASSES)
    return np.stack([2 * (c // 2) - 1, 2 * (c % 2) - 1], axis=1).astype(np.float64)


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def class_log_probs(spec: BornSpec, samples: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """log p(c | y, w) [..., W, N, 4] for weight vectors [W, n] and samples [..., N, 2]."""
    f, g = features(samples, spec.qubits)
    l_i = spec.logit_scale * np.einsum("wn,...kn->...wk", weights, f)
    l_q = spec.logit_scale * np.einsum("wn,...kn->...wk", weights, g)
    s = rail_signs()
    return log_sigmoid(s[:, 0] * l_i[..., None]) + log_sigmoid(s[:, 1] * l_q[..., None])


def label_log_probs(spec: BornSpec, samples: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p(c_j | y_j, w) of the given labels for every weight vector: [..., 2^n, N]."""
    table = class_log_probs(spec, samples, weight_table(spec.qubits))
    index = np.broadcast_to(labels[..., None, :, None], table.shape[:-1] + (1,))
    return np.take_along_axis(table, index, axis=-1)[..., 0]


def pilot_log_likelihood(spec: BornSpec, samples: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p(D | w) = Σ_j log p(c_j | y_j, w) for every weight vector: [..., 2^n]."""
    return label_log_probs(spec, samples, labels).sum(axis=-1)


def ensemble_log_probs(spec: BornSpec, samples: np.ndarray, distribution: np.ndarray) -> np.ndarray:
    """Predictive log p(c | y) = log Σ_w q(w) p(c | y, w) [N, 4]: the BNN averaged over weight samples.

    ``distribution`` [2^n] holds q (exact probabilities or shot frequencies); outcomes with
    q = 0 are skipped, so a few hundred shots cost a few dozen evaluations.
    """
    support = np.flatnonzero(distribution > 0)
    logs = class_log_probs(spec, samples, weight_table(spec.qubits)[support])
    weighted = logs + np.log(distribution[support] / distribution[support].sum())[:, None, None]
    return logsumexp(weighted, axis=0)


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log Σ exp(a) along ``axis``, without overflow."""
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def default_logit_scale(qubits: int, noise_var: float) -> float:
    """κ that makes κ·w·f the exact bit LLR 4r/N0 for the best-aligned weights (r: projection on a unit direction).

    The largest |Σ w_i e^{jα_i}| over weight vectors is 1/sin(π/2n); rail amplitude 1.
    """
    longest = 1.0 / math.sin(math.pi / (2 * qubits))
    return 4.0 / (noise_var * longest)
