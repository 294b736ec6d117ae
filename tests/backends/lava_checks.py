"""Checks that run inside the Lava environment (Python 3.10, lava-nc, no torch); each prints one JSON line.

    python lava_checks.py parity BUNDLE      host reference vs Lava floating_pt: spikes and adapted weights
    python lava_checks.py selftest BUNDLE    the backend's self-test, and the same with a wrong expectation
    python lava_checks.py failure BUNDLE     a Lava process that raises: the watchdog's teardown and recovery
    python lava_checks.py fixed BUNDLE       Lava's fixed_pt models against the floating-point reference

Called by tests/backends/test_loihi_lava.py (they cannot import this module: it needs Lava).
"""

import dataclasses
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from metaedge.backends.base import BackendError
from metaedge.backends.loihi.backend import LoihiBackend
from metaedge.backends.loihi.network import encode, stream_length, teacher
from metaedge.backends.loihi.reference import hidden_spikes, output_layer
from metaedge.deploy import tensors
from metaedge.deploy.bundle import read_bundle


def shm() -> set:
    return set(os.listdir("/dev/shm"))


def parity(bundle) -> dict:
    """Random θ (larger than trained ones, so every neuron is busy), random frame: Lava against the reference, with
    the bundle's learned hidden layer and per-neuron learning rates."""
    from metaedge.backends.loihi.network import SnnParameters

    backend = LoihiBackend(engine="lava")
    backend.load(bundle)
    spec, rng = backend.spec, np.random.default_rng(7)
    theta = rng.normal(scale=0.6, size=backend.theta.shape)
    # biases that matter (briefly trained ones are tiny): some hidden neurons fire on the bias alone
    learned = backend.params
    backend.params = SnnParameters(learned.input_weights, rng.normal(scale=0.4, size=spec.hidden), learned.learning_rates)
    backend.close()
    backend.receiver = backend._build()
    pilots, labels = rng.normal(size=(10, 2)).astype(np.float32), rng.integers(0, spec.classes, 10)
    payload = rng.normal(size=(30, 2)).astype(np.float32)
    try:
        backend.theta = theta
        backend.reset()
        start = time.perf_counter()
        backend.adapt(pilots, labels)
        lava_weights = backend.weights()
        lava_spikes = backend.output_spikes(payload)
        seconds = time.perf_counter() - start
        steps = stream_length(spec, 10) + stream_length(spec, 30)
        off = backend.weights()
    finally:
        backend.close()
    n = stream_length(spec, 10)
    params = backend.params
    adapted = output_layer(spec, theta, hidden_spikes(spec, params, encode(spec, pilots, n)), teacher(spec, labels, n), params.learning_rates)
    n = stream_length(spec, 30)
    decoded = output_layer(spec, adapted.weights, hidden_spikes(spec, params, encode(spec, payload, n)), None)
    return {
        "weight_error": float(np.abs(lava_weights - adapted.weights).max()),
        "weight_change": float(np.abs(adapted.weights - theta).max()),
        "spike_mismatches": int(np.abs(lava_spikes - decoded.spikes).sum()),
        "spikes": int(decoded.spikes.sum()),
        "learning_off_change": float(np.abs(off - lava_weights).max()),
        "steps_per_s": steps / seconds,
        "rates_differ": bool(np.ptp(params.learning_rates) > 0),
        "biases": bool(np.abs(learned.hidden_bias).max() > 0),
    }


def selftest(bundle) -> dict:
    backend = LoihiBackend(engine="lava")
    backend.load(bundle)
    try:
        good = backend.selftest()
        vectors = tensors.loads(bundle.artifacts["selftest"])[0]
        vectors["adapt.weights"] = vectors["adapt.weights"] + 1e-3
        backend.bundle = dataclasses.replace(bundle, artifacts={**bundle.artifacts, "selftest": tensors.dumps(vectors)})
        bad = backend.selftest()
    finally:
        backend.close()
    try:
        LoihiBackend(engine="loihi2").load(bundle)
        hardware = "loaded"
    except BackendError as e:
        hardware = str(e)
    return {"passed": good.passed, "max_error": good.max_error, "tampered_passed": bad.passed, "tampered_error": bad.max_error, "hardware": hardware}


def failure(bundle) -> dict:
    """An exception inside a Lava process hangs Lava's runtime: the watchdog must tear it down cleanly."""
    from metaedge.backends.loihi.processes import error_lif

    before = shm()
    backend = LoihiBackend(engine="lava", timeout_s=10.0)
    backend.load(bundle)
    healthy = backend.selftest().passed
    original = error_lif.PyErrorLIFModelFloat.run_spk
    # the network's processes are already forked: the fault goes into the next network built
    backend.close()

    def broken(self):
        raise RuntimeError("injected fault")

    error_lif.PyErrorLIFModelFloat.run_spk = broken
    start = time.perf_counter()
    error = None
    try:
        backend.load(bundle)
    except BackendError as e:
        error = str(e)
    elapsed = time.perf_counter() - start
    children_after_fault = len(multiprocessing.active_children())
    leaked_after_fault = sorted(shm() - before)
    error_lif.PyErrorLIFModelFloat.run_spk = original
    backend.load(bundle)  # a fresh runtime serves again
    recovered = backend.selftest().passed
    backend.close()
    return {
        "healthy": healthy,
        "error": error,
        "seconds": elapsed,
        "children_after_fault": children_after_fault,
        "shm_leaked_after_fault": leaked_after_fault,
        "recovered": recovered,
        "children_at_end": len(multiprocessing.active_children()),
        "shm_leaked_at_end": sorted(shm() - before),
    }


def fixed(bundle) -> dict:
    """Fixed point: the self-test's decision agreement, and the adapted weights against the float reference run
    with the same quantised θ and the fixed point's η."""
    from metaedge.backends.loihi.network import SnnParameters, fixed_point

    backend = LoihiBackend(engine="lava", fixed_point=True)
    backend.load(bundle)
    spec, rng = backend.spec, np.random.default_rng(3)
    pilots, labels = rng.normal(size=(8, 2)).astype(np.float32), rng.integers(0, spec.classes, 8)
    try:
        report = backend.selftest()
        params = backend.params
        fp = fixed_point(spec, backend.theta, params)
        backend.reset()
        backend.adapt(pilots, labels)
        lava_weights = backend.weights()
    finally:
        backend.close()
    start = fp.weights(fp.quantise(backend.theta))
    n = stream_length(spec, 8)
    # the float reference with the integers' hidden layer and rates
    quantised = SnnParameters(fp.input_weights(params) / 2.0**fp.hidden_exp, params.hidden_bias, fp.learning_rates)
    ref = output_layer(spec, start, hidden_spikes(spec, quantised, encode(spec, pilots, n)), teacher(spec, labels, n), fp.learning_rates).weights
    d_lava, d_ref = (lava_weights - start).ravel(), (ref - start).ravel()
    return {
        "selftest_passed": report.passed,
        "disagreement": report.max_error,
        "eta": params.learning_rates.tolist(),
        "eta_fixed": fp.learning_rates.tolist(),
        "weight_exp": fp.weight_exp,
        "update_correlation": float(np.corrcoef(d_lava, d_ref)[0, 1]),
        "update_ratio": float(np.abs(d_lava).sum() / np.abs(d_ref).sum()),
        "max_weight_error": float(np.abs(lava_weights - ref).max()),
    }


if __name__ == "__main__":
    check, path = sys.argv[1], sys.argv[2]
    print(json.dumps({"parity": parity, "selftest": selftest, "failure": failure, "fixed": fixed}[check](read_bundle(path))))
