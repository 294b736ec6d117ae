"""Fleet telemetry: what a device reports about its frames, authenticated with its own key (docs/device-protocol.md §7).

A message is ``MAC (32 bytes) | body``: the body is a UTF-8 JSON object ``{"device", "seq", "frame", "version",
"receiver", "check", "reference_errors"?, "residuals"?, "support"?, "pilots"?, "decided"?}`` and the MAC is HMAC-SHA256 under
the device's 32-byte telemetry key of ``DOMAIN + body``. The host accepts a message only on the device's own topic, under that device's key, with a
sequence number above the last one it accepted from it, and within the bounds below: a device cannot speak in
another's name, replay an old report, or make the host hold more than ``MAX_BYTES`` per message. numpy-free.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass

from metaedge.deploy.jsonobj import json_object

DOMAIN = b"metaedge-telemetry-v1\n"
MAC_BYTES = 32
KEY_BYTES = 32
MAX_BYTES = 8192  # a whole message: 64 pilots and 64 decided symbols with their floats fit with room to spare
MAX_SAMPLES = 64  # pilots, or decided payload symbols, per message
MAX_CHECK = 1 << 16  # check symbols a frame can report
MAX_AMPLITUDE = 1e3  # |I|, |Q| of a reported sample: far beyond any received constellation, far below float32's range
RECEIVERS = ("learned", "classical")
HEX64 = re.compile(r"[0-9a-f]{64}")
MEMBERS = {"device", "seq", "frame", "version", "receiver", "check", "reference_errors", "residuals", "support", "pilots", "decided"}


class TelemetryError(ValueError):
    """A message the host drops; ``reason`` is the counter it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Samples:
    """Received samples [n, 2] (I, Q) with their classes: the pilots' known symbols, or decisions of high confidence."""

    x: list[list[float]]
    y: list[int]


@dataclass(frozen=True)
class Report:
    """One frame's telemetry from one device, as accepted by the host."""

    device: str
    seq: int
    frame: int
    version: dict  # the running image: security_counter, release, sha256 (of the image)
    receiver: str  # which receiver decided the payload
    check: tuple[int, int]  # (errors, symbols) on the frame's known check symbols
    reference_errors: int | None = None  # the bundle's classical receiver's errors on the same check symbols
    residuals: tuple[float, float] | None = None  # the frame residuals (learned, classical) of the selection
    support: int = 0  # how many of ``pilots`` are the frame's pilots; the rest are its check symbols
    pilots: Samples | None = None
    decided: Samples | None = None  # payload symbols decided with high confidence, marked as such


