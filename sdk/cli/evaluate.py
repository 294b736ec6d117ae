"""``metaedge eval``: SER of trained runs and reference receivers on fresh devices."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from metaedge.backends.selection import SELECT
from metaedge.sdk.cli.parsing import add_command, add_reporting
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.task import PILOT_SEQUENCES
from metaedge.sdk.options import int_list, margin, output_file, positive_int

EXAMPLES = """
examples:
  metaedge eval runs/maml runs/fomaml runs/joint
  metaedge eval runs/* --pilots 1,2,4,8,16,32 --json > ser.json
  metaedge eval runs/maml --inner-steps 5 --plot ser.png
  metaedge eval runs/modular --pilots 8 --assignment exhaustive     # modules chosen as an exported device chooses them
  metaedge eval runs/maml runs/bmaml --pilots 8 --reliability reliability.png
  metaedge eval runs/metasgd --select --devices 1000 --payload 2000       # and as the device selects per frame
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "eval",
        help="SER of trained runs vs the model-based receiver",
        description="Meta-test: adapt each run on P pilots of fresh devices and measure the symbol error "
        "rate on their payload, next to training from scratch and the model-based receiver "
        "(MMSE channel estimate + ML detection).",
        examples=EXAMPLES,
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--pilots", type=int_list, default=[1, 2, 4, 8, 16, 32], help="pilot counts (default 1,2,4,8,16,32)")
    p.add_argument("--devices", type=positive_int, default=100, help="meta-test devices (default 100)")
    p.add_argument("--payload", type=positive_int, default=10_000, help="payload symbols per device (default 10000)")
    p.add_argument("--inner-steps", type=int, default=None, help="adaptation steps for every learned method (default: each run's inner steps)")
    p.add_argument(
        "--assignment",
        choices=("anneal", "exhaustive", "relaxed"),
        default=None,
        help="modular runs: how each device's modules are chosen (default: the run's; exhaustive is what an exported bundle's device computes)",
    )
    p.add_argument("--scratch-lr", type=float, default=0.1, help="step size of training from scratch (default 0.1)")
    p.add_argument("--no-baselines", action="store_true", help="skip training from scratch and the model-based receiver")
    p.add_argument("--seed", type=int, default=None, help="seed of the meta-test devices (default: the runs' seed)")
    p.add_argument(
        "--pilot-sequence",
        choices=PILOT_SEQUENCES,
        default=None,
        help="the frames' pilot symbols: the known sequence, or drawn at random (default: as the first run was trained)",
    )
    p.add_argument(
        "--select",
        nargs="?",
        type=margin,
        const=SELECT.margin,
        default=None,
        metavar="MARGIN",
        help=f"also score each run's selecting receiver, as its bundle's device decides: the classical receiver where the guard or "
        f"the frame residual says so (margin default {SELECT.margin})",
    )
    p.add_argument("--plot", type=output_file, help="write SER vs pilots as a PNG")
    p.add_argument(
        "--reliability",
        type=output_file,
        metavar="PNG",
        help="write reliability diagrams (accuracy vs confidence, 10 bins, with ECE) at --reliability-pilots",
    )
    p.add_argument(
        "--reliability-pilots",
        type=positive_int,
        default=None,
        metavar="P",
        help="pilot count of the reliability diagrams (default: 8 if evaluated, else the largest)",
    )
    add_reporting(p, "results")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.demod.runs import evaluate_runs

    if args.reliability_pilots is not None and args.reliability_pilots not in args.pilots:
        raise UserError(f"--reliability-pilots {args.reliability_pilots} is not among --pilots {','.join(map(str, args.pilots))}; add it there")
    report = evaluate_runs(
        args.runs,
        args.pilots,
        args.devices,
        args.payload,
        args.inner_steps,
        args.scratch_lr,
        baselines=not args.no_baselines,
        seed=args.seed,
        quiet=args.quiet,
        assignment=args.assignment,
        pilot_sequence=args.pilot_sequence,
        select=None if args.select is None else dataclasses.replace(SELECT, margin=args.select),
    )
    report["command"] = "metaedge " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("metaedge") else None
    if args.plot:
        from metaedge.sdk.plots import plot_ser

        plot_ser(report["methods"], args.pilots, args.plot, title=f"{report['task']['order']}-QAM, {report['task']['snr_db']:g} dB")
    if args.reliability:
        from metaedge.sdk.plots import plot_reliability

        at = args.reliability_pilots or (8 if 8 in args.pilots else max(args.pilots))
        plot_reliability(
            {m["name"]: m["reliability"][str(at)] for m in report["methods"]},
            args.reliability,
            f"{report['task']['order']}-QAM, {report['task']['snr_db']:g} dB, {at} pilots",
        )
    print(json.dumps(report, indent=2) if args.json else ser_table(report))
    return 0


def ser_table(report: dict) -> str:
    from metaedge.sdk.stats import format_table

    pilots = report["pilots"]

    def cell(entry: dict) -> str:
        vs = entry.get("vs_reference", {})
        mark = "*" if vs.get("better") else "-" if vs.get("worse") else " "
        return f"{entry['ser']:.4f} ±{(entry['ci95'][1] - entry['ci95'][0]) / 2:.4f}{mark}"

    rows = [[m["name"], *(cell(m["ser"][str(p)]) for p in pilots)] for m in report["methods"]]
    head = (
        f"SER on {report['devices']} devices × {report['payload']} payload symbols "
        f"({report['task']['order']}-QAM, {report['task']['snr_db']:g} dB, seed {report['seed']}; ±: 95 % interval over devices)"
    )
    legend = (
        "*: fewer errors than the model-based receiver, -: more (paired over devices, 95 %)"
        if any("vs_reference" in e for m in report["methods"] for e in m["ser"].values())
        else ""
    )
    ece_rows = [[m["name"], *(f"{m['ser'][str(p)]['ece']:.4f}" for p in pilots)] for m in report["methods"]]
    return (
        head
        + "\n"
        + format_table(["method \\ pilots", *map(str, pilots)], rows)
        + ("\n" + legend if legend else "")
        + "\n\nexpected calibration error (10 equal bins, all payload symbols)\n"
        + format_table(["method \\ pilots", *map(str, pilots)], ece_rows)
    )
