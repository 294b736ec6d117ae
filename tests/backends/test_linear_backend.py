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
from metaedge.deploy.manifest import MANIFEST_FILE
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
