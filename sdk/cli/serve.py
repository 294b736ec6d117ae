"""``metaedge device serve``: a simulated edge device as a process — its runtime, trust, operators and limits."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from metaedge.backends.registry import FRAME_LIMITS_S
from metaedge.firmware_sim.access import CLASSES, DEFAULT_OPEN
from metaedge.firmware_sim.connection import Limits
from metaedge.firmware_sim.contain import Containment
from metaedge.sdk.cli.parsing import add_command
from metaedge.sdk.errors import UserError

LIMITS = Limits()
CONTAINMENT = Containment()
EXAMPLES = """
examples:
  metaedge device serve --target onnx --state devices/dev1 --listen 127.0.0.1:7410 --trusted-key keys/metaedge.pub
  metaedge device serve --state devices/dev2 --listen 0.0.0.0:7410 --trusted-key keys/metaedge.pub --operator keys/operator.pub --open none
  metaedge device serve --target qiskit --backend noisy:FakeManilaV2 --state devices/q1 --trusted-key keys/metaedge.pub
  .venv-lava/bin/metaedge device serve --target loihi --state devices/l1 --trusted-key keys/metaedge.pub
"""


def register(actions) -> None:
    s = add_command(actions, "serve", help="start a device (a process with a flash image on disk)", examples=EXAMPLES)
    _add_runtime_flags(s)
    s.add_argument("--state", type=Path, required=True, help="directory holding the device's flash image")
    s.add_argument("--listen", default="127.0.0.1:7410", help="HOST:PORT (port 0: any free port; beyond loopback only with --operator), or 'stdio'")
    s.add_argument("--profile", default=None, help="device profile: edge-small (default) or edge-tiny")
    s.add_argument("--threads", type=int, default=None, help="runtime threads (default: the profile's, 1)")
    _add_trust_flags(s)
    _add_limit_flags(s)
    s.set_defaults(handler=run_serve)


def _add_runtime_flags(s) -> None:
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


def _add_trust_flags(s) -> None:
    public_keys = {"type": Path, "action": "append", "default": [], "metavar": "PUB"}
    s.add_argument("--trusted-key", **public_keys, help="Ed25519 public key whose signatures the device accepts (repeat for rotation)")
    s.add_argument("--allow-unsigned", action="store_true", help="development only: accept unsigned bundles")
    s.add_argument(
        "--operator",
        **public_keys,
        help="Ed25519 public key of an operator (repeatable): upload, test, reset and confirm then need a request "
        "signed by one (required to listen beyond loopback)",
    )
    s.add_argument(
        "--open",
        default=",".join(DEFAULT_OPEN),
        metavar="CLASSES",
        help=f"with --operator: which requests need no signature — a comma list of {', '.join(CLASSES)}, or 'none' "
        f"(default {','.join(DEFAULT_OPEN)})",
    )


def _add_limit_flags(s) -> None:
    seconds = {"type": float, "metavar": "SECONDS"}
    s.add_argument(
        "--frame-timeout",
        **seconds,
        default=None,
        help="a frame that runs longer is stopped with its receiver's process (default: the target's — "
        + ", ".join(f"{t} {s:g}" for t, s in FRAME_LIMITS_S.items())
        + ")",
    )
    s.add_argument(
        "--start-timeout",
        **seconds,
        default=CONTAINMENT.start_s,
        help=f"limit of loading an image and of its self-test; a trial over it reverts (default {CONTAINMENT.start_s:g})",
    )
    s.add_argument(
        "--memory-cap",
        type=int,
        default=CONTAINMENT.memory >> 20,
        metavar="MIB",
        help=f"memory the receiver may add to its runtime's; beyond it the frame fails and the receiver restarts "
        f"(default {CONTAINMENT.memory >> 20})",
    )
    s.add_argument(
        "--in-process",
        action="store_true",
        help="run the receiver inside the device process, without time or memory limits (profiling and development)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=LIMITS.max_connections,
        help=f"open connections at most; the one idle longest makes room for a new one (default {LIMITS.max_connections})",
    )
    s.add_argument(
        "--idle-timeout",
        **seconds,
        default=LIMITS.idle_timeout_s,
        help=f"close a connection quiet for this long between messages (default {LIMITS.idle_timeout_s:g})",
    )


def run_serve(args: argparse.Namespace) -> int:
    from metaedge.firmware_sim.device import Device
    from metaedge.firmware_sim.flash import lock_state
    from metaedge.firmware_sim.server import serve_stdio, serve_tcp

    _require_runtime(args.target)
    profile, options = _profile(args), _backend_options(args)
    if args.listen != "stdio":
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--listen '{args.listen}' is not HOST:PORT (e.g. 127.0.0.1:7410) or 'stdio'")
    keys = _trusted_keys(args)
    policy, limits, containment = _access_policy(args, host if args.listen != "stdio" else None), _limits(args), _containment(args)
    try:
        lock = lock_state(args.state)
        device = Device(
            args.state, args.target, profile, trusted_keys=keys, allow_unsigned=args.allow_unsigned, backend_options=options, containment=containment
        )
    except (ValueError, OSError) as e:
        raise UserError(f"--state {args.state}: {e}") from None
    with lock:
        if args.listen == "stdio":
            serve_stdio(device, policy)
        else:
            try:
                serve_tcp(device, host, int(port), limits, policy)
            except OSError as e:
                raise UserError(f"cannot listen on {args.listen}: {e.strerror or e}") from None
    return 0


def _require_runtime(target: str) -> None:
    """A device checks for its runtime when it starts, not at the first deploy."""
    from metaedge.backends import registry
    from metaedge.backends.base import BackendError

    try:
        registry.backend_class(target)
    except BackendError as e:
        raise UserError(f"--target {target}: {e}") from None


def _profile(args: argparse.Namespace):
    from metaedge.firmware_sim.profile import DEFAULT, PROFILES

    name = args.profile or DEFAULT
    if name not in PROFILES:
        raise UserError(f"--profile '{name}' is unknown; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads} must be at least 1")
        profile = dataclasses.replace(profile, threads=args.threads)
    return profile


def _backend_options(args: argparse.Namespace) -> dict:
    """The target's runtime options (qiskit: where circuits run; loihi: engine and arithmetic)."""
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
    return options


