"""Power control's configuration (``PowerBench``: the allocator, training and the benchmark) and the options of
``metaedge train power`` and ``metaedge bench power``, declared once and torch-free."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.power.task import PowerConfig
from metaedge.sdk.options import ManyRuns, command, nested, option, out_option, plot_option, positive_int, seed_option, str_list

METHODS = ("joint", "fomaml", "reptile", "modular")
BLACK_BOX = ("fomaml", "reptile")


@dataclass(frozen=True)
class RegnnSpec:
    features: tuple[int, ...] = (2, 8, 4, 1)  # inputs: one, centred log direct gain
    taps: int = 3  # K, the graph filters' order

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for i, (f_in, f_out) in enumerate(zip(self.features, self.features[1:])):
            shapes[f"l{i}.filter"] = (self.taps, f_in, f_out)
            shapes[f"l{i}.bias"] = (f_out,)
        return shapes

    def init(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Filters U(±1/√(K·F_in)), biases 0."""
        return {
            name: (rng.uniform(-1, 1, shape) / math.sqrt(shape[0] * shape[1]) if name.endswith("filter") else np.zeros(shape)).astype(np.float32)
            for name, shape in self.shapes().items()
        }


@dataclass(frozen=True)
class PowerBench:
    power: PowerConfig = field(default_factory=PowerConfig)
    model: RegnnSpec = field(default_factory=RegnnSpec)
    iterations: int = option(2000, "outer steps per run", parse=positive_int)  # with 500 the methods had not separated yet
    tasks_per_batch: int = option(8, "periods per outer step", parse=positive_int)
    inner_lr: float = option(0.1, "adaptation step size α")
    inner_steps: int = option(5, "adaptation steps on a period's slots (eq. 5.30 takes 1)", parse=positive_int)
    outer_lr: float = option(0.01, "Adam step size")
    modules: int = option(3, "modular: candidate modules per layer", parse=positive_int)
    proposals: int = option(20, "modular: annealing proposals per period", parse=positive_int)
    train_slots: int = option(5, "slots N_tr a period adapts on, in meta-training and on a new topology", parse=positive_int)
    val_slots: int = option(20, "slots N_va per meta-training period", parse=positive_int)
    test_periods: int = option(100, "new topologies tested on", parse=positive_int)
    test_slots: int = option(100, "scored slots per new topology", flag=False)
    period_grid: tuple[int, ...] = option((1, 2, 5, 10, 20, 50, 100), "meta-training periods K", flag="periods")
    seed: int = seed_option("topologies, slots and initialisation")

    def __post_init__(self) -> None:
        if not self.inner_lr > 0:
            raise UserError(f"--inner-lr {self.inner_lr} must be a positive number")
        object.__setattr__(self, "period_grid", tuple(sorted(set(self.period_grid))))


@dataclass(frozen=True)
class PowerTraining:
    """REGNN power allocator for dynamic networks (monograph §5.5)

    Train a random-edge graph neural network that allocates transmit powers from the channel gains of a network
    of 10-20 links (unsupervised sum-rate), jointly or meta-learned so that a few slots of a new topology adapt
    it. Export it like a receiver; the device adapts on channel measurements alone."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge train power --out runs/power                       # FOMAML on 100 topologies (~1 min)
  metaedge train power --algo joint --periods 5 --out runs/power-joint
  metaedge export runs/power --out bundles/power && metaedge inspect bundles/power
"""

    out: Path = out_option()
    algo: str = option("fomaml", "the method", choices=METHODS)
    periods: int = option(100, "meta-training periods (topologies) K", parse=positive_int)
    setup: PowerBench = nested(PowerBench)


@dataclass(frozen=True)
class PowerFigure(ManyRuns):
    """REGNN power control in dynamic networks: sum-rate vs meta-training periods (§5.5)

    Random-edge graph neural network power allocation (unsupervised sum-rate) over random interference
    topologies of 10-20 links; joint learning, FOMAML, Reptile and modular meta-learning (modules per layer,
    assignment by simulated annealing) against the number of meta-training periods K; every link at full power
    as reference."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench power --jobs 2 --json > power.json  # ~12 min on 2 cores; also writes power.png
  metaedge bench power --periods 1,5,50 --algos joint,fomaml,modular
  metaedge bench power --inner-steps 1 --inner-lr 0.1 --periods 2,100    # one step, as in eq. 5.30
  metaedge bench power --train-slots 2 --json > power-2.json             # scarcer data per period
  metaedge bench power --quick                       # seconds: the machinery, not the figures
"""

    algos: tuple[str, ...] = option(METHODS, "methods", parse=str_list)
    setup: PowerBench = nested(PowerBench)
    plot: Path = plot_option("power.png", "sum-rate vs K")


TRAIN = command("power", PowerTraining, "metaedge.sdk.families.power.run", skip=("setup.test_periods", "setup.period_grid"))

BENCH = command("power", PowerFigure, "metaedge.sdk.families.power.bench")
