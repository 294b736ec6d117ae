"""``metaedge conformance generate|run|table`` declared once: their options (the flags) and what each runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.sdk.device_commands import DeviceRequest
from metaedge.sdk.errors import UserError
from metaedge.sdk.options import Progress, command, option, output_dir, silent

EXAMPLES = """
examples:
  metaedge conformance generate --out conformance
  metaedge device serve --state devices/c1 --listen 127.0.0.1:7411 --trusted-key conformance/keys/conformance.pub &
  metaedge conformance run --suite conformance --device tcp://127.0.0.1:7411
  metaedge conformance run --suite conformance --device tcp://10.0.0.7:7410 --operator-key keys/operator.key --json
  metaedge conformance table --suite conformance     # the statement → case table at the end of the spec
"""
SUITE_HELP = "a directory written by 'metaedge conformance generate'"


@dataclass(frozen=True)
class GenerateOptions:
    """write the suite (deterministic: the same bytes every time)"""

    EXAMPLES: ClassVar[str] = EXAMPLES

    out: Path = option(help="directory to write (must be empty or new)", parse=output_dir)


@dataclass(frozen=True, kw_only=True)
class RunOptions(DeviceRequest):
    """play the suite against a device; a pass/fail table, or --json"""

    EXAMPLES: ClassVar[str] = EXAMPLES

    suite: Path = option(help=SUITE_HELP)


@dataclass(frozen=True)
class TableOptions:
    """the spec's table of statements and the cases that check them, as markdown"""

    EXAMPLES: ClassVar[str] = EXAMPLES

    suite: Path = option(help=SUITE_HELP)


def generate(options: GenerateOptions, progress: Progress = silent) -> dict:
    from metaedge.sdk.conformance import cases, suite

    if options.out.exists() and (not options.out.is_dir() or any(options.out.iterdir())):
        raise UserError(f"--out {options.out} exists and is not an empty directory; choose another")
    generated, public = cases.generate()
    index = suite.write(generated, public, options.out)
    return {"cases": len(generated), "out": str(options.out), "index": str(index), "key": str(options.out / suite.KEY_FILE)}


def generate_text(report: dict) -> str:
    return f"{report['cases']} cases written to {report['out']} (index {report['index']}); devices under test trust {report['key']}"


def play(options: RunOptions, progress: Progress = silent) -> dict:
    from metaedge.sdk.conformance import runner
    from metaedge.sdk.conformance.suite import SuiteError, read_index
    from metaedge.sdk.device_frames import connect

    try:
        progress(0, total=len(read_index(options.suite)["cases"]), label="cases")
        with connect(options.device, options.signer()) as client:
            return runner.run(options.suite, client, options.device, progress=progress)
    except SuiteError as e:
        raise UserError(str(e)) from None


def play_text(report: dict) -> str:
    lines = []
    for r in report["results"]:
        verdict = "SKIP" if r.get("skipped") else "PASS" if r["passed"] else "FAIL"
        lines.append(f"{verdict}  {r['id']:<28} {r['section']:<34} {r['detail'][:100]}")
    lines.append(
        f"{report['passed']} passed, {report['failed']} failed, {report['skipped']} skipped (other targets than "
        f"'{report['target']}', or operator authentication without --operator-key) of {report['cases']} cases (spec {report['spec']})"
    )
    return "\n".join(lines)


def play_exit_code(report: dict) -> int:
    return 0 if report["failed"] == 0 else 1


def table(options: TableOptions, progress: Progress = silent) -> dict:
    from metaedge.sdk.conformance.suite import SuiteError, read_index, statement_table

    try:
        return {"table": statement_table(read_index(options.suite))}
    except SuiteError as e:
        raise UserError(str(e)) from None


def table_text(report: dict) -> str:
    return report["table"].rstrip("\n")


CONFORMANCE = (
    command("generate", GenerateOptions, "metaedge.sdk.conformance.commands:generate"),
    command("run", RunOptions, "metaedge.sdk.conformance.commands:play"),
    command("table", TableOptions, "metaedge.sdk.conformance.commands:table"),
)
