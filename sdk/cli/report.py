"""``metaedge report``: every task family's evaluation, as PNG figures and one HTML page."""

from __future__ import annotations

import argparse
import sys

from metaedge.sdk.cli.parsing import add_command, add_seed
from metaedge.sdk.options import output_dir, str_list

EXAMPLES = """
examples:
  metaedge report --out report                     # ~15 min on 2 cores; open report/index.html
  metaedge report --out report --sections link,prediction
  metaedge report --out /tmp/r --quick             # seconds: the machinery, not the figures
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "report",
        help="run the evaluation suites and write figures and an HTML page",
        description="Run the demodulation, learned-link, channel-prediction, power-control and device "
        "evaluations and write PNG figures, report.json and index.html (tables and figures; "
        "every section states the command and seed that reproduce it). Trained demodulators are "
        "kept under OUT/runs and reused by a second run.",
        examples=EXAMPLES,
    )
    p.add_argument("--out", type=output_dir, required=True, help="directory for index.html, report.json and the figures")
    p.add_argument("--sections", type=str_list, default=None, help="default demod,link,prediction,power,device")
    add_seed(p)
    p.add_argument("--quick", action="store_true", help="tiny budgets, for tests of the machinery")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.report import SECTIONS, build

    sections = tuple(args.sections or SECTIONS)

    def progress(name: str) -> None:
        if not args.quiet:
            print(f"report: {name} …", file=sys.stderr)

    build(args.out, sections, args.seed, args.quick, args.quiet, progress)
    print(f"written: {args.out / 'index.html'} ({len(sections)} sections)")
    return 0
