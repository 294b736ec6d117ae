"""The ``onnx`` target: a run directory as a portable bundle of ONNX graphs (docs/bundle-format.md §3–§8).

Graphs are traced with ``make_fx`` in symbolic mode (sample and pilot counts stay dynamic)
and exported with the dynamo-based ONNX exporter; exporting a module that calls
``torch.func.grad`` directly fails. The loss is −mean Σ onehot·log p with one-hot
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

from metaedge.deploy import manifest as m
from metaedge.deploy import noise as noise_generator
from metaedge.deploy import tensors
from metaedge.deploy.bundle import Bundle, write_bundle
from metaedge.sdk.errors import UserError
from metaedge.sdk.meta import modular
from metaedge.sdk.meta.bayes import LOGSTD_PREFIX, means
from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.meta.defaults import Gaussian
from metaedge.sdk.models.mlp import Params, forward
from metaedge.sdk.rundir import read_config
from metaedge.sdk.targets import Release
from metaedge.sdk.targets.onnx_loop import loop_model

OPSET = 18
SELFTEST_SAMPLES, SELFTEST_PILOTS, SELFTEST_ATOL = 16, 8, 1e-4  # 16 samples × all classes per check catch a wrong graph
EXPORTER = {"dynamo": True, "opset_version": OPSET, "verbose": False, "optimize": True}  # how every graph is traced


def _export_graph(fn, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str], dynamic: dict[str, str]) -> bytes:
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
        torch.onnx.export(traced, example, path, input_names=input_names, output_names=output_names, dynamic_shapes=shapes, **EXPORTER)
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


def forward_graph(params: Params, fn: Callable[..., torch.Tensor], n_features: int, output: str, noise: Params | None = None) -> bytes:
    """``fn(params, samples)`` as a graph; with ``noise`` (a Gaussian posterior's predictive draws) those are
    inputs ``noise.<name>`` too, passed to ``fn`` as ``noise=``."""
    names, drawn = list(params), list(noise or {})
    x = torch.zeros(7, n_features)

    def graph(*args):
        current = dict(zip(names, args[: len(names)]))
        if drawn:
            return fn(current, args[-1], noise=dict(zip(drawn, args[len(names) : -1])))
        return fn(current, args[-1])

    return _export_graph(
        graph, (*params.values(), *(noise or {}).values(), x), [*names, *(m.noise_name(k) for k in drawn), m.SAMPLES], [output], {m.SAMPLES: "N"}
    )


def anchored(inner: InnerLoop) -> bool:
    """Whether every step reads θ besides the current parameters: a proximal term's centre, a Gaussian prior."""
    return inner.prox > 0 or inner.posterior == "gaussian"


def _adaptation_signature(params: Params, inner: InnerLoop, n_features: int, classes: int | None, noise: Params | None):
    """Inputs of a graph that adapts on pilots (spec §7.2) — the parameters, anchors, draws, pilots and (classifier)
    one-hot classes: their names, example tensors, dynamic axes, and a function from the traced arguments to
    (parameters, anchor, draws, pilots, target)."""
    names, keys, drawn = list(params), inner.keys(params), list(noise or {})
    anchors = [m.anchor_name(k) for k in keys] if anchored(inner) else []
    labelled = classes is not None

    def unpack(args):
        current = dict(zip(names, args[: len(names)]))
        fixed = args[len(names) : len(names) + len(anchors) + len(drawn)]
        anchor = dict(zip(keys, fixed[: len(anchors)])) if anchors else None
        draws = dict(zip(drawn, fixed[len(anchors) :])) if drawn else None
        pilots = args[-2] if labelled else args[-1]
        target = args[-1] if labelled else torch.zeros(pilots.shape[0], 1)
        return current, anchor, draws, pilots, target

    # distinct tensors: the tracer would merge an anchor with its parameter if given the same object
    example = (
        *params.values(),
        *(params[k].clone() for k in keys if anchors),
        *(noise or {}).values(),
        torch.zeros(5, n_features),
        *([torch.eye(classes)[:5]] if labelled else []),
    )
    inputs = [*names, *anchors, *(m.noise_name(k) for k in drawn), m.PILOT_SAMPLES, *([m.PILOT_ONEHOT] if labelled else [])]
    return inputs, example, {m.PILOT_SAMPLES: "P", **({m.PILOT_ONEHOT: "P"} if labelled else {})}, unpack


def adapt_step_graph(params: Params, inner: InnerLoop, n_features: int, classes: int | None, noise: Params | None = None) -> bytes:
    """One step; a proximal step (λ > 0) and a Gaussian posterior's (whose prior is θ at every step) also read θ's
    adapted parameters as ``anchor.<name>`` inputs, the Gaussian step its draws ``noise`` as ``noise.<name>``. A
    classifier's step reads the pilots' one-hot classes; a predictor's (``classes`` None) reads the pilots alone."""
    inputs, example, dynamic, unpack = _adaptation_signature(params, inner, n_features, classes, noise)
    keys, one = inner.keys(params), dataclasses.replace(inner, steps=1)

    def fn(*args):
        current, anchor, draws, pilots, target = unpack(args)
        adapted = adapt(current, pilots, target, one, anchor=anchor, noise=draws)
        return tuple(adapted[k] for k in keys)

    return _export_graph(fn, example, inputs, [m.adapted_name(k) for k in keys], dynamic)


def frame_graph(
    params: Params, inner: InnerLoop, n_features: int, classes: int | None, fn: Callable[[Params, torch.Tensor], torch.Tensor], output: str
) -> bytes:
    """A whole frame in one graph (spec §7.6): ``adapt_step``'s inputs and ``samples`` → ``fn`` on the samples at the
    parameters ``inner.steps`` steps produce. One call instead of two (and the adapted parameters never leave the
    runtime) is what makes a one-step frame cheap on a device."""
    inputs, example, dynamic, unpack = _adaptation_signature(params, inner, n_features, classes, None)

    def graph(*args):
        current, anchor, _, pilots, target = unpack(args[:-1])
        return fn(adapt(current, pilots, target, inner, anchor=anchor), args[-1])

    return _export_graph(graph, (*example, torch.zeros(7, n_features)), [*inputs, m.SAMPLES], [output], {**dynamic, m.SAMPLES: "N"})


def selftest_vectors(
    params: Params,
    inner: InnerLoop,
    pilots: np.ndarray,
    onehot: np.ndarray | None,
    samples: np.ndarray,
    fn: Callable[[Params, torch.Tensor], torch.Tensor] = forward,
    output: str = "log_probs",
    noise: dict[str, Params] | None = None,
) -> dict[str, np.ndarray]:
    """Inputs and torch's outputs for a forward pass (``fn``) on ``samples`` and a full adaptation (``inner.steps``
    steps) on ``pilots`` with one-hot classes ``onehot`` (None for a predictor, whose pilots carry no labels);
    a Gaussian posterior's with the bundle's draws ``noise`` (streams "adapt" and "predict")."""
    x_p, x = (torch.as_tensor(a, dtype=torch.float32) for a in (pilots, samples))
    target = torch.as_tensor(onehot, dtype=torch.float32) if onehot is not None else torch.zeros(len(x_p), 1)
    if noise:
        fn = functools.partial(fn, noise=noise["predict"])
    with torch.no_grad():
        vectors = {"forward.samples": x, f"forward.{output}": fn(params, x)}
    adapted = {k: v.detach() for k, v in adapt(params, x_p, target, inner, noise=noise["adapt"] if noise else None).items()}
    vectors["adapt.pilot_samples"] = x_p
    if onehot is not None:
        vectors["adapt.pilot_onehot"] = target
    vectors.update({f"adapt.{k}": adapted[k] for k in inner.keys(params)})
    with torch.no_grad():
        vectors[f"adapt.{output}"] = fn(adapted, x)
    return {k: v.numpy().astype(np.float32) for k, v in vectors.items()}


def gaussian_noise(params: Params, inner: InnerLoop, seed: int, ensemble: int) -> dict:
    """The manifest's ``algorithm.noise`` of a Gaussian posterior (spec §7.4): ``Gaussian.samples`` draws for every
    adaptation step and ``ensemble`` for the predictive, from two streams of the run's seed."""
    return {
        "generator": noise_generator.GENERATOR,
        "parameters": list(means(params)),
        "adapt": {"seed": 2 * seed, "draws": inner.of(Gaussian).samples},
        "predict": {"seed": 2 * seed + 1, "draws": ensemble},
    }


def noise_tensors(section: dict, params: Params) -> dict[str, Params]:
    """The draws of ``section`` (``algorithm.noise``) as tensors, stream → name → [draws, *shape]."""
    shapes = [(k, list(params[k].shape)) for k in section["parameters"]]
    return {
        stream: {k: torch.from_numpy(v) for k, v in noise_generator.weight_noise(section[stream]["seed"], section[stream]["draws"], shapes).items()}
        for stream in ("adapt", "predict")
    }


def export(run_dir: Path, out: Path, release: Release, key=None, inner_steps: int | None = None, ensemble: int | None = None) -> Bundle:
    """Write the bundle of a trained run for the ONNX target; ``inner_steps`` sets the device's adaptation budget
    (default: the inner steps the run was trained with); ``ensemble`` the weight draws a Gaussian posterior's
    predictive averages (default: as many as ``metaedge eval``). The run's task family says what its receiver is."""
    if inner_steps is not None and inner_steps < 1:
        raise UserError(f"--inner-steps {inner_steps} must be at least 1")
    if ensemble is not None and not 1 <= ensemble <= noise_generator.MAX_DRAWS:
        raise UserError(f"--ensemble {ensemble} must lie in [1, {noise_generator.MAX_DRAWS}]")
    from metaedge.sdk import families

    family = families.of_run(read_config(run_dir), run_dir)
    receiver = family.receiver(run_dir, inner_steps, ensemble)
    return write_onnx_bundle(out, release, receiver, key)


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
    model: dict | None = None  # the manifest's model section (default: the MLP's)
    forward: Callable[[Params, torch.Tensor], torch.Tensor] = forward
    output: str = "log_probs"
    loss: str = "cross_entropy_mean_onehot"
    noise: dict | None = None  # a Gaussian posterior's draws (the manifest's algorithm.noise, spec §7.4)


def mlp_model(params: Params) -> dict:
    sizes = [features(params), *(params[f"l{i}.bias"].shape[-1] for i in range(len(params)) if f"l{i}.bias" in params)]
    stacked, gaussian = params["l0.weight"].dim() == 3, any(k.startswith(LOGSTD_PREFIX) for k in params)
    output = (
        {"modules": int(params["l0.weight"].shape[0]), "output": "log_softmax"}
        if modular.ASSIGNMENT in params
        else {"particles": int(params["l0.weight"].shape[0]), "output": "log_mean_softmax"}
        if stacked
        else {"posterior": "gaussian", "output": "log_mean_softmax"}
        if gaussian
        else {"output": "log_softmax"}
    )
    return {
        "kind": "mlp",
        "sizes": sizes,
        "context": int(params["context"].shape[-1]) if "context" in params else 0,
        "activation": "relu",
        "weight_layout": "in_out",
        **output,
    }


def graphs_section(receiver: Receiver, draws: dict, loop: bool, fused: bool) -> dict:
    """The manifest's ``graphs``: every graph's inputs and outputs in order, with their roles (spec §7)."""
    params, inner, task = receiver.params, receiver.inner, receiver.task
    n_features, classes = len(task["features"]), task.get("classes")
    adapted = inner.keys(params)

    def noise_inputs(stream: str) -> list[dict]:
        return [
            {"name": m.noise_name(k), "role": m.ROLE_NOISE, "stream": stream, "parameter": k, "shape": list(v.shape), "dtype": "float32"}
            for k, v in draws.get(stream, {}).items()
        ]

    parameters = [{"name": k, "role": m.ROLE_PARAMETER} for k in params]
    onehot = {"name": m.PILOT_ONEHOT, "role": m.ROLE_PILOT_ONEHOT, "shape": ["P", classes], "dtype": "float32"}
    step_inputs = [
        *parameters,
        *({"name": m.anchor_name(k), "role": m.ROLE_ANCHOR, "parameter": k} for k in adapted if anchored(inner)),
        *noise_inputs("adapt"),
        {"name": m.PILOT_SAMPLES, "role": m.ROLE_PILOT_SAMPLES, "shape": ["P", n_features], "dtype": "float32"},
        *([onehot] if classes is not None else []),
    ]
    step_outputs = [{"name": m.adapted_name(k), "role": m.ROLE_PARAMETER, "parameter": k} for k in adapted]
    samples_input = {"name": m.SAMPLES, "role": m.ROLE_SAMPLES, "shape": ["N", n_features], "dtype": "float32"}
    role = m.ROLE_LOG_PROBS if classes is not None else m.ROLE_OUTPUTS
    forward_outputs = [{"name": receiver.output, "role": role, "shape": ["N", classes or task["outputs"]], "dtype": "float32"}]
    steps_input = {"name": m.STEPS, "role": m.ROLE_STEPS, "shape": [], "dtype": "int64"}
    return {
        "opset": OPSET,
        m.FORWARD: {"inputs": [*parameters, *noise_inputs("predict"), samples_input], "outputs": forward_outputs},
        m.ADAPT_STEP: {"inputs": step_inputs, "outputs": step_outputs},
        **({m.ADAPT_LOOP: {"inputs": [*step_inputs, steps_input], "outputs": step_outputs}} if loop else {}),
        **({m.FRAME: {"inputs": [*step_inputs, samples_input], "outputs": forward_outputs}} if fused else {}),
    }


def write_onnx_bundle(out: str | Path, release: Release, receiver: Receiver, key=None) -> Bundle:
    """Trace the receiver's graphs and write its bundle (spec §3-§8)."""
    params, inner, task = receiver.params, receiver.inner, receiver.task
    n_features, classes = len(task["features"]), task.get("classes")
    adapted = inner.keys(params)
    draws = noise_tensors(receiver.noise, params) if receiver.noise else {}
    # the Loop graph saves a runtime call per step, which pays only from two steps on (`metaedge bench device`);
    # a one-step bundle carries the fused frame graph instead (a Gaussian posterior's draws aside)
    loop = inner.steps > 1
    fused = not loop and not receiver.noise
    modular_assignment = {"assignment": "relaxed" if inner.assignment == "relaxed" else "exhaustive"} if modular.ASSIGNMENT in params else {}
    manifest = {
        "target": "onnx",
        **release.fields(),
        "task": task,
        "model": receiver.model or mlp_model(params),
        "algorithm": {
            "name": receiver.algo,
            "inner_lr": inner.lr,
            "inner_steps": inner.steps,
            "adapts": list(adapted),
            "loss": receiver.loss,
            "prox": inner.prox,
            **({"noise": receiver.noise} if receiver.noise else {}),
            **modular_assignment,
        },
        "parameters": [{"name": k, "shape": list(v.shape), "dtype": "float32", "adapts": k in adapted} for k, v in params.items()],
        "graphs": graphs_section(receiver, draws, loop, fused),
        "selftest": {
            "atol": SELFTEST_ATOL,
            "pilots": len(receiver.selftest["adapt.pilot_samples"]),
            "samples": len(receiver.selftest["forward.samples"]),
        },
        "source": receiver.source,
    }
    step = adapt_step_graph(params, inner, n_features, classes, draws.get("adapt"))
    artifacts = {
        m.THETA: ("theta.safetensors", tensors.dumps({k: v.numpy() for k, v in params.items()})),
        m.FORWARD: ("forward.onnx", forward_graph(params, receiver.forward, n_features, receiver.output, draws.get("predict"))),
        m.ADAPT_STEP: ("adapt_step.onnx", step),
        **({m.ADAPT_LOOP: ("adapt_loop.onnx", loop_model(step, list(adapted)))} if loop else {}),
        **({m.FRAME: ("frame.onnx", frame_graph(params, inner, n_features, classes, receiver.forward, receiver.output))} if fused else {}),
        m.SELFTEST: ("selftest.safetensors", tensors.dumps(receiver.selftest)),
    }
    return write_bundle(out, manifest, artifacts, key=key)


def deployed_modular(
    params: Params, inner: InnerLoop, steps: int | None, run_dir: Path, model: Callable[[Params, torch.Tensor], torch.Tensor] = forward
):
    """A modular run as a device runs it (spec §7.5): the modules plus assignment logits, the only adapted
    parameter; an annealing run's device searches every assignment (one step: the search is exact), a relaxed
    run's takes its gradient steps on the logits. Returns θ, the inner loop and ``model``'s forward function."""
    count, depth = next(iter(params.values())).shape[0], len(modular.layers(params))
    if count**depth > modular.MAX_ASSIGNMENTS:
        raise UserError(
            f"'{run_dir}' has {count} modules in each of {depth} layers: a device would score {count**depth:,} "
            f"assignments per frame (at most {modular.MAX_ASSIGNMENTS:,}); train with fewer --modules"
        )
    exhaustive = inner.assignment != "relaxed"
    inner = dataclasses.replace(inner, adapt=(modular.ASSIGNMENT,), steps=steps or (1 if exhaustive else inner.steps))
    return modular.deployable(params), inner, functools.partial(modular.assigned_forward, model=model)
