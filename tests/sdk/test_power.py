"""Power control (monograph §5.5): topologies, the sum-rate, the REGNN, meta-learning, the benchmark."""

import json
import math

import numpy as np
import pytest
import torch

from metaedge.sdk.cli.main import main
from metaedge.sdk.families.power import model as regnn
from metaedge.sdk.families.power.config import PowerBench
from metaedge.sdk.families.power.learning import initial, new_topology_rates, train
from metaedge.sdk.families.power.task import PowerConfig, PowerTasks


def slots(count=4, split="test"):
    env = PowerTasks(PowerConfig(), seed=0)
    return env.topologies(split, 6), env.slots(env.topologies(split, 6), count, env.rng(split, 1))


def test_sum_rate_is_eq_5_26_with_the_interference_scaled_by_the_coupling():
    rng = np.random.default_rng(0)
    g, p, noise, c = rng.exponential(1.0, (3, 3)), rng.uniform(0, 1, 3), 0.1, 2.5
    expected = sum(math.log2(1 + g[j, j] * p[j] / (noise + c * sum(g[i, j] * p[i] for i in range(3) if i != j))) for j in range(3))
    got = regnn.sum_rate(*(torch.tensor(v, dtype=torch.float64)[None] for v in (g, noise, c, p)))
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_topologies_vary_in_size_and_interfere_only_within_range():
    (large_scale, noise, coupling), x = slots()
    links = (np.diagonal(large_scale, axis1=1, axis2=2) > 0).sum(1)
    assert links.min() >= 10 and links.max() <= 20 and len(set(links)) > 1
    assert ((large_scale > 0).sum((1, 2)) < links**2).all()  # not everyone interferes with everyone
    assert ((1e-5 <= noise) & (noise <= 1e-2)).all() and ((0.1 <= coupling) & (coupling <= 10)).all()
    assert x.shape == (6, 4, 20 * 20 + 2) and np.allclose(x[:, :, -2], noise[:, None]) and np.allclose(x[:, :, -1], coupling[:, None])


def test_the_coupling_is_hidden_from_the_allocator_but_changes_the_best_powers():
    """What adaptation is for: the allocator's powers do not depend on c, the sum-rate and its gradient do."""
    theta = initial("joint", PowerBench())
    _, x = slots()
    weak, strong = (torch.from_numpy(x[0]).clone() for _ in range(2))
    weak[:, -1], strong[:, -1] = 0.1, 10.0
    torch.testing.assert_close(regnn.powers(theta, weak), regnn.powers(theta, strong))
    unused = torch.zeros(len(weak), 1)
    assert regnn.task_loss(theta, strong, unused) > regnn.task_loss(theta, weak, unused) + 1.0  # more interference, less rate
    g_weak, g_strong = (torch.func.grad(regnn.task_loss)(theta, s, unused)["l2.bias"] for s in (weak, strong))
    assert g_weak.item() < 2 * g_strong.item() < 0  # raising every power pays far more when c is small


def test_padded_links_change_nothing_and_the_policy_is_permutation_equivariant():
    theta = initial("joint", PowerBench())
    _, x = slots()
    x = torch.from_numpy(x[0])
    g, noise, coupling = regnn.gains(x)
    v = int((torch.diagonal(g[0]) > 0).sum())
    hidden = torch.stack([noise, coupling], -1)
    unpadded = torch.cat([g[:, :v, :v].reshape(len(g), -1), hidden], -1)
    p_full, p_small = regnn.powers(theta, x), regnn.powers(theta, unpadded)
    torch.testing.assert_close(p_full[:, :v], p_small)
    torch.testing.assert_close(regnn.sum_rate(g, noise, coupling, p_full), regnn.sum_rate(g[:, :v, :v], noise, coupling, p_small))
    perm = torch.randperm(v)
    permuted = torch.cat([g[:, :v, :v][:, perm][:, :, perm].reshape(len(g), -1), hidden], -1)
    torch.testing.assert_close(regnn.powers(theta, permuted), p_small[:, perm])


@pytest.mark.parametrize("method", ["joint", "fomaml", "modular"])
def test_trained_allocators_beat_full_power_on_new_topologies(method):
    cfg = PowerBench(iterations=60, test_periods=20, test_slots=20, proposals=5)
    learned = new_topology_rates(method, train(method, 10, cfg), cfg).mean()
    assert new_topology_rates(None, None, cfg).mean() + 1.0 < learned < new_topology_rates("optimised", None, cfg).mean()


def test_modular_theta_stacks_modules_and_adapts_by_choosing_them():
    theta = initial("modular", PowerBench(modules=3))
    assert all(v.shape[0] == 3 for v in theta.values())
    trained = train("modular", 2, PowerBench(iterations=2, tasks_per_batch=2, proposals=3))
    assert set(trained) == set(theta)


