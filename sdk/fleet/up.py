"""``metaedge fleet up``: provision a fleet of simulated devices and run their frame loop, reporting through the broker.

Every device is a full simulated device (``firmware_sim.Device``: its own flash with A/B slots, boot state machine,
trust, and receiver) with its own identity, impairments and channel; they share this process, each with its own
connection to the broker. Provisioning (first start) exports the run as release 1, signs it, and installs it on every
device as a factory would; afterwards every image arrives through the devices' management requests (``fleet rollout``).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from metaedge.deploy import signing
from metaedge.deploy.bundle import pack, read_bundle
from metaedge.firmware_sim.access import Policy
from metaedge.firmware_sim.device import Device, DeviceError
from metaedge.firmware_sim.fleet import Identity, Member, Reporting, Uplink
from metaedge.firmware_sim.profile import DEFAULT, PROFILES
from metaedge.sdk.errors import UserError
from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.scenario import Field, Fleet
from metaedge.sdk.fleet.store import FleetDir, FleetSpec
from metaedge.sdk.log import LOGGER
from metaedge.sdk.options import Progress, silent

STATUS_EVERY = 10  # frames between two status messages of a device


def demod_task(run: Path):
    """The (task, train) configuration of a demodulator run, or a UserError saying the fleet needs one."""
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.rundir import load_run

    loaded = load_run(run)
    try:
        return configs_from_run(loaded.config)
    except UserError:
        raise UserError(f"'{run}' is not a demodulator run: a fleet runs demodulators (train one with 'metaedge train demod')") from None


def export_release(fleet: FleetDir, counter: int, config: dict, theta: dict[str, np.ndarray]) -> Path:
    """Release ``counter``: the run directory of ``config`` and ``theta`` beside its bundle, signed with the fleet's
    release key; the bundle's directory."""
    from metaedge.deploy import tensors
    from metaedge.sdk.rundir import CONFIG, THETA, write_json
    from metaedge.sdk.targets import Release, export

    target = fleet.release(counter)
    if target.exists():
        raise UserError(f"release {counter} already exists in {fleet.releases}")
    (target / "run").mkdir(parents=True)
    write_json(target / "run" / CONFIG, config)
    tensors.save(target / "run" / THETA, theta)
    export("onnx", target / "run", target / "bundle", Release(security_counter=counter), key=signing.load_private(fleet.release_key()[0]))
    return target / "bundle"


def provision(
    fleet: FleetDir, run: Path, devices: int, field: Field, seed: int, reporting: float, opt_out: float, decided: bool = False
) -> FleetSpec:
    """Keys, identities, secrets, release 1 and fleet.json of a new fleet, written beside it and renamed into place:
    a provisioning that fails leaves no half-made fleet."""
    demod_task(run)
    if devices < 1:
        raise UserError(f"--devices {devices} must be at least 1")
    if fleet.path.exists() and any(fleet.path.iterdir()):
        raise UserError(f"'{fleet.path}' is not empty; give a new --dir for a new fleet")
    staging = FleetDir(fleet.path.with_name(f".{fleet.path.name}.provisioning"))
    shutil.rmtree(staging.path, ignore_errors=True)
    try:
        spec = _provision(staging, run, devices, field, seed, reporting, opt_out, decided)
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    if fleet.path.exists():
        fleet.path.rmdir()
    staging.path.rename(fleet.path)
    return spec


def _provision(fleet: FleetDir, run: Path, devices: int, field: Field, seed: int, reporting: float, opt_out: float, decided: bool) -> FleetSpec:
    import secrets as random

    from metaedge.sdk.rundir import load_run

    fleet.path.mkdir(parents=True)
    for name in ("release", "operator"):
        signing.generate(fleet.keys, name)
    names = [f"dev-{i:04d}" for i in range(devices)]
    credentials = broker.Credentials.new(names)
    keys = {name: random.token_bytes(32) for name in names}
    for name in names:
        (fleet.devices / name).mkdir(parents=True)
        Identity(name, keys[name], credentials.passwords[name]).save(fleet.devices / name / "identity.json")
    fleet.write_secrets({"passwords": credentials.passwords, "telemetry": {n: k.hex() for n, k in keys.items()}})
    loaded = load_run(run)
    export_release(fleet, 1, loaded.config, loaded.theta)
    rng = np.random.default_rng([seed, 5])
    opted_out = sorted(rng.choice(names, size=int(round(opt_out * devices)), replace=False).tolist())
    spec = FleetSpec(names, broker.free_port(), str(run), field, seed, reporting, opted_out, decided)
    fleet.write_spec(spec)
    return spec


def member(fleet: FleetDir, spec: FleetSpec, name: str, index: int) -> Member:
    """The device ``name`` as it boots: from its flash, trusting the release key, managed by the operator key."""
    state = fleet.devices / name
    device = Device(state, "onnx", PROFILES[DEFAULT], trusted_keys=[signing.load_public(fleet.release_key()[1])])
    policy = Policy.of([signing.load_public(fleet.operator_key()[1])])
    reporting = Reporting(enabled=name not in spec.opted_out, pilots_fraction=spec.reporting, decided=spec.decided)
    return Member(Identity.load(state / "identity.json"), device, reporting, policy, spec.field.check, seed=spec.seed * 100_003 + index)


