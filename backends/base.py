"""The one interface every device backend implements (DESIGN.md, "The backend interface").

A backend loads a verified bundle once, then per frame: ``reset`` to the meta-learned θ,
``adapt`` on the pilots, ``predict`` the payload. ``selftest`` replays the bundle's
self-test vectors, which a device requires before it confirms an image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from metaedge.deploy.bundle import Bundle


class BackendError(RuntimeError):
    """The backend cannot run this bundle or input; the message says why."""


@dataclass(frozen=True)
class AdaptReport:
    steps: int
    seconds: float


@dataclass(frozen=True)
class SelftestReport:
    passed: bool
    max_error: float
    tolerance: float
    checks: int


@dataclass(frozen=True)
class Resources:
    """What the loaded receiver needs, for the device profile's resource check."""

    parameter_bytes: int     # θ plus the adapted copy
    artifact_bytes: int      # bundle bytes kept in flash
    parameters: int          # scalar parameters


class Backend(Protocol):
    target: str

    def load(self, bundle: Bundle) -> None: ...

    def adapt(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray) -> AdaptReport: ...

    def predict(self, samples: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...

    def resources(self) -> Resources: ...

    def selftest(self) -> SelftestReport: ...

    def close(self) -> None: ...                 # release the runtime (Lava's processes); idempotent
