"""Bayesian MAML (§2.4): the Gaussian free energy and SVGD against independent oracles (torch.distributions,
autograd of the kernel, finite differences with common random numbers), and the receivers and CLI."""

import numpy as np
import pytest
import torch

from metaedge.sdk.families.demod.receivers import LearnedReceiver
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.families.demod.training import TrainConfig, initial_theta
from metaedge.sdk.meta import bayes, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.meta.defaults import Gaussian
from metaedge.sdk.models.mlp import MLPSpec, forward, task_loss


def theta_for(algo: str, seed: int = 0, dtype=torch.float32, **train):
    spec = MLPSpec(sizes=(2, 6, 4))
    init = initial_theta(spec, TrainConfig(algo=algo, **train), np.random.default_rng(seed))
    return {k: torch.tensor(v, dtype=dtype) for k, v in init.items()}


def frame_batch(devices: int = 3, pilots: int = 6, val: int = 10, seed: int = 0, dtype=torch.float32):
    tasks = DemodTasks(DemodConfig(order=4), seed=seed)
    f = tasks.frames(tasks.devices("train", devices), pilots, val, tasks.rng("train", 1))
    return tuple(t.to(dtype) for t in to_batch(f.x_tr, f.y_tr, f.x_va, f.y_va, 4))


def test_gaussian_kl_equals_torch_distributions():
    q, p = theta_for("vbmaml", 0), theta_for("vbmaml", 1)
    q = {k: v + (0.3 if k.startswith(bayes.LOGSTD_PREFIX) else 0.0) for k, v in q.items()}
    oracle = sum(
        torch.distributions.kl_divergence(
            torch.distributions.Normal(q[k], q["logstd." + k].exp()), torch.distributions.Normal(p[k], p["logstd." + k].exp())
        ).sum()
        for k in bayes.means(q)
    )
    assert torch.allclose(bayes.gaussian_kl(q, p), oracle, rtol=1e-5) and float(oracle) > 1.0
    assert float(bayes.gaussian_kl(p, p)) == pytest.approx(0.0, abs=1e-5)


def test_gaussian_step_is_the_proximal_step_on_the_free_energy():
    """With a narrow posterior the sampled gradient is the point gradient, so one step moves the means by
    −α∇L(μ)/(1 + κ), κ = α/σ²N (the KL's pull taken exactly), and the log-stds by −α∂F/∂log s."""
    theta = theta_for("vbmaml", prior_std=0.05)
    theta = {k: (v - 9.0 if k.startswith(bayes.LOGSTD_PREFIX) else v) for k, v in theta.items()}  # σ ≈ 6e-6
    x, onehot = (t[0] for t in frame_batch()[:2])
    lr, n = 0.3, x.shape[0]
    g = torch.func.grad(lambda p: task_loss(p, x, onehot))(bayes.means(theta))
    q = adapt(theta, x, onehot, InnerLoop(lr=lr, steps=1, posterior="gaussian", options=Gaussian(samples=3)))
    for k, v in bayes.means(theta).items():
        kappa = lr / (n * theta["logstd." + k].exp() ** 2)
        assert torch.allclose(q[k], v - lr * g[k] / (1 + kappa), atol=1e-6), k
        # at q = prior, ∂KL/∂log s = 0 and ∂E[L]/∂log s → 0 with σ → 0: the spread stays put
        assert torch.allclose(q["logstd." + k], theta["logstd." + k], atol=1e-4), k


