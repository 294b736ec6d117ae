"""The target registry: every backend implements the whole device contract, and a device needs nothing more."""

import inspect

import pytest

from metaedge.backends import registry
from metaedge.backends.base import Backend, BackendError
from metaedge.deploy.manifest import TARGETS

PROTOCOL = ("inspect", "load", "frame", "selftest", "close")


def test_every_format_target_has_a_backend_implementing_the_whole_contract():
    assert set(registry.targets()) == set(TARGETS)
    for target in TARGETS:
        cls = registry.backend_class(target)
        assert cls.target == target
        for name in (*PROTOCOL, "configure"):
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"
        signature = inspect.signature(cls.load)
        assert signature.return_annotation in ("Resources", "'Resources'"), f"{cls.__name__}.load returns no Resources"


def test_the_protocol_is_exactly_the_narrow_interface():
    declared = {n for n, v in vars(Backend).items() if (callable(v) or isinstance(v, classmethod)) and not n.startswith("_")}
    assert declared == set(PROTOCOL)


def test_an_unknown_target_is_refused_with_the_known_ones():
    with pytest.raises(BackendError, match="no 'fpga' backend; known targets: onnx, qiskit, loihi, linear"):
        registry.create("fpga")


def test_a_target_whose_runtime_is_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(registry._BACKENDS, "onnx", "metaedge.backends.no_such_runtime:Backend")
    with pytest.raises(BackendError, match=r"needs onnxruntime \(pip install 'metaedge\[onnx\]'\)"):
        registry.create("onnx")


def test_options_reach_the_backend():
    backend = registry.create("qiskit", options={"backend": "noisy:FakeManilaV2", "seed": 3})
    assert (backend.backend_name, backend.seed) == ("noisy:FakeManilaV2", 3)
    assert registry.create("onnx", threads=2).threads == 2
