"""``metaedge fleet status``: the devices per release and boot mode with their check-symbol SER, from the statuses the
devices keep on the broker (retained), and the releases and rollout decisions from the fleet directory."""

from __future__ import annotations

import sys
import time
from collections import defaultdict

from metaedge.deploy.jsonobj import json_object
from metaedge.firmware_sim.fleet import TOPICS
from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.store import FleetDir
from metaedge.sdk.fleet.stream import device_of
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table

SETTLE_S = 1.0  # retained statuses arrive right after the subscription
MAX_STATUS = 1024  # bytes of a status message
MODES = ("confirmed", "trial", "fallback", "none")  # firmware_sim.boot's modes


def snapshot(fleet: FleetDir) -> dict:
    """Every device's last status, grouped by (security counter, mode); the releases and the last decisions."""
    spec, secrets = fleet.spec(), fleet.secrets()
    statuses: dict[str, dict] = {}

    known = set(spec.devices)

    def keep(_client, _userdata, message) -> None:
        device = device_of(message.topic, "status")
        if device in known:
            status = parse_status(message.payload)
            if status is not None:
                statuses[device] = status

    client = broker.connect(broker.LEARNER, secrets["passwords"][broker.LEARNER], spec.port)
    client.on_message = keep
    client.subscribe(TOPICS["status"].format("+"), qos=1)
    time.sleep(SETTLE_S)
    client.loop_stop()
    client.disconnect()
    return summary(fleet, spec.devices, statuses)


def parse_status(payload: bytes) -> dict | None:
    """A device's status (device-protocol.md §7) with the members this view reads, or None where it is not one (a
    device's message is untrusted: bounded, typed, else ignored)."""
    if not payload or len(payload) > MAX_STATUS:
        return None
    try:
        status = json_object(payload, ValueError, "a status")
    except ValueError:
        return None
    version, ser, frames = status.get("version"), status.get("check_ser"), status.get("frames")
    if version is not None and not (isinstance(version, dict) and type(version.get("security_counter")) is int):
        return None
    if not (status.get("mode") in MODES and type(frames) is int and (ser is None or type(ser) in (int, float))):
        return None
    return {"version": version, "mode": status["mode"], "frames": frames, "check_ser": ser}


def summary(fleet: FleetDir, devices: list[str], statuses: dict[str, dict]) -> dict:
    groups: dict[tuple, list] = defaultdict(list)
    for device in devices:
        status = statuses.get(device) or {}
        version = status.get("version") or {}
        groups[(version.get("security_counter"), status.get("mode", "silent"))].append(status.get("check_ser"))
    rows = []
    for (counter, mode), sers in sorted(groups.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1])):
        known = [s for s in sers if s is not None]
        rows.append({"security_counter": counter, "mode": mode, "devices": len(sers), "check_ser": sum(known) / len(known) if known else None})
    releases = sorted(int(p.name) for p in fleet.releases.iterdir() if p.name.isdigit())
    return {
        "devices": len(devices),
        "reporting": len(statuses),
        "frames": sum(s.get("frames", 0) for s in statuses.values()),
        "groups": rows,
        "releases": releases,
        "log": fleet.log_entries()[-5:],
    }


def run(options, progress: Progress = silent) -> dict:
    fleet = FleetDir(options.dir)
    report = snapshot(fleet)
    while options.watch:
        sys.stderr.write("\033[2J\033[H" + text(report) + "\n")
        sys.stderr.flush()
        time.sleep(max(0.0, options.watch - SETTLE_S))
        report = snapshot(fleet)
    return report


def text(report: dict) -> str:
    table = format_table(
        ["release", "mode", "devices", "check SER"],
        [
            [str(g["security_counter"] or "-"), g["mode"], str(g["devices"]), "-" if g["check_ser"] is None else f"{g['check_ser']:.4f}"]
            for g in report["groups"]
        ],
    )
    lines = [f"{report['reporting']} of {report['devices']} devices reported a status ({report['frames']} frames in all)", table]
    lines.append(f"releases: {', '.join(map(str, report['releases']))}")
    for entry in report["log"]:
        detail = entry.get("reason") or entry.get("devices") or ""
        lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(entry['time']))} release {entry.get('counter')}: {entry['stage']} {detail}")
    return "\n".join(lines)
