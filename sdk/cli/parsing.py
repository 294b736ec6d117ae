"""Argument parsing that answers bad input with one line, never a usage dump or traceback."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from metaedge.sdk.errors import UserError

# flags renamed so that one notion has one name in every command (docs/cli.md); the old names get a hint
RENAMED = {
    "--method": "--algo",
    "--methods": "--algos",
    "--adapt-steps": "--inner-steps",
    "--lr": "--inner-lr",
    "--meta-lr": "--outer-lr",
    "--steps": "--inner-steps (adaptation steps) or --timesteps (a spiking receiver's)",
    "--rtn": "--rtn-taps 3",
    "--no-rtn": "--rtn-taps 0",
    "--beta": "--beta-a A --beta-b B",
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 — argparse's hook
        hints = [f"{old} is now {new}" for old, new in RENAMED.items() if re.search(rf"(?<![\w-]){old}(?![\w-])", message)]
        if "invalid choice" in message and self._subparsers is not None:  # e.g. 'metaedge train --out r1'
            hints.append(f"name one of the choices first, e.g. '{self.prog} {self._first_choice()} …'")
        command = self.prog.removeprefix("metaedge").strip()  # main prints 'metaedge: error:' once
        where = f"{command}: " if command else ""
        raise UserError(f"{where}{message}{''.join('; ' + h for h in hints)} (see '{self.prog} --help')")

    def _first_choice(self) -> str:
        actions = [a for a in self._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)]
        return next(iter(actions[0].choices)) if actions else "…"


def add_command(sub, name: str, help: str, description: str | None = None, examples: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose help keeps the examples' line breaks."""
    return sub.add_parser(name, help=help, description=description, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_reporting(p, what: str = "the results", progress: bool = True) -> None:
    """--json (print ``what`` as JSON instead of tables) and, for long commands, --quiet (no progress bars)."""
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")
    if progress:
        p.add_argument("--quiet", action="store_true", help="no progress bars")


OPERATOR_KEY_ENV = "METAEDGE_OPERATOR_KEY"


def add_device(p) -> None:
    """--device (where the device listens) and --operator-key (the private key that signs requests, from
    $METAEDGE_OPERATOR_KEY when not given)."""

    p.add_argument("--device", required=True, help="tcp://HOST:PORT")
    p.add_argument(
        "--operator-key",
        type=Path,
        metavar="KEY",
        default=os.environ.get(OPERATOR_KEY_ENV) or None,
        help=f"operator's Ed25519 private key: signs every request, as a device started with --operator needs for "
        f"deploy, test, reset and confirm (default ${OPERATOR_KEY_ENV})",
    )


def add_seed(p, what: str = "the simulated devices and channels") -> None:
    p.add_argument("--seed", type=int, default=0, help=f"seed of {what} (default 0)")
