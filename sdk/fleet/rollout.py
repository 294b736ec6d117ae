"""``metaedge fleet rollout``: a release goes to a canary fraction first, on trial; the fleet's own telemetry decides
whether it is confirmed and rolled out to every device, or reverted.

The test (difference in differences, Welch): each observed device's SER on its frames' check symbols, less the SER of
the bundle's classical receiver on the same symbols where devices report it (the errors the channel alone explains,
which would otherwise dominate the variance of a fading device's windows), is measured over a window before the
canaries boot the release and over a window after. With d the change (after − before) per
device, D the canaries' mean change minus the other devices' and [low, high] its 95 % interval (normal, Welch's
standard error), the release is confirmed only when high ≤ the tolerance (shown not worse by more than it: a
non-inferiority test); it is reverted when low > 0 (shown worse) and when the windows do not show it either way. Where
the classical receiver decides most frames, a worse θ barely moves the SER; so the same test runs on the learned
receiver's own quality on each frame, the log ratio of its frame residual to the classical receiver's (bundle-format.md
§6.2, reported with each frame), and a release whose ratio rose on the canaries (low > 0) is reverted too. The devices that did not
take the release absorb whatever changed in the field meanwhile (the channels drift, the learner's telemetry is not
involved); a device is its own control for its impairments and channel. A regression reverts the canaries (a reset:
their trial was never confirmed); nothing else ever ran the release.
"""

from __future__ import annotations

import io
import itertools
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaedge.deploy import signing, wire
from metaedge.deploy.bundle import pack
from metaedge.deploy.client import DeviceClient, DeviceRequestError
from metaedge.firmware_sim.fleet import TOPICS
from metaedge.sdk.errors import UserError, bundle_at
from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.store import FleetDir
from metaedge.sdk.fleet.stream import Telemetry, device_of
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import welch_interval

REQUEST_TIMEOUT_S = 60.0
PARALLEL = 8  # devices updated at once
MIN_CANARIES = 3  # and as many other reporting devices: the test's variances need a few of each


class Carrier:
    """One device's protocol messages over the broker (a ``DeviceClient`` stream): ``write``/``flush`` publish a
    request, ``read`` takes the bytes of its response — the one whose ``seq`` answers it (or ``seq`` null: the device
    could not read it). Late answers to earlier requests and QoS-1 duplicates are dropped."""

    def __init__(self, client, device: str, timeout: float) -> None:
        self.client, self.device, self.timeout = client, device, timeout
        self.outgoing, self.incoming = bytearray(), b""
        self.inbox: queue.Queue = queue.Queue()
        self.sequence = itertools.count(1)
        self.expected = None

    def write(self, data: bytes) -> None:
        self.outgoing += data

    def flush(self) -> None:
        self.expected = wire.read_message(io.BytesIO(bytes(self.outgoing)))[0].get("seq")
        self.incoming = b""
        self.client.publish(TOPICS["req"].format(self.device), bytes(self.outgoing), qos=1)
        self.outgoing.clear()

    def read(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self.incoming) < n:
            try:
                message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise OSError(f"no response from {self.device} within {self.timeout:.0f} s") from None
            try:
                seq = wire.read_message(io.BytesIO(message))[0].get("seq")
            except wire.WireError:
                continue
            if seq in (self.expected, None):
                self.incoming += message
        data, self.incoming = self.incoming[:n], self.incoming[n:]
        return data

    def close(self) -> None:
        pass


