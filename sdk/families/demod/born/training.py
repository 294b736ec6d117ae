"""Meta-training (or joint training) of a Born machine's angles θ, exactly, batched over tasks.

The task family: QPSK devices with a residual carrier phase (uniform within ±60° by
default) and the published I/Q imbalance; one known pilot per frame by default. Writes a run directory
(``metaedge.sdk.rundir`` layout) whose ``theta.safetensors`` holds the angles with the best
validation predictive log-loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metaedge.backends.qiskit.model import BornSpec, default_logit_scale, label_log_probs, uniform_prior
from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.born.config import BornTask, BornTrainConfig, BornTraining, InnerConfig
from metaedge.sdk.families.demod.born.learning import adapt, predictive_nll
from metaedge.sdk.families.demod.born.simulator import BornSimulator
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta.trainer import Schedule, train
from metaedge.sdk.options import Progress, per_iteration, silent, trained_line
from metaedge.sdk.rundir import CONFIG, RUN_FORMAT, RUN_VERSION, THETA, read_best_theta, read_kind_config, write_json

MODEL_KIND = "born"


def default_task() -> DemodConfig:
    """QPSK with a residual phase (``config.BornTask``: ±60°, 10 dB, one known pilot), I/Q imbalance as published.

    One pilot, the regime where the prior decides: with four at 10 dB the pilots alone fix the
    phase and no prior matters, and with two the meta-learned and joint circuits tie on SER
    (measured: docs/results/qiskit.md)."""
    return born_task(BornTask())


def born_task(t: BornTask) -> DemodConfig:
    try:
        return DemodConfig(
            order=4, snr_db=t.snr_db, channel="phase", phase_max_deg=t.phase_max_deg, pilots=t.pilots, val_pilots=32, payload=1000, frame=2000
        )
    except ValueError as e:
        raise UserError(str(e)) from None


def run(options: BornTraining, progress: Progress = silent) -> dict:
    """``metaedge train born``: train ``options`` into its run directory; the final state."""
    task = born_task(options.task)
    try:
        spec = make_spec(task, options.qubits, options.layers)
    except ValueError as e:
        raise UserError(str(e)) from None
    name = f"born-{options.train.method}"
    progress(0, total=options.train.iterations, label=name)
    state = train_born(options.out, task, spec, options.inner, options.train, per_iteration(progress, name, "val_loss"))
    return {"run": str(options.out), "name": name, **state}


def text(state: dict) -> str:
    return trained_line(state, "best validation log-loss", "val_loss")


@dataclass
class BornRun:
    path: Path | None
    task: DemodConfig
    spec: BornSpec
    inner: InnerConfig
    train: BornTrainConfig | None
    theta: np.ndarray
    lr: np.ndarray  # step size per angle


class TaskData:
    """Per-weight log-likelihoods of a batch of frames: pilots [B, 2^n] and per-symbol label log-probs [B, 2^n, N]."""

    def __init__(self, spec: BornSpec, x_tr, y_tr, x_va, y_va) -> None:
        train_logs = torch.from_numpy(label_log_probs(spec, x_tr, y_tr))
        self.loglik = train_logs.sum(-1)  # log p(D_tr | w), as pilot_log_likelihood
        self.val_logs = torch.from_numpy(label_log_probs(spec, x_va, y_va))
        self.pooled_logs = torch.cat([train_logs, self.val_logs], dim=2)


def meta_loss(
    sim: BornSimulator, theta: torch.Tensor, lr: torch.Tensor, data: TaskData, inner: InnerConfig, method: str, create_graph: bool
) -> torch.Tensor:
    """Validation predictive log-loss after adaptation (meta), or pooled log-loss of θ itself (joint)."""
    batch = data.loglik.shape[0]
    angles = theta.expand(batch, -1)
    if method == "joint":
        return predictive_nll(sim.probabilities(angles), data.pooled_logs)
    phi = adapt(sim, angles, data.loglik, inner, lr=lr, create_graph=create_graph)
    return predictive_nll(sim.probabilities(phi), data.val_logs)


class BornProblem:
    """The prior circuit θ (and, meta-learned, one step size per angle) trained by Adam on the exact predictive
    log-loss after adaptation, computed through the Born machine's simulator; validated by the same loss."""

    metric, label, maximize = "val_loss", "validation log-loss", False

    def __init__(self, task: DemodConfig, spec: BornSpec, inner: InnerConfig, cfg: BornTrainConfig) -> None:
        self.task, self.spec, self.inner, self.cfg = task, spec, inner, cfg
        self.tasks = DemodTasks(task, seed=cfg.seed)
        self.sim = BornSimulator(spec)
        torch.manual_seed(cfg.seed)
        self.theta = torch.tensor(uniform_prior(spec)) + 0.1 * torch.randn(spec.parameters, dtype=torch.float64)
        self.theta.requires_grad_(True)
        # Meta-SGD style: the meta method also learns one step size per angle (log scale);
        # joint learning has no inner loop to learn it for and keeps inner.lr
        meta = cfg.method == "meta"
        self.log_lr = torch.full((spec.parameters,), float(np.log(inner.lr)), dtype=torch.float64, requires_grad=meta)
        self.optimizer = torch.optim.Adam([self.theta, self.log_lr] if meta else [self.theta], lr=cfg.outer_lr)
        self.val = TaskData(spec, *_frames(self.tasks, "val", cfg.val_devices, task, 0))
        self.devices = self.tasks.devices("train", cfg.iterations * cfg.tasks_per_batch)
        self.rng, self.iteration = self.tasks.rng("train", 1), 0

    def step(self) -> float:
        index = np.arange(self.iteration * self.cfg.tasks_per_batch, (self.iteration + 1) * self.cfg.tasks_per_batch)
        self.iteration += 1
        batch = self.tasks.frames(self.devices.take(index), self.task.pilots, self.task.val_pilots, self.rng)
        data = TaskData(self.spec, batch.x_tr, batch.y_tr, batch.x_va, batch.y_va)
        loss = meta_loss(self.sim, self.theta, self.log_lr.exp(), data, self.inner, self.cfg.method, create_graph=True)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def validate(self) -> dict:
        lr = self.log_lr.detach().exp()
        return {"val_loss": float(meta_loss(self.sim, self.theta.detach(), lr, self.val, self.inner, "meta", create_graph=False))}

    def keep(self, out: Path, record: dict) -> None:
        tensors.save(out / THETA, {"theta": self.theta.detach().numpy().copy(), "lr": self.log_lr.detach().exp().numpy().copy()})


