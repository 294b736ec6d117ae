"""Sharp-MAML, Prox-MAML and ES-MAML against independent oracles: a per-task loop written from the
equations, the Moreau envelope's finite differences (Danskin), and autograd gradients and
Hessian-vector products that the evolution-strategies estimates must approach."""

import numpy as np
import pytest
import torch

from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta import esmaml, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.core import InnerLoop
from metaedge.sdk.meta.defaults import Proximal
from metaedge.sdk.models.mlp import MLPSpec, task_loss

F64 = torch.float64


def setup(sizes=(2, 6, 4), devices=3, pilots=6, val=10, seed=0):
    params = {k: torch.tensor(v, dtype=F64) for k, v in MLPSpec(sizes=sizes).init(np.random.default_rng(seed)).items()}
    tasks = DemodTasks(DemodConfig(order=4), seed=seed)
    f = tasks.frames(tasks.devices("train", devices), pilots, val, tasks.rng("train", 1))
    return params, tuple(t.to(F64) for t in to_batch(f.x_tr, f.y_tr, f.x_va, f.y_va, 4))


def test_sharp_maml_without_perturbations_is_maml():
    params, batch = setup()
    sharp, maml = get_algorithm("sharpmaml"), get_algorithm("maml")
    g_sharp, _ = meta_gradient(sharp.objective, params, batch, sharp.inner(0.3, 1, sharp_in=0.0, sharp_out=0.0))
    g_maml, _ = meta_gradient(maml.objective, params, batch, maml.inner(0.3, 1))
    for k in params:
        assert torch.allclose(g_sharp[k], g_maml[k], atol=1e-12), k


def test_sharp_maml_meta_gradient_equals_a_per_task_loop_of_eq_2_13_to_2_14():
    params, batch = setup()
    alpha, a_in, a_ot = 0.3, 0.05, 0.1
    algorithm = get_algorithm("sharpmaml")
    batched, _ = meta_gradient(algorithm.objective, params, batch, algorithm.inner(alpha, 1, sharp_in=a_in, sharp_out=a_ot))
    keys = list(params)
    flat = lambda d: torch.cat([d[k].reshape(-1) for k in keys])  # noqa: E731
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(3):
        x_tr, y_tr, x_va, y_va = (b[t] for b in batch)
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        g_tr = torch.autograd.grad(task_loss(theta, x_tr, y_tr), keys and [theta[k] for k in keys])
        eps_k = dict(zip(keys, (a_in * g / flat(dict(zip(keys, g_tr))).norm() for g in g_tr)))  # (2.14a)
        shifted = {k: theta[k] + eps_k[k] for k in keys}
        g_shift = torch.autograd.grad(task_loss(shifted, x_tr, y_tr), [shifted[k] for k in keys], create_graph=True)
        phi_tilde = {k: theta[k] - alpha * g for k, g in zip(keys, g_shift)}  # (2.14c)
        g_va = torch.autograd.grad(task_loss(phi_tilde, x_va, y_va), [theta[k] for k in keys])
        eps = dict(zip(keys, (a_ot * g / flat(dict(zip(keys, g_va))).norm() for g in g_va)))  # (2.14b)
        theta2 = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        point = {k: theta2[k] + eps[k] + eps_k[k] for k in keys}
        g_pt = torch.autograd.grad(task_loss(point, x_tr, y_tr), [point[k] for k in keys], create_graph=True)
        phi = {k: theta2[k] + eps[k] - alpha * g for k, g in zip(keys, g_pt)}  # (2.13b)
        for k, g in zip(keys, torch.autograd.grad(task_loss(phi, x_va, y_va) / 3, [theta2[k] for k in keys])):
            total[k] += g
    for k in params:
        assert torch.allclose(batched[k], total[k], atol=1e-10), k


def test_prox_maml_meta_gradient_is_the_gradient_of_the_moreau_envelope():
    """With φ at the proximal minimum, λ(θ − φ) (eq. 2.28) = ∇_θ min_φ [L(φ) + λ/2‖φ − θ‖²] (Danskin). λ is large
    enough that gradient descent converges to a point off every ReLU kink (asserted: stationarity)."""
    params, batch = setup(devices=2)
    lam, inner = 10.0, InnerLoop(lr=0.08, steps=400, options=Proximal(prox=10.0))
    algorithm = get_algorithm("proxmaml")
    grads, _ = meta_gradient(algorithm.objective, params, batch, inner)

    def envelope(theta):
        total = 0.0
        for t in range(2):
            x = torch.cat([batch[0][t], batch[2][t]])
            y = torch.cat([batch[1][t], batch[3][t]])
            phi = {k: v.clone() for k, v in theta.items()}
            for _ in range(400):
                g = torch.func.grad(lambda p: task_loss(p, x, y))(phi)
                phi = {k: phi[k] - 0.08 * (g[k] + lam * (phi[k] - theta[k])) for k in phi}
            assert max(float((g[k] + lam * (phi[k] - theta[k])).abs().max()) for k in phi) < 1e-9
            total += float(task_loss(phi, x, y) + lam / 2 * sum(((phi[k] - theta[k]) ** 2).sum() for k in phi))
        return total / 2

    rng = np.random.default_rng(1)
    for key in ("l0.weight", "l1.bias"):
        index = tuple(int(rng.integers(s)) for s in params[key].shape)
        plus, minus = {k: v.clone() for k, v in params.items()}, {k: v.clone() for k, v in params.items()}
        plus[key][index] += 1e-5
        minus[key][index] -= 1e-5
        numeric = (envelope(plus) - envelope(minus)) / 2e-5
        assert float(grads[key][index]) == pytest.approx(numeric, rel=1e-4, abs=1e-9), key


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_es_gradient_and_hessian_estimates_approach_autograd():
    params, batch = setup(sizes=(2, 4, 4), devices=1)
    x, y = batch[0][0], batch[1][0]
    keys = list(params)
    torch.manual_seed(0)
    true_grad = torch.cat([g.reshape(-1) for g in torch.func.grad(lambda p: task_loss(p, x, y))(params).values()])
    estimate = esmaml.es_gradient(params, keys, x, y, 20_000, 1e-3, task_loss)
    assert cosine(estimate, true_grad) > 0.98
    v = torch.randn_like(true_grad)
    hvp = torch.func.jvp(torch.func.grad(lambda p: task_loss(p, x, y)), (params,), (esmaml._unflat(v, params, keys),))[1]
    true_hvp = torch.cat([hvp[k].reshape(-1) for k in keys])
    assert cosine(esmaml.es_hessian_product(params, keys, x, y, v, 400_000, 0.05, task_loss), true_hvp) > 0.9


@pytest.mark.parametrize("hessian, oracle", [(False, "fomaml"), (True, "maml")])
def test_es_maml_meta_gradient_approaches_its_exact_counterpart(hessian, oracle):
    """Eq. 2.19 estimates FOMAML's meta-gradient, eq. 2.18 MAML's (one inner step)."""
    params, batch = setup(sizes=(2, 4, 4), devices=2)
    es, exact = get_algorithm("esmaml"), get_algorithm(oracle)
    torch.manual_seed(0)
    g_es, _ = meta_gradient(
        es.objective,
        params,
        batch,
        es.inner(0.5, 1, es_directions=200_000 if hessian else 20_000, es_delta=0.02 if hessian else 1e-3, es_hessian=hessian),
    )
    g_ex, _ = meta_gradient(exact.objective, params, batch, exact.inner(0.5, 1))
    flat = lambda g: torch.cat([g[k].reshape(-1) for k in params])  # noqa: E731
    assert cosine(flat(g_es), flat(g_ex)) > 0.95
