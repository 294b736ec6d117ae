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

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaedge.deploy import signing
from metaedge.deploy.bundle import pack, read_bundle
from metaedge.deploy.client import DeviceClient, DeviceRequestError
from metaedge.firmware_sim.fleet import TOPICS
from metaedge.sdk.errors import UserError
from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.store import FleetDir
from metaedge.sdk.fleet.stream import Telemetry, device_of
from metaedge.sdk.options import Progress, silent

REQUEST_TIMEOUT_S = 60.0
PARALLEL = 8  # devices updated at once
MIN_CANARIES = 3  # and as many other reporting devices: the test's variances need a few of each


class Carrier:
    """One device's protocol messages over the broker: ``write``/``flush`` publish a request, ``read`` takes the bytes
    of its responses (a ``DeviceClient`` stream)."""

    def __init__(self, client, device: str, timeout: float) -> None:
        self.client, self.device, self.timeout = client, device, timeout
        self.outgoing, self.incoming = bytearray(), b""
        self.inbox: queue.Queue = queue.Queue()

    def write(self, data: bytes) -> None:
        self.outgoing += data

    def flush(self) -> None:
        self.client.publish(TOPICS["req"].format(self.device), bytes(self.outgoing), qos=1)
        self.outgoing.clear()

    def read(self, n: int) -> bytes:
        while len(self.incoming) < n:
            try:
                self.incoming += self.inbox.get(timeout=self.timeout)
            except queue.Empty:
                raise OSError(f"no response from {self.device} within {self.timeout:.0f} s") from None
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
        return DeviceClient(None, operator_key=self.key, stream=self.carriers[name])

    def each(self, devices: list[str], work) -> dict[str, dict | str]:
        """``work(client)`` on every device, PARALLEL at a time: its result, or the reason it failed."""

        def one(name: str):
            try:
                return work(self.device(name))
            except (DeviceRequestError, ConnectionError) as e:
                return str(e)

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


def changes_test(canary_changes: np.ndarray, other_changes: np.ndarray) -> tuple[float, float, float]:
    """(D, low, high): the canaries' mean change minus the others', with its 95 % interval (Welch's standard error)."""
    diff = float(canary_changes.mean() - other_changes.mean())
    se = float(np.sqrt(canary_changes.var(ddof=1) / len(canary_changes) + other_changes.var(ddof=1) / len(other_changes)))
    return diff, diff - 1.96 * se, diff + 1.96 * se


def verdict(ser: tuple[np.ndarray, np.ndarray], tolerance: float, residual: tuple[np.ndarray, np.ndarray] | None = None) -> Verdict:
    """The rollout's test (module docstring) on the per-device changes of check-symbol SER, (canaries, others), and of
    the learned receiver's log frame-residual ratio where the devices report it."""
    diff, low, high = changes_test(*ser)
    difference = {"diff": diff, "ci95": [low, high]}
    changes = (float(ser[0].mean()), float(ser[1].mean()))
    interval = f"95 % interval [{low:+.4f}, {high:+.4f}]"
    if low > 0:
        return Verdict(True, f"the canaries' SER rose by {diff:+.4f} more than the others' ({interval} above 0)", difference, *changes)
    if residual is not None:
        r_diff, r_low, r_high = changes_test(*residual)
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
            self.log_ratio += float(np.log(report.residuals[0] / report.residuals[1]))
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

    def collect(self, devices: list[str], frames: int, timeout: float, accept) -> dict[str, Window]:
        """The next ``frames`` reports of each device that ``accept(report)`` takes; devices still short when
        ``timeout`` passes are left out."""
        windows = {d: Window() for d in devices}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(w.frames < frames for w in windows.values()):
            for report, _ in self.telemetry.reports(timeout=0.5):
                window = windows.get(report.device)
                if window is not None and window.frames < frames and accept(report):
                    window.add(report)
        return {d: w for d, w in windows.items() if w.frames >= frames}


