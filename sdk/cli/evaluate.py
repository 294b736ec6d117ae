"""``metaedge eval``: SER of trained runs and reference receivers on fresh devices."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import int_list, positive_int
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge eval runs/maml runs/fomaml runs/joint
  metaedge eval runs/* --pilots 1,2,4,8,16,32 --json > ser.json
  metaedge eval runs/maml --adapt-steps 5 --plot ser.png
  metaedge eval runs/modular --pilots 8 --assignment exhaustive     # modules chosen as an exported device chooses them
  metaedge eval runs/maml runs/bmaml --pilots 8 --reliability reliability.png
"""


def register(sub) -> None:
    p = sub.add_parser("eval", help="SER of trained runs vs the model-based receiver",
                       description="Meta-test: adapt each run on P pilots of fresh devices and measure the symbol error "
                                   "rate on their payload, next to training from scratch and the model-based receiver "
                                   "(MMSE channel estimate + ML detection).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--pilots", type=int_list, default=[1, 2, 4, 8, 16, 32], help="pilot counts (default 1,2,4,8,16,32)")
    p.add_argument("--devices", type=positive_int, default=100, help="meta-test devices (default 100)")
    p.add_argument("--payload", type=positive_int, default=10_000, help="payload symbols per device (default 10000)")
    p.add_argument("--adapt-steps", type=int, default=None, help="adaptation steps for every learned method (default: each run's inner steps)")
    p.add_argument("--assignment", choices=("anneal", "exhaustive", "relaxed"), default=None,
                   help="modular runs: how each device's modules are chosen (default: the run's; exhaustive is what an "
                        "exported bundle's device computes)")
    p.add_argument("--scratch-lr", type=float, default=0.1, help="step size of training from scratch (default 0.1)")
    p.add_argument("--no-baselines", action="store_true", help="skip training from scratch and the model-based receiver")
    p.add_argument("--seed", type=int, default=None, help="seed of the meta-test devices (default: the runs' seed)")
    p.add_argument("--plot", type=Path, help="write SER vs pilots as a PNG")
    p.add_argument("--reliability", type=Path, metavar="PNG",
                   help="write reliability diagrams (accuracy vs confidence, 10 bins, with ECE) at --reliability-pilots")
    p.add_argument("--reliability-pilots", type=positive_int, default=None, metavar="P",
                   help="pilot count of the reliability diagrams (default: 8 if evaluated, else the largest)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.reliability_pilots is not None and args.reliability_pilots not in args.pilots:
        raise UserError(f"--reliability-pilots {args.reliability_pilots} is not among --pilots {','.join(map(str, args.pilots))}; add it there")
    report = evaluate_runs(args.runs, args.pilots, args.devices, args.payload, args.adapt_steps, args.scratch_lr,
                           baselines=not args.no_baselines, seed=args.seed, quiet=args.quiet, assignment=args.assignment)
    report["command"] = "metaedge " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("metaedge") else None
    if args.plot:
        from metaedge.sdk.plots import plot_ser

        plot_ser(report["methods"], args.pilots, args.plot, title=f"{report['task']['order']}-QAM, {report['task']['snr_db']:g} dB")
    if args.reliability:
        from metaedge.sdk.plots import plot_reliability

        at = args.reliability_pilots or (8 if 8 in args.pilots else max(args.pilots))
        plot_reliability({m["name"]: m["reliability"][str(at)] for m in report["methods"]}, args.reliability,
                         f"{report['task']['order']}-QAM, {report['task']['snr_db']:g} dB, {at} pilots")
    print(json.dumps(report, indent=2) if args.json else ser_table(report))
    return 0


def evaluate_runs(runs: list[Path], pilots: list[int], devices: int, payload: int, adapt_steps: int | None,
                  scratch_lr: float, baselines: bool, seed: int | None, quiet: bool, assignment: str | None = None) -> dict:
    """Load runs, build receivers, evaluate them on the same meta-test devices; ``assignment`` overrides how
    modular runs choose their modules."""
    import dataclasses

    import numpy as np
    import torch
    from tqdm import tqdm

    from metaedge.sdk.evaluation import evaluate
    from metaedge.sdk.models.mlp import MLPSpec
    from metaedge.sdk.receivers import LearnedReceiver, ModelBasedReceiver
    from metaedge.sdk.rundir import load_run
    from metaedge.sdk.tasks.demod import DemodTasks
    from metaedge.sdk.training import configs_from_run

    if adapt_steps is not None and adapt_steps < 0:
        raise UserError(f"--adapt-steps {adapt_steps} must be 0 or more")
    loaded = [load_run(r) for r in runs]
    configs = [configs_from_run(r.config) for r in loaded]
    task = configs[0][0]
    for run, (t, _) in zip(loaded, configs):
        if t.replace(pilots=task.pilots, val_pilots=task.val_pilots) != task:
            raise UserError(f"{run.path} was trained on another task configuration than {loaded[0].path}; evaluate them separately")
    if max(pilots) + payload > task.frame:
        raise UserError(f"max pilots {max(pilots)} + payload {payload} exceed the frame of {task.frame} symbols; lower --payload")
    tasks = DemodTasks(task, seed=configs[0][1].seed if seed is None else seed)
    names = [r.algo for r in loaded]
    if assignment is not None and not any(train.inner().assignment for _, train in configs):
        raise UserError("--assignment applies to modular runs, and none was given")
    receivers = []
    for run, (_, train), name in zip(loaded, configs, names):
        inner = train.inner()
        if adapt_steps is not None:
            inner = dataclasses.replace(inner, steps=adapt_steps)
        if assignment is not None and inner.assignment:
            inner = dataclasses.replace(inner, assignment=assignment)
        label = name if names.count(name) == 1 else f"{name} ({run.path.name})"
        params = {k: torch.from_numpy(v) for k, v in run.theta.items()}
        receivers.append((LearnedReceiver(label, params, inner, task.order), {"run": str(run.path), "algo": run.algo}))
    if baselines:
        spec = MLPSpec(sizes=tuple(loaded[0].config["model"]["sizes"]))
        steps = adapt_steps if adapt_steps is not None else max(c[1].inner_steps for c in configs)
        init = {k: torch.from_numpy(v) for k, v in spec.init(np.random.default_rng([tasks.seed, 7])).items()}
        scratch = LearnedReceiver("scratch", init, type(configs[0][1].inner())(lr=scratch_lr, steps=steps), task.order)
        receivers.append((scratch, {"algo": "scratch"}))
        receivers.append((ModelBasedReceiver(tasks.constellation, task.noise_var, task.channel_var), {"algo": "model-based"}))
    reference = receivers[-1][0].name if baselines else None
    with tqdm(total=len(receivers) * len(pilots), desc="eval", disable=quiet or None, file=sys.stderr) as bar:
        results = evaluate(receivers, tasks, pilots, devices, payload, progress=bar.update, reference=reference)
    return {"task": task.to_dict(), "seed": tasks.seed, "devices": devices, "payload": payload, "pilots": pilots,
            "methods": [r.to_dict() for r in results]}


def ser_table(report: dict) -> str:
    from metaedge.sdk.cli.main import format_table

    pilots = report["pilots"]
    def cell(entry: dict) -> str:
        vs = entry.get("vs_reference", {})
        mark = "*" if vs.get("better") else "-" if vs.get("worse") else " "
        return f"{entry['ser']:.4f} ±{(entry['ci95'][1] - entry['ci95'][0]) / 2:.4f}{mark}"

    rows = [[m["name"], *(cell(m["ser"][str(p)]) for p in pilots)] for m in report["methods"]]
    head = (f"SER on {report['devices']} devices × {report['payload']} payload symbols "
            f"({report['task']['order']}-QAM, {report['task']['snr_db']:g} dB, seed {report['seed']}; ±: 95 % interval over devices)")
    legend = ("*: fewer errors than the model-based receiver, -: more (paired over devices, 95 %)"
              if any("vs_reference" in e for m in report["methods"] for e in m["ser"].values()) else "")
    ece_rows = [[m["name"], *(f"{m['ser'][str(p)]['ece']:.4f}" for p in pilots)] for m in report["methods"]]
    return (head + "\n" + format_table(["method \\ pilots", *map(str, pilots)], rows) + ("\n" + legend if legend else "")
            + "\n\nexpected calibration error (10 equal bins, all payload symbols)\n"
            + format_table(["method \\ pilots", *map(str, pilots)], ece_rows))
