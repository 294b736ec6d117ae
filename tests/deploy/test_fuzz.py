"""Property-based fuzzing of everything that reads untrusted bytes: only clean, typed errors.

The longer run (100,000+ mutated inputs) is ``metaedge bench fuzz``; these keep the property
in the test suite.
"""

import hashlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaedge.deploy import tensors, wire
from metaedge.deploy.bundle import BundleError, pack, parse_manifest, read_bundle, unpack
from metaedge.deploy.tensors import TensorFileError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, seed: bytes):
    """Byte flips, insertions, deletions and truncations of ``seed``."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "overwrite"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
    return bytes(data)


@pytest.fixture(scope="module")
def packed(trained_bundle):
    return pack(read_bundle(trained_bundle[1]))


SAFETENSORS = tensors.dumps({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.array([1, 2], np.int64)}, {"k": "v"})
MESSAGE = wire.encode({"op": "frame", "seq": 3}, {"pilots": np.zeros((4, 2), np.float32), "chunk": b"abc"})


@FUZZ
@given(data=st.data())
def test_packed_bundle_reader(packed, data):
    blob = data.draw(mutated(packed))
    try:
        bundle = unpack(blob)
    except BundleError:
        return
    assert hashlib.sha256(bundle.artifacts["theta"]).hexdigest() == bundle.manifest.raw["artifacts"]["theta"]["sha256"]


@FUZZ
@given(blob=mutated(SAFETENSORS))
def test_safetensors_reader(blob):
    try:
        loaded, _ = tensors.loads(blob)
    except TensorFileError:
        return
    assert all(isinstance(v, np.ndarray) for v in loaded.values())


@FUZZ
@given(blob=mutated(MESSAGE))
def test_protocol_frame_decoder(blob):
    try:
        header, arrays = wire.read_message(io.BytesIO(blob))
    except wire.WireError:
        return
    assert isinstance(header, dict) and isinstance(arrays, dict)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(
    manifest=st.dictionaries(st.sampled_from(["format", "version", "target", "security_counter", "artifacts", "expires"]), json_values, max_size=6)
)
def test_manifest_parser_on_arbitrary_json(manifest):
    import json

    try:
        parse_manifest(json.dumps(manifest).encode())
    except BundleError:
        pass


@FUZZ
@given(
    shape_p=st.tuples(st.integers(0, 300), st.integers(0, 3)),
    shape_x=st.tuples(st.integers(0, 50), st.integers(0, 3)),
    dtype=st.sampled_from([np.float32, np.float64, np.int32]),
    special=st.sampled_from([0.0, np.nan, np.inf, 1e30]),
    labels=st.one_of(st.none(), st.lists(st.integers(-5, 40), max_size=10)),
)
def test_device_frames(shape_p, shape_x, dtype, special, labels, fuzz_device):
    from metaedge.firmware_sim.device import DeviceError

    with np.errstate(invalid="ignore"):
        pilots = np.full(shape_p, special).astype(dtype)
    payload = np.ones(shape_x).astype(dtype)
    arrays = {"pilots": pilots, "payload": payload}
    if labels is not None:
        arrays["labels"] = np.array(labels, np.int32)
    try:
        _, out = fuzz_device.frame(arrays)
    except DeviceError:
        return
    assert np.isfinite(out["confidence"]).all()


@pytest.fixture(scope="module")
def fuzz_device(trained_bundle, tmp_path_factory):
    from metaedge.firmware_sim.device import Device
    from metaedge.firmware_sim.profile import PROFILES

    device = Device(tmp_path_factory.mktemp("fuzz"), "onnx", PROFILES["edge-small"], allow_unsigned=True)
    image = pack(read_bundle(trained_bundle[1]))
    digest = hashlib.sha256(image).hexdigest()
    device.upload(0, len(image), digest, image)
    device.test(digest)
    device.reset()
    return device


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_target_artifact_reader(trained_bundle, data):
    """Mutated ONNX graphs with valid hashes reach ONNX Runtime: refused with BackendError or run."""
    from metaedge.backends.base import BackendError
    from metaedge.sdk.bench.fuzz import graph_reader

    bundle = read_bundle(trained_bundle[1])
    role = data.draw(st.sampled_from(["forward", "adapt_step", "adapt_loop"]))
    graph = data.draw(mutated(bundle.artifacts[role]))
    try:
        graph_reader(bundle, role)(graph)
    except BackendError:
        pass


@FUZZ
@given(shape=st.lists(st.one_of(st.just(0), st.integers(1, 2**64)), max_size=8), dtype=st.sampled_from(["F32", "U8", "F64"]))
def test_tensor_headers_with_any_shape(shape, dtype):
    """Structured headers with huge, zero and mixed dimensions (byte mutations rarely reach them)."""
    import json

    text = json.dumps({"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}}).encode()
    try:
        out, _ = tensors.loads(len(text).to_bytes(8, "little") + text)
    except TensorFileError:
        return
    assert out["t"].size == 0 and list(out["t"].shape) == shape
