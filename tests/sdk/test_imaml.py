"""iMAML: the implicit meta-gradient against the ridge-regression closed forms (eq. 2.11–2.12), and the
batched demodulation objective against a per-task loop."""

import numpy as np
import pytest
import torch
from conftest import tiny_demod_argv

from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta import get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.core import InnerLoop, adapt, implicit_gradient, proximal_residual
from metaedge.sdk.meta.defaults import Proximal
from metaedge.sdk.models.mlp import MLPSpec, task_loss

F64 = torch.float64


def ridge_task(rng, d=5, n_tr=8, n_va=10):
    w = rng.normal(size=d)
    x_tr, x_va = rng.normal(size=(n_tr, d)), rng.normal(size=(n_va, d))
    return [torch.tensor(a) for a in (x_tr, x_tr @ w + 0.1 * rng.normal(size=n_tr), x_va, x_va @ w + 0.1 * rng.normal(size=n_va))]


def prox_solution(theta, x, y, lam):
    """Eq. 2.11: argmin ‖Xφ − y‖² + λ/2‖φ − θ‖² = (XᵀX + λ/2 I)⁻¹ (Xᵀy + λ/2 θ)."""
    return torch.linalg.solve(x.T @ x + lam / 2 * torch.eye(len(theta), dtype=F64), x.T @ y + lam / 2 * theta)


def sq(x, y):
    return lambda p: ((x @ p["w"] - y) ** 2).sum()


@pytest.mark.parametrize("solver, steps, lam", [("cg", 5, 2.0), ("neumann", 400, None)])
def test_implicit_gradient_equals_the_derivative_through_the_closed_form_proximal_solution(solver, steps, lam):
    x_tr, y_tr, x_va, y_va = ridge_task(np.random.default_rng(0))
    if lam is None:  # the Neumann series needs ‖∇²L_tr‖ < λ; ∇²L_tr = 2XᵀX
        lam = 1.5 * float(torch.linalg.eigvalsh(2 * x_tr.T @ x_tr).max())
    theta = torch.tensor(np.random.default_rng(1).normal(size=5), requires_grad=True)
    phi = prox_solution(theta, x_tr, y_tr, lam)
    oracle = torch.autograd.grad(sq(x_va, y_va)({"w": phi}), theta)[0]
    phi0 = {"w": phi.detach()}
    rhs = torch.func.grad(sq(x_va, y_va))(phi0)
    u = implicit_gradient(sq(x_tr, y_tr), rhs, phi0, lam, steps, solver)["w"]
    assert torch.allclose(u, oracle, atol=1e-8 if solver == "cg" else 1e-6), (u, oracle)


def test_closed_form_meta_solution_is_a_stationary_point_of_the_implicit_meta_gradient():
    """Eq. 2.12: θ̂ = argmin_θ Σ_k ‖X̃_k θ − ỹ_k‖² with X̃_k = X_va (XᵀX + λ/2 I)⁻¹ λ/2, ỹ_k = y_va − X_va (XᵀX + λ/2 I)⁻¹ Xᵀy."""
    rng, lam = np.random.default_rng(2), 3.0
    tasks = [ridge_task(rng) for _ in range(6)]
    rows, targets = [], []
    for x_tr, y_tr, x_va, y_va in tasks:
        a_inv = torch.linalg.inv(x_tr.T @ x_tr + lam / 2 * torch.eye(5, dtype=F64))
        rows.append(x_va @ a_inv * lam / 2)
        targets.append(y_va - x_va @ a_inv @ x_tr.T @ y_tr)
    theta_hat = torch.linalg.lstsq(torch.cat(rows), torch.cat(targets)).solution
    total = torch.zeros(5, dtype=F64)
    for x_tr, y_tr, x_va, y_va in tasks:
        phi = {"w": prox_solution(theta_hat, x_tr, y_tr, lam)}
        total += implicit_gradient(sq(x_tr, y_tr), torch.func.grad(sq(x_va, y_va))(phi), phi, lam, 5)["w"]
    assert total.abs().max() < 1e-8
    away = theta_hat + 0.3
    assert (
        sum(
            implicit_gradient(
                sq(t[0], t[1]),
                torch.func.grad(sq(t[2], t[3]))({"w": prox_solution(away, t[0], t[1], lam)}),
                {"w": prox_solution(away, t[0], t[1], lam)},
                lam,
                5,
            )["w"]
            for t in tasks
        )
        .abs()
        .max()
        > 1e-2
    )


