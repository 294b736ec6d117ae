"""Export a spiking run to a bundle for the ``loihi`` target (docs/bundle-format.md §14).

The bundle holds the network description (sizes, encoder, neuron constants, timesteps), θ
and the learned, fixed parameters (input weights, hidden biases, learning rates) as safetensors, the three-factor rule (its Lava string and
constants), and self-test vectors computed by the host reference simulator: the weights
after adapting on one frame's pilots, and the output spikes of its payload.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metaedge.backends.loihi.network import encode, rule_section, stream_length, teacher
from metaedge.backends.loihi.reference import hidden_spikes, output_layer
from metaedge.deploy import tensors
from metaedge.deploy.bundle import Bundle, write_bundle
from metaedge.sdk.families.demod.snn.training import SnnRun, load_snn_run
from metaedge.sdk.families.demod.task import DemodTasks, task_section
from metaedge.sdk.targets import Release

SELFTEST_SYMBOLS, SELFTEST_ATOL = 24, 1e-5


def selftest_vectors(run: SnnRun) -> dict[str, np.ndarray]:
    """One test frame: pilots and labels, the weights after adaptation, payload samples and their output spikes."""
    spec, params = run.spec, run.params
    tasks = DemodTasks(run.task, seed=0)
    frame = tasks.frames(tasks.devices("test", 1), run.task.pilots, SELFTEST_SYMBOLS, tasks.rng("test", 99))
    pilots, labels, payload = frame.x_tr[0], frame.y_tr[0], frame.x_va[0]
    length = stream_length(spec, len(labels))
    adapted = output_layer(
        spec, run.theta, hidden_spikes(spec, params, encode(spec, pilots, length)), teacher(spec, labels, length), params.learning_rates
    ).weights
    length = stream_length(spec, len(payload))
    spikes = output_layer(spec, adapted, hidden_spikes(spec, params, encode(spec, payload, length)), None).spikes
    return {
        "adapt.pilot_samples": pilots,
        "adapt.pilot_labels": labels.astype(np.int64),
        "adapt.weights": adapted,
        "predict.samples": payload,
        "predict.spikes": spikes,
    }


def learned(run: SnnRun) -> list[str]:
    """What training learned, in the order of the θ artifact: θ always, the others where their step size was not 0."""
    cfg = run.train
    hidden = ["input_weights", "hidden_bias"] if cfg is None or cfg.hidden_lr else []
    rates = ["learning_rates"] if cfg is None or (cfg.rate_lr and cfg.method != "joint") else []
    return ["theta", *hidden, *rates]


def export(run_dir: Path, out: Path, release: Release, key=None) -> Bundle:
    run = load_snn_run(run_dir)
    return write_snn_bundle(run, out, f"snn-{run.train.method}", release, key=key)


def write_snn_bundle(run: SnnRun, out: str | Path, name: str, release: Release, key=None) -> Bundle:
    """The bundle of θ = ``run.theta`` with the network ``run.spec``."""
    spec = run.spec
    manifest = {
        "target": "loihi",
        **release.fields(),
        "task": task_section(run.task),
        "snn": spec.to_dict(),
        "algorithm": {
            "name": name,
            "adaptation": "three-factor rule on the plastic synapses, pilots presented once",
            "rule": rule_section(spec),
            "meta_learned": learned(run),
            "decision": "most output spikes in the window; ties: earliest first spike, then lowest index",
        },
        "parameters": [
            {"name": "theta", "shape": [spec.classes, spec.hidden], "dtype": "float64", "adapts": True},
            {"name": "input_weights", "shape": [spec.hidden, spec.inputs], "dtype": "float64", "adapts": False},
            {"name": "hidden_bias", "shape": [spec.hidden], "dtype": "float64", "adapts": False},
            {"name": "learning_rates", "shape": [spec.classes], "dtype": "float64", "adapts": False},
        ],
        "selftest": {"atol": SELFTEST_ATOL, "symbols": SELFTEST_SYMBOLS, "pilots": run.task.pilots, "spikes": "identical"},
        "source": {"run": str(run.path) if run.path else None, "method": name, "seed": run.train.seed if run.train else None},
    }
    artifacts = {
        "theta": ("theta.safetensors", tensors.dumps({"theta": run.theta, **run.params.tensors()})),
        "selftest": ("selftest.safetensors", tensors.dumps(selftest_vectors(run))),
    }
    return write_bundle(out, manifest, artifacts, key=key)
