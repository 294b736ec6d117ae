"""``metaedge device``: run a simulated edge device, and manage one over its protocol."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command
from metaedge.sdk.device_frames import call, connect
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge device serve --target onnx --state devices/dev1 --listen 127.0.0.1:7410 --trusted-key keys/metaedge.pub
  metaedge device serve --target qiskit --backend noisy:FakeManilaV2 --state devices/q1 --trusted-key keys/metaedge.pub
  .venv-lava/bin/metaedge device serve --target loihi --state devices/l1 --trusted-key keys/metaedge.pub
  metaedge device list --device tcp://127.0.0.1:7410
  metaedge device confirm --device tcp://127.0.0.1:7410
  metaedge device stats --device tcp://127.0.0.1:7410 --json
"""


def register(sub) -> None:
    p = add_command(sub, "device", help="run or manage a simulated edge device", examples=EXAMPLES)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(p))
    s = add_command(actions, "serve", help="start a device (a process with a flash image on disk)", examples=EXAMPLES)
    s.add_argument(
        "--target",
        default="onnx",
        choices=("onnx", "qiskit", "loihi", "linear"),
        help="backend the device runs (default onnx; loihi needs the Lava environment's interpreter)",
    )
    s.add_argument(
        "--engine",
        default="lava",
        choices=("lava", "reference", "loihi2"),
        help="loihi target only: lava (Loihi 2 simulation, default), reference (the host simulator in numpy) "
        "or loihi2 (real Loihi 2; needs Intel's lava-loihi package)",
    )
    s.add_argument(
        "--fixed-point",
        action="store_true",
        help="loihi target only: Lava's fixed_pt models (8-bit weights, integer learning engine) instead of floating point",
    )
    s.add_argument(
        "--backend",
        default="noisy:FakeManilaV2",
        help="qiskit target only: where circuits run — ideal, noisy:<Fake device> (default noisy:FakeManilaV2), "
        "ibm:<backend> (needs a saved IBM Quantum account)",
    )
    s.add_argument("--seed", type=int, default=0, help="qiskit target only: seed of the simulator's shot stream")
    s.add_argument("--state", type=Path, required=True, help="directory holding the device's flash image")
    s.add_argument("--listen", default="127.0.0.1:7410", help="HOST:PORT on loopback (port 0: any free port), or 'stdio'")
    s.add_argument("--profile", default=None, help="device profile: edge-small (default) or edge-tiny")
    s.add_argument("--threads", type=int, default=None, help="runtime threads (default: the profile's, 1)")
    s.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        default=[],
        metavar="PUB",
        help="Ed25519 public key whose signatures the device accepts (repeat for rotation)",
    )
    s.add_argument("--allow-unsigned", action="store_true", help="development only: accept unsigned bundles")
    s.set_defaults(handler=run_serve)
    for name, help_text in (
        ("info", "target, profile and running image"),
        ("list", "the two image slots"),
        ("reset", "reboot: trial-boot a tested image, or revert an unconfirmed one"),
        ("confirm", "make the image on trial permanent"),
        ("stats", "frames served, latency, boot events"),
    ):
        a = add_command(actions, name, help=help_text)
        a.add_argument("--device", required=True, help="tcp://HOST:PORT")
        a.add_argument("--json", action="store_true")
        a.set_defaults(handler=run_management, op={"list": "image.list", "confirm": "image.confirm"}.get(name, name))


def run_serve(args: argparse.Namespace) -> int:
    from metaedge.firmware_sim.device import Device
    from metaedge.firmware_sim.profile import DEFAULT, PROFILES
    from metaedge.firmware_sim.server import serve_stdio, serve_tcp

    name = args.profile or DEFAULT
    if name not in PROFILES:
        raise UserError(f"--profile '{name}' is unknown; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads} must be at least 1")
        profile = type(profile)(**{**profile.to_dict(), "threads": args.threads})
    options = {}
    if args.target == "qiskit":
        from metaedge.backends.base import BackendError
        from metaedge.backends.qiskit.targets import parse_target

        try:
            parse_target(args.backend)
        except BackendError as e:
            raise UserError(f"--backend: {e}") from None
        options = {"backend": args.backend, "seed": args.seed}
    if args.target == "loihi":
        import importlib.util

        if args.engine != "reference" and importlib.util.find_spec("lava") is None:
            raise UserError(
                "Lava is not installed in this environment (it needs Python 3.10): start the device with "
                "the Lava environment, e.g. '.venv-lava/bin/metaedge device serve --target loihi …' "
                "(built by 'make env'), or use --engine reference"
            )
        if args.fixed_point and args.engine == "reference":
            raise UserError("--fixed-point runs on Lava's fixed_pt models; it needs --engine lava")
        options = {"engine": args.engine, "fixed_point": args.fixed_point}
    if args.listen != "stdio":
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--listen '{args.listen}' is not HOST:PORT (e.g. 127.0.0.1:7410) or 'stdio'")
    from metaedge.deploy.signing import SignatureError, load_public

    if not args.trusted_key and not args.allow_unsigned:
        raise UserError("give the device its trusted keys with --trusted-key PUB (repeatable), or --allow-unsigned for development")
    try:
        keys = [load_public(path) for path in args.trusted_key]
    except SignatureError as e:
        raise UserError(f"--trusted-key: {e}") from None
    try:
        device = Device(args.state, args.target, profile, trusted_keys=keys, allow_unsigned=args.allow_unsigned, backend_options=options)
    except ValueError as e:
        raise UserError(f"--state {args.state}: {e}") from None
    if args.listen == "stdio":
        serve_stdio(device)
    else:
        try:
            serve_tcp(device, host, int(port))
        except OSError as e:
            raise UserError(f"cannot listen on {args.listen}: {e.strerror or e}") from None
    return 0


def run_management(args: argparse.Namespace) -> int:
    with connect(args.device) as client:
        header, _ = call(client, args.op)
    header = {k: v for k, v in header.items() if k not in ("seq", "ok", "blobs")}
    if args.json:
        print(json.dumps(header, indent=2))
    elif args.op == "image.list":
        for image in header["images"]:
            flags = [f for f in ("active", "confirmed", "pending", "trial") if image[f]]
            desc = (
                f"{image.get('algorithm', '?')}, counter {image.get('security_counter', '?')}, {image['size']:,} B, "
                f"sha256 {image['sha256'][:16]}…" + (f", expires {image['expires']}" if image.get("expires") else "")
                if image["valid"]
                else "empty"
            )
            print(f"slot {image['slot']}: {desc}  [{' '.join(flags)}]")
    else:
        print("\n".join(f"{k}: {v}" for k, v in header.items()))
    return 0
