"""``metaedge device serve``: a simulated edge device as a process — its runtime, trust, operators and limits,
declared once (``ServeOptions``, whose fields are the command's flags) and checked before the device starts.
Torch-free: a device runs in an environment with its backend's runtime alone (the Lava one included)."""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from metaedge.backends.registry import FRAME_LIMITS_S, targets
from metaedge.firmware_sim.access import CLASSES, DEFAULT_OPEN
from metaedge.firmware_sim.connection import Limits
from metaedge.firmware_sim.contain import Containment
from metaedge.firmware_sim.profile import DEFAULT, PROFILES
from metaedge.sdk.errors import UserError
from metaedge.sdk.options import option

LIMITS, CONTAINMENT = Limits(), Containment()


@dataclass(frozen=True)
class ServeOptions:
    state: Path = option(help="directory holding the device's flash image")
    target: str = option("onnx", "backend the device runs (loihi needs the Lava environment's interpreter)", choices=targets())
    listen: str = option("127.0.0.1:7410", "HOST:PORT (port 0: any free port; beyond loopback only with --operator), or 'stdio'")
    profile: str = option(DEFAULT, "device profile", choices=tuple(PROFILES))
    threads: int | None = option(None, "runtime threads (default: the profile's)")
    engine: str = option(
        "lava",
        "loihi target only: lava (Loihi 2 simulation), reference (the host simulator in numpy) or loihi2 (real Loihi 2; needs "
        "Intel's lava-loihi package)",
        choices=("lava", "reference", "loihi2"),
    )
    fixed_point: bool = option(
        False,
        "loihi and mcu targets: Lava's fixed_pt models (8-bit weights, integer learning engine), or the firmware's q15 forward "
        "(16-bit weights and inputs, adaptation in float), instead of floating point",
    )
    backend: str = option(
        "noisy:FakeManilaV2", "qiskit target only: where circuits run — ideal, noisy:<Fake device>, ibm:<backend> (needs a saved IBM Quantum account)"
    )
    seed: int = option(0, "qiskit target only: seed of the simulator's shot stream")
    trusted_key: tuple[Path, ...] = option(
        (), "Ed25519 public key whose signatures the device accepts (repeat for rotation)", repeat=True, metavar="PUB"
    )
    allow_unsigned: bool = option(False, "development only: accept unsigned bundles")
    operator: tuple[Path, ...] = option(
        (),
        "Ed25519 public key of an operator (repeatable): upload, test, reset and confirm then need a request signed by one "
        "(required to listen beyond loopback)",
        repeat=True,
        metavar="PUB",
    )
    open: str = option(
        ",".join(DEFAULT_OPEN),
        f"with --operator: which requests need no signature — a comma list of {', '.join(CLASSES)}, or 'none'",
        metavar="CLASSES",
    )
    frame_timeout: float | None = option(
        None,
        "a frame that runs longer is stopped with its receiver's process (default: the target's — "
        + ", ".join(f"{t} {s:g}" for t, s in FRAME_LIMITS_S.items())
        + ")",
        metavar="SECONDS",
    )
    start_timeout: float = option(CONTAINMENT.start_s, "limit of loading an image and of its self-test; a trial over it reverts", metavar="SECONDS")
    memory_cap: int = option(
        CONTAINMENT.memory >> 20, "MiB the receiver may add to its runtime's; beyond it the frame fails and the receiver restarts"
    )
    in_process: bool = option(False, "run the receiver inside the device process, without time or memory limits (profiling and development)")
    max_connections: int = option(LIMITS.max_connections, "open connections at most; the one idle longest makes room for a new one")
    idle_timeout: float = option(LIMITS.idle_timeout_s, "close a connection quiet for this long between messages", metavar="SECONDS")


def serve(options: ServeOptions) -> None:
    """Check every option, lock the state directory, start the device and serve until stopped."""
    from metaedge.firmware_sim.device import Device
    from metaedge.firmware_sim.flash import lock_state
    from metaedge.firmware_sim.server import serve_stdio, serve_tcp

    _require_runtime(options.target)
    host, port = _address(options.listen)
    profile, backend_options, keys = _profile(options), _backend_options(options), _trusted_keys(options)
    policy, limits, containment = _access_policy(options, host), _limits(options), _containment(options)
    try:
        lock = lock_state(options.state)
        device = Device(
            options.state,
            options.target,
            profile,
            trusted_keys=keys,
            allow_unsigned=options.allow_unsigned,
            backend_options=backend_options,
            containment=containment,
        )
    except (ValueError, OSError) as e:
        raise UserError(f"--state {options.state}: {e}") from None
    with lock:
        if host is None:
            serve_stdio(device, policy)
            return
        try:
            serve_tcp(device, host, port, limits, policy)
        except OSError as e:
            raise UserError(f"cannot listen on {options.listen}: {e.strerror or e}") from None


