"""``metaedge bench``: every benchmark, generated from the options the library declares: the cross-family ones
(``sdk/bench/config.py``) and each family's (JSON with --json)."""

from __future__ import annotations

from metaedge.sdk import families
from metaedge.sdk.bench.config import BENCH
from metaedge.sdk.cli.options import add_declared
from metaedge.sdk.cli.parsing import add_command


def register(sub) -> None:
    p = add_command(sub, "bench", help="benchmarks: figures and speed, JSON with --json")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK", parser_class=type(p))
    for command in (*BENCH, *families.commands("BENCH")):
        add_declared(benches, command, add_command)
