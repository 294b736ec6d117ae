"""``metaedge device``: run a simulated edge device (``serve``), and manage one over its protocol."""

from __future__ import annotations

from metaedge.sdk.cli import serve
from metaedge.sdk.cli.options import add_declared
from metaedge.sdk.cli.parsing import add_command
from metaedge.sdk.device_commands import EXAMPLES, MANAGEMENT


def register(sub) -> None:
    p = add_command(sub, "device", help="run or manage a simulated edge device", examples=EXAMPLES)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(p))
    serve.register(actions)
    for command in MANAGEMENT:
        add_declared(actions, command, add_command)
