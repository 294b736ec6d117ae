"""The fleet on the broker, measured end to end (``metaedge bench fleet --system``): a fleet process of ``devices``
devices (``metaedge fleet up``), the telemetry's throughput at the learner, the time from the report that completed
a candidate's evidence to the release confirmed on every device, the fire drill, and what each device costs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from metaedge.sdk.errors import UserError
from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.config import DrillOptions, LearnOptions, OnlineOptions
from metaedge.sdk.fleet.scenario import Field
from metaedge.sdk.fleet.status import snapshot
from metaedge.sdk.fleet.store import FleetDir
from metaedge.sdk.fleet.stream import Telemetry
from metaedge.sdk.fleet.up import demod_task, provision

READY_S = 600.0  # every device booted and reporting


def classes_of(fleet: FleetDir) -> int:
    """The classes of the fleet's receivers (its run's constellation)."""
    return demod_task(Path(fleet.spec().run))[0].order


def peak_rss(pid: int) -> int:
    """A process's peak resident memory, bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _ready(fleet: FleetDir, devices: int, proc: subprocess.Popen) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_S:
        if proc.poll() is not None:
            raise UserError(f"the fleet process ended early (exit {proc.returncode}); see {fleet.path / 'fleet-up.log'}")
        try:
            if snapshot(fleet)["reporting"] >= devices:
                return time.monotonic() - started
        except UserError:
            time.sleep(1.0)
    raise UserError(f"the fleet's {devices} devices did not all report within {READY_S:.0f} s")


def throughput(fleet: FleetDir, classes: int, seconds: float) -> dict:
    """Reports accepted by a learner per second, and their mean size."""
    stream = Telemetry(fleet, broker.LEARNER, classes)
    count, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            count += len(stream.reports(timeout=0.5))
    finally:
        stream.close()
    elapsed = time.monotonic() - started
    return {"reports_per_s": count / elapsed, "seconds": elapsed, **stream.counts()}


def capacity(fleet: FleetDir, publishers: int, messages: int) -> dict:
    """The broker and the host's verification at full load: ``publishers`` of the fleet's identities publish
    ``messages`` signed reports each as fast as they can (the fleet itself stopped); reports accepted per second."""
    import threading

    from metaedge.deploy import telemetry
    from metaedge.firmware_sim.fleet import Identity, topic

    spec = fleet.spec()
    conf = broker.write_config(fleet.broker, broker.Credentials(fleet.secrets()["passwords"]), spec.port)
    with broker.running(conf, spec.port):
        stream = Telemetry(fleet, broker.LEARNER, classes_of(fleet))
        identities = [Identity.load(fleet.devices / name / "identity.json") for name in spec.devices[:publishers]]
        version = {"sha256": "0" * 64, "security_counter": 1, "release": 0}
        samples = {"support": 8, "pilots": {"x": [[0.5, -0.5]] * 40, "y": [3] * 40}}

        def publish(identity: Identity) -> None:
            client = broker.connect(identity.device, identity.password, spec.port)
            for seq in range(10**9, 10**9 + messages):
                body = {"device": identity.device, "seq": seq, "frame": 1, "version": version, "receiver": "learned", "check": [0, 32]}
                sent = client.publish(topic("telemetry", identity.device), telemetry.encode(identity.key, {**body, **samples}), qos=0)
            sent.wait_for_publish(30.0)  # every message written to the broker before the client stops
            client.disconnect()
            client.loop_stop()

        threads = [threading.Thread(target=publish, args=(i,)) for i in identities]
        started, accepted, last = time.monotonic(), 0, time.monotonic()
        for t in threads:
            t.start()
        while accepted < publishers * messages:
            got = len(stream.reports(timeout=2.0))
            if not got and not any(t.is_alive() for t in threads):
                break
            if got:
                accepted, last = accepted + got, time.monotonic()
        elapsed = last - started  # to the last report accepted
        stream.close()
    # what neither the learner accepted nor counted as dropped, the broker dropped (QoS 0: a slow subscriber loses messages)
    lost = publishers * messages - accepted - sum(stream.dropped.values())
    sent = publishers * messages
    return {"publishers": publishers, "sent": sent, "seconds": elapsed, "reports_per_s": accepted / elapsed, **stream.counts(), "lost": lost}


def field_excess(fleet: FleetDir, frames: int) -> dict:
    """What the fleet's devices measure now over ``frames`` frames each: the SER on their check symbols, and its excess
    over the bundle's classical (model-based) receiver on the same symbols, mean and 95 % interval over devices."""
    from metaedge.sdk.fleet.rollout import Windows
    from metaedge.sdk.stats import paired_interval, summarise

    stream = Telemetry(fleet, broker.LEARNER, classes_of(fleet))
    try:
        windows = Windows(stream).collect(fleet.spec().devices, frames, 300.0, lambda report: True)
    finally:
        stream.close()
    reported = [w for w in windows.values() if w.excess is not None]
    if len(reported) < 2:
        raise UserError(f"only {len(reported)} devices reported {frames} frames with the reference receiver's errors within 300 s")
    ser = summarise(np.array([w.ser for w in reported]))
    return {"devices": len(reported), "frames": frames, "ser": ser, "excess": paired_interval(np.array([w.excess for w in reported]))}


def run_system(options, directory: Path) -> dict:
    """Provision ``options.devices`` devices in ``directory`` (a fresh fleet), run them as their own process, measure."""
    from metaedge.sdk.fleet import learn, rollout

    fleet = FleetDir(directory)
    field = Field(shift=options.shift, rho=0.9, pilots=options.pilots)
    started = time.monotonic()
    provision(fleet, options.run, options.devices, field, options.seed, reporting=1.0, opt_out=0.0)
    provisioned = time.monotonic() - started
    command = [sys.executable, "-m", "metaedge.sdk.cli.main", "fleet", "up", "--dir", str(directory), "--quiet", "--json", "--period", "0.1"]
    log = (directory / "fleet-up.log").open("w")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready = _ready(fleet, options.devices, proc)
        stream = throughput(fleet, classes_of(fleet), options.listen)
        before = field_excess(fleet, options.window)
        stage = {"canary": 0.1, "window": options.window, "timeout": 300.0}
        learned = learn.run(LearnOptions(dir=directory, releases=1, duration=600.0, rollout=True, online=OnlineOptions(), **stage))
        after = field_excess(fleet, options.window)
        drill = rollout.drill(DrillOptions(dir=directory, **stage))
        memory = peak_rss(proc.pid)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=120)
        log.close()
    if not out.strip():
        raise UserError(f"the fleet process reported nothing (exit {proc.returncode}): {(directory / 'fleet-up.log').read_text()[-800:]}")
    loop = json.loads(out)
    return {
        "capacity": capacity(fleet, publishers=10, messages=5000),
        "devices": options.devices,
        "provision_s": provisioned,
        "ready_s": ready,
        "loop": loop,
        "telemetry": stream,
        "learn": {k: learned[k] for k in ("verdicts", "releases", "rollouts", "counts", "telemetry", "seconds")},
        "field": {"before": before, "after": after},
        "drill": drill,
        "fleet_process_peak_rss_bytes": memory,
        "rss_per_device_bytes": memory / options.devices,
    }
