"""Meta-training the spiking receiver on the host, with the rule itself (§6.1.2) and local surrogate errors.

Everything runs on the host reference simulator (``backends/loihi/reference``), which runs
exactly Lava's dynamics, batched over tasks. Per outer step, for a batch of devices k:
- θ (the plastic synapses' start):
  ``fomaml``: φ_k = the rule applied to θ over the training pilots; the rule's own estimate
  of the gradient (eq. 6.4), summed over the validation pilots at φ_k without applying it,
  is the first-order meta-gradient (§2.3.1): θ ← θ − β · mean_k G_k, with
  G_k = −Σ_t Δw_k(t) / (η · N_va) (Δw = −η · estimate, so G is a per-pilot gradient);
  ``reptile``: θ ← θ + β (mean_k φ_k − θ) (eq. 2.22–2.23);
  ``joint``: no inner loop; G_k is the rule's estimate at θ over all of device k's pilots.
- the hidden layer (input weights and biases), with a surrogate gradient: the rule's error at
  the output neurons, post_i·e_i, reaches hidden neuron j through the synapse W_ij one step
  later, passes its surrogate derivative 1/(1 + |v_j − vth|/β)² and the input's trace through
  the LIF decays (SuperSpike's one-step approximation, Zenke and Ganguli 2018); evaluated at
  φ_k on the validation pilots (first-order meta-gradient), or at θ on all pilots (joint).
- each output neuron's learning rate η_i (the Meta-SGD of the rule, Li et al. 2017, first
  order): ∂L_va/∂η_i ≈ Σ_j G_k,ij · ∂φ_k,ij/∂η_i, with ∂φ/∂η_i the rule's update per unit η over
  the training pilots; a step on log η_i, bounded to ±0.1, keeps it positive and stable, and
  η_i ≤ out_vth keeps one step of the rule from moving a synapse by more than about a
  threshold's worth (the first-order gradient keeps asking for a larger rate past the point
  where the SER climbs). Joint training has no inner loop to learn it from: its neurons
  keep η.
θ and the learned parameters are kept at the best validation SER after on-chip adaptation,
measured every ``val_every`` steps on held-out devices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from metaedge.backends.loihi.network import SnnParameters, SnnSpec, encode, probabilities, rotate_frame, teacher
from metaedge.backends.loihi.reference import HiddenRun, OutputRun, hidden_layer, hidden_spikes, output_layer
from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.snn.config import SnnTask, SnnTrainConfig, SnnTraining
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks, TaskBatch
from metaedge.sdk.meta.trainer import Schedule, train
from metaedge.sdk.options import Progress, per_iteration, silent, trained_line
from metaedge.sdk.rundir import CONFIG, RUN_FORMAT, RUN_VERSION, THETA, read_kind_config, read_theta, write_json

MODEL_KIND = "snn"
RATE_STEP = 0.1  # the most log η_i moves in one outer step: the rate's gradient grows with η, a bound keeps it stable


def default_task() -> DemodConfig:
    """The spiking receiver's default task (``config.SnnTask``): 16-QAM, the published I/Q imbalance and Rayleigh
    channel, 20 dB, 8 known pilots."""
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
    params: SnnParameters


@dataclass(frozen=True)
class Streams:
    """Symbols of a batch of devices as the network sees them: input spikes and the teacher raster (None: learning
    off). The hidden layer's spikes depend on its learned parameters, so they are computed per use."""

    symbols: int
    inputs: np.ndarray
    teacher: np.ndarray | None

    @classmethod
    def encode(cls, spec: SnnSpec, samples: np.ndarray, labels: np.ndarray | None) -> "Streams":
        return cls(samples.shape[-2], encode(spec, samples), teacher(spec, labels) if labels is not None else None)

    def then(self, other: "Streams") -> "Streams":
        """This stream followed by ``other``."""
        return Streams(
            self.symbols + other.symbols, np.concatenate([self.inputs, other.inputs], axis=-2), np.concatenate([self.teacher, other.teacher], axis=-2)
        )


