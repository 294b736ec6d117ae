"""What an ONNX graph may contain on a device, checked at upload, before anything is committed (bundle-format.md §7.7).

ONNX Runtime resolves a tensor's external data against the process's working directory, so a
signed graph could read any file the device can; custom operator domains and model-local
functions run code the spec does not define. The checks read the protobuf wire format
directly (numpy and the standard library only; the device has no ``onnx`` package) and walk
every subgraph (``Loop`` and ``If`` bodies):

- no model-local functions and no training information;
- only the default operator domain (``""`` or ``ai.onnx``), at the bundle's opset;
- no tensor with external data;
- tensor dimensions non-negative, each tensor at most ``MAX_ELEMENTS`` elements;
- at most ``MAX_NODES`` nodes, ``MAX_INITIALIZERS`` initializers, ``MAX_NESTING`` levels of subgraphs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_NODES = 20_000
MAX_INITIALIZERS = 10_000
MAX_NESTING = 8
MAX_ELEMENTS = 1 << 28
DEFAULT_DOMAINS = ("", "ai.onnx")

# field numbers of onnx.proto (ONNX IR version 9)
MODEL_OPSET, MODEL_GRAPH, MODEL_TRAINING, MODEL_FUNCTIONS = 8, 7, 20, 25
OPSET_DOMAIN, OPSET_VERSION = 1, 2
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE = 1, 5, 15
NODE_ATTRIBUTE, NODE_DOMAIN, NODE_OP = 5, 7, 4
ATTR_TENSOR, ATTR_GRAPH, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSE, ATTR_SPARSES = 5, 6, 10, 11, 22, 23
TENSOR_DIMS, TENSOR_EXTERNAL, TENSOR_LOCATION = 1, 13, 14
SPARSE_VALUES, SPARSE_INDICES = 1, 2


class PolicyError(ValueError):
    """The graph breaks a rule; the message names it."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise PolicyError("malformed protobuf: a varint runs past the end")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message: integers for varints and fixed sizes, bytes for the rest."""
    out, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if at + size > len(data):
                raise PolicyError("malformed protobuf: a fixed-size field runs past the end")
            value, at = int.from_bytes(data[at : at + size], "little"), at + size
        elif wire == 2:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise PolicyError("malformed protobuf: a field runs past the end")
            value, at = data[at : at + size], at + size
        else:
            raise PolicyError(f"malformed protobuf: wire type {wire}")
        out.append((number, wire, value))
    return out


def _submessages(message: list, number: int) -> list[bytes]:
    return [value for field, wire, value in message if field == number and wire == 2]


@dataclass
class _Count:
    nodes: int = 0
    initializers: int = 0


def _packed_or_single(message: list, number: int) -> list[int]:
    values = []
    for field, wire, value in message:
        if field != number:
            continue
        if wire == 2:  # packed repeated varints
            at = 0
            while at < len(value):
                item, at = _varint(value, at)
                values.append(item)
        else:
            values.append(value)
    return values


def _tensor(data: bytes, where: str) -> None:
    message = fields(data)
    if _submessages(message, TENSOR_EXTERNAL) or any(v == 1 for f, w, v in message if f == TENSOR_LOCATION and w == 0):
        raise PolicyError(f"{where}: a tensor with external data (the device reads no files named by a graph)")
    dims = [d - (1 << 64) if d >= 1 << 63 else d for d in _packed_or_single(message, TENSOR_DIMS)]
    if any(d < 0 for d in dims):
        raise PolicyError(f"{where}: a tensor with a negative dimension {dims}")
    if math.prod(dims) > MAX_ELEMENTS:
        raise PolicyError(f"{where}: a tensor of {math.prod(dims):,} elements (at most {MAX_ELEMENTS:,})")


def _sparse(data: bytes, where: str) -> None:
    message = fields(data)
    for part in _submessages(message, SPARSE_VALUES) + _submessages(message, SPARSE_INDICES):
        _tensor(part, where)


def _graph(data: bytes, where: str, depth: int, count: _Count) -> None:
    if depth > MAX_NESTING:
        raise PolicyError(f"{where}: subgraphs nested more than {MAX_NESTING} deep")
    message = fields(data)
    initializers = _submessages(message, GRAPH_INITIALIZER)
    count.initializers += len(initializers) + len(_submessages(message, GRAPH_SPARSE))
    if count.initializers > MAX_INITIALIZERS:
        raise PolicyError(f"{where}: more than {MAX_INITIALIZERS:,} initializers")
    for tensor in initializers:
        _tensor(tensor, where)
    for sparse in _submessages(message, GRAPH_SPARSE):
        _sparse(sparse, where)
    for node in _submessages(message, GRAPH_NODE):
        count.nodes += 1
        if count.nodes > MAX_NODES:
            raise PolicyError(f"{where}: more than {MAX_NODES:,} nodes")
        _node(fields(node), where, depth, count)


def _node(node: list, where: str, depth: int, count: _Count) -> None:
    op = b"".join(_submessages(node, NODE_OP)).decode("utf-8", "replace")
    domain = b"".join(_submessages(node, NODE_DOMAIN)).decode("utf-8", "replace")
    if domain not in DEFAULT_DOMAINS:
        raise PolicyError(f"{where}: node {op or '?'} uses operator domain '{domain}' (only the default domain is allowed)")
    for attribute in _submessages(node, NODE_ATTRIBUTE):
        attr = fields(attribute)
        for tensor in _submessages(attr, ATTR_TENSOR) + _submessages(attr, ATTR_TENSORS):
            _tensor(tensor, f"{where}, node {op}")
        for sparse in _submessages(attr, ATTR_SPARSE) + _submessages(attr, ATTR_SPARSES):
            _sparse(sparse, f"{where}, node {op}")
        for graph in _submessages(attr, ATTR_GRAPH) + _submessages(attr, ATTR_GRAPHS):
            _graph(graph, f"{where}, node {op}", depth + 1, count)


def check_model(data: bytes, opset: int | None, where: str) -> None:
    """Refuse a serialised ONNX model that breaks a rule of the module docstring; ``where`` names it in the message."""
    model = fields(data)
    if _submessages(model, MODEL_FUNCTIONS):
        raise PolicyError(f"{where}: model-local functions are not allowed")
    if _submessages(model, MODEL_TRAINING):
        raise PolicyError(f"{where}: training information is not allowed")
    for entry in _submessages(model, MODEL_OPSET):
        opset_id = fields(entry)
        domain = b"".join(_submessages(opset_id, OPSET_DOMAIN)).decode("utf-8", "replace")
        version = next((v for f, w, v in opset_id if f == OPSET_VERSION and w == 0), None)
        if domain not in DEFAULT_DOMAINS:
            raise PolicyError(f"{where}: imports operator domain '{domain}' (only the default domain is allowed)")
        if opset is not None and version != opset:
            raise PolicyError(f"{where}: imports opset {version}, the manifest declares graphs.opset {opset}")
    graphs = _submessages(model, MODEL_GRAPH)
    if len(graphs) != 1:
        raise PolicyError(f"{where}: a model has exactly one graph, this one has {len(graphs)}")
    _graph(graphs[0], where, 0, _Count())
