"""Export a run directory to a portable bundle (docs/bundle-format.md), target ``onnx``.

Graphs are traced with ``make_fx`` in symbolic mode (sample and pilot counts stay dynamic)
and exported with the dynamo-based ONNX exporter; exporting a module that calls
``torch.func.grad`` directly fails (FACTS.md). The loss is −mean Σ onehot·log p with one-hot
labels, which exports exactly. Self-test vectors are computed in torch, so a device that
reproduces them runs what was trained.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from metaedge.deploy import tensors
from metaedge.deploy.bundle import Bundle, write_bundle
from metaedge.sdk.algorithms import EXPORTABLE, get_algorithm
from metaedge.sdk.algorithms.bayes import log_predictive
from metaedge.sdk.algorithms.core import InnerLoop, adapt
from metaedge.sdk.errors import UserError
from metaedge.sdk.models.mlp import Params, forward
from metaedge.sdk.onnx_loop import loop_model
from metaedge.sdk.rundir import load_run, read_config
from metaedge.sdk.tasks.demod import DemodConfig, DemodTasks, pilot_symbols
from metaedge.sdk.training import configs_from_run

OPSET = 18
SELFTEST_SAMPLES, SELFTEST_PILOTS, SELFTEST_ATOL = 64, 8, 1e-4


def _export_graph(fn, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
                  dynamic: dict[str, str]) -> bytes:
    """Trace ``fn`` symbolically and export it as ONNX bytes; ``dynamic`` maps input names to axis-0 names."""
    with _quiet_exporter():
        return _trace_and_export(fn, example, input_names, output_names, dynamic)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's internal warnings (training mode, torchvision ops, axis renames) say nothing to our users."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _trace_and_export(fn, example, input_names, output_names, dynamic) -> bytes:
    traced = make_fx(fn, tracing_mode="symbolic")(*example)
    dims = {name: torch.export.Dim(axis, min=1) for name, axis in set(dynamic.items())}
    shapes = [{0: dims[n]} if n in dynamic else None for n in input_names]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.onnx"
        torch.onnx.export(traced, example, path, dynamo=True, opset_version=OPSET, input_names=input_names,
                          output_names=output_names, dynamic_shapes=shapes, verbose=False, optimize=True)
        import onnx

        model = onnx.load(path)
        # The exporter annotates every node with debugging text (FX node, class hierarchy):
        # two thirds of the file and of no use on a device. Intermediate shapes go too.
        for node in model.graph.node:
            del node.metadata_props[:]
        del model.graph.value_info[:]
        onnx.checker.check_model(model, full_check=True)
        buffer = io.BytesIO()
        onnx.save_model(model, buffer)
        return buffer.getvalue()


def features(params: Params) -> int:
    """Inputs per sample of the MLP ``params`` (its first layer's fan-in less the context inputs; BMAML's
    particles stack networks on a leading axis)."""
    return params["l0.weight"].shape[-2] - (params["context"].shape[-1] if "context" in params else 0)


def forward_graph(params: Params, fn: Callable[[Params, torch.Tensor], torch.Tensor], n_features: int, output: str) -> bytes:
    names = list(params)
    x = torch.zeros(7, n_features)

    def graph(*args):
        return fn(dict(zip(names, args[:-1])), args[-1])

    return _export_graph(graph, (*params.values(), x), [*names, "samples"], [output], {"samples": "N"})


def adapt_step_graph(params: Params, inner: InnerLoop, n_features: int, classes: int | None) -> bytes:
    """One step; a proximal step (λ > 0) also reads θ's adapted parameters as ``anchor.<name>`` inputs. A
    classifier's step reads the pilots' one-hot classes; a predictor's (``classes`` None) reads the pilots alone."""
    names, keys = list(params), inner.keys(params)
    anchors = [f"anchor.{k}" for k in keys] if inner.prox else []
    one = dataclasses.replace(inner, steps=1)
    labelled = classes is not None

    def fn(*args):
        current = dict(zip(names, args[:len(names)]))
        anchor = dict(zip(keys, args[len(names):len(names) + len(anchors)])) if anchors else None
        pilots = args[-2] if labelled else args[-1]
        target = args[-1] if labelled else torch.zeros(pilots.shape[0], 1)
        adapted = adapt(current, pilots, target, one, anchor=anchor)
        return tuple(adapted[k] for k in keys)

    # distinct tensors: the tracer would merge an anchor with its parameter if given the same object
    example = (*params.values(), *(params[k].clone() for k in keys if anchors), torch.zeros(5, n_features),
               *([torch.eye(classes)[:5]] if labelled else []))
    inputs = [*names, *anchors, "pilot_samples", *(["pilot_onehot"] if labelled else [])]
    return _export_graph(fn, example, inputs, [f"adapted.{k}" for k in keys],
                         {"pilot_samples": "P", **({"pilot_onehot": "P"} if labelled else {})})


