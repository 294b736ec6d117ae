"""Born-machine receivers adapted on a (simulated) IBM Quantum device, with Qiskit and numpy.

Per frame, from ϕ = θ: ``inner_steps`` steps ϕ ← ϕ − lr ⊙ ∇F, each one PUB of the 2P + 1
parameter-shift settings, ``shots`` each. ∇F is the parameter-shift gradient of
E_q[ℓ] with ℓ(w) = −log p(pilots | w) + λ·log(q(w|ϕ)/q(w|θ)) (see ``sdk/quantum/learning``):
the log-ratio comes from the density-ratio classifier on the unshifted setting's samples
and ``prior_shots`` samples of q(·|θ) drawn once at load. The payload is decided by the
ensemble of ``predict_shots`` weight samples of the adapted circuit. On the ``exact`` target
every distribution and the log-ratio are exact (the self-test uses that).
"""

from __future__ import annotations

import time

import numpy as np

from metaedge.backends.base import AdaptReport, BackendError, Receiver, Resources, SelftestReport
from metaedge.backends.qiskit.circuit import load_qpy
from metaedge.backends.qiskit.model import BornSpec, ensemble_log_probs, pilot_log_likelihood
from metaedge.backends.qiskit.ratio import log_density_ratio, pairwise_features
from metaedge.backends.qiskit.shift import shift_gradient, shift_settings
from metaedge.backends.qiskit.targets import Executor, parse_target
from metaedge.deploy import manifest as m
from metaedge.deploy.bundle import Bundle

SMOKE_SHOTS = 64


