"""The host side of the device protocol: one connection, one request at a time."""

from __future__ import annotations

import hashlib
import itertools
import socket
from typing import Callable
from urllib.parse import urlparse

from metaedge.deploy import wire

CHUNK = 32 << 10


class DeviceRequestError(RuntimeError):
    """The device refused a request; the message is the device's reason."""


def parse_device_url(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme != "tcp" or not parsed.hostname or not parsed.port:
        raise ValueError(f"device address '{url}' is not of the form tcp://HOST:PORT, e.g. tcp://127.0.0.1:7410")
    return parsed.hostname, parsed.port


class DeviceClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
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
        seq = next(self.seq)
        self.stream.write(wire.encode({"op": op, "seq": seq, **args}, arrays))
        self.stream.flush()
        try:
            header, out = wire.read_message(self.stream)
        except wire.WireError as e:
            raise ConnectionError(f"the device's response could not be read: {e}") from None
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
