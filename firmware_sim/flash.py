"""The device's flash image: a file on disk, so that killing the process is a power cut.

Layout (docs/device-protocol.md §4):

    [ slot 0: slot_size bytes ][ slot 1: slot_size bytes ][ trailer: 2 records × 64 bytes ]

A slot starts with a 64-byte header — magic, image length, SHA-256 of the image, CRC-32 of
the header — followed by the image (a packed bundle). The header is written only after the
whole image is in place and verified, and erased before an upload starts, so a slot is
valid exactly when a complete, verified image is in it.

The trailer holds the boot state twice, as two records with a sequence number and a
CRC-32; a write goes to the record with the older sequence number, so a write torn by a
power cut leaves the previous state readable. Every modification goes through
``Flash.write``, the single place where power cuts can be injected.

Durability: writes may reach the medium in any order until ``sync`` (an fsync). The A/B
protocol syncs after erasing a header, before and after committing one (so a header never
reaches the medium before its image), and after every trailer write (so the boot state is
recorded before the device acts on it). ``lock_state`` keeps a second process off the flash.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Protocol

LOCK_FILE = "lock"

SLOT_MAGIC = b"MESLOT01"
TRAILER_MAGIC = b"METRLR01"
HEADER_SIZE = 64
RECORD_SIZE = 64
NONE = 0xFF  # "no slot" in a trailer field
_HEADER = struct.Struct("<8sI32s")  # magic, image length, sha256; then u32 CRC of these 44 bytes
_RECORD = struct.Struct("<8sIBBBI")  # magic, sequence, confirmed, pending, trial, security counter; then u32 CRC


class PowerCut(Exception):
    """Raised by an injected fault: the write did not happen (or happened in part) and the device is off."""


@dataclass(frozen=True)
class BootState:
    """What the trailer records. Slots are 0 or 1; None means no slot."""

    sequence: int = 0
    confirmed: int | None = None  # the image the device trusts
    pending: int | None = None  # an image the operator asked to test on the next boot
    trial: int | None = None  # the image booted on trial and not yet confirmed
    counter: int = 0  # security counter of the confirmed image

    def next(self, **changes) -> "BootState":
        return replace(self, sequence=self.sequence + 1, **changes)


class Observer(Protocol):
    """Sees every write before it happens (and may cut power by raising ``PowerCut``) and every sync."""

    def before_write(self, offset: int, data: bytes) -> None: ...

    def synced(self) -> None: ...


def lock_state(directory: str | os.PathLike) -> BinaryIO:
    """An exclusive lock on a device's state directory, held while the returned file stays open."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK_FILE, "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError("another device process is using this state directory; stop it first, or give this one its own --state") from None
    return handle


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Flash:
    def __init__(self, path: str | os.PathLike, slot_size: int, observer: Observer | None = None) -> None:
        self.path = Path(path)
        self.slot_size = slot_size
        self.size = 2 * slot_size + 2 * RECORD_SIZE
        self.observer = observer
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:
                f.truncate(self.size)
                os.fsync(f.fileno())
            _sync_directory(self.path.parent)
        elif self.path.stat().st_size != self.size:
            raise ValueError(f"flash image {self.path} has {self.path.stat().st_size} bytes; the profile needs {self.size}")

    # -- raw access ----------------------------------------------------------------------------
    def read(self, offset: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"write of {len(data)} bytes at {offset} is outside the {self.size}-byte flash")
        if self.observer:
            self.observer.before_write(offset, data)
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def sync(self) -> None:
        """Make every write so far durable (fsync of the flash file)."""
        with open(self.path, "rb") as f:
            os.fsync(f.fileno())
        if self.observer:
            self.observer.synced()

    # -- slots ---------------------------------------------------------------------------------
    @property
    def image_capacity(self) -> int:
        return self.slot_size - HEADER_SIZE

    def slot_offset(self, slot: int) -> int:
        return slot * self.slot_size

    def erase_header(self, slot: int) -> None:
        self.write(self.slot_offset(slot), b"\xff" * HEADER_SIZE)
        self.sync()

    def write_image(self, slot: int, offset: int, data: bytes) -> None:
        if offset + len(data) > self.image_capacity:
            raise ValueError(f"image of {offset + len(data)} bytes does not fit the {self.image_capacity}-byte slot")
        self.write(self.slot_offset(slot) + HEADER_SIZE + offset, data)

    def read_image(self, slot: int, length: int) -> bytes:
        return self.read(self.slot_offset(slot) + HEADER_SIZE, length)

    def commit_header(self, slot: int, length: int, sha256: bytes) -> None:
        head = _HEADER.pack(SLOT_MAGIC, length, sha256)
        self.sync()  # the image first: a header must never be durable before the bytes it vouches for
        self.write(self.slot_offset(slot), (head + struct.pack("<I", zlib.crc32(head))).ljust(HEADER_SIZE, b"\0"))
        self.sync()

    def header(self, slot: int) -> tuple[int, bytes] | None:
        """(image length, sha256) of a valid slot header, else None."""
        raw = self.read(self.slot_offset(slot), HEADER_SIZE)
        head, (crc,) = raw[: _HEADER.size], struct.unpack_from("<I", raw, _HEADER.size)
        magic, length, digest = _HEADER.unpack(head)
        if magic != SLOT_MAGIC or zlib.crc32(head) != crc or length > self.image_capacity:
            return None
        return length, digest

    def verified_image(self, slot: int) -> bytes | None:
        """The slot's image if its header is valid and the bytes hash to it; None otherwise."""
        header = self.header(slot)
        if header is None:
            return None
        image = self.read_image(slot, header[0])
        return image if hashlib.sha256(image).digest() == header[1] else None

    # -- trailer -------------------------------------------------------------------------------
    def _record_offset(self, index: int) -> int:
        return 2 * self.slot_size + index * RECORD_SIZE

    def _read_record(self, index: int) -> BootState | None:
        raw = self.read(self._record_offset(index), RECORD_SIZE)
        body, (crc,) = raw[: _RECORD.size], struct.unpack_from("<I", raw, _RECORD.size)
        magic, seq, confirmed, pending, trial, counter = _RECORD.unpack(body)
        if magic != TRAILER_MAGIC or zlib.crc32(body) != crc:
            return None
        slot = lambda v: None if v == NONE else v  # noqa: E731
        return BootState(seq, slot(confirmed), slot(pending), slot(trial), counter)

    def boot_state(self) -> BootState:
        """The valid trailer record with the highest sequence number (a fresh device: the default state)."""
        records = [r for r in (self._read_record(0), self._read_record(1)) if r is not None]
        return max(records, key=lambda r: r.sequence) if records else BootState()

    def write_boot_state(self, state: BootState) -> None:
        """Write into the record slot the current state does not occupy (sequence parity picks it)."""
        field = lambda v: NONE if v is None else v  # noqa: E731
        body = _RECORD.pack(TRAILER_MAGIC, state.sequence, field(state.confirmed), field(state.pending), field(state.trial), state.counter)
        self.write(self._record_offset(state.sequence % 2), (body + struct.pack("<I", zlib.crc32(body))).ljust(RECORD_SIZE, b"\0"))
        self.sync()
