"""``metaedge bench soak --attack``: a legitimate operator's frames while the device is under attack.

The device runs a signed bundle from a compromised build machine: its ``forward`` graph hangs on a trigger input
(``attack.hostile_bundle``). For the whole run an attacker keeps 200 idle connections open and 100 connections each
holding a partial message of 8 MiB − 1 bytes, re-opening whatever the device closes, and halfway through one frame with
the trigger arrives. An operator authenticated by its key streams frames throughout; the report gives its round trip
percentiles and worst case, what the attacker's connections got, and the memory of the device and its receiver.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from metaedge.deploy import wire
from metaedge.deploy.client import DeviceClient, DeviceRequestError, parse_device_url
from metaedge.deploy.signing import generate, load_private
from metaedge.sdk.bench.attack import TRIGGER, hostile_bundle
from metaedge.sdk.bench.config import SoakBench
from metaedge.sdk.bench.device import process_status
from metaedge.sdk.device_process import deployed
from metaedge.sdk.errors import bundle_at
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import percentiles

IDLE, PARTIAL = 200, 100
PARTIAL_BYTES = wire.MAX_MESSAGE - 1
MEMORY_CAP = 512 << 20  # stated: the device and its receiver together stay below this resident memory
P99_TARGET_MS = 50.0


@dataclass
class Attacker:
    """Keeps ``IDLE`` idle and ``PARTIAL`` half-sent connections open until stopped; counts what the device did."""

    host: str
    port: int
    opened: int = 0
    refused_busy: int = 0  # partial senders told the receive buffer is full
    closed_by_device: int = 0
    sockets: dict = field(default_factory=lambda: {"idle": [], "partial": []})
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for kind, target in (("idle", IDLE), ("partial", PARTIAL)):
                self.sockets[kind] = [s for s in self.sockets[kind] if self._alive(s)]
                while len(self.sockets[kind]) < target and not self.stop.is_set():
                    self.sockets[kind].append(self._open(kind))
            self.stop.wait(0.5)
        for group in self.sockets.values():
            for sock in group:
                sock.close()

    def _open(self, kind: str) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        self.opened += 1
        if kind == "partial":
            try:
                sock.sendall(struct.pack("<I", PARTIAL_BYTES) + bytes(PARTIAL_BYTES - 1))  # one byte short, no CRC
            except OSError:
                pass  # refused and closed while sending
        return sock

    def _alive(self, sock: socket.socket) -> bool:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        self.refused_busy += b"device busy" in data
        self.closed_by_device += 1
        sock.close()
        return False


def _trigger(url: str, outcome: dict) -> None:
    frame = {"pilots": np.full((8, 2), 5 * TRIGGER, np.float32), "payload": np.zeros((10, 2), np.float32)}
    start = time.perf_counter()
    try:
        with DeviceClient(url, timeout=60) as client:
            client.call("frame", frame)
        outcome["answer"] = "ok (the trigger did not fire)"
    except (DeviceRequestError, ConnectionError) as e:
        outcome["answer"] = str(e)
    outcome["seconds"] = time.perf_counter() - start


def bench_attack(bundle_path: Path, frames: int, pilots: int, symbols: int, work: Path, progress: Callable[[int], None] | None = None) -> dict:
    from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks

    release, operator = generate(work / "keys", "release"), generate(work / "keys", "operator")
    hostile_bundle(bundle_path, work / "hostile", "hang", load_private(release[0]))
    tasks = DemodTasks(DemodConfig(pilots=pilots, val_pilots=1, payload=symbols, frame=pilots + symbols), seed=0)
    pool = 500
    batch = tasks.frames(tasks.devices("test", pool), pilots, symbols, tasks.rng("test", 1))
    latencies, peak, trigger = np.empty(frames), 0, {}
    options = ("--trusted-key", str(release[1]), "--operator", str(operator[1]))
    with deployed("onnx", work / "state", work / "hostile", *options, operator_key=operator[0]) as (proc, url):
        attacker = Attacker(*parse_device_url(url))
        threading.Thread(target=attacker.run, daemon=True).start()
        time.sleep(3.0)  # the attack is in place before the operator starts
        with DeviceClient(url, operator_key=load_private(operator[0])) as client:
            start = time.perf_counter()
            for i in range(frames):
                if i == frames // 2:
                    threading.Thread(target=_trigger, args=(url, trigger), daemon=True).start()
                k = i % pool
                t = time.perf_counter()
                client.call("frame", {"pilots": batch.x_tr[k], "labels": batch.y_tr[k].astype(np.int32), "payload": batch.x_va[k]})
                latencies[i] = time.perf_counter() - t
                if i % 500 == 0:
                    peak = max(peak, process_status(proc.pid)["rss"])
                if progress and i % 1000 == 999:
                    progress(1000)
            elapsed = time.perf_counter() - start
            served = client.call("stats")[0]
        attacker.stop.set()
    round_trip = percentiles(latencies, (50, 90, 99, 99.9), scale=1e6)
    return {
        "benchmark": "soak-attack",
        "frames": frames,
        "pilots": pilots,
        "symbols": symbols,
        "seconds": elapsed,
        "attack": {
            "idle": IDLE,
            "partial": PARTIAL,
            "partial_bytes": PARTIAL_BYTES,
            "connections_opened": attacker.opened,
            "closed_by_device": attacker.closed_by_device,
            "refused_busy": attacker.refused_busy,
            "trigger": trigger,
        },
        "round_trip_us": {**round_trip, "max": float(latencies.max() * 1e6)},
        "p99_target_ms": P99_TARGET_MS,
        "p99_met": round_trip["p99"] < P99_TARGET_MS * 1e3,
        "memory_cap_bytes": MEMORY_CAP,
        "peak_rss_bytes": peak,
        "memory_met": peak < MEMORY_CAP,
        "device_frames": served["frames"],
        "device_errors": served["errors"],
        "device_violations": served["violations"],
    }


def run(options: SoakBench, progress: Progress = silent) -> dict:
    """``metaedge bench soak``: frames to one device process, under attack with ``attack``."""
    import tempfile

    from metaedge.sdk.bench.device import bench_soak

    bundle_at(options.bundle)
    progress(0, total=options.frames)
    soak = bench_attack if options.attack else bench_soak
    with tempfile.TemporaryDirectory() as work:
        return soak(options.bundle, options.frames, options.pilots, options.symbols, Path(work), progress=progress)


def text(report: dict) -> str:
    lat = report["round_trip_us"]
    if "attack" in report:
        attack = report["attack"]
        return (
            f"{report['frames']} operator frames under attack in {report['seconds']:.0f} s: round trip p50 {lat['p50']:.0f} µs, "
            f"p99 {lat['p99']:.0f} µs, max {lat['max'] / 1e3:.0f} ms; peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB; "
            f"attacker opened {attack['connections_opened']} connections, {attack['refused_busy']} refused busy; "
            f"trigger frame: {attack['trigger'].get('answer')}"
        )
    return (
        f"{report['frames']} frames in {report['seconds']:.0f} s ({report['frames_per_s']:.0f}/s); round trip p50 "
        f"{lat['p50']:.0f} µs, p99 {lat['p99']:.0f} µs, p99.9 {lat['p99.9']:.0f} µs; RSS growth "
        f"{report['rss_growth_percent']:+.2f} %; fds {report['fds_after_warmup']} → {report['fds_end']}"
    )


def exit_code(report: dict) -> int:
    return 0 if report.get("p99_met", True) and report.get("memory_met", True) else 1
