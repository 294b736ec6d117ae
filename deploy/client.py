"""The host side of the device protocol: one connection, one request at a time."""

from __future__ import annotations

import hashlib
import itertools
import socket
from typing import Callable
from urllib.parse import urlparse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from metaedge.deploy import wire
from metaedge.deploy.auth import CHALLENGE, sign_request

CHUNK = 32 << 10


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

    def __init__(self, url: str, timeout: float = 30.0, operator_key: Ed25519PrivateKey | None = None) -> None:
        self.operator_key, self.nonce = operator_key, None
        host, port = parse_device_url(url)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise ConnectionError(f"cannot reach the device at {url}: {e.strerror or e}; is 'metaedge device serve' running?") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rwb")
        self.seq = itertools.count(1)

    def close(self) -> None:
        self.stream.close()
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
