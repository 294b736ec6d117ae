"""``metaedge train demod``: meta-train a demodulator into a run directory."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import add_task_flags, int_list, positive_int, task_config
from metaedge.sdk.errors import UserError

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
    p = sub.add_parser("train", help="meta-train a receiver", description="Meta-train a receiver on a task family.")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=type(p))
    d = tasks.add_parser("demod", help="few-pilot demodulation with I/Q imbalance (monograph §5.2)",
                         description="Meta-train a demodulator on devices with unknown I/Q imbalance and Rayleigh fading.",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--out", type=Path, required=True, help="run directory to create (or to continue with --resume)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g = d.add_argument_group("algorithm (unset flags take the algorithm's recipe: metaedge.sdk.recipes)")
    g.add_argument("--algo", default="maml", help="maml | fomaml | reptile | cavia | metasgd | imaml | sharpmaml | proxmaml | "
                                                  "esmaml | alset | vbmaml | bmaml | modular | joint (default maml; "
                                                  "`metaedge algorithms` describes them)")
    g.add_argument("--iterations", type=positive_int, help="meta-iterations (recipe: 6000)")
    g.add_argument("--tasks-per-batch", type=positive_int, help="devices per meta-batch (recipe: 5)")
    g.add_argument("--inner-steps", type=int, help="inner SGD steps (recipe: 1; imaml, alset 40; reptile 10)")
    g.add_argument("--prox", type=float, help="imaml, proxmaml, alset: λ of the proximal term λ/2‖φ − θ‖² (default 1.0)")
    g.add_argument("--solver", help="imaml, alset: inverse-Hessian solver cg | neumann | stochastic (alset; eq. 3.7) "
                                    "(default cg; alset stochastic)")
    g.add_argument("--solver-steps", type=positive_int, help="imaml, alset: solver iterations (default 5; alset 10)")
    g.add_argument("--sharp-in", type=float, help="sharpmaml: radius α_in of the inner perturbation (default 0.05)")
    g.add_argument("--sharp-out", type=float, help="sharpmaml: radius α_ot of the outer perturbation (default 0.05)")
    g.add_argument("--es-directions", type=positive_int, help="esmaml: random directions per estimate (default 16)")
    g.add_argument("--es-delta", type=float, help="esmaml: smoothing radius δ (default 0.02)")
    g.add_argument("--es-hessian", action="store_true", default=None, help="esmaml: use the Hessian correction of eq. 2.18")
    g.add_argument("--samples", type=positive_int, help="vbmaml: weight draws per inner step and validation loss (default 4)")
    g.add_argument("--prior-std", type=float, help="vbmaml: initial std of the Gaussian prior, then meta-learned (default 0.05)")
    g.add_argument("--kl-weight", type=float, help="vbmaml: weight w of the KL term; 1 = the free energy of eq. 2.32 (default 0.1, a tempered posterior)")
    g.add_argument("--modules", type=positive_int, help="modular: candidate modules per layer (default 3)")
    g.add_argument("--assignment", help="modular: anneal (simulated annealing, default), exhaustive (the best of all "
                                        "M^L assignments, as a device chooses) or relaxed (softmax mixture)")
    g.add_argument("--proposals", type=positive_int, help="modular: annealing proposals per task (default 40)")
    g.add_argument("--particles", type=positive_int, help="bmaml: particles of the SVGD ensemble (default 5)")
    g.add_argument("--adapt", help="maml, fomaml, metasgd: all (every parameter adapts, as published) | input (the first "
                                   "layer alone: the device adapts 30 numbers; recipe: fomaml input, else all)")
    g.add_argument("--inner-data", help="reptile: support (every inner step on the pilots, eq. 2.22) | pooled (step j on the "
                                        "j-th pilot-sized minibatch of the device's pilots and validation symbols; recipe)")
    g.add_argument("--inner-lr", type=float, help="inner step size α (recipe: 0.1; cavia 1.0; reptile 0.05; imaml, alset 0.02)")
    g.add_argument("--outer-lr", type=float, help="outer step size β (recipe: 3e-3)")
    g.add_argument("--outer-opt", help="adam | sgd (default adam; sgd with reptile is eq. 2.23 literally)")
    g.add_argument("--hidden", type=int_list, default=[10, 30, 30], help="hidden widths (default 10,30,30)")
    g.add_argument("--context", type=positive_int, default=10, help="CAVIA context size (default 10)")
    g.add_argument("--meta-devices", type=positive_int, default=1000, help="meta-training devices K (default 1000)")
    g.add_argument("--val-devices", type=positive_int, default=100, help="validation devices for early stopping (default 100)")
    g.add_argument("--val-every", type=positive_int, help="validate every N iterations (recipe: 250)")
    g.add_argument("--patience", type=positive_int, help="stop after N validations without improvement (recipe: 12)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--compile", action="store_true", help="torch.compile the meta-gradient (~30 s once, ~2× per step)")
    d.add_argument("--json", action="store_true", help="print the final state as JSON")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_task_flags(d)
    d.set_defaults(handler=run)
    b = tasks.add_parser("born", help="Born-machine binary network for QPSK with a residual phase (monograph §6.2.2)",
                         description="Meta-learn (or jointly learn) the prior circuit of a Born-machine binary network "
                                     "for few-pilot QPSK demodulation; export it with --target qiskit.",
                         epilog=BORN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--out", type=Path, required=True, help="run directory to create")
    b.add_argument("--method", default="meta", choices=("meta", "joint"), help="meta (eq. 2.33, default) or joint")
    b.add_argument("--iterations", type=positive_int, default=400, help="outer steps (default 400)")
    b.add_argument("--tasks-per-batch", type=positive_int, default=32, help="devices per outer step (default 32)")
    b.add_argument("--qubits", type=positive_int, default=5, help="binary weights = qubits (default 5, at most 12)")
    b.add_argument("--layers", type=int, default=2, help="entangling layers of the ansatz (default 2)")
    b.add_argument("--steps", type=int, default=2, help="adaptation steps on the device (default 2)")
    b.add_argument("--lr", type=float, default=0.01, help="initial step size (meta learns one per angle; default 0.01)")
    b.add_argument("--shots", type=positive_int, default=256, help="device shots per parameter setting (default 256)")
    b.add_argument("--pilots", type=positive_int, default=1, help="known pilots per frame (default 1)")
    b.add_argument("--snr", type=float, default=10.0, help="SNR in dB (default 10)")
    b.add_argument("--phase-max", type=float, default=60.0, help="residual carrier phase range ± degrees (default 60)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print the final state as JSON")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler=run_born)
    k = tasks.add_parser("link", help="learned encoder/decoder over frequency-selective fading (monograph §5.3)",
                         description="Meta-train an encoder/decoder pair (k bits over n complex channel uses, L-tap Rayleigh "
                                     "block fading) so that a new channel is learned in a few steps. Methods ending in -rx "
                                     "adapt only the decoder (on pilots) and export as a receiver bundle whose task section "
                                     "carries the encoder's codebook; the others adapt both ends through the channel simulator.",
                         epilog=LINK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--out", type=Path, required=True, help="run directory to create")
    k.add_argument("--method", default="maml-rx", help="maml-rx (default) | metasgd-rx | fomaml-rx | joint-rx | maml | "
                                                       "metasgd | fomaml | joint")
    k.add_argument("--iterations", type=positive_int, default=20_000, help="outer steps (default 20000)")
    k.add_argument("--tasks-per-batch", type=positive_int, default=20, help="channels per outer step (default 20)")
    k.add_argument("--meta-channels", type=positive_int, default=100, help="meta-training channels K (default 100)")
    k.add_argument("--inner-lr", type=float, default=0.1, help="adaptation step size α (default 0.1)")
    k.add_argument("--outer-lr", type=float, default=0.01, help="Adam step size (default 0.01)")
    k.add_argument("--steps", type=positive_int, default=1, help="adaptation steps on the device and in validation (default 1)")
    k.add_argument("--bits", type=positive_int, default=4, help="k, bits per message (default 4)")
    k.add_argument("--uses", type=positive_int, default=4, help="n, complex channel uses per message (default 4)")
    k.add_argument("--taps", type=positive_int, default=3, help="L, channel taps (default 3)")
    k.add_argument("--ebn0", type=float, default=15.0, help="Eb/N0 in dB (default 15)")
    k.add_argument("--hidden", type=int_list, default=[16], help="hidden widths of encoder and decoder (default 16)")
    k.add_argument("--rtn", action=argparse.BooleanOptionalAction, default=True,
                   help="the decoder starts with a radio-transformer network, a 3-tap inverse filter (default; --no-rtn: without)")
    k.add_argument("--val-every", type=positive_int, default=1000, help="validate every N iterations (default 1000)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--json", action="store_true", help="print the final state as JSON")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(handler=run_link)
    c = tasks.add_parser("prediction", help="multi-antenna channel predictor, meta-learned in closed form (monograph §5.4)",
                         description="Meta-learn the bias of a linear channel predictor that each frame fits by ridge "
                                     "regression on its past channels (iMAML in closed form, eq. 2.11-2.12), naive or with "
                                     "the long-short-term decomposition. Seconds. Export it with --target linear.",
                         epilog=PREDICTION_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--out", type=Path, required=True, help="run directory to create")
    c.add_argument("--form", default="lstd", choices=("lstd", "naive"), help="lstd (default) or naive")
    c.add_argument("--scheme", default="meta", choices=("meta", "joint", "conventional"), help="the bias (default meta)")
    c.add_argument("--samples", type=positive_int, default=5, help="training windows N_tr per frame (default 5)")
    c.add_argument("--doppler", default="fast", choices=("slow", "fast"), help="fast (20-200 Hz, default) or slow (1-10 Hz)")
    c.add_argument("--lam", type=float, default=1.0, help="ridge λ toward the bias (default 1)")
    c.add_argument("--rank", default="meta", help="LSTD rank: meta (meta-validation, default), aic or a number")
    c.add_argument("--frames", type=positive_int, default=500, help="meta-training frames K (default 500)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(handler=run_prediction)
    w = tasks.add_parser("power", help="REGNN power allocator for dynamic networks (monograph §5.5)",
                         description="Train a random-edge graph neural network that allocates transmit powers from the "
                                     "channel gains of a network of 10-20 links (unsupervised sum-rate), jointly or meta-"
                                     "learned so that a few slots of a new topology adapt it. Export it like a receiver; "
                                     "the device adapts on channel measurements alone.",
                         epilog=POWER_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--out", type=Path, required=True, help="run directory to create")
    w.add_argument("--method", default="fomaml", choices=("fomaml", "reptile", "joint", "modular"),
                   help="fomaml (default), reptile, joint or modular")
    w.add_argument("--periods", type=positive_int, default=100, help="meta-training periods (topologies) K (default 100)")
    w.add_argument("--iterations", type=positive_int, help="outer steps (default 2000)")
    w.add_argument("--inner-lr", type=float, help="adaptation step size α (default 0.1)")
    w.add_argument("--inner-steps", type=positive_int, help="adaptation steps on a period's slots (default 5)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--json", action="store_true", help="print the final state as JSON")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(handler=run_power)
    n = tasks.add_parser("snn", help="spiking receiver for Loihi: the three-factor rule's starting point (monograph §6.1)",
                         description="Meta-learn the plastic synapses' starting point θ of a spiking demodulator whose "
                                     "output layer adapts on-chip with a three-factor rule; first-order, with the rule "
                                     "itself (FOMAML or Reptile), or jointly. Export it with --target loihi.",
                         epilog=SNN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    n.add_argument("--out", type=Path, required=True, help="run directory to create")
    n.add_argument("--method", default="fomaml", choices=("fomaml", "reptile", "joint"), help="outer loop (default fomaml)")
    n.add_argument("--iterations", type=positive_int, default=300, help="outer steps (default 300)")
    n.add_argument("--tasks-per-batch", type=positive_int, default=64, help="devices per outer step (default 64)")
    n.add_argument("--meta-lr", type=float, help="β (default fomaml/joint 0.04, reptile 0.1)")
    n.add_argument("--order", type=int, default=4, help="constellation: 4 (QPSK, default) or 16 (16-QAM)")
    n.add_argument("--pilots", type=positive_int, default=4, help="known pilots per frame (default 4)")
    n.add_argument("--snr", type=float, default=20.0, help="SNR in dB (default 20)")
    n.add_argument("--channel", default="rayleigh", choices=("rayleigh", "phase"), help="rayleigh (default) or a residual phase")
    n.add_argument("--phase-max", type=float, default=60.0, help="phase channel only: range ± degrees (default 60)")
    n.add_argument("--steps", type=positive_int, default=8, help="timesteps each symbol is presented (default 8)")
    n.add_argument("--grid", type=positive_int, default=8, help="receptive fields per rail; hidden = grid² (default 8)")
    n.add_argument("--learning-rate", type=float, default=0.05, help="η of the on-chip rule (default 0.05)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--json", action="store_true", help="print the final state as JSON")
    n.add_argument("--quiet", action="store_true", help="no progress bar")
    n.set_defaults(handler=run_snn)


BORN_EXAMPLES = """
examples:
  metaedge train born --out runs/born-meta
  metaedge train born --method joint --out runs/born-joint
  metaedge train born --qubits 8 --layers 3 --steps 3 --out runs/born-8q     # ideal simulation only (> 5 qubits)
