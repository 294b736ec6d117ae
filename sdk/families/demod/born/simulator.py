"""Exact, batched statevector simulation of the Born-machine ansatz in torch (differentiable).

The ansatz has only RY and CX gates, so amplitudes stay real and the Born probabilities are
their squares. Tasks are the batch axis: [B, parameters] angles give [B, 2^n] probabilities
in the little-endian outcome order of ``metaedge.backends.qiskit.model``. A test checks it
against Qiskit's ``Statevector`` on the exported circuit.
"""

from __future__ import annotations

import torch

from metaedge.backends.qiskit.model import BornSpec, gates


def _cx_permutation(qubits: int, control: int, target: int) -> torch.Tensor:
    k = torch.arange(2**qubits)
    return torch.where(((k >> control) & 1).bool(), k ^ (1 << target), k)


class BornSimulator:
    """Probabilities q(w | angles) of the spec's circuit, for a batch of angle vectors."""

    def __init__(self, spec: BornSpec) -> None:
        self.spec = spec
        self.gates = gates(spec)
        self.permutations = {(c, t): _cx_permutation(spec.qubits, c, t) for kind, c, t in self.gates if kind == "cx"}

    def probabilities(self, angles: torch.Tensor) -> torch.Tensor:
        n = self.spec.qubits
        batch = angles.shape[0]
        state = torch.zeros(batch, 2**n, dtype=angles.dtype)
        state[:, 0] = 1.0
        for kind, a, b in self.gates:
            if kind == "cx":
                state = state[:, self.permutations[(a, b)]]
                continue
            half = angles[:, b] / 2
            c, s = torch.cos(half)[:, None, None], torch.sin(half)[:, None, None]
            view = state.reshape(batch, 2 ** (n - a - 1), 2, 2**a)
            zero, one = view[:, :, 0, :], view[:, :, 1, :]
            state = torch.stack([c * zero - s * one, s * zero + c * one], dim=2).reshape(batch, -1)
        return state**2
