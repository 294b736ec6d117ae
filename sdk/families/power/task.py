"""Power control in dynamic wireless networks (monograph §5.5): a task is one period with its own
interference topology of V links (V varies); its data are the channel matrices of N time slots.

Model (the published study's settings are not public, so these are ours, documented here): a period
draws V uniform in ``links``; transmitters uniform in a square of side √(V·``area_per_link``); each
receiver at a distance uniform in ``link_distance`` from its transmitter in a random direction. The
gain from transmitter j to receiver i is d_ji^(−``pathloss``) times Rayleigh fading |h|² ~ Exp(1),
fresh in every slot; transmitter j interferes with receiver i only when d_ji < ``interference_range``
(the interference graph), else the gain is 0. Powers lie in [0, 1]. The noise power of a period is
log-uniform in ``noise`` (receivers of different quality, or other-cell interference).

What a new period must adapt to: the gains the allocator is given for interfering links are estimates
(measuring all V² gains in every slot is not practical; they come from the links' positions and a nominal
propagation model), and the interference the receivers actually see differs from them by a factor c common
to the period, log-uniform in ``coupling`` — the propagation environment between links (walls, foliage,
antenna orientations). Neither c nor the noise power is an input of the allocator; both enter only the
sum-rate, so a period's few slots are the only way to learn them. c matters: with c = 0.1 nearly every
link should transmit at full power, with c = 10 only a well-separated subset, and an allocator trained for
one end loses up to half the sum-rate at the other.

Arrays are padded to ``links[1]`` links so that tasks of different sizes batch: padded links have zero
gains everywhere, so they neither transmit usefully nor interfere, and they add 0 to the sum-rate.
A sample is one slot: its gain matrix G (G[j, i] from transmitter j to receiver i, row-major) followed
by the noise power and the interference coupling c.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from metaedge.sdk.errors import UserError

_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class PowerConfig:
    links: tuple[int, int] = (10, 20)
    area_per_link: float = 400.0  # m² per link: density stays fixed as V changes
    link_distance: tuple[float, float] = (2.0, 10.0)
    interference_range: float = 40.0
    pathloss: float = 2.2
    noise: tuple[float, float] = (1e-5, 1e-2)
    coupling: tuple[float, float] = (0.1, 10.0)

    def __post_init__(self) -> None:
        if not 2 <= self.links[0] <= self.links[1] <= 256:
            raise UserError(f"links {self.links} must be a range LOW-HIGH with 2 ≤ LOW ≤ HIGH ≤ 256")
        if not all(0 < low <= high for low, high in (self.link_distance, self.noise, self.coupling)) or self.pathloss <= 0:
            raise UserError("link distances, noise, coupling and path-loss exponent must be positive ranges LOW ≤ HIGH")

    @property
    def max_links(self) -> int:
        return self.links[1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class PowerTasks:
    def __init__(self, config: PowerConfig = PowerConfig(), seed: int = 0) -> None:
        self.config, self.seed = config, seed

    def rng(self, split: str, index: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_STREAM[split], index])

    def topologies(self, split: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Large-scale gains [count, V_max, V_max] (0 outside the interference graph and for padded links), noise
        powers [count] and interference couplings [count]."""
        c, rng, v_max = self.config, self.rng(split), self.config.max_links
        sizes = rng.integers(c.links[0], c.links[1] + 1, count)
        side = np.sqrt(sizes * c.area_per_link)[:, None, None]
        tx = rng.uniform(0, 1, (count, v_max, 2)) * side
        angle = rng.uniform(0, 2 * np.pi, (count, v_max))
        rx = tx + rng.uniform(*c.link_distance, (count, v_max))[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
        distance = np.linalg.norm(tx[:, :, None, :] - rx[:, None, :, :], axis=-1)  # [F, j (tx), i (rx)]
        active = np.arange(v_max)[None, :] < sizes[:, None]
        edges = (distance < c.interference_range) | np.eye(v_max, dtype=bool)
        noise = np.exp(rng.uniform(*np.log(c.noise), count))
        coupling = np.exp(rng.uniform(*np.log(c.coupling), count))
        large_scale = np.where(edges & active[:, :, None] & active[:, None, :], np.maximum(distance, 1.0) ** -c.pathloss, 0.0)
        return large_scale, noise, coupling

    def slots(self, topologies: tuple[np.ndarray, np.ndarray, np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
        """Samples [tasks, count, V_max² + 2], float32: each slot's faded gains, then the period's noise power
        and interference coupling."""
        large_scale, noise, coupling = topologies
        fading = rng.exponential(1.0, (len(large_scale), count, *large_scale.shape[1:]))
        gains = (large_scale[:, None] * fading).reshape(len(large_scale), count, -1)
        hidden = np.broadcast_to(np.stack([noise, coupling], -1)[:, None, :], (*gains.shape[:2], 2))
        return np.concatenate([gains, hidden], -1).astype(np.float32)
