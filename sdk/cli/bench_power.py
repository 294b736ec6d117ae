"""``metaedge bench power``: REGNN power control of monograph §5.5, Figure 5.11, as JSON and a PNG."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from metaedge.sdk.cli.parsing import add_benchmark, add_command, chosen, int_list, positive_int, str_list

EXAMPLES = """
examples:
  metaedge bench power --jobs 2 --json > power.json  # ~12 min on 2 cores; also writes power.png
  metaedge bench power --periods 1,5,50 --algos joint,fomaml,modular
  metaedge bench power --inner-steps 1 --inner-lr 0.1 --periods 2,100    # one step, as in eq. 5.30
  metaedge bench power --train-slots 2 --json > power-2.json             # scarcer data per period
  metaedge bench power --quick                       # seconds: the machinery, not the figures
"""


def register(benches) -> None:
    b = add_command(
        benches,
        "power",
        help="REGNN power control in dynamic networks: sum-rate vs meta-training periods (§5.5)",
        description="Random-edge graph neural network power allocation (unsupervised sum-rate) over "
        "random interference topologies of 10-20 links; joint learning, FOMAML, Reptile and "
        "modular meta-learning (modules per layer, assignment by simulated annealing) against "
        "the number of meta-training periods K; every link at full power as reference.",
        examples=EXAMPLES,
    )
    b.add_argument("--algos", type=str_list, default=None, help="default joint,fomaml,reptile,modular")
    b.add_argument("--periods", type=int_list, default=None, help="meta-training periods K (default 1,2,5,10,20,50,100)")
    b.add_argument("--iterations", type=positive_int, default=None, help="outer steps per run (default 2000)")
    b.add_argument("--inner-steps", type=positive_int, default=None, help="adaptation steps (default 5; eq. 5.30 takes 1)")
    b.add_argument("--inner-lr", type=float, default=None, help="adaptation step size α (default 0.1)")
    b.add_argument(
        "--train-slots", type=positive_int, default=None, help="slots N_tr a period adapts on, in meta-training and on a new topology (default 5)"
    )
    b.add_argument("--jobs", type=positive_int, default=1, help="train the runs in N parallel processes (default 1)")
    add_benchmark(b, "power.png", "sum-rate vs K")
    b.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.sdk.families.power.bench import quick, run_benchmark
    from metaedge.sdk.families.power.learning import METHODS, PowerBench
    from metaedge.sdk.plots import plot_power

    methods = chosen(args.algos, METHODS)
    changes = {
        "period_grid": tuple(sorted(set(args.periods))) if args.periods else None,
        "iterations": args.iterations,
        "inner_steps": args.inner_steps,
        "inner_lr": args.inner_lr,
        "train_slots": args.train_slots,
    }
    cfg = dataclasses.replace(PowerBench(seed=args.seed), **{k: v for k, v in changes.items() if v is not None})
    if args.quick:
        cfg = quick(cfg)
    with tqdm(total=len(methods) * len(cfg.period_grid), desc="power", disable=args.quiet or None, file=sys.stderr) as bar:

        def progress(method: str, k: int) -> None:
            bar.set_description(f"power {method} K={k}")
            bar.update()

        report = run_benchmark(cfg, methods, progress, jobs=args.jobs)
    plot_power(report, args.plot)
    report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from metaedge.sdk.cli.main import format_table
    from metaedge.sdk.stats import paired_text

    grid = [str(k) for k in cfg.period_grid]
    print(
        f"sum-rate (bit/s/Hz per slot) on {cfg.test_periods} new topologies vs meta-training periods K "
        f"(full power: {report['full_power']['sum_rate']:.2f}; optimised per slot, an oracle: {report['optimised']['sum_rate']:.2f})"
    )
    print(format_table(["method", *grid], [[m, *(f"{report['sum_rate'][m][k]['sum_rate']:.2f}" for k in grid)] for m in methods]))
    for reference, name in (("joint", "joint learning"), ("modular", "modular meta-learning")):
        compared = [m for m in methods if f"vs_{reference}" in report["sum_rate"][m][grid[0]] and m != reference]
        if compared:
            print(f"\ndifference to {name} on the same topologies (95 % interval)")
            print(format_table(["method", *grid], [[m, *(paired_text(report["sum_rate"][m][k][f"vs_{reference}"]) for k in grid)] for m in compared]))
    print(f"\nwritten: {args.plot}")
    return 0
