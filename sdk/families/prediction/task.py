"""Multi-antenna frequency-selective channels that change statistics from frame to frame (monograph
§5.4), for channel prediction. The 3GPP spatial channel model used by the published study is not
available here, so this is a clustered geometric model with the same ingredients:

* a frame draws C clusters (uniform in ``clusters``), each with a power (exponentially decaying with
  its delay, normalised to total 1), a delay τ_c uniform in [0, W) sample periods, a mean angle of
  arrival and of departure uniform in ±60°, and ``rays`` rays spread around them (Laplacian, ``spread``
  degrees rms);
* a frame draws a maximum Doppler f_D uniform in ``doppler_hz``; ray (c, r) has Doppler f_D·cos β with
  β uniform, and a uniform phase;
* slot l's channel between receive antenna m and transmit antenna n at tap w is
  h_l[m, n, w] = Σ_{c,r} g_{c,r} e^{j2π ν_{c,r} l T} a_R(θ_{c,r})[m] a_T(φ_{c,r})[n]* sinc(w − τ_c),
  with half-wavelength uniform linear arrays, T = ``slot_s``, and S = N_R N_T W entries, vectorised
  in (m, n, w) order; entries have unit average power;
* the predictor observes estimates h_l + CN(0, ``estimation_noise``) and is scored on the true h.

Within a frame the cluster geometry (the long-term features B_k of eq. 5.24) is fixed and only the
ray phases rotate (the short-term amplitudes d_l), as the long-short-term decomposition assumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from metaedge.sdk.errors import UserError

_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
DOPPLER = {"slow": (1.0, 10.0), "fast": (20.0, 200.0)}  # Hz (Park and Simeone, channel prediction with meta-learned linear filters, 2022)


@dataclass(frozen=True)
class ChannelConfig:
    rx: int = 2
    tx: int = 4
    taps: int = 2  # W, the delay spread in samples
    clusters: tuple[int, int] = (3, 6)
    rays: int = 10
    spread_deg: float = 5.0
    doppler_hz: tuple[float, float] = DOPPLER["fast"]
    slot_s: float = 1e-3
    estimation_noise: float = 1e-4  # variance of the complex estimation error per entry

    def __post_init__(self) -> None:
        if min(self.rx, self.tx, self.taps, self.rays, *self.clusters) < 1 or self.clusters[0] > self.clusters[1]:
            raise UserError("antennas, taps, rays and cluster counts must be at least 1, clusters given as LOW ≤ HIGH")
        if not 0 <= self.doppler_hz[0] <= self.doppler_hz[1] or self.slot_s <= 0 or self.estimation_noise < 0:
            raise UserError("Doppler range must be 0 ≤ LOW ≤ HIGH, the slot positive and the estimation noise ≥ 0")

    @property
    def entries(self) -> int:
        """S = N_R N_T W."""
        return self.rx * self.tx * self.taps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _ula(angles: np.ndarray, antennas: int) -> np.ndarray:
    """Half-wavelength ULA responses [..., antennas] for angles in radians."""
    return np.exp(1j * np.pi * np.arange(antennas) * np.sin(angles)[..., None])


class ChannelFrames:
    def __init__(self, config: ChannelConfig = ChannelConfig(), seed: int = 0) -> None:
        self.config, self.seed = config, seed

    def rng(self, split: str, index: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_STREAM[split], index])

    def frames(self, split: str, count: int, slots: int, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(true channels, estimates), each complex [count, slots, S], for ``count`` frames of ``split``."""
        c, rng = self.config, self.rng(split, index)
        clusters = c.clusters[1]
        active = np.arange(clusters) < rng.integers(c.clusters[0], c.clusters[1] + 1, count)[:, None]  # [F, C]
        delay = rng.uniform(0, c.taps, (count, clusters))
        power = np.exp(-delay) * active * rng.exponential(1.0, (count, clusters))
        power /= power.sum(1, keepdims=True)
        aoa = rng.uniform(-np.pi / 3, np.pi / 3, (count, clusters, 1)) + np.deg2rad(
            rng.laplace(0, c.spread_deg / np.sqrt(2), (count, clusters, c.rays))
        )
        aod = rng.uniform(-np.pi / 3, np.pi / 3, (count, clusters, 1)) + np.deg2rad(
            rng.laplace(0, c.spread_deg / np.sqrt(2), (count, clusters, c.rays))
        )
        f_max = rng.uniform(*c.doppler_hz, (count, 1, 1))
        doppler = f_max * np.cos(rng.uniform(0, 2 * np.pi, (count, clusters, c.rays)))
        gain = np.sqrt(power[..., None] / c.rays) * np.exp(2j * np.pi * rng.uniform(0, 1, (count, clusters, c.rays)))
        pulse = np.sinc(np.arange(c.taps) - delay[..., None])  # [F, C, W]
        pulse /= np.linalg.norm(pulse, axis=-1, keepdims=True)
        # spatial-delay signature of every ray: a_R ⊗ conj(a_T) ⊗ pulse, [F, C, R, S]
        signature = np.einsum("fcrm,fcrn,fcw->fcrmnw", _ula(aoa, c.rx), _ula(aod, c.tx).conj(), pulse).reshape(count, clusters, c.rays, -1)
        phase = np.exp(2j * np.pi * doppler[..., None] * c.slot_s * np.arange(slots))  # [F, C, R, T]
        true = np.sqrt(c.taps) * np.einsum("fcr,fcrt,fcrs->fts", gain, phase, signature)
        noise = np.sqrt(c.estimation_noise / 2) * (rng.standard_normal(true.shape) + 1j * rng.standard_normal(true.shape))
        return true, true + noise
