"""Entry point of the ``metaedge`` command. Each subcommand lives in its own module."""

from __future__ import annotations

import os
import sys

from metaedge.sdk.cli.parsing import Parser
from metaedge.sdk.errors import UserError

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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metaedge")
    except PackageNotFoundError:
        return "(not installed: run from a source tree)"


def build_parser() -> Parser:
    from metaedge.sdk.cli import algorithms, bench, bundle, conformance, deploy, device, report, train
    from metaedge.sdk.cli.options import add_declared
    from metaedge.sdk.cli.parsing import add_command
    from metaedge.sdk.families.demod.config import DEMO, EVAL

    parser = Parser(
        prog="metaedge",
        description="Meta-learned receivers from host to edge hardware.",
        epilog=EXAMPLES,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"metaedge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    train.register(sub)
    add_declared(sub, EVAL, add_command)
    for module in (algorithms, bundle, device, deploy, bench, conformance):
        module.register(sub)
    add_declared(sub, DEMO, add_command)
    report.register(sub)
    return parser


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
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = sys.argv[1:] if argv is None else list(argv)
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
    except OSError as e:  # a path that cannot be read or written: the path and the reason, in one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"metaedge: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaedge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
