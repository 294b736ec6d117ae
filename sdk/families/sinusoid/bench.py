"""Sinusoid regression benchmark (monograph §2.4.1, Figure 2.4): joint learning, MAML, iMAML and BMAML
on the same MLP (1→40→40→1), optimiser and adaptation budget; three panels:
(a) test loss against meta-training iterations, (b) best test loss against samples per task N,
(c) best test loss against the number of meta-training tasks K.

Test loss: mean squared error on ``test_points`` inputs of each of ``test_tasks`` held-out tasks,
after adapting on N samples of that task (BMAML: of the particles' mean prediction). Every
method adapts at test as it did in meta-training: MAML, BMAML and joint learning's fine-tuning
take the same steps, iMAML solves its proximal problem (more steps of the same size,
``prox_steps``), and BMAML's SVGD step has its own size (``svgd_lr``: SVGD divides it among the
particles); during meta-training each task gives N training and N validation samples.
The runs are independent, so ``jobs`` > 1 trains them in parallel processes.

With few tasks, which tasks are drawn decides more than the method does (K = 5: MAML's best MSE
ranged from 0.34 to 0.90 over five draws), so ``repeats`` > 1 repeats every run on further
draws (seeds ``seed``, ``seed`` + 1, …): the panels then show means over the draws, and each
method's paired difference to MAML comes with a t-interval over them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, replace
from typing import Callable

import numpy as np
import torch
from scipy import stats
from torch.func import vmap

from metaedge.sdk.families.demod.training import TrainConfig, initial_theta
from metaedge.sdk.families.sinusoid.config import METHODS, SinusoidBench, SinusoidFigure
from metaedge.sdk.families.sinusoid.task import SinusoidTasks
from metaedge.sdk.meta import get_algorithm
from metaedge.sdk.meta.bayes import mean_prediction
from metaedge.sdk.meta.core import adapt
from metaedge.sdk.meta.defaults import Gaussian
from metaedge.sdk.meta.outer import fit
from metaedge.sdk.models.mlp import MLPSpec
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.runs_parallel import run_all
from metaedge.sdk.stats import format_table, paired_text


def run(options: SinusoidFigure, progress: Progress = silent) -> dict:
    """``metaedge bench sinusoid``: the three panels of ``options`` and their plot."""
    from metaedge.sdk.plots import plot_sinusoid

    for method in options.algos:
        get_algorithm(method)
    cfg = quick(options.setup) if options.quick else options.setup
    runs = 1 + len(set(cfg.sample_grid) - {cfg.samples}) + len(set(cfg.task_grid) - {cfg.tasks})
    progress(0, total=len(options.algos) * runs * cfg.repeats)
    report = run_benchmark(cfg, options.algos, progress=lambda _: progress(), jobs=options.jobs)
    plot_sinusoid(report, options.plot)
    return {**report, "plot": str(options.plot)}


def text(report: dict) -> str:
    """The two tables of best test MSE, and each method's paired difference to MAML over task draws."""
    cfg, algos = report["setup"], report["methods"]
    draws = f", mean over {cfg['repeats']} task draws" if cfg["repeats"] > 1 else ""
    lines = [f"best test MSE vs samples per task N (K = {cfg['tasks']}{draws})"]
    rows = [[m, *(loss_cell(report["b_best_loss_vs_samples"][m][str(n)]) for n in cfg["sample_grid"])] for m in algos]
    lines += [
        format_table(["method", *map(str, cfg["sample_grid"])], rows),
        "",
        f"best test MSE vs meta-training tasks K (N = {cfg['samples']}{draws})",
    ]
    rows = [[m, *(loss_cell(report["c_best_loss_vs_tasks"][m][str(k)]) for k in cfg["task_grid"])] for m in algos]
    lines.append(format_table(["method", *map(str, cfg["task_grid"])], rows))
    for panel, label, grid in (("b", "N", cfg["sample_grid"]), ("c", "K", cfg["task_grid"])):
        for method, points in report.get("vs_maml", {}).get(panel, {}).items():
            cells = [f"{label}={x}: " + ("diverged" if points[str(x)] is None else paired_text(points[str(x)])) for x in grid]
            lines += ["", f"{method} − maml over {cfg['repeats']} draws (95 % t-interval): " + ", ".join(cells)]
    return "\n".join([*lines, "", f"written: {report['plot']}"])


def loss_cell(loss: float | None) -> str:
    return "diverged" if loss is None else f"{loss:.3f}"


