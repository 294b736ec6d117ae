"""Argument parsing that answers bad input with one line, never a usage dump or traceback."""

from __future__ import annotations

import argparse
import re

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
    def __init__(self, *args, **kwargs) -> None:
        # no prefix matching: a flag that was renamed (--rtn) must not silently become another one (--rtn-taps)
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

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
