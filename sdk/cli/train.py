"""``metaedge train demod``: meta-train a demodulator into a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys

from metaedge.sdk.cli.options import add_config_flags, add_declared, given
from metaedge.sdk.cli.parsing import add_command, add_reporting, add_seed, add_task_flags, output_dir, positive_int, task_config
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.config import TrainConfig, default_text

TRAIN_FLAGS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag"))
DECLARED = tuple(f"metaedge.sdk.families.{f}.config" for f in ("link", "power", "prediction"))  # modules whose TRAIN command is generated

EXAMPLES = """
examples:
  metaedge train demod --algo maml --out runs/maml
  metaedge train demod --algo cavia --pilots 1-32 --iterations 20000 --out runs/cavia
  metaedge train demod --algo reptile --inner-steps 5 --out runs/reptile
  metaedge train demod --algo imaml --prox 1.0 --inner-steps 5 --out runs/imaml
  metaedge train demod --algo vbmaml --pilots 4 --inner-steps 2 --out runs/vbmaml   # Gaussian Bayesian MAML
  metaedge train demod --algo bmaml --particles 5 --out runs/bmaml                   # SVGD particles
  metaedge train demod --out runs/maml --resume --iterations 40000   # continue a run
"""


def register(sub) -> None:
    p = add_command(sub, "train", help="meta-train a receiver", description="Meta-train a receiver on a task family.")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=type(p))
    _demod(tasks)
    _born(tasks)
    for module in DECLARED:
        add_declared(tasks, importlib.import_module(module).TRAIN, add_command)
    _snn(tasks)


def _demod(tasks) -> None:
    d = add_command(
        tasks,
        "demod",
        help="few-pilot demodulation with I/Q imbalance (monograph §5.2)",
        description="Meta-train a demodulator on devices with unknown I/Q imbalance and Rayleigh fading.",
        examples=EXAMPLES,
    )
    d.add_argument("--out", type=output_dir, required=True, help="run directory to create (or to continue with --resume)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g = d.add_argument_group("algorithm (unset flags take the algorithm's recipe, else the core's default)")
    add_config_flags(g, TrainConfig, default_text)
    add_reporting(d, "the final state")
    add_task_flags(d)
    d.set_defaults(handler=run)


def _born(tasks) -> None:
    b = add_command(
        tasks,
        "born",
        help="Born-machine binary network for QPSK with a residual phase (monograph §6.2.2)",
        description="Meta-learn (or jointly learn) the prior circuit of a Born-machine binary network "
        "for few-pilot QPSK demodulation; export it with --target qiskit.",
        examples=BORN_EXAMPLES,
    )
    b.add_argument("--out", type=output_dir, required=True, help="run directory to create")
    b.add_argument("--algo", default="meta", choices=("meta", "joint"), help="meta (eq. 2.33, default) or joint")
    b.add_argument("--iterations", type=positive_int, default=400, help="outer steps (default 400)")
    b.add_argument("--tasks-per-batch", type=positive_int, default=32, help="devices per outer step (default 32)")
    b.add_argument("--qubits", type=positive_int, default=5, help="binary weights = qubits (default 5, at most 12)")
    b.add_argument("--layers", type=int, default=2, help="entangling layers of the ansatz (default 2)")
    b.add_argument("--inner-steps", type=int, default=2, help="adaptation steps on the device (default 2)")
    b.add_argument("--inner-lr", type=float, default=0.01, help="initial step size (meta learns one per angle; default 0.01)")
    b.add_argument("--shots", type=positive_int, default=256, help="device shots per parameter setting (default 256)")
    b.add_argument("--pilots", type=positive_int, default=1, help="known pilots per frame (default 1)")
    b.add_argument("--snr-db", type=float, default=10.0, help="Es/N0 in dB (default 10)")
    b.add_argument("--phase-max-deg", type=float, default=60.0, help="residual carrier phase range ± degrees (default 60)")
    add_seed(b)
    add_reporting(b, "the final state")
    b.set_defaults(handler=run_born)


def _snn(tasks) -> None:
    n = add_command(
        tasks,
        "snn",
        help="spiking receiver for Loihi: the three-factor rule's starting point (monograph §6.1)",
        description="Meta-learn the plastic synapses' starting point θ of a spiking demodulator whose "
        "output layer adapts on-chip with a three-factor rule; first-order, with the rule "
        "itself (FOMAML or Reptile), or jointly. Export it with --target loihi.",
        examples=SNN_EXAMPLES,
    )
    n.add_argument("--out", type=output_dir, required=True, help="run directory to create")
    n.add_argument("--algo", default="fomaml", choices=("fomaml", "reptile", "joint"), help="outer loop (default fomaml)")
    n.add_argument("--iterations", type=positive_int, default=300, help="outer steps (default 300)")
    n.add_argument("--tasks-per-batch", type=positive_int, default=64, help="devices per outer step (default 64)")
    n.add_argument("--outer-lr", type=float, help="β (default fomaml/joint 0.04, reptile 0.1)")
    n.add_argument("--order", type=int, default=4, help="constellation: 4 (QPSK, default) or 16 (16-QAM)")
    n.add_argument("--pilots", type=positive_int, default=4, help="known pilots per frame (default 4)")
    n.add_argument("--snr-db", type=float, default=20.0, help="Es/N0 in dB (default 20)")
    n.add_argument("--channel", default="rayleigh", choices=("rayleigh", "phase"), help="rayleigh (default) or a residual phase")
    n.add_argument("--phase-max-deg", type=float, default=60.0, help="phase channel only: range ± degrees (default 60)")
    n.add_argument("--timesteps", type=positive_int, default=8, help="timesteps each symbol is presented (default 8)")
    n.add_argument("--grid", type=positive_int, default=8, help="receptive fields per rail; hidden = grid² (default 8)")
    n.add_argument("--learning-rate", type=float, default=0.05, help="η of the on-chip rule (default 0.05)")
    add_seed(n)
    add_reporting(n, "the final state")
    n.set_defaults(handler=run_snn)


BORN_EXAMPLES = """
examples:
  metaedge train born --out runs/born-meta
  metaedge train born --algo joint --out runs/born-joint
  metaedge train born --qubits 8 --layers 3 --inner-steps 3 --out runs/born-8q     # ideal simulation only (> 5 qubits)