def phase_referenced(spec: SnnSpec, constellation: np.ndarray, batch: TaskBatch) -> TaskBatch:
    """The frames as the device presents them to the network: rotated by their pilots' phase where ``spec`` asks."""
    if not spec.pilot_phase:
        return batch
    x_tr, x_va = rotate_frame(constellation, batch.x_tr, batch.y_tr, batch.x_va)
    return TaskBatch(x_tr=x_tr, y_tr=batch.y_tr, x_va=x_va, y_va=batch.y_va)


def adapt(spec: SnnSpec, theta: np.ndarray, params: SnnParameters, pilots: Streams) -> np.ndarray:
    """φ per device [devices, classes, hidden]: the rule applied to θ over the pilots."""
    return output_layer(spec, theta, hidden_spikes(spec, params, pilots.inputs), pilots.teacher, params.learning_rates).weights


def decide(spec: SnnSpec, weights: np.ndarray, params: SnnParameters, payload: Streams) -> np.ndarray:
    """Decisions [devices, symbols] for the payload, learning off."""
    return decide_hidden(spec, weights, hidden_spikes(spec, params, payload.inputs), payload.symbols)


def decide_hidden(spec: SnnSpec, weights: np.ndarray, hidden: np.ndarray, symbols: int) -> np.ndarray:
    """Decisions [devices, symbols] from the payload's hidden spikes (computed once for several weights)."""
    return probabilities(spec, output_layer(spec, weights, hidden, None).spikes, symbols).argmax(-1)


def adapted_ser(spec: SnnSpec, theta: np.ndarray, params: SnnParameters, pilots: Streams, payload: Streams, labels: np.ndarray) -> np.ndarray:
    """SER per device after on-chip adaptation from θ."""
    return (decide(spec, adapt(spec, theta, params, pilots), params, payload) != labels).mean(-1)


@dataclass(frozen=True)
class Evaluation:
    """The rule run at ``weights`` over labelled data without applying it: its per-pilot gradient estimate for the
    plastic weights, and what the hidden layer's surrogate gradient needs."""

    gradient: np.ndarray  # [devices, classes, hidden]
    hidden: HiddenRun
    output: OutputRun


def evaluate_rule(spec: SnnSpec, weights: np.ndarray, params: SnnParameters, data: Streams) -> Evaluation:
    """The rule's per-pilot gradient estimate at ``weights`` (eq. 6.4), per device, and the recorded runs."""
    hidden = hidden_layer(spec, params, data.inputs, record=True)
    output = output_layer(spec, weights, hidden.spikes, data.teacher, params.learning_rates, apply=False)
    gradient = -output.rule_sum / (params.learning_rates[:, None] * data.symbols)
    return Evaluation(gradient, hidden, output)


