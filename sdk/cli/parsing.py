"""Argument parsing that answers bad input with one line, never a usage dump or traceback."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.task import PILOT_SEQUENCES

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
    import os

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


def add_benchmark(p, plot: str, what: str) -> None:
    """A benchmark's --plot (``what`` as a PNG, default ``plot``), --quick, --seed, --json and --quiet."""
    p.add_argument("--plot", type=output_file, default=Path(plot), help=f"{what} as PNG (default {plot})")
    p.add_argument("--quick", action="store_true", help="tiny budget, for tests of the machinery")
    add_seed(p)
    add_reporting(p)


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


def int_list(text: str, minimum: int = 1) -> list[int]:
    """'1,2,4' → [1, 2, 4]; integers of at least ``minimum`` (positive by default)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers, e.g. 1,2,4,8") from None
    if not values or any(v < minimum for v in values):
        kind = "positive integers" if minimum == 1 else f"integers of at least {minimum}"
        raise argparse.ArgumentTypeError(f"'{text}' must list {kind}, e.g. {minimum},2,4,8")
    return values


def count_list(text: str) -> list[int]:
    """'0,1,10' → [0, 1, 10]: counts that may be zero (e.g. adaptation steps)."""
    return int_list(text, minimum=0)


def str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


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


def margin(text: str) -> float:
    """A selection margin: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a margin; give a number in [0, 1), e.g. 0.05")
    return value


def add_task_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the demodulation task family (defaults: the published setup of Park et al., IEEE TSP 2021)."""
    g = p.add_argument_group("task (monograph §5.2; defaults: published setup)")
    g.add_argument("--order", type=int, default=16, help="square QAM order: 4, 16, 64, 256 (default 16)")
    g.add_argument("--snr-db", type=float, default=20.0, help="Es/N0 in dB (default 20)")
    g.add_argument("--eps-max", type=float, default=0.15, help="amplitude imbalance ε = eps_max·Beta(a,b) (default 0.15)")
    g.add_argument("--delta-max-deg", type=float, default=15.0, help="phase imbalance δ = delta_max·Beta(a,b), degrees (default 15)")
    g.add_argument("--beta", type=float, nargs=2, default=(5.0, 2.0), metavar=("A", "B"), help="Beta shape parameters (default 5 2)")
    g.add_argument("--channel", choices=("rayleigh", "rician"), default="rayleigh", help="flat channel per device (default rayleigh)")
    g.add_argument("--k-factor-db", type=float, default=10.0, help="rician: line-of-sight to scattered power K, dB (default 10)")
    g.add_argument(
        "--pilots",
        type=pilot_range,
        default=(0, 4),
        metavar="N|LOW-HIGH",
        help="training pilots per task N_tr: a count, or a range drawn log-uniformly per meta-batch (default 4)",
    )
    g.add_argument("--val-pilots", type=int, default=160, help="validation pilots per meta-training task N_va (default 160)")
    g.add_argument(
        "--pilot-sequence",
        choices=PILOT_SEQUENCES,
        default="fixed",
        help="pilot symbols: a known fixed sequence covering the constellation, or random (default fixed)",
    )
    g.add_argument("--frame", type=int, default=20_000, help="symbols a frame holds (default 20000)")


def task_config(args: argparse.Namespace):
    from metaedge.sdk.families.demod.task import DemodConfig

    return DemodConfig(
        order=args.order,
        snr_db=args.snr_db,
        eps_max=args.eps_max,
        delta_max_deg=args.delta_max_deg,
        beta_a=args.beta[0],
        beta_b=args.beta[1],
        channel=args.channel,
        k_factor_db=args.k_factor_db,
        pilots=args.pilots[1],
        val_pilots=args.val_pilots,
        pilot_sequence=args.pilot_sequence,
        frame=args.frame,
    )


def chosen(given: list[str] | None, allowed: tuple[str, ...], flag: str = "--algos", what: str = "algorithm") -> tuple[str, ...]:
    """The user's choice from ``allowed`` (all of them when not given), or a UserError naming the first unknown one."""
    from metaedge.sdk.errors import UserError

    picked = tuple(given or allowed)
    unknown = [m for m in picked if m not in allowed]
    if unknown:
        raise UserError(f"{flag}: unknown {what} '{unknown[0]}'; choose from {', '.join(allowed)}")
    return picked
