"""Power cuts at every flash write of an update: a bundle and its next release (counter + 1), deployed to an in-process
device whose flash write is interrupted at each point in turn; every restart must boot a verified image."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable

from metaedge.deploy.bundle import Bundle, manifest_bytes, pack
from metaedge.deploy.manifest import parse
from metaedge.firmware_sim import powercut
from metaedge.firmware_sim.device import Device
from metaedge.firmware_sim.profile import DEFAULT, PROFILES
from metaedge.sdk.bench.config import PowercutBench
from metaedge.sdk.errors import bundle_at
from metaedge.sdk.options import Progress, silent


def next_release(bundle: Bundle) -> Bundle:
    """The same receiver as a newer release: counter + 1, and a changed manifest (a looser self-test tolerance)."""
    raw = bundle.manifest.raw
    manifest = {**raw, "security_counter": raw["security_counter"] + 1, "selftest": {**raw["selftest"], "atol": raw["selftest"]["atol"] * 2}}
    return dataclasses.replace(bundle, manifest=parse(manifest), manifest_raw=manifest_bytes(manifest), signature=b"")


def bench_powercut(bundle: Bundle, crash_states: int = 1000, progress: Callable[[str], Callable[[int], None]] | None = None) -> dict:
    """Every scenario of ``powercut.SCENARIOS``, cut at every write and then as ``crash_states`` crash states (split
    evenly over the scenarios); ``progress(label)`` gives the callback counting one part's cuts."""
    images = [pack(dataclasses.replace(bundle, signature=b"")), pack(next_release(bundle))]
    make = lambda state: Device(state, "onnx", PROFILES[DEFAULT], allow_unsigned=True)  # noqa: E731 — trust is tested elsewhere
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup = powercut.Setup.prepare(work, images[0], images[1], make)
        for scenario in powercut.SCENARIOS:
            counter = progress(f"cuts during {scenario}") if progress else None
            reports.append(powercut.run(scenario, setup, work / scenario, progress=counter).to_dict())
        per_scenario = -(-crash_states // len(powercut.SCENARIOS))
        for scenario in powercut.SCENARIOS if crash_states else ():
            counter = progress(f"crash states of {scenario}") if progress else None
            reports.append(powercut.explore(scenario, setup, work / scenario, per_scenario, counter).to_dict())
    return {
        "benchmark": "powercut",
        "image_bytes": len(images[1]),
        "chunk": powercut.CHUNK,
        "sector": powercut.SECTOR,
        "scenarios": reports,
        "cuts": sum(r["cuts"] for r in reports),
        "crash_states": sum(r["cuts"] for r in reports if "crash states" in r["scenario"]),
        "failures": sum(r["failures"] for r in reports),
    }


def run(options: PowercutBench, progress: Progress = silent) -> dict:
    """``metaedge bench powercut``: each scenario's count of writes shows on ``progress``."""
    return bench_powercut(bundle_at(options.bundle), options.crash_states, lambda label: lambda done=1: progress(done, label=label))


def text(report: dict) -> str:
    lines = []
    for r in report["scenarios"]:
        what = "crash states booted" if "crash" in r["scenario"] else "injected cuts"
        lines.append(f"{r['scenario']}: {r['writes']} flash writes, {r['cuts']} {what}, {r['failures']} failures")
    return "\n".join([*lines, f"total: {report['cuts']} cuts and crash states, {report['failures']} failures"])


def exit_code(report: dict) -> int:
    return 0 if report["failures"] == 0 else 1
