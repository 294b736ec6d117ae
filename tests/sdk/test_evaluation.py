"""Meta-test evaluation: the model-based receiver, SER bookkeeping and the paired comparison."""

import numpy as np
import pytest

from metaedge.sdk.families.demod.evaluation import evaluate
from metaedge.sdk.families.demod.receivers import ModelBasedReceiver
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.stats import summarise


def model_based(tasks):
    return ModelBasedReceiver(tasks.constellation, tasks.config.noise_var, tasks.config.channel_var)


def test_model_based_receiver_is_error_free_without_impairments_at_high_snr():
    tasks = DemodTasks(DemodConfig(snr_db=40.0, eps_max=0.0, delta_max_deg=0.0), seed=0)
    result = evaluate([(model_based(tasks), {})], tasks, [1, 4], devices=20, payload=500)[0]
    # deep fades still cost a little; an unimpaired device at 40 dB is otherwise decoded exactly
    assert result.ser[4]["ser"] < 0.01 and result.ser[1]["ser"] < 0.02


def test_model_based_receiver_suffers_from_the_imbalance_it_ignores():
    clean = DemodTasks(DemodConfig(eps_max=0.0, delta_max_deg=0.0), seed=0)
    impaired = DemodTasks(DemodConfig(), seed=0)
    ser_clean = evaluate([(model_based(clean), {})], clean, [16], devices=50, payload=1000)[0].ser[16]["ser"]
    ser_impaired = evaluate([(model_based(impaired), {})], impaired, [16], devices=50, payload=1000)[0].ser[16]["ser"]
    assert ser_impaired > ser_clean + 0.03


def test_model_based_probabilities_are_a_distribution_and_ml_decisions():
    tasks = DemodTasks(DemodConfig(), seed=1)
    f = tasks.frames(tasks.devices("test", 3), 4, 50, np.random.default_rng(0))
    probs = model_based(tasks).probabilities(f.x_tr, f.y_tr, f.x_va)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)  # float32, as a device reports them
    assert probs.shape == (3, 50, 16)


def test_paired_comparison_with_a_reference():
    tasks = DemodTasks(DemodConfig(), seed=0)
    mb = model_based(tasks)

    class Worse:
        name = "always symbol 0"

        def budget(self):
            return {}

        def probabilities(self, x_p, y_p, x):
            p = np.zeros((*x.shape[:2], 16))
            p[..., 0] = 1
            return p

    results = evaluate([(Worse(), {}), (mb, {})], tasks, [4], devices=30, payload=300, reference=mb.name)
    vs = results[0].ser[4]["vs_reference"]
    assert vs["worse"] and not vs["better"] and vs["diff"] > 0.5
    assert "vs_reference" not in results[1].ser[4]


def test_summarise_interval():
    s = summarise(np.array([0.1, 0.2, 0.3, 0.4]))
    assert s["ser"] == pytest.approx(0.25)
    half = 1.96 * np.std([0.1, 0.2, 0.3, 0.4], ddof=1) / 2
    assert s["ci95"] == pytest.approx([0.25 - half, 0.25 + half])


def test_runs_trained_with_different_pilot_schemes_are_compared_on_the_pilots_asked_for(trained_bundle, tmp_path, capsys):
    """'metaedge eval --pilot-sequence': a known-sequence run and an arbitrary-pilot run on the same frames."""
    import json
    import shutil

    from metaedge.sdk.cli.main import main
    from metaedge.sdk.rundir import CONFIG as CONFIG_FILE

    run = trained_bundle[0]
    arbitrary = tmp_path / "arbitrary"
    shutil.copytree(run, arbitrary)
    config = json.loads((arbitrary / CONFIG_FILE).read_text())
    config["task"]["pilot_sequence"] = "random"
    (arbitrary / CONFIG_FILE).write_text(json.dumps(config))
    argv = ["eval", str(run), str(arbitrary), "--pilots", "2,4", "--devices", "6", "--payload", "40", "--no-baselines", "--json", "--quiet"]
    for scheme in ("fixed", "random"):
        assert main([*argv, "--pilot-sequence", scheme]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["task"]["pilot_sequence"] == scheme and len(report["methods"]) == 2
    assert main(argv) == 0  # without the flag, frames are drawn as the first run was trained
    assert json.loads(capsys.readouterr().out)["task"]["pilot_sequence"] == "fixed"


def test_the_classical_receiver_decides_right_without_noise_and_is_the_model_based_baseline():
    from metaedge.backends.classical import mmse_ml

    config = DemodConfig(order=16, snr_db=60.0, eps_max=0.0, delta_max_deg=0.0)
    tasks = DemodTasks(config, seed=0)
    points = tasks.constellation
    rng = np.random.default_rng(0)
    h = 0.8 * np.exp(0.7j)
    labels = rng.integers(0, 16, 24)
    symbols = h * points[labels]
    samples = np.stack([symbols.real, symbols.imag], -1)
    probs = mmse_ml(points, config.noise_var, 1.0, samples[:8], labels[:8], samples[8:])
    assert (probs.argmax(-1) == labels[8:]).all() and np.allclose(probs.sum(-1), 1.0)
    baseline = ModelBasedReceiver(points, config.noise_var).probabilities(samples[None, :8], labels[None, :8], samples[None, 8:])
    np.testing.assert_array_equal(baseline[0], probs)  # one function serves the device and the host
