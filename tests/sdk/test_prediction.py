"""Channel prediction (monograph §5.4): the generator, the closed forms of eq. 2.11-2.12, LSTD, the benchmark."""

import json

import numpy as np
import pytest

from metaedge.backends.linear import predictor as pr
from metaedge.sdk.cli.main import main
from metaedge.sdk.families.prediction.bench import run_benchmark
from metaedge.sdk.families.prediction.learning import PredictionBench
from metaedge.sdk.families.prediction.task import DOPPLER, ChannelConfig, ChannelFrames


def complex_normal(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def test_windows_hold_the_last_L_channels_newest_first_and_target_delta_ahead():
    h = np.arange(20)[:, None] * np.ones((1, 3))  # slot t holds t in every entry
    x, y = pr.Window(length=5, lag=3).pairs(h, first=4, count=2)
    np.testing.assert_array_equal(x[0].reshape(5, 3)[:, 0], [4, 3, 2, 1, 0])
    np.testing.assert_array_equal(y[:, 0], [7, 8])
    assert pr.Window().slots(10) == 10 + 5 + 3 - 1


def test_ridge_is_the_stationary_point_of_the_proximal_problem():
    rng = np.random.default_rng(0)
    x, y, theta = complex_normal(rng, 7, 4), complex_normal(rng, 7, 2), complex_normal(rng, 4, 2)
    w = pr.ridge(x, y, 0.6, theta)
    np.testing.assert_allclose(x.conj().T @ (x @ w - y) + 0.3 * (w - theta), 0, atol=1e-10)


def test_the_closed_form_meta_bias_minimises_the_validation_loss_after_adaptation():
    rng = np.random.default_rng(1)
    k, d = 6, 4
    x_tr, y_tr = complex_normal(rng, k, 3, d), complex_normal(rng, k, 3, 2)
    x_va, y_va = complex_normal(rng, k, 5, d), complex_normal(rng, k, 5, 2)

    def meta_loss(theta):  # eq. 5.22 evaluated directly: adapt by ridge toward θ, score on validation
        return sum(np.sum(np.abs(x_va[i] @ pr.ridge(x_tr[i], y_tr[i], 1.0, theta) - y_va[i]) ** 2) for i in range(k))

    best = pr.meta_bias(x_tr, y_tr, x_va, y_va, 1.0)
    for _ in range(20):
        assert meta_loss(best) <= meta_loss(best + 1e-3 * complex_normal(rng, d, 2)) + 1e-12
    assert meta_loss(best) < meta_loss(pr.joint_bias(np.concatenate([x_tr, x_va], 1), np.concatenate([y_tr, y_va], 1)))


def test_aic_finds_the_number_of_paths_above_the_noise():
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(complex_normal(rng, 16, 3))[0]
    samples = complex_normal(rng, 400, 3) @ basis.T + 0.05 * complex_normal(rng, 400, 16)
    values = pr.subspace(samples)[1]
    assert pr.aic_rank(values, 400) == 3


def test_channels_have_unit_power_and_fixed_geometry_within_a_frame():
    env = ChannelFrames(ChannelConfig(doppler_hz=DOPPLER["slow"]), seed=0)
    true, observed = env.frames("train", 50, 200)
    assert np.mean(np.abs(true) ** 2) == pytest.approx(1.0, rel=0.15)
    assert np.mean(np.abs(observed - true) ** 2) == pytest.approx(1e-4, rel=0.05)
    values = pr.subspace(true)[1]
    # a frame's channels live in the span of its clusters' signatures: a few paths hold almost all energy
    assert np.median(values[:, :8].sum(1) / values.sum(1)) > 0.99
    again, _ = ChannelFrames(ChannelConfig(doppler_hz=DOPPLER["slow"]), seed=0).frames("train", 50, 200)
    np.testing.assert_array_equal(true, again)
    assert not np.allclose(env.frames("test", 50, 200)[0], true)


@pytest.mark.parametrize("regime", ["slow", "fast"])
def test_meta_learned_decomposed_predictor_beats_conventional_learning(regime):
    cfg = PredictionBench(channel=ChannelConfig(doppler_hz=DOPPLER[regime]), meta_frames=100, test_frames=100, sample_grid=(2, 10))
    nmse = run_benchmark(cfg)["nmse_db"]
    for n in ("2", "10"):
        assert nmse["meta-lstd"][n] < nmse["conventional-naive"][n] - 1.0
        assert nmse["meta-lstd"][n] < nmse["conventional-lstd"][n] - 1.0


def test_the_selecting_predictor_falls_back_to_the_conventional_fit_under_a_doppler_shift():
    """Meta-trained on fast fading and deployed on slow, the learned bias predicts worse than none; with more pilot
    windows than it holds out, the device's selection (bundle-format.md §15.5) recovers the conventional fit's NMSE,
    and as trained it stays with the learned fit where nothing can be held out."""
    shifted = PredictionBench(
        channel=ChannelConfig(doppler_hz=DOPPLER["fast"]),
        test_channel=ChannelConfig(doppler_hz=DOPPLER["slow"]),
        meta_frames=100,
        test_frames=100,
        sample_grid=(2, 10),
    )
    nmse = run_benchmark(shifted)["nmse_db"]
    assert nmse["meta-lstd"]["10"] > nmse["conventional-lstd"]["10"] + 1.0  # the shift hurts the learned bias
    assert nmse["selecting-lstd"]["10"] < nmse["conventional-lstd"]["10"] + 0.5
    assert nmse["selecting-lstd"]["2"] == nmse["meta-lstd"]["2"]  # 2 windows ≤ the 4 held out: nothing to compare


def test_bench_prediction_quick_writes_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "p.png"
    assert main(["bench", "prediction", "--quick", "--plot", str(plot), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["regimes"]) == {"slow", "fast"}
    assert set(report["regimes"]["fast"]["nmse_db"]) == {f"{s}-{f}" for f in pr.FORMS for s in (*pr.SCHEMES, "selecting")}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--doppler", "medium"], "unknown regime 'medium'"),
        (["--rank", "x"], "--rank 'x' must be meta, aic or a positive number"),
        (["--lam", "0"], "--lam 0.0 must be positive"),
        (["--slot", "0"], "--slot 0.0 must be a positive number"),
        (["--rank", "zero"], "--rank 'zero' must be meta, aic or a positive number"),
    ],
)
def test_bad_prediction_flags_get_one_line(argv, message, capsys):
    assert main(["bench", "prediction", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
