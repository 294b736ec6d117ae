"""The sinusoid regression task family (Finn et al. 2017; monograph §2.4.1, Figure 2.4): a task is
y = A·sin(x + φ) with amplitude A ~ U[0.1, 5] and phase φ ~ U[0, π], inputs x ~ U[−5, 5]. Pools of
K meta-training tasks and a disjoint set of test tasks are drawn from separate seeded streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SinusoidConfig:
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, float(np.pi))
    inputs: tuple[float, float] = (-5.0, 5.0)


class SinusoidTasks:
    def __init__(self, config: SinusoidConfig = SinusoidConfig(), seed: int = 0) -> None:
        self.config, self.seed = config, seed

    def rng(self, stream: str, index: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, {"train": 0, "test": 1}[stream], index])

    def tasks(self, stream: str, count: int) -> np.ndarray:
        """``count`` tasks of ``stream`` as rows (amplitude, phase)."""
        rng = self.rng(stream)
        return np.stack([rng.uniform(*self.config.amplitude, count), rng.uniform(*self.config.phase, count)], axis=1)

    def samples(self, tasks: np.ndarray, counts: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
        """For each count n: inputs [tasks, n, 1] and targets [tasks, n, 1], float32, fresh inputs per call."""
        out = []
        for n in counts:
            x = rng.uniform(*self.config.inputs, (len(tasks), n, 1))
            out += [x.astype(np.float32), (tasks[:, 0, None, None] * np.sin(x + tasks[:, 1, None, None])).astype(np.float32)]
        return out
