"""Exporters, one per device target, each ``export(run, out, release, key=None, **options) -> Bundle``.

``export`` here is the one entry point: it checks the release and the target's options
before any work is done, then hands the run directory to the target's module. A new
target is a module with that function and a line in ``TARGETS`` (and a device backend in
``metaedge.backends``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from metaedge.deploy.bundle import Bundle
from metaedge.deploy.manifest import BundleError, parse_expiry
from metaedge.sdk.errors import UserError


@dataclass(frozen=True)
class Release:
    """What a release adds to a bundle: the rollback counter and, optionally, when devices stop installing it."""

    security_counter: int = 1
    expires: str | None = None  # UTC, 2027-01-31T00:00:00Z
    release: int = 0  # orders releases of one security counter

    def __post_init__(self) -> None:
        if type(self.security_counter) is not int or not 0 <= self.security_counter < 2**32:
            raise UserError(f"--security-counter {self.security_counter} must lie in [0, 2^32)")
        if type(self.release) is not int or not 0 <= self.release < 2**32:
            raise UserError(f"--release {self.release} must lie in [0, 2^32)")
        try:
            parse_expiry(self.expires)
        except BundleError as e:
            raise UserError(f"--expires: {e}") from None

    def fields(self) -> dict:
        """The manifest members of this release."""
        return {
            "security_counter": self.security_counter,
            **({"release": self.release} if self.release else {}),
            **({"expires": self.expires} if self.expires else {}),
        }


@dataclass(frozen=True)
class Target:
    module: str
    runs: str  # which runs it exports, for help texts
    options: tuple[str, ...] = ()  # the target options its ``export`` takes
    refusals: tuple[tuple[str, str], ...] = ()  # (option, why it does not apply) where a generic line would not help


TARGETS: dict[str, Target] = {
    "onnx": Target("metaedge.sdk.targets.onnx", "MLP runs, learned links and power allocators", ("inner_steps", "ensemble")),
    "qiskit": Target("metaedge.sdk.targets.qiskit", "Born-machine runs of 'metaedge train born'", ("inner_steps", "shots")),
    "loihi": Target(
        "metaedge.sdk.targets.loihi",
        "spiking runs of 'metaedge train snn'",
        refusals=(
            ("inner_steps", "the rule adapts while the pilots are presented (set the presentation length with 'metaedge train snn --timesteps')"),
        ),
    ),
    "linear": Target(
        "metaedge.sdk.targets.linear",
        "channel predictors of 'metaedge train prediction'",
        refusals=(("inner_steps", "each frame's predictor is solved exactly"),),
    ),
    "mcu": Target("metaedge.sdk.targets.mcu", "MLP classifiers adapted by SGD steps (MAML, Meta-SGD, CAVIA, …)", ("inner_steps",)),
}
OPTIONS = ("inner_steps", "shots", "ensemble")  # every target option; their help: commands.ExportOptions


def flag(option: str) -> str:
    """The command-line flag of an export option."""
    return "--" + option.replace("_", "-")


def check_options(target: str, options: dict) -> dict:
    """The options given (not None), or a UserError naming the first one ``target`` does not take."""
    if target not in TARGETS:
        raise UserError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    spec, given = TARGETS[target], {k: v for k, v in options.items() if v is not None}
    reasons = dict(spec.refusals)
    for name in given:
        if name not in OPTIONS:
            raise UserError(f"unknown export option '{name}'; the options are {', '.join(OPTIONS)}")
        if name not in spec.options:
            takers = [t for t, s in TARGETS.items() if name in s.options]
            why = reasons.get(name, f"it applies to the {' and '.join(takers)} target{'s' if len(takers) > 1 else ''} only")
            raise UserError(f"{flag(name)} does not apply to the {target} target: {why}")
    return given


def export(target: str, run: str | Path, out: str | Path, release: Release = Release(), key=None, **options) -> Bundle:
    """Write the bundle of the run directory ``run`` for ``target`` to ``out``; ``key`` (Ed25519) signs it."""
    given = check_options(target, options)
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise UserError(f"'{out}' already exists and is not an empty directory; choose another --out or remove it")
    module = importlib.import_module(TARGETS[target].module)
    try:
        return module.export(Path(run), Path(out), release, key, **given)
    except BundleError as e:
        raise UserError(str(e)) from None
