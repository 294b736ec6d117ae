"""Benchmark of the batched bilevel core against the per-task loop of the incumbent libraries.

Both compute the meta-gradient of the same algorithm on the same batch of tasks; timings
alternate between the two in every repeat so that machine noise hits both alike, and the
report gives medians, tasks per second, their ratio, and the largest difference between
the two meta-gradients.
"""
from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch

from metaedge.sdk.algorithms import compiled_meta_gradient, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.algorithms.reference import per_task_meta_gradient
from metaedge.sdk.models.mlp import MLPSpec
from metaedge.sdk.tasks.demod import DemodConfig, DemodTasks

SECOND_ORDER = {"maml": True, "fomaml": False}
GRAD_TOLERANCE = 1e-5


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_meta_train(algos: list[str], task_counts: list[int], repeats: int, compile: bool,
                     progress: Callable[[str], None] | None = None) -> dict:
    task = DemodConfig()
    tasks = DemodTasks(task, seed=0)
    spec = MLPSpec(sizes=(2, 10, 30, 30, task.order))
    params = {k: torch.from_numpy(v) for k, v in spec.init(np.random.default_rng(0)).items()}
    results = []
    for algo_name in algos:
        algo = get_algorithm(algo_name)
        inner = algo.inner(0.1, 1)
        for count in task_counts:
            frames = tasks.frames(tasks.devices("train", count), task.pilots, task.val_pilots, tasks.rng("train", 1))
            batch = to_batch(frames.x_tr, frames.y_tr, frames.x_va, frames.y_va, task.order)
            runners = {
                "batched": lambda: meta_gradient(algo.objective, params, batch, inner),
                "loop": lambda: per_task_meta_gradient(params, batch, inner, SECOND_ORDER[algo_name]),
            }
            compile_s = None
            if compile:
                compiled = compiled_meta_gradient(algo.objective, inner)
                compile_s = _timed(lambda: compiled(params, batch))
                runners["compiled"] = lambda: compiled(params, batch)
            grads = {name: run()[0] for name, run in runners.items()}  # also warms up
            samples: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(repeats):
                for name, run in runners.items():
                    samples[name].append(_timed(run))
            ms = {name: _median_ms(s) for name, s in samples.items()}
            diff = {name: max(float((grads[name][k] - grads["loop"][k]).abs().max()) for k in params)
                    for name in runners if name != "loop"}
            entry = {
                "algo": algo_name, "tasks": count, "median_ms": ms,
                "tasks_per_s": {name: count / (v / 1e3) for name, v in ms.items()},
                "speedup_vs_loop": {name: ms["loop"] / v for name, v in ms.items() if name != "loop"},
                "max_abs_grad_diff_vs_loop": diff,
                "grads_equal": all(d <= GRAD_TOLERANCE for d in diff.values()),
                "compile_s": compile_s,
            }
            results.append(entry)
            if progress:
                progress(f"{algo_name} × {count} tasks")
    return {
        "benchmark": "meta-train",
        "what": "one meta-gradient on a batch of tasks: batched core (torch.func vmap) vs per-task loop (clone, adapt, accumulate)",
        "task": {"name": "demod", "order": task.order, "pilots": task.pilots, "val_pilots": task.val_pilots,
                 "model": list(spec.sizes), "inner_steps": 1, "inner_lr": 0.1},
        "repeats": repeats, "grad_tolerance": GRAD_TOLERANCE,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "machine": platform.machine(), "processor": platform.processor() or None},
        "results": results,
    }
