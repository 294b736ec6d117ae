"""Flags generated from configuration dataclasses (``metaedge.sdk.options``): one flag per option field, named after
it, with the field's help text and default, so that flags, the Python API and the defaults cannot drift apart; and
the one way a declared ``Command`` runs: options from the flags, a progress bar, JSON or text."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from metaedge.sdk.log import LOGGER
from metaedge.sdk.options import Command, int_list, str_list


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _parser_of(f: dataclasses.Field) -> Callable[[str], Any] | None:
    kind = str(f.type)
    if f.metadata.get("parse"):
        return f.metadata["parse"]
    if "tuple[int" in kind and not f.metadata.get("repeat"):
        return int_list
    if "tuple[str" in kind:
        return str_list
    if "Path" in kind:
        return Path
    return int if kind.startswith("int") else float if kind.startswith("float") else None


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_config_flags(
    group, config: type, default_text: Callable[[str], str] | None = None, defaults: dict | None = None, skip: tuple[str, ...] = (), prefix: str = ""
) -> None:
    """A flag for every option field of ``config`` (and of the configurations it nests). An unset flag stays None,
    so that the configuration's own default applies; ``defaults`` gives this command's own default of a field
    (by its dotted path), ``default_text`` says where a field's default comes from when the field cannot."""
    defaults = defaults or {}
    for f in dataclasses.fields(config):
        meta, dest = f.metadata, prefix + f.name
        if meta.get("nested"):
            add_config_flags(group, type(_default(f)), default_text, defaults, skip, dest + ".")
            continue
        if dest in skip or not (meta.get("flag") or meta.get("positional")):
            continue
        name = meta["flag"] if isinstance(meta["flag"], str) else f.name.replace("_", "-")
        default = defaults.get(dest, _default(f))
        required = default is dataclasses.MISSING
        hidden = default is None or default is False or default == () or required
        shown = default_text(f.name) if default_text else None if hidden else f"default {_shown(default)}"
        text = meta["help"] + (f" ({shown})" if shown else "")
        common = {"dest": dest, "default": defaults.get(dest), "help": text.replace("%", "%%")}
        if required and not meta.get("positional"):
            common["required"] = True
        if meta.get("positional"):
            many = {"nargs": "+"} if str(f.type).startswith("tuple") else {}
            kind = meta.get("parse") or (Path if "Path" in str(f.type) else None)
            group.add_argument(dest, type=kind, choices=meta.get("choices"), metavar=meta.get("metavar"), help=meta["help"], **many)
        elif meta.get("repeat"):
            group.add_argument(f"--{name}", action="append", type=meta.get("parse") or Path, metavar=meta.get("metavar"), **common)
        elif "bool" in str(f.type):
            action = argparse.BooleanOptionalAction if default is True else "store_true"
            group.add_argument(f"--{name}", action=action, **common)
        else:
            metavar = meta.get("metavar") or (None if meta.get("choices") else name.upper().replace("-", "_"))
            bare = {"nargs": "?", "const": meta["const"]} if meta.get("const") is not None else {}
            group.add_argument(f"--{name}", type=_parser_of(f), choices=meta.get("choices"), metavar=metavar, **bare, **common)


def config_from(args: argparse.Namespace, config: type, prefix: str = "", **fixed: Any) -> Any:
    """``config`` built from the flags ``add_config_flags`` made for it: set flags replace the defaults."""
    values = {}
    for f in dataclasses.fields(config):
        if f.name in fixed:
            continue
        if f.metadata.get("nested"):
            values[f.name] = config_from(args, type(_default(f)), prefix + f.name + ".")
        elif (f.metadata.get("flag") or f.metadata.get("positional")) and getattr(args, prefix + f.name, None) is not None:
            value = getattr(args, prefix + f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return config(**values, **fixed)


class ProgressBar:
    """A tqdm bar on stderr, made at the first report (commands that report nothing show none; hidden with --quiet
    or without a terminal); calling it is the ``Progress`` protocol."""

    def __init__(self, name: str, quiet: bool) -> None:
        self.name, self.quiet, self.bar = name, quiet, None

    def __call__(self, advance: int = 1, *, total: int | None = None, label: str | None = None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.name, disable=self.quiet or None, file=sys.stderr)
        if total is not None:
            self.bar.reset(total=total)
        if label:
            self.bar.set_description(label)
        if advance:
            self.bar.update(advance)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def add_declared(sub, command: Command, add_command: Callable) -> None:
    """The subcommand of a declared ``Command``: its options as flags, --json and --quiet."""
    p = add_command(sub, command.name, help=command.help, description=command.description, examples=command.examples)
    add_config_flags(p, command.options, defaults=command.defaults, skip=command.skip)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=lambda args: run_declared(command, args))


def run_declared(command: Command, args: argparse.Namespace) -> int:
    """Options from the flags (and the invocation — command line, --quiet — for options that take it), the work under a progress
    bar, then the report as JSON or text; the exit code the report implies."""
    invocation = {"command": "metaedge " + shlex.join(args.argv), "quiet": args.quiet}
    names = {f.name for f in dataclasses.fields(command.options)}
    options = config_from(args, command.options, **command.fixed, **{k: v for k, v in invocation.items() if k in names})
    LOGGER.debug(f"{command.name}: {options}")
    module_name, _, name = command.module.partition(":")
    module = importlib.import_module(module_name)
    progress = ProgressBar(command.name, args.quiet)
    try:
        report = getattr(module, name or "run")(options, progress)
    finally:
        progress.close()
    if args.json:
        shown = {k: v for k, v in report.items() if not k.startswith("_")} if isinstance(report, dict) else report
        print(json.dumps(shown, indent=2))
    else:
        print(getattr(module, f"{name}_text" if name else "text")(report))
    exit_code = getattr(module, f"{name}_exit_code" if name else "exit_code", None)
    return exit_code(report) if exit_code else 0
