"""MetaEdge: meta-learned receivers from host to edge hardware.

Meta-train θ (an initialisation, step sizes, a prior) over many simulated devices on a host, export θ with its
adaptation procedure as a signed, portable bundle, and deploy it to a device that adapts on the few pilots of every
frame. The command line (``metaedge --help``) runs this same code with the same defaults: each command's options are
the fields of one dataclass, whose defaults are the only ones.

    import metaedge

    run = metaedge.Trainer("runs/x", metaedge.DemodConfig(pilots=8), metaedge.TrainConfig(algo="metasgd")).run()
    report = metaedge.evaluate("runs/x", pilots=(1, 8), devices=100)
    bundle = metaedge.export("onnx", "runs/x", "bundles/x", key=metaedge.load_private("keys/metaedge.key"))
    with metaedge.connect("tcp://127.0.0.1:7410") as device:
        device.deploy(metaedge.pack(bundle), confirm=True)
        telemetry, outputs = device.frame(pilots, payload, labels)

Names are imported on first use: a device-side install (numpy and its backend's runtime, no torch) imports
``metaedge`` and uses the names it has the packages for.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("metaedge")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# public name → "module:attribute"
_PUBLIC = {
    # host: meta-train and evaluate (torch)
    "DemodConfig": "metaedge.sdk.families.demod.task:DemodConfig",
    "TrainConfig": "metaedge.sdk.families.demod.training:TrainConfig",
    "Trainer": "metaedge.sdk.families.demod.training:Trainer",
    "evaluate": "metaedge.sdk.families.demod.runs:evaluate",
    # host: export to a device target, sign
    "export": "metaedge.sdk.targets:export",
    "Release": "metaedge.sdk.targets:Release",
    "generate_keys": "metaedge.deploy.signing:generate",
    "load_private": "metaedge.deploy.signing:load_private",
    # both sides: read, check and pack bundles
    "read_bundle": "metaedge.deploy.bundle:read_bundle",
    "describe": "metaedge.sdk.targets.describe:summary",
    "pack": "metaedge.deploy.bundle:pack",
    # talk to a device (management protocol)
    "connect": "metaedge.sdk.device_frames:connect",
    "DeviceClient": "metaedge.deploy.client:DeviceClient",
    "DeviceRequestError": "metaedge.deploy.client:DeviceRequestError",
    "UserError": "metaedge.sdk.errors:UserError",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'metaedge' has no attribute '{name}'")
    module, _, attribute = _PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
