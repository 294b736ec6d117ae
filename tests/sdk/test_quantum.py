"""Host side of the Born-machine receivers: meta-training, evaluation, calibration, CLI."""

import json

import numpy as np
import pytest

from metaedge.backends.qiskit.model import uniform_prior
from metaedge.sdk.calibration import reliability
from metaedge.sdk.cli.main import main
from metaedge.sdk.families.demod.born.evaluation import evaluate_exact, tune_step_size
from metaedge.sdk.families.demod.born.learning import InnerConfig
from metaedge.sdk.families.demod.born.training import BornTrainConfig, default_task, load_born_run, make_spec, train_born


def test_reliability_bins_and_ece_on_a_known_example():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 0, 1])
    r = reliability(confidence, correct, bins=10)
    assert r["count"][9] == 2 and r["count"][5] == 2
    assert r["accuracy"][5] == 0.5 and r["confidence"][9] == pytest.approx(0.95)
    assert r["ece"] == pytest.approx((2 * 0.05 + 2 * 0.05) / 4)
    assert r["accuracy"][0] is None


def test_short_meta_training_beats_the_uninformed_prior_on_new_devices(tmp_path):
    task = default_task()
    spec, inner = make_spec(task, 5, 2), InnerConfig()
    train_born(tmp_path / "meta", task, spec, inner, BornTrainConfig(iterations=80, val_devices=64, val_every=40, seed=1))
    meta = load_born_run(tmp_path / "meta")
    uniform = uniform_prior(spec)
    lr = tune_step_size(spec, inner, uniform, task, devices=64)
    results = evaluate_exact(spec, inner, {"meta": (meta.theta, meta.lr), "uniform": (uniform, lr)}, task, devices=150, seed=3)
    assert results["meta"]["log_loss"] < results["uniform"]["log_loss"] - 0.03
    assert results["meta"]["ser"] < 0.1 and results["point-estimate BNN"]["ser"] < 0.1


def test_train_export_inspect_and_bench_through_the_cli(tmp_path, capsys):
    for method in ("meta", "joint"):
        assert main(["train", "born", "--algo", method, "--out", str(tmp_path / f"born-{method}"), "--iterations", "20", "--quiet", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["iterations"] == 20
    assert main(["export", str(tmp_path / "born-meta"), "--target", "qiskit", "--out", str(tmp_path / "bundle"), "--shots", "128"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "bundle"), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["target"] == "qiskit" and manifest["algorithm"]["shots"] == 128 and manifest["circuit"]["qpy_version"] == 13
    assert (
        main(
            [
                "bench",
                "qiskit",
                "--meta",
                str(tmp_path / "born-meta"),
                "--joint",
                str(tmp_path / "born-joint"),
                "--out",
                str(tmp_path / "bench"),
                "--exact-devices",
                "40",
                "--device-frames",
                "2",
                "--targets",
                "ideal",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report["exact"]["results"]) == {"meta-learned", "joint", "uniform prior", "point-estimate BNN"}
    ideal = report["device"]["ideal"]["results"]["meta-learned"]
    assert ideal["costs"]["circuits_per_frame"] == 2 * 31 + 1 and ideal["seconds_per_frame"] > 0
    assert (tmp_path / "bench" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from metaedge.sdk.families.demod.born.bench import text

    shown = text(report)  # every SER with its interval, and the paired differences a reader compares priors by
    assert "exact (40 devices): meta-learned vs joint" in shown and "ideal (2 devices): meta-learned vs uniform prior" in shown
    assert shown.count(" [") >= len(report["exact"]["results"]) + 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "born", "--out", "X", "--qubits", "13"], "qubits 13 must lie in 1..12"),
        (["export", "RUN", "--target", "qiskit", "--out", "B"], "does not exist"),
        (["bench", "qiskit", "--targets", "noisy:FakeX,quantum"], "--targets: quantum backend 'quantum' is unknown"),
        (["device", "serve", "--target", "qiskit", "--backend", "cloud", "--state", "S", "--allow-unsigned"], "--backend: quantum backend"),
    ],
)
def test_bad_input_gets_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_onnx_export_of_a_born_run_says_which_target_to_use(tmp_path, capsys):
    task = default_task()
    train_born(tmp_path / "run", task, make_spec(task, 3, 1), InnerConfig(), BornTrainConfig(iterations=2, val_every=1, val_devices=8))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "b")]) == 2
    assert "--target qiskit', evaluate it with 'metaedge bench qiskit'" in capsys.readouterr().err
