"""Command-line flags generated from a configuration dataclass: one flag per field, named after it, with the
field's help text and default, so that flags, the Python API and the defaults cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

from metaedge.sdk.cli.parsing import int_list


def flag_fields(config: type) -> tuple[str, ...]:
    """The fields of ``config`` that are command-line flags."""
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get("flag"))


def add_config_flags(group, config: type, default_text: Callable[[str], str]) -> None:
    """A flag ``--field-name`` for every field of ``config`` whose metadata marks it as one; unset flags stay None,
    so that the configuration's own defaults apply."""
    for f in dataclasses.fields(config):
        if not f.metadata.get("flag"):
            continue
        flag, text = "--" + f.name.replace("_", "-"), f"{f.metadata['help']} ({default_text(f.name)})"
        if "bool" in str(f.type):
            group.add_argument(flag, action="store_true", default=None, help=text)
        else:
            kind = int_list if "tuple[int" in str(f.type) else int if "int" in str(f.type) else float if "float" in str(f.type) else str
            group.add_argument(flag, type=kind, default=None, help=text)


def given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The flags among ``names`` that the user set, as configuration fields."""
    values = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}
