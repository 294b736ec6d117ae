"""The learned link's task family (monograph §5.3): a task is one frequency-selective Rayleigh
block-fading channel h of L taps, each CN(0, 1/L), constant over the block; messages of k bits go
over n complex channel uses at a given Eb/N0. Defaults follow the published setup (Park, Simeone,
Kang 2020): k = 4, n = 4, L = 3, Eb/N0 = 15 dB.

Noise convention: codewords have energy n (unit average power per channel use), so Eb = n/k and
the complex noise variance is N0 = (n/k) / (Eb/N0); each real dimension carries N0/2.

Adaptation data ("pilots") send every message once per 2^k, in order, with fresh noise; test
messages are uniform at random. Channels of the meta-training, validation and test splits come
from disjoint seeded streams, as for the demodulation task.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from metaedge.sdk.errors import UserError
from metaedge.sdk.options import option

_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class LinkConfig:
    bits: int = option(4, "k, bits per message (2^k messages)")
    uses: int = option(4, "n, complex channel uses per message")
    taps: int = option(3, "L, channel taps, each CN(0, 1/L)")
    ebn0_db: float = option(15.0, "Eb/N0 in dB")

    def __post_init__(self) -> None:
        for ok, message in (
            (1 <= self.bits <= 12, f"--bits {self.bits} must lie in 1..12"),
            (1 <= self.uses <= 64, f"--uses {self.uses} must lie in 1..64"),
            (1 <= self.taps <= self.uses, f"--taps {self.taps} must lie in 1..uses ({self.uses})"),
            (math.isfinite(self.ebn0_db), f"--ebn0-db {self.ebn0_db} must be a number of dB"),
        ):
            if not ok:
                raise UserError(message)

    @property
    def messages(self) -> int:
        return 2**self.bits

    @property
    def noise_var(self) -> float:
        """N0, the complex noise variance per channel use."""
        return (self.uses / self.bits) / 10 ** (self.ebn0_db / 10)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class LinkTasks:
    """Seeded channels and simulator draws, numpy only and vectorised over channels."""

    def __init__(self, config: LinkConfig = LinkConfig(), seed: int = 0) -> None:
        self.config, self.seed = config, seed

    def rng(self, split: str, index: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_STREAM[split], index])

    def channels(self, split: str, count: int) -> np.ndarray:
        """``count`` channels of ``split`` as real rows [Re h_0 … Re h_{L−1}, Im h_0 … Im h_{L−1}], float32."""
        scale = math.sqrt(1 / (2 * self.config.taps))
        return (scale * self.rng(split).standard_normal((count, 2 * self.config.taps))).astype(np.float32)

    def noise(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Noise of ``shape`` + [2n], N0/2 per real dimension, float32."""
        return (math.sqrt(self.config.noise_var / 2) * rng.standard_normal((*shape, 2 * self.config.uses))).astype(np.float32)

    def pilots(self, count: int) -> np.ndarray:
        """The adaptation messages: every message once per 2^k, in order."""
        return np.resize(np.arange(self.config.messages), count)

    def draws(self, channels: np.ndarray, messages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Simulator draws x = [noise, taps] [channels, N, 2n + 2L] for ``messages`` [channels, N] or [N]."""
        count = messages.shape[-1]
        taps = np.broadcast_to(channels[:, None, :], (len(channels), count, channels.shape[-1]))
        return np.concatenate([self.noise((len(channels), count), rng), taps], axis=-1)

    def messages(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.config.messages, shape)