def test_a_certain_prior_does_not_move_and_a_vague_one_adapts_like_maml():
    x, onehot, x_va, _ = (t[0] for t in frame_batch())
    tight = theta_for("vbmaml", prior_std=1e-6)
    q = adapt(tight, x, onehot, InnerLoop(lr=0.3, steps=3, posterior="gaussian", options=Gaussian(samples=3)))
    assert max(float((q[k] - tight[k]).abs().max()) for k in bayes.means(tight)) < 1e-6
    assert torch.allclose(bayes.log_predictive(q, x_va, "gaussian", 5), forward(bayes.means(tight), x_va), atol=1e-4)
    vague = theta_for("vbmaml", prior_std=1e3)
    q = adapt(vague, x, onehot, InnerLoop(lr=0.3, steps=1, posterior="gaussian", options=Gaussian(samples=1)))
    assert max(float((q[k] - vague[k]).abs().max()) for k in bayes.means(vague)) > 1e-3  # the samples' noise moves it


def test_svgd_step_equals_the_formula_with_the_kernel_gradient_from_autograd():
    particles = theta_for("bmaml", particles=4, dtype=torch.float64)
    x, onehot = (t[0] for t in frame_batch(dtype=torch.float64)[:2])
    lr, n, count = 0.2, x.shape[0], 4
    moved = bayes.svgd_adapt(particles, x, onehot, lr, 1, task_loss)

    flat = torch.cat([v.reshape(count, -1) for v in particles.values()], 1)
    shapes = [(k, v.shape[1:], v[0].numel()) for k, v in particles.items()]
    unflat = lambda f: dict(zip([s[0] for s in shapes], (c.reshape(s[1]) for c, s in zip(f.split([s[2] for s in shapes]), shapes))))  # noqa: E731
    sq = torch.cdist(flat, flat) ** 2
    h = sq.median() / np.log(count + 1)
    expected = []
    for j in range(count):
        step = torch.zeros_like(flat[j])
        for m in range(count):
            a = flat[m].clone().requires_grad_(True)
            kernel = torch.exp(-((a - flat[j]) ** 2).sum() / h)
            (grad_kernel,) = torch.autograd.grad(kernel, a)
            log_posterior = torch.func.grad(lambda f: -n * task_loss(unflat(f), x, onehot))(flat[m])
            step += kernel.detach() * log_posterior + grad_kernel
        expected.append(flat[j] + lr / n * step / count)  # eq. 2.37 with log p = −N·L and step α/N
    got = torch.cat([v.reshape(count, -1) for v in moved.values()], 1)
    assert torch.allclose(got, torch.stack(expected), atol=1e-10)


def test_svgd_repulsion_keeps_particles_apart():
    """Without the repulsive term every particle would fall to the same mode; with it they stay spread."""
    particles = theta_for("bmaml", particles=4)
    x, onehot = (t[0] for t in frame_batch(pilots=16)[:2])
    moved = bayes.svgd_adapt(particles, x, onehot, 0.5, 50, task_loss)
    spread = lambda p: float(torch.cat([v.reshape(4, -1) for v in p.values()], 1).std(0).mean())  # noqa: E731
    assert spread(moved) > 0.5 * spread(particles)
    assert float(task_loss({k: v[0] for k, v in moved.items()}, x, onehot)) < float(task_loss({k: v[0] for k, v in particles.items()}, x, onehot))


@pytest.mark.parametrize("algo", ["vbmaml", "bmaml"])
def test_bayesian_meta_gradient_matches_finite_differences_with_common_random_numbers(algo):
    theta = theta_for(algo, dtype=torch.float64, particles=3, prior_std=0.05)
    batch = frame_batch(dtype=torch.float64)
    algorithm = get_algorithm(algo)
    inner = algorithm.inner(0.2, 2, samples=2)

    def value(params):
        with torch.random.fork_rng():
            torch.manual_seed(3)
            per_task = torch.func.vmap(algorithm.objective, in_dims=(None, 0, 0, 0, 0, None), randomness="different")
            return per_task(params, *batch, inner)[0].mean()

    with torch.random.fork_rng():
        torch.manual_seed(3)
        grads, _ = meta_gradient(algorithm.objective, theta, batch, inner)
    rng = np.random.default_rng(0)
    for key in ("l0.weight", "l1.bias") + (("logstd.l0.weight",) if algo == "vbmaml" else ()):
        index = tuple(int(rng.integers(s)) for s in theta[key].shape)
        eps = 1e-6
        plus, minus = dict(theta), dict(theta)
        plus[key], minus[key] = theta[key].clone(), theta[key].clone()
        plus[key][index] += eps
        minus[key][index] -= eps
        numeric = (value(plus) - value(minus)) / (2 * eps)
        assert float(grads[key][index]) == pytest.approx(float(numeric), rel=1e-4, abs=1e-8), key


