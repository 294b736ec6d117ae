"""Export a Born-machine run to a bundle for the ``qiskit`` target (docs/bundle-format.md §13).

The bundle holds the unbound circuit as QPY (version pinned for older device Qiskits), θ
and the per-angle step sizes, the network and feature specification, the shot and step
budget, and self-test vectors computed exactly by the host simulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metaedge.backends.qiskit.circuit import PARAMETER_NAME, QPY_VERSION, build_circuit, dump_qpy
from metaedge.backends.qiskit.model import ensemble_log_probs, pilot_log_likelihood
from metaedge.deploy import tensors
from metaedge.deploy.bundle import Bundle, write_bundle
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.born.learning import InnerConfig, adapt
from metaedge.sdk.families.demod.born.simulator import BornSimulator
from metaedge.sdk.families.demod.born.training import BornRun, load_born_run
from metaedge.sdk.families.demod.task import DemodTasks, task_section
from metaedge.sdk.targets import Release

SELFTEST_SAMPLES, SELFTEST_ATOL = 64, 1e-6


def selftest_vectors(run: BornRun, inner: InnerConfig) -> dict[str, np.ndarray]:
    """Exact prior probabilities, adapted angles and ensemble log-probabilities for one test frame."""
    tasks = DemodTasks(run.task, seed=0)
    frame = tasks.frames(tasks.devices("test", 1), run.task.pilots, SELFTEST_SAMPLES, tasks.rng("test", 99))
    sim = BornSimulator(run.spec)
    theta = torch.from_numpy(run.theta)[None]
    loglik = torch.from_numpy(pilot_log_likelihood(run.spec, frame.x_tr[0], frame.y_tr[0]))[None]
    phi = adapt(sim, theta, loglik, inner, lr=torch.as_tensor(run.lr, dtype=torch.float64))
    adapted = sim.probabilities(phi)[0].detach().numpy()
    return {
        "prior.probabilities": sim.probabilities(theta)[0].detach().numpy(),
        "adapt.pilot_samples": frame.x_tr[0],
        "adapt.pilot_labels": frame.y_tr[0].astype(np.int64),
        "adapt.phi": phi[0].detach().numpy(),
        "predict.samples": frame.x_va[0],
        "predict.log_probs": ensemble_log_probs(run.spec, frame.x_va[0], adapted),
    }


def export(run_dir: Path, out: Path, release: Release, key=None, inner_steps: int | None = None, shots: int | None = None) -> Bundle:
    """Write the bundle of a Born-machine run; ``inner_steps``/``shots`` override the trained adaptation budget."""
    for flag, value in (("--inner-steps", inner_steps), ("--shots", shots)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value} must be at least 1")
    run = load_born_run(run_dir)
    changes = {**({"steps": inner_steps} if inner_steps else {}), **({"shots": shots} if shots else {})}
    inner = InnerConfig(**{**run.inner.to_dict(), **changes})
    return write_born_bundle(run, inner, out, f"born-{run.train.method}", release, key=key)


def write_born_bundle(run: BornRun, inner: InnerConfig, out: str | Path, name: str, release: Release, key=None) -> Bundle:
    """The bundle of θ and step sizes ``run.theta``/``run.lr`` with adaptation budget ``inner``."""
    spec = run.spec
    manifest = {
        "target": "qiskit",
        **release.fields(),
        "task": task_section(run.task),
        "born": {
            **spec.to_dict(),
            "parameters": spec.parameters,
            "outcome_order": "little-endian",
            "weights": "w_i = 2*b_i - 1, b_i the measured bit of qubit i",
            "feature_directions": "alpha_i = pi*i/qubits",
            "classes": "2*[I > 0] + [Q > 0]",
        },
        "algorithm": {
            "name": name,
            "inner_steps": inner.steps,
            "kl_weight": inner.kl_weight,
            "shots": inner.shots,
            "predict_shots": inner.predict_shots,
            "prior_shots": inner.prior_shots,
            "gradient": "parameter-shift",
            "kl_estimate": "pairwise-logistic-density-ratio",
        },
        "parameters": [
            {"name": "theta", "shape": [spec.parameters], "dtype": "float64", "adapts": True},
            {"name": "lr", "shape": [spec.parameters], "dtype": "float64", "adapts": False},
        ],
        "circuit": {"qpy_version": QPY_VERSION, "parameter_vector": PARAMETER_NAME, "qubits": spec.qubits, "measured_register": "meas"},
        "selftest": {"atol": SELFTEST_ATOL, "samples": SELFTEST_SAMPLES, "pilots": run.task.pilots},
        "source": {"run": str(run.path) if run.path else None, "method": name, "seed": run.train.seed if run.train else None},
    }
    artifacts = {
        "theta": ("theta.safetensors", tensors.dumps({"theta": run.theta, "lr": np.broadcast_to(run.lr, run.theta.shape).copy()})),
        "circuit": ("circuit.qpy", dump_qpy(build_circuit(spec))),
        "selftest": ("selftest.safetensors", tensors.dumps(selftest_vectors(run, inner))),
    }
    return write_bundle(out, manifest, artifacts, key=key)
