"""Power-cut injection, after MCUboot's ``perm_with_fails``: run an update (or a revert) and cut
power at every flash write, from the first to the last, then reboot and check the device.

A cut either happens before the write (nothing written) or tears it (a prefix written). Writes
to the trailer are also torn at the byte positions of its magic, sequence and slot flags.
After every cut the device restarts on the same flash and must boot a verified image (the old
or the new one), serve a frame with the decisions that image gives, and never run an image
whose slot does not verify.

Crash states (``crash_states``, in the style of ALICE and CrashMonkey) go further: a real
power failure may lose or reorder writes that were never synced. The scenario's writes and
syncs are recorded once; each crash state keeps every write up to the last sync before the
crash point and an arbitrary subset of the 512-byte sectors written after it.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from metaedge.firmware_sim.device import FLASH_FILE, Device
from metaedge.firmware_sim.flash import RECORD_SIZE, Flash, PowerCut

CHUNK = 1024  # small upload chunks: more writes, more cut points
TRAILER_SPLITS = (4, 8, 12, 13, 14, 15, 19, 22)  # inside magic, sequence, slot flags, counter, CRC
SECTOR = 512  # the unit a crash keeps or loses of an unsynced write


@dataclass
class Report:
    scenario: str
    writes: int = 0
    cuts: int = 0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "writes": self.writes,
            "cuts": self.cuts,
            "failures": len(self.failures),
            "failure_examples": self.failures[:5],
        }


def _upload_and_test(device: Device, image: bytes) -> None:
    digest = hashlib.sha256(image).hexdigest()
    for offset in range(0, len(image), CHUNK):
        device.upload(offset, len(image), digest, image[offset : offset + CHUNK])
    device.test(digest)


def update(device: Device, image: bytes) -> None:
    """Upload, test, trial boot, confirm."""
    _upload_and_test(device, image)
    device.reset()
    device.confirm()


def revert(device: Device, image: bytes) -> None:
    """Upload, test, trial boot, then reboot without confirming: the old image comes back."""
    _upload_and_test(device, image)
    device.reset()
    device.reset()


SCENARIOS: dict[str, Callable[[Device, bytes], None]] = {"update": update, "revert": revert}


class _Cutter:
    """A flash observer that records every write and cuts power at one of them."""

    def __init__(self, flash_path: Path, cut_at: int | None, keep: int | None) -> None:
        self.path, self.cut_at, self.keep = flash_path, cut_at, keep
        self.writes: list[tuple[int, int]] = []  # (offset, length) of each write, in order

    def synced(self) -> None:
        pass

    def before_write(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, len(data)))
        if len(self.writes) != self.cut_at:
            return
        if self.keep:  # a torn write: only a prefix reaches the flash
            with open(self.path, "r+b") as f:
                f.seek(offset)
                f.write(data[: self.keep])
        raise PowerCut(f"power cut at write {len(self.writes)}")


@dataclass(frozen=True)
class Setup:
    """What every cut and crash state starts from and is checked against: a device state with the old image confirmed,
    the update, how to build a device, and each image's own decisions on a reference frame."""

    base_state: Path
    image: bytes
    make_device: Callable[[Path], Device]
    frame: dict
    expected: dict[str, np.ndarray]  # image sha256 → its decisions on ``frame``

    @classmethod
    def prepare(cls, work: Path, old: bytes, new: bytes, make_device: Callable[[Path], Device]) -> "Setup":
        frame = default_frame()
        expected = {hashlib.sha256(img).hexdigest(): decisions_of(make_device, work / f"ref{i}", img, frame) for i, img in enumerate((old, new))}
        prepare(work / "base", old, make_device)
        return cls(work / "base", new, make_device, frame, expected)

    def fresh_state(self, state: Path) -> None:
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(self.base_state, state)


