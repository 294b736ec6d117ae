"""The command-line reference as Markdown, from the parsers themselves (the docs site builds it; it cannot drift)."""

from __future__ import annotations

import argparse


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [(name, sub) for action in actions for name, sub in action.choices.items()]


def _sections(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> list[str]:
    subcommands = _subcommands(parser)
    heading = "#" * min(len(words) + 1, 4)
    out = [f"{heading} `{' '.join(words)}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in subcommands:
        out += _sections(sub, (*words, name))
    return out


def markdown(parser: argparse.ArgumentParser) -> str:
    """Every command's ``--help``, in the order the parser lists them, one heading per command."""
    intro = [
        "# Command-line reference",
        "",
        "Every command's `--help`, generated from the parsers when the site is built. Conventions: [cli.md](cli.md); "
        "commands by task: [commands.md](commands.md).",
        "",
    ]
    return "\n".join(intro + _sections(parser, (parser.prog,)))
