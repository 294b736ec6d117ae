"""What an ONNX bundle of a demodulator run carries: θ as trained (an MLP, a particle ensemble, a Gaussian posterior
or a set of modules), its adaptation, the task section and self-test vectors of one test frame."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.receivers import ENSEMBLE
from metaedge.sdk.families.demod.task import DemodTasks, task_section
from metaedge.sdk.families.demod.training import configs_from_run
from metaedge.sdk.meta import get_algorithm
from metaedge.sdk.meta.bayes import log_predictive
from metaedge.sdk.meta.core import InnerLoop
from metaedge.sdk.meta.defaults import Gaussian
from metaedge.sdk.models.mlp import Params, forward
from metaedge.sdk.rundir import load_run
from metaedge.sdk.targets.onnx import SELFTEST_PILOTS, SELFTEST_SAMPLES, Receiver, deployed_modular, gaussian_noise, noise_tensors, selftest_vectors


def receiver(run_dir: Path, steps: int | None, ensemble: int | None = None) -> Receiver:
    run = load_run(run_dir)
    task, train = configs_from_run(run.config)
    inner = train.inner()
    if steps is not None:
        inner = dataclasses.replace(inner, steps=steps)
    if ensemble is not None and inner.posterior != "gaussian":
        raise UserError(f"--ensemble applies to runs with a Gaussian posterior (vbmaml), not to '{run_dir}' ({train.algo})")
    params = {k: torch.from_numpy(v) for k, v in run.theta.items()}
    noise = gaussian_noise(params, inner, train.seed, ensemble or ENSEMBLE) if inner.posterior == "gaussian" else None
    samples = noise["predict"]["draws"] if noise else inner.of(Gaussian).samples
    fn = functools.partial(log_predictive, posterior=inner.posterior, samples=samples)  # the MLP itself for a point θ
    if get_algorithm(train.algo).modular:
        params, inner, fn = deployed_modular(params, inner, steps, run_dir)
    selftest = demod_selftest(params, inner, DemodTasks(task, seed=train.seed), fn, noise_tensors(noise, params) if noise else None)
    return Receiver(
        params,
        inner,
        train.algo,
        task_section(task),
        selftest,
        {"run": str(run_dir), "algo": train.algo, "seed": train.seed},
        forward=fn,
        noise=noise,
    )


def demod_selftest(params: Params, inner: InnerLoop, tasks: DemodTasks, fn=forward, noise: dict[str, Params] | None = None) -> dict[str, np.ndarray]:
    frame = tasks.frames(tasks.devices("test", 1), SELFTEST_PILOTS, SELFTEST_SAMPLES, tasks.rng("test", 99))
    onehot = np.eye(tasks.config.order, dtype=np.float32)[frame.y_tr[0]]
    return selftest_vectors(params, inner, frame.x_tr[0], onehot, frame.x_va[0], fn=fn, noise=noise)
