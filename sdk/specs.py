"""``metaedge spec``: the specifications that ship with the package — what a third party needs to write a runtime
(the bundle format, the device protocol, the conformance suite), readable where only the package is installed."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import ClassVar

from metaedge.sdk.options import Progress, command, option, silent

SPECS = {"bundle": "bundle-format.md", "protocol": "device-protocol.md", "conformance": "conformance.md"}


@dataclass(frozen=True)
class SpecOptions:
    """print a specification that ships with the package

    The bundle format (what a device must accept, run and refuse), the device protocol (how anything talks to a
    device) and the conformance suite (how to check a runtime against both), as Markdown."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge spec bundle | less
  metaedge spec protocol > device-protocol.md
  metaedge spec conformance
"""

    name: str = option(help="which specification", positional=True, choices=tuple(SPECS), metavar="{" + ",".join(SPECS) + "}")


def run(options: SpecOptions, progress: Progress = silent) -> dict:
    text = (resources.files("metaedge") / "specs" / SPECS[options.name]).read_text(encoding="utf-8")
    return {"spec": options.name, "file": SPECS[options.name], "text": text}


def text(report: dict) -> str:
    return report["text"].rstrip("\n")


SPEC = command("spec", SpecOptions, "metaedge.sdk.specs")
