"""Benchmark of the batched bilevel core against the per-task loop of the incumbent libraries.

Both compute the meta-gradient of the same algorithm on the same batch of tasks; timings
alternate between the two in every repeat so that machine noise hits both alike, and the
report gives medians, tasks per second, their ratio, and the largest difference between
the two meta-gradients. The loop is the hand-written clone-adapt-accumulate loop for MAML and
FOMAML, and the algorithm's own per-task objective called task by task for the others; for
algorithms that draw random numbers (ES-MAML, the Gaussian Bayesian form) the two draw
different ones, so their gradients are not compared.

Peak memory: the resident memory one meta-gradient adds at its peak (Linux's high-water mark,
reset before the measured call).
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch

from metaedge.sdk.bench.config import MetaTrainBench
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.recipes import recipe
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta import compiled_meta_gradient, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.reference import per_task_meta_gradient, per_task_objective_gradient
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table

SECOND_ORDER = {"maml": True, "fomaml": False}  # the incumbents' loop, written out
RANDOM = {"esmaml", "vbmaml", "alset", "modular"}  # draw random numbers inside the objective
GRAD_TOLERANCE = 1e-5


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _timed(fn: Callable[[], object], device: torch.device = torch.device("cpu")) -> float:
    """Seconds of one call; on a GPU, until its kernels are done."""
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _train_config(algo_name: str):
    from metaedge.sdk.families.demod.config import TrainConfig

    return TrainConfig(algo=algo_name)


def _setup(algo_name: str, count: int, steps: int | None, device: torch.device = torch.device("cpu")):
    from metaedge.sdk.families.demod.training import initial_theta

    task = DemodConfig()
    tasks = DemodTasks(task, seed=0)
    train = _train_config(algo_name)
    spec = train.model(task)
    algo = get_algorithm(algo_name)
    own = recipe(algo_name)
    steps = own["inner_steps"] if steps is None else steps
    params = {k: torch.from_numpy(v).to(device) for k, v in initial_theta(spec, train, np.random.default_rng(0)).items()}
    frames = tasks.frames(tasks.devices("train", count), task.pilots, task.val_pilots, tasks.rng("train", 1))
    batch = tuple(t.to(device) for t in to_batch(frames.x_tr, frames.y_tr, frames.x_va, frames.y_va, task.order))
    return task, spec, algo, algo.inner(0.1, steps, pooled=own.get("inner_data") == "pooled"), params, batch


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def peak_memory_mib(algo: str, tasks: int, steps: int | None = None, device: torch.device = torch.device("cpu")) -> float | None:
    """Peak memory one batched meta-gradient adds (MiB). On the CPU, resident memory: after a warm-up call, freed
    memory is returned to the system, the kernel's high-water mark is reset (``clear_refs`` 5), and the second
    call's peak is read against the resident set before it (None where Linux does not allow this). On a GPU, the
    allocator's peak over the call against what was allocated before it."""
    import ctypes
    import gc

    _, _, algorithm, inner, params, batch = _setup(algo, tasks, steps, device)
    meta_gradient(algorithm.objective, params, batch, inner)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        meta_gradient(algorithm.objective, params, batch, inner)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    meta_gradient(algorithm.objective, params, batch, inner)
    return (_status_kib("VmHWM") - before) / 1024


def _measure(algo_name: str, count: int, repeats: int, compile: bool, progress: Callable[[str], None] | None, device: torch.device) -> dict:
    """One algorithm at one batch size on ``device``: median times of the batched core, the per-task loop and
    (``compile``) the compiled core, measured in alternation, and how far their meta-gradients are from the loop's."""
    _, _, algo, inner, params, batch = _setup(algo_name, count, None, device)
    loop = (
        (lambda: per_task_meta_gradient(params, batch, inner, SECOND_ORDER[algo_name]))
        if algo_name in SECOND_ORDER
        else (lambda: per_task_objective_gradient(algo.objective, params, batch, inner))
    )
    runners = {"batched": lambda: meta_gradient(algo.objective, params, batch, inner), "loop": loop}
    compile_s = None
    if compile:
        compiled = compiled_meta_gradient(algo.objective, inner)
        compile_s = _timed(lambda: compiled(params, batch), device)
        runners["compiled"] = lambda: compiled(params, batch)
    grads = {name: run()[0] for name, run in runners.items()}  # also warms up
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            samples[name].append(_timed(run, device))
    ms = {name: _median_ms(s) for name, s in samples.items()}
    diff = (
        None
        if algo_name in RANDOM
        else {name: max(float((grads[name][k] - grads["loop"][k]).abs().max()) for k in params) for name in runners if name != "loop"}
    )
    if progress:
        progress(f"{algo_name} × {count} tasks")
    return {
        "algo": algo_name,
        "tasks": count,
        "inner_steps": inner.steps,
        "median_ms": ms,
        "tasks_per_s": {name: count / (v / 1e3) for name, v in ms.items()},
        "speedup_vs_loop": {name: ms["loop"] / v for name, v in ms.items() if name != "loop"},
        "max_abs_grad_diff_vs_loop": diff,
        "grads_equal": None if diff is None else all(d <= GRAD_TOLERANCE for d in diff.values()),
        "compile_s": compile_s,
        "peak_memory_mib": peak_memory_mib(algo_name, count, device=device),
    }