def train_curve(method: str, n: int, k: int, seed: int, cfg: SinusoidBench) -> list[dict]:
    """Meta-train ``method`` on K = ``k`` tasks of draw ``seed`` with N = ``n`` samples; test loss every
    ``eval_every`` iterations."""
    cfg = replace(cfg, seed=seed)
    torch.manual_seed(cfg.seed)
    algorithm = get_algorithm(method)
    lr = cfg.svgd_lr if algorithm.posterior == "particles" else cfg.inner_lr
    inner = algorithm.inner(lr, cfg.prox_steps if algorithm.proximal else cfg.inner_steps, prox=cfg.prox)
    spec = MLPSpec(sizes=(1, *cfg.hidden, 1))
    init = initial_theta(spec, TrainConfig(algo=method, particles=cfg.particles), np.random.default_rng([cfg.seed, 1]))
    env = SinusoidTasks(seed=cfg.seed)
    pool, rng = env.tasks("train", k), env.rng("train", 1)
    test = [torch.from_numpy(a) for a in env.samples(env.tasks("test", cfg.test_tasks), (n, cfg.test_points), env.rng("test", 1))]

    def batch(_: int) -> tuple[torch.Tensor, ...]:
        chosen = pool[rng.choice(k, cfg.tasks_per_batch, replace=k < cfg.tasks_per_batch)]
        return tuple(torch.from_numpy(a) for a in env.samples(chosen, (n, n), rng))

    curve = []

    def evaluate(it: int, theta: dict, _loss: float) -> None:
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            loss = test_loss(theta, test, inner)
            curve.append({"iteration": it, "test_loss": loss if math.isfinite(loss) else None})  # None: diverged

    fit(algorithm.objective, {name: torch.from_numpy(v) for name, v in init.items()}, inner, batch, cfg.iterations, cfg.outer_lr, evaluate)
    return curve


@torch.no_grad()
def test_loss(theta, test, inner) -> float:
    x_tr, y_tr, x_te, y_te = test
    with torch.enable_grad():
        adapted = vmap(adapt, in_dims=(None, 0, 0, None), randomness="different")(theta, x_tr, y_tr, inner)
    prediction = vmap(mean_prediction, in_dims=(0, 0, None, None))(
        {k: v.detach() for k, v in adapted.items()}, x_te, inner.posterior, inner.of(Gaussian).samples
    )
    return float(((prediction - y_te) ** 2).mean())


def run_benchmark(cfg: SinusoidBench, methods: tuple[str, ...] = METHODS, progress: Callable[[str], None] | None = None, jobs: int = 1) -> dict:
    """All three panels; the (N, K) run of panel (a) is shared with panels (b) and (c). ``jobs`` processes
    train the runs in parallel (one torch thread each); ``cfg.repeats`` task draws average every point."""
    configs = list(
        dict.fromkeys(
            [(m, cfg.samples, cfg.tasks) for m in methods]
            + [(m, n, cfg.tasks) for m in methods for n in cfg.sample_grid]
            + [(m, cfg.samples, k) for m in methods for k in cfg.task_grid]
        )
    )
    seeds = range(cfg.seed, cfg.seed + cfg.repeats)
    runs: dict[tuple[str, int, int, int], list[dict]] = {}
    for key, curve in run_all(train_curve, [(*c, seed) for seed in seeds for c in configs], jobs, cfg):
        runs[key] = curve
        if progress:
            progress("{} N={} K={} seed {}".format(*key))

    best = lambda c: min((p["test_loss"] for p in c if p["test_loss"] is not None), default=None)  # noqa: E731
    draws = lambda n, k: {m: [best(runs[(m, n, k, seed)]) for seed in seeds] for m in methods}  # noqa: E731
    # panel → its points, each with every method's best loss per draw
    points = {"b": {str(n): draws(n, cfg.tasks) for n in cfg.sample_grid}, "c": {str(k): draws(cfg.samples, k) for k in cfg.task_grid}}
    panels = {
        "a_loss_vs_iterations": {m: mean_curve([runs[(m, cfg.samples, cfg.tasks, seed)] for seed in seeds]) for m in methods},
        "b_best_loss_vs_samples": {m: {x: mean_or_none(d[m]) for x, d in points["b"].items()} for m in methods},
        "c_best_loss_vs_tasks": {m: {x: mean_or_none(d[m]) for x, d in points["c"].items()} for m in methods},
    }
    report = {"benchmark": "sinusoid", "setup": {**asdict(cfg), "model": [1, *cfg.hidden, 1]}, "methods": list(methods), **panels}
    if cfg.repeats > 1:
        report["draws"] = {p: {m: {x: d[m] for x, d in grid.items()} for m in methods} for p, grid in points.items()}
        if "maml" in methods:
            report["vs_maml"] = {
                p: {m: {x: paired_over_draws(d[m], d["maml"]) for x, d in grid.items()} for m in methods if m != "maml"} for p, grid in points.items()
            }
    return report


def mean_or_none(values: list[float | None]) -> float | None:
    """The mean over draws; None where any draw diverged (a mean without it would flatter the method)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Panel (a) averaged over draws, evaluation by evaluation."""
    return [{"iteration": points[0]["iteration"], "test_loss": mean_or_none([p["test_loss"] for p in points])} for points in zip(*curves)]


def paired_over_draws(values: list[float | None], reference: list[float | None]) -> dict | None:
    """Mean of ``values`` − ``reference`` over the draws (each draw's tasks shared by both) with a 95 % t-interval."""
    if any(v is None for v in values + reference):
        return None
    diff = np.asarray(values) - np.asarray(reference)
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"diff": float(diff.mean()), "ci95": [float(diff.mean()) - half, float(diff.mean()) + half]}


def quick(cfg: SinusoidBench) -> SinusoidBench:
    """A budget of seconds, for tests of the machinery."""
    return dataclasses.replace(cfg, iterations=4, eval_every=2, tasks_per_batch=2, test_tasks=3, test_points=5, hidden=(8,), particles=2)
