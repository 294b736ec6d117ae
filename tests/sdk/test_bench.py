"""The meta-train benchmark's machinery (not its speed: speed is measured by 'metaedge bench')."""

import json

from metaedge.sdk.bench.meta_train import bench_meta_train
from metaedge.sdk.cli.main import main


def test_bench_reports_rates_ratios_and_equal_gradients():
    report = bench_meta_train(["fomaml", "maml"], [3], repeats=2, compile=False)
    assert [(r["algo"], r["tasks"]) for r in report["results"]] == [("fomaml", 3), ("maml", 3)]
    for r in report["results"]:
        assert r["grads_equal"] and r["max_abs_grad_diff_vs_loop"]["batched"] <= 1e-5
        assert r["tasks_per_s"]["batched"] > 0 and r["speedup_vs_loop"]["batched"] > 0


def test_bench_cli_json(capsys):
    assert main(["bench", "meta-train", "--algos", "fomaml", "--tasks", "2", "--repeats", "1", "--no-compile", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "meta-train" and report["results"][0]["tasks"] == 2


def test_every_algorithm_is_benchmarked_against_its_own_per_task_loop_with_peak_memory():
    from metaedge.sdk.meta import ALGORITHMS

    report = bench_meta_train([a for a in ALGORITHMS if a not in ("fomaml", "maml")], [2], repeats=1, compile=False, memory_steps=[1, 8])
    for r in report["results"]:
        if r["algo"] in ("esmaml", "vbmaml", "alset", "modular"):  # random draws differ between loop and batch
            assert r["grads_equal"] is None and r["max_abs_grad_diff_vs_loop"] is None
        else:
            assert r["grads_equal"], (r["algo"], r["max_abs_grad_diff_vs_loop"])
        assert r["peak_memory_mib"] is None or r["peak_memory_mib"] >= 0
    memory = {(m["algo"], m["inner_steps"]): m["peak_memory_mib"] for m in report["memory_vs_inner_steps"]}
    assert set(memory) == {(a, k) for a in ("maml", "fomaml", "imaml") for k in (1, 8)}
