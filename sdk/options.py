"""Options: configuration fields that carry their command-line flag's help, so that the Python API, the recipes and
the command line share one default per setting; the parsers of flag values; and the declaration of a command that
the library runs and the command line only presents (``Command``).

Torch-free: the command line builds every flag from these declarations without loading a model."""

from __future__ import annotations

import argparse
import inspect
import os
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    flag: bool | str = True,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    factory: Callable[[], Any] | None = None,
    positional: bool = False,
    repeat: bool = False,
    const: Any = None,
) -> Any:
    """A configuration field with the help text of its flag. ``flag``: True names the flag after the field
    (``--inner-lr`` for ``inner_lr``), a string names it otherwise, False keeps the field off the command line;
    ``parse`` reads the flag's text where the field's type does not say how; ``positional``: an argument, not a
    flag; ``repeat``: a flag given once per value (a tuple of them); ``const``: the value of the flag given bare."""
    metadata = {
        "help": help,
        "flag": False if positional else flag,
        "positional": positional,
        "parse": parse,
        "choices": choices,
        "metavar": metavar,
        "repeat": repeat,
        "const": const,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def nested(factory: Callable[[], Any]) -> Any:
    """A field holding another configuration whose option fields are flags of the same command."""
    return field(default_factory=factory, metadata={"nested": True})


class Progress(Protocol):
    """How long work reports itself: ``progress(total=N)`` once it knows its size, then ``progress(k)`` as k more
    units finish; ``label`` says what runs now."""

    def __call__(self, advance: int = 1, *, total: int | None = None, label: str | None = None) -> None: ...


def silent(advance: int = 1, *, total: int | None = None, label: str | None = None) -> None:
    """A ``Progress`` that shows nothing (the Python API's default)."""


@dataclass(frozen=True)
class Command:
    """A command the library implements and the command line generates: ``options`` is a dataclass whose option
    fields are its flags; ``module`` ("package.module", or "package.module:name") defines ``run(options, progress)
    -> report`` (a JSON-able dict; members starting with "_" are for the text alone) and ``text(report) -> str``, and
    may define ``exit_code(report) -> int`` (0 when absent) — with ":name", ``name``, ``name_text`` and
    ``name_exit_code``."""

    name: str
    help: str
    description: str
    examples: str
    options: type
    module: str
    skip: tuple[str, ...] = ()  # option fields (dotted paths) that are not flags of this command
    defaults: dict = field(default_factory=dict)  # this command's own default of a field, by dotted path
    fixed: dict = field(default_factory=dict)  # values of fields that are not flags, set by this command


def command(name: str, options: type, module: str, help: str | None = None, **kw: Any) -> Command:
    """The command ``name`` of an options class whose docstring's first paragraph is the command's one-line help
    (unless ``help`` says otherwise), the rest its description, and whose ``EXAMPLES`` are its examples."""
    first, _, description = inspect.cleandoc(options.__doc__ or "").partition("\n\n")
    return Command(name, help or " ".join(first.split()), " ".join(description.split()), options.EXAMPLES, options, module, **kw)


# -- parsers of flag values: each refuses bad text with one line saying what to give instead


def int_list(text: str, minimum: int = 1) -> tuple[int, ...]:
    """'1,2,4' → (1, 2, 4); integers of at least ``minimum`` (positive by default)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers, e.g. 1,2,4,8") from None
    if not values or any(v < minimum for v in values):
        kind = "positive integers" if minimum == 1 else f"integers of at least {minimum}"
        raise argparse.ArgumentTypeError(f"'{text}' must list {kind}, e.g. {minimum},2,4,8")
    return values


def count_list(text: str) -> tuple[int, ...]:
    """'0,1,10' → (0, 1, 10): counts that may be zero (e.g. adaptation steps)."""
    return int_list(text, minimum=0)


def str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def integer(text: str, minimum: int) -> int:
    """An integer of at least ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}" if minimum else f"{value} must be 0 or more")
    return value


def positive_int(text: str) -> int:
    return integer(text, 1)


def count(text: str) -> int:
    """An integer of at least 0."""
    return integer(text, 0)


