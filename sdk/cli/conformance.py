"""``metaedge conformance``: generate the spec 1.1 conformance suite, and play it against a device."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command, add_device
from metaedge.sdk.errors import UserError
from metaedge.sdk.options import output_dir

EXAMPLES = """
examples:
  metaedge conformance generate --out conformance
  metaedge device serve --state devices/c1 --listen 127.0.0.1:7411 --trusted-key conformance/keys/conformance.pub &
  metaedge conformance run --suite conformance --device tcp://127.0.0.1:7411
  metaedge conformance run --suite conformance --device tcp://10.0.0.7:7410 --operator-key keys/operator.key --json
  metaedge conformance table --suite conformance     # the statement → case table at the end of the spec
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "conformance",
        help="the bundle and protocol conformance suite: generate it, run it against a device",
        description="Cases for every rejection rule and attack a bundle can carry, and valid bundles with frames and "
        "their expected outputs, in a directory with a machine-readable index. 'run' plays them against any device "
        "that speaks the management protocol: a fresh device that trusts the suite's public key.",
        examples=EXAMPLES,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(p))
    g = add_command(actions, "generate", help="write the suite (deterministic: the same bytes every time)", examples=EXAMPLES)
    g.add_argument("--out", type=output_dir, required=True, help="directory to write (must be empty or new)")
    g.set_defaults(handler=run_generate)
    r = add_command(actions, "run", help="play the suite against a device; a pass/fail table, or --json", examples=EXAMPLES)
    r.add_argument("--suite", type=Path, required=True, help="a directory written by 'metaedge conformance generate'")
    add_device(r)
    r.add_argument("--json", action="store_true")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(handler=run_suite)
    t = add_command(actions, "table", help="the spec's table of statements and the cases that check them, as markdown")
    t.add_argument("--suite", type=Path, required=True, help="a directory written by 'metaedge conformance generate'")
    t.set_defaults(handler=run_table)


def run_generate(args: argparse.Namespace) -> int:
    from metaedge.sdk.conformance import cases, suite

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UserError(f"--out {args.out} exists and is not an empty directory; choose another")
    generated, public = cases.generate()
    index = suite.write(generated, public, args.out)
    print(f"{len(generated)} cases written to {args.out} (index {index}); devices under test trust {args.out / suite.KEY_FILE}")
    return 0


def run_suite(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.sdk.conformance import runner
    from metaedge.sdk.conformance.suite import SuiteError, read_index
    from metaedge.sdk.device_frames import connect

    try:
        total = len(read_index(args.suite)["cases"])
    except SuiteError as e:
        raise UserError(str(e)) from None
    with connect(args.device, args.operator_key) as client, tqdm(total=total, desc="cases", disable=args.quiet or None, file=sys.stderr) as bar:
        try:
            report = runner.run(args.suite, client, args.device, progress=bar.update)
        except SuiteError as e:
            raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["results"]:
            verdict = "SKIP" if r.get("skipped") else "PASS" if r["passed"] else "FAIL"
            print(f"{verdict}  {r['id']:<28} {r['section']:<34} {r['detail'][:100]}")
        print(
            f"{report['passed']} passed, {report['failed']} failed, {report['skipped']} skipped (other targets than "
            f"'{report['target']}', or operator authentication without --operator-key) of {report['cases']} cases (spec {report['spec']})"
        )
    return 0 if report["failed"] == 0 else 1


def run_table(args: argparse.Namespace) -> int:
    from metaedge.sdk.conformance.suite import SuiteError, read_index, statement_table

    try:
        print(statement_table(read_index(args.suite)), end="")
    except SuiteError as e:
        raise UserError(str(e)) from None
    return 0
