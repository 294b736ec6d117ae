"""The ONNX Runtime backend."""

from metaedge.backends.onnx.backend import OnnxBackend

__all__ = ["OnnxBackend"]
