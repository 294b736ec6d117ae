"""The numpy safetensors codec: interoperable with the reference library, strict on bad input."""

import json

import numpy as np
import pytest
import safetensors.numpy as reference

from metaedge.deploy import tensors
from metaedge.deploy.tensors import TensorFileError


def sample():
    return {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "step": np.array(7, dtype=np.int64),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
    }


def test_round_trip_with_metadata(tmp_path):
    tensors.save(tmp_path / "a.safetensors", sample(), {"iteration": "12"})
    loaded, meta = tensors.load(tmp_path / "a.safetensors")
    assert meta == {"iteration": "12"}
    for k, v in sample().items():
        np.testing.assert_array_equal(loaded[k], v)
        assert loaded[k].dtype == v.dtype


def test_interoperates_with_the_reference_library():
    ours = tensors.dumps(sample(), {"k": "v"})
    for k, v in reference.load(ours).items():
        np.testing.assert_array_equal(v, sample()[k])
    theirs, meta = tensors.loads(reference.save(sample(), metadata={"k": "v"}))
    assert meta == {"k": "v"}
    for k, v in theirs.items():
        np.testing.assert_array_equal(v, sample()[k])


def with_header(header: dict, buffer: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + buffer


@pytest.mark.parametrize(
    "blob,fragment",
    [
        (b"\x01\x02", "too short"),
        ((10**9).to_bytes(8, "little") + b"{}", "exceeds"),
        ((4).to_bytes(8, "little") + b"\xff\xfe{}", "not UTF-8 JSON"),
        (with_header([], b""), "not a JSON object"),
        (with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4), "fall outside"),
        (with_header({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8), "needs 12 bytes"),
        (with_header({"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "unsupported dtype"),
        (with_header({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8), "non-negative"),
        (
            with_header(
                {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                b"\0" * 12,
            ),
            "gap or overlap",
        ),
        (with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), "after the last tensor"),
        (with_header({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "exactly dtype, shape and data_offsets"),
        (with_header({"__metadata__": {"k": 1}}, b""), "strings to strings"),
        # empty tensors whose other dimensions no array library can hold (their products once reached numpy's reshape)
        (with_header({"a": {"dtype": "F32", "shape": [2**32, 2**32, 0], "data_offsets": [0, 0]}}, b""), "more than 2147483648 elements"),
        (with_header({"a": {"dtype": "F32", "shape": [2**31 - 1] * 4 + [0], "data_offsets": [0, 0]}}, b""), "more than 2147483648 elements"),
        # the header's bounds are the protocol's (bundle-format §3, device-protocol §2)
        ((87).to_bytes(8, "little") + b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested"),
        (with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 10**24]}}, b"\0" * 4), "digits"),
    ],
)
def test_malformed_files_are_refused_with_a_reason(blob, fragment):
    with pytest.raises(TensorFileError, match=fragment):
        tensors.loads(blob)


def test_empty_tensors_of_holdable_shape_are_read():
    out, _ = tensors.loads(with_header({"a": {"dtype": "F32", "shape": [0, 16], "data_offsets": [0, 0]}}, b""))
    assert out["a"].shape == (0, 16)


def test_writers_pad_the_header_to_eight_bytes_and_readers_accept_the_padding():
    """bundle-format §3: the header MAY end in spaces to a multiple of 8 bytes (writers SHOULD), counted in N."""
    blob = tensors.dumps(sample())
    assert int.from_bytes(blob[:8], "little") % 8 == 0
    text = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode() + b"   "
    loaded, _ = tensors.loads(len(text).to_bytes(8, "little") + text + np.float32(2.5).tobytes())
    assert loaded["a"].tolist() == [2.5]