def input_traces(spec: SnnSpec, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """∂v/∂W_in and ∂v/∂b of the hidden LIF, resets ignored: the input spikes (one step late, the Dense's buffer)
    filtered by the current's and the voltage's decays [..., steps, inputs], and the bias's [steps]."""
    eu = np.zeros(inputs.shape[:-2] + inputs.shape[-1:])
    ev, eb = np.zeros_like(eu), 0.0
    traces, bias = np.zeros_like(inputs), np.zeros(inputs.shape[-2])
    for t in range(inputs.shape[-2]):
        if t:
            eu = eu * (1.0 - spec.hidden_du) + inputs[..., t - 1, :]
        ev = ev * (1.0 - spec.hidden_dv) + eu
        eb = eb * (1.0 - spec.hidden_dv) + 1.0
        traces[..., t, :], bias[t] = ev, eb
    return traces, bias


def hidden_gradient(spec: SnnSpec, weights: np.ndarray, data: Streams, run: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """The surrogate gradient of the per-pilot loss with respect to the input weights [H, 2M] and the biases [H]
    (see the module text), averaged over devices."""
    back = np.zeros_like(run.hidden.voltage)
    back[:, :-1] = np.einsum("dtk,dkh->dth", run.output.error[:, 1:], weights)  # s_h(t) drives the output at t + 1
    signal = back / np.square(1.0 + np.abs(run.hidden.voltage - spec.hidden_vth) / spec.surrogate_width)
    traces, bias = input_traces(spec, data.inputs)
    scale = data.symbols * len(signal)
    return -np.einsum("dth,dtk->hk", signal, traces) / scale, -np.einsum("dth,t->h", signal, bias) / scale


def outer_step(
    spec: SnnSpec, cfg: SnnTrainConfig, theta: np.ndarray, params: SnnParameters, tr: Streams, va: Streams
) -> tuple[np.ndarray, SnnParameters]:
    """One outer step of ``cfg.method`` (see the module text): the new θ and parameters."""
    rates = params.learning_rates
    if cfg.method == "joint":
        data = tr.then(va)
        weights = np.broadcast_to(theta, (data.inputs.shape[0], *theta.shape))
        run = evaluate_rule(spec, weights, params, data)
        theta = theta - cfg.beta * run.gradient.mean(0)
    else:
        data = va
        pilots = output_layer(spec, theta, hidden_spikes(spec, params, tr.inputs), tr.teacher, rates)
        weights = pilots.weights
        run = evaluate_rule(spec, weights, params, data)
        theta = theta + cfg.beta * (weights.mean(0) - theta) if cfg.method == "reptile" else theta - cfg.beta * run.gradient.mean(0)
        if cfg.rate_lr:
            per_unit_rate = pilots.rule_sum / rates[:, None]  # ∂φ/∂η_i
            rate_gradient = np.einsum("dkh,dkh->k", run.gradient, per_unit_rate) / len(weights)
            rates = np.minimum(rates * np.exp(np.clip(-cfg.rate_lr * rates * rate_gradient, -RATE_STEP, RATE_STEP)), spec.out_vth)
    if cfg.hidden_lr:
        g_w, g_b = hidden_gradient(spec, weights, data, run)
        return theta, SnnParameters(params.input_weights - cfg.hidden_lr * g_w, params.hidden_bias - cfg.hidden_lr * g_b, rates)
    return theta, SnnParameters(params.input_weights, params.hidden_bias, rates)


def run(options: SnnTraining, progress: Progress = silent) -> dict:
    """``metaedge train snn``: train ``options`` into its run directory; the final state."""
    task = snn_task(options.task)
    if not options.learning_rate > 0:
        raise UserError(f"--learning-rate must be > 0 to train (the rule's gradient estimate is its update over η), got {options.learning_rate}")
    try:
        spec = SnnSpec(
            classes=task.order,
            grid=options.grid,
            hidden=options.hidden or options.grid**2,
            steps=options.timesteps,
            learning_rate=options.learning_rate,
            pilot_phase=not options.no_pilot_phase,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    name = f"snn-{options.train.method}"
    progress(0, total=options.train.iterations, label=name)
    state = train_snn(options.out, task, spec, options.train, per_iteration(progress, name, "val_ser"))
    return {"run": str(options.out), "name": name, **state}


def text(state: dict) -> str:
    return trained_line(state, "best validation SER after on-chip adaptation", "val_ser")


def train_default(
    out: Path, method: str, seed: int = 0, task: DemodConfig | None = None, pilot_phase: bool = SnnSpec.pilot_phase, **train: object
) -> dict:
    """``method`` with the default network and outer loop (``train``: other outer-loop options), on ``task``
    (default: the spiking receiver's)."""
    task = task or default_task()
    return train_snn(out, task, SnnSpec(classes=task.order, pilot_phase=pilot_phase), SnnTrainConfig(method=method, seed=seed, **train))


def initial_parameters(spec: SnnSpec, seed: int) -> SnnParameters:
    """The hand-designed grid when H = grid²; otherwise its cells repeated to H neurons, with seeded jitter on every
    weight so that no two neurons stay alike."""
    if spec.hidden == spec.grid**2:
        return SnnParameters.grid(spec)
    grid = SnnParameters.grid(SnnSpec(**{**spec.to_dict(), "hidden": spec.grid**2}))
    cells = np.arange(spec.hidden) % spec.grid**2
    jitter = np.random.default_rng([seed, 11]).normal(scale=0.1 * spec.hidden_weight, size=(spec.hidden, spec.inputs))
    return SnnParameters(grid.input_weights[cells] + jitter, np.zeros(spec.hidden), grid.learning_rates)


class SnnProblem:
    """θ of the plastic synapses, stepped by the three-factor rule's own estimate (FOMAML, Reptile or joint: not a
    gradient torch computes), the hidden layer and the learning rates by first-order estimates; validated by the
    SER after on-chip adaptation on held-out devices."""

    metric, label, maximize = "val_ser", "validation SER after on-chip adaptation", False

    def __init__(self, task: DemodConfig, spec: SnnSpec, cfg: SnnTrainConfig) -> None:
        self.task, self.spec, self.cfg = task, spec, cfg
        self.tasks = DemodTasks(task, seed=cfg.seed)
        val = self.tasks.frames(self.tasks.devices("val", cfg.val_devices), task.pilots, task.val_pilots, self.tasks.rng("val", 1))
        val = phase_referenced(spec, self.tasks.constellation, val)
        self.val_pilots, self.val_payload, self.val_labels = Streams.encode(spec, val.x_tr, val.y_tr), Streams.encode(spec, val.x_va, None), val.y_va
        self.devices = self.tasks.devices("train", cfg.iterations * cfg.tasks_per_batch)
        self.rng, self.iteration = self.tasks.rng("train", 1), 0
        self.theta = np.zeros((spec.classes, spec.hidden))
        self.params = initial_parameters(spec, cfg.seed)

    def step(self) -> None:
        index = np.arange(self.iteration * self.cfg.tasks_per_batch, (self.iteration + 1) * self.cfg.tasks_per_batch)
        self.iteration += 1
        batch = phase_referenced(
            self.spec, self.tasks.constellation, self.tasks.frames(self.devices.take(index), self.task.pilots, self.task.val_pilots, self.rng)
        )
        tr, va = Streams.encode(self.spec, batch.x_tr, batch.y_tr), Streams.encode(self.spec, batch.x_va, batch.y_va)
        self.theta, self.params = outer_step(self.spec, self.cfg, self.theta, self.params, tr, va)

    def validate(self) -> dict:
        ser = float(adapted_ser(self.spec, self.theta, self.params, self.val_pilots, self.val_payload, self.val_labels).mean())
        rates = self.params.learning_rates
        return {"val_ser": ser, "theta_max": float(np.abs(self.theta).max()), "rate_min": float(rates.min()), "rate_max": float(rates.max())}

    def keep(self, out: Path, record: dict) -> None:
        tensors.save(out / THETA, {"theta": self.theta.copy(), **self.params.tensors()})


def train_snn(out: Path, task: DemodConfig, spec: SnnSpec, cfg: SnnTrainConfig, progress: Callable[[int, dict], None] | None = None) -> dict:
    """Train and write the run directory; returns the final state."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    if task.order != spec.classes:
        raise UserError(f"the network has {spec.classes} output neurons, the task {task.order} classes")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, run_config(task, spec, cfg))
    return train(SnnProblem(task, spec, cfg), Schedule(cfg.iterations, cfg.val_every), out, progress)


def run_config(task: DemodConfig, spec: SnnSpec, cfg: SnnTrainConfig) -> dict:
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "task": task.to_dict(),
        "model": {"kind": MODEL_KIND, **spec.to_dict()},
        "train": asdict(cfg),
    }


def load_snn_run(path: str | Path) -> SnnRun:
    """A spiking run directory: configuration, best θ and learned parameters, or a UserError saying what is wrong."""
    path = Path(path)
    config = read_kind_config(path, MODEL_KIND, "spiking-receiver", "metaedge train snn")
    try:
        task = DemodConfig(**config["task"])
        spec = SnnSpec.from_dict({k: v for k, v in config["model"].items() if k != "kind"})
        train = SnnTrainConfig(**config["train"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / CONFIG} is invalid ({e}); retrain or restore the run directory") from None
    stored = read_theta(path, "retrain the run (metaedge train snn)")
    theta = stored.get("theta")
    if theta is None or theta.shape != (spec.classes, spec.hidden):
        raise UserError(f"{path / THETA} holds no θ of shape {(spec.classes, spec.hidden)}; retrain the run (metaedge train snn)")
    try:
        params = SnnParameters.from_tensors(spec, stored)
    except ValueError as e:
        raise UserError(f"{path / THETA}: {e}; retrain the run (metaedge train snn)") from None
    return SnnRun(path, task, spec, train, theta.astype(np.float64), params)
