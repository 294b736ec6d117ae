"""A loihi device in-process on the reference engine: a signed bundle whose network is malformed is
refused at its trial boot, the running image keeps serving, and frames answer bad input clearly."""

import json

import numpy as np
import pytest
from test_device import deploy, upload

from metaedge.deploy import tensors
from metaedge.deploy.bundle import pack, read_bundle, write_bundle
from metaedge.deploy.signing import load_private
from metaedge.firmware_sim.device import Device, DeviceError
from metaedge.firmware_sim.profile import PROFILES

PROFILE = PROFILES["edge-small"]


def variant(bundle, out, key, snn=None, weights=None, counter=2):
    """A re-signed copy of ``bundle`` with members of its ``snn`` section or tensors of its θ artifact replaced."""
    manifest = json.loads(bundle.manifest_raw)
    for k in ("format", "version", "artifacts"):
        manifest.pop(k)
    manifest["security_counter"] = counter
    if snn is not None:
        manifest["snn"] = {**manifest["snn"], **snn}
    stored = {**tensors.loads(bundle.artifacts["theta"])[0], **(weights or {})}
    artifacts = {"theta": ("theta.safetensors", tensors.dumps(stored)), "selftest": ("selftest.safetensors", bundle.artifacts["selftest"])}
    return pack(write_bundle(out, manifest, artifacts, key=key))


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"snn": {"grid": 1}}, "grid"),
        ({"weights": {"theta": np.zeros((4, 3))}}, "theta shape"),
        ({"weights": {"theta": np.full((4, 64), np.nan)}}, "NaN θ"),
        ({"weights": {"learning_rates": np.full(4, 0.5)}}, "self-test mismatch"),
        ({"weights": {"learning_rates": np.array([0.1, -0.1, 0.1, 0.1])}}, "negative learning rate"),
        ({"weights": {"hidden_bias": np.zeros(63)}}, "hidden biases of another shape"),
        ({"snn": {"hidden": 0}}, "H < 1"),
        ({"snn": {"pilot_phase": "yes"}}, "pilot_phase not a boolean"),
        # bundle-format §14.7's other rules
        ({"snn": {"bogus": 1}}, "unknown member"),
        ({"snn": {"steps": 0}}, "K < 1"),
        ({"snn": {"gap": 0}}, "G too small"),
        ({"snn": {"hidden_du": 1.5}}, "decay outside [0, 1]"),
        ({"snn": {"field_width": 0.0}}, "width ≤ 0"),
        ({"snn": {"field_range": -1.0}}, "range ≤ 0"),
        ({"snn": {"trace_tau": 0.0}}, "τ ≤ 0"),
        ({"weights": {"input_weights": np.full((64, 16), np.nan)}}, "NaN input weights"),
    ],
)
def test_malformed_loihi_bundle_fails_its_trial_and_the_device_keeps_serving(tmp_path, snn_bundle, signing_keys, trusted, change, reason):
    bundle = read_bundle(snn_bundle[1])
    device = Device(tmp_path / "dev", "loihi", PROFILE, trusted_keys=trusted, backend_options={"engine": "reference"})
    deploy(device, pack(bundle))
    good = device.frame({"pilots": np.ones((4, 2), np.float32), "payload": np.ones((10, 2), np.float32)})
    bad = variant(bundle, tmp_path / "bad", load_private(signing_keys[0]), **change)
    if reason in ("theta shape", "hidden biases of another shape"):  # tensor checks that need no runtime: refused at upload
        with pytest.raises(DeviceError, match="θ lacks parameter (theta|hidden_bias) as float64 of shape"):
            upload(device, bad)
    else:
        device.test(upload(device, bad)["sha256"])
        booted = device.reset()
        assert booted["slot"] == 0 and booted["mode"] == "confirmed", (reason, booted)
        said = " ".join(booted["events"])
        expected = {
            "self-test mismatch": "self-test",
            "NaN θ": "finite 'theta'",
            "NaN input weights": "input_weights",
            "negative learning rate": "negative learning rate",
        }.get(reason, "snn")
        assert expected in said, (reason, said)
    again = device.frame({"pilots": np.ones((4, 2), np.float32), "payload": np.ones((10, 2), np.float32)})
    assert np.array_equal(again[1]["decisions"], good[1]["decisions"])
    with pytest.raises(DeviceError, match="pilot labels must lie in"):
        device.frame({"pilots": np.ones((4, 2), np.float32), "payload": np.ones((3, 2), np.float32), "labels": np.array([0, 1, 2, 9])})
