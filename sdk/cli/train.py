"""``metaedge train demod``: meta-train a demodulator into a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from metaedge.sdk.cli.options import add_config_flags, flag_fields, given
from metaedge.sdk.cli.parsing import add_command, add_reporting, add_seed, add_task_flags, int_list, output_dir, positive_int, task_config
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.config import TrainConfig, default_text

TRAIN_FLAGS = flag_fields(TrainConfig)

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
    _link(tasks)
    _prediction(tasks)
    _power(tasks)
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


def _link(tasks) -> None:
    k = add_command(
        tasks,
        "link",
        help="learned encoder/decoder over frequency-selective fading (monograph §5.3)",
        description="Meta-train an encoder/decoder pair (k bits over n complex channel uses, L-tap Rayleigh "
        "block fading) so that a new channel is learned in a few steps. Methods ending in -rx "
        "adapt only the decoder (on pilots) and export as a receiver bundle whose task section "
        "carries the encoder's codebook; the others adapt both ends through the channel simulator.",
        examples=LINK_EXAMPLES,
    )
    k.add_argument("--out", type=output_dir, required=True, help="run directory to create")
    k.add_argument("--algo", default="maml-rx", help="maml-rx (default) | metasgd-rx | fomaml-rx | joint-rx | maml | metasgd | fomaml | joint")
    k.add_argument("--iterations", type=positive_int, default=20_000, help="outer steps (default 20000)")
    k.add_argument("--tasks-per-batch", type=positive_int, default=20, help="channels per outer step (default 20)")
    k.add_argument("--meta-channels", type=positive_int, default=100, help="meta-training channels K (default 100)")
    k.add_argument("--inner-lr", type=float, default=0.1, help="adaptation step size α (default 0.1)")
    k.add_argument("--outer-lr", type=float, default=0.01, help="Adam step size (default 0.01)")
    k.add_argument("--inner-steps", type=positive_int, default=1, help="adaptation steps on the device and in validation (default 1)")
    k.add_argument("--bits", type=positive_int, default=4, help="k, bits per message (default 4)")
    k.add_argument("--uses", type=positive_int, default=4, help="n, complex channel uses per message (default 4)")
    k.add_argument("--taps", type=positive_int, default=3, help="L, channel taps (default 3)")
    k.add_argument("--ebn0-db", type=float, default=15.0, help="Eb/N0 in dB (default 15)")
    k.add_argument("--hidden", type=int_list, default=[16], help="hidden widths of encoder and decoder (default 16)")
    k.add_argument(
        "--rtn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the decoder starts with a radio-transformer network, a 3-tap inverse filter (default; --no-rtn: without)",
    )
    k.add_argument("--val-every", type=positive_int, default=1000, help="validate every N iterations (default 1000)")
    add_seed(k)
    add_reporting(k, "the final state")
    k.set_defaults(handler=run_link)


def _prediction(tasks) -> None:
    c = add_command(
        tasks,
        "prediction",
        help="multi-antenna channel predictor, meta-learned in closed form (monograph §5.4)",
        description="Meta-learn the bias of a linear channel predictor that each frame fits by ridge "
        "regression on its past channels (iMAML in closed form, eq. 2.11-2.12), naive or with "
        "the long-short-term decomposition. Seconds. Export it with --target linear.",
        examples=PREDICTION_EXAMPLES,
    )
    c.add_argument("--out", type=output_dir, required=True, help="run directory to create")
    c.add_argument("--form", default="lstd", choices=("lstd", "naive"), help="lstd (default) or naive")
    c.add_argument("--scheme", default="meta", choices=("meta", "joint", "conventional"), help="the bias (default meta)")
    c.add_argument("--samples", type=positive_int, default=5, help="training windows N_tr per frame (default 5)")
    c.add_argument("--doppler", default="fast", choices=("slow", "fast"), help="fast (20-200 Hz, default) or slow (1-10 Hz)")
    c.add_argument("--lam", type=float, default=1.0, help="ridge λ toward the bias (default 1)")
    c.add_argument("--rank", default="meta", help="LSTD rank: meta (meta-validation, default), aic or a number")
    c.add_argument("--frames", type=positive_int, default=500, help="meta-training frames K (default 500)")
    add_seed(c)
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(handler=run_prediction)


def _power(tasks) -> None:
    w = add_command(
        tasks,
        "power",
        help="REGNN power allocator for dynamic networks (monograph §5.5)",
        description="Train a random-edge graph neural network that allocates transmit powers from the "
        "channel gains of a network of 10-20 links (unsupervised sum-rate), jointly or meta-"
        "learned so that a few slots of a new topology adapt it. Export it like a receiver; "
        "the device adapts on channel measurements alone.",
        examples=POWER_EXAMPLES,
    )
    w.add_argument("--out", type=output_dir, required=True, help="run directory to create")
    w.add_argument("--algo", default="fomaml", choices=("fomaml", "reptile", "joint", "modular"), help="fomaml (default), reptile, joint or modular")
    w.add_argument("--periods", type=positive_int, default=100, help="meta-training periods (topologies) K (default 100)")
    w.add_argument("--iterations", type=positive_int, help="outer steps (default 2000)")
    w.add_argument("--inner-lr", type=float, help="adaptation step size α (default 0.1)")
    w.add_argument("--inner-steps", type=positive_int, help="adaptation steps on a period's slots (default 5)")
    add_seed(w)
    add_reporting(w, "the final state")
    w.set_defaults(handler=run_power)


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


LINK_EXAMPLES = """
examples:
  metaedge train link --out runs/link                       # MAML, decoder with RTN adapts: deployable (~6 min)
  metaedge train link --no-rtn --algo metasgd-rx --out runs/link-sgd
  metaedge train link --algo maml --out runs/link-full     # both ends adapt (simulator only; not exportable)
  metaedge export runs/link --out bundles/link && metaedge inspect bundles/link