def one_qpsk_device():
    """A small network's θ and one QPSK device's 8 pilots (x, one-hot labels)."""
    spec = MLPSpec(sizes=(2, 8, 4))
    params = {k: torch.from_numpy(v) for k, v in spec.init(np.random.default_rng(0)).items()}
    tasks = DemodTasks(DemodConfig(order=4), seed=0)
    frame = tasks.frames(tasks.devices("train", 1), 8, 1, tasks.rng("train", 1))
    return params, torch.as_tensor(frame.x_tr[0]), torch.nn.functional.one_hot(torch.as_tensor(frame.y_tr[0]), 4).float()


def test_proximal_inner_steps_reach_the_proximal_minimum():
    params, x, onehot = one_qpsk_device()
    inner = InnerLoop(lr=0.2, steps=300, options=Proximal(prox=2.0))
    phi = adapt(params, x, onehot, inner)
    g = torch.func.grad(lambda p: task_loss(p, x, onehot))(phi)
    stationarity = max(float((g[k] + 2.0 * (phi[k] - params[k])).abs().max()) for k in params)
    assert stationarity < 1e-4 and max(float((phi[k] - params[k]).abs().max()) for k in params) > 1e-3


def test_batched_imaml_meta_gradient_equals_a_per_task_loop():
    spec = MLPSpec(sizes=(2, 8, 4))
    params = {k: torch.from_numpy(v) for k, v in spec.init(np.random.default_rng(1)).items()}
    tasks = DemodTasks(DemodConfig(order=4), seed=1)
    frame = tasks.frames(tasks.devices("train", 4), 8, 16, tasks.rng("train", 1))
    batch = to_batch(frame.x_tr, frame.y_tr, frame.x_va, frame.y_va, 4)
    algorithm = get_algorithm("imaml")
    inner = algorithm.inner(0.1, 5, prox=1.0, solver_steps=8)
    batched, _ = meta_gradient(algorithm.objective, params, batch, inner)
    loop = {k: torch.zeros_like(v) for k, v in params.items()}
    for k in range(4):
        phi = {n: v.detach() for n, v in adapt(params, batch[0][k], batch[1][k], inner).items()}
        rhs = torch.func.grad(lambda p: task_loss(p, batch[2][k], batch[3][k]))(phi)
        u = implicit_gradient(lambda p: task_loss(p, batch[0][k], batch[1][k]), rhs, phi, 1.0, 8)
        loop = {n: loop[n] + u[n] / 4 for n in loop}
    for name in params:
        assert torch.allclose(batched[name], loop[name], atol=1e-5), name


def test_imaml_trains_and_exports_from_the_cli_and_refuses_a_zero_lambda(tmp_path, capsys):
    import json

    from metaedge.sdk.cli.main import main

    assert main(tiny_demod_argv("imaml", str(tmp_path / "run"), "--prox", "2.0", iterations=3, val_every=3)) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "bundle")]) == 0
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["algorithm"]["prox"] == 2.0
    assert any(i["role"] == "anchor" for i in manifest["graphs"]["adapt_step"]["inputs"])
    capsys.readouterr()
    assert main(["train", "demod", "--algo", "imaml", "--prox", "0", "--out", str(tmp_path / "bad")]) != 0
    assert "--prox 0.0 must be a positive number" in capsys.readouterr().err


def test_the_proximal_residual_is_one_before_any_step_and_vanishes_at_the_minimum():
    params, x, onehot = one_qpsk_device()
    assert float(proximal_residual(params, x, onehot, InnerLoop(lr=0.2, steps=0, options=Proximal(prox=2.0)))) == pytest.approx(1.0)
    assert float(proximal_residual(params, x, onehot, InnerLoop(lr=0.2, steps=300, options=Proximal(prox=2.0)))) < 1e-3
    assert 0.2 < float(proximal_residual(params, x, onehot, InnerLoop(lr=0.2, steps=2, options=Proximal(prox=2.0)))) < 1.0


@pytest.mark.parametrize("steps, warned", [(1, True), (200, False)])
def test_training_records_the_proximal_residual_and_warns_when_the_steps_stop_short(tmp_path, capsys, steps, warned):
    import json

    from metaedge.sdk.cli.main import main

    assert (
        main(
            tiny_demod_argv(
                "imaml",
                str(tmp_path / "run"),
                "--hidden",
                "8",
                "--inner-lr",
                "0.2",
                "--inner-steps",
                str(steps),
                "--prox",
                "2.0",
                iterations=2,
                val_every=1,
            )
        )
        == 0
    )
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert [c["iteration"] for c in curves] == [1, 2] and all(0 <= c["prox_residual"] for c in curves)
    assert ("the inner steps end far from the proximal minimum" in capsys.readouterr().err) == warned
