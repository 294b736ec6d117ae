"""The ONNX backend as a device runs it: bad bundles refused, frames independent, Python 3.10 / numpy < 2 too."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from metaedge.backends.base import BackendError
from metaedge.backends.onnx import OnnxBackend
from metaedge.deploy.bundle import MANIFEST, manifest_bytes, read_bundle, sha256

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_path(trained_bundle):
    return trained_bundle[1]


def test_frames_start_from_theta_every_time(bundle_path):
    backend = OnnxBackend()
    backend.load(read_bundle(bundle_path))
    rng = np.random.default_rng(0)
    x, pilots, labels = rng.normal(size=(50, 2)), rng.normal(size=(4, 2)), rng.integers(0, 16, 4)
    backend.adapt(pilots, labels)
    first = backend.predict(x)
    backend.adapt(rng.normal(size=(4, 2)), labels)  # a different frame moves it elsewhere
    backend.reset()
    backend.adapt(pilots, labels)
    np.testing.assert_array_equal(backend.predict(x), first)
    np.testing.assert_allclose(first.sum(-1), 1.0, rtol=1e-5)


def test_wrong_target_and_mismatched_graph_io_are_refused(bundle_path, tmp_path):
    class OtherTarget(OnnxBackend):
        target = "loihi"

    with pytest.raises(BackendError, match="bundle target is 'onnx'"):
        OtherTarget().load(read_bundle(bundle_path))
    broken = tmp_path / "b"
    shutil.copytree(bundle_path, broken)
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["graphs"]["forward"]["inputs"][-1]["name"] = "received"
    (broken / MANIFEST).write_bytes(manifest_bytes(manifest))
    with pytest.raises(BackendError, match="graph 'forward' has inputs"):
        OnnxBackend().load(read_bundle(broken))


def test_a_graph_that_onnxruntime_cannot_load_is_refused(bundle_path, tmp_path):
    broken = tmp_path / "b"
    shutil.copytree(bundle_path, broken)
    junk = b"\x08\x07not an onnx model at all"
    (broken / "forward.onnx").write_bytes(junk)
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["artifacts"]["forward"].update(size=len(junk), sha256=sha256(junk))
    (broken / MANIFEST).write_bytes(manifest_bytes(manifest))
    with pytest.raises(BackendError, match="cannot be loaded by ONNX Runtime"):
        OnnxBackend().load(read_bundle(broken))


def test_selftest_fails_when_the_vectors_disagree(bundle_path, tmp_path):
    from metaedge.deploy import tensors

    broken = tmp_path / "b"
    shutil.copytree(bundle_path, broken)
    vectors, _ = tensors.load(broken / "selftest.safetensors")
    vectors["adapt.log_probs"] = vectors["adapt.log_probs"] + 0.01
    blob = tensors.dumps(vectors)
    (broken / "selftest.safetensors").write_bytes(blob)
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["artifacts"]["selftest"].update(size=len(blob), sha256=sha256(blob))
    (broken / MANIFEST).write_bytes(manifest_bytes(manifest))
    backend = OnnxBackend()
    backend.load(read_bundle(broken))
    report = backend.selftest()
    assert not report.passed and report.max_error >= 0.01


def test_bundle_runs_in_the_lava_environment(bundle_path):
    """Python 3.10, numpy < 2, no torch, that environment's onnxruntime: the self-test still passes."""
    lava = os.environ.get("METAEDGE_LAVA_PYTHON") or str(ROOT / ".venv-lava" / "bin" / "python")
    script = ("import sys, numpy; from metaedge.deploy.bundle import read_bundle; from metaedge.backends.onnx import OnnxBackend; "
              "b = OnnxBackend(); b.load(read_bundle(sys.argv[1])); r = b.selftest(); "
              "print(sys.version_info[:2], numpy.__version__, r.passed, r.max_error); sys.exit(0 if r.passed else 1)")
    result = subprocess.run([lava, "-c", script, str(bundle_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("(3, 10) 1.")
