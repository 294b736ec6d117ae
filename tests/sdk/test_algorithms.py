"""The batched core against independent references: double backward, finite differences, formulas."""

import numpy as np
import pytest
import torch
from torch.func import grad

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta import ALGORITHMS, InnerLoop, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.defaults import Pooled
from metaedge.sdk.meta.reference import per_task_meta_gradient
from metaedge.sdk.models.mlp import MLPSpec, task_loss


def tiny_problem(tasks=3, context=0, dtype=torch.float64, order=4, pilots=3, val=5, seed=0):
    spec = MLPSpec(sizes=(2, 5, order), context=context)
    params = {k: torch.tensor(v, dtype=dtype) for k, v in spec.init(np.random.default_rng(seed)).items()}
    if context:  # a non-zero context makes its gradient path visible
        params["context"] = torch.linspace(-0.3, 0.3, context, dtype=dtype)
    dt = DemodTasks(DemodConfig(order=order, pilots=pilots, val_pilots=val), seed=seed)
    f = dt.frames(dt.devices("train", tasks), pilots, val, np.random.default_rng(seed))
    batch = tuple(t.to(dtype) for t in to_batch(f.x_tr, f.y_tr, f.x_va, f.y_va, order))
    return params, batch


def meta_loss(params, batch, inner):
    """The MAML meta-training loss (eq. 2.1a), one task at a time, written independently of the core."""
    total = 0.0
    for x_tr, y_tr, x_va, y_va in zip(*batch):
        keys = inner.keys(params)
        fast = dict(params)
        for _ in range(inner.steps):
            g = grad(lambda f: task_loss({**fast, **f}, x_tr, y_tr))({k: fast[k] for k in keys})
            fast = {**fast, **{k: fast[k] - fast.get("lr." + k, inner.lr) * g[k] for k in keys}}
        total = total + task_loss(fast, x_va, y_va)
    return total / len(batch[0])


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_matches_finite_differences(steps):
    params, batch = tiny_problem()
    inner = InnerLoop(lr=0.4, steps=steps)
    g, _ = meta_gradient(get_algorithm("maml").objective, params, batch, inner)
    rng = np.random.default_rng(1)
    for _ in range(4):
        v = {k: torch.tensor(rng.standard_normal(p.shape)) for k, p in params.items()}
        h = 1e-6
        plus = meta_loss({k: params[k] + h * v[k] for k in params}, batch, inner)
        minus = meta_loss({k: params[k] - h * v[k] for k in params}, batch, inner)
        fd = float((plus - minus) / (2 * h))
        analytic = float(sum((g[k] * v[k]).sum() for k in params))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_maml_differs_from_fomaml_by_the_second_order_term():
    params, batch = tiny_problem()
    inner = InnerLoop(lr=0.4, steps=1)
    g_maml, _ = meta_gradient(get_algorithm("maml").objective, params, batch, inner)
    g_fo, _ = meta_gradient(get_algorithm("fomaml").objective, params, batch, inner)
    assert max(float((g_maml[k] - g_fo[k]).abs().max()) for k in params) > 1e-4


@pytest.mark.parametrize("algo,second_order", [("maml", True), ("fomaml", False)])
@pytest.mark.parametrize("steps", [1, 2])
def test_batched_core_equals_double_backward_loop(algo, second_order, steps):
    params, batch = tiny_problem(tasks=4, dtype=torch.float32)
    inner = InnerLoop(lr=0.1, steps=steps)
    g, loss = meta_gradient(get_algorithm(algo).objective, params, batch, inner)
    g_ref, loss_ref = per_task_meta_gradient(params, batch, inner, second_order)
    for k in params:
        torch.testing.assert_close(g[k], g_ref[k], atol=1e-6, rtol=1e-5)
    assert float(loss) == pytest.approx(float(loss_ref), rel=1e-5)


