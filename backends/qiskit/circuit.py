"""The Born machine as a Qiskit circuit, and its QPY form in a bundle."""

from __future__ import annotations

import io
import uuid

import numpy as np
from qiskit import QuantumCircuit, qpy
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import Statevector

from metaedge.backends.qiskit.model import BornSpec, gates

# QPY version 13 is read by every Qiskit from 1.1 on (readers load older versions, not newer),
# so a device with the oldest Qiskit the 'quantum' extra allows (1.3) reads what 2.x writes.
QPY_VERSION = 13
PARAMETER_NAME = "theta"


# The parameter vector's identity, fixed so that exporting the same run twice writes the same QPY bytes (a random
# one is drawn per vector otherwise). Qiskit before 2.4 takes no uuid: its circuits' bytes differ between exports.
PARAMETER_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "metaedge:born-machine:theta")


def build_circuit(spec: BornSpec, measure: bool = True) -> QuantumCircuit:
    """The ansatz of ``model.gates`` with parameters theta[0..P−1]; measured into register 'meas'."""
    try:
        theta = ParameterVector(PARAMETER_NAME, spec.parameters, uuid=PARAMETER_UUID)
    except TypeError:
        theta = ParameterVector(PARAMETER_NAME, spec.parameters)
    circuit = QuantumCircuit(spec.qubits, name="born_machine")
    for kind, a, b in gates(spec):
        if kind == "ry":
            circuit.ry(theta[b], a)
        else:
            circuit.cx(a, b)
    if measure:
        circuit.measure_all()
    return circuit


def dump_qpy(circuit: QuantumCircuit) -> bytes:
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer, version=QPY_VERSION)
    return buffer.getvalue()


def load_qpy(data: bytes) -> QuantumCircuit:
    circuits = qpy.load(io.BytesIO(data))
    if len(circuits) != 1 or not isinstance(circuits[0], QuantumCircuit):
        raise ValueError(f"expected one circuit, found {len(circuits)}")
    return circuits[0]


def exact_distribution(circuit: QuantumCircuit, angles: np.ndarray) -> np.ndarray:
    """Born probabilities [2^n] of the unmeasured circuit at ``angles`` (little-endian outcome order)."""
    bound = circuit.remove_final_measurements(inplace=False).assign_parameters(angles)
    return Statevector(bound).probabilities()
