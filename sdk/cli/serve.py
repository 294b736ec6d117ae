"""``metaedge device serve``: the flags of ``device_serve.ServeOptions``, and the device it starts."""

from __future__ import annotations

import argparse

from metaedge.sdk.cli.options import add_config_flags, config_from
from metaedge.sdk.cli.parsing import add_command
from metaedge.sdk.device_serve import ServeOptions

EXAMPLES = """
examples:
  metaedge device serve --target onnx --state devices/dev1 --listen 127.0.0.1:7410 --trusted-key keys/metaedge.pub
  metaedge device serve --state devices/dev2 --listen 0.0.0.0:7410 --trusted-key keys/metaedge.pub --operator keys/operator.pub --open none
  metaedge device serve --target qiskit --backend noisy:FakeManilaV2 --state devices/q1 --trusted-key keys/metaedge.pub
  .venv-lava/bin/metaedge device serve --target loihi --state devices/l1 --trusted-key keys/metaedge.pub
"""


def register(actions) -> None:
    s = add_command(actions, "serve", help="start a device (a process with a flash image on disk)", examples=EXAMPLES)
    add_config_flags(s, ServeOptions)
    s.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from metaedge.sdk.device_serve import serve

    serve(config_from(args, ServeOptions))
    return 0
