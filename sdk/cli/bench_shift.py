"""``metaedge bench shift``: learned, classical and selecting receivers on trained and shifted devices, as JSON and a PNG."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from metaedge.backends.selection import SELECT
from metaedge.sdk.cli.parsing import add_benchmark, add_command, chosen, int_list, margin, positive_int, str_list
from metaedge.sdk.families.demod.shift import RECEIVERS, SHIFTS

EXAMPLES = """
examples:
  metaedge bench shift runs/demo/metasgd --json > shift.json      # 1000 devices × 2000 symbols, ~5 min on 2 cores
  metaedge bench shift runs/demo/metasgd --shifts trained,iq-milder --pilots 4,8
  metaedge bench shift runs/demo/metasgd --margin 0 --plot shift-m0.png
  metaedge bench shift runs/demo/metasgd --split val --seed 7 --margin 0.1 --json   # choose a margin on validation devices
"""


def register(benches) -> None:
    b = add_command(
        benches,
        "shift",
        help="does a deployed demodulator know when not to trust itself? SER under distribution shift",
        description="A demodulator run's learned receiver, the classical receiver its bundle carries (MMSE channel "
        "estimate + ML on the nominal constellation) and the selecting receiver its device runs (per frame, "
        "the classical one where the adaptation guard or the frame residual says so), on fresh devices as "
        f"trained and under shifts ({', '.join(SHIFTS)}), paired over the same devices and frames.",
        examples=EXAMPLES,
    )
    b.add_argument("run", type=Path, metavar="RUN_DIR", help="a demodulator run (metaedge train demod)")
    b.add_argument("--shifts", type=str_list, default=None, help=f"default all: {','.join(SHIFTS)}")
    b.add_argument("--pilots", type=int_list, default=[1, 2, 4, 8, 16], help="pilot counts (default 1,2,4,8,16)")
    b.add_argument("--devices", type=positive_int, default=1000, help="fresh devices per shift (default 1000)")
    b.add_argument("--payload", type=positive_int, default=2000, help="payload symbols per frame (default 2000)")
    b.add_argument("--margin", type=margin, default=SELECT.margin, help=f"the selection margin (default {SELECT.margin}, what bundles carry)")
    b.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="fresh devices of the meta-test stream (default) or of the validation stream, to choose a margin on",
    )
    add_benchmark(b, "shift.png", "SER vs pilots per shift")
    b.set_defaults(handler=run, seed=None)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.sdk.families.demod.shift import run_shift
    from metaedge.sdk.plots import plot_shift

    shifts = chosen(args.shifts, tuple(SHIFTS), "--shifts", "shift")
    devices, payload, pilots = (20, 100, args.pilots[:2]) if args.quick else (args.devices, args.payload, args.pilots)
    with tqdm(total=len(shifts) * len(RECEIVERS) * len(pilots), desc="shift", disable=args.quiet or None, file=sys.stderr) as bar:
        select = dataclasses.replace(SELECT, margin=args.margin)
        report = run_shift(args.run, list(shifts), pilots, devices, payload, select, args.seed, args.split, progress=bar.update)
    plot_shift(report, args.plot)
    report["plot"] = str(args.plot)
    print(json.dumps(report, indent=2) if args.json else f"{text_report(report)}\n\nwritten: {args.plot}")
    return 0


def text_report(report: dict) -> str:
    """SER per shift and receiver, the classical share and the paired difference to the better receiver, then the claims."""
    from metaedge.sdk.stats import format_table

    pilots = [str(p) for p in report["pilots"]]
    rows = []
    for shift in report["shifts"]:
        for receiver in RECEIVERS:
            rows.append([f"{shift['name']} {receiver}", *(f"{shift['ser'][receiver][p]['ser']:.4f}" for p in pilots)])
        rows.append([f"{shift['name']} classical share", *(f"{shift['classical_share'][p]:.2f}" for p in pilots)])
        rows.append([f"{shift['name']} selecting − better", *(_paired(shift["selecting_vs"][p]["better"]) for p in pilots)])
    lines = [
        f"{report['algo']} ({report['run']}): SER on {report['devices']} fresh devices × {report['payload']} symbols per shift, "
        f"margin {report['select']['margin']:g} on {report['select']['samples']} payload samples; ±: 95 % paired interval over devices",
        format_table(["shift / receiver", *pilots], rows),
        "",
    ]
    lines += [f"{'holds' if c['holds'] else 'FAILS'}: {c['claim']}" + "".join(f"\n    {f}" for f in c["failures"]) for c in report["checks"]]
    return "\n".join(lines)


def _paired(paired: dict) -> str:
    return f"{paired['diff']:+.4f} [{paired['ci95'][0]:+.4f}, {paired['ci95'][1]:+.4f}]"
