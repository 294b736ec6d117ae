"""Few-pilot demodulation for IoT devices with unknown hardware impairments (monograph §5.2).

Each task is one device: a transmitter with its own I/Q imbalance (ε, δ) and a flat
channel h, both fixed for the device: Rayleigh by default, Rician (``channel="rician"``: a line-of-sight
component of random phase carrying K/(K+1) of the power), or a pure residual carrier phase
(``channel="phase"``, used with QPSK by the quantum receiver). A frame carries pilots (split into a
training part and a validation part) and payload symbols. Defaults follow the published
setup (Park, Jang, Simeone, Kang 2021): 16-QAM on {±1, ±3}², ε = 0.15·Beta(5, 2),
δ = 15°·Beta(5, 2), h ~ CN(0, 1), SNR 20 dB with Es = 10 (noise 0.05 per real dimension).

SNR convention: SNR = Es / N0 where Es is the average energy of the transmitted
constellation (after the impairment and its renormalisation) and N0 the complex noise
variance, so each real dimension of the noise has variance N0 / 2.

Pilots are a known sequence by default, as in the authors' code and in real systems: pilot
i is symbol ``pilot_symbols(M)[i mod M]``, a fixed permutation in which every run of M
successive pilots covers the constellation once. Validation and payload symbols are
uniform at random.

Generation is numpy only, vectorised over devices, and seeded; meta-training, validation
and meta-test devices come from disjoint random streams so they never coincide.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from metaedge.backends.selection import SELECT
from metaedge.sdk.errors import UserError
from metaedge.sdk.options import option

Split = Literal["train", "val", "test"]
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


class ConfigError(UserError):
    """An impossible or inconsistent configuration, with a message that says how to fix it."""


def qam_constellation(order: int) -> np.ndarray:
    """Square M-QAM on odd integers {±1, ±3, …}², row-major from the most negative I.

    Index i ↦ (I, Q) = (levels[i // m], levels[i % m]) with m = √M; energy 2(M − 1)/3.
    """
    m = math.isqrt(order)
    if order < 4 or m * m != order:
        raise ConfigError(f"modulation order {order} is not a square QAM order; use 4, 16, 64 or 256")
    levels = np.arange(-(m - 1), m, 2, dtype=np.float64)
    i_part = np.repeat(levels, m)
    q_part = np.tile(levels, m)
    return i_part + 1j * q_part


PILOT_PERMUTATION_SEED = 20210  # fixes the known pilot order; part of the task definition


def pilot_symbols(order: int, count: int | None = None) -> np.ndarray:
    """Indices of the known pilot sequence: a fixed permutation of 0..M−1, repeated."""
    perm = np.random.default_rng(PILOT_PERMUTATION_SEED).permutation(order)
    count = order if count is None else count
    return np.resize(perm, count)


PILOT_SEQUENCES = ("fixed", "random")
CHANNELS = ("rayleigh", "rician", "phase")  # a known sequence covering the constellation; or drawn at random per frame


@dataclass(frozen=True)
class DemodConfig:
    """Everything that defines the task family. Defaults: the published reference setup."""

    order: int = option(16, "square QAM order: 4, 16, 64, 256")
    snr_db: float = option(20.0, "Es/N0 in dB")
    eps_max: float = option(0.15, "amplitude imbalance ε = eps_max · Beta(a, b)")
    delta_max_deg: float = option(15.0, "phase imbalance δ = delta_max · Beta(a, b), in degrees")
    beta_a: float = option(5.0, "shape a of the imbalances' Beta distribution")
    beta_b: float = option(2.0, "shape b of the imbalances' Beta distribution")
    channel_var: float = option(1.0, "E|h|² (rayleigh: h ~ CN(0, channel_var); rician)", flag=False)
    channel: str = option(
        "rayleigh", "flat channel per device: rayleigh, rician (K factor --k-factor-db) or a residual phase e^{jφ}", choices=CHANNELS
    )
    k_factor_db: float = option(10.0, "rician: line-of-sight to scattered power K, dB")
    phase_max_deg: float = option(180.0, "phase: the residual carrier phase φ ~ U(± this many degrees)")
    pilots: int = option(4, "training pilots per task N_tr (meta-training and meta-test)", flag=False)
    val_pilots: int = option(160, "validation pilots per meta-training task N_va")
    payload: int = option(10_000, "payload symbols per test frame", flag=False)
    pilot_sequence: str = option("fixed", "pilot symbols: a known fixed sequence covering the constellation, or random", choices=PILOT_SEQUENCES)
    frame: int = option(20_000, "symbols a frame holds (pilots + payload, or N_tr + N_va)")

    def __post_init__(self) -> None:
        qam_constellation(self.order)  # validates the order
        checks = [
            (math.isfinite(self.snr_db), f"SNR {self.snr_db} dB is not a finite number"),
            (0.0 <= self.eps_max < 1.0, f"eps_max {self.eps_max} must lie in [0, 1) (an amplitude imbalance of 1 erases a rail)"),
            (0.0 <= self.delta_max_deg < 90.0, f"delta_max_deg {self.delta_max_deg} must lie in [0, 90)"),
            (self.beta_a > 0 and self.beta_b > 0, f"Beta({self.beta_a}, {self.beta_b}) needs both shape parameters > 0"),
            (self.channel_var > 0, f"channel variance {self.channel_var} must be > 0"),
            (self.channel in CHANNELS, f"channel '{self.channel}' is unknown; use {', '.join(CHANNELS)}"),
            (math.isfinite(self.k_factor_db), f"k_factor_db {self.k_factor_db} is not a finite number"),
            (0.0 <= self.phase_max_deg <= 180.0, f"phase_max_deg {self.phase_max_deg} must lie in [0, 180]"),
            (self.pilots >= 1, f"pilots {self.pilots} must be at least 1"),
            (self.pilot_sequence in PILOT_SEQUENCES, f"pilot sequence '{self.pilot_sequence}' is unknown; use {' or '.join(PILOT_SEQUENCES)}"),
            (self.val_pilots >= 1, f"val_pilots {self.val_pilots} must be at least 1"),
            (self.payload >= 1, f"payload {self.payload} must be at least 1"),
            (
                self.pilots + self.val_pilots <= self.frame,
                f"pilots + val_pilots = {self.pilots + self.val_pilots} exceed the frame of {self.frame} symbols; lower them or raise --frame",
            ),
            (
                self.pilots + self.payload <= self.frame,
                f"pilots + payload = {self.pilots + self.payload} exceed the frame of {self.frame} symbols; lower them or raise --frame",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def energy(self) -> float:
        """Average symbol energy Es of the nominal constellation (10 for 16-QAM)."""
        return 2.0 * (self.order - 1) / 3.0

    @property
    def noise_var(self) -> float:
        """Complex noise variance N0 = Es / SNR (0.1 at the defaults: 0.05 per real dimension)."""
        return self.energy / 10.0 ** (self.snr_db / 10.0)

    def replace(self, **changes) -> "DemodConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Devices:
    """Per-device impairments, one row per device."""

    eps: np.ndarray  # amplitude imbalance ε
    delta: np.ndarray  # phase imbalance δ, radians
    h: np.ndarray  # complex flat channel gain

    def __len__(self) -> int:
        return len(self.h)

    def take(self, index: np.ndarray) -> "Devices":
        return Devices(eps=self.eps[index], delta=self.delta[index], h=self.h[index])


@dataclass(frozen=True)
class TaskBatch:
    """Received samples and symbol indices for a batch of devices.

    Arrays have a leading device axis: x_* are float32 [devices, n, 2] (I, Q of the
    received sample), y_* are int64 [devices, n] (symbol indices into the constellation).
    """

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray


def iq_imbalance(symbols: np.ndarray, eps: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Transmitter I/Q imbalance (Park et al., IEEE TSP 2021): x_I = (1+ε)(cos δ s_I − sin δ s_Q), x_Q = (1−ε)(cos δ s_Q − sin δ s_I).

    ``symbols`` [..., n] complex, ``eps``/``delta`` broadcast against its leading axes.
    """
    s_i, s_q = symbols.real, symbols.imag
    c, s = np.cos(delta), np.sin(delta)
    x_i = (1.0 + eps) * (c * s_i - s * s_q)
    x_q = (1.0 - eps) * (c * s_q - s * s_i)
    return x_i + 1j * x_q


class DemodTasks:
    """Samples devices and frames for the demodulation task family."""

    def __init__(self, config: DemodConfig | None = None, seed: int = 0) -> None:
        self.config = config or DemodConfig()
        self.seed = int(seed)
        self.constellation = qam_constellation(self.config.order)

    # -- devices ---------------------------------------------------------------------------
    def rng(self, split: Split, *stream: int) -> np.random.Generator:
        """A generator for one split (and optional sub-stream); splits never share draws."""
        return np.random.default_rng([self.seed, _SPLIT_STREAM[split], *stream])

    def devices(self, split: Split, count: int) -> Devices:
        """The first ``count`` devices of a split: the same seed always gives the same devices."""
        cfg = self.config
        rng = self.rng(split, 0)
        eps = cfg.eps_max * rng.beta(cfg.beta_a, cfg.beta_b, size=count)
        delta = np.deg2rad(cfg.delta_max_deg) * rng.beta(cfg.beta_a, cfg.beta_b, size=count)
        if cfg.channel == "phase":
            h = np.exp(1j * np.deg2rad(cfg.phase_max_deg) * rng.uniform(-1.0, 1.0, size=count))
        elif cfg.channel == "rician":
            k = 10.0 ** (cfg.k_factor_db / 10.0)
            los = np.sqrt(cfg.channel_var * k / (k + 1.0)) * np.exp(2j * np.pi * rng.uniform(size=count))
            h = los + np.sqrt(cfg.channel_var / (k + 1.0) / 2.0) * (rng.standard_normal(count) + 1j * rng.standard_normal(count))
        else:
            h = np.sqrt(cfg.channel_var / 2.0) * (rng.standard_normal(count) + 1j * rng.standard_normal(count))
        return Devices(eps=eps, delta=delta, h=h)

    def distorted_constellation(self, devices: Devices) -> np.ndarray:
        """[devices, M] transmitted points per device, rescaled to the nominal average energy."""
        points = iq_imbalance(self.constellation[None, :], devices.eps[:, None], devices.delta[:, None])
        energy = np.mean(np.abs(points) ** 2, axis=1, keepdims=True)
        return points * np.sqrt(self.config.energy / energy)

    # -- frames ----------------------------------------------------------------------------
    def transmit(self, devices: Devices, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Received samples y = h·x + z for symbol indices ``labels`` [devices, n]; returns [devices, n, 2] float32."""
        points = self.distorted_constellation(devices)
        x = np.take_along_axis(points, labels, axis=1)
        noise = np.sqrt(self.config.noise_var / 2.0) * (rng.standard_normal(labels.shape) + 1j * rng.standard_normal(labels.shape))
        y = devices.h[:, None] * x + noise
        return np.stack([y.real, y.imag], axis=-1).astype(np.float32)

    def frames(self, devices: Devices, n_tr: int, n_va: int, rng: np.random.Generator) -> TaskBatch:
        """One frame per device: ``n_tr`` training pilots and ``n_va`` validation/payload symbols."""
        labels = rng.integers(0, self.config.order, size=(len(devices), n_tr + n_va))
        if self.config.pilot_sequence == "fixed":
            labels[:, :n_tr] = pilot_symbols(self.config.order, n_tr)
        x = self.transmit(devices, labels, rng)
        return TaskBatch(x_tr=x[:, :n_tr], y_tr=labels[:, :n_tr], x_va=x[:, n_tr:], y_va=labels[:, n_tr:])


def task_section(task: DemodConfig) -> dict:
    """The manifest's task description: what a device must know about the samples and classes."""
    constellation = DemodTasks(task).constellation
    return {
        "name": "demod",
        "features": ["I", "Q"],
        "classes": task.order,
        "constellation": [[float(c.real), float(c.imag)] for c in constellation],
        "pilot_sequence": pilot_symbols(task.order).tolist() if task.pilot_sequence == "fixed" else None,
        "snr_db": task.snr_db,
        "noise_var": task.noise_var,
        "channel": task.channel,
        **({"phase_max_deg": task.phase_max_deg} if task.channel == "phase" else {}),
        "conditions": training_conditions(task),
        "fallback": {
            "kind": "mmse-ml",
            "noise_var": task.noise_var,
            "channel_var": task.channel_var,
            "select": {"rule": "frame-residual", "margin": SELECT.margin, "samples": SELECT.samples},
        },
    }


def training_conditions(task: DemodConfig) -> dict:
    """What the receiver was trained for (informative, bundle-format.md §4.1): an operator sees whether the field
    matches, and ``metaedge run`` sends frames from the same distributions."""
    channel = {
        "rayleigh": {"model": "rayleigh", "variance": task.channel_var},
        "rician": {"model": "rician", "variance": task.channel_var, "k_factor_db": task.k_factor_db},
        "phase": {"model": "phase", "phase_max_deg": task.phase_max_deg},
    }[task.channel]
    return {
        "snr_db": task.snr_db,
        "channel": channel,
        "iq_imbalance": {"amplitude_max": task.eps_max, "phase_max_deg": task.delta_max_deg, "beta": [task.beta_a, task.beta_b]},
    }


def config_of_conditions(task: dict, **frame) -> DemodConfig:
    """The task configuration a bundle's task section describes (its ``conditions`` if it has them, else the published
    impairments), with ``frame`` fields (pilots, payload, …) for the frames to send."""
    conditions = task.get("conditions") or {}
    channel = conditions.get("channel") or {"model": task.get("channel", "rayleigh"), "phase_max_deg": task.get("phase_max_deg", 180.0)}
    iq = conditions.get("iq_imbalance") or {}
    defaults = DemodConfig()
    return DemodConfig(
        order=task["classes"],
        snr_db=task["snr_db"],
        channel=channel["model"],
        channel_var=channel.get("variance", defaults.channel_var),
        phase_max_deg=channel.get("phase_max_deg", defaults.phase_max_deg),
        k_factor_db=channel.get("k_factor_db", defaults.k_factor_db),
        eps_max=iq.get("amplitude_max", defaults.eps_max),
        delta_max_deg=iq.get("phase_max_deg", defaults.delta_max_deg),
        beta_a=iq.get("beta", [defaults.beta_a, defaults.beta_b])[0],
        beta_b=iq.get("beta", [defaults.beta_a, defaults.beta_b])[1],
        pilot_sequence="fixed" if task.get("pilot_sequence") else "random",
        **frame,
    )
