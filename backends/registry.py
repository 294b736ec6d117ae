"""Which backend runs which target: a registry of ``target → backend class``, imported only when a device needs it.

A backend class is built with ``configure(threads, options)`` from the device's thread count
and its target-specific options (qiskit: ``backend``, ``seed``; loihi: ``engine``,
``fixed_point``). The runtimes (onnxruntime, Lava, Qiskit) are imported on first use, so a
device build carries only the runtime of its own target.
"""

from __future__ import annotations

import importlib
from typing import Mapping

from metaedge.backends.base import Backend, BackendError

_BACKENDS: dict[str, str | type] = {
    "onnx": "metaedge.backends.onnx.backend:OnnxBackend",
    "qiskit": "metaedge.backends.qiskit.backend:QiskitBackend",
    "loihi": "metaedge.backends.loihi.backend:LoihiBackend",
    "linear": "metaedge.backends.linear.backend:LinearBackend",
    "mcu": "metaedge.backends.mcu.backend:McuBackend",
}
# the runtime each target needs, for the message a device without it prints
RUNTIMES = {
    "onnx": "onnxruntime (pip install 'metaedge[onnx]')",
    "qiskit": "qiskit-aer (pip install 'metaedge[quantum]')",
    "loihi": "lava-nc in Python 3.10 (pip install 'metaedge[loihi]')",
    "linear": "numpy",
    "mcu": "qemu-system-arm and the firmware ('make env firmware')",
}
# a frame's wall-clock limit on a device that contains its receiver (seconds): a few hundred times a typical frame —
# ONNX and linear frames take under a millisecond, a noisy-simulator circuit batch about a second, a Lava simulation
# of a spiking frame about 4 s, an emulated microcontroller's frame about 0.1 s
FRAME_LIMITS_S = {"onnx": 2.0, "linear": 2.0, "qiskit": 60.0, "loihi": 120.0, "mcu": 30.0}
DEFAULT_FRAME_LIMIT_S = 2.0  # targets registered without one


def frame_limit_s(target: str) -> float:
    return FRAME_LIMITS_S.get(target, DEFAULT_FRAME_LIMIT_S)


def register(target: str, backend: str | type) -> None:
    """Add (or replace) the backend of ``target``: a class, or ``"package.module:Class"`` to import on first use."""
    _BACKENDS[target] = backend


def targets() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def backend_class(target: str) -> type:
    """The backend class of ``target``; ``BackendError`` when there is none or its runtime is not installed."""
    if target not in _BACKENDS:
        raise BackendError(f"this device build has no '{target}' backend; known targets: {', '.join(_BACKENDS)}")
    entry = _BACKENDS[target]
    if isinstance(entry, type):
        return entry
    module, name = entry.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise BackendError(f"the '{target}' backend needs {RUNTIMES.get(target, 'its runtime')}, which is not importable here ({e})") from None


def create(target: str, threads: int = 1, options: Mapping | None = None) -> Backend:
    """A new, unloaded backend for ``target``."""
    return backend_class(target).configure(threads, dict(options or {}))