def split(devices: list[str], opted_out: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(canaries, observed others) among the devices that report telemetry; at least MIN_CANARIES of each."""
    reporting = [d for d in devices if d not in opted_out]
    count = max(MIN_CANARIES, int(round(fraction * len(reporting))))
    if len(reporting) - count < MIN_CANARIES:
        raise UserError(f"a canary stage needs {2 * MIN_CANARIES} reporting devices or more (this fleet: {len(reporting)}); add --devices")
    order = np.random.default_rng(seed).permutation(len(reporting))
    chosen = sorted(reporting[i] for i in order[:count])
    return chosen, [d for d in reporting if d not in chosen]


def image_of(bundle: Path) -> tuple[bytes, str, int]:
    """The packed bundle, its SHA-256 and security counter."""
    import hashlib

    packed = pack(read_bundle(bundle))
    return packed, hashlib.sha256(packed).hexdigest(), read_bundle(bundle).manifest.security_counter


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
    """Canary stage, test, then confirm and roll out to all — or revert the canaries. The report says which, and why."""
    spec = fleet.spec()
    image, sha, counter = image_of(bundle)
    canaries, others = split(spec.devices, spec.opted_out, canary, seed=counter)
    classes = read_bundle(bundle).manifest.task.classes
    telemetry, operator = Telemetry(fleet, broker.OPERATOR, classes), Operator(fleet)
    windows = Windows(telemetry)
    progress(0, total=4, label="before")
    try:
        before = windows.collect(canaries + others, frames, timeout, lambda r: r.version["sha256"] != sha)
        progress(1, label="canaries")
        trials = operator.each(canaries, lambda c: trial(c, image))
        booted = [d for d, r in trials.items() if isinstance(r, dict)]
        ordered_log(fleet, "canary", counter=counter, sha256=sha, canaries=canaries, failed={d: r for d, r in trials.items() if d not in booted})
        after = windows.collect(canaries + others, frames, timeout, lambda r: (r.version["sha256"] == sha) == (r.device in canaries))
        progress(1, label="test")
        decision = _decide(before, after, canaries, others, booted, tolerance)
        ordered_log(fleet, "decision", counter=counter, regression=decision.regression, reason=decision.reason, difference=decision.difference)
        if decision.regression:
            operator.each(canaries, lambda c: c.reset())
            ordered_log(fleet, "reverted", counter=counter, devices=canaries)
            progress(2, label="reverted")
            return _report(counter, sha, canaries, others, decision, "reverted", {})
        progress(1, label="rollout")
        started = time.monotonic()
        results = operator.each(spec.devices, lambda c: confirm_all(c, image))
        failed = {d: r for d, r in results.items() if not isinstance(r, dict)}
        ordered_log(fleet, "confirmed", counter=counter, devices=len(results) - len(failed), failed=failed)
        progress(1, label="confirmed")
        return {**_report(counter, sha, canaries, others, decision, "confirmed", failed), "confirm_s": time.monotonic() - started}
    finally:
        telemetry.close()
        operator.close()


def _decide(before: dict, after: dict, canaries: list[str], others: list[str], booted: list[str], tolerance: float) -> Verdict:
    """The verdict, or a regression where a canary failed its trial boot or too few devices reported in both windows."""
    failed = sorted(set(canaries) - set(booted))
    if failed:
        return _refusal(f"{len(failed)} canaries did not trial-boot the release ({', '.join(failed[:3])})")

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


def _report(counter: int, sha: str, canaries: list[str], others: list[str], decision: Verdict, outcome: str, failed: dict) -> dict:
    return {
        "security_counter": counter,
        "sha256": sha,
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
    from metaedge.sdk.errors import bundle_at

    fleet = FleetDir(options.dir)
    bundle_at(options.bundle)
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
    """A deliberately bad release for a fire drill: the latest release's run with θ of an untrained network (a fresh
    initialisation), signed and countered as any release — only the canary stage can stop it."""
    from metaedge.sdk.families.demod.training import configs_from_run, initial_theta
    from metaedge.sdk.fleet.up import export_release
    from metaedge.sdk.rundir import load_run

    latest = fleet.latest_release()
    run = load_run(fleet.release(latest) / "run")
    task, train = configs_from_run(run.config)
    theta = initial_theta(train.model(task), train, np.random.default_rng([latest, 13]))
    return export_release(fleet, latest + 1, run.config, theta)


def drill(options, progress: Progress = silent) -> dict:
    """``metaedge fleet drill``: push a bad release; it must be reverted at the canary stage, with no other device
    ever running it."""
    fleet = FleetDir(options.dir)
    bundle = bad_release(fleet)
    report = run_rollout(fleet, bundle, options.canary, options.window, options.tolerance, options.timeout, progress)
    exposed = _running(fleet, report["sha256"], [d for d in fleet.spec().devices if d not in report["canaries"]])
    return {**report, "stopped_at_canaries": report["outcome"] == "reverted" and not exposed, "exposed": exposed}


def _running(fleet: FleetDir, sha: str, devices: list[str]) -> list[str]:
    """The devices among ``devices`` that hold the image ``sha`` in a slot."""
    operator = Operator(fleet)
    try:
        images = operator.each(devices, lambda c: c.images())
    finally:
        operator.close()
    return [d for d, r in images.items() if not isinstance(r, dict) or any(i.get("sha256") == sha for i in r["images"])]


def drill_text(report: dict) -> str:
    verdict = "stopped at the canary stage" if report["stopped_at_canaries"] else f"NOT stopped: {report['outcome']}, exposed {report['exposed']}"
    return f"drill: bad release {report['security_counter']} {verdict} ({report['reason']})"


def drill_exit_code(report: dict) -> int:
    return 0 if report["stopped_at_canaries"] else 1
