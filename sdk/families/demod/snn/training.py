"""Meta-training the plastic synapses' starting point θ on the host, with the rule itself (§6.1.2).

Everything runs on the host reference simulator (``backends/loihi/reference``), which runs
exactly Lava's dynamics, batched over tasks. Per outer step, for a batch of devices k:
- ``fomaml``: φ_k = the rule applied to θ over the training pilots; the rule's own estimate
  of the gradient (eq. 6.4), summed over the validation pilots at φ_k without applying it,
  is the first-order meta-gradient (§2.3.1): θ ← θ − β · mean_k G_k, with
  G_k = −Σ_t Δw_k(t) / (η · N_va) (Δw = −η · estimate, so G is a per-pilot gradient);
- ``reptile``: θ ← θ + β (mean_k φ_k − θ) (eq. 2.22–2.23);
- ``joint``: no inner loop; G_k is the rule's estimate at θ over all of device k's pilots.
What is meta-learned: θ (classes × hidden). The encoder and the hidden layer are fixed by
design (``backends/loihi/network``); η and the neuron constants are hyperparameters.
θ is kept at the best validation SER after on-chip adaptation, measured every ``val_every``
steps on held-out devices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from metaedge.backends.loihi.network import SnnSpec, encode, input_weights, probabilities, teacher
from metaedge.backends.loihi.reference import hidden_spikes, output_layer
from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.snn.config import SnnTask, SnnTrainConfig, SnnTraining
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta.trainer import Schedule, train
from metaedge.sdk.options import Progress, per_iteration, silent, trained_line
from metaedge.sdk.rundir import CONFIG, RUN_FORMAT, RUN_VERSION, THETA, read_best_theta, read_kind_config, write_json

MODEL_KIND = "snn"


def default_task() -> DemodConfig:
    """The spiking receiver's default task (``config.SnnTask``): QPSK, the published I/Q imbalance and Rayleigh
    channel, 20 dB, 4 known pilots (one per symbol)."""
    t = SnnTask()
    return DemodConfig(order=t.order, snr_db=t.snr_db, pilots=t.pilots, val_pilots=32, payload=1000, frame=2000)


def snn_task(t: SnnTask = SnnTask()) -> DemodConfig:
    """The default task with another constellation, pilot count, SNR or channel (a UserError if impossible)."""
    try:
        return default_task().replace(
            order=t.order, pilots=t.pilots, snr_db=t.snr_db, channel=t.channel, phase_max_deg=t.phase_max_deg if t.channel == "phase" else 180.0
        )
    except ValueError as e:
        raise UserError(str(e)) from None


@dataclass
class SnnRun:
    path: Path
    task: DemodConfig
    spec: SnnSpec
    train: SnnTrainConfig
    theta: np.ndarray


@dataclass(frozen=True)
class Streams:
    """Symbols of a batch of devices as the plastic layer sees them: hidden spikes (θ-independent,
    so computed once) and the teacher raster (None: learning off)."""

    symbols: int
    hidden: np.ndarray
    teacher: np.ndarray | None

    @classmethod
    def encode(cls, spec: SnnSpec, samples: np.ndarray, labels: np.ndarray | None) -> "Streams":
        return cls(
            samples.shape[-2], hidden_spikes(spec, input_weights(spec), encode(spec, samples)), teacher(spec, labels) if labels is not None else None
        )

    def then(self, other: "Streams") -> "Streams":
        """This stream followed by ``other``."""
        return Streams(
            self.symbols + other.symbols, np.concatenate([self.hidden, other.hidden], axis=-2), np.concatenate([self.teacher, other.teacher], axis=-2)
        )


def adapt(spec: SnnSpec, theta: np.ndarray, pilots: Streams) -> np.ndarray:
    """φ per device [devices, classes, hidden]: the rule applied to θ over the pilots."""
    return output_layer(spec, theta, pilots.hidden, pilots.teacher).weights


def rule_gradient(spec: SnnSpec, weights: np.ndarray, data: Streams) -> np.ndarray:
    """The rule's per-pilot gradient estimate at ``weights`` (eq. 6.4), per device, not applied."""
    rule_sum = output_layer(spec, weights, data.hidden, data.teacher, apply=False).rule_sum
    return -rule_sum / (spec.learning_rate * data.symbols)


def decide(spec: SnnSpec, weights: np.ndarray, payload: Streams) -> np.ndarray:
    """Decisions [devices, symbols] for the payload, learning off."""
    spikes = output_layer(spec, weights, payload.hidden, None).spikes
    return probabilities(spec, spikes, payload.symbols).argmax(-1)


def adapted_ser(spec: SnnSpec, theta: np.ndarray, pilots: Streams, payload: Streams, labels: np.ndarray) -> np.ndarray:
    """SER per device after on-chip adaptation from θ."""
    return (decide(spec, adapt(spec, theta, pilots), payload) != labels).mean(-1)


def outer_step(spec: SnnSpec, method: str, beta: float, theta: np.ndarray, tr: Streams, va: Streams) -> np.ndarray:
    if method == "reptile":
        return theta + beta * (adapt(spec, theta, tr).mean(0) - theta)
    if method == "fomaml":
        return theta - beta * rule_gradient(spec, adapt(spec, theta, tr), va).mean(0)
    return theta - beta * rule_gradient(spec, theta, tr.then(va)).mean(0)