"""


LINK_EXAMPLES = """
examples:
  metaedge train link --out runs/link                       # MAML, decoder with RTN adapts: deployable (~6 min)
  metaedge train link --no-rtn --method metasgd-rx --out runs/link-sgd
  metaedge train link --method maml --out runs/link-full     # both ends adapt (simulator only; not exportable)
  metaedge export runs/link --out bundles/link && metaedge inspect bundles/link
"""


def run_link(args: argparse.Namespace) -> int:
    import math

    from metaedge.sdk.bench_link import TRAINABLE, LinkBench
    from metaedge.sdk.link_training import train_link
    from metaedge.sdk.tasks.link import LinkConfig

    if args.method not in TRAINABLE:
        raise UserError(f"--method '{args.method}' is unknown; choose one of {', '.join(TRAINABLE)}")
    for flag, value in (("--inner-lr", args.inner_lr), ("--outer-lr", args.outer_lr)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag} {value} must be a positive number")
    if any(h < 1 for h in args.hidden):
        raise UserError(f"--hidden {args.hidden} must list positive layer widths")
    cfg = LinkBench(link=LinkConfig(bits=args.bits, uses=args.uses, taps=args.taps, ebn0_db=args.ebn0), hidden=tuple(args.hidden),
                    rtn_taps=3 if args.rtn else 0,
                    iterations=args.iterations, meta_channels=args.meta_channels, tasks_per_batch=args.tasks_per_batch,
                    inner_lr=args.inner_lr, outer_lr=args.outer_lr, seed=args.seed)
    return train_and_report(args, f"link-{args.method}", cfg.iterations, "val_bler",
                            f"best validation BLER after {args.steps} step(s)",
                            lambda progress: train_link(args.out, args.method, cfg, args.steps, args.val_every, progress))


PREDICTION_EXAMPLES = """
examples:
  metaedge train prediction --out runs/pred                  # meta-learned LSTD predictor, fast fading
  metaedge train prediction --form naive --scheme joint --out runs/pred-joint
  metaedge export runs/pred --target linear --out bundles/pred