def _trusted_keys(args: argparse.Namespace) -> list:
    from metaedge.deploy.signing import SignatureError, load_public

    if not args.trusted_key and not args.allow_unsigned:
        raise UserError("give the device its trusted keys with --trusted-key PUB (repeatable), or --allow-unsigned for development")
    try:
        return [load_public(path) for path in args.trusted_key]
    except SignatureError as e:
        raise UserError(f"--trusted-key: {e}") from None


def _containment(args: argparse.Namespace) -> Containment | None:
    if args.in_process:
        return None
    for flag, value in (("--frame-timeout", args.frame_timeout), ("--start-timeout", args.start_timeout), ("--memory-cap", args.memory_cap)):
        if value is not None and not value > 0:
            raise UserError(f"{flag} {value} must be positive")
    return Containment(frame_s=args.frame_timeout, start_s=args.start_timeout, memory=args.memory_cap << 20)


def _limits(args: argparse.Namespace) -> Limits:
    if args.max_connections < 1:
        raise UserError(f"--max-connections {args.max_connections} must be at least 1")
    if not args.idle_timeout > 0:
        raise UserError(f"--idle-timeout {args.idle_timeout} must be a positive number of seconds")
    return dataclasses.replace(LIMITS, max_connections=args.max_connections, idle_timeout_s=args.idle_timeout)


def _access_policy(args: argparse.Namespace, host: str | None):
    """Operator keys and open classes from the flags; listening beyond loopback without operators is refused."""
    import ipaddress

    from metaedge.deploy.signing import SignatureError, load_public
    from metaedge.firmware_sim.access import Policy

    try:
        keys = [load_public(path) for path in args.operator]
    except SignatureError as e:
        raise UserError(f"--operator: {e}") from None
    if host is not None and not keys:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise UserError(f"--listen {host}: a device reachable beyond loopback must authenticate its operators; add --operator PUB")
    classes = tuple(c for c in args.open.split(",") if c and c != "none")
    try:
        return Policy.of(keys, classes)
    except ValueError as e:
        raise UserError(f"--open: {e}") from None
