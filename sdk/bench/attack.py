"""Hostile bundles for the device's containment tests and ``metaedge bench soak --attack``: a signed bundle whose
``forward`` graph behaves until a trigger input arrives, as a compromised build machine could make one.

The trigger is a payload or pilot sample larger than ``TRIGGER`` in magnitude (ordinary frames and the bundle's own
self-test never come near it). ``hang`` then runs an ONNX ``Loop`` of 10^12 iterations; ``memory`` allocates
``MEMORY_BYTES`` with ``ConstantOfShape``. Either result is multiplied by zero and added to the log-probabilities, so
the graph's outputs are unchanged when the trigger is off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from metaedge.deploy.bundle import Bundle, read_bundle, write_bundle
from metaedge.deploy.manifest import FORWARD

TRIGGER = 1000.0
MEMORY_BYTES = 1_200_000_000
KINDS = ("hang", "memory")


def _payload(helper, TensorProto, kind: str, total: str) -> tuple[list, list]:
    """Nodes (and their constants) that turn the int64 scalar ``attack_on`` (0 or 1) into a float scalar ``total`` —
    expensive when it is 1."""
    if kind == "hang":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
            "spin",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, []),
            ],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [])],
            [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
        )
        nodes = [
            helper.make_node("Mul", ["attack_on", "attack_trips"], ["attack_count"]),
            helper.make_node("Loop", ["attack_count", "attack_true", "attack_zero"], [total], body=body),
        ]
        constants = [
            helper.make_tensor("attack_trips", TensorProto.INT64, [], [10**12]),
            helper.make_tensor("attack_true", TensorProto.BOOL, [], [True]),
        ]
        return nodes, constants
    nodes = [
        helper.make_node("Mul", ["attack_on", "attack_elements"], ["attack_size"]),
        helper.make_node("Unsqueeze", ["attack_size", "attack_axis"], ["attack_shape"]),
        helper.make_node("ConstantOfShape", ["attack_shape"], ["attack_block"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("ReduceSum", ["attack_block"], [total], keepdims=0),
    ]
    constants = [
        helper.make_tensor("attack_elements", TensorProto.INT64, [], [MEMORY_BYTES // 4]),
        helper.make_tensor("attack_axis", TensorProto.INT64, [1], [0]),
    ]
    return nodes, constants


def hostile_forward(graph_bytes: bytes, kind: str) -> bytes:
    """``forward`` with a trigger (module docstring) spliced in front of its output."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(graph_bytes)
    graph = model.graph
    output = graph.output[0].name
    samples = next(i.name for i in graph.input if i.name == "samples")
    for node in graph.node:  # the original result becomes internal
        node.output[:] = [f"{output}_inner" if name == output else name for name in node.output]
    payload, constants = _payload(helper, TensorProto, kind, "attack_total")
    graph.initializer.extend(
        [
            helper.make_tensor("attack_limit", TensorProto.FLOAT, [], [TRIGGER]),
            helper.make_tensor("attack_zero", TensorProto.FLOAT, [], [0.0]),
            *constants,
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Abs", [samples], ["attack_abs"]),
            helper.make_node("ReduceMax", ["attack_abs"], ["attack_peak"], keepdims=0),
            helper.make_node("Greater", ["attack_peak", "attack_limit"], ["attack_fire"]),
            helper.make_node("Cast", ["attack_fire"], ["attack_on"], to=TensorProto.INT64),
            *payload,
            helper.make_node("Mul", ["attack_total", "attack_zero"], ["attack_nothing"]),
            helper.make_node("Add", [f"{output}_inner", "attack_nothing"], [output]),
        ]
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def hostile_bundle(bundle: Path, out: Path, kind: str, key, security_counter: int | None = None) -> Bundle:
    """A copy of the ONNX ``bundle`` whose forward graph carries the ``kind`` trigger, signed with ``key``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    return with_forward(bundle, out, lambda graph: hostile_forward(graph, kind), key, security_counter)


def with_forward(bundle: Path, out: Path, change: Callable[[bytes], bytes], key, security_counter: int | None = None) -> Bundle:
    """A copy of the ONNX ``bundle`` with ``change`` applied to its forward graph, its manifest's hashes updated and
    signed with ``key`` — what a compromised build machine can produce."""
    source = read_bundle(bundle)
    manifest = {k: v for k, v in json.loads(source.manifest_raw).items() if k not in ("format", "version", "artifacts")}
    if security_counter is not None:
        manifest["security_counter"] = security_counter
    artifacts = {role: (entry.path, source.artifacts[role]) for role, entry in source.manifest.artifacts.items()}
    name, data = artifacts[FORWARD]
    artifacts[FORWARD] = (name, change(data))
    return write_bundle(out, manifest, artifacts, key=key)
