"""The Loihi backend on Lava's Loihi 2 simulation, in the Lava environment (checks in lava_checks.py)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import lava_python

CHECKS = Path(__file__).with_name("lava_checks.py")
pytestmark = pytest.mark.lava


def run_check(name: str, bundle: Path, timeout: float = 240) -> dict:
    result = subprocess.run([lava_python(), str(CHECKS), name, str(bundle)], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_host_reference_and_lava_agree_on_spikes_and_adapted_weights(snn_bundle):
    r = run_check("parity", snn_bundle[1])
    assert r["rates_differ"] and r["biases"]  # the bundle's learned hidden layer and per-neuron rates are in play
    assert r["weight_change"] > 1e-3  # the rule did change the weights on the pilots…
    assert r["weight_error"] <= 1e-5  # …exactly as the host reference predicts
    assert r["spikes"] > 0 and r["spike_mismatches"] == 0
    assert r["learning_off_change"] == 0.0  # the payload, teacher off, leaves the weights alone


def test_selftest_passes_on_lava_catches_a_wrong_expectation_and_hardware_is_guarded(snn_bundle):
    r = run_check("selftest", snn_bundle[1])
    assert r["passed"] and r["max_error"] <= 1e-5
    assert not r["tampered_passed"] and r["tampered_error"] > 1e-5
    assert "needs Intel's lava-loihi package" in r["hardware"]  # no real Loihi 2 here: a clear refusal


def test_a_failing_lava_process_is_torn_down_without_leftovers_and_the_backend_recovers(snn_bundle):
    r = run_check("failure", snn_bundle[1])
    assert r["healthy"]
    assert r["error"] and "did not answer within 10 s" in r["error"]
    assert r["children_after_fault"] == 0 and r["shm_leaked_after_fault"] == []
    assert r["recovered"]
    assert r["children_at_end"] == 0 and r["shm_leaked_at_end"] == []


def test_fixed_point_tracks_floating_point_within_the_stated_tolerance(snn_bundle):
    """Stated tolerance: self-test decisions agree on ≥ 90 %; the rule's weight updates on Lava's integer engine
    correlate ≥ 0.8 with the float reference's (same quantised θ, the fixed point's η) and match in size within ±40 %."""
    r = run_check("fixed", snn_bundle[1])
    assert r["selftest_passed"] and r["disagreement"] <= 0.1
    # each η_i as 16 · y_scale_i · m·2^e / 8 / 2^weight_exp: within 5 % where y_scale_i uses enough of its 7 bits
    eta, eta_fixed = np.array(r["eta"]), np.array(r["eta_fixed"])
    assert np.all(np.abs(eta_fixed - eta) <= 0.05 * eta + 0.5 * (eta_fixed.max() / 127)), r
    assert r["update_correlation"] >= 0.8 and 0.6 <= r["update_ratio"] <= 1.4, r
