"""The inner loop as one ONNX graph: an ONNX ``Loop`` whose body is the ``adapt_step`` graph.

Built at export (the bundle's optional ``adapt_loop`` artifact), so a device needs only its
runtime: the adapted parameters become loop-carried values (renamed inside the body, since a
subgraph may not redefine a name of the outer scope); everything else the step reads —
the other parameters, the pilots — comes from the outer scope. Inputs: the step's inputs
plus ``steps`` (int64 scalar); outputs: the step's outputs after ``steps`` iterations.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def loop_model(step_bytes: bytes, adapted: list[str]) -> bytes:
    step = onnx.load_from_string(step_bytes)
    graph = step.graph
    carried = {name: f"loop.{name}" for name in adapted}
    outputs = [o.name for o in graph.output]  # adapted.<name>, in adapted order

    body_nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [carried.get(i, i) for i in node.input]
        body_nodes.append(copy)
    # each body output must be a fresh name; route the step's outputs through Identity
    body_outputs = [f"next.{name}" for name in adapted]
    body_nodes += [helper.make_node("Identity", [out], [nxt]) for out, nxt in zip(outputs, body_outputs)]
    body_nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    types = {i.name: i.type for i in graph.input}
    body = helper.make_graph(
        body_nodes,
        "adapt_step_body",
        inputs=[
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            *(onnx.ValueInfoProto(name=carried[n], type=types[n]) for n in adapted),
        ],
        outputs=[
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            *(onnx.ValueInfoProto(name=nxt, type=types[n]) for n, nxt in zip(adapted, body_outputs)),
        ],
        initializer=list(graph.initializer),
    )
    loop = helper.make_node("Loop", ["steps", "", *adapted], outputs, body=body)
    main = helper.make_graph(
        [loop], "adapt_loop", inputs=[*graph.input, helper.make_tensor_value_info("steps", TensorProto.INT64, [])], outputs=list(graph.output)
    )
    model = helper.make_model(main, opset_imports=list(step.opset_import), ir_version=step.ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
