"""``metaedge demo``: the main job — meta-train every algorithm, evaluate, print the SER table.

Runs land in ``--out`` (default runs/demo); a finished run with the same configuration is
reused, an interrupted one resumed, so running the demo twice costs only the evaluation.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaedge.sdk.cli.parsing import positive_int, str_list
from metaedge.sdk.errors import UserError

ALGOS = ["maml", "fomaml", "reptile", "cavia", "joint"]
PILOTS = [1, 2, 4, 8, 16, 32]
TRAIN_PILOTS = (1, 32)   # each meta-batch draws its pilot count log-uniformly from this range
ADAPT_STEPS = 5          # the common adaptation budget of every learned method at meta-test
EXAMPLES = """
examples:
  metaedge demo                       # ~4 min on 2 CPU cores: 5 algorithms, SER table, runs/demo/ser.png
  metaedge demo --algos maml,cavia --iterations 20000 --out runs/long
  metaedge demo --fresh               # retrain instead of reusing runs/demo
"""


def register(sub) -> None:
    p = sub.add_parser("demo", help="meta-train every algorithm, evaluate, print the SER table",
                       description="Meta-train MAML, FOMAML, Reptile, CAVIA and joint learning on the demodulation task "
                                   "(monograph §5.2) with 1-32 pilots per frame, then adapt each with 5 SGD steps on the "
                                   "pilots of 100 fresh devices and measure the SER on 10^4 payload symbols, next to "
                                   "training from scratch and the model-based receiver (MMSE + ML).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the runs go (default runs/demo)")
    p.add_argument("--algos", type=str_list, default=ALGOS, help=f"algorithms (default {','.join(ALGOS)})")
    p.add_argument("--iterations", type=positive_int, help="meta-iterations per algorithm (default: each recipe's)")
    p.add_argument("--devices", type=positive_int, default=100, help="meta-test devices (default 100)")
    p.add_argument("--payload", type=positive_int, default=10_000, help="payload symbols per device (default 10000)")
    p.add_argument("--fresh", action="store_true", help="retrain even if --out holds finished runs")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import shutil

    from metaedge.sdk.algorithms import get_algorithm
    from metaedge.sdk.cli.evaluate import evaluate_runs, ser_table
    from metaedge.sdk.cli.train import train_with_progress
    from metaedge.sdk.plots import plot_ser
    from metaedge.sdk.recipes import recipe
    from metaedge.sdk.rundir import read_config
    from metaedge.sdk.tasks.demod import DemodConfig
    from metaedge.sdk.training import TrainConfig, Trainer, configs_from_run

    for algo in args.algos:
        get_algorithm(algo)  # unknown names fail before any training
    task = DemodConfig(pilots=TRAIN_PILOTS[1])
    runs = []
    for algo in args.algos:
        path = args.out / algo
        train = TrainConfig(**{**recipe(algo), "algo": algo, "pilots_min": TRAIN_PILOTS[0],
                               **({"iterations": args.iterations} if args.iterations else {})})
        if args.fresh and path.exists():
            shutil.rmtree(path)
        resume = path.is_dir() and any(path.iterdir())
        if resume and configs_from_run(read_config(path)) != (task, train):
            raise UserError(f"{path} holds a run with another configuration; pass --fresh to retrain or choose another --out")
        trainer = Trainer(path, task, train)
        trainer.start(resume=resume)
        if trainer.state["stop_reason"] and not args.quiet:
            print(f"{algo}: reusing {path} ({trainer.state['stop_reason']})")
        state = train_with_progress(trainer, quiet=args.quiet, label=f"train {algo}")
        if not args.quiet:
            print(f"{algo}: best validation SER {state['best_val_ser']:.4f} at iteration {state['best_iteration']}")
        runs.append(path)
    report = evaluate_runs(runs, PILOTS, args.devices, args.payload, adapt_steps=ADAPT_STEPS, scratch_lr=0.1,
                           baselines=True, seed=None, quiet=args.quiet)
    report["command"] = ("metaedge eval " + " ".join(str(r) for r in runs)
                         + f" --adapt-steps {ADAPT_STEPS} --devices {args.devices} --payload {args.payload}")
    (args.out / "ser.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_ser(report["methods"], PILOTS, args.out / "ser.png", title="16-QAM, 20 dB, I/Q imbalance, Rayleigh")
    print(json.dumps(report, indent=2) if args.json else ser_table(report) + f"\n\nwritten: {args.out / 'ser.json'}, {args.out / 'ser.png'}")
    return 0
