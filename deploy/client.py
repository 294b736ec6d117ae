"""The host side of the device protocol: one connection, one request at a time."""

from __future__ import annotations

import hashlib
import itertools
import socket
from typing import Callable
from urllib.parse import urlparse

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from metaedge.deploy import wire
from metaedge.deploy.auth import CHALLENGE, sign_request

CHUNK = 32 << 10
PROTOCOL_MEMBERS = ("seq", "ok", "blobs", "next_nonce")  # members of every answer, not of what was asked


def answer(header: dict) -> dict:
    """A response header less the protocol's own members: what was asked for."""
    return {k: v for k, v in header.items() if k not in PROTOCOL_MEMBERS}


class DeviceRequestError(RuntimeError):
    """The device refused a request; the message is the device's reason."""


def parse_device_url(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme != "tcp" or not parsed.hostname or not parsed.port:
        raise ValueError(f"device address '{url}' is not of the form tcp://HOST:PORT, e.g. tcp://127.0.0.1:7410")
    return parsed.hostname, parsed.port


class DeviceClient:
    """``operator_key``: an operator's Ed25519 private key; with it every request is signed (docs/device-protocol.md
    §3.4), as a device with operator keys requires for the operations that change it."""

    def __init__(self, url: str | None, timeout: float = 30.0, operator_key: Ed25519PrivateKey | None = None, stream=None, sequence=None) -> None:
        """``url``: tcp://HOST:PORT; or None with ``stream``, another carrier of the protocol's messages (``write``
        and ``flush`` send one, ``read(n)`` receives) and ``sequence``, the carrier's own counter of request numbers
        (so that no two clients on it ever number two requests alike)."""
        self.operator_key, self.nonce = operator_key, None
        self.seq = sequence or itertools.count(1)
        self.sock, self.stream = None, stream
        if stream is not None:
            return
        if url is None:
            raise ValueError("a DeviceClient needs a device address (tcp://HOST:PORT) or a stream")
        host, port = parse_device_url(url)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise ConnectionError(f"cannot reach the device at {url}: {e.strerror or e}; is 'metaedge device serve' running?") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rwb")

    def close(self) -> None:
        self.stream.close()
        if self.sock is not None:
            self.sock.close()

    def __enter__(self) -> "DeviceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, op: str, arrays: dict | None = None, **args) -> tuple[dict, dict]:
        """Send one request and return (header, arrays) of the response; refusals raise DeviceRequestError."""
        request = {"op": op, **args}
        if self.operator_key is not None and op != CHALLENGE:
            if self.nonce is None:
                self.nonce = bytes.fromhex(self._exchange({"op": CHALLENGE}, None)[0]["nonce"])
            request["auth"] = sign_request(self.operator_key, self.nonce, request, arrays)
            self.nonce = None
        header, out = self._exchange(request, arrays)
        if isinstance(header.get("next_nonce"), str):
            self.nonce = bytes.fromhex(header["next_nonce"])
        return header, out

    def _exchange(self, request: dict, arrays: dict | None) -> tuple[dict, dict]:
        self.stream.write(wire.encode({**request, "seq": next(self.seq)}, arrays))
        self.stream.flush()
        try:
            header, out = wire.read_message(self.stream)
        except wire.WireError as e:
            raise ConnectionError(f"the device's response could not be read: {e}") from None
        except OSError as e:
            raise ConnectionError(f"the connection to the device failed: {e}") from None
        if not header.get("ok"):
            raise DeviceRequestError(header.get("error", "the device refused the request without a reason"))
        return header, out

    def ask(self, op: str, **args) -> dict:
        """The answer to one request without arrays, less the protocol's own members."""
        return answer(self.call(op, **args)[0])

    def info(self) -> dict:
        """Target, profile, the running image and its task (device-protocol.md §3.1)."""
        return self.ask("info")

    def images(self) -> dict:
        """The two slots and the security counter."""
        return self.ask("image.list")

    def stats(self) -> dict:
        """Frames served, latency percentiles, boot events."""
        return self.ask("stats")

    def reset(self) -> dict:
        """Reboot: trial-boot a tested image, or revert an unconfirmed one."""
        return self.ask("reset")

    def confirm(self) -> dict:
        """Make the image on trial permanent."""
        return self.ask("image.confirm")

    def frame(self, pilots: np.ndarray, payload: np.ndarray, labels: np.ndarray | None = None) -> tuple[dict, dict]:
        """One frame: adapt on the pilots (with their labels, for a classifier), decide the payload. Returns the
        telemetry and the outputs (``decisions`` and ``confidence``, or a predictor's ``outputs``)."""
        arrays = {"pilots": np.asarray(pilots, np.float32), "payload": np.asarray(payload, np.float32)}
        if labels is not None:
            arrays["labels"] = np.asarray(labels, np.int32)
        header, out = self.call("frame", arrays)
        return answer(header), out

    def deploy(self, image: bytes, confirm: bool = False, progress: Callable[[int], None] | None = None) -> dict:
        """Upload a packed bundle into the inactive slot, mark it for test, reset into its trial boot (which runs its
        self-test) and, with ``confirm``, make it permanent. A failed trial boot (the device reverts) raises."""
        uploaded = self.upload(image, progress=progress)
        self.call("image.test", sha256=uploaded["sha256"])
        booted = self.reset()
        if booted["mode"] != "trial":
            raise DeviceRequestError(f"the trial boot failed and the device reverted ({'; '.join(booted.get('events', []))})")
        if confirm:
            self.confirm()
        return {"sha256": uploaded["sha256"], "slot": booted["slot"], "confirmed": confirm}

    def upload(self, image: bytes, progress: Callable[[int], None] | None = None, chunk: int = CHUNK) -> dict:
        """Upload a packed bundle in chunks; returns the device's verification result."""
        digest = hashlib.sha256(image).hexdigest()
        header: dict = {}
        for offset in range(0, len(image), chunk):
            piece = image[offset : offset + chunk]
            header, _ = self.call("image.upload", {"chunk": piece}, offset=offset, length=len(image), sha256=digest)
            if progress:
                progress(len(piece))
        return header
