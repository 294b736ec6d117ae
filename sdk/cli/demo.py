"""``metaedge demo``: the main job — meta-train every algorithm, evaluate, print the SER table."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("demo", help="meta-train, evaluate and print the SER table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