def run(scenario: str, setup: Setup, work: Path, progress: Callable[[], None] | None = None) -> Report:
    """Cut power at every write of ``scenario``, each time on a fresh copy of the base state."""
    report = Report(scenario)
    state = work / "state"

    def attempt(cut_at: int | None, keep: int | None) -> tuple[_Cutter, Device]:
        setup.fresh_state(state)
        device = setup.make_device(state)
        cutter = _Cutter(state / FLASH_FILE, cut_at, keep)
        device.flash.observer = cutter
        try:
            SCENARIOS[scenario](device, setup.image)
        except PowerCut:
            pass
        return cutter, device

    recorder, device = attempt(None, None)
    report.writes = len(recorder.writes)
    trailer = 2 * device.flash.slot_size
    for write, (offset, length) in enumerate(recorder.writes, start=1):
        keeps = [None, max(1, length // 2)]
        if offset >= trailer:
            keeps += [k for k in TRAILER_SPLITS if k < RECORD_SIZE]
        for keep in keeps:
            attempt(write, keep)
            report.cuts += 1
            problem = _check(setup, state)
            if problem:
                report.failures.append(f"write {write} at {offset}, {'clean cut' if keep is None else f'torn after {keep} bytes'}: {problem}")
            if progress:
                progress()
    return report


class Journal:
    """A flash observer that records the writes (offset, bytes) and syncs (None) of a scenario, in order."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, bytes] | None] = []

    def before_write(self, offset: int, data: bytes) -> None:
        self.ops.append((offset, bytes(data)))

    def synced(self) -> None:
        self.ops.append(None)


def _sectors(offset: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    start = offset
    while start < offset + len(data):
        end = min(offset + len(data), (start // SECTOR + 1) * SECTOR)
        yield start, data[start - offset : end - offset]
        start = end


def crash_states(base: bytes, ops: list, count: int, seed: int = 0) -> Iterator[tuple[str, bytes, bytes]]:
    """``count`` crash states of a recorded scenario, spread evenly over its crash points: (description, what the
    flash holds after the crash, what it holds with the synced writes alone)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        point = i * (len(ops) + 1) // count  # crash after the first ``point`` operations
        synced_up_to = max((j + 1 for j in range(point) if ops[j] is None), default=0)
        durable = bytearray(base)
        for op in ops[:synced_up_to]:
            if op is not None:
                durable[op[0] : op[0] + len(op[1])] = op[1]
        flash, kept, total = bytearray(durable), 0, 0
        for op in ops[synced_up_to:point]:
            for offset, piece in _sectors(*op):
                total += 1
                if rng.random() < 0.5:
                    flash[offset : offset + len(piece)] = piece
                    kept += 1
        yield f"crash after operation {point} of {len(ops)}, {kept} of {total} unsynced sectors kept", bytes(flash), bytes(durable)


def explore(scenario: str, setup: Setup, work: Path, count: int, progress: Callable[[], None] | None = None) -> Report:
    """Record ``scenario`` once, then boot ``count`` of its crash states and check each (as after a cut), also that
    the counter floor never drops below what was durable."""
    report = Report(f"{scenario} (crash states)")
    state = work / "state"
    setup.fresh_state(state)
    base = (state / FLASH_FILE).read_bytes()
    device = setup.make_device(state)
    journal = Journal()
    device.flash.observer = journal
    SCENARIOS[scenario](device, setup.image)
    device.close()
    report.writes = sum(op is not None for op in journal.ops)
    for description, contents, durable in crash_states(base, journal.ops, count):
        setup.fresh_state(state)
        (state / FLASH_FILE).write_bytes(durable)
        floor = Flash(state / FLASH_FILE, device.flash.slot_size).boot_state().counter
        (state / FLASH_FILE).write_bytes(contents)
        report.cuts += 1
        problem = _check(setup, state, floor)
        if problem:
            report.failures.append(f"{description}: {problem}")
        if progress:
            progress()
    return report


def _check(setup: Setup, state: Path, floor: int = 0) -> str | None:
    """Reboot on the flash a cut left behind; describe what is wrong, or None. ``floor``: the counter that was durable."""
    try:
        device = setup.make_device(state)
    except Exception as e:  # noqa: BLE001 — any failure to boot is what we count
        return f"boot failed: {type(e).__name__}: {e}"
    if device.running.slot is None:
        return "no image running after the cut"
    if device.flash.boot_state().counter < floor:
        return f"counter floor dropped from {floor} to {device.flash.boot_state().counter}"
    header = device.flash.header(device.running.slot)
    image = device.flash.verified_image(device.running.slot)
    if header is None or image is None:
        return f"running slot {device.running.slot} does not verify"
    digest = hashlib.sha256(image).hexdigest()
    if digest not in setup.expected:
        return f"running an image nobody deployed ({digest[:12]})"
    try:
        _, out = device.frame(setup.frame)
    except Exception as e:  # noqa: BLE001
        return f"frame failed: {type(e).__name__}: {e}"
    if not np.array_equal(out["decisions"], setup.expected[digest]):
        return "frame decisions differ from the image's own"
    return None


def prepare(base: Path, old_image: bytes, make_device: Callable[..., Device]) -> Device:
    """A device with ``old_image`` installed and confirmed, without cuts."""
    device = make_device(base)
    update(device, old_image)
    return device


def default_frame(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"pilots": rng.normal(0, 2, (8, 2)).astype(np.float32), "payload": rng.normal(0, 2, (200, 2)).astype(np.float32)}


def decisions_of(make_device: Callable[..., Device], work: Path, image: bytes, frame: dict) -> np.ndarray:
    """What a device running ``image`` decides on ``frame`` (the reference for the checks)."""
    device = make_device(work)
    update(device, image)
    return device.frame(frame)[1]["decisions"]