def encode(key: bytes, body: dict) -> bytes:
    """The message for ``body`` (a report's members), signed with the device's ``key``."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
    return hmac.new(key, DOMAIN + raw, hashlib.sha256).digest() + raw


def decode(device: str, message: bytes, keys: dict[str, bytes], last_seq: dict[str, int], classes: int) -> Report:
    """The report in ``message``, which arrived on ``device``'s topic; TelemetryError when the host must drop it.
    Updates ``last_seq`` on success."""
    if len(message) > MAX_BYTES:
        raise TelemetryError("oversized", f"{len(message)} bytes, at most {MAX_BYTES}")
    key = keys.get(device)
    if key is None:
        raise TelemetryError("unknown-device", f"no telemetry key for device {device[:40]!r}")
    mac, raw = message[:MAC_BYTES], message[MAC_BYTES:]
    if len(mac) < MAC_BYTES or not hmac.compare_digest(mac, hmac.new(key, DOMAIN + raw, hashlib.sha256).digest()):
        raise TelemetryError("bad-mac", f"the MAC does not verify under {device}'s key")
    body = json_object(raw, lambda m: TelemetryError("malformed", m), "the report")
    if body.get("device") != device:
        raise TelemetryError("wrong-device", f"a report naming {str(body.get('device'))[:40]!r} on {device}'s topic")
    seq = body.get("seq")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise TelemetryError("malformed", "'seq' must be an integer in [0, 2^63)")
    if seq <= last_seq.get(device, -1):
        raise TelemetryError("replayed", f"sequence number {seq} is not above {last_seq[device]}, the last accepted")
    report = _report(body, classes)
    last_seq[device] = seq
    return report


def _report(body: dict, classes: int) -> Report:
    def fail(detail: str):
        raise TelemetryError("malformed", detail)

    unknown = set(body) - MEMBERS
    if unknown:
        fail(f"unknown members {sorted(unknown)[:4]}")
    if type(body.get("frame")) is not int or body["frame"] < 0:
        fail("'frame' must be a non-negative integer")
    version = body.get("version")
    if not isinstance(version, dict) or set(version) != {"sha256", "security_counter", "release"}:
        fail("'version' must hold exactly sha256, security_counter and release")
    if not all(type(version[k]) is int and version[k] >= 0 for k in ("security_counter", "release")):
        fail("'version.security_counter' and 'version.release' must be non-negative integers")
    if not isinstance(version["sha256"], str) or not HEX64.fullmatch(version["sha256"]):
        fail("'version.sha256' must be the image's SHA-256: 64 lowercase hex digits")
    if body.get("receiver") not in RECEIVERS:
        fail(f"'receiver' must be one of {', '.join(RECEIVERS)}")
    check = body.get("check")
    counts = isinstance(check, list) and len(check) == 2 and all(type(c) is int for c in check)
    if not (counts and 0 <= check[0] <= check[1] and 1 <= check[1] <= MAX_CHECK):
        fail(f"'check' must be [errors, symbols] with 0 ≤ errors ≤ symbols and 1 ≤ symbols ≤ {MAX_CHECK}")
    reference = body.get("reference_errors")
    if reference is not None and not (type(reference) is int and 0 <= reference <= check[1]):
        fail("'reference_errors' must be an integer in [0, check symbols]")
    residuals = body.get("residuals")
    if residuals is not None and not (
        isinstance(residuals, list) and len(residuals) == 2 and all(type(r) in (int, float) and math.isfinite(r) and r >= 0 for r in residuals)
    ):
        fail("'residuals' must be [learned, classical], finite numbers of at least 0")
    samples = {name: _samples(body.get(name), name, classes, fail) for name in ("pilots", "decided")}
    support, pilots = body.get("support"), samples["pilots"]
    if (support is None) != (pilots is None) or (pilots is not None and not (type(support) is int and 1 <= support < len(pilots.y))):
        fail("'support' must come with 'pilots': how many of its samples are the frame's pilots, at least 1 and fewer than all")
    pair = None if residuals is None else (float(residuals[0]), float(residuals[1]))
    head = (body["device"], body["seq"], body["frame"], dict(version), body["receiver"], (check[0], check[1]), reference, pair, support or 0)
    return Report(*head, **samples)


def _samples(value: object, name: str, classes: int, fail) -> Samples | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"x", "y"} or not isinstance(value["x"], list) or not isinstance(value["y"], list):
        fail(f"'{name}' must be an object with lists x and y")
    x, y = value["x"], value["y"]
    if not 1 <= len(x) <= MAX_SAMPLES or len(x) != len(y):
        fail(f"'{name}' must hold 1 to {MAX_SAMPLES} samples, as many x as y")
    if not all(isinstance(p, list) and len(p) == 2 and all(type(v) in (int, float) and abs(v) <= MAX_AMPLITUDE for v in p) for p in x):
        fail(f"'{name}.x' must be pairs of numbers (I, Q) of magnitude at most {MAX_AMPLITUDE:g}")
    if not all(type(c) is int and 0 <= c < classes for c in y):
        fail(f"'{name}.y' must be classes in [0, {classes})")
    return Samples([[float(a), float(b)] for a, b in x], list(y))