def selftest_vectors(params: Params, inner: InnerLoop, pilots: np.ndarray, onehot: np.ndarray | None, samples: np.ndarray,
                     fn: Callable[[Params, torch.Tensor], torch.Tensor] = forward, output: str = "log_probs") -> dict[str, np.ndarray]:
    """Inputs and torch's outputs for a forward pass (``fn``) on ``samples`` and a full adaptation (``inner.steps``
    steps) on ``pilots`` with one-hot classes ``onehot`` (None for a predictor, whose pilots carry no labels)."""
    x_p, x = (torch.as_tensor(a, dtype=torch.float32) for a in (pilots, samples))
    target = torch.as_tensor(onehot, dtype=torch.float32) if onehot is not None else torch.zeros(len(x_p), 1)
    with torch.no_grad():
        vectors = {"forward.samples": x, f"forward.{output}": fn(params, x)}
    adapted = {k: v.detach() for k, v in adapt(params, x_p, target, inner).items()}
    vectors["adapt.pilot_samples"] = x_p
    if onehot is not None:
        vectors["adapt.pilot_onehot"] = target
    vectors.update({f"adapt.{k}": adapted[k] for k in inner.keys(params)})
    with torch.no_grad():
        vectors[f"adapt.{output}"] = fn(adapted, x)
    return {k: v.numpy().astype(np.float32) for k, v in vectors.items()}


def demod_selftest(params: Params, inner: InnerLoop, tasks: DemodTasks, fn=forward) -> dict[str, np.ndarray]:
    frame = tasks.frames(tasks.devices("test", 1), SELFTEST_PILOTS, SELFTEST_SAMPLES, tasks.rng("test", 99))
    onehot = np.eye(tasks.config.order, dtype=np.float32)[frame.y_tr[0]]
    return selftest_vectors(params, inner, frame.x_tr[0], onehot, frame.x_va[0], fn=fn)


def release_fields(out: str | Path, security_counter: int, expires: str | None) -> dict:
    """Checks shared by every target's export; returns the manifest's security counter and expiry."""
    from metaedge.deploy.bundle import BundleError, expires as parse_expiry

    if not 0 <= security_counter < 2**32:
        raise UserError(f"--security-counter {security_counter} must lie in [0, 2^32)")
    if Path(out).exists() and any(Path(out).iterdir()):
        raise UserError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    fields = {"security_counter": security_counter, **({"expires": expires} if expires else {})}
    try:
        parse_expiry(fields)
    except BundleError as e:
        raise UserError(f"--expires: {e}") from None
    return fields


def task_section(task: DemodConfig) -> dict:
    """The manifest's task description: what a device must know about the samples and classes."""
    constellation = DemodTasks(task).constellation
    return {
        "name": "demod", "features": ["I", "Q"], "classes": task.order,
        "constellation": [[float(c.real), float(c.imag)] for c in constellation],
        "pilot_sequence": pilot_symbols(task.order).tolist() if task.pilot_sequence == "fixed" else None,
        "snr_db": task.snr_db, "noise_var": task.noise_var,
        "channel": task.channel, "phase_max_deg": task.phase_max_deg,
    }


def export_onnx(run_dir: str | Path, out: str | Path, security_counter: int = 1, steps: int | None = None,
                key=None, expires: str | None = None) -> Bundle:
    """Write the bundle of a trained run for the ONNX target; ``steps`` sets the device's adaptation budget
    (default: the inner steps the run was trained with); ``key`` (Ed25519) signs it; ``expires``
    (UTC, 2027-01-31T00:00:00Z) is when devices stop accepting it. A learned-link run exports its receiver, a
    power-control run its allocator."""
    if steps is not None and steps < 1:
        raise UserError(f"--steps {steps} must be at least 1")
    release = release_fields(out, security_counter, expires)
    from metaedge.sdk.link_export import link_receiver
    from metaedge.sdk.power_run import power_receiver

    kind = read_config(Path(run_dir))["model"].get("kind")
    receivers = {"autoencoder": link_receiver, "regnn": power_receiver}
    return write_onnx_bundle(out, release, receivers.get(kind, demod_receiver)(Path(run_dir), steps), key)


@dataclasses.dataclass(frozen=True)
class Receiver:
    """What an ONNX bundle carries: θ, its adaptation, its task section and self-test; by default an MLP
    classifier, or a predictor (a task with ``outputs``) with its own forward function, output and loss."""

    params: Params
    inner: InnerLoop
    algo: str
    task: dict
    selftest: dict[str, np.ndarray]
    source: dict
    model: dict | None = None                 # the manifest's model section (default: the MLP's)
    forward: Callable[[Params, torch.Tensor], torch.Tensor] = forward
    output: str = "log_probs"
    loss: str = "cross_entropy_mean_onehot"