class QiskitBackend(Receiver):
    target = "qiskit"

    def __init__(self, backend: str = "ideal", seed: int = 0) -> None:
        parse_target(backend)
        self.backend_name, self.seed = backend, seed
        self.bundle: Bundle | None = None

    @classmethod
    def configure(cls, threads: int, options: dict) -> "QiskitBackend":
        return cls(backend=options.get("backend", "ideal"), seed=int(options.get("seed", 0)))

    # -- loading -----------------------------------------------------------------------------
    def load(self, bundle: Bundle) -> Resources:
        if bundle.target != self.target:
            raise BackendError(f"bundle target is '{bundle.target}', this device runs '{self.target}'")
        try:
            algorithm = bundle.manifest.algorithm.raw
            self.spec = BornSpec.from_dict(bundle.manifest.section("born"))
            self.steps, self.kl_weight = int(algorithm["inner_steps"]), float(algorithm["kl_weight"])
            self.shots, self.predict_shots = int(algorithm["shots"]), int(algorithm["predict_shots"])
            self.prior_shots = int(algorithm["prior_shots"])
        except (KeyError, TypeError, ValueError) as e:
            raise BackendError(f"manifest 'born'/'algorithm' section is invalid: {e}") from None
        if min(self.shots, self.predict_shots, self.prior_shots) < 1 or self.steps < 0:
            raise BackendError("shots must be ≥ 1 and inner_steps ≥ 0")
        try:
            self.circuit = load_qpy(bundle.artifacts[m.CIRCUIT])
        except Exception as e:  # QPY raises several error types for foreign or corrupt data
            raise BackendError(f"artifact 'circuit' is not a readable QPY circuit: {e}") from None
        if self.circuit.num_qubits != self.spec.qubits or self.circuit.num_parameters != self.spec.parameters:
            raise BackendError(
                f"circuit has {self.circuit.num_qubits} qubits and {self.circuit.num_parameters} parameters; "
                f"the manifest says {self.spec.qubits} and {self.spec.parameters}"
            )
        theta = bundle.tensors(m.THETA)
        for name in ("theta", "lr"):
            if name not in theta or theta[name].shape != (self.spec.parameters,) or not np.isfinite(theta[name]).all():
                raise BackendError(f"θ artifact lacks a finite '{name}' of shape ({self.spec.parameters},)")
        self.theta, self.lr = theta["theta"].astype(np.float64), theta["lr"].astype(np.float64)
        self.bundle = bundle
        self.fall_back_to(bundle.manifest.task)
        self.features = pairwise_features(self.spec.qubits)
        self.executor = self._executor(self.backend_name)
        self.prior = self.executor.distributions(self.theta[None], self.prior_shots)[0]
        self.prior_ensemble = self.executor.distributions(self.theta[None], self.predict_shots)[0]
        self.reset()
        return Resources(
            parameter_bytes=2 * 8 * self.spec.parameters, artifact_bytes=bundle.size(), parameters=2 * self.spec.parameters, costs=self._costs()
        )

    def _executor(self, target: str) -> Executor:
        try:
            return Executor(self.circuit, target, seed=self.seed)
        except BackendError:
            raise
        except Exception as e:  # transpiler and simulator errors for circuits this target cannot run
            raise BackendError(f"the '{target}' target cannot run this circuit: {e}") from None

    # -- per frame ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.phi = self.theta.copy()
        self.ensemble = self.prior_ensemble

    def adapt(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray) -> AdaptReport:
        start = time.perf_counter()
        self.phi = adapt_angles(
            self.executor,
            self.spec,
            self.theta,
            self.lr,
            self.prior,
            self.prior_shots,
            pilot_samples,
            pilot_labels,
            self.steps,
            self.kl_weight,
            self.shots,
            self.features,
        )
        self.ensemble = self.executor.distributions(self.phi[None], self.predict_shots)[0]
        return AdaptReport(steps=self.steps, seconds=time.perf_counter() - start)

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        return ensemble_log_probs(self.spec, samples, self.ensemble).astype(np.float32)

    def predict(self, samples: np.ndarray) -> np.ndarray:
        return np.exp(self.log_probs(samples))

    def close(self) -> None:
        """Nothing outlives this backend's objects."""

    def _costs(self) -> dict:
        """Per step and per frame: circuits and shots; and the transpiled circuit's depth and two-qubit gates."""
        settings = 2 * self.spec.parameters + 1
        return {
            **self.executor.costs(),
            "circuits_per_step": settings,
            "shots_per_step": settings * self.shots,
            "circuits_per_frame": self.steps * settings + 1,
            "shots_per_frame": self.steps * settings * self.shots + self.predict_shots,
        }

    # -- self-test ----------------------------------------------------------------------------
    def selftest(self) -> SelftestReport:
        """Replay the host's exact computation on the exact target, then sample once on this target."""
        vectors = self.bundle.tensors(m.SELFTEST)
        atol = self.bundle.manifest.selftest.atol
        try:
            exact = self._executor("exact")
            prior = exact.distributions(self.theta[None], 1)[0]
            phi = adapt_angles(
                exact,
                self.spec,
                self.theta,
                self.lr,
                prior,
                1,
                vectors["adapt.pilot_samples"],
                vectors["adapt.pilot_labels"].astype(np.int64),
                self.steps,
                self.kl_weight,
                1,
                self.features,
            )
            adapted = exact.distributions(phi[None], 1)[0]
            log_probs = ensemble_log_probs(self.spec, vectors["predict.samples"], adapted)
            errors = [
                np.abs(prior - vectors["prior.probabilities"]).max(),
                np.abs(phi - vectors["adapt.phi"]).max(),
                np.abs(log_probs - vectors["predict.log_probs"]).max(),
            ]
            smoke = self.executor.distributions(self.theta[None], SMOKE_SHOTS)[0]
        except (KeyError, ValueError) as e:
            raise BackendError(f"self-test vectors are unusable: {e}") from None
        worst = float(max(errors))
        passed = bool(np.isfinite(worst) and worst <= atol and abs(smoke.sum() - 1.0) < 1e-9)
        return SelftestReport(passed=passed, max_error=worst, tolerance=atol, checks=len(errors) + 1)


def adapt_angles(
    executor: Executor,
    spec: BornSpec,
    theta: np.ndarray,
    lr: np.ndarray,
    prior: np.ndarray,
    prior_shots: int,
    pilot_samples: np.ndarray,
    pilot_labels: np.ndarray,
    steps: int,
    kl_weight: float,
    shots: int,
    features: np.ndarray,
) -> np.ndarray:
    """ϕ after ``steps`` parameter-shift steps on the free energy, from θ; ``prior``: q(·|θ) (frequencies of ``prior_shots``)."""
    nll = -pilot_log_likelihood(spec, pilot_samples, pilot_labels)
    phi = theta.copy()
    for _ in range(steps):
        distributions = executor.distributions(shift_settings(phi), shots)
        if executor.exact:
            ratio = np.log(np.maximum(distributions[0], 1e-30)) - np.log(np.maximum(prior, 1e-30))
        else:
            ratio = log_density_ratio(distributions[0] * shots, prior * prior_shots, features)
        phi = phi - lr * shift_gradient(distributions, nll + kl_weight * ratio)
    return phi
