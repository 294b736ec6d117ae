"""Power control (monograph §5.5): topologies, the sum-rate, the REGNN, meta-learning, the benchmark."""
import json
import math

import numpy as np
import pytest
import torch

from metaedge.sdk.bench_power import PowerBench, initial, new_topology_rates, train
from metaedge.sdk.cli.main import main
from metaedge.sdk.models import regnn
from metaedge.sdk.tasks.power import PowerConfig, PowerTasks


def slots(count=4, split="test"):
    env = PowerTasks(PowerConfig(), seed=0)
    return env.topologies(split, 6), env.slots(env.topologies(split, 6), count, env.rng(split, 1))


def test_sum_rate_is_eq_5_26():
    rng = np.random.default_rng(0)
    g, p, noise = rng.exponential(1.0, (3, 3)), rng.uniform(0, 1, 3), 0.1
    expected = sum(math.log2(1 + g[j, j] * p[j] / (noise + sum(g[i, j] * p[i] for i in range(3) if i != j))) for j in range(3))
    got = regnn.sum_rate(torch.tensor(g)[None], torch.tensor([noise], dtype=torch.float64), torch.tensor(p)[None])
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_topologies_vary_in_size_and_interfere_only_within_range():
    (large_scale, noise), x = slots()
    links = (np.diagonal(large_scale, axis1=1, axis2=2) > 0).sum(1)
    assert links.min() >= 10 and links.max() <= 20 and len(set(links)) > 1
    assert ((large_scale > 0).sum((1, 2)) < links ** 2).all()            # not everyone interferes with everyone
    assert ((1e-5 <= noise) & (noise <= 1e-2)).all()
    assert x.shape == (6, 4, 20 * 20 + 1) and np.allclose(x[:, :, -1], noise[:, None])


def test_padded_links_change_nothing_and_the_policy_is_permutation_equivariant():
    theta = initial("joint", PowerBench())
    (large_scale, _), x = slots()
    x = torch.from_numpy(x[0])
    g, noise = regnn.gains(x)
    v = int((torch.diagonal(g[0]) > 0).sum())
    unpadded = torch.cat([g[:, :v, :v].reshape(len(g), -1), noise[:, None]], -1)
    p_full, p_small = regnn.powers(theta, x), regnn.powers(theta, unpadded)
    torch.testing.assert_close(p_full[:, :v], p_small)
    torch.testing.assert_close(regnn.sum_rate(g, noise, p_full), regnn.sum_rate(g[:, :v, :v], noise, p_small))
    perm = torch.randperm(v)
    permuted = torch.cat([g[:, :v, :v][:, perm][:, :, perm].reshape(len(g), -1), noise[:, None]], -1)
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
    assert main(["bench", "power", "--quick", "--methods", "joint,modular", "--plot", str(plot), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["methods"] == ["joint", "modular"] and set(report["sum_rate"]["joint"]) == {"1", "2"}
    assert report["full_power"]["sum_rate"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--methods", "joint,maml"], "unknown method 'maml'"),
    (["--periods", "0,5"], "argument --periods: '0,5' must list positive integers"),
])
def test_bad_power_flags_get_one_line(argv, message, capsys):
    assert main(["bench", "power", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
