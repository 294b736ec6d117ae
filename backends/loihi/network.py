"""The spiking receiver, in numpy: its description, the spike encoder, the fixed hidden weights
and the read-out. Shared by the host (reference simulator, meta-training, export) and the
device (Lava), so both present exactly the same spikes.

Timeline. A block of n received samples becomes a stream of n·(T + G) timesteps: symbol k
is presented during steps k·P + 1 … k·P + T (P = T + G) and followed by G silent steps.
Dense connections in Lava deliver a spike one step later, so the hidden layer answers one
step and the output layer two steps after the input; the output *window* of symbol k is
steps k·P + 3 … k·P + T + 2 (G ≥ 2 keeps windows apart). The teacher signal of a pilot is
on during its window.

Phase reference (``pilot_phase``). The frame's pilots, whose classes are known, give a
least-squares channel estimate ĥ = Σ y_j·s̄_j / Σ |s_j|² on the nominal constellation s; every
sample of the frame (pilots and payload) is rotated by the conjugate of its phase. The
rotation is the only thing the device computes from the pilots outside the network; what it
leaves — I/Q imbalance, the estimate's error — is for the network and its rule.

Encoder. An automatic gain control first scales the block to unit power per real dimension
(the rms over the block's samples). Each rail (I, Q) then drives ``grid`` input neurons with
Gaussian receptive fields centred on an even grid over [−range, range], activation
a = exp(−(x − c)² / 2σ²), σ = grid spacing · ``width``. A neuron spikes deterministically at
rate a: an accumulator starts at ½, adds a every step of the presentation and spikes
(subtracting 1) whenever it reaches 1.

Hidden layer. H LIF neurons (``hidden``), each fed by every input neuron through
``input_weights`` [H, 2·grid] and a constant bias ``hidden_bias`` [H] (Lava's ``bias_mant``,
added to v every step). Both are learned offline and fixed on the device. The hand-designed
start (``SnnParameters.grid``) has H = grid² neurons, one per cell (i, j) of the I/Q grid,
fed by input neuron i of the I rail and input neuron j of the Q rail with weight
``hidden_weight``: with the threshold between one and two inputs' worth, a hidden neuron
fires when both rails are near its cell — a spiking 2-D receptive field.

Output layer. One LIF neuron per class on plastic synapses θ (classes × hidden); output neuron
i learns with its own rate η_i (``learning_rates`` [K], carried by its third factor). Decision:
the neuron with the most spikes in the window; ties go to the earliest first spike, then to
the lowest index. Confidence: p_i ∝ count_i + ½ + 10⁻³·earliness_i (earliness ∈ [0, 1)).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np

RULE = "u0*x1*y2 - u0*x1*y3"  # Lava's dw string: Δw = x1·(y2 − y3), e⁺ on y2 and e⁻ on y3 (a sign fixed point can carry)
Y_TRACE_TAU = 65535  # Loihi3FLearningRule's y traces: τ = 2^16 − 1, impulse 0
LATENCY = 2  # steps from an input spike to the output layer's response
TIE_BREAK = 1e-3  # weight of a first spike's earliness in the confidence
MAX_HIDDEN = 1024  # hidden neurons a bundle may declare
REVISION_1_2 = {"hidden", "pilot_phase"}  # snn members a revision 1.1 bundle lacks


@dataclass(frozen=True)
class SnnSpec:
    """Everything that fixes the network's dynamics; the bundle's ``snn`` section."""

    classes: int = 4
    grid: int = 8  # receptive fields per rail
    hidden: int = 64  # hidden LIF neurons H (grid² for the hand-designed grid)
    field_range: float = 1.75  # centres span [−range, range] after gain control
    field_width: float = 0.8  # σ in grid spacings
    steps: int = 8  # T: presentation steps per symbol
    gap: int = 2  # G: silent steps after each symbol (≥ LATENCY)
    hidden_weight: float = 1.0
    hidden_du: float = 1.0
    hidden_dv: float = 0.5
    hidden_vth: float = 1.5
    out_du: float = 1.0
    out_dv: float = 0.5
    out_vth: float = 1.0
    trace_tau: float = 2.0  # τ of the pre-synaptic trace x1
    trace_impulse: float = 1.0
    learning_rate: float = 0.05  # η every output neuron starts from (a bundle may carry one per neuron)
    surrogate_width: float = 0.5  # post_i = 1 / (1 + |v_i − vth| / width)²
    pilot_phase: bool = True  # rotate each frame by the phase of its pilots' channel estimate
    chunk: int = 16  # symbols per Lava run (ring-buffer length = chunk · period)

    def __post_init__(self) -> None:
        checks = [
            (self.classes >= 2, "classes must be ≥ 2"),
            (2 <= self.grid <= 32, "grid must lie in 2..32"),
            (1 <= self.hidden <= MAX_HIDDEN, f"hidden must lie in 1..{MAX_HIDDEN}"),
            (self.steps >= 1 and self.gap >= LATENCY, f"steps must be ≥ 1 and gap ≥ {LATENCY}"),
            (self.chunk >= 1, "chunk must be ≥ 1"),
            (all(0.0 <= d <= 1.0 for d in (self.hidden_du, self.hidden_dv, self.out_du, self.out_dv)), "decays must lie in [0, 1]"),
            (
                all(
                    x > 0 and math.isfinite(x)
                    for x in (self.field_range, self.field_width, self.hidden_vth, self.out_vth, self.trace_tau, self.surrogate_width)
                ),
                "ranges, widths, thresholds and τ must be positive",
            ),
            (math.isfinite(self.learning_rate) and self.learning_rate >= 0, "learning_rate must be ≥ 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"snn: {message}")

    @property
    def inputs(self) -> int:
        return 2 * self.grid

    @property
    def period(self) -> int:
        return self.steps + self.gap

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SnnSpec":
        known = {f.name: f.type for f in fields(cls)}
        unknown, missing = set(data) - set(known), set(known) - set(data) - REVISION_1_2
        if unknown or missing:
            raise ValueError(f"snn: {'unknown' if unknown else 'missing'} fields {sorted(unknown or missing)}")
        if not isinstance(data.get("pilot_phase", False), bool):
            raise ValueError("snn: pilot_phase must be true or false")
        values = {k: (v if known[k] == "bool" else int(v) if known[k] == "int" else float(v)) for k, v in data.items()}
        if "grid" in values:  # revision 1.1 bundles: the grid's H = M², no phase reference
            values.setdefault("hidden", values["grid"] ** 2)
            values.setdefault("pilot_phase", False)
        return cls(**values)


@dataclass(frozen=True)
class SnnParameters:
    """What is learned offline and fixed on the device: the hidden layer's input weights [H, 2M] and biases [H],
    and each output neuron's learning rate [K]."""

    input_weights: np.ndarray
    hidden_bias: np.ndarray
    learning_rates: np.ndarray

    NAMES: ClassVar[tuple[str, ...]] = ("input_weights", "hidden_bias", "learning_rates")

    @classmethod
    def grid(cls, spec: SnnSpec) -> "SnnParameters":
        """The hand-designed start: hidden cell (i, j) = index i·grid + j listens to I-neuron i and Q-neuron
        grid + j; no biases; η for every output neuron."""
        if spec.hidden != spec.grid**2:
            raise ValueError(f"snn: the grid hidden layer has grid² = {spec.grid**2} neurons, not {spec.hidden}")
        w = np.zeros((spec.hidden, spec.inputs))
        cells = np.arange(spec.hidden)
        w[cells, cells // spec.grid] = spec.hidden_weight
        w[cells, spec.grid + cells % spec.grid] = spec.hidden_weight
        return cls(w, np.zeros(spec.hidden), np.full(spec.classes, spec.learning_rate))

    @classmethod
    def from_tensors(cls, spec: SnnSpec, tensors: dict[str, np.ndarray]) -> "SnnParameters":
        """From the θ artifact; a missing bias means zeros and missing rates mean ``spec.learning_rate``
        (revision 1.1 bundles). A ValueError names what is wrong."""
        defaults = {"hidden_bias": np.zeros(spec.hidden), "learning_rates": np.full(spec.classes, spec.learning_rate)}
        values = {}
        for name, shape in zip(cls.NAMES, ((spec.hidden, spec.inputs), (spec.hidden,), (spec.classes,))):
            value = tensors.get(name, defaults.get(name))
            if value is None or value.shape != shape or not np.isfinite(value).all():
                raise ValueError(f"θ artifact lacks a finite '{name}' of shape {shape}")
            values[name] = np.asarray(value, dtype=np.float64)
        if (values["learning_rates"] < 0).any():
            raise ValueError("θ artifact holds a negative learning rate in 'learning_rates'")
        return cls(**values)

    def tensors(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.NAMES}


def pilot_rotation(constellation: np.ndarray, pilots: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The unit rotation [...] that undoes the phase of the pilots' least-squares channel estimate (1 where the
    estimate is 0), for pilots [..., n, 2] of classes ``labels`` [..., n] on the nominal ``constellation`` [M]."""
    points = np.asarray(constellation)[labels]
    estimate = np.sum((pilots[..., 0] + 1j * pilots[..., 1]) * np.conj(points), axis=-1)
    magnitude = np.abs(estimate)
    return np.where(magnitude > 0, np.conj(estimate) / np.where(magnitude > 0, magnitude, 1.0), 1.0)


def rotate(samples: np.ndarray, rotation: np.ndarray | complex) -> np.ndarray:
    """Samples [..., n, 2] multiplied, as complex numbers, by ``rotation`` [...]."""
    z = (samples[..., 0] + 1j * samples[..., 1]) * np.asarray(rotation)[..., None]
    return np.stack([z.real, z.imag], axis=-1)


def rotate_frame(constellation: np.ndarray, pilots: np.ndarray, labels: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pilots and payload [..., n, 2] rotated by the phase of the pilots' channel estimate (``pilot_rotation``)."""
    rotation = pilot_rotation(constellation, pilots, labels)
    return rotate(pilots, rotation), rotate(payload, rotation)


def gain_control(samples: np.ndarray) -> np.ndarray:
    """Scale a block [..., n, 2] to unit rms per real dimension (blocks of zeros stay zero)."""
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64), axis=(-2, -1), keepdims=True))
    return np.asarray(samples, dtype=np.float64) / np.where(rms > 0, rms, 1.0)


