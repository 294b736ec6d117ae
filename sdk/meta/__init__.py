"""The meta-learning core (``core``), one small file per algorithm, the algorithm registry (``algorithms``), the
outer loop (``outer``) and the hyperparameter defaults (``defaults``).

Names are loaded on first use, so that ``metaedge.sdk.meta.defaults`` reads without torch."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ADAPTED": "algorithms",
    "ALGORITHMS": "algorithms",
    "Algorithm": "algorithms",
    "PARTIAL_ADAPTATION": "algorithms",
    "get_algorithm": "algorithms",
    "register": "algorithms",
    "DEFAULT_PROX": "defaults",
    "InnerLoop": "core",
    "adapt": "core",
    "compiled_meta_gradient": "core",
    "meta_gradient": "core",
    "to_batch": "core",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
