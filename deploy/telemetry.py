"""Fleet telemetry: what a device reports about its frames, authenticated with its own key (docs/device-protocol.md §7).

A message is ``MAC (32 bytes) | body``: the body is a UTF-8 JSON object ``{"device", "seq", "frame", "version",
"receiver", "check", "reference_errors"?, "residuals"?, "pilots"?, "decided"?}`` and the MAC is HMAC-SHA256 under
the device's 32-byte telemetry key of ``DOMAIN + body``. The host accepts a message only on the device's own topic, under that device's key, with a
sequence number above the last one it accepted from it, and within the bounds below: a device cannot speak in
another's name, replay an old report, or make the host hold more than ``MAX_BYTES`` per message. numpy-free.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass

from metaedge.deploy.jsonobj import json_object

DOMAIN = b"metaedge-telemetry-v1\n"
MAC_BYTES = 32
KEY_BYTES = 32
MAX_BYTES = 8192  # a whole message: 64 pilots and 64 decided symbols with their floats fit with room to spare
MAX_SAMPLES = 64  # pilots, or decided payload symbols, per message
MAX_CHECK = 1 << 16  # check symbols a frame can report
RECEIVERS = ("learned", "classical")
MEMBERS = {"device", "seq", "frame", "version", "receiver", "check", "reference_errors", "residuals", "pilots", "decided"}


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
    pilots: Samples | None = None
    decided: Samples | None = None  # payload symbols decided with high confidence, marked as such

    @property
    def check_ser(self) -> float:
        return self.check[0] / self.check[1] if self.check[1] else math.nan


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
    if type(seq) is not int or seq <= last_seq.get(device, -1):
        raise TelemetryError("replayed", f"sequence number {seq!r} is not above {last_seq.get(device, -1)}, the last accepted")
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
    if not isinstance(version, dict) or not all(type(version.get(k)) is int and version[k] >= 0 for k in ("security_counter", "release")):
        fail("'version' must hold non-negative integers security_counter and release")
    if not isinstance(version.get("sha256"), str) or len(version["sha256"]) != 64:
        fail("'version.sha256' must be the image's SHA-256 in hex")
    if body.get("receiver") not in RECEIVERS:
        fail(f"'receiver' must be one of {', '.join(RECEIVERS)}")
    check = body.get("check")
    if not (isinstance(check, list) and len(check) == 2 and all(type(c) is int for c in check) and 0 <= check[0] <= check[1] <= MAX_CHECK):
        fail(f"'check' must be [errors, symbols] with 0 ≤ errors ≤ symbols ≤ {MAX_CHECK}")
    reference = body.get("reference_errors")
    if reference is not None and not (type(reference) is int and 0 <= reference <= check[1]):
        fail("'reference_errors' must be an integer in [0, check symbols]")
    residuals = body.get("residuals")
    if residuals is not None and not (
        isinstance(residuals, list) and len(residuals) == 2 and all(type(r) in (int, float) and math.isfinite(r) and r >= 0 for r in residuals)
    ):
        fail("'residuals' must be [learned, classical], finite numbers of at least 0")
    clean = {"sha256": version["sha256"], "security_counter": version["security_counter"], "release": version["release"]}
    samples = {name: _samples(body.get(name), name, classes, fail) for name in ("pilots", "decided")}
    pair = None if residuals is None else (float(residuals[0]), float(residuals[1]))
    return Report(body["device"], body["seq"], body["frame"], clean, body["receiver"], (check[0], check[1]), reference, pair, **samples)


def _samples(value: object, name: str, classes: int, fail) -> Samples | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"x", "y"} or not isinstance(value["x"], list) or not isinstance(value["y"], list):
        fail(f"'{name}' must be an object with lists x and y")
    x, y = value["x"], value["y"]
    if not 1 <= len(x) <= MAX_SAMPLES or len(x) != len(y):
        fail(f"'{name}' must hold 1 to {MAX_SAMPLES} samples, as many x as y")
    if not all(isinstance(p, list) and len(p) == 2 and all(type(v) in (int, float) and math.isfinite(v) for v in p) for p in x):
        fail(f"'{name}.x' must be pairs of finite numbers (I, Q)")
    if not all(type(c) is int and 0 <= c < classes for c in y):
        fail(f"'{name}.y' must be classes in [0, {classes})")
    return Samples([[float(a), float(b)] for a, b in x], list(y))
