"""The sinusoid benchmark's configuration and the options of ``metaedge bench sinusoid``, declared once and
torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.sdk.options import ManyRuns, command, nested, option, plot_option, positive_int, seed_option, str_list

METHODS = ("joint", "maml", "imaml", "bmaml")


@dataclass(frozen=True)
class SinusoidBench:
    iterations: int = option(1500, "meta-iterations per run", parse=positive_int)
    tasks_per_batch: int = option(10, "tasks per meta-batch", parse=positive_int)
    outer_lr: float = option(1e-3, "Adam step size")
    inner_lr: float = option(0.01, "adaptation step size α")
    svgd_lr: float = option(0.01, "BMAML's α; SVGD averages over the M particles, so each moves about 2α/M per step")
    inner_steps: int = option(5, "adaptation steps", parse=positive_int)
    prox: float = option(3.0, "iMAML's λ of the proximal problem")
    prox_steps: int = option(40, "iMAML's inner steps: its implicit meta-gradient assumes the proximal problem solved", parse=positive_int)
    particles: int = option(5, "BMAML's particles M", parse=positive_int)
    hidden: tuple[int, ...] = option((40, 40), "hidden widths of the MLP")
    eval_every: int = option(100, "evaluate every N iterations (panel a)", parse=positive_int)
    test_tasks: int = option(100, "held-out tasks tested on", parse=positive_int)
    test_points: int = option(100, "test inputs per task", flag=False)
    samples: int | None = option(None, "N of panels (a) and (c) (default 10 if the N grid has it, else its largest)", flag="panel-samples")
    tasks: int | None = option(None, "K of panels (a) and (b) (default 1000 if the K grid has it, else its largest)", flag="panel-tasks")
    sample_grid: tuple[int, ...] = option((2, 5, 10, 20), "N grid of panel (b)", flag="samples")
    task_grid: tuple[int, ...] = option((5, 20, 100, 1000), "K grid of panel (c)", flag="tasks")
    seed: int = seed_option("tasks and initialisation")
    repeats: int = option(
        1,
        "task draws (seeds --seed, --seed + 1, ...): points become means, and each method's paired difference to maml "
        "gets a 95 % t-interval over the draws",
        parse=positive_int,
    )

    def __post_init__(self) -> None:
        if self.samples is None:
            object.__setattr__(self, "samples", 10 if 10 in self.sample_grid else max(self.sample_grid))
        if self.tasks is None:
            object.__setattr__(self, "tasks", 1000 if 1000 in self.task_grid else max(self.task_grid))


@dataclass(frozen=True)
class SinusoidFigure(ManyRuns):
    """sinusoid regression: joint, MAML, iMAML, BMAML (monograph Figure 2.4)

    Meta-train joint learning, MAML, iMAML and BMAML on sinusoid regression (amplitude 0.1-5, phase 0-pi, inputs
    -5..5, MLP 1-40-40-1) and report the three panels of the monograph's Figure 2.4: test loss vs meta-training
    iterations, best test loss vs samples per task N, and vs number of meta-training tasks K."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench sinusoid --jobs 2 --json > sinusoid.json   # the runs in 2 processes; also writes sinusoid.png
  metaedge bench sinusoid --iterations 5000 --samples 2,5,10 --tasks 5,50,1000 --jobs 2   # the figures of docs/algorithms.md
  metaedge bench sinusoid --algos maml,bmaml --samples 10 --tasks 5 --iterations 5000 --repeats 5 --jobs 2
                                                       # K = 5 over five task draws, with BMAML − MAML intervals
  metaedge bench sinusoid --quick                      # seconds: the machinery, not the figures
"""

    algos: tuple[str, ...] = option(METHODS, "methods (any meta-learning algorithm)", parse=str_list)
    setup: SinusoidBench = nested(SinusoidBench)
    plot: Path = plot_option("sinusoid.png", "the three panels")


BENCH = command("sinusoid", SinusoidFigure, "metaedge.sdk.families.sinusoid.bench")
