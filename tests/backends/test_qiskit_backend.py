"""The Born-machine backend with the real Qiskit and Aer: bit order, exactness, gradients, QPY, bad input."""

import numpy as np
import pytest
import torch

from metaedge.backends.base import BackendError
from metaedge.backends.qiskit.backend import QiskitBackend, adapt_angles
from metaedge.backends.qiskit.circuit import QPY_VERSION, build_circuit, dump_qpy, exact_distribution, load_qpy
from metaedge.backends.qiskit.model import BornSpec, pilot_log_likelihood, uniform_prior, weight_table
from metaedge.backends.qiskit.ratio import log_density_ratio, pairwise_features
from metaedge.backends.qiskit.shift import shift_gradient, shift_settings
from metaedge.backends.qiskit.targets import Executor, parse_target
from metaedge.deploy.bundle import read_bundle
from metaedge.sdk.families.demod.born.learning import InnerConfig, adapt
from metaedge.sdk.families.demod.born.simulator import BornSimulator
from metaedge.sdk.families.demod.born.training import default_task


def test_qubit_i_is_weight_i_little_endian_on_exact_and_sampled_targets():
    spec = BornSpec(qubits=3, layers=0)
    angles = np.array([np.pi, 0.0, 0.0])  # flip qubit 0 only
    circuit = build_circuit(spec)
    exact = exact_distribution(circuit, angles)
    sampled = Executor(circuit, "ideal", seed=1).distributions(angles[None], 100)[0]
    assert exact.argmax() == 1 and sampled[1] == 1.0  # outcome index 1 = bit 0 set
    assert weight_table(3)[1].tolist() == [1.0, -1.0, -1.0]  # weight 0 = +1, the others −1


def test_torch_simulator_matches_qiskit_statevector():
    spec = BornSpec(qubits=4, layers=3)
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, size=(3, spec.parameters))
    ours = BornSimulator(spec).probabilities(torch.from_numpy(angles)).numpy()
    circuit = build_circuit(spec)
    theirs = np.stack([exact_distribution(circuit, a) for a in angles])
    assert np.abs(ours - theirs).max() < 1e-12


def test_uniform_prior_is_uniform():
    spec = BornSpec(qubits=5, layers=2)
    assert np.allclose(exact_distribution(build_circuit(spec), uniform_prior(spec)), 1 / 32, atol=1e-12)


def test_parameter_shift_gradient_matches_finite_differences_of_exact_probabilities():
    spec = BornSpec(qubits=4, layers=2)
    rng = np.random.default_rng(1)
    phi, f = rng.uniform(-2, 2, spec.parameters), rng.normal(size=spec.outcomes)
    executor = Executor(build_circuit(spec), "exact")
    shifted = shift_gradient(executor.distributions(shift_settings(phi), 1), f)
    h = 1e-5
    fd = np.array(
        [
            (exact_distribution(executor.circuit, phi + h * e) - exact_distribution(executor.circuit, phi - h * e)) @ f / (2 * h)
            for e in np.eye(spec.parameters)
        ]
    )
    assert np.abs(shifted - fd).max() < 1e-7