def mlp_model(params: Params) -> dict:
    sizes = [features(params), *(params[f"l{i}.bias"].shape[-1] for i in range(len(params)) if f"l{i}.bias" in params)]
    stacked = params["l0.weight"].dim() == 3
    return {"kind": "mlp", "sizes": sizes, "context": int(params["context"].shape[-1]) if "context" in params else 0,
            "activation": "relu", "weight_layout": "in_out",
            **({"particles": int(params["l0.weight"].shape[0]), "output": "log_mean_softmax"} if stacked else {"output": "log_softmax"})}


def demod_receiver(run_dir: Path, steps: int | None) -> Receiver:
    run = load_run(run_dir)
    task, train = configs_from_run(run.config)
    if train.algo not in EXPORTABLE:
        why = "its module selection" if get_algorithm(train.algo).modular else "its sampled Gaussian ensemble (draws a device would have to reproduce)"
        raise UserError(f"'{run_dir}' is an {train.algo} run: {why} is not exportable yet; export a run of {', '.join(EXPORTABLE)}")
    inner = train.inner()
    if steps is not None:
        inner = dataclasses.replace(inner, steps=steps)
    params = {k: torch.from_numpy(v) for k, v in run.theta.items()}
    fn = functools.partial(log_predictive, posterior=inner.posterior, samples=inner.samples)   # the MLP itself for a point θ
    return Receiver(params, inner, train.algo, task_section(task), demod_selftest(params, inner, DemodTasks(task, seed=train.seed), fn),
                    {"run": str(run_dir), "algo": train.algo, "seed": train.seed}, forward=fn)


def write_onnx_bundle(out: str | Path, release: dict, receiver: Receiver, key=None) -> Bundle:
    params, inner, task = receiver.params, receiver.inner, receiver.task
    n_features, classes = len(task["features"]), task.get("classes")
    width = classes if classes is not None else task["outputs"]
    adapted = inner.keys(params)
    step_inputs = [*({"name": k, "role": "parameter"} for k in params),
                   *({"name": f"anchor.{k}", "role": "anchor", "parameter": k} for k in adapted if inner.prox),
                   {"name": "pilot_samples", "role": "pilot_samples", "shape": ["P", n_features], "dtype": "float32"},
                   *([{"name": "pilot_onehot", "role": "pilot_labels_onehot", "shape": ["P", classes], "dtype": "float32"}]
                     if classes is not None else [])]
    step_outputs = [{"name": f"adapted.{k}", "role": "parameter", "parameter": k} for k in adapted]
    manifest = {
        "target": "onnx",
        **release,
        "task": task,
        "model": receiver.model or mlp_model(params),
        "algorithm": {"name": receiver.algo, "inner_lr": inner.lr, "inner_steps": inner.steps, "adapts": list(adapted),
                      "loss": receiver.loss, "prox": inner.prox},
        "parameters": [{"name": k, "shape": list(v.shape), "dtype": "float32", "adapts": k in adapted} for k, v in params.items()],
        "graphs": {
            "opset": OPSET,
            "forward": {"inputs": [*({"name": k, "role": "parameter"} for k in params),
                                   {"name": "samples", "role": "samples", "shape": ["N", n_features], "dtype": "float32"}],
                        "outputs": [{"name": receiver.output, "role": "log_probabilities" if classes is not None else "outputs",
                                     "shape": ["N", width], "dtype": "float32"}]},
            "adapt_step": {"inputs": step_inputs, "outputs": step_outputs},
            "adapt_loop": {"inputs": [*step_inputs, {"name": "steps", "role": "steps", "shape": [], "dtype": "int64"}],
                           "outputs": step_outputs},
        },
        "selftest": {"atol": SELFTEST_ATOL, "pilots": len(receiver.selftest["adapt.pilot_samples"]),
                     "samples": len(receiver.selftest["forward.samples"])},
        "source": receiver.source,
    }
    step = adapt_step_graph(params, inner, n_features, classes)
    artifacts = {
        "theta": ("theta.safetensors", tensors.dumps({k: v.numpy() for k, v in params.items()})),
        "forward": ("forward.onnx", forward_graph(params, receiver.forward, n_features, receiver.output)),
        "adapt_step": ("adapt_step.onnx", step),
        "adapt_loop": ("adapt_loop.onnx", loop_model(step, list(adapted))),
        "selftest": ("selftest.safetensors", tensors.dumps(receiver.selftest)),
    }
    return write_bundle(out, manifest, artifacts, key=key)
