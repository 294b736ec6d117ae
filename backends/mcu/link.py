"""The host's side of the firmware's serial protocol (docs/device-protocol.md §6): framed requests over the UART
socket, one response each, parsed into plain values.

Framing as on the device protocol's byte stream, ``u32 length | payload | u32 CRC-32``; payloads are binary
(``u8 op | u8 flags | u16 0 | u32 seq | body``), sized for a microcontroller's RAM.
"""

from __future__ import annotations

import socket
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from metaedge.deploy.wire import frame

OP_INFO, OP_LOAD, OP_ADAPT, OP_DECIDE, OP_SELFTEST = 1, 2, 3, 4, 5
DECIDE_LOG_PROBS, DECIDE_AT_THETA, DECIDE_Q15 = 1, 2, 4
STATES = {0: "empty", 1: "ready", 2: "failed", 3: "loading"}
STATUS_RESEND = 2  # the request did not arrive whole
RESENDS = 3
SYNC_S, SYNC_TRIES = 0.25, 8  # resynchronisation: the wait for each info's response, and how many are asked
REPLY_TIMEOUT_S = 120.0  # a response's deadline: above the self-test of the largest images (1,024 steps on 256 pilots)


class LinkError(RuntimeError):
    """The serial link broke: the emulator ended, or a response was late or malformed."""


class FirmwareError(RuntimeError):
    """The firmware refused a request; the message is its sentence."""


@dataclass(frozen=True)
class Info:
    protocol: int
    sysclk_hz: int
    max_payload: int
    image_capacity: int
    state: str
    image_bytes: int
    static_ram: int  # .data + .bss
    work_capacity: int
    work_used: int
    stack_size: int
    stack_high_water: int
    firmware_flash: int
    selftest_error: float
    image_sha256: str


@dataclass(frozen=True)
class SelftestReply:
    max_error: float
    atol: float
    work_used: int
    ticks: int


@dataclass(frozen=True)
class AdaptReply:
    loss_before: float
    loss_after: float
    steps: int
    ticks: int


@dataclass(frozen=True)
class Decisions:
    decisions: np.ndarray  # [N] int64
    confidence: np.ndarray  # [N] float32
    log_probs: np.ndarray | None  # [N, M] float32 where asked
    ticks: int


def request_payload(op: int, seq: int, body: bytes = b"", flags: int = 0) -> bytes:
    """A request's payload: ``u8 op | u8 flags | u16 0 | u32 seq | body``."""
    return struct.pack("<BBHI", op, flags, 0, seq) + body


