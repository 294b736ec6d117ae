"""The ONNX content policy at upload: graphs that read files, run custom or model-local operators, or break the
size rules are refused before anything is committed; our own graphs pass. Real graphs built with the onnx package."""

import hashlib

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from metaedge.backends.onnx import policy
from metaedge.backends.onnx.policy import PolicyError, check_model
from metaedge.deploy.bundle import pack, read_bundle
from metaedge.deploy.signing import load_private
from metaedge.firmware_sim.device import Device, DeviceError
from metaedge.firmware_sim.profile import PROFILES
from metaedge.sdk.bench.attack import with_forward


def _model(change) -> bytes:
    """A one-node model (y = x + c) with ``change(model)`` applied."""
    c = helper.make_tensor("c", TensorProto.FLOAT, [2], [1.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [c],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    change(model)
    return model.SerializeToString()


def _external(model) -> None:
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="keys/metaedge.key")


def _custom_domain(model) -> None:
    model.graph.node[0].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _function(model) -> None:
    model.functions.append(
        helper.make_function("local", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 18)])
    )


def _negative_dims(model) -> None:
    model.graph.initializer[0].dims[:] = [-2]


def _nested_loop(model) -> None:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Mul", ["x_in", "c"], ["x_out"], domain="evil.ops")],
        "body",
        [helper.make_tensor_value_info(n, t, []) for n, t in (("i", TensorProto.INT64), ("cond", TensorProto.BOOL), ("x_in", TensorProto.FLOAT))],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [])],
    )
    model.graph.node.append(helper.make_node("Loop", ["", "", "y"], ["z"], body=body))


@pytest.mark.parametrize(
    "change, rule",
    [
        (_external, "external data"),
        (_custom_domain, "operator domain 'com.microsoft'"),
        (_function, "model-local functions"),
        (_negative_dims, "negative dimension"),
        (_nested_loop, "node Loop.*operator domain 'evil.ops'"),
        (lambda model: setattr(model.opset_import[0], "version", 17), "imports opset 17, the manifest declares graphs.opset 18"),
        (lambda model: model.training_info.add(), "training information"),
    ],
)
def test_each_rule_refuses_a_graph_that_breaks_it(change, rule):
    check_model(_model(lambda model: None), 18, "graph 'forward'")  # the unchanged model passes
    with pytest.raises(PolicyError, match=rf"graph 'forward'.*{rule}"):
        check_model(_model(change), 18, "graph 'forward'")


def test_size_limits(monkeypatch):
    monkeypatch.setattr(policy, "MAX_NODES", 1)
    with pytest.raises(PolicyError, match="more than 1 nodes"):
        check_model(_model(lambda m: m.graph.node.append(helper.make_node("Identity", ["y"], ["z"]))), 18, "g")
    monkeypatch.setattr(policy, "MAX_ELEMENTS", 1)
    with pytest.raises(PolicyError, match="a tensor of 2 elements"):
        check_model(_model(lambda m: None), 18, "g")
    monkeypatch.setattr(policy, "MAX_INITIALIZERS", 0)
    with pytest.raises(PolicyError, match="more than 0 initializers"):
        check_model(_model(lambda m: None), 18, "g")
    monkeypatch.setattr(policy, "MAX_INITIALIZERS", 10)
    monkeypatch.setattr(policy, "MAX_ELEMENTS", 10)
    monkeypatch.setattr(policy, "MAX_NODES", 10)
    monkeypatch.setattr(policy, "MAX_NESTING", 0)
    with pytest.raises(PolicyError, match="subgraphs nested more than 0 deep"):
        check_model(_model(_nested_loop), 18, "g")


@pytest.mark.parametrize("data", [b"\x0a\xff", b"\x0a\x05ab", b"\x08", b"\x0d\x01\x02"])
def test_malformed_protobuf_is_refused_as_such(data):
    """A truncated length, a field running past the end, a varint cut short, a fixed-size field cut short."""
    with pytest.raises(PolicyError, match="malformed protobuf"):
        check_model(data, None, "g")


def test_our_exported_graphs_pass(trained_bundle):
    bundle = read_bundle(trained_bundle[1])
    for role in bundle.manifest.graphs:
        check_model(bundle.artifacts[role], bundle.manifest.opset, role)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_any_bytes_give_a_policy_error_or_pass(data):
    try:
        check_model(data, None, "g")
    except PolicyError:
        pass


def test_a_signed_graph_that_would_read_the_signing_key_is_refused_at_upload(tmp_path, trained_bundle, signing_keys, trusted):
    """The review's attack: with the documented layout, a graph whose initializer names keys/metaedge.key as external
    data passed the self-test and returned the private key in its outputs. Now the upload is refused."""

    def steal(graph: bytes) -> bytes:
        model = onnx.load_from_string(graph)
        stolen = helper.make_tensor("stolen", TensorProto.UINT8, [64], np.zeros(64, np.uint8).tobytes(), raw=True)
        stolen.ClearField("raw_data")
        stolen.data_location = TensorProto.EXTERNAL
        stolen.external_data.add(key="location", value="keys/metaedge.key")
        model.graph.initializer.append(stolen)
        return model.SerializeToString()

    hostile = pack(with_forward(trained_bundle[1], tmp_path / "steal", steal, load_private(signing_keys[0])))
    device = Device(tmp_path / "device", "onnx", PROFILES["edge-small"], trusted_keys=trusted)
    digest = hashlib.sha256(hostile).hexdigest()
    with pytest.raises(DeviceError, match="content policy: graph 'forward': a tensor with external data"):
        for offset in range(0, len(hostile), 4096):
            device.upload(offset, len(hostile), digest, hostile[offset : offset + 4096])
    assert device.list_images()["images"][0]["valid"] is False  # nothing was committed