def install_factory_image(device: Device, bundle: Path) -> None:
    """Install and confirm ``bundle`` on a device that runs nothing (first start), through its own operations."""
    import hashlib

    image = pack(read_bundle(bundle))
    digest = hashlib.sha256(image).hexdigest()
    device.upload(0, len(image), digest, image)
    device.test(digest)
    device.reset()
    device.confirm()


class Running:
    """The fleet's frame loop; ``stop()`` (or SIGTERM/SIGINT) ends it after the current frame."""

    def __init__(self, fleet: FleetDir, spec: FleetSpec) -> None:
        self.fleet, self.spec = fleet, spec
        self.task, _ = demod_task(Path(spec.run))
        self.stopped = threading.Event()

    def stop(self, *_) -> None:
        self.stopped.set()

    def run(self, frames: int, period: float, progress: Progress = silent) -> dict:
        """``frames`` frames per device (0: until stopped), one every ``period`` seconds at most."""
        spec = self.spec
        conf = broker.write_config(self.fleet.broker, broker.Credentials(self.fleet.secrets()["passwords"]), spec.port)
        members: list[Member] = []
        uplinks: list[Uplink] = []
        with broker.running(conf, spec.port):
            try:
                for i, name in enumerate(spec.devices):
                    if self.stopped.is_set():  # Ctrl-C while the devices boot
                        return {"devices": len(members), "frames": 0, "refused_frames": 0, "seconds": 0.0, "device_frames_per_s": 0.0}
                    members.append(member(self.fleet, spec, name, i))
                    if members[-1].device.bundle is None:
                        install_factory_image(members[-1].device, self.fleet.release(1) / "bundle")
                uplinks.extend(Uplink(m, broker.HOST, spec.port) for m in members)
                return self._loop(members, uplinks, frames, period, progress)
            finally:
                for uplink in uplinks:
                    uplink.close()
                for m in members:
                    m.device.close()

    def _loop(self, members: list[Member], uplinks: list[Uplink], frames: int, period: float, progress: Progress) -> dict:
        field = Fleet(self.task, self.spec.field, len(members), self.spec.seed)
        labels = field.pilot_labels.astype(np.int32)
        progress(0, total=frames or None, label="fleet frames")
        started, count, refused = time.monotonic(), 0, 0
        while not self.stopped.is_set() and (frames == 0 or count < frames):
            tick = time.monotonic()
            pilots, payload, _ = field.frames()
            for i, (m, uplink) in enumerate(zip(members, uplinks)):
                try:
                    uplink.publish(m.frame(pilots[i], labels, payload[i]))
                except DeviceError as e:  # one device's refusal (its receiver broke a limit, …) stops no other
                    refused += 1
                    LOGGER.warning(f"{m.identity.device}: frame refused: {e}")
                if count % STATUS_EVERY == 0:
                    uplink.publish_status()
            count += 1
            progress(1)
            self.stopped.wait(max(0.0, period - (time.monotonic() - tick)))
        elapsed = time.monotonic() - started
        rate = count * len(members) / elapsed
        return {"devices": len(members), "frames": count, "refused_frames": refused, "seconds": elapsed, "device_frames_per_s": rate}


def run(options, progress: Progress = silent) -> dict:
    """``metaedge fleet up``: provision the fleet directory if new (or ``--fresh``), then run its frame loop; one
    ``fleet up`` per directory at a time."""
    fleet = FleetDir(options.dir)
    with _only_one(fleet.path):
        if options.fresh and fleet.path.exists():
            if any(fleet.path.iterdir()) and not fleet.spec_file.is_file():
                raise UserError(f"--fresh: '{fleet.path}' is not a fleet directory (no fleet.json); it is left as it is")
            shutil.rmtree(fleet.path)
        if fleet.spec_file.is_file():
            spec = fleet.spec()
            if options.run is not None:
                LOGGER.warning(f"{fleet.path} holds a fleet already: --run and the other provisioning flags are ignored (--fresh provisions anew)")
        else:
            if options.run is None:
                raise UserError(f"'{fleet.path}' holds no fleet yet: pass --run RUN (a demodulator run) to provision one")
            field = Field(options.scenario, options.rho, options.pilots, options.payload, options.check)
            spec = provision(fleet, options.run, options.devices, field, options.seed, options.reporting, options.opt_out, options.decided)
        running = Running(fleet, spec)
        signal.signal(signal.SIGTERM, running.stop)
        signal.signal(signal.SIGINT, running.stop)
        LOGGER.info(f"fleet of {len(spec.devices)} devices on broker {broker.HOST}:{spec.port} ({fleet.path})")
        return {"dir": str(fleet.path), "port": spec.port, **running.run(options.frames, options.period, progress)}


@contextlib.contextmanager
def _only_one(path: Path) -> Iterator[None]:
    """An exclusive lock beside the fleet directory for as long as a ``fleet up`` runs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another 'metaedge fleet up' runs {path}; stop it first") from None
        yield


def text(report: dict) -> str:
    rate = report["device_frames_per_s"]
    return f"{report['devices']} devices ran {report['frames']} frames each in {report['seconds']:.1f} s ({rate:.0f} device frames/s)"
