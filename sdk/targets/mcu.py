"""The ``mcu`` target: an MLP receiver and its adaptation as one flat image for the C firmware (docs/bundle-format.md §16).

The receiver is the one the ``onnx`` target exports (the run's task family builds it); this target lays θ, the
adapted-parameter mask, the step sizes and the self-test vectors out in the image the firmware runs in place.
Receivers with more than plain SGD steps on an MLP (particles, Gaussian posteriors, modules, a radio-transformer
front end, predictors) have no image form and are refused with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metaedge.backends.mcu import image as mcu_image
from metaedge.deploy import manifest as m
from metaedge.deploy import tensors
from metaedge.deploy.bundle import Bundle, write_bundle
from metaedge.sdk.errors import UserError
from metaedge.sdk.meta.defaults import STEP_PREFIX
from metaedge.sdk.rundir import read_config
from metaedge.sdk.targets import Release
from metaedge.sdk.targets.onnx import SELFTEST_ATOL, Receiver, mlp_model

IMAGE_FILE = "receiver.bin"


def export(run_dir: Path, out: Path, release: Release, key=None, inner_steps: int | None = None) -> Bundle:
    """Write the ``mcu`` bundle of a trained MLP run; ``inner_steps`` as for the onnx target."""
    if inner_steps is not None and inner_steps < 1:
        raise UserError(f"--inner-steps {inner_steps} must be at least 1")
    from metaedge.sdk import families

    receiver = families.of_run(read_config(run_dir), run_dir).receiver(run_dir, inner_steps, None)
    return write_mcu_bundle(out, release, receiver, key)


def image_of(receiver: Receiver) -> mcu_image.Image:
    """The receiver as the firmware's image; ``UserError`` where it is not a point-estimate MLP classifier."""
    params, inner, model = receiver.params, receiver.inner, receiver.model or mlp_model(receiver.params)
    where = f"'{receiver.source.get('run', receiver.algo)}' ({receiver.algo})"
    if "modules" in model or "particles" in model or inner.posterior != "point" or receiver.noise:
        raise UserError(
            f"{where} adapts a distribution (particles, a Gaussian posterior) or a choice of modules; the mcu target runs plain "
            "SGD steps on one network (export it with --target onnx)"
        )
    if receiver.task.get("classes") is None or model.get("kind") != "mlp" or model.get("output") != "log_softmax" or "rtn" in model:
        raise UserError(f"{where} is not an MLP classifier with a log-softmax output; the mcu target runs those only (export it with --target onnx)")
    names = [k for k in params if not k.startswith(STEP_PREFIX)]
    adapts = inner.keys(params)
    rates = {k: v for k, v in params.items() if k.startswith(STEP_PREFIX)}
    st = receiver.selftest
    selftest = mcu_image.Selftest(
        samples=st["forward.samples"],
        log_probs=st["forward.log_probs"],
        pilots=st["adapt.pilot_samples"],
        labels=st["adapt.pilot_onehot"].argmax(-1),
        adapted_log_probs=st["adapt.log_probs"],
        atol=SELFTEST_ATOL,
    )
    sizes = model["sizes"]
    image = mcu_image.Image(
        features=sizes[0],
        classes=int(receiver.task["classes"]),
        widths=tuple(sizes[1:]),
        context=int(model["context"]),
        steps=inner.steps,
        lr=float(inner.lr),
        prox=float(inner.prox),
        adapts=tuple(k for k in names if k in adapts),
        theta={k: params[k].numpy() for k in names},
        step_sizes={k: v.numpy() for k, v in rates.items()} if rates else None,
        selftest=selftest,
    )
    if list(image.adapts) != list(adapts) or (rates and set(rates) != {STEP_PREFIX + k for k in adapts}):
        raise UserError(f"{where}: its adapted parameters {list(adapts)} or step sizes do not follow the network's order")
    return image


def write_mcu_bundle(out: str | Path, release: Release, receiver: Receiver, key=None) -> Bundle:
    """The bundle: θ (as every target carries it) and the image (§16.2) that the firmware runs."""
    image = image_of(receiver)
    try:
        data = mcu_image.encode(image)
    except mcu_image.ImageError as e:
        raise UserError(f"the receiver does not fit the mcu target: {e}") from None
    params, inner = receiver.params, receiver.inner
    manifest = {
        "target": "mcu",
        **release.fields(),
        "task": receiver.task,
        "model": receiver.model or mlp_model(params),
        "algorithm": {
            "name": receiver.algo,
            "inner_lr": inner.lr,
            "inner_steps": inner.steps,
            "adapts": list(image.adapts),
            "loss": receiver.loss,
            "prox": inner.prox,
        },
        "parameters": [{"name": k, "shape": list(v.shape), "dtype": "float32", "adapts": k in image.adapts} for k, v in params.items()],
        "mcu": {"layout": mcu_image.LAYOUT, "work_bytes": image.work_bytes()},
        "selftest": {"atol": SELFTEST_ATOL, "pilots": len(image.selftest.pilots), "samples": len(image.selftest.samples)},
        "source": receiver.source,
    }
    artifacts = {
        m.THETA: ("theta.safetensors", tensors.dumps({k: np.ascontiguousarray(v.numpy()) for k, v in params.items()})),
        m.IMAGE: (IMAGE_FILE, data),
    }
    return write_bundle(out, manifest, artifacts, key=key)
