"""The ``linear`` target (channel prediction, bundle-format.md §15): export, the device-side backend, refusals,
and the same predictions under Python 3.10 / numpy < 2 (the Lava environment, no torch)."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from metaedge.backends.base import BackendError
from metaedge.backends.linear import predictor as pr
from metaedge.backends.linear.backend import LinearBackend, to_complex
from metaedge.deploy.bundle import manifest_bytes, read_bundle
from metaedge.deploy.manifest import MANIFEST_FILE, Holdout
from metaedge.sdk.cli.main import main
from metaedge.sdk.families.prediction.run import prediction_frames


@pytest.fixture(scope="module")
def prediction_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    assert main(["train", "prediction", "--out", str(root / "run"), "--frames", "60", "--samples", "4"]) == 0
    assert main(["export", str(root / "run"), "--target", "linear", "--out", str(root / "bundle")]) == 0
    return root / "run", root / "bundle"


def test_the_device_fits_and_predicts_exactly_as_the_host(prediction_bundle):
    run, path = prediction_bundle
    bundle = read_bundle(path)
    backend = LinearBackend()
    backend.load(bundle)
    assert backend.selftest().passed
    task, p = bundle.manifest.raw["task"], bundle.manifest.raw["predictor"]
    pilots, history, _ = prediction_frames(task, 3, 4, 10, seed=1)
    from metaedge.deploy.tensors import load

    theta = load(run / "theta.safetensors")[0]
    bias = theta["bias.re"] + 1j * theta["bias.im"]
    window = pr.Window(p["window"], p["lag"])
    for frame in range(3):
        backend.reset()
        backend.adapt(pilots[frame])
        got = to_complex(backend.predict(history[frame]))
        fitted = pr.fit(p["form"], window, p["lam"], to_complex(pilots[frame]), 4, bias, p["rank"])
        np.testing.assert_allclose(got, pr.predict(p["form"], window, *fitted, to_complex(history[frame])), atol=1e-5)
        assert got.shape == (10, 16)


def test_bad_predictor_bundles_and_frames_are_refused(prediction_bundle, tmp_path):
    _, path = prediction_bundle
    copy = tmp_path / "b"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["predictor"]["rank"] = 99
    (copy / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
    with pytest.raises(BackendError, match="rank must be 'aic' or an integer in \\[1, 16\\]"):
        LinearBackend().load(read_bundle(copy))
    backend = LinearBackend()
    backend.load(read_bundle(path))
    with pytest.raises(BackendError, match="needs at least 8 pilot channels"):
        backend.adapt(np.zeros((7, 32), np.float32))
    with pytest.raises(BackendError, match="adapt on the frame's pilots first"):
        backend.predict(np.zeros((6, 32), np.float32))


def test_a_prediction_run_needs_the_linear_target(prediction_bundle, tmp_path, capsys):
    run, _ = prediction_bundle
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "export it with --target linear" in capsys.readouterr().err


LAVA_SELFTEST = """
import sys
from metaedge.backends.linear.backend import LinearBackend
from metaedge.deploy.bundle import read_bundle
import numpy
backend = LinearBackend()
backend.load(read_bundle(sys.argv[1]))
report = backend.selftest()
print(numpy.__version__, report.passed, report.max_error)
"""


def test_the_predictor_runs_in_the_lava_environment(prediction_bundle):
    from conftest import lava_python

    result = subprocess.run([lava_python(), "-c", LAVA_SELFTEST, str(prediction_bundle[1])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    version, passed, _ = result.stdout.split()
    assert int(version.split(".")[0]) < 2 and passed == "True"


def test_the_device_runs_the_hold_out_selection_the_host_scores(prediction_bundle, tmp_path, rewritten):
    """With more pilot windows than the bundle holds out, the device compares the learned and the conventional fit on
    the last windows (bundle-format.md §15.5): the host's ``holdout_choice`` says which it uses, frame by frame; a bias
    far from any channel (θ × 1000) loses to the conventional fit, which then predicts."""
    from metaedge.backends.base import Frame
    from metaedge.deploy import tensors

    _, path = prediction_bundle
    bundle = read_bundle(path)
    holdout = bundle.manifest.task.fallback.select
    assert bundle.manifest.task.fallback.kind == "conventional" and holdout.windows == 4
    task, p = bundle.manifest.raw["task"], bundle.manifest.raw["predictor"]
    window = pr.Window(p["window"], p["lag"])
    samples = 12
    pilots, history, _ = prediction_frames(task, 4, samples, 10, seed=2)

    theta = bundle.tensors("theta")
    wrecked = rewritten(path, tmp_path, files={"theta": tensors.dumps({k: v * 1000.0 for k, v in theta.items()})})
    for candidate, expect_conventional in ((bundle, None), (wrecked, True)):
        backend = LinearBackend()
        backend.load(candidate)
        for frame in range(4):
            channels = to_complex(pilots[frame])
            conventional, _, _ = pr.holdout_choice(p["form"], window, p["lam"], channels, samples, backend.bias, p["rank"], holdout)
            result = backend.frame(Frame(pilots[frame], None, history[frame]))
            assert result.receiver == ("classical" if conventional else "learned")
            assert (result.fallback is not None) == bool(conventional)
            if expect_conventional:
                assert conventional and "hold-out error" in result.fallback
                fitted = pr.fit(p["form"], window, p["lam"], channels, samples, None, p["rank"])
                np.testing.assert_allclose(to_complex(result.outputs), pr.predict(p["form"], window, *fitted, to_complex(history[frame])), atol=1e-5)


def test_holdout_errors_score_the_last_pilot_windows_only():
    """The hold-out fit never sees the windows it is scored on: changing a held-out target changes the score, not the fit."""
    rng = np.random.default_rng(0)
    window = pr.Window(3, 2)
    channels = rng.normal(size=(window.slots(10), 4)) + 1j * rng.normal(size=(window.slots(10), 4))
    base = pr.holdout_errors("naive", window, 1.0, channels, 10, [None], 1, 3)[0]
    changed = channels.copy()
    changed[-1] += 5.0  # the last pilot: a held-out target only
    assert pr.holdout_errors("naive", window, 1.0, changed, 10, [None], 1, 3)[0] > base
    conventional, learned, other = pr.holdout_choice("naive", window, 1.0, channels, 3, np.zeros((12, 4)), 1, Holdout(0.1, 3))
    assert not conventional and learned is None and other is None  # no more windows than the hold-out: the learned fit stays


@pytest.mark.parametrize(
    "select, fragment",
    [
        ({"rule": "frame-residual", "margin": 0.3, "windows": 4}, "rule is 'holdout' \\(for a fallback of kind conventional\\)"),
        ({"rule": "holdout", "margin": 0.3, "windows": 0}, "select.windows must be an integer in \\[1,"),
        ({"rule": "holdout", "margin": -0.1, "windows": 4}, "select.margin must be a number in \\[0, 1\\)"),
    ],
)
def test_a_bad_hold_out_selection_is_refused(prediction_bundle, tmp_path, rewritten, select, fragment):
    from metaedge.deploy.bundle import BundleError

    with pytest.raises(BundleError, match=fragment):
        rewritten(prediction_bundle[1], tmp_path, lambda m: m["task"]["fallback"].update(select=select))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m["predictor"].pop("lam"), "predictor' section is invalid"),
        (lambda m: m["predictor"].update(lag=0), "window and lag ≥ 1"),
        (lambda m: m["predictor"].update(lam=-1.0), "lam > 0"),
    ],
)
def test_the_linear_sections_other_rules(prediction_bundle, tmp_path, rewritten, change, fragment):
    """bundle-format §15.4: a predictor member missing, a lag below 1, a non-positive ridge."""
    with pytest.raises(BackendError, match=fragment):
        LinearBackend().load(rewritten(prediction_bundle[1], tmp_path, change))


def test_bias_must_be_finite_of_its_shape_and_payloads_hold_a_window(prediction_bundle, tmp_path, rewritten):
    """bundle-format §15.4: θ's bias.re and bias.im finite and of shape [S]; device-protocol §3.3: a payload
    shorter than one window is refused."""
    from metaedge.deploy import tensors

    theta, _ = tensors.load(prediction_bundle[1] / "theta.safetensors")
    for k, bad in enumerate(({**theta, "bias.re": np.full_like(theta["bias.re"], np.nan)}, {"bias.re": theta["bias.re"]})):
        with pytest.raises(BackendError, match="finite 'bias.re' and 'bias.im'"):
            LinearBackend().load(rewritten(prediction_bundle[1], tmp_path / str(k), files={"theta": tensors.dumps(bad)}))
    backend = LinearBackend()
    backend.load(read_bundle(prediction_bundle[1]))
    window = backend.window.length
    backend.adapt(np.random.default_rng(0).normal(size=(4 * window, 32)).astype(np.float32))
    with pytest.raises(BackendError, match=f"at least {window} channels"):
        backend.predict(np.zeros((window - 1, 32), np.float32))


def test_a_predictor_device_bounds_its_frames_by_the_profile(prediction_bundle, tmp_path):
    """device-protocol §3.3, §5: a predictor's pilots (and payload) count 1 to max_pilots channels."""
    import hashlib

    from metaedge.deploy.bundle import pack
    from metaedge.firmware_sim.device import Device, DeviceError
    from metaedge.firmware_sim.profile import PROFILES

    profile = PROFILES["edge-small"]
    device = Device(tmp_path / "device", "linear", profile, allow_unsigned=True)
    image = pack(read_bundle(prediction_bundle[1]))
    device.upload(0, len(image), hashlib.sha256(image).hexdigest(), image)
    device.test(hashlib.sha256(image).hexdigest())
    assert device.reset()["mode"] == "trial"
    rng = np.random.default_rng(0)
    over = rng.normal(size=(profile.max_pilots + 1, 32)).astype(np.float32)
    with pytest.raises(DeviceError, match=f"takes 1 to {profile.max_pilots}"):
        device.frame({"pilots": over, "payload": over[:10]})
    with pytest.raises(DeviceError, match=f"takes 1 to {profile.max_pilots}"):
        device.frame({"pilots": over[:64], "payload": over})