class Operator:
    """The operator's connection to the fleet: a ``DeviceClient`` per device, requests signed by the operator key."""

    def __init__(self, fleet: FleetDir, timeout: float = REQUEST_TIMEOUT_S) -> None:
        spec, secrets = fleet.spec(), fleet.secrets()
        self.key = signing.load_private(fleet.operator_key()[0])
        self.carriers = {}
        self.client = broker.connect(broker.OPERATOR, secrets["passwords"][broker.OPERATOR], spec.port)
        for device in spec.devices:
            self.carriers[device] = Carrier(self.client, device, timeout)
        self.client.on_message = self._on_response
        self.client.subscribe(TOPICS["resp"].format("+"), qos=1)

    def _on_response(self, _client, _userdata, message) -> None:
        carrier = self.carriers.get(device_of(message.topic, "resp") or "")
        if carrier is not None:
            carrier.inbox.put(bytes(message.payload))

    def device(self, name: str) -> DeviceClient:
        carrier = self.carriers[name]
        return DeviceClient(None, operator_key=self.key, stream=carrier, sequence=carrier.sequence)

    def each(self, devices: list[str], work) -> dict[str, dict | str]:
        """``work(client)`` on every device, PARALLEL at a time: its result, or the reason it failed."""

        def one(name: str):
            try:
                return work(self.device(name))
            except (DeviceRequestError, ConnectionError) as e:
                return str(e)
            except Exception as e:  # noqa: BLE001 — a device's malformed answer fails that device, not the rollout
                return f"{type(e).__name__}: {e}"

        with ThreadPoolExecutor(PARALLEL) as pool:
            return dict(zip(devices, pool.map(one, devices)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass(frozen=True)
class Verdict:
    regression: bool
    reason: str
    difference: dict  # the canaries' mean change of SER minus the others', with its 95 % interval
    canary_change: float
    others_change: float


def verdict(ser: tuple[np.ndarray, np.ndarray], tolerance: float, residual: tuple[np.ndarray, np.ndarray] | None = None) -> Verdict:
    """The rollout's test (module docstring) on the per-device changes of check-symbol SER, (canaries, others), and of
    the learned receiver's log frame-residual ratio where the devices report it."""
    difference = welch_interval(*ser)
    diff, (low, high) = difference["diff"], difference["ci95"]
    changes = (float(ser[0].mean()), float(ser[1].mean()))
    interval = f"95 % interval [{low:+.4f}, {high:+.4f}]"
    if low > 0:
        return Verdict(True, f"the canaries' SER rose by {diff:+.4f} more than the others' ({interval} above 0)", difference, *changes)
    if residual is not None:
        ratio = welch_interval(*residual)
        r_diff, (r_low, r_high) = ratio["diff"], ratio["ci95"]
        if r_low > 0:
            why = f"the canaries' learned receiver splits their frames worse: log residual ratio {r_diff:+.3f} [{r_low:+.3f}, {r_high:+.3f}] above 0"
            return Verdict(True, why, difference, *changes)
    relative = f"the canaries changed by {diff:+.4f} relative to the others ({interval})"
    if high > tolerance:
        return Verdict(True, f"not shown within the tolerance {tolerance:g}: {relative}", difference, *changes)
    return Verdict(False, f"within the tolerance {tolerance:g}: {relative}", difference, *changes)


@dataclass
class Window:
    """One device's reports over a window: check-symbol errors, and the learned receiver's frame residuals."""

    errors: int = 0
    symbols: int = 0
    frames: int = 0
    reference: int | None = 0  # the classical receiver's errors on the same symbols; None once a frame lacks them
    log_ratio: float = 0.0  # Σ log(learned residual / classical residual) over the frames that report both
    residual_frames: int = 0

    def add(self, report) -> None:
        self.errors, self.symbols, self.frames = self.errors + report.check[0], self.symbols + report.check[1], self.frames + 1
        self.reference = None if self.reference is None or report.reference_errors is None else self.reference + report.reference_errors
        if report.residuals is not None and min(report.residuals) > 0:
            self.log_ratio += float(np.log(report.residuals[0]) - np.log(report.residuals[1]))
            self.residual_frames += 1

    @property
    def ser(self) -> float:
        return self.errors / self.symbols

    @property
    def excess(self) -> float | None:
        """The SER on the check symbols above the classical receiver's on the same samples: the channel's share of the
        errors taken out (None where the device does not report the reference)."""
        return None if self.reference is None else (self.errors - self.reference) / self.symbols

    @property
    def residual(self) -> float | None:
        return self.log_ratio / self.residual_frames if self.residual_frames else None


class Windows:
    """Per-device windows of reports, read from the telemetry stream."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self, devices: list[str], frames: int, timeout: float, accept, since: float | None = None) -> dict[str, Window]:
        """The next ``frames`` reports of each device that ``accept(report)`` takes (and that arrived after ``since``,
        a ``time.monotonic()``); devices still short when ``timeout`` passes are left out."""
        windows = {d: Window() for d in devices}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(w.frames < frames for w in windows.values()):
            for report, arrived in self.telemetry.reports(timeout=0.5):
                window = windows.get(report.device)
                if window is not None and window.frames < frames and (since is None or arrived >= since) and accept(report):
                    window.add(report)
        return {d: w for d, w in windows.items() if w.frames >= frames}


def split(devices: list[str], opted_out: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(canaries, observed others) among the devices that report telemetry; at least MIN_CANARIES of each."""
    excluded = set(opted_out)
    reporting = [d for d in devices if d not in excluded]
    count = max(MIN_CANARIES, int(round(fraction * len(reporting))))
    if len(reporting) < 2 * MIN_CANARIES:
        raise UserError(f"a canary stage needs {2 * MIN_CANARIES} reporting devices or more (this fleet: {len(reporting)}); add --devices")
    if len(reporting) - count < MIN_CANARIES:
        raise UserError(f"--canary {fraction:g} leaves fewer than {MIN_CANARIES} reporting devices to compare the canaries with; lower it")
    order = np.random.default_rng(seed).permutation(len(reporting))
    chosen = set(reporting[i] for i in order[:count])
    return sorted(chosen), [d for d in reporting if d not in chosen]


@dataclass(frozen=True)
class Image:
    packed: bytes
    sha256: str
    counter: int
    classes: int


def image_of(fleet: FleetDir, bundle: Path) -> Image:
    """The packed bundle, refused at once (one line) where no device of the fleet would install it: not signed by the
    fleet's release key, or its counter not above the fleet's last confirmed release."""
    import hashlib

    from metaedge.deploy.signing import SignatureError, verify

    read = bundle_at(bundle)
    try:
        verify(read.manifest_raw, read.signature, [signing.load_public(fleet.release_key()[1])], read.manifest.signer)
    except SignatureError as e:
        raise UserError(f"{bundle}: {e}; sign releases with the fleet's key {fleet.release_key()[0]}") from None
    confirmed = fleet.confirmed_release()
    if read.manifest.security_counter <= confirmed:
        raise UserError(f"{bundle}: security counter {read.manifest.security_counter} is not above {confirmed}, the fleet's confirmed release")
    packed = pack(read)
    return Image(packed, hashlib.sha256(packed).hexdigest(), read.manifest.security_counter, read.manifest.task.classes)


def trial(client: DeviceClient, image: bytes) -> dict:
    """Upload, mark for test and trial-boot (not confirmed)."""
    return client.deploy(image, confirm=False)


def confirm_all(client: DeviceClient, image: bytes) -> dict:
    """Confirm a device on trial; install and confirm the release on any other."""
    info = client.images()
    running = next((i for i in info["images"] if i["active"]), None)
    if running is not None and running.get("trial"):
        return client.confirm()
    return client.deploy(image, confirm=True)


def ordered_log(fleet: FleetDir, stage: str, **entry) -> None:
    fleet.append_log({"time": time.time(), "stage": stage, **entry})


def run_rollout(fleet: FleetDir, bundle: Path, canary: float, frames: int, tolerance: float, timeout: float, progress: Progress = silent) -> dict:
    """Canary stage, test, then confirm and roll out to all — or revert the canaries. The report says which, and why.
    Whatever stops the rollout once the canaries hold the release (an error, Ctrl-C) resets them first."""
    spec = fleet.spec()
    image = image_of(fleet, bundle)
    canaries, others = split(spec.devices, spec.opted_out, canary, seed=image.counter)
    telemetry = Telemetry(fleet, broker.OPERATOR, image.classes)
    try:
        operator = Operator(fleet)
    except BaseException:
        telemetry.close()
        raise
    windows = Windows(telemetry)
    progress(0, total=4, label="before")
    try:
        before = windows.collect(canaries + others, frames, timeout, lambda r: r.version["sha256"] != image.sha256)
        progress(1, label="canaries")
        return _canary_stage(fleet, spec, image, canaries, others, before, windows, operator, frames, tolerance, timeout, progress)
    finally:
        telemetry.close()
        operator.close()


def _canary_stage(fleet, spec, image: Image, canaries, others, before, windows, operator, frames, tolerance, timeout, progress) -> dict:
    try:
        trials = operator.each(canaries, lambda c: trial(c, image.packed))
        booted = [d for d, r in trials.items() if isinstance(r, dict)]
        refused = {d: r for d, r in trials.items() if d not in booted}
        ordered_log(fleet, "canary", counter=image.counter, sha256=image.sha256, canaries=canaries, failed=refused)
        on_trial = set(canaries)
        since = time.monotonic()  # the reports queued while the canaries booted belong to neither window
        after = windows.collect(canaries + others, frames, timeout, lambda r: (r.version["sha256"] == image.sha256) == (r.device in on_trial), since)
        progress(1, label="test")
        decision = _decide(before, after, canaries, others, booted, tolerance)
    except BaseException as e:
        _revert(fleet, operator, image, canaries, f"aborted: {type(e).__name__}: {e}")
        raise
    ordered_log(fleet, "decision", counter=image.counter, regression=decision.regression, reason=decision.reason, difference=decision.difference)
    if decision.regression:
        failed = _revert(fleet, operator, image, canaries, "reverted")
        progress(2, label="reverted")
        return _report(image, canaries, others, decision, "reverted", failed)
    progress(1, label="rollout")
    started = time.monotonic()
    results = operator.each(spec.devices, lambda c: confirm_all(c, image.packed))
    failed = {d: r for d, r in results.items() if not isinstance(r, dict)}
    ordered_log(fleet, "confirmed", counter=image.counter, devices=len(results) - len(failed), failed=failed)
    progress(1, label="confirmed")
    return {**_report(image, canaries, others, decision, "confirmed", failed), "confirm_s": time.monotonic() - started}


def _revert(fleet: FleetDir, operator: Operator, image: Image, canaries: list[str], stage: str) -> dict:
    """Reset the canaries (their unconfirmed trial reverts); the devices whose reset failed, logged."""
    results = operator.each(canaries, lambda c: c.reset())
    failed = {d: r for d, r in results.items() if not isinstance(r, dict)}
    ordered_log(fleet, stage.split(":")[0], counter=image.counter, devices=canaries, failed=failed, **({"reason": stage} if ":" in stage else {}))
    return failed


def _decide(before: dict, after: dict, canaries: list[str], others: list[str], booted: list[str], tolerance: float) -> Verdict:
    """The verdict, or a regression where a canary failed its trial boot or too few devices reported in both windows."""
    failed = sorted(set(canaries) - set(booted))
    if failed:
        return _refusal(f"{len(failed)} canaries did not trial-boot the release ({', '.join(failed[:3])})")
    silent_canaries = sorted(set(canaries) - set(after))
    if silent_canaries:  # refused frames, a containment revert, or gone: the release is not shown to work there
        return _refusal(f"{len(silent_canaries)} canaries did not report a full window on the release ({', '.join(silent_canaries[:3])})")

    def changes(devices: list[str], metric: str) -> np.ndarray:
        pairs = [(getattr(before[d], metric), getattr(after[d], metric)) for d in devices if d in before and d in after]
        return np.array([a - b for b, a in pairs if a is not None and b is not None])

    windows = [*before.values(), *after.values()]
    metric = "excess" if all(w.excess is not None for w in windows) else "ser"
    ser = changes(canaries, metric), changes(others, metric)
    if min(map(len, ser)) < 2:
        return _refusal(f"too little telemetry to judge the release ({len(ser[0])} canaries, {len(ser[1])} others reported in both windows)")
    residual = changes(canaries, "residual"), changes(others, "residual")
    return verdict(ser, tolerance, residual if min(map(len, residual)) >= 2 else None)


def _refusal(reason: str) -> Verdict:
    """A regression decided without the test."""
    return Verdict(True, reason, {}, float("nan"), float("nan"))


def _report(image: Image, canaries: list[str], others: list[str], decision: Verdict, outcome: str, failed: dict) -> dict:
    return {
        "security_counter": image.counter,
        "sha256": image.sha256,
        "outcome": outcome,
        "canaries": canaries,
        "observed_others": len(others),
        "reason": decision.reason,
        "difference": decision.difference,
        "canary_change": decision.canary_change,
        "others_change": decision.others_change,
        "failed": failed,
    }


def run(options, progress: Progress = silent) -> dict:
    """``metaedge fleet rollout``."""
    fleet = FleetDir(options.dir)
    return run_rollout(fleet, options.bundle, options.canary, options.window, options.tolerance, options.timeout, progress)


def text(report: dict) -> str:
    lines = [f"release {report['security_counter']} ({report['sha256'][:12]}…): {report['outcome']}: {report['reason']}"]
    lines.append(f"  canaries ({len(report['canaries'])}): {', '.join(report['canaries'][:8])}{' …' if len(report['canaries']) > 8 else ''}")
    lines += [f"  failed on {d}: {why}" for d, why in report["failed"].items()]
    return "\n".join(lines)


def exit_code(report: dict) -> int:
    """1 when the release was reverted: a script learns that the fleet still runs the previous release."""
    return 1 if report["outcome"] == "reverted" else 0


def bad_release(fleet: FleetDir) -> Path:
    """A deliberately bad release for a fire drill: the confirmed release's run with θ of an untrained network (a fresh
    initialisation), signed and countered as any release — only the canary stage can stop it."""
    from metaedge.sdk.families.demod.training import configs_from_run, initial_theta
    from metaedge.sdk.fleet.up import export_release
    from metaedge.sdk.rundir import load_run

    counter = fleet.latest_release() + 1
    run = load_run(fleet.release(fleet.confirmed_release()) / "run")
    task, train = configs_from_run(run.config)
    theta = initial_theta(train.model(task), train, np.random.default_rng([counter, 13]))
    return export_release(fleet, counter, run.config, theta)


def drill(options, progress: Progress = silent) -> dict:
    """``metaedge fleet drill``: push a bad release; it must be reverted at the canary stage, with no other device
    ever holding it and no canary left running it."""
    fleet = FleetDir(options.dir)
    bundle = bad_release(fleet)
    report = run_rollout(fleet, bundle, options.canary, options.window, options.tolerance, options.timeout, progress)
    canaries = set(report["canaries"])
    exposed = _holding(fleet, report["sha256"], [d for d in fleet.spec().devices if d not in canaries], active_only=False)
    exposed += _holding(fleet, report["sha256"], report["canaries"], active_only=True)
    return {**report, "stopped_at_canaries": report["outcome"] == "reverted" and not exposed, "exposed": exposed}


def _holding(fleet: FleetDir, sha: str, devices: list[str], active_only: bool) -> list[str]:
    """The devices among ``devices`` that hold the image ``sha`` in a slot (``active_only``: run it), or that do not
    answer."""
    operator = Operator(fleet)
    try:
        images = operator.each(devices, lambda c: c.images())
    finally:
        operator.close()
    return [
        d
        for d, r in images.items()
        if not isinstance(r, dict) or any(i.get("sha256") == sha and (i["active"] or not active_only) for i in r["images"])
    ]


def drill_text(report: dict) -> str:
    verdict = "stopped at the canary stage" if report["stopped_at_canaries"] else f"NOT stopped: {report['outcome']}, exposed {report['exposed']}"
    return f"drill: bad release {report['security_counter']} {verdict} ({report['reason']})"


def drill_exit_code(report: dict) -> int:
    return 0 if report["stopped_at_canaries"] else 1