def test_fomaml_update_is_validation_gradient_at_adapted_parameters():
    """Eq. 2.16–2.17 written out by hand with autograd."""
    params, batch = tiny_problem()
    lr = 0.3
    g, _ = meta_gradient(get_algorithm("fomaml").objective, params, batch, InnerLoop(lr=lr, steps=1))
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for x_tr, y_tr, x_va, y_va in zip(*batch):
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        g_tr = torch.autograd.grad(task_loss(theta, x_tr, y_tr), list(theta.values()))
        phi = {k: (theta[k] - lr * gi).detach().requires_grad_(True) for k, gi in zip(theta, g_tr)}
        g_va = torch.autograd.grad(task_loss(phi, x_va, y_va), list(phi.values()))
        for k, gi in zip(phi, g_va):
            expected[k] += gi / len(batch[0])
    for k in params:
        torch.testing.assert_close(g[k], expected[k])


def reptile_target(params, batches, lr):
    """φ after one plain SGD step of size ``lr`` on each (x, y) of ``batches`` in turn, written without the core."""
    phi = dict(params)
    for x, y in batches:
        theta = {k: v.clone().requires_grad_(True) for k, v in phi.items()}
        gs = torch.autograd.grad(task_loss(theta, x, y), list(theta.values()))
        phi = {k: (theta[k] - lr * gi).detach() for k, gi in zip(theta, gs)}
    return phi


def test_reptile_update_interpolates_towards_adapted_parameters():
    """Eq. 2.23: SGD with step β on the Reptile objective gives θ ← (1 − β)θ + β·mean φ_k."""
    params, batch = tiny_problem()
    lr, beta = 0.3, 0.25
    g, _ = meta_gradient(get_algorithm("reptile").objective, params, batch, InnerLoop(lr=lr, steps=2))
    phis = [reptile_target(params, [(x_tr, y_tr)] * 2, lr) for x_tr, y_tr, *_ in zip(*batch)]
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.SGD(list(leaves.values()), lr=beta)
    for k in leaves:
        leaves[k].grad = g[k]
    opt.step()
    for k in params:
        expected = (1 - beta) * params[k] + beta * torch.stack([p[k] for p in phis]).mean(0)
        torch.testing.assert_close(leaves[k].detach(), expected)


def test_pooled_reptile_steps_through_support_then_validation_minibatches():
    """With pooled data, step j uses rows j·|D_tr| … (j+1)·|D_tr| − 1 of D_tr ∪ D_va (wrapping round), so the
    pseudo-gradient θ − φ differs from the support-only one; a single pooled step is eq. 2.22 exactly."""
    params, batch = tiny_problem(pilots=3, val=5)
    lr, steps = 0.3, 4
    pooled, _ = meta_gradient(get_algorithm("reptile").objective, params, batch, InnerLoop(lr=lr, steps=steps, options=Pooled(pooled=True)))
    support, _ = meta_gradient(get_algorithm("reptile").objective, params, batch, InnerLoop(lr=lr, steps=steps))
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for x_tr, y_tr, x_va, y_va in zip(*batch):
        x, y = torch.cat([x_tr, x_va]), torch.cat([y_tr, y_va])  # 8 rows: steps take 0-2, 3-5, 6-7+0, 1-3
        rows = [[0, 1, 2], [3, 4, 5], [6, 7, 0], [1, 2, 3]]
        phi = reptile_target(params, [(x[r], y[r]) for r in rows], lr)
        for k in params:
            expected[k] += (params[k] - phi[k]) / len(batch[0])
    for k in params:
        torch.testing.assert_close(pooled[k], expected[k])
    assert max(float((pooled[k] - support[k]).abs().max()) for k in params) > 1e-3
    one_pooled, _ = meta_gradient(get_algorithm("reptile").objective, params, batch, InnerLoop(lr=lr, steps=1, options=Pooled(pooled=True)))
    one_support, _ = meta_gradient(get_algorithm("reptile").objective, params, batch, InnerLoop(lr=lr, steps=1))
    for k in params:
        torch.testing.assert_close(one_pooled[k], one_support[k])


