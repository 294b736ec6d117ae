"""``metaedge bench sinusoid``: the field's sanity check, monograph Figure 2.4, as JSON and a PNG."""

from __future__ import annotations

import argparse
import json
import sys

from metaedge.sdk.cli.parsing import add_benchmark, add_command, int_list, positive_int, str_list
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge bench sinusoid --jobs 2 --json > sinusoid.json   # the runs in 2 processes; also writes sinusoid.png
  metaedge bench sinusoid --iterations 5000 --samples 2,5,10 --tasks 5,50,1000 --jobs 2   # the figures of docs/algorithms.md
  metaedge bench sinusoid --algos maml,bmaml --samples 10 --tasks 5 --iterations 5000 --repeats 5 --jobs 2
                                                       # K = 5 over five task draws, with BMAML − MAML intervals
  metaedge bench sinusoid --quick                      # seconds: the machinery, not the figures
"""


def register(benches) -> None:
    s = add_command(
        benches,
        "sinusoid",
        help="sinusoid regression: joint, MAML, iMAML, BMAML (monograph Figure 2.4)",
        description="Meta-train joint learning, MAML, iMAML and BMAML on sinusoid regression (amplitude "
        "0.1-5, phase 0-pi, inputs -5..5, MLP 1-40-40-1) and report the three panels of the "
        "monograph's Figure 2.4: test loss vs meta-training iterations, best test loss vs samples "
        "per task N, and vs number of meta-training tasks K.",
        examples=EXAMPLES,
    )
    s.add_argument("--algos", type=str_list, default=["joint", "maml", "imaml", "bmaml"], help="default joint,maml,imaml,bmaml")
    s.add_argument("--iterations", type=positive_int, default=1500, help="meta-iterations per run (default 1500)")
    s.add_argument("--samples", type=int_list, default=[2, 5, 10, 20], help="N grid of panel (b) (default 2,5,10,20)")
    s.add_argument("--tasks", type=int_list, default=[5, 20, 100, 1000], help="K grid of panel (c) (default 5,20,100,1000)")
    s.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="task draws (seeds --seed, --seed + 1, ...): points become means, and each method's paired difference "
        "to maml gets a 95%% t-interval over the draws (default 1)",
    )
    s.add_argument("--jobs", type=positive_int, default=1, help="train the runs in N parallel processes (default 1)")
    add_benchmark(s, "sinusoid.png", "the three panels")
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.sdk.families.sinusoid.bench import SinusoidBench, quick, run_benchmark
    from metaedge.sdk.meta import get_algorithm
    from metaedge.sdk.plots import plot_sinusoid

    for method in args.algos:
        get_algorithm(method)
    if any(n < 1 for n in args.samples) or any(k < 1 for k in args.tasks):
        raise UserError("--samples and --tasks need counts of at least 1")
    cfg = SinusoidBench(
        iterations=args.iterations,
        sample_grid=tuple(args.samples),
        task_grid=tuple(args.tasks),
        samples=10 if 10 in args.samples else args.samples[-1],
        tasks=1000 if 1000 in args.tasks else args.tasks[-1],
        seed=args.seed,
        repeats=args.repeats,
    )
    if args.quick:
        cfg = quick(cfg)
    total = len(args.algos) * (1 + len(set(cfg.sample_grid) - {cfg.samples}) + len(set(cfg.task_grid) - {cfg.tasks})) * cfg.repeats
    with tqdm(total=total, desc="sinusoid", disable=args.quiet or None, file=sys.stderr) as bar:
        report = run_benchmark(cfg, tuple(args.algos), progress=lambda _: bar.update(), jobs=args.jobs)
    plot_sinusoid(report, args.plot)
    report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(render(report, cfg, args.algos))
    print(f"\nwritten: {args.plot}")
    return 0


def render(report: dict, cfg, algos: list[str]) -> str:
    """The two tables of best test MSE, and each method's paired difference to MAML over task draws."""
    from metaedge.sdk.cli.main import format_table
    from metaedge.sdk.stats import paired_text

    draws = f", mean over {cfg.repeats} task draws" if cfg.repeats > 1 else ""
    lines = [f"best test MSE vs samples per task N (K = {cfg.tasks}{draws})"]
    rows = [[m, *(loss_cell(report["b_best_loss_vs_samples"][m][str(n)]) for n in cfg.sample_grid)] for m in algos]
    lines += [format_table(["method", *map(str, cfg.sample_grid)], rows), "", f"best test MSE vs meta-training tasks K (N = {cfg.samples}{draws})"]
    rows = [[m, *(loss_cell(report["c_best_loss_vs_tasks"][m][str(k)]) for k in cfg.task_grid)] for m in algos]
    lines.append(format_table(["method", *map(str, cfg.task_grid)], rows))
    for panel, label, grid in (("b", "N", cfg.sample_grid), ("c", "K", cfg.task_grid)):
        for method, points in report.get("vs_maml", {}).get(panel, {}).items():
            cells = [f"{label}={x}: " + ("diverged" if points[str(x)] is None else paired_text(points[str(x)])) for x in grid]
            lines += ["", f"{method} − maml over {cfg.repeats} draws (95 % t-interval): " + ", ".join(cells)]
    return "\n".join(lines)


def loss_cell(loss: float | None) -> str:
    return "diverged" if loss is None else f"{loss:.3f}"
