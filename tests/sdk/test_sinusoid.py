"""The sinusoid task family, the one-output (regression) form of the network, and the benchmark's machinery."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from metaedge.sdk.cli.main import main
from metaedge.sdk.families.sinusoid.task import SinusoidTasks
from metaedge.sdk.meta import bayes
from metaedge.sdk.models.mlp import MLPSpec, is_regressor, outputs, task_loss

PNG = b"\x89PNG\r\n\x1a\n"


def test_tasks_follow_the_published_ranges_and_train_and_test_streams_differ():
    env = SinusoidTasks(seed=3)
    train, test = env.tasks("train", 500), env.tasks("test", 500)
    assert train[:, 0].min() >= 0.1 and train[:, 0].max() <= 5.0 and train[:, 1].min() >= 0 and train[:, 1].max() <= np.pi
    assert not np.isin(train, test).any()
    x, y = env.samples(train[:4], (7,), env.rng("train", 1))
    assert x.shape == y.shape == (4, 7, 1) and np.abs(x).max() <= 5.0
    assert np.allclose(y, train[:4, 0, None, None] * np.sin(x + train[:4, 1, None, None]), atol=1e-5)


def test_a_one_output_network_is_a_regressor_with_squared_error():
    params = {k: torch.from_numpy(v) for k, v in MLPSpec(sizes=(1, 8, 1)).init(np.random.default_rng(0)).items()}
    classifier = {k: torch.from_numpy(v) for k, v in MLPSpec(sizes=(2, 8, 4)).init(np.random.default_rng(0)).items()}
    assert is_regressor(params) and not is_regressor(classifier)
    assert is_regressor({**params, **{"logstd." + k: v for k, v in params.items()}})
    x, y = torch.randn(5, 1), torch.randn(5, 1)
    assert torch.allclose(task_loss(params, x, y), ((outputs(params, x) - y) ** 2).mean())


def test_the_particles_predict_their_mean():
    stacked = {
        k: torch.from_numpy(np.stack([MLPSpec(sizes=(1, 8, 1)).init(np.random.default_rng(s))[k] for s in range(3)]))
        for k in MLPSpec(sizes=(1, 8, 1)).shapes()
    }
    x, y = torch.randn(6, 1), torch.randn(6, 1)
    mean = sum(outputs({k: v[i] for k, v in stacked.items()}, x) for i in range(3)) / 3
    assert torch.allclose(bayes.mean_prediction(stacked, x, "particles", 1), mean, atol=1e-6)
    assert torch.allclose(bayes.predictive_loss(stacked, x, y, "particles", 1, task_loss), ((mean - y) ** 2).mean(), atol=1e-6)


def test_sinusoid_benchmark_writes_three_panels(tmp_path, capsys):
    assert (
        main(["bench", "sinusoid", "--quick", "--samples", "2,10", "--tasks", "5,1000", "--json", "--quiet", "--plot", str(tmp_path / "s.png")]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report["b_best_loss_vs_samples"]["bmaml"]) == {"2", "10"} and set(report["c_best_loss_vs_tasks"]["maml"]) == {"5", "1000"}
    assert all(p["test_loss"] > 0 for p in report["a_loss_vs_iterations"]["imaml"])
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG
    assert main(["bench", "sinusoid", "--algos", "nope"]) != 0


def test_repeated_task_draws_average_the_points_and_pair_each_method_with_maml(tmp_path, capsys):
    quick = "bench sinusoid --quick --tasks 5 --json --quiet".split()
    assert main([*quick, "--algos", "maml,bmaml", "--samples", "2,10", "--repeats", "3", "--plot", str(tmp_path / "s.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    draws = report["draws"]["c"]
    assert len(draws["maml"]["5"]) == 3 and len(set(draws["maml"]["5"])) == 3  # three different task draws
    assert report["c_best_loss_vs_tasks"]["bmaml"]["5"] == pytest.approx(np.mean(draws["bmaml"]["5"]))
    pair = report["vs_maml"]["b"]["bmaml"]["2"]
    diff = np.subtract(report["draws"]["b"]["bmaml"]["2"], report["draws"]["b"]["maml"]["2"])
    assert pair["diff"] == pytest.approx(diff.mean())
    assert pair["ci95"][1] - pair["diff"] == pytest.approx(4.303 * diff.std(ddof=1) / np.sqrt(3), rel=1e-3)  # t, 2 dof
    assert main([*quick, "--algos", "maml", "--samples", "10", "--plot", str(tmp_path / "one.png")]) == 0
    single = json.loads(capsys.readouterr().out)
    assert "vs_maml" not in single and single["c_best_loss_vs_tasks"]["maml"]["5"] == draws["maml"]["5"][0]  # draw 0 = --seed 0


def test_a_diverged_evaluation_is_null_and_the_best_loss_skips_it(monkeypatch, capsys):
    """A run whose test loss turns NaN (iMAML on the sinusoid at 5000 iterations did) reports null there, valid JSON,
    and its best loss comes from the finite evaluations; a run without any has none."""
    import math

    from metaedge.sdk.families.sinusoid import bench as bench_sinusoid

    losses = iter([3.0, 2.0, math.nan, math.nan] * 100)
    monkeypatch.setattr(bench_sinusoid, "test_loss", lambda *a: next(losses))
    cfg = bench_sinusoid.SinusoidBench(iterations=4, eval_every=1, test_tasks=2, test_points=3, sample_grid=(10,), task_grid=(1000,))
    report = bench_sinusoid.run_benchmark(cfg, ("maml",))
    assert [p["test_loss"] for p in report["a_loss_vs_iterations"]["maml"]] == [3.0, 2.0, None, None]
    assert report["b_best_loss_vs_samples"]["maml"]["10"] == 2.0
    json.loads(json.dumps(report, allow_nan=False))
    monkeypatch.setattr(bench_sinusoid, "test_loss", lambda *a: math.nan)
    assert bench_sinusoid.run_benchmark(cfg, ("maml",))["b_best_loss_vs_samples"]["maml"]["10"] is None


def test_algorithms_benchmark_tables_every_algorithm(tmp_path, capsys):
    assert main(["bench", "algorithms", "--quick", "--algos", "maml,vbmaml,bmaml,modular", "--out", str(tmp_path), "--quiet"]) == 0
    report = json.loads((tmp_path / "algorithms.json").read_text())
    names = [m["name"] for m in report["methods"]]
    assert names[:4] == ["maml", "vbmaml", "bmaml", "modular"] and "model-based (MMSE + ML)" in names
    for m in report["methods"][:4]:
        assert {"1", "4", "8", "16"} <= set(m["ser"]) and 0 <= m["ser"]["8"]["ece"] <= 1 and m["train_seconds"] >= 0
    assert "| vbmaml |" in (tmp_path / "algorithms.md").read_text()
    assert (tmp_path / "reliability.png").read_bytes()[:8] == PNG
    assert main(["bench", "algorithms", "--quick", "--pilots", "1,4", "--out", str(tmp_path / "x")]) != 0
    assert "must include 8" in capsys.readouterr().err


def test_each_method_adapts_with_its_own_procedure(monkeypatch):
    """iMAML's implicit gradient assumes the proximal problem solved: the benchmark gives it ``prox_steps`` steps
    (in training and at test); SVGD shares its step among the particles, so BMAML has its own ``svgd_lr``; MAML
    takes the shared α and steps."""
    from metaedge.sdk.families.sinusoid import bench as bench_sinusoid

    seen = {}
    monkeypatch.setattr(bench_sinusoid, "fit", lambda objective, theta, inner, *a: seen.setdefault(len(seen), inner))
    cfg = bench_sinusoid.SinusoidBench(iterations=1, inner_lr=0.02, svgd_lr=0.08, inner_steps=3, prox_steps=7, prox=2.0, test_tasks=2, test_points=3)
    for method in ("maml", "imaml", "bmaml"):
        bench_sinusoid.train_curve(method, 5, 10, 0, cfg)
    assert [(i.lr, i.steps, i.prox) for i in seen.values()] == [(0.02, 3, 0.0), (0.02, 7, 2.0), (0.08, 3, 0.0)]


@pytest.mark.slow
def test_parallel_runs_give_the_same_report():
    """--jobs trains the runs in separate processes; each run seeds itself, so the report is the serial one."""
    from metaedge.sdk.families.sinusoid import bench as bench_sinusoid

    small = bench_sinusoid.quick(bench_sinusoid.SinusoidBench(sample_grid=(2, 5), task_grid=(3, 5), samples=5, tasks=5))
    cfg = dataclasses.replace(small, iterations=2, eval_every=1, test_tasks=2, test_points=3, hidden=(4,), prox_steps=2)
    serial = bench_sinusoid.run_benchmark(cfg, ("maml", "bmaml"))
    assert bench_sinusoid.run_benchmark(cfg, ("maml", "bmaml"), jobs=2) == serial
