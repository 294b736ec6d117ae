"""Power control in dynamic wireless networks (monograph §5.5): a task is one period with its own
interference topology of V links (V varies); its data are the channel matrices of N time slots.

Model (the published study's settings are not public, so these are ours, documented here): a period
draws V uniform in ``links``; transmitters uniform in a square of side √(V·``area_per_link``); each
receiver at a distance uniform in ``link_distance`` from its transmitter in a random direction. The
gain from transmitter j to receiver i is d_ji^(−``pathloss``) times Rayleigh fading |h|² ~ Exp(1),
fresh in every slot; transmitter j interferes with receiver i only when d_ji < ``interference_range``
(the interference graph), else the gain is 0. Powers lie in [0, 1]. The noise power of a period is
log-uniform in ``noise`` (receivers of different quality, or other-cell interference): the allocator
sees only the gains, so this is what a new period must adapt to.

Arrays are padded to ``links[1]`` links so that tasks of different sizes batch: padded links have zero
gains everywhere, so they neither transmit usefully nor interfere, and they add 0 to the sum-rate.
A sample is one slot: its gain matrix G (G[j, i] from transmitter j to receiver i, row-major) followed
by the noise power.
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
    area_per_link: float = 400.0          # m² per link: density stays fixed as V changes
    link_distance: tuple[float, float] = (2.0, 10.0)
    interference_range: float = 40.0
    pathloss: float = 2.2
    noise: tuple[float, float] = (1e-5, 1e-2)

    def __post_init__(self) -> None:
        if not 2 <= self.links[0] <= self.links[1] <= 256:
            raise UserError(f"links {self.links} must be a range LOW-HIGH with 2 ≤ LOW ≤ HIGH ≤ 256")
        if not 0 < self.link_distance[0] <= self.link_distance[1] or not 0 < self.noise[0] <= self.noise[1] or self.pathloss <= 0:
            raise UserError("link distances, noise and path-loss exponent must be positive (distances LOW ≤ HIGH)")

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

    def topologies(self, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Large-scale gains [count, V_max, V_max] (0 outside the interference graph and for padded links) and
        noise powers [count]."""
        c, rng, v_max = self.config, self.rng(split), self.config.max_links
        sizes = rng.integers(c.links[0], c.links[1] + 1, count)
        side = np.sqrt(sizes * c.area_per_link)[:, None, None]
        tx = rng.uniform(0, 1, (count, v_max, 2)) * side
        angle = rng.uniform(0, 2 * np.pi, (count, v_max))
        rx = tx + rng.uniform(*c.link_distance, (count, v_max))[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
        distance = np.linalg.norm(tx[:, :, None, :] - rx[:, None, :, :], axis=-1)          # [F, j (tx), i (rx)]
        active = np.arange(v_max)[None, :] < sizes[:, None]
        edges = (distance < c.interference_range) | np.eye(v_max, dtype=bool)
        noise = np.exp(rng.uniform(*np.log(c.noise), count))
        return np.where(edges & active[:, :, None] & active[:, None, :], np.maximum(distance, 1.0) ** -c.pathloss, 0.0), noise

    def slots(self, topologies: tuple[np.ndarray, np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
        """Samples [tasks, count, V_max² + 1], float32: each slot's faded gains and the period's noise power."""
        large_scale, noise = topologies
        fading = rng.exponential(1.0, (len(large_scale), count, *large_scale.shape[1:]))
        gains = (large_scale[:, None] * fading).reshape(len(large_scale), count, -1)
        return np.concatenate([gains, np.broadcast_to(noise[:, None, None], (*gains.shape[:2], 1))], -1).astype(np.float32)