def rates(spec: SnnSpec, samples: np.ndarray) -> np.ndarray:
    """Input firing rates [..., n, inputs] in [0, 1] for gain-controlled samples [..., n, 2]."""
    centres = np.linspace(-spec.field_range, spec.field_range, spec.grid)
    sigma = spec.field_width * (centres[1] - centres[0])
    diff = samples[..., :, :, None] - centres  # [..., n, 2, grid]
    a = np.exp(-0.5 * np.square(diff / sigma))
    return a.reshape(*samples.shape[:-1], spec.inputs)


def encode(spec: SnnSpec, samples: np.ndarray, length: int | None = None) -> np.ndarray:
    """Input spike raster [..., steps, inputs] (float 0/1) of a block [..., n, 2] of received samples.

    ``length`` pads the stream with silent steps (to whole Lava chunks)."""
    a = rates(spec, gain_control(samples))  # [..., n, inputs]
    k = np.arange(1, spec.steps + 1)[:, None]
    # accumulator 0.5 + k·a crosses an integer at step k exactly when floor(0.5 + k·a) > floor(0.5 + (k−1)·a)
    spikes = np.floor(0.5 + k * a[..., None, :]) > np.floor(0.5 + (k - 1) * a[..., None, :])  # [..., n, T, inputs]
    n = samples.shape[-2]
    out = np.zeros((*samples.shape[:-2], n, spec.period, spec.inputs))
    out[..., :, : spec.steps, :] = spikes
    out = out.reshape(*samples.shape[:-2], n * spec.period, spec.inputs)
    return _pad(out, length)


