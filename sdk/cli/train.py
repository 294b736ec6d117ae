"""``metaedge train demod``: meta-train a demodulator into a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import json

from metaedge.sdk.cli.options import add_config_flags, add_declared, config_from
from metaedge.sdk.cli.parsing import add_command, add_reporting
from metaedge.sdk.families.demod.config import TrainConfig, default_text
from metaedge.sdk.families.demod.task import DemodConfig
from metaedge.sdk.options import output_dir, pilot_range

EXAMPLES = """
examples:
  metaedge train demod --algo maml --out runs/maml
  metaedge train demod --algo cavia --pilots 1-32 --iterations 20000 --out runs/cavia
  metaedge train demod --algo reptile --inner-steps 5 --out runs/reptile
  metaedge train demod --algo imaml --prox 1.0 --inner-steps 5 --out runs/imaml
  metaedge train demod --algo vbmaml --pilots 4 --inner-steps 2 --out runs/vbmaml   # Gaussian Bayesian MAML
  metaedge train demod --algo bmaml --particles 5 --out runs/bmaml                   # SVGD particles
  metaedge train demod --out runs/maml --resume --iterations 40000   # continue a run
  metaedge train demod --algo fomaml --tasks-per-batch 1024 --device cuda --out runs/fomaml-gpu
  torchrun --standalone --nproc-per-node 2 -m metaedge.sdk.cli.main train demod --distributed --out runs/dp   # 2 ranks
"""


def register(sub) -> None:
    p = add_command(sub, "train", help="meta-train a receiver", description="Meta-train a receiver on a task family.")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=type(p))
    _demod(tasks)
    from metaedge.sdk import families

    for command in families.commands("TRAIN"):
        add_declared(tasks, command, add_command)


def _demod(tasks) -> None:
    d = add_command(
        tasks,
        "demod",
        help="few-pilot demodulation with I/Q imbalance (monograph §5.2)",
        description="Meta-train a demodulator on devices with unknown I/Q imbalance and Rayleigh fading.",
        examples=EXAMPLES,
    )
    d.add_argument("--out", type=output_dir, required=True, help="run directory to create (or to continue with --resume)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (with any --device or world size)")
    d.add_argument("--device", default="cpu", help="where meta-training runs: cpu, cuda or cuda:N (default cpu)")
    d.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the processes torchrun starts: each takes a share of every meta-batch's tasks (gloo on cpu, NCCL on cuda)",
    )
    g = d.add_argument_group("algorithm (unset flags take the algorithm's recipe, else the core's default)")
    add_config_flags(g, TrainConfig, default_text)
    add_reporting(d, "the final state")
    t = d.add_argument_group("task (monograph §5.2; defaults: the published setup)")
    t.add_argument(
        "--pilots",
        type=pilot_range,
        default=(0, 4),
        metavar="N|LOW-HIGH",
        help="training pilots per task N_tr: a count, or a range drawn log-uniformly per meta-batch (default 4)",
    )
    add_config_flags(t, DemodConfig, prefix="task.")
    d.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.demod.training import Trainer, configs_from_run
    from metaedge.sdk.meta.placement import placement
    from metaedge.sdk.rundir import read_config

    if args.resume:
        task, train = configs_from_run(read_config(args.out))
        changes = {"compile": args.compile or train.compile}
        if args.iterations:
            changes["iterations"] = args.iterations
        train = dataclasses.replace(train, **changes)
    else:
        task = config_from(args, DemodConfig, prefix="task.", pilots=args.pilots[1])
        train = config_from(args, TrainConfig, pilots_min=args.pilots[0])
    where = placement(args.device, args.distributed)
    trainer = Trainer(args.out, task, train, where)
    trainer.start(resume=args.resume)
    from metaedge.sdk.families.demod.runs import train_with_progress

    state = train_with_progress(trainer, quiet=args.quiet or not where.writer)
    if not where.writer:
        return 0
    if args.json:
        print(json.dumps({"run": str(args.out), **state}))
    else:
        print(
            f"{train.algo}: {state['stop_reason']} after {state['iteration']} iterations; best validation SER "
            f"{state['best_val_ser']:.4f} at iteration {state['best_iteration']} → {args.out}"
        )
    return 0