"""


def run_link(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.link.learning import TRAINABLE, LinkBench
    from metaedge.sdk.families.link.run import train_link
    from metaedge.sdk.families.link.task import LinkConfig

    if args.algo not in TRAINABLE:
        raise UserError(f"--algo '{args.algo}' is unknown; choose one of {', '.join(TRAINABLE)}")
    cfg = LinkBench(
        link=LinkConfig(bits=args.bits, uses=args.uses, taps=args.taps, ebn0_db=args.ebn0_db),
        hidden=tuple(args.hidden),
        rtn_taps=3 if args.rtn else 0,
        iterations=args.iterations,
        meta_channels=args.meta_channels,
        tasks_per_batch=args.tasks_per_batch,
        inner_lr=args.inner_lr,
        outer_lr=args.outer_lr,
        seed=args.seed,
    )
    return train_and_report(
        args,
        f"link-{args.algo}",
        cfg.iterations,
        "val_bler",
        f"best validation BLER after {args.inner_steps} step(s)",
        lambda progress: train_link(args.out, args.algo, cfg, args.inner_steps, args.val_every, progress),
    )


PREDICTION_EXAMPLES = """
examples:
  metaedge train prediction --out runs/pred                  # meta-learned LSTD predictor, fast fading
  metaedge train prediction --form naive --scheme joint --out runs/pred-joint
  metaedge export runs/pred --target linear --out bundles/pred
"""


def run_prediction(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.prediction.learning import PredictionBench
    from metaedge.sdk.families.prediction.run import train_prediction
    from metaedge.sdk.families.prediction.task import DOPPLER, ChannelConfig

    cfg = PredictionBench(
        channel=ChannelConfig(doppler_hz=DOPPLER[args.doppler]),
        lam=args.lam,
        meta_frames=args.frames,
        test_frames=100,
        rank=args.rank if not args.rank.isdigit() else int(args.rank),
        seed=args.seed,
    )
    state = train_prediction(args.out, cfg, args.samples, args.form, args.scheme)
    if args.json:
        print(json.dumps({"run": str(args.out), **state}))
    else:
        print(
            f"prediction-{args.scheme}-{args.form}: validation NMSE {state['val_nmse_db']:.2f} dB with {args.samples} "
            f"training windows (rank {state['rank']}, {state['seconds']:.1f} s) → {args.out}"
        )
    return 0


POWER_EXAMPLES = """
examples:
  metaedge train power --out runs/power                       # FOMAML on 100 topologies (~1 min)
  metaedge train power --algo joint --periods 5 --out runs/power-joint
  metaedge export runs/power --out bundles/power && metaedge inspect bundles/power
"""


def run_power(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.power.learning import PowerBench
    from metaedge.sdk.families.power.run import train_power

    given = {"iterations": args.iterations, "inner_lr": args.inner_lr, "inner_steps": args.inner_steps}
    cfg = PowerBench(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    return train_and_report(
        args,
        f"power-{args.algo}",
        cfg.iterations,
        "meta_loss",
        "validation sum-rate (bit/s/Hz per slot)",
        lambda progress: train_power(args.out, args.algo, args.periods, cfg, progress),
        best="val_sum_rate",
    )


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