def teacher(spec: SnnSpec, labels: np.ndarray, length: int | None = None) -> np.ndarray:
    """Teacher raster [..., steps, classes]: +1 for the label's neuron, −1 for the others, during each window; 0 elsewhere."""
    n = labels.shape[-1]
    one_hot = np.eye(spec.classes)[labels] * 2.0 - 1.0  # [..., n, K]
    out = np.zeros((*labels.shape[:-1], n, spec.period, spec.classes))
    out[..., :, LATENCY : LATENCY + spec.steps, :] = one_hot[..., None, :]
    return _pad(out.reshape(*labels.shape[:-1], n * spec.period, spec.classes), length)


def _pad(raster: np.ndarray, length: int | None) -> np.ndarray:
    if length is None or length == raster.shape[-2]:
        return raster
    if length < raster.shape[-2]:
        raise ValueError(f"stream of {raster.shape[-2]} steps does not fit {length}")
    pad = [(0, 0)] * raster.ndim
    pad[-2] = (0, length - raster.shape[-2])
    return np.pad(raster, pad)


def stream_length(spec: SnnSpec, symbols: int) -> int:
    """Steps to present ``symbols`` samples in whole chunks (Lava runs whole ring buffers)."""
    chunk_steps = spec.chunk * spec.period
    return -(-symbols * spec.period // chunk_steps) * chunk_steps


def window_counts(spec: SnnSpec, out_spikes: np.ndarray, symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts and first-spike step (T when none) per symbol: [..., symbols, classes] each."""
    idx = np.arange(symbols)[:, None] * spec.period + LATENCY + np.arange(spec.steps)[None, :]  # 0-based steps
    win = out_spikes[..., idx, :]  # [..., symbols, T, K]
    counts = win.sum(-2)
    fired = win > 0
    first = np.where(fired.any(-2), fired.argmax(-2), spec.steps)
    return counts, first


def probabilities(spec: SnnSpec, out_spikes: np.ndarray, symbols: int) -> np.ndarray:
    """Class probabilities [..., symbols, classes] from the output spikes (see the module text)."""
    counts, first = window_counts(spec, out_spikes, symbols)
    score = counts + 0.5 + TIE_BREAK * (spec.steps - first) / spec.steps
    return score / score.sum(-1, keepdims=True)


def rule_section(spec: SnnSpec) -> dict:
    """The three-factor rule as the bundle states it (the arguments of Lava's ``Loihi3FLearningRule``)."""
    return {
        "dw": RULE,
        "t_epoch": 1,
        "x1_tau": spec.trace_tau,
        "x1_impulse": spec.trace_impulse,
        "x2_tau": 1.0,
        "x2_impulse": 0.0,
        "y_tau": Y_TRACE_TAU,
        "y_impulse": 0.0,
        "y2": "learning_rates[i] * post * max(e, 0)",
        "y3": "learning_rates[i] * post * max(-e, 0)",
        "error": "e_i = |c_i| * ([c_i > 0] - s_i), teacher c_i in {-1, 0, +1}",
        "post": "1 / (1 + |v_i - out_vth| / surrogate_width)^2, membrane before reset",
    }


# -- fixed point (Lava's fixed_pt models; informative, docs/bundle-format.md §14.8) --------------
WEIGHT_LIMIT = 254  # mixed-sign 8-bit weights: 8-bit magnitude plus sign, even values in [−256, 254]
TRACE_IMPULSE = 16  # x1 impulse in trace units (7-bit traces, 0…127)
Y_LIMIT = 127  # y2/y3 = round(y_scale · post · e±) are 7-bit third factors
VOLTAGE_SHIFT = 6  # Loihi aligns activations and thresholds 6 bits up inside the neuron
BIAS_MANT_LIMIT = 4095  # 13-bit signed bias mantissa
BIAS_EXP_LIMIT = 7  # 3-bit bias exponent


def layer_exponent(largest: float, limit: float) -> int:
    """The largest exponent k ≤ 10 with largest·2^k ≤ limit (0 at the least)."""
    return int(np.clip(np.floor(np.log2(limit / largest)), 0, 10))


def quantise_weights(values: np.ndarray, exp: int) -> np.ndarray:
    """8-bit mixed-sign weights: 2·round(w·2^(k−1)), clipped to [−256, 254]."""
    return np.clip(2 * np.round(np.asarray(values) * 2.0**exp / 2), -WEIGHT_LIMIT - 2, WEIGHT_LIMIT).astype(np.int64)


@dataclass(frozen=True)
class FixedPoint:
    """The network as Loihi's integers: θ with a shared exponent, the hidden layer with its own, and each output
    neuron's η split between the rule's constant m·2^e (shared) and its own 7-bit third-factor scale.

    Lava's fixed learning engine changes an integer weight by x1·y·m·2^e / 8 per step, so with
    x1 = 16·x1_float and y = y_scale_i·post·e, η_i,fixed = 16·y_scale_i·m·2^e / (8·2^weight_exp)."""

    weight_exp: int
    mantissa: int
    exponent: int
    y_scale: np.ndarray  # [K], 1…127
    hidden_exp: int

    @property
    def learning_rates(self) -> np.ndarray:
        return TRACE_IMPULSE * self.y_scale * self.mantissa * 2.0**self.exponent / 8 / 2.0**self.weight_exp

    @property
    def rule(self) -> str:
        c = f"{self.mantissa}*2^{self.exponent}"
        return f"{c}*u0*x1*y2 - {c}*u0*x1*y3"

    def quantise(self, theta: np.ndarray) -> np.ndarray:
        return quantise_weights(theta, self.weight_exp)

    def weights(self, quantised: np.ndarray) -> np.ndarray:
        return np.asarray(quantised, dtype=np.float64) / 2.0**self.weight_exp

    def input_weights(self, params: SnnParameters) -> np.ndarray:
        return quantise_weights(params.input_weights, self.hidden_exp)

    def hidden_threshold(self, spec: SnnSpec) -> int:
        return int(round(spec.hidden_vth * 2**self.hidden_exp))

    def hidden_bias(self, params: SnnParameters) -> tuple[np.ndarray, int]:
        """Bias mantissa [H] and one exponent: b·2^k_h in the neuron's units (2^6 above the weights'), as
        mantissa·2^exponent with the smallest exponent that keeps every 13-bit mantissa in range."""
        scaled = params.hidden_bias * 2.0 ** (self.hidden_exp + VOLTAGE_SHIFT)
        largest = float(np.abs(scaled).max())
        exp = 0 if largest <= BIAS_MANT_LIMIT else min(BIAS_EXP_LIMIT, int(np.ceil(np.log2(largest / BIAS_MANT_LIMIT))))
        return np.clip(np.round(scaled / 2.0**exp), -BIAS_MANT_LIMIT, BIAS_MANT_LIMIT).astype(np.int64), exp


def fixed_point(spec: SnnSpec, theta: np.ndarray, params: SnnParameters) -> FixedPoint:
    """The largest shared exponents that keep θ and the output threshold within half the weight range (room for
    adaptation), and the input weights and hidden threshold within it; the smallest rule constant m·2^e
    (m in 1…7, e in −7…8) that reaches the largest η_i with 7-bit factors, and each neuron's factor scale that
    brings its η_i,fixed closest to η_i."""
    weight_exp = layer_exponent(max(float(np.abs(theta).max()), spec.out_vth), WEIGHT_LIMIT / 2)
    hidden_exp = layer_exponent(max(float(np.abs(params.input_weights).max()), spec.hidden_vth), WEIGHT_LIMIT / 2)
    targets = params.learning_rates * 8 * 2.0**weight_exp / TRACE_IMPULSE  # = y_scale_i · m · 2^e
    constants = sorted((m * 2.0**e, m, e) for m in range(1, 8) for e in range(-7, 9))
    value, m, e = next((c for c in constants if c[0] * Y_LIMIT >= targets.max()), constants[-1])
    y_scale = np.where(targets > 0, np.clip(np.round(targets / value), 1, Y_LIMIT), 0).astype(np.int64)  # η_i = 0 stays 0
    return FixedPoint(weight_exp, m, e, y_scale, hidden_exp)


def decay_int(decay: float, offset: int) -> int:
    """Loihi's 12-bit decay constant for a float decay (the hardware adds ``offset`` before using it)."""
    return int(np.clip(round(decay * 4096) - offset, 0, 4095))