def test_cavia_adapts_only_the_context_and_matches_the_loop():
    params, batch = tiny_problem(context=3, dtype=torch.float32)
    cavia = get_algorithm("cavia")
    inner = cavia.inner(0.5, 2)
    assert inner.adapt == ("context",)
    g, _ = meta_gradient(cavia.objective, params, batch, inner)
    g_ref, _ = per_task_meta_gradient(params, batch, inner, second_order=True)
    for k in params:
        torch.testing.assert_close(g[k], g_ref[k], atol=1e-6, rtol=1e-5)


def test_joint_gradient_is_the_pooled_loss_gradient():
    params, batch = tiny_problem()
    g, _ = meta_gradient(get_algorithm("joint").objective, params, batch, InnerLoop())
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    losses = [task_loss(theta, torch.cat([a, c]), torch.cat([b, d])) for a, b, c, d in zip(*batch)]
    expected = torch.autograd.grad(torch.stack(losses).mean(), list(theta.values()))
    for k, e in zip(params, expected):
        torch.testing.assert_close(g[k], e)


def test_every_algorithm_runs_batched_on_the_default_model():
    spec = MLPSpec()
    dt = DemodTasks(seed=0)
    f = dt.frames(dt.devices("train", 5), 4, 160, np.random.default_rng(0))
    batch = to_batch(f.x_tr, f.y_tr, f.x_va, f.y_va, 16)
    from metaedge.sdk.families.demod.training import TrainConfig, initial_theta

    for name, algo in ALGORITHMS.items():
        s = MLPSpec(context=10) if algo.context else spec
        params = {k: torch.tensor(v) for k, v in initial_theta(s, TrainConfig(algo=name), np.random.default_rng(0)).items()}
        g, loss = meta_gradient(algo.objective, params, batch, algo.inner(0.1, 1))
        assert set(g) == set(params) and torch.isfinite(loss), name
        assert all(torch.isfinite(v).all() for v in g.values()), name


def test_unknown_algorithm_names_the_choices():
    with pytest.raises(UserError, match="choose one of: maml, fomaml, .*, modular, joint"):
        get_algorithm("mamll")


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["maml", "fomaml"])
def test_compiled_meta_gradient_equals_the_eager_one(algo):
    from metaedge.sdk.meta import compiled_meta_gradient

    params, batch = tiny_problem(tasks=4, dtype=torch.float32)
    inner = InnerLoop(lr=0.1, steps=2)
    g, loss = meta_gradient(get_algorithm(algo).objective, params, batch, inner)
    g_c, loss_c = compiled_meta_gradient(get_algorithm(algo).objective, inner)(params, batch)
    for k in params:
        torch.testing.assert_close(g_c[k], g[k], atol=1e-6, rtol=1e-5)
    assert float(loss_c) == pytest.approx(float(loss), rel=1e-5)


def test_metasgd_with_uniform_step_sizes_is_maml_and_learns_its_step_sizes():
    from metaedge.sdk.meta.core import STEP_PREFIX

    params, batch = tiny_problem()
    inner = InnerLoop(lr=0.3, steps=2)
    with_steps = {**params, **{STEP_PREFIX + k: torch.full_like(v, 0.3) for k, v in params.items()}}
    g_sgd, loss_sgd = meta_gradient(get_algorithm("metasgd").objective, with_steps, batch, inner)
    g_maml, loss_maml = meta_gradient(get_algorithm("maml").objective, params, batch, inner)
    for k in params:
        torch.testing.assert_close(g_sgd[k], g_maml[k])
    assert float(loss_sgd) == pytest.approx(float(loss_maml))
    assert all(float(g_sgd[STEP_PREFIX + k].abs().max()) > 0 for k in params)  # the step sizes get meta-gradients
    # and the step-size gradient matches finite differences along one direction
    key, h = STEP_PREFIX + "l0.weight", 1e-6
    bump = {**with_steps, key: with_steps[key] + h}
    dip = {**with_steps, key: with_steps[key] - h}
    fd = float((meta_loss(bump, batch, inner) - meta_loss(dip, batch, inner)) / (2 * h))
    assert float(g_sgd[key].sum()) == pytest.approx(fd, rel=1e-5)
