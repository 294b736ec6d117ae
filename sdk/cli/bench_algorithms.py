"""``metaedge bench algorithms``: every meta-learning algorithm on the demodulation task, one table.

Each algorithm is meta-trained with the same task, budget and batch (the published Bayesian
demodulator's setup: 16-QAM, 18 dB, 16 devices per batch, α = 0.1 with 2 inner steps — or the
algorithm's recipe where it needs more steps or another rate), then adapted on the pilots of
the same fresh devices. Reported per algorithm: SER with 95 % intervals and ECE at each pilot
count, the meta-training time (validations excluded), and the peak memory one meta-gradient
adds. Finished runs in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command, add_reporting, add_seed, int_list, output_dir, pilot_range, positive_int, str_list
from metaedge.sdk.errors import UserError

PILOTS = [1, 4, 8, 16]
EXAMPLES = """
examples:
  metaedge bench algorithms --out runs/algorithms            # ~25 min on 2 cores: all 14, table and reliability diagram
  metaedge bench algorithms --algos maml,vbmaml,bmaml --json
  metaedge bench algorithms --quick --out /tmp/quick          # seconds: the machinery, not the figures
"""


def register(benches) -> None:
    b = add_command(
        benches,
        "algorithms",
        help="every algorithm on the demodulation task: SER, ECE, time, memory",
        description="Meta-train every algorithm on the same demodulation task and budget, evaluate SER and "
        "expected calibration error at 1, 4, 8 and 16 pilots on the same fresh devices, and "
        "report meta-training time and peak memory. Writes OUT/algorithms.json, "
        "OUT/algorithms.md and OUT/reliability.png (at 8 pilots).",
        examples=EXAMPLES,
    )
    b.add_argument("--out", type=output_dir, default=Path("runs/algorithms"), help="runs and results (default runs/algorithms)")
    b.add_argument("--algos", type=str_list, default=None, help="algorithms (default: all; see metaedge algorithms)")
    b.add_argument("--iterations", type=positive_int, default=2000, help="meta-iterations per algorithm (default 2000)")
    b.add_argument(
        "--train-pilots",
        type=pilot_range,
        default=(4, 8),
        metavar="N|LOW-HIGH",
        help="pilots per meta-training task (default 4-8: the published 4 and the 8 of the calibration target)",
    )
    b.add_argument("--pilots", type=int_list, default=PILOTS, help="pilot counts at meta-test (default 1,4,8,16)")
    b.add_argument("--devices", type=positive_int, default=200, help="meta-test devices (default 200)")
    b.add_argument("--payload", type=positive_int, default=2000, help="payload symbols per device (default 2000)")
    add_seed(b)
    b.add_argument("--fresh", action="store_true", help="retrain even if --out holds finished runs")
    b.add_argument("--quick", action="store_true", help="tiny budget and model, for tests of the machinery")
    add_reporting(b, "results")
    b.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.bench.meta_train import peak_memory_mib
    from metaedge.sdk.families.demod.bench import train_config
    from metaedge.sdk.families.demod.runs import evaluate_runs, train_or_reuse
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.meta import ALGORITHMS, get_algorithm
    from metaedge.sdk.plots import plot_reliability

    algos = args.algos or list(ALGORITHMS)
    for algo in algos:
        get_algorithm(algo)
    if 8 not in args.pilots:
        raise UserError(f"--pilots {','.join(map(str, args.pilots))} must include 8 (the calibration target's pilot count)")
    low, high = args.train_pilots
    task = DemodConfig(pilots=high, snr_db=18.0, **({"val_pilots": 16} if args.quick else {}))
    runs, timing = [], {}
    for algo in algos:
        train = train_config(algo, 4 if args.quick else args.iterations, low, args.seed, args.quick)
        state = train_or_reuse(args.out / algo, task, train, args.fresh, args.quiet)
        timing[algo] = {
            "train_seconds": state.get("train_seconds"),
            "iterations": state["iteration"],
            "best_iteration": state["best_iteration"],
            "inner_steps": train.inner_steps,
            "inner_lr": train.inner_lr,
            "peak_memory_mib": peak_memory_mib(algo, train.tasks_per_batch, train.inner_steps),
        }
        runs.append(args.out / algo)
    report = evaluate_runs(
        runs,
        args.pilots,
        3 if args.quick else args.devices,
        50 if args.quick else args.payload,
        inner_steps=None,
        scratch_lr=0.1,
        baselines=True,
        seed=None,
        quiet=args.quiet,
    )
    for method in report["methods"]:
        method.update(timing.get(method.get("algo"), {}))
    report["command"] = "metaedge " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("metaedge") else None
    report["setup"] = {
        "iterations": args.iterations,
        "tasks_per_batch": 16,
        "train_pilots": [low, high],
        "snr_db": 18.0,
        "inner": "α and steps per algorithm (recipe, at least 2 steps)",
        "seed": args.seed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "algorithms.json").write_text(json.dumps(report, indent=2))
    (args.out / "algorithms.md").write_text(markdown_table(report))
    plot_reliability(
        {m["name"]: m["reliability"]["8"] for m in report["methods"] if m.get("algo") in ("maml", "vbmaml", "bmaml", "model-based")},
        args.out / "reliability.png",
        "16-QAM, 18 dB, 8 pilots",
    )
    print(json.dumps(report, indent=2) if args.json else markdown_table(report))
    return 0


def markdown_table(report: dict) -> str:
    pilots = report["pilots"]
    head = ["method", *(f"SER {p}" for p in pilots), *(f"ECE {p}" for p in pilots), "train s", "peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report["methods"]:
        ser = [f"{m['ser'][str(p)]['ser']:.4f} ±{(m['ser'][str(p)]['ci95'][1] - m['ser'][str(p)]['ci95'][0]) / 2:.4f}" for p in pilots]
        ece = [f"{m['ser'][str(p)]['ece']:.4f}" for p in pilots]
        seconds = m.get("train_seconds")
        memory = m.get("peak_memory_mib")
        lines.append(
            "| " + " | ".join([m["name"], *ser, *ece, "" if seconds is None else f"{seconds:.0f}", "" if memory is None else f"{memory:.1f}"]) + " |"
        )
    return (
        f"SER (±95 % over {report['devices']} devices × {report['payload']} symbols) and ECE (10 bins) per pilot count; "
        "meta-training time without validations; peak memory of one meta-gradient.\n\n" + "\n".join(lines) + "\n"
    )