def pilot_range(text: str) -> tuple[int, int]:
    """'4' → (0, 4): always 4 pilots; '1-32' → (1, 32): a log-uniform count per meta-batch."""
    low, _, high = text.partition("-")
    try:
        values = (int(low), int(high)) if high else (0, int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a pilot count (e.g. 4) nor a range (e.g. 1-32)") from None
    if values[1] < 1 or (high and not 1 <= values[0] <= values[1]):
        raise argparse.ArgumentTypeError(f"'{text}' needs counts of at least 1 and LOW ≤ HIGH, e.g. 4 or 1-32")
    return values


def _number(text: str, ok: Callable[[float], bool], what: str) -> float:
    """``text`` as a number that ``ok`` accepts, or the line that says what to give (``what``: "a margin; give …")."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
    return value


def margin(text: str) -> float:
    """A selection margin: a number in [0, 1)."""
    return _number(text, lambda v: 0 <= v < 1, "a margin; give a number in [0, 1), e.g. 0.05")


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    return _number(text, lambda v: 0 <= v <= 1, "a fraction; give a number in [0, 1], e.g. 0.1")


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more."""
    return _number(text, lambda v: v >= 0, "a duration; give seconds, 0 or more, e.g. 0.5")


def positive(text: str) -> float:
    """A number above 0 (a step size)."""
    return _number(text, lambda v: 0 < v < float("inf"), "a positive number, e.g. 0.001")


def _writable(text: str, directory: bool) -> Path:
    path = Path(text)
    if path.exists() and path.is_dir() != directory:
        raise argparse.ArgumentTypeError(
            f"'{text}' is {'a file' if directory else 'a directory'}; give {'a directory' if directory else 'a file'} path"
        )
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' cannot be created: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise argparse.ArgumentTypeError(f"'{text}' cannot be created: no permission to write in {ancestor}")
    return path


def output_dir(text: str) -> Path:
    """A directory the command will write: refused when the arguments are read, not after the work."""
    return _writable(text, directory=True)


def output_file(text: str) -> Path:
    """A file (a plot, a report) the command will write: refused when the arguments are read, not after the work."""
    return _writable(text, directory=False)


def chosen(given: tuple[str, ...] | None, allowed: tuple[str, ...], flag: str = "--algos", what: str = "algorithm") -> tuple[str, ...]:
    """The user's choice from ``allowed`` (all of them when not given), or a UserError naming the first unknown one."""
    from metaedge.sdk.errors import UserError

    picked = tuple(given or allowed)
    unknown = [m for m in picked if m not in allowed]
    if unknown:
        raise UserError(f"{flag}: unknown {what} '{unknown[0]}'; choose from {', '.join(allowed)}")
    return picked


# -- the options and report lines several commands share


def quick_option() -> Any:
    return option(False, "tiny budget, for tests of the machinery")


@dataclass(frozen=True)
class ManyRuns:
    """The options of a benchmark that trains many runs: how many processes train them, or a tiny budget."""

    jobs: int = option(1, "train the runs in N parallel processes", parse=positive_int)
    quick: bool = quick_option()


def plot_option(path: str, what: str) -> Any:
    return option(Path(path), f"{what} as PNG", parse=output_file)


def out_option(what: str = "run directory to create") -> Any:
    return option(help=what, parse=output_dir)


def seed_option(what: str = "the simulated devices and channels") -> Any:
    return option(0, f"seed of {what}")


def per_iteration(progress: Progress, name: str, metric: str) -> Callable[[int, dict], None]:
    """The ``(iteration, last validation)`` callback of a training loop, shown on ``progress`` with ``metric``."""
    done = [0]

    def report(iteration: int, last: dict) -> None:
        progress(iteration - done[0], label=f"{name} {metric} {last[metric]:.4f}" if last else name)
        done[0] = iteration

    return report


def trained_line(state: dict, label: str, best: str) -> str:
    """A finished training run in one line: ``label`` and the state's ``best_<best>``, its iteration, time, where."""
    return f"{state['name']}: {label} {state['best_' + best]:.4f} at iteration {state['best_iteration']} ({state['seconds']:.0f} s) → {state['run']}"
