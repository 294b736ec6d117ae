"""ALSET (Algorithm 10): MAML and iMAML recovered as special cases (§3.2.3), and the stochastic
Neumann estimator (3.7) unbiased for the truncated series."""

import numpy as np
import torch
from conftest import tiny_demod_argv

from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta import alset, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.models.mlp import MLPSpec, task_loss

F64 = torch.float64


def setup(devices=3, seed=0):
    params = {k: torch.tensor(v, dtype=F64) for k, v in MLPSpec(sizes=(2, 6, 4)).init(np.random.default_rng(seed)).items()}
    tasks = DemodTasks(DemodConfig(order=4), seed=seed)
    f = tasks.frames(tasks.devices("train", devices), 6, 10, tasks.rng("train", 1))
    return params, tuple(t.to(F64) for t in to_batch(f.x_tr, f.y_tr, f.x_va, f.y_va, 4))


def test_alset_on_problem_3_11_is_maml():
    params, batch = setup()
    lr = 0.3
    maml = get_algorithm("maml")
    expected, _ = meta_gradient(maml.objective, params, batch, maml.inner(lr, 1))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(3):
        f, g = alset.maml_problem(*(b[t] for b in batch), lr, task_loss)
        phi = alset.lower_steps(g, params, params, lr, 1)  # one step of size α on g from θ lands on its minimiser
        one_step = adapt(params, batch[0][t], batch[1][t], InnerLoop(lr=lr, steps=1))
        assert all(torch.allclose(phi[k], one_step[k], atol=1e-12) for k in params)
        h = alset.hypergradient(f, g, params, phi, "cg", 1, 1 / lr)  # ∇²_ϕϕ g = I/α: one CG step is exact
        total = {k: total[k] + h[k] / 3 for k in total}
    for k in params:
        assert torch.allclose(total[k], expected[k], atol=1e-10), k


def test_alset_on_problem_3_14_is_imaml():
    params, batch = setup()
    imaml, ours = get_algorithm("imaml"), get_algorithm("alset")
    expected, _ = meta_gradient(imaml.objective, params, batch, imaml.inner(0.1, 5, prox=2.0, solver_steps=6))
    got, _ = meta_gradient(ours.objective, params, batch, ours.inner(0.1, 5, prox=2.0, solver="cg", solver_steps=6))
    for k in params:
        assert torch.allclose(got[k], expected[k], atol=1e-9), k


def test_stochastic_neumann_estimator_is_unbiased_for_the_truncated_series_which_approaches_the_inverse():
    params, batch = setup(devices=1)
    f, g = alset.imaml_problem(*(b[0] for b in batch), 2.0, task_loss)
    phi = alset.lower_steps(g, params, params, 0.1, 5)
    rhs = torch.func.grad(f, argnums=1)(params, phi)
    exact = alset.inverse_hessian_product(g, params, phi, rhs, "cg", 60, 10.0)
    series = alset.inverse_hessian_product(g, params, phi, rhs, "neumann", 200, 10.0)
    flat = lambda d: torch.cat([d[k].reshape(-1) for k in params])  # noqa: E731
    assert torch.allclose(flat(series), flat(exact), rtol=1e-3, atol=1e-6)
    short = flat(alset.inverse_hessian_product(g, params, phi, rhs, "neumann", 8, 10.0))
    torch.manual_seed(0)
    draw = lambda _: flat(alset.inverse_hessian_product(g, params, phi, rhs, "stochastic", 8, 10.0))  # noqa: E731
    draws = torch.func.vmap(draw, randomness="different")(torch.arange(4000))
    assert float((draws.mean(0) - short).norm() / short.norm()) < 0.05
    assert float(draws.std(0).norm()) > 0.1 * float(short.norm())  # it is a random estimator, not the series itself


def test_alset_trains_from_the_cli_and_rejects_a_stochastic_solver_elsewhere(tmp_path, capsys):
    from metaedge.sdk.cli.main import main

    assert main(tiny_demod_argv("alset", str(tmp_path / "run"), iterations=3, val_every=3)) == 0
    assert main(["train", "demod", "--algo", "imaml", "--solver", "stochastic", "--out", str(tmp_path / "bad")]) != 0
    assert "use cg or neumann (or stochastic with alset)" in capsys.readouterr().err
