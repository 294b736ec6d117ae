"""Message framing of the device protocol (docs/device-protocol.md §2), numpy only.

On the byte stream every message is ``u32 length | payload | u32 CRC-32(payload)`` (little
endian). The payload is ``u32 header length | header JSON | attachments``: the header is a
UTF-8 JSON object; arrays travel as raw little-endian attachments described, in order, by
``header["blobs"] = [{"name", "dtype", "shape"}]``. Decoding errors are ``WireError``s:
``fatal`` ones (a length beyond the limit, a closed stream) lose the framing, so the
connection must be dropped; the others (CRC, JSON, attachments) leave the stream in step.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
import zlib
from typing import BinaryIO, Callable, ContextManager

import numpy as np

from metaedge.deploy.jsonobj import json_object

MAX_MESSAGE = 8 << 20  # bytes of payload
MAX_HEADER = 64 << 10
MAX_DIMS = 8  # dimensions of an attachment
DTYPES = {"f4": np.dtype("<f4"), "i4": np.dtype("<i4"), "i2": np.dtype("<i2"), "u1": np.dtype("u1"), "bytes": np.dtype("u1")}


class WireError(ValueError):
    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def encode(header: dict, arrays: dict[str, np.ndarray | bytes] | None = None) -> bytes:
    """One framed message: ``header`` plus named arrays (or raw bytes) as attachments."""
    blobs, parts = [], []
    for name, value in (arrays or {}).items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            data, dtype, shape = bytes(value), "bytes", [len(value)]
        else:
            code = next((c for c, d in DTYPES.items() if c != "bytes" and d == np.dtype(value.dtype).newbyteorder("<")), None)
            if code is None:
                raise TypeError(f"array '{name}' of dtype {value.dtype} cannot travel; use float32, int32, int16 or uint8")
            data, dtype, shape = np.ascontiguousarray(value, DTYPES[code]).tobytes(), code, list(value.shape)
        blobs.append({"name": name, "dtype": dtype, "shape": shape})
        parts.append(data)
    head = json.dumps({**header, "blobs": blobs}, separators=(",", ":")).encode()
    payload = struct.pack("<I", len(head)) + head + b"".join(parts)
    if len(payload) > MAX_MESSAGE:
        raise WireError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return frame(payload)


def frame(payload: bytes) -> bytes:
    """``payload`` on the byte stream: ``u32 length | payload | u32 CRC-32(payload)`` (also the mcu serial profile's)."""
    return struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload))


def _read_exactly(stream: BinaryIO, n: int, inside: bool = True) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise WireError("connection closed inside a message" if data or inside else "connection closed", fatal=True)
        data += chunk
    return bytes(data)


def read_message(stream: BinaryIO, hold: Callable[[int], ContextManager] | None = None) -> tuple[dict, dict[str, np.ndarray | bytes]]:
    """Read one message from a byte stream; see the module docstring for the error contract.

    ``hold(length)``, when given, is entered once the length is known and left when the message has been read: a
    server reserves buffer space and starts the message's deadline there (it may raise a fatal ``WireError``)."""
    (length,) = struct.unpack("<I", _read_exactly(stream, 4, inside=False))
    if length > MAX_MESSAGE:
        raise WireError(f"message length {length} exceeds the {MAX_MESSAGE}-byte limit", fatal=True)
    with hold(length) if hold else contextlib.nullcontext():
        payload = _read_exactly(stream, length)
        (crc,) = struct.unpack("<I", _read_exactly(stream, 4))
    if zlib.crc32(payload) != crc:
        raise WireError("CRC mismatch: the message was corrupted in transit")
    return decode_payload(payload)


def decode_payload(payload: bytes) -> tuple[dict, dict[str, np.ndarray | bytes]]:
    if len(payload) < 4:
        raise WireError("payload shorter than its header length field")
    (n,) = struct.unpack_from("<I", payload)
    if n > MAX_HEADER or 4 + n > len(payload):
        raise WireError(f"header length {n} exceeds the payload or the {MAX_HEADER}-byte limit")
    header = json_object(payload[4 : 4 + n], WireError, "header")
    blobs = header.get("blobs", [])
    if not isinstance(blobs, list):
        raise WireError("header 'blobs' must be a list")
    arrays, offset = {}, 4 + n
    for blob in blobs:
        if not (
            isinstance(blob, dict)
            and isinstance(blob.get("name"), str)
            and blob.get("dtype") in DTYPES
            and isinstance(blob.get("shape"), list)
            and len(blob["shape"]) <= MAX_DIMS
            and all(type(s) is int and 0 <= s < 1 << 31 for s in blob["shape"])
        ):
            raise WireError(
                f"attachment descriptor {str(blob)[:80]} is invalid (needs name, dtype in {sorted(DTYPES)}, "
                f"shape of at most {MAX_DIMS} non-negative dimensions)"
            )
        if math.prod(s for s in blob["shape"] if s) > MAX_MESSAGE:  # even an empty array must have a shape numpy can hold
            raise WireError(f"attachment '{blob['name']}' has a shape of more than {MAX_MESSAGE} elements, more than a message can carry")
        dtype = DTYPES[blob["dtype"]]
        size = math.prod(blob["shape"]) * dtype.itemsize  # exact: a product of many dimensions cannot wrap
        if offset + size > len(payload):
            raise WireError(f"attachment '{blob['name']}' runs past the end of the message")
        data = payload[offset : offset + size]
        arrays[blob["name"]] = data if blob["dtype"] == "bytes" else np.frombuffer(data, dtype).reshape(blob["shape"])
        offset += size
    if offset != len(payload):
        raise WireError(f"{len(payload) - offset} bytes after the last attachment")
    return header, arrays