"""


SNN_EXAMPLES = """
examples:
  metaedge train snn --out runs/snn-fomaml
  metaedge train snn --algo reptile --out runs/snn-reptile
  metaedge train snn --order 16 --pilots 16 --out runs/snn-16qam
  metaedge train snn --channel phase --phase-max-deg 60 --out runs/snn-phase
"""


def run_snn(args: argparse.Namespace) -> int:
    from metaedge.backends.loihi.network import SnnSpec
    from metaedge.sdk.families.demod.snn.training import SnnTrainConfig, snn_task, train_snn

    task = snn_task(args.order, args.pilots, args.snr_db, args.channel, args.phase_max_deg)
    try:
        spec = SnnSpec(classes=args.order, grid=args.grid, steps=args.timesteps, learning_rate=args.learning_rate)
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg = SnnTrainConfig(method=args.algo, iterations=args.iterations, tasks_per_batch=args.tasks_per_batch, meta_lr=args.outer_lr, seed=args.seed)
    return train_and_report(
        args,
        f"snn-{args.algo}",
        cfg.iterations,
        "val_ser",
        "best validation SER after on-chip adaptation",
        lambda progress: train_snn(args.out, task, spec, cfg, progress),
    )


def train_and_report(args: argparse.Namespace, name: str, iterations: int, metric: str, label: str, train, best: str | None = None) -> int:
    """Run ``train(progress)`` under a progress bar showing ``metric``; print its final state's ``best_<best>``
    (default ``best_<metric>``), with ``--json`` or as a line."""
    from tqdm import tqdm

    bar = tqdm(total=iterations, desc=name, disable=args.quiet or None, file=sys.stderr, unit="it")

    def progress(iteration: int, last: dict) -> None:
        bar.update(iteration - bar.n)
        if last:
            bar.set_postfix({metric: f"{last[metric]:.4f}"})

    try:
        state = train(progress)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"run": str(args.out), **state}))
    else:
        print(
            f"{name}: {label} {state['best_' + (best or metric)]:.4f} at iteration {state['best_iteration']} ({state['seconds']:.0f} s) → {args.out}"
        )
    return 0


def run_born(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.demod.born.learning import InnerConfig
    from metaedge.sdk.families.demod.born.training import BornTrainConfig, default_task, make_spec, train_born

    try:
        task = default_task().replace(pilots=args.pilots, snr_db=args.snr_db, phase_max_deg=args.phase_max_deg)
        spec = make_spec(task, args.qubits, args.layers)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.inner_steps < 0 or not args.inner_lr > 0:
        raise UserError(f"--inner-steps {args.inner_steps} must be ≥ 0 and --inner-lr {args.inner_lr} > 0")
    inner = InnerConfig(steps=args.inner_steps, lr=args.inner_lr, shots=args.shots)
    cfg = BornTrainConfig(method=args.algo, iterations=args.iterations, tasks_per_batch=args.tasks_per_batch, seed=args.seed)
    return train_and_report(
        args,
        f"born-{args.algo}",
        cfg.iterations,
        "val_loss",
        "best validation log-loss",
        lambda progress: train_born(args.out, task, spec, inner, cfg, progress),
    )


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.demod.training import Trainer, configs_from_run
    from metaedge.sdk.rundir import read_config

    if args.resume:
        task, train = configs_from_run(read_config(args.out))
        changes = {"compile": args.compile or train.compile}
        if args.iterations:
            changes["iterations"] = args.iterations
        train = dataclasses.replace(train, **changes)
    else:
        task = task_config(args)
        train = TrainConfig(**given(args, TRAIN_FLAGS), pilots_min=args.pilots[0])
    trainer = Trainer(args.out, task, train)
    trainer.start(resume=args.resume)
    from metaedge.sdk.families.demod.runs import train_with_progress

    state = train_with_progress(trainer, quiet=args.quiet)
    if args.json:
        print(json.dumps({"run": str(args.out), **state}))
    else:
        print(
            f"{train.algo}: {state['stop_reason']} after {state['iteration']} iterations; best validation SER "
            f"{state['best_val_ser']:.4f} at iteration {state['best_iteration']} → {args.out}"
        )
    return 0