def run(options: SnnTraining, progress: Progress = silent) -> dict:
    """``metaedge train snn``: train ``options`` into its run directory; the final state."""
    task = snn_task(options.task)
    try:
        spec = SnnSpec(classes=task.order, grid=options.grid, steps=options.timesteps, learning_rate=options.learning_rate)
    except ValueError as e:
        raise UserError(str(e)) from None
    name = f"snn-{options.train.method}"
    progress(0, total=options.train.iterations, label=name)
    state = train_snn(options.out, task, spec, options.train, per_iteration(progress, name, "val_ser"))
    return {"run": str(options.out), "name": name, **state}


def text(state: dict) -> str:
    return trained_line(state, "best validation SER after on-chip adaptation", "val_ser")


def train_default(out: Path, method: str, seed: int = 0, task: DemodConfig | None = None) -> dict:
    """θ of ``method`` with the default network and outer loop, on ``task`` (default: the spiking receiver's)."""
    task = task or default_task()
    return train_snn(out, task, SnnSpec(classes=task.order), SnnTrainConfig(method=method, seed=seed))


class SnnProblem:
    """θ of the plastic synapses, stepped by the three-factor rule's own estimate (FOMAML, Reptile or joint: not a
    gradient torch computes), validated by the SER after on-chip adaptation on held-out devices."""

    metric, label, maximize = "val_ser", "validation SER after on-chip adaptation", False

    def __init__(self, task: DemodConfig, spec: SnnSpec, cfg: SnnTrainConfig) -> None:
        self.task, self.spec, self.cfg = task, spec, cfg
        self.tasks = DemodTasks(task, seed=cfg.seed)
        val = self.tasks.frames(self.tasks.devices("val", cfg.val_devices), task.pilots, task.val_pilots, self.tasks.rng("val", 1))
        self.val_pilots, self.val_payload, self.val_labels = Streams.encode(spec, val.x_tr, val.y_tr), Streams.encode(spec, val.x_va, None), val.y_va
        self.devices = self.tasks.devices("train", cfg.iterations * cfg.tasks_per_batch)
        self.rng, self.iteration = self.tasks.rng("train", 1), 0
        self.theta = np.zeros((spec.classes, spec.hidden))

    def step(self) -> None:
        index = np.arange(self.iteration * self.cfg.tasks_per_batch, (self.iteration + 1) * self.cfg.tasks_per_batch)
        self.iteration += 1
        batch = self.tasks.frames(self.devices.take(index), self.task.pilots, self.task.val_pilots, self.rng)
        tr, va = Streams.encode(self.spec, batch.x_tr, batch.y_tr), Streams.encode(self.spec, batch.x_va, batch.y_va)
        self.theta = outer_step(self.spec, self.cfg.method, self.cfg.beta, self.theta, tr, va)

    def validate(self) -> dict:
        ser = float(adapted_ser(self.spec, self.theta, self.val_pilots, self.val_payload, self.val_labels).mean())
        return {"val_ser": ser, "theta_max": float(np.abs(self.theta).max())}

    def keep(self, out: Path, record: dict) -> None:
        save_theta(out / THETA, self.spec, self.theta)


def train_snn(out: Path, task: DemodConfig, spec: SnnSpec, cfg: SnnTrainConfig, progress: Callable[[int, dict], None] | None = None) -> dict:
    """Train θ and write the run directory; returns the final state."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    if task.order != spec.classes:
        raise UserError(f"the network has {spec.classes} output neurons, the task {task.order} classes")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, run_config(task, spec, cfg))
    return train(SnnProblem(task, spec, cfg), Schedule(cfg.iterations, cfg.val_every), out, progress)


def save_theta(path: Path, spec: SnnSpec, theta: np.ndarray) -> None:
    tensors.save(path, {"theta": theta.copy(), "input_weights": input_weights(spec)})


def run_config(task: DemodConfig, spec: SnnSpec, cfg: SnnTrainConfig) -> dict:
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "task": task.to_dict(),
        "model": {"kind": MODEL_KIND, **spec.to_dict()},
        "train": asdict(cfg),
    }


def load_snn_run(path: str | Path) -> SnnRun:
    """A spiking run directory: configuration and best θ, or a UserError saying what is wrong."""
    path = Path(path)
    config = read_kind_config(path, MODEL_KIND, "spiking-receiver", "metaedge train snn")
    try:
        task = DemodConfig(**config["task"])
        spec = SnnSpec.from_dict({k: v for k, v in config["model"].items() if k != "kind"})
        train = SnnTrainConfig(**config["train"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / CONFIG} is invalid ({e}); retrain or restore the run directory") from None
    (theta,) = read_best_theta(path, ("theta",))
    if theta.shape != (spec.classes, spec.hidden):
        raise UserError(f"{path / THETA} holds θ of shape {theta.shape}, the network needs {(spec.classes, spec.hidden)}")
    return SnnRun(path, task, spec, train, theta)
