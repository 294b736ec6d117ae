"""Modular meta-learning (eq. 2.38): module assembly, simulated annealing against exhaustive search,
the relaxed assignment's meta-gradient against finite differences, and training from the CLI."""

import itertools

import numpy as np
import pytest
import torch
from conftest import tiny_demod_argv

from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.families.demod.training import TrainConfig, initial_theta
from metaedge.sdk.meta import get_algorithm, meta_gradient, modular, to_batch
from metaedge.sdk.models.mlp import MLPSpec, task_loss

F64 = torch.float64


def setup(modules=3, devices=2, pilots=8, dtype=F64):
    spec = MLPSpec(sizes=(2, 6, 4))
    theta = {
        k: torch.tensor(v, dtype=dtype)
        for k, v in initial_theta(spec, TrainConfig(algo="modular", modules=modules), np.random.default_rng(0)).items()
    }
    tasks = DemodTasks(DemodConfig(order=4), seed=0)
    f = tasks.frames(tasks.devices("train", devices), pilots, 10, tasks.rng("train", 1))
    return theta, tuple(t.to(dtype) for t in to_batch(f.x_tr, f.y_tr, f.x_va, f.y_va, 4))


def test_assembly_picks_one_module_per_layer_and_the_mixture_of_a_one_hot_is_that_module():
    theta, _ = setup()
    assert modular.layers(theta) == ["l0", "l1"]
    net = modular.assemble(theta, torch.tensor([2, 0]))
    assert torch.equal(net["l0.weight"], theta["l0.weight"][2]) and torch.equal(net["l1.bias"], theta["l1.bias"][0])
    mixed = modular.mixture(theta, torch.tensor([[0.0, 0.0, 60.0], [60.0, 0.0, 0.0]], dtype=F64))
    assert all(torch.allclose(mixed[k], net[k]) for k in net)


def test_annealing_finds_the_exhaustive_optimum_of_the_training_loss():
    theta, batch = setup(modules=4)
    x, onehot = batch[0][0], batch[1][0]
    losses = {c: float(task_loss(modular.assemble(theta, torch.tensor(c)), x, onehot)) for c in itertools.product(range(4), repeat=2)}
    best = min(losses, key=losses.get)
    torch.manual_seed(0)
    found = modular.anneal(theta, x, onehot, 60, task_loss)
    assert float(task_loss(found, x, onehot)) == pytest.approx(losses[best], abs=1e-12)


def test_exhaustive_search_picks_the_first_assignment_with_the_lowest_training_loss():
    theta, batch = setup(modules=3)
    x, onehot = batch[0][0], batch[1][0]
    losses = {c: float(task_loss(modular.assemble(theta, torch.tensor(c)), x, onehot)) for c in itertools.product(range(3), repeat=2)}
    best = min(losses, key=losses.get)  # the first of equal losses in row-major order, as the spec says
    assert tuple(modular.best_choice(theta, x, onehot, task_loss).tolist()) == best
    chosen = modular.exhaustive(theta, x, onehot, task_loss)
    assert all(torch.equal(chosen[k], modular.assemble(theta, torch.tensor(best))[k]) for k in chosen)
    logits = modular.best_assignment(theta, x, onehot, task_loss)
    assert torch.equal(logits.argmax(-1), torch.tensor(best)) and (logits != 0).sum() == 2 * 2


def test_annealed_meta_gradient_reaches_exactly_the_selected_modules():
    theta, batch = setup(devices=1)
    algorithm = get_algorithm("modular")
    inner = algorithm.inner(1.0, 1, proposals=60)
    torch.manual_seed(0)
    grads, _ = meta_gradient(algorithm.objective, theta, batch, inner)
    torch.manual_seed(0)
    chosen = modular.anneal(theta, batch[0][0], batch[1][0], 60, task_loss)
    used = [next(m for m in range(3) if torch.equal(theta[f"{layer}.weight"][m], chosen[f"{layer}.weight"])) for layer in ("l0", "l1")]
    expected = torch.func.grad(lambda p: task_loss(p, batch[2][0], batch[3][0]))(chosen)
    for i, layer in enumerate(("l0", "l1")):
        for m in range(3):
            g = grads[f"{layer}.weight"][m]
            assert torch.allclose(g, expected[f"{layer}.weight"]) if m == used[i] else not g.any()


def test_relaxed_assignment_meta_gradient_matches_finite_differences():
    theta, batch = setup()
    algorithm = get_algorithm("modular")
    inner = algorithm.inner(2.0, 3, assignment="relaxed")
    grads, _ = meta_gradient(algorithm.objective, theta, batch, inner)

    def value(params):
        per_task = torch.func.vmap(algorithm.objective, in_dims=(None, 0, 0, 0, 0, None))
        return float(per_task(params, *batch, inner)[0].mean())

    for key, index in (("l0.weight", (1, 0, 3)), ("l1.bias", (2, 1))):
        plus, minus = {k: v.clone() for k, v in theta.items()}, {k: v.clone() for k, v in theta.items()}
        plus[key][index] += 1e-6
        minus[key][index] -= 1e-6
        assert float(grads[key][index]) == pytest.approx((value(plus) - value(minus)) / 2e-6, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("assignment", ["anneal", "exhaustive", "relaxed"])
def test_modular_trains_and_evaluates_from_the_cli(tmp_path, capsys, assignment):
    from metaedge.sdk.cli.main import main

    run = tmp_path / assignment
    assert (
        main(tiny_demod_argv("modular", str(run), "--assignment", assignment, "--modules", "2", "--proposals", "5", iterations=3, val_every=3)) == 0
    )
    assert main(["eval", str(run), "--pilots", "8", "--devices", "3", "--payload", "50", "--no-baselines", "--quiet"]) == 0
    assert (
        main(["eval", str(run), "--pilots", "8", "--devices", "3", "--payload", "50", "--no-baselines", "--quiet", "--assignment", "exhaustive"]) == 0
    )
    assert main(["train", "demod", "--algo", "modular", "--assignment", "greedy", "--out", str(tmp_path / "bad")]) != 0
    assert "--assignment 'greedy' is unknown; use anneal, exhaustive or relaxed" in capsys.readouterr().err


def test_the_assignment_override_needs_a_modular_run(tmp_path, capsys):
    from metaedge.sdk.cli.main import main

    run = tmp_path / "maml"
    assert main(tiny_demod_argv("maml", str(run), iterations=2, val_every=2)) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--pilots", "8", "--devices", "3", "--payload", "50", "--assignment", "exhaustive"]) != 0
    err = capsys.readouterr().err
    assert "--assignment applies to modular runs" in err and len(err.strip().splitlines()) == 1