@pytest.mark.parametrize("algo", ["vbmaml", "bmaml"])
def test_bayesian_receiver_averages_a_seeded_ensemble(algo):
    theta = theta_for(algo, prior_std=0.3)
    algorithm = get_algorithm(algo)
    receiver = LearnedReceiver(algo, theta, algorithm.inner(0.1, 2), 4)
    tasks = DemodTasks(DemodConfig(order=4), seed=0)
    f = tasks.frames(tasks.devices("test", 3), 8, 50, tasks.rng("test", 1))
    probs = receiver.probabilities(f.x_tr, f.y_tr, f.x_va)
    assert probs.shape == (3, 50, 4) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.array_equal(probs, receiver.probabilities(f.x_tr, f.y_tr, f.x_va))
    point = LearnedReceiver(
        "mean", bayes.means(theta) if algo == "vbmaml" else {k: v[0] for k, v in theta.items()}, InnerLoop(lr=0.1, steps=2), 4
    ).probabilities(f.x_tr, f.y_tr, f.x_va)
    assert probs.max(-1).mean() < point.max(-1).mean()  # averaging over weights softens the decisions


@pytest.mark.parametrize("algo, flag", [("vbmaml", ["--prior-std", "0.05", "--samples", "2"]), ("bmaml", ["--particles", "3"])])
def test_bayesian_runs_train_and_evaluate_from_the_cli_with_calibration(tmp_path, capsys, algo, flag):
    import json

    from metaedge.sdk.cli.main import main

    run = tmp_path / algo
    assert (
        main(
            [
                "train",
                "demod",
                "--algo",
                algo,
                *flag,
                "--iterations",
                "4",
                "--val-every",
                "2",
                "--val-devices",
                "4",
                "--meta-devices",
                "10",
                "--pilots",
                "4",
                "--inner-steps",
                "2",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(run),
                "--pilots",
                "4,8",
                "--devices",
                "4",
                "--payload",
                "200",
                "--json",
                "--quiet",
                "--reliability",
                str(tmp_path / "rel.png"),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    entry = report["methods"][0]
    assert 0.0 <= entry["ser"]["8"]["ece"] <= 1.0 and sum(entry["reliability"]["8"]["count"]) == 4 * 200
    assert (tmp_path / "rel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # both export (tests/sdk/test_export.py checks them on the device); --ensemble is the Gaussian form's alone
    ensemble = ["--ensemble", "10"] if algo == "vbmaml" else []
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), *ensemble]) == 0
    if algo == "bmaml":
        assert main(["export", str(run), "--out", str(tmp_path / "other"), "--ensemble", "10"]) != 0
        err = capsys.readouterr().err
        assert "--ensemble applies to runs with a Gaussian posterior (vbmaml)" in err and len(err.strip().splitlines()) == 1


def test_bad_bayesian_flags_are_one_line_errors(tmp_path, capsys):
    from metaedge.sdk.cli.main import main

    assert main(["train", "demod", "--algo", "bmaml", "--particles", "1", "--out", str(tmp_path / "a")]) != 0
    assert "--particles 1 must be at least 2" in capsys.readouterr().err
    assert main(["train", "demod", "--algo", "vbmaml", "--prior-std", "-1", "--out", str(tmp_path / "b")]) != 0
    err = capsys.readouterr().err
    assert "--prior-std -1.0 must be a positive number" in err and len(err.strip().splitlines()) == 1