class Link:
    def __init__(self, connection: socket.socket, timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self.connection, self.seq = connection, 0
        self.connection.settimeout(timeout_s)
        self.max_payload = 0  # known after info()

    # -- bytes ------------------------------------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        try:
            self.connection.sendall(data)
        except OSError as e:
            raise LinkError(f"the emulated microcontroller's UART closed: {e}") from None

    def _read(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.connection.recv(n - len(data))
            except OSError as e:
                raise LinkError(f"no response from the emulated microcontroller ({e})") from None
            if not chunk:
                raise LinkError("the emulated microcontroller closed its UART (the firmware stopped)")
            data += chunk
        return bytes(data)

    def read_reply(self) -> tuple[int, int, int, bytes]:
        """One response: (op, status, seq, body); a broken frame is a ``LinkError``."""
        (length,) = struct.unpack("<I", self._read(4))
        if not 8 <= length <= 1 << 24:
            raise LinkError(f"response length {length} is impossible")
        payload = self._read(length)
        (crc,) = struct.unpack("<I", self._read(4))
        if zlib.crc32(payload) != crc:
            raise LinkError("response CRC mismatch")
        op, status, _, seq = struct.unpack_from("<BBHI", payload)
        return op, status, seq, payload[8:]

    def request(self, op: int, body: bytes = b"", flags: int = 0) -> bytes:
        """Send one request and return the body of its response; ``FirmwareError`` when refused. A request that did
        not arrive whole (the firmware's byte timeout ran out while the host was descheduled, or a CRC failed) is sent
        again: every request is idempotent (an adaptation starts from θ, a chunk goes to its offset)."""
        for _ in range(RESENDS):
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            self.send_raw(frame(request_payload(op, self.seq, body, flags)))
            got_op, status, seq, reply = self.read_reply()
            if status != STATUS_RESEND and got_op != 0:  # op 0: a framing error, whose message may have been ours
                break
            self.resync()  # the rest of the broken message may still be on its way: let the firmware answer it first
        if (got_op, seq) != (op, self.seq):
            raise LinkError(f"response to op {got_op} seq {seq} answers op {op} seq {self.seq}: {reply[:80].decode(errors='replace')}")
        if status:
            raise FirmwareError(reply.decode(errors="replace"))
        return reply

    def resync(self) -> None:
        """Drop every response still due (to a message that arrived broken, or to input that held several messages)
        until the firmware answers a fresh ``info``; an ``info`` swallowed by an unfinished message is asked again."""
        timeout = self.connection.gettimeout()
        self.connection.settimeout(SYNC_S)
        try:
            for _ in range(SYNC_TRIES):
                self.seq = (self.seq + 1) & 0xFFFFFFFF
                self.send_raw(frame(request_payload(OP_INFO, self.seq)))
                try:
                    while (answer := self.read_reply()[:3]) != (OP_INFO, 0, self.seq):
                        if answer[0] == 0:  # a framing error: perhaps of a message that swallowed this info, so ask again
                            break
                    else:
                        return
                except LinkError:
                    continue
            raise LinkError(f"the firmware did not answer {SYNC_TRIES} info requests after a broken message")
        finally:
            self.connection.settimeout(timeout)

    # -- operations -------------------------------------------------------------------------------------------------
    def info(self) -> Info:
        values = struct.unpack("<12If32s", self.request(OP_INFO))
        info = Info(*values[:4], STATES.get(values[4], str(values[4])), *values[5:13], values[13].hex())
        self.max_payload = info.max_payload
        return info

    def load(self, image: bytes) -> SelftestReply:
        """Write ``image`` in chunks; the last one's response carries the self-test the firmware ran on it."""
        chunk = (self.max_payload or self.info().max_payload) - 16
        offset, reply = 0, b""
        while offset < len(image):
            part = image[offset : offset + chunk]
            reply = self.request(OP_LOAD, struct.pack("<II", offset, len(image)) + part)
            offset += len(part)
        return self._selftest(reply)

    def selftest(self) -> SelftestReply:
        return self._selftest(self.request(OP_SELFTEST))

    @staticmethod
    def _selftest(reply: bytes) -> SelftestReply:
        complete, _, error, atol, work, ticks = struct.unpack("<IIffIQ", reply)
        if not complete:
            raise LinkError("the image's last chunk was not acknowledged as complete")
        return SelftestReply(error, atol, work, ticks)

    def adapt(self, pilots: np.ndarray, labels: np.ndarray) -> AdaptReply:
        labels16 = np.ascontiguousarray(labels, "<u2").tobytes()
        body = struct.pack("<HH", len(pilots), 0) + np.ascontiguousarray(pilots, "<f4").tobytes() + labels16 + b"\0" * (-len(labels16) % 4)
        largest = (self.max_payload or self.info().max_payload) - 8
        if len(body) > largest:
            per_pilot = 4 * pilots.shape[1] + 2
            raise FirmwareError(f"{len(pilots)} pilots exceed the {(largest - 4) // per_pilot} that fit in one message to the firmware")
        before, after, steps, _, ticks = struct.unpack("<ffIIQ", self.request(OP_ADAPT, body))
        return AdaptReply(before, after, steps, ticks)

    def decide(self, samples: np.ndarray, classes: int, log_probs: bool = False, at_theta: bool = False, q15: bool = False) -> Decisions:
        """Decisions (and log-probabilities) for ``samples`` [N, F], in as many requests as the firmware's buffer needs;
        ``q15``: by the firmware's fixed-point forward."""
        samples = np.ascontiguousarray(samples, "<f4")
        per = max(1, ((self.max_payload or self.info().max_payload) - 16) // (4 * samples.shape[1]))
        flags = (DECIDE_LOG_PROBS if log_probs else 0) | (DECIDE_AT_THETA if at_theta else 0) | (DECIDE_Q15 if q15 else 0)
        record = np.dtype([("decision", "<u4"), ("confidence", "<f4"), *([("log_probs", "<f4", (classes,))] if log_probs else [])])
        parts, ticks = [], 0
        for start in range(0, len(samples), per):
            chunk = samples[start : start + per]
            reply = self.request(OP_DECIDE, struct.pack("<HH", len(chunk), 0) + chunk.tobytes(), flags)
            if len(reply) != len(chunk) * record.itemsize + 8:
                raise LinkError(f"decide response of {len(reply)} bytes for {len(chunk)} samples")
            parts.append(np.frombuffer(reply[:-8], record))
            ticks += struct.unpack("<Q", reply[-8:])[0]
        rows = np.concatenate(parts)
        return Decisions(rows["decision"].astype(np.int64), rows["confidence"].copy(), rows["log_probs"].copy() if log_probs else None, ticks)
