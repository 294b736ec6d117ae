"""Entry point of the ``metaedge`` command. Each subcommand lives in its own module."""

from __future__ import annotations

import logging
import os
import sys

import metaedge
from metaedge.sdk.cli.parsing import Parser, add_command
from metaedge.sdk.errors import UserError
from metaedge.sdk.log import configure

EXAMPLES = """
examples:
  metaedge demo                                   meta-train every algorithm briefly, evaluate, print the SER table
  metaedge train demod --algo maml --out runs/maml
  metaedge train demod --out runs/maml --resume --iterations 20000
  metaedge eval runs/maml runs/joint --pilots 1,2,4,8 --json
  metaedge algorithms                             the meta-learning algorithms, their equations and export support
  metaedge export runs/maml --out bundles/maml && metaedge inspect bundles/maml
  metaedge bench meta-train --json
  metaedge demo --target qiskit                   Born-machine BNN meta-learned and run on a noisy IBM device model
  metaedge train link --out runs/link             learned encoder/decoder; the decoder adapts on the device
  metaedge report --out report                    every task family's figures and one HTML page
"""


def build_parser() -> Parser:
    from metaedge.sdk.cli import bench, device, train
    from metaedge.sdk.cli.options import add_declared
    from metaedge.sdk.conformance.commands import CONFORMANCE
    from metaedge.sdk.device_commands import DEPLOY, RUN
    from metaedge.sdk.families.demod.config import DEMO, EVAL
    from metaedge.sdk.families.demod.recipes import ALGORITHM_LIST
    from metaedge.sdk.fleet.config import EXAMPLES as FLEET_EXAMPLES
    from metaedge.sdk.fleet.config import FLEET
    from metaedge.sdk.report import REPORT
    from metaedge.sdk.specs import SPEC
    from metaedge.sdk.targets.commands import EXPORT, INSPECT, KEYS, SIGN

    parser = Parser(
        prog="metaedge",
        description="Meta-learned receivers from host to edge hardware.",
        epilog=EXAMPLES,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"metaedge {metaedge.__version__}")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true", help="also debug messages (the options each command runs with)")
    talk.add_argument("-q", "--quiet", dest="silent", action="store_true", help="warnings and errors only (as a command's own --quiet)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    train.register(sub)
    for command in (EVAL, ALGORITHM_LIST, EXPORT, INSPECT, SIGN):
        add_declared(sub, command, add_command)
    group(sub, "keys", "signing keys", (KEYS,), "examples:\n  metaedge keys generate --out keys --name release-2027")
    device.register(sub)
    for command in (DEPLOY, RUN):
        add_declared(sub, command, add_command)
    bench.register(sub)
    group(sub, "fleet", "a fleet of devices: telemetry through MQTT, online meta-learning, canary rollouts", FLEET, FLEET_EXAMPLES)
    group(sub, "conformance", "the bundle and protocol conformance suite: generate it, run it against a device", CONFORMANCE)
    add_declared(sub, SPEC, add_command)
    for command in (DEMO, REPORT):
        add_declared(sub, command, add_command)
    return parser


def group(sub, name: str, help: str, commands: tuple, examples: str | None = None) -> None:
    """A command whose actions are declared commands (``metaedge keys generate``, ``metaedge conformance run``)."""
    from metaedge.sdk.cli.options import add_declared

    p = add_command(sub, name, help=help, examples=examples or commands[0].examples)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(p))
    for command in commands:
        add_declared(actions, command, add_command)


# the extra (pyproject.toml) that provides each optional package a command may need
EXTRAS = {
    "torch": "train",
    "onnx": "train",
    "onnxscript": "train",
    "scipy": "train",
    "matplotlib": "train",
    "tqdm": "onnx",
    "onnxruntime": "onnx",
    "qiskit": "quantum",
    "qiskit_aer": "quantum",
    "qiskit_ibm_runtime": "quantum",
    "lava": "loihi",
    "paho": "fleet",
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = sys.argv[1:] if argv is None else list(argv)
        talk = {name: getattr(args, name, False) for name in ("verbose", "silent", "quiet")}
        configure(logging.DEBUG if talk["verbose"] else logging.WARNING if talk["silent"] or talk["quiet"] else logging.INFO)
        return int(args.handler(args) or 0)
    except UserError as e:
        print(f"metaedge: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"metaedge: error: this command needs the Python package '{e.name}', which is not installed; pip install 'metaedge[{extra}]' provides it",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # the reader of our output left (| head): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a path that cannot be read or written: the path and the reason, in one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"metaedge: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaedge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
