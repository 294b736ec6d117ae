"""Task families, one package each (task and frames, model, training, export hooks, scoring, benchmark), and their
registry: the one place that maps a task name to the code that knows it.

Export, ``metaedge run``, ``metaedge inspect`` and run directories dispatch through ``get`` and ``of_run``;
nothing outside a family's package tests a task's name. A family is registered by name with the module that
defines it (imported on first use, so the command line starts fast), or as an object from anywhere
(``register``): a family outside ``sdk/`` plugs in the same way.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from metaedge.sdk.errors import UserError

if TYPE_CHECKING:
    from metaedge.sdk.targets.onnx import Receiver


class TaskFamily(Protocol):
    """What the rest of MetaEdge needs from a task family."""

    name: str  # the task's name in run directories and bundle manifests
    summary: str  # one line for help texts
    model_kinds: tuple[str, ...]  # the ``model.kind`` of this family's run directories
    train_command: str  # how a user makes a run of this family
    # optional: ``commands``, names of its modules declaring ``TRAIN`` and ``BENCH`` (``metaedge.sdk.options.Command``),
    # and ``module(name)``, which imports one of them

    def receiver(self, run_dir: Path, steps: int | None, ensemble: int | None) -> "Receiver":
        """What an ONNX bundle of this run carries (θ, adaptation, task section, self-test); ``UserError`` if the
        run cannot be deployed as an ONNX receiver."""

    def stream(self, client: Any, url: str, task: dict, frames: int, pilots: int, symbols: int, seed: int) -> dict:
        """Frames of new devices (meta-test split) for the running receiver's task through a device client, scored;
        the report of ``metaedge run``."""

    def report_text(self, report: dict) -> str:
        """``stream``'s report as a person reads it."""

    def describe(self, task: dict) -> str:
        """A bundle's task section in one line (``metaedge inspect``)."""


@dataclass(frozen=True)
class Family:
    """A ``TaskFamily`` whose hooks live in modules of its ``package``, imported when first used: ``device`` defines
    ``stream``, ``report_text`` and ``describe``; ``export`` defines ``receiver(run_dir, steps)`` (None: the family
    has no ONNX receiver, ``no_export`` says what to do instead); ``commands`` declare its ``TRAIN`` and ``BENCH``
    commands (``metaedge.sdk.options.Command``). Module names are relative to the package."""

    name: str
    summary: str
    model_kinds: tuple[str, ...]
    package: str
    device: str | None = "device"
    export: str | None = "export"
    commands: tuple[str, ...] = ("config",)
    no_export: str = ""
    uses: dict = field(default_factory=dict)  # model kind → what to do with such a run (export, evaluate), RUN its path
    ensemble: bool = False  # its receivers can carry a Gaussian posterior's weight draws (--ensemble)
    train_command: str = ""  # how a user makes a run of this family (default: metaedge train NAME)

    def __post_init__(self) -> None:
        if not self.train_command:
            object.__setattr__(self, "train_command", f"metaedge train {self.name}")

    def module(self, name: str):
        """One of the family's modules, by its name within the package."""
        return importlib.import_module(f"{self.package}.{name}")

    def receiver(self, run_dir: Path, steps: int | None, ensemble: int | None) -> "Receiver":
        if self.export is None:
            raise UserError(f"'{run_dir}' is a {self.name} run, which has no ONNX receiver: {self.no_export}")
        if ensemble is not None and not self.ensemble:
            raise UserError("--ensemble applies to runs with a Gaussian posterior (vbmaml) only")
        hook = self.module(self.export)
        return hook.receiver(run_dir, steps, ensemble) if self.ensemble else hook.receiver(run_dir, steps)

    def _device(self):
        if self.device is None:
            raise UserError(f"the {self.name} family has no device receiver: {self.no_export}")
        return self.module(self.device)

    def stream(self, client: Any, url: str, task: dict, frames: int, pilots: int, symbols: int, seed: int) -> dict:
        return self._device().stream(client, url, task, frames, pilots, symbols, seed)

    def report_text(self, report: dict) -> str:
        return self._device().report_text(report)

    def describe(self, task: dict) -> str:
        return self._device().describe(task)


_FAMILIES: dict[str, str | TaskFamily] = {
    "demod": "metaedge.sdk.families.demod",
    "link": "metaedge.sdk.families.link",
    "power": "metaedge.sdk.families.power",
    "prediction": "metaedge.sdk.families.prediction",
    "sinusoid": "metaedge.sdk.families.sinusoid",
}


def register(family: TaskFamily) -> None:
    """Add (or replace) a family, under its ``name``."""
    _FAMILIES[family.name] = family


def names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def get(name: str) -> TaskFamily:
    """The family of task ``name``; ``UserError`` naming the known ones."""
    entry = _FAMILIES.get(name)
    if entry is None:
        raise UserError(f"unknown task family '{name}'; known: {', '.join(_FAMILIES)}")
    if isinstance(entry, str):
        entry = _FAMILIES[name] = importlib.import_module(entry).FAMILY
    return entry


def commands(kind: str) -> list:
    """Every family's declared ``kind`` ("TRAIN" or "BENCH") commands, in registry order."""
    found = []
    for name in _FAMILIES:
        family = get(name)
        for module in getattr(family, "commands", ()):
            declared = getattr(family.module(module), kind, ())
            found += declared if isinstance(declared, tuple) else [declared]
    return found


def of_run(config: dict, path: Path) -> TaskFamily:
    """The family a run directory's configuration belongs to (by its ``model.kind``, else its ``task.name``)."""
    kind = config.get("model", {}).get("kind")
    for name in _FAMILIES:
        family = get(name)
        if kind in family.model_kinds:
            return family
    task = config.get("task", {}).get("name")
    if task in _FAMILIES:
        return get(task)
    raise UserError(f"'{path}' holds a run of an unknown kind (model '{kind}', task '{task}'); known families: {', '.join(_FAMILIES)}")
