"""The ONNX backend as a device runs it: bad bundles refused, frames independent, Python 3.10 / numpy < 2 too."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from metaedge.backends.base import BackendError, Frame
from metaedge.backends.onnx import OnnxBackend
from metaedge.deploy.bundle import read_bundle

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


def test_wrong_target_and_mismatched_graph_io_are_refused(bundle_path, tmp_path, rewritten):
    class OtherTarget(OnnxBackend):
        target = "loihi"

    with pytest.raises(BackendError, match="bundle target is 'onnx'"):
        OtherTarget().load(read_bundle(bundle_path))
    broken = rewritten(bundle_path, tmp_path, lambda m: m["graphs"]["forward"]["inputs"][-1].update(name="received"))
    with pytest.raises(BackendError, match="graph 'forward' has inputs"):
        OnnxBackend().load(broken)


def test_a_graph_that_onnxruntime_cannot_load_is_refused(bundle_path, tmp_path, rewritten):
    broken = rewritten(bundle_path, tmp_path, files={"forward": b"\x08\x07not an onnx model at all"})
    with pytest.raises(BackendError, match="cannot be loaded by ONNX Runtime"):
        OnnxBackend().load(broken)


@pytest.mark.parametrize("result", ["adapt.log_probs", "adapt.context"])  # bundle-format §8: log-probabilities and adapted parameters
def test_selftest_fails_when_the_vectors_disagree(bundle_path, tmp_path, rewritten, result):
    from metaedge.deploy import tensors

    vectors, _ = tensors.load(bundle_path / "selftest.safetensors")
    vectors[result] = vectors[result] + 0.01
    backend = OnnxBackend()
    backend.load(rewritten(bundle_path, tmp_path, files={"selftest": tensors.dumps(vectors)}))
    report = backend.selftest()
    assert not report.passed and report.max_error == pytest.approx(0.01, abs=1e-5)  # the shift, in float32


def test_bundle_runs_in_the_lava_environment(bundle_path):
    """Python 3.10, numpy < 2, no torch, that environment's onnxruntime: the self-test still passes."""
    lava = os.environ.get("METAEDGE_LAVA_PYTHON") or str(ROOT / ".venv-lava" / "bin" / "python")
    script = (
        "import sys, numpy; from metaedge.deploy.bundle import read_bundle; from metaedge.backends.onnx import OnnxBackend; "
        "b = OnnxBackend(); b.load(read_bundle(sys.argv[1])); r = b.selftest(); "
        "print(sys.version_info[:2], numpy.__version__, r.passed, r.max_error); sys.exit(0 if r.passed else 1)"
    )
    result = subprocess.run([lava, "-c", script, str(bundle_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("(3, 10) 1.")


def test_unknown_adaptation_mode_and_thread_count_are_refused():
    with pytest.raises(BackendError, match="adaptation mode 'gpu' is unknown"):
        OnnxBackend(mode="gpu")
    with pytest.raises(BackendError, match="threads must be at least 1"):
        OnnxBackend(threads=0)


def test_a_bundle_without_the_optional_loop_graph_falls_back_to_stepping(bundle_path, tmp_path, rewritten):
    def drop_loop(manifest):
        del manifest["artifacts"]["adapt_loop"], manifest["graphs"]["adapt_loop"]

    backend = OnnxBackend()
    backend.load(rewritten(bundle_path, tmp_path, drop_loop))
    assert backend.effective_mode == "iobinding" and backend.selftest().passed


def test_runtime_diagnostics_never_reach_stdout(bundle_path, tmp_path, capfd, rewritten):
    """A device serving over stdio uses stdout as the protocol stream. Some corrupt models make ONNX
    Runtime print an "EP Error" diagnostic; find one among seeded mutations and check where it went."""
    from metaedge.sdk.bench.fuzz import mutate

    forward = read_bundle(bundle_path).artifacts["forward"]
    for seed in range(400):
        graph = mutate(forward, np.random.default_rng(seed), [forward])
        try:
            OnnxBackend().load(rewritten(bundle_path, tmp_path / str(seed), files={"forward": graph}))
        except BackendError:
            pass
        captured = capfd.readouterr()
        assert captured.out == "", captured.out
        if "EP Error" in captured.err:
            return  # the diagnostic was printed, and on stderr
    pytest.fail("no mutation made ONNX Runtime print its diagnostic; the check did not run")


def test_a_one_step_bundle_runs_its_frame_in_one_call(trained_bundle, tmp_path):
    """One-step bundles carry the fused frame graph (spec §7.6): the same log-probabilities as stepping, and the
    backend stays at θ."""
    from metaedge.sdk.targets import export

    bundle = export("onnx", trained_bundle[0], tmp_path / "one", inner_steps=1)
    assert "frame" in bundle.artifacts and "adapt_loop" not in bundle.artifacts
    fused, stepping = OnnxBackend(), OnnxBackend(mode="step_loop")
    fused.load(bundle)
    stepping.load(bundle)
    assert fused.fused and not stepping.fused and fused.selftest().checks == stepping.selftest().checks + 1
    rng = np.random.default_rng(5)
    pilots, labels = rng.normal(0, 2, (8, 2)).astype(np.float32), rng.integers(0, 16, 8)
    samples = rng.normal(0, 2, (300, 2)).astype(np.float32)
    out = fused.run_fused(pilots, labels, samples)
    stepping.reset()
    stepping.adapt(pilots, labels)
    np.testing.assert_allclose(out, stepping.forward(samples), atol=1e-5)
    assert all(np.array_equal(v, fused.theta[k]) for k, v in fused.params.items())
    # the device's one call per frame: the same probabilities, and the frame says it was fused (the learned receiver's
    # frame: without the per-frame selection, which the classical receiver would win on these random samples)
    fused.select = stepping.select = None
    result, stepped = fused.frame(Frame(pilots, labels, samples)), stepping.frame(Frame(pilots, labels, samples))
    assert result.fused and not stepped.fused and result.steps == stepped.steps == 1 and result.adapt_s > 0
    assert result.fallback is None and stepped.fallback is None
    np.testing.assert_allclose(result.outputs, stepped.outputs, atol=1e-5)
    np.testing.assert_allclose([result.loss_before, result.loss_after], [stepped.loss_before, stepped.loss_after], atol=1e-5)


def test_the_device_runs_the_graphs_not_the_model_description_nor_the_algorithm_name(bundle_path, tmp_path, rewritten):
    """bundle-format §5, §6: `model` is informative (a device never rebuilds the network from it), and the adapted
    parameters come from algorithm.adapts, never from the algorithm's name (a MAML bundle would adapt everything)."""
    rng = np.random.default_rng(1)
    x, pilots, labels = rng.normal(size=(40, 2)), rng.normal(size=(8, 2)), rng.integers(0, 16, 8)

    def decided(bundle) -> np.ndarray:
        backend = OnnxBackend()
        backend.load(bundle)
        assert backend.selftest().passed
        backend.adapt(pilots, labels)
        return backend.predict(x)

    def mislabelled(m: dict) -> None:
        m["model"].update(sizes=[2, 3, 16], activation="tanh", context=0)
        m["algorithm"]["name"] = "maml"

    changed = rewritten(bundle_path, tmp_path, mislabelled)
    np.testing.assert_array_equal(decided(changed), decided(read_bundle(bundle_path)))


def test_every_graphs_ports_are_checked_and_theta_must_hold_its_parameters_shapes(bundle_path, tmp_path, rewritten):
    """bundle-format §7.3: the optional Loop graph's ports are checked like any other graph's; §5: θ holds exactly
    the listed names with the listed shapes."""
    from metaedge.deploy import tensors
    from metaedge.deploy.bundle import BundleError

    broken = rewritten(bundle_path, tmp_path / "loop", lambda m: m["graphs"]["adapt_loop"]["inputs"][-1].update(name="k"))
    with pytest.raises(BackendError, match="graph 'adapt_loop' has inputs"):
        OnnxBackend().load(broken)
    theta, _ = tensors.load(bundle_path / "theta.safetensors")
    theta["context"] = np.zeros(11, np.float32)
    with pytest.raises((BackendError, BundleError), match="context"):
        OnnxBackend().load(rewritten(bundle_path, tmp_path / "theta", files={"theta": tensors.dumps(theta)}))


def test_the_frame_graph_is_checked_at_load_and_by_the_selftest(trained_bundle, tmp_path, rewritten, monkeypatch):
    """bundle-format §7.6: the fused graph's ports are checked like any other's; §8 step 4: a device that runs it
    checks its log-probabilities against adapt.log_probs (a wrong fused graph fails, the stepped path still passes)."""
    from metaedge.sdk.targets import export

    bundle = export("onnx", trained_bundle[0], tmp_path / "one", inner_steps=1)
    with pytest.raises(BackendError, match="graph 'frame' has inputs"):
        OnnxBackend().load(rewritten(bundle.path, tmp_path / "ports", lambda m: m["graphs"]["frame"]["inputs"][-1].update(name="k")))
    run_fused = OnnxBackend.run_fused
    monkeypatch.setattr(OnnxBackend, "run_fused", lambda self, *a: run_fused(self, *a) + 0.01)
    fused, stepping = OnnxBackend(), OnnxBackend(mode="step_loop")
    fused.load(bundle)
    stepping.load(bundle)
    assert stepping.selftest().passed and not fused.selftest().passed


def test_receivers_loading_in_many_threads_leave_stdout_where_it_was(trained_bundle):
    """A fleet's devices load their receivers from several threads at once: the redirection of ONNX Runtime's
    diagnostics must not leave sys.stdout pointing at stderr."""
    import sys
    import threading

    bundle = read_bundle(trained_bundle[1])
    stdout = sys.stdout
    threads = [threading.Thread(target=lambda: [OnnxBackend().load(bundle) for _ in range(5)]) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.stdout is stdout