def bench_meta_train(
    algos: list[str],
    task_counts: list[int],
    repeats: int,
    compile: bool,
    progress: Callable[[str], None] | None = None,
    memory_steps: list[int] | None = None,
    device: str = "cpu",
) -> dict:
    from metaedge.sdk.meta.placement import torch_device

    where = torch_device(device)
    results = [_measure(algo_name, count, repeats, compile, progress, where) for algo_name in algos for count in task_counts]
    task = DemodConfig()
    spec = _train_config(algos[0]).model(task)
    memory = [
        {"algo": a, "inner_steps": k, "tasks": max(task_counts), "peak_memory_mib": peak_memory_mib(a, max(task_counts), k, where)}
        for a in ("maml", "fomaml", "imaml")
        for k in (memory_steps or [])
    ]
    return {
        "benchmark": "meta-train",
        "what": "one meta-gradient on a batch of tasks: batched core (torch.func vmap) vs per-task loop (clone, adapt, accumulate)",
        "task": {
            "name": "demod",
            "order": task.order,
            "pilots": task.pilots,
            "val_pilots": task.val_pilots,
            "model": list(spec.sizes),
            "inner_steps": "each algorithm's recipe",
            "inner_lr": 0.1,
        },
        "memory_vs_inner_steps": memory,
        "repeats": repeats,
        "grad_tolerance": GRAD_TOLERANCE,
        "environment": {
            "device": str(where),
            "device_name": torch.cuda.get_device_name(where) if where.type == "cuda" else platform.processor() or None,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor() or None,
        },
        "results": results,
    }


def data_parallel(algo: str, tasks: int, repeats: int, world: int) -> list[dict]:
    """The sharded meta-gradient on 1 … ``world`` torchrun processes (gloo, one thread each), the same ``tasks`` each
    time: tasks/s and the scaling efficiency against one process."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        raise UserError("--distributed needs torchrun (it comes with torch); install torch in this environment")
    rows = []
    for n in range(1, world + 1):
        command = [torchrun, "--standalone", f"--nproc-per-node={n}", "-m", "metaedge.sdk.bench.data_parallel", algo, str(tasks), str(repeats)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "Error" in line] or [f"exit {done.returncode}"]
            raise UserError(f"the {n}-process run failed: {errors[-1].strip()}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for row in rows:
        row["efficiency"] = row["tasks_per_s"] / (row["world"] * rows[0]["tasks_per_s"])
    return rows


def run(options: MetaTrainBench, progress: Progress = silent) -> dict:
    """``metaedge bench meta-train``."""
    from metaedge.sdk.meta import ALGORITHMS

    algos = list(ALGORITHMS) if options.algos == ("all",) else list(options.algos)
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown:
        raise UserError(f"--algos: unknown {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)} or all")
    report = bench_meta_train(
        algos,
        list(options.tasks),
        options.repeats,
        compile=not options.no_compile,
        progress=lambda what: progress(label=what),
        memory_steps=list(options.memory_steps),
        device=options.device,
    )
    if options.distributed:
        if options.device != "cpu":
            raise UserError("--distributed times CPU processes (gloo); drop --device, or time the GPU without --distributed")
        if max(options.tasks) < options.distributed:
            raise UserError(f"--distributed {options.distributed}: the largest --tasks ({max(options.tasks)}) must give every process a task")
        progress(label=f"1 → {options.distributed} processes")
        report["data_parallel"] = data_parallel(algos[0], max(options.tasks), options.repeats, options.distributed)
    return report


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def text(report: dict) -> str:
    rows = []
    for r in report["results"]:
        for variant in ("batched", "compiled"):
            if variant in r["median_ms"]:
                diff = r["max_abs_grad_diff_vs_loop"]
                rows.append(
                    [
                        f"{r['algo']} × {r['tasks']}",
                        variant,
                        f"{r['median_ms'][variant]:.2f}",
                        f"{r['median_ms']['loop']:.2f}",
                        f"{r['tasks_per_s'][variant]:.0f}",
                        f"{r['speedup_vs_loop'][variant]:.1f}×",
                        "random" if diff is None else f"{diff[variant]:.1e}",
                        _mib(r["peak_memory_mib"]),
                    ]
                )
    env = report["environment"]
    lines = [
        f"meta-gradient on {env['device']}, median of {report['repeats']} (torch {env['torch']}, {env['threads']} threads)",
        format_table(["algo × tasks", "core", "core ms", "loop ms", "tasks/s", "speedup", "max |Δgrad|", "peak MiB"], rows),
    ]
    if report["memory_vs_inner_steps"]:
        memory = [[m["algo"], str(m["inner_steps"]), str(m["tasks"]), _mib(m["peak_memory_mib"])] for m in report["memory_vs_inner_steps"]]
        lines += ["", "peak memory of one meta-gradient vs inner steps (MiB)", format_table(["algo", "inner steps", "tasks", "peak MiB"], memory)]
    if report.get("data_parallel"):
        scaling = [[str(r["world"]), f"{r['median_ms']:.2f}", f"{r['tasks_per_s']:.0f}", f"{r['efficiency']:.2f}"] for r in report["data_parallel"]]
        table = format_table(["processes", "ms", "tasks/s", "efficiency"], scaling)
        lines += ["", "sharded meta-gradient over torchrun processes (gloo, a thread each)", table]
    return "\n".join(lines)
