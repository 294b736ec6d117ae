"""Host reference simulator: exactly the dynamics Lava's floating-point models run, in numpy,
vectorised over tasks (a leading batch axis), so meta-training over hundreds of devices is fast.

Per timestep t, in Lava's order (``Loihi2SimCfg`` floating point, ``t_epoch`` = 1):
1. the input Dense delivers W_in·s_in(t−1) to the hidden LIF; the plastic Dense delivers
   W(t−1)·s_h(t−1) to the output neurons (each Dense buffers one step);
2. LIF: u ← u(1 − du) + a, v ← v(1 − dv) + u + b (b: the hidden biases; 0 at the output),
   spike if v > vth, then v ← 0;
3. the output neuron's third factor (eq. 6.4–6.5): e_i = |c_i|·([c_i > 0] − s_i) from the
   teacher signal c_i ∈ {−1, 0, +1}, post_i = 1 / (1 + |v_i − vth| / width)² on the membrane
   before reset, sent as y2 = η_i·post·max(e, 0) and y3 = η_i·post·max(−e, 0);
4. the learning phase: x1 ← x1·e^{−1/τ} + impulse·s_h(t); y_k is used as y_k·e^{−1/65535}
   (``Loihi3FLearningRule`` gives the y traces τ = 65535 and no impulse);
   Δw_ij = x1_j·y2_i − x1_j·y3_i (the rule string ``u0*x1*y2 - u0*x1*y3``), applied to W.
The same Δw summed without applying it is the rule's own estimate of −η·∂L/∂w (eq. 6.4),
which first-order meta-learning uses on the validation pilots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metaedge.backends.loihi.network import Y_TRACE_TAU, SnnParameters, SnnSpec

Y_TRACE_DECAY = math.exp(-1.0 / Y_TRACE_TAU)


@dataclass(frozen=True)
class HiddenRun:
    spikes: np.ndarray  # [..., steps, hidden]
    voltage: np.ndarray | None  # [..., steps, hidden] v before reset, when recorded (meta-training's surrogate)


def hidden_layer(spec: SnnSpec, params: SnnParameters, inputs: np.ndarray, record: bool = False) -> HiddenRun:
    """Run the hidden layer over input rasters [..., steps, inputs]; ``record`` keeps the voltages."""
    drive = inputs @ params.input_weights.T  # W_in·s_in(t), delivered at t + 1
    batch = inputs.shape[:-2]
    u = np.zeros((*batch, spec.hidden))
    v = np.zeros_like(u)
    out = np.zeros((*batch, inputs.shape[-2], spec.hidden))
    voltage = np.zeros_like(out) if record else None
    silent = np.zeros_like(u)
    for t in range(inputs.shape[-2]):  # step 0 too: nothing arrives yet, but the bias does
        u = u * (1.0 - spec.hidden_du) + (drive[..., t - 1, :] if t else silent)
        v = v * (1.0 - spec.hidden_dv) + u + params.hidden_bias
        spikes = v > spec.hidden_vth
        if record:
            voltage[..., t, :] = v
        v = np.where(spikes, 0.0, v)
        out[..., t, :] = spikes
    return HiddenRun(out, voltage)


def hidden_spikes(spec: SnnSpec, params: SnnParameters, inputs: np.ndarray) -> np.ndarray:
    """Hidden-layer spikes [..., steps, hidden] for input rasters [..., steps, inputs]."""
    return hidden_layer(spec, params, inputs).spikes


@dataclass(frozen=True)
class OutputRun:
    spikes: np.ndarray  # [..., steps, classes]
    weights: np.ndarray  # [..., classes, hidden] after the stream
    rule_sum: np.ndarray  # [..., classes, hidden] Σ_t Δw(t), whether applied or not
    error: np.ndarray | None  # [..., steps, classes] post·e, the rule's error at each neuron (None: learning off)


def output_layer(
    spec: SnnSpec, theta: np.ndarray, hidden: np.ndarray, teacher: np.ndarray | None, rates: np.ndarray | None = None, apply: bool = True
) -> OutputRun:
    """Run the plastic layer from weights ``theta`` [..., classes, hidden] over hidden spikes.

    ``teacher`` [..., steps, classes] (None: learning off) drives the rule with the output neurons' learning
    rates ``rates`` [classes] (needed when the teacher is given); ``apply=False`` accumulates the rule's
    updates without changing the weights."""
    steps = hidden.shape[-2]
    batch = np.broadcast_shapes(theta.shape[:-2], hidden.shape[:-2])
    w = np.broadcast_to(theta, (*batch, *theta.shape[-2:])).copy()
    rule_sum = np.zeros_like(w)
    u = np.zeros((*batch, spec.classes))
    v = np.zeros_like(u)
    x1 = np.zeros((*batch, spec.hidden))
    pending = np.zeros_like(u)  # the plastic Dense's buffer
    out = np.zeros((*batch, steps, spec.classes))
    error = np.zeros_like(out) if teacher is not None else None
    trace_decay = math.exp(-1.0 / spec.trace_tau)
    for t in range(steps):
        s_h = hidden[..., t, :]
        drive, pending = pending, np.einsum("...kh,...h->...k", w, s_h)
        u = u * (1.0 - spec.out_du) + drive
        v = v * (1.0 - spec.out_dv) + u
        spikes = v > spec.out_vth
        out[..., t, :] = spikes
        if teacher is not None:
            c = teacher[..., t, :]
            post = 1.0 / np.square(1.0 + np.abs(v - spec.out_vth) / spec.surrogate_width)
            err = np.abs(c) * ((c > 0).astype(float) - spikes)
            error[..., t, :] = post * err
            y2 = rates * post * np.maximum(err, 0.0) * Y_TRACE_DECAY
            y3 = rates * post * np.maximum(-err, 0.0) * Y_TRACE_DECAY
        v = np.where(spikes, 0.0, v)
        x1 = x1 * trace_decay + spec.trace_impulse * s_h
        if teacher is not None:
            dw = x1[..., None, :] * y2[..., :, None] - x1[..., None, :] * y3[..., :, None]
            rule_sum += dw
            if apply:
                w += dw
    return OutputRun(out, w, rule_sum, error)


class ReferenceReceiver:
    """The reference simulator behind the same calls as ``lava_net.LavaReceiver`` (one task, no Lava)."""

    def __init__(self, spec: SnnSpec, params: SnnParameters, theta: np.ndarray) -> None:
        self.spec, self.params = spec, params
        self.timesteps = 0
        self.set_weights(theta)

    def set_weights(self, theta: np.ndarray) -> None:
        self.w = np.array(theta, dtype=np.float64)

    def weights(self) -> np.ndarray:
        return self.w.copy()

    def run_stream(self, inputs: np.ndarray, teacher: np.ndarray) -> np.ndarray:
        learning = bool(np.any(teacher))
        run = output_layer(
            self.spec, self.w, hidden_spikes(self.spec, self.params, inputs), teacher if learning else None, self.params.learning_rates
        )
        self.w = run.weights
        self.timesteps += inputs.shape[0]
        return run.spikes

    def stop(self) -> None:
        pass
