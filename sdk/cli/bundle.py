"""``metaedge export``, ``inspect``, ``sign`` and ``keys generate``: the bundle commands of ``sdk/targets/commands.py``."""

from __future__ import annotations

from metaedge.sdk.cli.options import add_declared
from metaedge.sdk.cli.parsing import add_command
from metaedge.sdk.targets.commands import EXPORT, INSPECT, KEYS, SIGN


def register(sub) -> None:
    for command in (EXPORT, INSPECT, SIGN):
        add_declared(sub, command, add_command)
    keys = add_command(sub, "keys", help="signing keys", examples="examples:\n  metaedge keys generate --out keys --name release-2027")
    add_declared(keys.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(keys)), KEYS, add_command)