def test_bench_power_quick_writes_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "power.png"
    assert main(["bench", "power", "--quick", "--algos", "joint,modular", "--plot", str(plot), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["methods"] == ["joint", "modular"] and set(report["sum_rate"]["joint"]) == {"1", "2"}
    assert report["full_power"]["sum_rate"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_parallel_runs_give_the_same_report():
    """--jobs trains the runs in separate processes; each run seeds itself, so the report is the serial one."""
    from metaedge.sdk.families.power.bench import quick, run_benchmark

    cfg = quick(PowerBench())
    assert run_benchmark(cfg, ("joint", "fomaml", "modular"), jobs=2) == run_benchmark(cfg, ("joint", "fomaml", "modular"))


@pytest.mark.parametrize(
    "argv, message",
    [(["--algos", "joint,maml"], "unknown algorithm 'maml'"), (["--periods", "0,5"], "argument --periods: '0,5' must list positive integers")],
)
def test_bad_power_flags_get_one_line(argv, message, capsys):
    assert main(["bench", "power", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message", [(["--inner-lr", "-0.1"], "--inner-lr -0.1 must be a positive number"), (["--inner-steps", "0"], "argument --inner-steps")]
)
def test_bad_train_power_flags_get_one_line(argv, message, tmp_path, capsys):
    assert main(["train", "power", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def power_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("power") / "run"
    assert main(["train", "power", "--out", str(run), "--iterations", "20", "--periods", "10", "--quiet"]) == 0
    return run


def test_the_allocator_exports_and_the_onnx_device_adapts_without_labels(power_run, tmp_path):
    from metaedge.backends.onnx import OnnxBackend
    from metaedge.deploy.bundle import read_bundle
    from metaedge.sdk.families.power.run import load_power_run, power_frames
    from metaedge.sdk.meta.core import InnerLoop, adapt

    assert main(["export", str(power_run), "--out", str(tmp_path / "b")]) == 0
    bundle = read_bundle(tmp_path / "b")
    m = bundle.manifest.raw
    assert (
        m["task"]["outputs"] == 20
        and "classes" not in m["task"]
        and m["task"]["features"][-2:] == ["noise", "coupling"]
        and len(m["task"]["features"]) == 402
    )
    assert [i["name"] for i in m["graphs"]["adapt_step"]["inputs"]][-1] == "pilot_samples"  # no labels
    assert m["algorithm"]["loss"] == "negative_sum_rate"
    backend = OnnxBackend()
    backend.load(bundle)
    assert backend.selftest().passed
    pilots, slots = power_frames(m["task"], 2, 5, 30, seed=3)
    _, cfg, theta = load_power_run(power_run)
    for p, x in zip(pilots, slots):
        backend.reset()
        backend.adapt(p, None)
        adapted = adapt(theta, torch.from_numpy(p), torch.zeros(5, 1), InnerLoop(lr=cfg.inner_lr, steps=cfg.inner_steps, loss=regnn.task_loss))
        np.testing.assert_allclose(backend.predict(x), regnn.powers(adapted, torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_runs_and_bundles_from_before_the_coupling_are_refused_by_name(power_run, tmp_path, capsys):
    """They were trained with c = 1 and their samples lack the coupling: mis-scoring them silently would be worse."""
    import shutil

    from metaedge.sdk.errors import UserError
    from metaedge.sdk.families.power.run import power_frames

    old = tmp_path / "old"
    shutil.copytree(power_run, old)
    config = json.loads((old / "config.json").read_text())
    del config["task"]["coupling"]
    (old / "config.json").write_text(json.dumps(config))
    assert main(["export", str(old), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert "from before the interference coupling" in err and "retrain it" in err and len(err.splitlines()) == 1
    with pytest.raises(UserError, match="re-export its run"):
        power_frames(config["task"], 1, 5, 5, seed=0)


def test_a_modular_allocator_exports_and_its_device_picks_the_best_assignment(tmp_path):
    """The device holds every module and scores all assignments on the pilot slots (spec §7.5), as the host does."""
    from metaedge.backends.onnx import OnnxBackend
    from metaedge.deploy.bundle import read_bundle
    from metaedge.sdk.families.power.run import load_power_run, power_frames
    from metaedge.sdk.meta import modular

    run = tmp_path / "modular"
    assert main(["train", "power", "--algo", "modular", "--out", str(run), "--iterations", "2", "--periods", "2", "--quiet"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "b")]) == 0
    bundle = read_bundle(tmp_path / "b")
    m = bundle.manifest.raw
    assert m["algorithm"]["adapts"] == [modular.ASSIGNMENT] and m["algorithm"]["assignment"] == "exhaustive"
    assert m["model"]["modules"] == 3
    backend = OnnxBackend()
    backend.load(bundle)
    assert backend.selftest().passed
    pilots, slots = power_frames(m["task"], 1, 5, 30, seed=4)
    _, _, theta = load_power_run(run)
    backend.reset()
    backend.adapt(pilots[0], None)
    chosen = modular.best_choice(theta, torch.from_numpy(pilots[0]), torch.zeros(5, 1), regnn.task_loss)
    assert np.array_equal(backend.params[modular.ASSIGNMENT].argmax(-1), chosen.numpy())
    expected = regnn.powers(modular.assemble(theta, chosen), torch.from_numpy(slots[0])).detach().numpy()
    np.testing.assert_allclose(backend.predict(slots[0]), expected, atol=1e-5)