"""


def run_prediction(args: argparse.Namespace) -> int:
    from metaedge.sdk.bench_prediction import PredictionBench
    from metaedge.sdk.prediction_run import train_prediction
    from metaedge.sdk.tasks.channels import DOPPLER, ChannelConfig

    if args.rank not in ("meta", "aic") and not (args.rank.isdigit() and int(args.rank) >= 1):
        raise UserError(f"--rank '{args.rank}' must be meta, aic or a positive number")
    if not args.lam > 0:
        raise UserError(f"--lam {args.lam} must be positive")
    cfg = PredictionBench(channel=ChannelConfig(doppler_hz=DOPPLER[args.doppler]), lam=args.lam, meta_frames=args.frames,
                          test_frames=100, rank=args.rank if not args.rank.isdigit() else int(args.rank), seed=args.seed)
    state = train_prediction(args.out, cfg, args.samples, args.form, args.scheme)
    if args.json:
        print(json.dumps({"run": str(args.out), **state}))
    else:
        print(f"prediction-{args.scheme}-{args.form}: validation NMSE {state['val_nmse_db']:.2f} dB with {args.samples} "
              f"training windows (rank {state['rank']}, {state['seconds']:.1f} s) → {args.out}")
    return 0


POWER_EXAMPLES = """
examples:
  metaedge train power --out runs/power                       # FOMAML on 100 topologies (~1 min)
  metaedge train power --method joint --periods 5 --out runs/power-joint
  metaedge export runs/power --out bundles/power && metaedge inspect bundles/power
