"""Where a Born machine runs: exact statevector, ideal or noisy Aer sampling, or IBM Quantum.

Target strings: ``exact`` (probabilities, no shots: self-tests and host checks), ``ideal``
(Aer sampler, no noise), ``noisy:<FakeBackend>`` (Aer with the noise model, coupling map and
basis of a ``qiskit_ibm_runtime.fake_provider`` device; FakeManilaV2 by default), and
``ibm:<backend>`` (qiskit-ibm-runtime SamplerV2 in Batch mode; needs a saved IBM Quantum
account). The circuit is transpiled once to the target's ISA; each call binds a parameter
array and sends all settings as one PUB.
"""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit

from metaedge.backends.base import BackendError
from metaedge.backends.qiskit.circuit import exact_distribution
from metaedge.backends.qiskit.model import outcome_index

DEFAULT_NOISY = "FakeManilaV2"


def parse_target(text: str) -> tuple[str, str | None]:
    """'noisy:FakeManilaV2' → ('noisy', 'FakeManilaV2'); 'noisy' alone uses FakeManilaV2."""
    kind, _, name = text.partition(":")
    if kind in ("exact", "ideal") and not name:
        return kind, None
    if kind == "noisy":
        return kind, name or DEFAULT_NOISY
    if kind == "ibm" and name:
        return kind, name
    raise BackendError(
        f"quantum backend '{text}' is unknown; use exact, ideal, noisy:FakeManilaV2 (any "
        "qiskit_ibm_runtime.fake_provider device) or ibm:<backend name>"
    )


class Executor:
    """Distributions [S, 2^n] of a circuit at S parameter settings: exact, or shot frequencies."""

    def __init__(self, circuit: QuantumCircuit, target: str, seed: int = 0) -> None:
        self.kind, self.name = parse_target(target)
        self.target = target
        self.circuit = circuit
        self.qubits = circuit.num_qubits
        self.rng = np.random.default_rng(seed)
        self.isa = circuit
        self.sampler = None
        if self.kind == "ideal":
            from qiskit_aer.primitives import SamplerV2

            self.sampler = SamplerV2(options={"run_options": {}})
        elif self.kind == "noisy":
            self._noisy(seed)
        elif self.kind == "ibm":
            self._ibm()

    @property
    def exact(self) -> bool:
        return self.kind == "exact"

    def _noisy(self, seed: int) -> None:
        from qiskit_aer import AerSimulator
        from qiskit_aer.primitives import SamplerV2
        from qiskit_ibm_runtime import fake_provider

        factory = getattr(fake_provider, self.name, None)
        if not isinstance(factory, type) or not self.name.startswith("Fake"):
            raise BackendError(f"'{self.name}' is not a fake IBM device; see qiskit_ibm_runtime.fake_provider (e.g. {DEFAULT_NOISY}, FakeSherbrooke)")
        device = factory()
        if device.num_qubits < self.qubits:
            raise BackendError(f"{self.name} has {device.num_qubits} qubits; this circuit needs {self.qubits}")
        simulator = AerSimulator.from_backend(device)
        self.isa = _transpile(self.circuit, simulator)
        self.sampler = SamplerV2.from_backend(simulator, options={"run_options": {}})

    def _ibm(self) -> None:
        try:
            from qiskit_ibm_runtime import Batch, QiskitRuntimeService, SamplerV2

            service = QiskitRuntimeService()
            backend = service.backend(self.name)
        except Exception as e:  # the runtime raises several account and network error types
            raise BackendError(
                f"IBM Quantum backend '{self.name}' is not reachable ({type(e).__name__}: {e}); "
                "save an account first with QiskitRuntimeService.save_account(token=..., "
                "channel='ibm_quantum_platform')"
            ) from None
        if backend.num_qubits < self.qubits:
            raise BackendError(f"{self.name} has {backend.num_qubits} qubits; this circuit needs {self.qubits}")
        self.isa = _transpile(self.circuit, backend)
        self.sampler = SamplerV2(mode=Batch(backend=backend))

    def distributions(self, settings: np.ndarray, shots: int) -> np.ndarray:
        """[S, 2^n]: exact probabilities, or the frequencies of ``shots`` samples per setting."""
        if self.exact:
            return np.stack([exact_distribution(self.circuit, row) for row in settings])
        if self.kind != "ibm":
            # a fresh simulator seed per call, drawn from the executor's seeded stream: reproducible runs,
            # independent samples from call to call
            self.sampler.options.run_options["seed_simulator"] = int(self.rng.integers(2**31))
        result = self.sampler.run([(self.isa, settings, shots)]).result()[0]
        bits = result.data.meas.to_bool_array(order="little")  # [S, shots, n], column i = qubit i
        index = outcome_index(bits)
        counts = np.stack([np.bincount(row, minlength=2**self.qubits) for row in index.reshape(len(settings), -1)])
        return counts / shots

    def costs(self) -> dict:
        """Transpiled depth and gate counts of the circuit this target runs."""
        ops = self.isa.count_ops()
        two_qubit = sum(count for name, count in ops.items() if name in ("cx", "cz", "ecr", "rzz", "swap"))
        return {
            "target": self.target,
            "depth": self.isa.depth(),
            "two_qubit_gates": int(two_qubit),
            "gates": {k: int(v) for k, v in ops.items() if k not in ("measure", "barrier")},
        }


def _transpile(circuit: QuantumCircuit, backend) -> QuantumCircuit:
    from qiskit.transpiler import generate_preset_pass_manager

    return generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=0).run(circuit)
