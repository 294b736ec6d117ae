"""Safetensors files with numpy alone: plain data only, no code runs on load, no torch, strict validation on read.

Layout (https://github.com/huggingface/safetensors, format as of 0.4): an 8-byte
little-endian unsigned header length N, N bytes of UTF-8 JSON, then the data buffer. The
JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
relative to the buffer) and may hold "__metadata__": {str: str}. The reader rejects
anything malformed with ``TensorFileError`` so that a device can read untrusted files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from metaedge.deploy.jsonobj import json_object

MAX_HEADER = 100 * 1024 * 1024
MAX_ELEMENTS = 1 << 31  # of one tensor, counting only its non-zero dimensions
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class TensorFileError(ValueError):
    """A tensor file that is not valid safetensors; the message says what and where."""


def dumps(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise tensors (in the given order) and string metadata to safetensors bytes."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype not in _NAMES:
            raise TypeError(f"tensor '{name}': dtype {array.dtype} has no safetensors equivalent")
        data = array.astype(dtype, copy=False).tobytes()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def loads(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse safetensors bytes into (tensors, metadata), validating every field."""
    if len(blob) < 8:
        raise TensorFileError(f"file of {len(blob)} bytes is too short for a safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if n > MAX_HEADER or 8 + n > len(blob):
        raise TensorFileError(f"header length {n} exceeds the file ({len(blob)} bytes) or the {MAX_HEADER}-byte limit")
    header = json_object(blob[8 : 8 + n], TensorFileError, "header")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TensorFileError("__metadata__ must map strings to strings")
    buffer = memoryview(blob)[8 + n :]
    tensors, spans = {}, []
    for name, info in header.items():
        tensors[name] = _tensor(name, info, buffer)
        spans.append(tuple(info["data_offsets"]))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise TensorFileError(f"tensor data is not contiguous: a gap or overlap at byte {position} of the buffer")
        position = end
    if position != len(buffer):
        raise TensorFileError(f"{len(buffer) - position} bytes after the last tensor")
    return tensors, metadata


def _tensor(name: str, info, buffer: memoryview) -> np.ndarray:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise TensorFileError(f"tensor '{name}': entry must have exactly dtype, shape and data_offsets")
    dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise TensorFileError(f"tensor '{name}': unsupported dtype {info['dtype']!r}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise TensorFileError(f"tensor '{name}': shape must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise TensorFileError(f"tensor '{name}': data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end <= len(buffer):
        raise TensorFileError(f"tensor '{name}': data_offsets {offsets} fall outside the {len(buffer)}-byte buffer")
    if math.prod(s for s in shape if s) > MAX_ELEMENTS:  # even an empty tensor must have a shape numpy can hold
        raise TensorFileError(f"tensor '{name}': shape {shape} has more than {MAX_ELEMENTS} elements")
    count = math.prod(shape)
    if count * dtype.itemsize != end - begin:
        raise TensorFileError(f"tensor '{name}': shape {shape} of {info['dtype']} needs {count * dtype.itemsize} bytes, offsets give {end - begin}")
    return np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape).copy()


def save(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write atomically: a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(dumps(tensors, metadata))
    os.replace(tmp, path)


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    return loads(Path(path).read_bytes())