def train_born(
    out: Path, task: DemodConfig, spec: BornSpec, inner: InnerConfig, cfg: BornTrainConfig, progress: Callable[[int, dict], None] | None = None
) -> dict:
    """Train θ and write the run directory; returns the final state (best validation loss and iteration)."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, run_config(task, spec, inner, cfg))
    return train(BornProblem(task, spec, inner, cfg), Schedule(cfg.iterations, cfg.val_every), out, progress)


def _frames(tasks: DemodTasks, split: str, count: int, task: DemodConfig, stream: int):
    batch = tasks.frames(tasks.devices(split, count), task.pilots, task.val_pilots, tasks.rng(split, 1, stream))
    return batch.x_tr, batch.y_tr, batch.x_va, batch.y_va


def run_config(task: DemodConfig, spec: BornSpec, inner: InnerConfig, cfg: BornTrainConfig) -> dict:
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "task": task.to_dict(),
        "model": {"kind": MODEL_KIND, **spec.to_dict()},
        "inner": inner.to_dict(),
        "train": asdict(cfg),
    }


def train_default(out: Path, method: str, seed: int = 0) -> dict:
    """The default circuit and budget of ``method`` on the default task."""
    task = default_task()
    return train_born(out, task, make_spec(task, BornSpec.qubits, BornSpec.layers), InnerConfig(), BornTrainConfig(method=method, seed=seed))


def make_spec(task: DemodConfig, qubits: int, layers: int) -> BornSpec:
    return BornSpec(qubits=qubits, layers=layers, logit_scale=default_logit_scale(qubits, task.noise_var))


def load_born_run(path: str | Path) -> BornRun:
    """A Born-machine run directory: configuration and best θ, or a UserError saying what is wrong."""
    path = Path(path)
    config = read_kind_config(path, MODEL_KIND, "Born-machine", "metaedge train born")
    try:
        task = DemodConfig(**config["task"])
        spec = BornSpec.from_dict(config["model"])
        inner = InnerConfig(**config["inner"])
        train = BornTrainConfig(**config["train"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / CONFIG} is invalid ({e}); retrain or restore the run directory") from None
    theta, lr = read_best_theta(path, ("theta", "lr"))
    if theta.shape != (spec.parameters,) or lr.shape != (spec.parameters,):
        raise UserError(f"{path / THETA} holds {theta.shape} angles, the model needs ({spec.parameters},)")
    return BornRun(path, task, spec, inner, train, theta, lr)