def test_device_free_energy_step_equals_host_autograd_step():
    task = default_task()
    spec = BornSpec(qubits=4, layers=1, logit_scale=2.0)
    rng = np.random.default_rng(2)
    theta, lr = rng.uniform(-1, 1, spec.parameters), rng.uniform(0.01, 0.05, spec.parameters)
    x = rng.normal(size=(4, 2)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    inner = InnerConfig(steps=2)
    host = adapt(
        BornSimulator(spec), torch.from_numpy(theta)[None], torch.from_numpy(pilot_log_likelihood(spec, x, y))[None], inner, lr=torch.from_numpy(lr)
    )[0].numpy()
    executor = Executor(build_circuit(spec), "exact")
    prior = executor.distributions(theta[None], 1)[0]
    device = adapt_angles(executor, spec, theta, lr, prior, 1, x, y, inner.steps, inner.kl_weight, 1, pairwise_features(4))
    assert task.order == 4 and np.abs(host - device).max() < 1e-9


def test_density_ratio_recovers_the_log_ratio_of_product_distributions():
    rng = np.random.default_rng(3)
    n = 4
    table = (weight_table(n) + 1) / 2  # bits

    def product(p):  # independent bits with P(b_i = 1) = p_i
        return np.prod(np.where(table == 1, p, 1 - p), axis=1)

    p, q = product(np.array([0.8, 0.3, 0.6, 0.5])), product(np.array([0.5, 0.5, 0.4, 0.7]))
    counts_p, counts_q = rng.multinomial(20000, p), rng.multinomial(20000, q)
    estimate = log_density_ratio(counts_p.astype(float), counts_q.astype(float), pairwise_features(n))
    assert np.abs(estimate - np.log(p / q)).max() < 0.15


def test_qpy_round_trip_and_pinned_version():
    spec = BornSpec(qubits=5, layers=2)
    circuit = build_circuit(spec)
    data = dump_qpy(circuit)
    assert data[:6] == b"QISKIT" and data[6] == QPY_VERSION
    loaded = load_qpy(data)
    angles = np.random.default_rng(4).uniform(-3, 3, spec.parameters)
    assert np.abs(exact_distribution(loaded, angles) - exact_distribution(circuit, angles)).max() < 1e-12


@pytest.mark.parametrize("text", ["", "noisy:", "ibm", "ideal:x", "quantum"])
def test_unknown_target_strings_are_refused_with_the_choices(text):
    if text == "noisy:":
        assert parse_target(text) == ("noisy", "FakeManilaV2")
        return
    with pytest.raises(BackendError, match="ideal, noisy:FakeManilaV2"):
        parse_target(text)


def test_fake_device_names_and_sizes_are_checked(born_bundle):
    bundle = read_bundle(born_bundle)
    with pytest.raises(BackendError, match="not a fake IBM device"):
        QiskitBackend("noisy:FakeNowhere").load(bundle)
    with pytest.raises(BackendError, match="FakeArmonkV2 has 1 qubits; this circuit needs 5"):  # a circuit wider than the backend (§13.6)
        QiskitBackend("noisy:FakeArmonkV2").load(bundle)


def test_ibm_target_without_an_account_fails_with_a_clear_message(born_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved account
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "")
    with pytest.raises(BackendError, match="save an account first"):
        QiskitBackend("ibm:ibm_brisbane").load(read_bundle(born_bundle))


def test_ideal_backend_passes_its_selftest_and_adapts(born_bundle):
    backend = QiskitBackend("ideal", seed=0)
    resources = backend.load(read_bundle(born_bundle))
    report = backend.selftest()
    assert report.passed and report.max_error < 1e-9
    from metaedge.sdk.families.demod.born.evaluation import test_frames

    frames = test_frames(default_task(), 5, seed=0)
    errors = []
    for d in range(5):
        backend.reset()
        backend.adapt(frames.x_tr[d], frames.y_tr[d])
        probs = backend.predict(frames.x_va[d])
        assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
        errors.append((probs.argmax(-1) != frames.y_va[d]).mean())
    assert np.mean(errors) < 0.2  # QPSK; a random guess errs 75 % of the time
    assert resources.costs["circuits_per_step"] == 2 * backend.spec.parameters + 1


def test_corrupt_circuit_or_theta_is_refused(born_bundle, tmp_path):
    import shutil

    from metaedge.deploy import tensors
    from metaedge.deploy.bundle import write_bundle

    bundle = read_bundle(born_bundle)
    files = {role: (e["path"], bundle.artifacts[role]) for role, e in bundle.manifest.raw["artifacts"].items()}
    manifest = {k: v for k, v in bundle.manifest.raw.items() if k not in ("artifacts", "format", "version")}
    bad_qpy = write_bundle(tmp_path / "qpy", manifest, {**files, "circuit": ("circuit.qpy", b"QISKIT\x0dgarbage")})
    with pytest.raises(BackendError, match="not a readable QPY circuit"):
        QiskitBackend("ideal").load(bad_qpy)
    theta = {"theta": np.full(3, np.nan), "lr": np.zeros(3)}
    bad_theta = write_bundle(tmp_path / "theta", manifest, {**files, "theta": ("theta.safetensors", tensors.dumps(theta))})
    with pytest.raises(BackendError, match="finite 'theta'"):
        QiskitBackend("ideal").load(bad_theta)
    shutil.rmtree(tmp_path / "qpy")


def test_the_selftest_fails_when_the_adapted_angles_disagree(born_bundle, tmp_path):
    """bundle-format §13.5: the device reproduces adapt.phi (with exact probabilities) within selftest.atol."""
    from metaedge.deploy import tensors
    from metaedge.deploy.bundle import write_bundle

    bundle = read_bundle(born_bundle)
    files = {role: (e["path"], bundle.artifacts[role]) for role, e in bundle.manifest.raw["artifacts"].items()}
    manifest = {k: v for k, v in bundle.manifest.raw.items() if k not in ("artifacts", "format", "version")}
    vectors, _ = tensors.loads(bundle.artifacts["selftest"])
    vectors["adapt.phi"] = vectors["adapt.phi"] + 1e-3
    shifted = write_bundle(tmp_path / "b", manifest, {**files, "selftest": ("selftest.safetensors", tensors.dumps(vectors))})
    backend = QiskitBackend("ideal")
    backend.load(shifted)
    report = backend.selftest()
    assert not report.passed and report.max_error == pytest.approx(1e-3, rel=1e-3)


def test_the_selftest_samples_its_own_backend_once(born_bundle, monkeypatch):
    """bundle-format §13.5 (SHOULD): besides the exact replay, one draw on the device's own backend must come back
    as a distribution; a backend whose samples do not sum to one fails the self-test."""
    from metaedge.backends.qiskit.targets import Executor

    backend = QiskitBackend("ideal")
    backend.load(read_bundle(born_bundle))
    assert backend.selftest().passed
    exact = Executor.distributions
    monkeypatch.setattr(Executor, "distributions", lambda self, settings, shots: exact(self, settings, shots) * (1 if self.exact else 0.5))
    assert not backend.selftest().passed
