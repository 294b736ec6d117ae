"""``metaedge bench``: every benchmark, generated from the options its library module declares (JSON with --json)."""

from __future__ import annotations

import importlib

from metaedge.sdk.cli.options import add_declared
from metaedge.sdk.cli.parsing import add_command

DECLARED = (  # modules whose BENCH commands are generated from their options
    "metaedge.sdk.bench.config",
    *(f"metaedge.sdk.families.{name}.config" for name in ("demod", "link", "power", "prediction", "sinusoid", "demod.snn", "demod.born")),
)


def register(sub) -> None:
    p = add_command(sub, "bench", help="benchmarks: figures and speed, JSON with --json")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK", parser_class=type(p))
    for module in DECLARED:
        declared = importlib.import_module(module).BENCH
        for command in declared if isinstance(declared, tuple) else (declared,):
            add_declared(benches, command, add_command)
