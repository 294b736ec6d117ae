"""A simulated device as its own process on loopback, as the demo, the benchmarks and the tests start one: the
``metaedge device serve`` command line, and a context that starts it, deploys a bundle and stops it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator


def serve_command(target: str, state: Path, *options: str, python: str | None = None) -> list[str]:
    """``metaedge device serve`` for ``target`` with its flash in ``state``, on a free loopback port; ``options`` are
    further serve flags (``--trusted-key PEM``, ``--allow-unsigned``, ``--backend …``); ``python``: the interpreter."""
    return [
        python or sys.executable,
        "-m",
        "metaedge.sdk.cli.main",
        "device",
        "serve",
        "--target",
        target,
        "--state",
        str(state),
        "--listen",
        "127.0.0.1:0",
        *options,
    ]


@contextlib.contextmanager
def deployed(
    target: str, state: Path, bundle: Path, *options: str, python: str | None = None, operator_key: Path | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """A device process with ``bundle`` deployed and confirmed (signed by ``operator_key`` if the device has operators):
    yields (process, url); stopped on exit."""
    from metaedge.deploy.bundle import pack, read_bundle
    from metaedge.sdk.device_frames import deploy

    proc = subprocess.Popen(serve_command(target, state, *options, python=python), stdout=subprocess.PIPE, text=True)
    try:
        url = "tcp://" + proc.stdout.readline().split()[-1]
        deploy(url, pack(read_bundle(bundle)), confirm=True, operator_key=operator_key)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(30)