"""


def run_power(args: argparse.Namespace) -> int:
    from metaedge.sdk.bench_power import PowerBench
    from metaedge.sdk.power_run import train_power

    if args.inner_lr is not None and not args.inner_lr > 0:
        raise UserError(f"--inner-lr {args.inner_lr} must be a positive number")
    given = {"iterations": args.iterations, "inner_lr": args.inner_lr, "inner_steps": args.inner_steps}
    cfg = PowerBench(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    return train_and_report(args, f"power-{args.method}", cfg.iterations, "meta_loss", "validation sum-rate (bit/s/Hz per slot)",
                            lambda progress: train_power(args.out, args.method, args.periods, cfg, progress), best="val_sum_rate")


SNN_EXAMPLES = """
examples:
  metaedge train snn --out runs/snn-fomaml
  metaedge train snn --method reptile --out runs/snn-reptile
  metaedge train snn --order 16 --pilots 16 --out runs/snn-16qam
  metaedge train snn --channel phase --phase-max 60 --out runs/snn-phase
"""


def run_snn(args: argparse.Namespace) -> int:
    from metaedge.backends.loihi.network import SnnSpec
    from metaedge.sdk.spiking.training import SnnTrainConfig, snn_task, train_snn

    task = snn_task(args.order, args.pilots, args.snr, args.channel, args.phase_max)
    try:
        spec = SnnSpec(classes=args.order, grid=args.grid, steps=args.steps, learning_rate=args.learning_rate)
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg = SnnTrainConfig(method=args.method, iterations=args.iterations, tasks_per_batch=args.tasks_per_batch,
                         meta_lr=args.meta_lr, seed=args.seed)
    return train_and_report(args, f"snn-{args.method}", cfg.iterations, "val_ser",
                            "best validation SER after on-chip adaptation",
                            lambda progress: train_snn(args.out, task, spec, cfg, progress))


def train_and_report(args: argparse.Namespace, name: str, iterations: int, metric: str, label: str, train,
                     best: str | None = None) -> int:
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
        print(f"{name}: {label} {state['best_' + (best or metric)]:.4f} at iteration {state['best_iteration']} "
              f"({state['seconds']:.0f} s) → {args.out}")
    return 0


def run_born(args: argparse.Namespace) -> int:
    from metaedge.sdk.quantum.learning import InnerConfig
    from metaedge.sdk.quantum.training import BornTrainConfig, default_task, make_spec, train_born

    try:
        task = default_task().replace(pilots=args.pilots, snr_db=args.snr, phase_max_deg=args.phase_max)
        spec = make_spec(task, args.qubits, args.layers)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.steps < 0 or not args.lr > 0:
        raise UserError(f"--steps {args.steps} must be ≥ 0 and --lr {args.lr} > 0")
    inner = InnerConfig(steps=args.steps, lr=args.lr, shots=args.shots)
    cfg = BornTrainConfig(method=args.method, iterations=args.iterations, tasks_per_batch=args.tasks_per_batch, seed=args.seed)
    return train_and_report(args, f"born-{args.method}", cfg.iterations, "val_loss", "best validation log-loss",
                            lambda progress: train_born(args.out, task, spec, inner, cfg, progress))


RECIPE_FLAGS = ("iterations", "tasks_per_batch", "inner_steps", "inner_lr", "outer_lr", "outer_opt", "val_every", "patience",
                "prox", "solver", "solver_steps", "samples", "prior_std", "kl_weight", "particles", "modules", "assignment", "proposals", "sharp_in", "sharp_out", "es_directions",
                "es_delta", "es_hessian", "adapt", "inner_data")


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.recipes import recipe
    from metaedge.sdk.rundir import read_config
    from metaedge.sdk.training import TrainConfig, Trainer, configs_from_run

    if args.resume:
        task, train = configs_from_run(read_config(args.out))
        changes = {"compile": args.compile or train.compile}
        if args.iterations:
            changes["iterations"] = args.iterations
        train = TrainConfig(**{**train.__dict__, **changes})
    else:
        task = task_config(args)
        flags = {name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None}
        train = TrainConfig(**{**recipe(args.algo), **flags, "algo": args.algo, "meta_devices": args.meta_devices,
                               "val_devices": args.val_devices, "hidden": tuple(args.hidden), "context": args.context,
                               "seed": args.seed, "compile": args.compile,
                               "pilots_min": args.pilots[0]})
    trainer = Trainer(args.out, task, train)
    trainer.start(resume=args.resume)
    state = train_with_progress(trainer, quiet=args.quiet)
    if args.json:
        print(json.dumps({"run": str(args.out), **state}))
    else:
        print(f"{train.algo}: {state['stop_reason']} after {state['iteration']} iterations; best validation SER "
              f"{state['best_val_ser']:.4f} at iteration {state['best_iteration']} → {args.out}")
    return 0


def train_or_reuse(path: Path, task, train, fresh: bool, quiet: bool) -> dict:
    """Train ``train`` on ``task`` into ``path``; a finished run with the same configuration is reused, an
    interrupted one resumed, one with another configuration refused (``fresh`` retrains)."""
    import shutil

    from metaedge.sdk.rundir import read_config
    from metaedge.sdk.training import Trainer, configs_from_run

    if fresh and path.exists():
        shutil.rmtree(path)
    resume = path.is_dir() and any(path.iterdir())
    if resume and configs_from_run(read_config(path)) != (task, train):
        raise UserError(f"{path} holds a run with another configuration; pass --fresh to retrain or choose another --out")
    trainer = Trainer(path, task, train)
    trainer.start(resume=resume)
    if trainer.state["stop_reason"] and not quiet:
        print(f"{train.algo}: reusing {path} ({trainer.state['stop_reason']})", file=sys.stderr)
    return train_with_progress(trainer, quiet=quiet, label=f"train {train.algo}")


def train_with_progress(trainer, quiet: bool, label: str | None = None) -> dict:
    """Run the trainer with a progress bar (stderr) that shows meta-loss and validation SER."""
    from tqdm import tqdm

    from metaedge.sdk.plots import plot_curves

    bar = tqdm(total=trainer.cfg.iterations, initial=trainer.state["iteration"], desc=label or trainer.cfg.algo,
               disable=quiet or None, file=sys.stderr, unit="it", dynamic_ncols=True)

    def progress(iteration: int, state: dict) -> None:
        bar.update(iteration - bar.n)
        if trainer.curves and iteration == trainer.curves[-1]["iteration"]:
            c = trainer.curves[-1]
            bar.set_postfix(loss=f"{c['meta_loss']:.3f}", val_ser=f"{c['val_ser']:.4f}",
                            **({"prox_residual": f"{c['prox_residual']:.3f}"} if "prox_residual" in c else {}))

    try:
        state = trainer.run(progress)
    finally:
        bar.close()
    plot_curves(trainer.curves, trainer.dir / "curves.png", title=f"{trainer.cfg.algo}: {trainer.dir}")
    warn_if_unsolved(trainer)
    return state


UNSOLVED = 0.2   # proximal residual above which the meta-gradient is not to be trusted (iMAML on the demodulator: 0.03 at
                 # the end of the run that learned, 0.27-0.66 through runs that did not; docs/results/algorithms.md)


def warn_if_unsolved(trainer) -> None:
    """One line on stderr when the kept θ's inner steps end far from the proximal minimum their meta-gradient assumes."""
    best = next((c for c in trainer.curves if c["iteration"] == trainer.state["best_iteration"]), None)
    if best is not None and best.get("prox_residual", 0.0) > UNSOLVED:
        from metaedge.sdk.recipes import recipe

        own = recipe("imaml")
        print(f"{trainer.cfg.algo}: warning: at the kept iteration {best['iteration']} the inner steps end far from the proximal "
              f"minimum (gradient {best['prox_residual']:.2f} of the starting one; curves.json prox_residual), so the "
              f"meta-gradient was unreliable; retrain with a smaller --inner-lr and more --inner-steps "
              f"(iMAML's recipe: {own['inner_steps']} steps of {own['inner_lr']:g})", file=sys.stderr)