def _address(listen: str) -> tuple[str | None, int]:
    if listen == "stdio":
        return None, 0
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--listen '{listen}' is not HOST:PORT (e.g. 127.0.0.1:7410) or 'stdio'")
    return host, int(port)


def _require_runtime(target: str) -> None:
    """A device checks for its runtime when it starts, not at the first deploy."""
    from metaedge.backends import registry
    from metaedge.backends.base import BackendError

    try:
        registry.backend_class(target)
    except BackendError as e:
        raise UserError(f"--target {target}: {e}") from None


def _profile(options: ServeOptions):
    if options.threads is None:
        return PROFILES[options.profile]
    if options.threads < 1:
        raise UserError(f"--threads {options.threads} must be at least 1")
    return dataclasses.replace(PROFILES[options.profile], threads=options.threads)


def _backend_options(options: ServeOptions) -> dict:
    """The target's runtime options (qiskit: where circuits run; loihi: engine and arithmetic)."""
    if options.target == "qiskit":
        from metaedge.backends.base import BackendError
        from metaedge.backends.qiskit.targets import parse_target

        try:
            parse_target(options.backend)
        except BackendError as e:
            raise UserError(f"--backend: {e}") from None
        return {"backend": options.backend, "seed": options.seed}
    if options.target == "loihi":
        if options.engine != "reference" and importlib.util.find_spec("lava") is None:
            raise UserError(
                "Lava is not installed in this environment (it needs Python 3.10): start the device with "
                "the Lava environment, e.g. '.venv-lava/bin/metaedge device serve --target loihi …' "
                "(built by 'make env'), or use --engine reference"
            )
        if options.fixed_point and options.engine == "reference":
            raise UserError("--fixed-point runs on Lava's fixed_pt models; it needs --engine lava")
        return {"engine": options.engine, "fixed_point": options.fixed_point}
    if options.target == "mcu":
        return {"fixed_point": options.fixed_point}
    return {}


def _public_keys(paths: tuple[Path, ...], flag: str) -> list:
    from metaedge.deploy.signing import SignatureError, load_public

    try:
        return [load_public(path) for path in paths]
    except SignatureError as e:
        raise UserError(f"{flag}: {e}") from None


def _trusted_keys(options: ServeOptions) -> list:
    if not options.trusted_key and not options.allow_unsigned:
        raise UserError("give the device its trusted keys with --trusted-key PUB (repeatable), or --allow-unsigned for development")
    return _public_keys(options.trusted_key, "--trusted-key")


def _containment(options: ServeOptions) -> Containment | None:
    if options.in_process:
        return None
    for flag, value in (("--frame-timeout", options.frame_timeout), ("--start-timeout", options.start_timeout), ("--memory-cap", options.memory_cap)):
        if value is not None and not value > 0:
            raise UserError(f"{flag} {value} must be positive")
    return Containment(frame_s=options.frame_timeout, start_s=options.start_timeout, memory=options.memory_cap << 20)


def _limits(options: ServeOptions) -> Limits:
    if options.max_connections < 1:
        raise UserError(f"--max-connections {options.max_connections} must be at least 1")
    if not options.idle_timeout > 0:
        raise UserError(f"--idle-timeout {options.idle_timeout} must be a positive number of seconds")
    return dataclasses.replace(LIMITS, max_connections=options.max_connections, idle_timeout_s=options.idle_timeout)


def _access_policy(options: ServeOptions, host: str | None):
    """Operator keys and open classes; listening beyond loopback without operators is refused."""
    from metaedge.firmware_sim.access import Policy

    keys = _public_keys(options.operator, "--operator")
    if host is not None and not keys:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise UserError(f"--listen {host}: a device reachable beyond loopback must authenticate its operators; add --operator PUB")
    classes = tuple(c for c in options.open.split(",") if c and c != "none")
    try:
        return Policy.of(keys, classes)
    except ValueError as e:
        raise UserError(f"--open: {e}") from None
