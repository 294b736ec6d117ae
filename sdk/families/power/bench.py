"""The power-control benchmark (monograph §5.5, Figure 5.11): sum-rate on new network topologies against the
number of meta-training periods K, for a REGNN trained jointly (eq. 5.28), meta-trained by FOMAML or
Reptile (black box, eq. 5.29-5.30), or as a set of modules per layer (modular, eq. 5.31-5.33, with the
assignment chosen on the period's training slots: by simulated annealing in meta-training, as the best of
all M^L assignments on a new topology, which is what a device computes).

Each period k has a fixed data set: N_tr training and N_va validation slots (channel realisations of its
topology). A test period adapts on its N_tr slots the same way (``inner_steps`` SGD steps from θ; the
best module choice for modular; joint learning fine-tunes like the black-box methods) and is scored on fresh
slots of its topology. References: every link at full power, and powers optimised for each scored slot by
an oracle that knows its gains, noise and interference coupling.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Callable

import numpy as np

from metaedge.sdk.families.power.config import BLACK_BOX, METHODS, PowerBench, PowerFigure
from metaedge.sdk.families.power.learning import new_topology_rates, train
from metaedge.sdk.options import Progress, chosen, silent
from metaedge.sdk.runs_parallel import run_all
from metaedge.sdk.stats import format_table, paired_text


def run(options: PowerFigure, progress: Progress = silent) -> dict:
    """``metaedge bench power``: the benchmark of ``options`` and its plot."""
    from metaedge.sdk.plots import plot_power

    methods = chosen(options.algos, METHODS)
    cfg = quick(options.setup) if options.quick else options.setup
    progress(0, total=len(methods) * len(cfg.period_grid))
    report = run_benchmark(cfg, methods, lambda method, k: progress(label=f"power {method} K={k}"), jobs=options.jobs)
    plot_power(report, options.plot)
    return {**report, "plot": str(options.plot)}


def text(report: dict) -> str:
    grid, methods, rates = [str(k) for k in report["setup"]["period_grid"]], report["methods"], report["sum_rate"]
    lines = [
        f"sum-rate (bit/s/Hz per slot) on {report['setup']['test_periods']} new topologies vs meta-training periods K "
        f"(full power: {report['full_power']['sum_rate']:.2f}; optimised per slot, an oracle: {report['optimised']['sum_rate']:.2f})",
        format_table(["method", *grid], [[m, *(f"{rates[m][k]['sum_rate']:.2f}" for k in grid)] for m in methods]),
    ]
    for reference, name in (("joint", "joint learning"), ("modular", "modular meta-learning")):
        compared = [m for m in methods if f"vs_{reference}" in rates[m][grid[0]] and m != reference]
        if compared:
            lines += ["", f"difference to {name} on the same topologies (95 % interval)"]
            lines.append(format_table(["method", *grid], [[m, *(paired_text(rates[m][k][f"vs_{reference}"]) for k in grid)] for m in compared]))
    return "\n".join([*lines, "", f"written: {report['plot']}"])


def trained_rates(method: str, periods: int, cfg: PowerBench) -> np.ndarray:
    """One run of the benchmark: ``method`` trained on ``periods`` periods, its sum-rate on each test topology."""
    return new_topology_rates(method, train(method, periods, cfg), cfg)


def run_benchmark(cfg: PowerBench, methods: tuple[str, ...] = METHODS, progress: Callable[[str, int], None] | None = None, jobs: int = 1) -> dict:
    """Every method at every K; ``jobs`` processes train the runs in parallel (one torch thread each)."""
    from metaedge.sdk.stats import summarise

    per_topology: dict[tuple[str, int], np.ndarray] = {}
    for (method, k), result in run_all(trained_rates, [(m, k) for k in cfg.period_grid for m in methods], jobs, cfg):
        per_topology[(method, k)] = result
        if progress:
            progress(method, k)
    rates: dict[str, dict[str, dict]] = {m: {} for m in methods}
    for k in cfg.period_grid:
        for method in methods:
            result = summarise(per_topology[(method, k)])
            rates[method][str(k)] = {"sum_rate": result["ser"], "ci95": result["ci95"]}
        # paired over the same test topologies (far tighter than the intervals of the means): every method against
        # joint learning, and the black-box methods against modular meta-learning (the published comparison)
        for reference, compared in (("joint", methods), ("modular", [m for m in methods if m in BLACK_BOX])):
            if reference in methods:
                for method in compared:
                    diff = summarise(per_topology[(method, k)] - per_topology[(reference, k)])
                    rates[method][str(k)][f"vs_{reference}"] = {"diff": diff["ser"], "ci95": diff["ci95"]}
    references = {name: summarise(new_topology_rates(method, None, cfg)) for name, method in (("full_power", None), ("optimised", "optimised"))}
    setup = {**asdict(cfg), "parameters": sum(int(np.prod(s)) for s in cfg.model.shapes().values())}
    return {
        "benchmark": "power",
        "setup": setup,
        "methods": list(methods),
        "sum_rate": rates,
        **{name: {"sum_rate": r["ser"], "ci95": r["ci95"]} for name, r in references.items()},
    }


def quick(cfg: PowerBench) -> PowerBench:
    return dataclasses.replace(cfg, iterations=3, tasks_per_batch=2, proposals=3, test_periods=3, test_slots=4, val_slots=3, period_grid=(1, 2))
