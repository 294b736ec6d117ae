"""``metaedge bench``: speed benchmarks with JSON output."""
from __future__ import annotations

import argparse
import json
import sys

from metaedge.sdk.cli.parsing import int_list, positive_int, str_list
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge bench meta-train
  metaedge bench meta-train --json > bench.json
  metaedge bench meta-train --algos fomaml --tasks 32 --repeats 100 --no-compile
"""


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks (JSON with --json)")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK", parser_class=type(p))
    m = benches.add_parser("meta-train", help="batched core vs per-task loop: tasks/s and meta-gradient agreement",
                           description="Times one meta-gradient of the batched core (eager and torch.compile'd) against "
                                       "the per-task loop of the incumbent libraries on the same tasks, and checks that "
                                       "both give the same meta-gradient (within 1e-5).",
                           epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--algos", type=str_list, default=["fomaml", "maml"], help="fomaml and/or maml (default both)")
    m.add_argument("--tasks", type=int_list, default=[5, 32], help="tasks per batch (default 5,32)")
    m.add_argument("--repeats", type=positive_int, default=30, help="timed repeats per configuration (default 30)")
    m.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd variant (saves ~30 s per configuration)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(handler=run_meta_train)


def run_meta_train(args: argparse.Namespace) -> int:
    from metaedge.sdk.bench import SECOND_ORDER, bench_meta_train
    from metaedge.sdk.cli.main import format_table

    unknown = [a for a in args.algos if a not in SECOND_ORDER]
    if unknown:
        raise UserError(f"--algos: {', '.join(unknown)} not benchmarked; choose from {', '.join(SECOND_ORDER)}")
    report = bench_meta_train(args.algos, args.tasks, args.repeats, compile=not args.no_compile,
                              progress=lambda what: print(f"bench: {what} done", file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = []
    for r in report["results"]:
        for variant in ("batched", "compiled"):
            if variant in r["median_ms"]:
                rows.append([f"{r['algo']} × {r['tasks']}", variant, f"{r['median_ms'][variant]:.2f}",
                             f"{r['median_ms']['loop']:.2f}", f"{r['tasks_per_s'][variant]:.0f}",
                             f"{r['speedup_vs_loop'][variant]:.1f}×", f"{r['max_abs_grad_diff_vs_loop'][variant]:.1e}"])
    env = report["environment"]
    print(f"meta-gradient, median of {report['repeats']} (torch {env['torch']}, {env['threads']} threads)")
    print(format_table(["algo × tasks", "core", "core ms", "loop ms", "tasks/s", "speedup", "max |Δgrad|"], rows))
    return 0
