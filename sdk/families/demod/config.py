"""A demodulator run's training configuration: every field a flag of ``metaedge train demod`` (generated from the
field's help), every default in one place — the recipe of the algorithm (``recipes``), else the core's
(``meta.defaults``). Torch-free, so that the command line builds its flags without loading the trainer."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from metaedge.backends.selection import SELECT
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.recipes import COMMON, recipe
from metaedge.sdk.families.demod.shift import SHIFTS
from metaedge.sdk.families.demod.task import PILOT_SEQUENCES, DemodConfig
from metaedge.sdk.meta.defaults import DEFAULT_ASSIGNMENT, DEFAULT_PROX, INNER
from metaedge.sdk.options import (
    command,
    int_list,
    margin,
    option,
    output_dir,
    output_file,
    pilot_range,
    plot_option,
    positive_int,
    quick_option,
    seed_option,
    str_list,
)

if TYPE_CHECKING:
    from metaedge.sdk.meta.core import InnerLoop
    from metaedge.sdk.models.mlp import MLPSpec


# TrainConfig fields whose default is the algorithm's recipe, else the core's: the InnerLoop field each sets
_INNER_FIELDS = {
    "inner_lr": "lr",
    "inner_steps": "steps",
    "solver_steps": "solver_steps",
    "solver": "solver",
    "samples": "samples",
    "kl_weight": "kl_weight",
    "proposals": "proposals",
    "sharp_in": "sharp_in",
    "sharp_out": "sharp_out",
    "es_directions": "es_directions",
    "es_delta": "es_delta",
    "es_hessian": "es_hessian",
}
CORE_DEFAULTS = {**{field: INNER[name] for field, name in _INNER_FIELDS.items()}, "prox": DEFAULT_PROX, "adapt": "all", "inner_data": "support"}
RECIPE_FIELDS = (*CORE_DEFAULTS, *COMMON)


@dataclass(frozen=True)
class TrainConfig:
    """How one demodulator run meta-trains. A field left at None takes the algorithm's recipe
    (``recipes.recipe``), else the meta-learning core's default (``meta.defaults``): the Python API trains
    exactly what ``metaedge train demod`` trains with the same flags, which are generated from these fields."""

    algo: str = option("maml", "the meta-learning algorithm (`metaedge algorithms` describes them)")
    iterations: int | None = option(None, "meta-iterations")
    tasks_per_batch: int | None = option(None, "devices per meta-batch")
    inner_lr: float | None = option(None, "inner step size α")
    inner_steps: int | None = option(None, "inner steps")
    outer_lr: float | None = option(None, "outer step size β")
    outer_opt: str = option("adam", "adam | sgd (sgd with reptile is eq. 2.23 literally)")
    meta_devices: int = option(1000, "meta-training devices K")
    val_devices: int = option(100, "validation devices for early stopping")
    val_every: int | None = option(None, "validate every N iterations")
    patience: int | None = option(None, "stop after N validations without improvement")
    hidden: tuple[int, ...] = option((10, 30, 30), "hidden widths")
    context: int = option(10, "cavia: context inputs")
    seed: int = option(0, "seed of devices, initialisation and sampling")
    pilots_min: int = option(0, "", flag=False)  # > 0: each meta-batch draws its pilot count log-uniformly (--pilots LOW-HIGH)
    compile: bool = option(False, "torch.compile the meta-gradient (compiles once, then faster steps; 'metaedge bench meta-train')")
    prox: float | None = option(None, "imaml, proxmaml, alset: λ of the proximal term λ/2‖φ − θ‖² (eq. 2.4b)")
    solver_steps: int | None = option(None, "imaml, alset: iterations of the inverse-Hessian solver")
    solver: str | None = option(None, "imaml, alset: inverse-Hessian solver cg | neumann | stochastic (alset; eq. 3.7)")
    samples: int | None = option(None, "vbmaml: reparameterised weight draws per inner step and validation loss")
    prior_std: float = option(0.05, "vbmaml: initial std of the Gaussian prior, then meta-learned")
    kl_weight: float | None = option(None, "vbmaml: weight w of the KL term; 1 = the free energy of eq. 2.32, < 1 a tempered posterior")
    particles: int = option(5, "bmaml: particles of the SVGD ensemble")
    modules: int = option(3, "modular: candidate modules per layer")
    assignment: str = option(
        DEFAULT_ASSIGNMENT, "modular: anneal (simulated annealing), exhaustive (the best of all M^L assignments, as a device chooses) or relaxed"
    )
    proposals: int | None = option(None, "modular: annealing proposals per task")
    sharp_in: float | None = option(None, "sharpmaml: radius α_in of the inner perturbation (eq. 2.14)")
    sharp_out: float | None = option(None, "sharpmaml: radius α_ot of the outer perturbation")
    es_directions: int | None = option(None, "esmaml: random directions per estimate")
    es_delta: float | None = option(None, "esmaml: smoothing radius δ")
    es_hessian: bool | None = option(None, "esmaml: use the Hessian correction of eq. 2.18")
    adapt: str | None = option(None, "maml, fomaml, metasgd: all (every parameter adapts) | input (the first layer alone: 30 numbers)")
    inner_data: str | None = option(
        None, "reptile: support (every step on the pilots, eq. 2.22) | pooled (step j on the j-th minibatch of pilots and validation symbols)"
    )

    def __post_init__(self) -> None:
        defaults = recipe(self.algo)
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name] if name in defaults else CORE_DEFAULTS[name])
        from metaedge.sdk.meta.algorithms import ADAPTED, PARTIAL_ADAPTATION, get_algorithm

        algorithm = get_algorithm(self.algo)
        checks = [
            (self.iterations >= 1, f"--iterations {self.iterations} must be at least 1"),
            (self.tasks_per_batch >= 1, f"--tasks-per-batch {self.tasks_per_batch} must be at least 1"),
            (
                self.tasks_per_batch <= self.meta_devices,
                f"--tasks-per-batch {self.tasks_per_batch} exceeds --meta-devices {self.meta_devices}; lower it or add devices",
            ),
            (self.inner_steps >= (1 if algorithm.meta_learned else 0), f"--inner-steps {self.inner_steps} must be at least 1 for {self.algo}"),
            (math.isfinite(self.inner_lr) and self.inner_lr > 0, f"--inner-lr {self.inner_lr} must be a positive number"),
            (math.isfinite(self.outer_lr) and self.outer_lr > 0, f"--outer-lr {self.outer_lr} must be a positive number"),
            (self.outer_opt in ("adam", "sgd"), f"--outer-opt '{self.outer_opt}' is unknown; use adam or sgd"),
            (self.meta_devices >= 1 and self.val_devices >= 2, "--meta-devices must be ≥ 1 and --val-devices ≥ 2"),
            (self.val_every >= 1 and self.patience >= 1, "--val-every and --patience must be at least 1"),
            (all(h >= 1 for h in self.hidden), f"--hidden {self.hidden} must list positive layer widths"),
            (self.context >= 1 or not algorithm.context, f"--context {self.context} must be at least 1 for cavia"),
            (self.pilots_min >= 0, f"pilot range minimum {self.pilots_min} must be at least 1"),
            (math.isfinite(self.prox) and self.prox > 0, f"--prox {self.prox} must be a positive number"),
            (
                self.solver in ("cg", "neumann", "stochastic") and (self.solver != "stochastic" or self.algo == "alset"),
                f"--solver '{self.solver}' is unknown; use cg or neumann (or stochastic with alset)",
            ),
            (self.solver_steps >= 1, f"--solver-steps {self.solver_steps} must be at least 1"),
            (self.samples >= 1, f"--samples {self.samples} must be at least 1"),
            (math.isfinite(self.kl_weight) and self.kl_weight >= 0, f"--kl-weight {self.kl_weight} must be 0 or more"),
            (math.isfinite(self.prior_std) and self.prior_std > 0, f"--prior-std {self.prior_std} must be a positive number"),
            (self.sharp_in >= 0 and self.sharp_out >= 0, f"--sharp-in {self.sharp_in} and --sharp-out {self.sharp_out} must be 0 or more"),
            (self.es_directions >= 1 and self.es_delta > 0, f"--es-directions {self.es_directions} must be ≥ 1 and --es-delta {self.es_delta} > 0"),
            (self.modules >= 2 and self.proposals >= 1, f"--modules {self.modules} must be ≥ 2 and --proposals {self.proposals} ≥ 1"),
            (
                self.assignment in ("anneal", "exhaustive", "relaxed"),
                f"--assignment '{self.assignment}' is unknown; use anneal, exhaustive or relaxed",
            ),
            (self.particles >= 2, f"--particles {self.particles} must be at least 2 (SVGD moves particles relative to each other)"),
            (self.adapt in ADAPTED, f"--adapt '{self.adapt}' is unknown; use {' or '.join(ADAPTED)}"),
            (
                self.adapt == "all" or self.algo in PARTIAL_ADAPTATION,
                f"--adapt {self.adapt} works with {', '.join(PARTIAL_ADAPTATION)} (their meta-gradient reaches the parameters "
                f"that do not adapt); {self.algo} needs --adapt all",
            ),
            (self.inner_data in ("support", "pooled"), f"--inner-data '{self.inner_data}' is unknown; use support or pooled"),
            (
                self.inner_data == "support" or self.algo == "reptile",
                f"--inner-data pooled works with reptile only (the others' meta-gradient needs D_va held out); {self.algo} "
                "needs --inner-data support",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def inner(self) -> InnerLoop:
        """The algorithm's inner loop: the common fields, and its own options from this configuration."""
        from metaedge.sdk.meta.algorithms import ADAPTED, get_algorithm

        algorithm = get_algorithm(self.algo)
        own = {f.name: getattr(self, f.name) for f in fields(algorithm.options) if hasattr(self, f.name)} if algorithm.options else {}
        return algorithm.inner(self.inner_lr, self.inner_steps, adapt=ADAPTED.get(self.adapt), pooled=self.inner_data == "pooled", **own)

    def pilot_counts(self, task: DemodConfig) -> list[int]:
        """Pilot counts seen in meta-training and validated on: task.pilots, or powers of two spanning the range."""
        if not self.pilots_min:
            return [task.pilots]
        if self.pilots_min > task.pilots:
            raise UserError(f"pilot range {self.pilots_min}-{task.pilots} is empty; give --pilots LOW-HIGH with LOW ≤ HIGH")
        grid = {self.pilots_min, task.pilots} | {2**k for k in range(12) if self.pilots_min < 2**k < task.pilots}
        return sorted(grid)

    def model(self, task: DemodConfig) -> MLPSpec:
        from metaedge.sdk.meta.algorithms import get_algorithm
        from metaedge.sdk.models.mlp import MLPSpec

        context = self.context if get_algorithm(self.algo).context else 0
        return MLPSpec(sizes=(2, *self.hidden, task.order), context=context)


def default_text(name: str) -> str:
    """Where ``name``'s default comes from, for its flag's help: "default 5; recipe: alset 10", "recipe: 6000"."""
    from metaedge.sdk.families.demod.recipes import RECIPES, summary

    default = next(f.default for f in fields(TrainConfig) if f.name == name)
    if default is None:
        default = COMMON.get(name, CORE_DEFAULTS.get(name))
    recipes = summary(name)
    in_every = name in COMMON or all(name in own for own in RECIPES.values())
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return recipes if recipes and in_every else "; ".join([f"default {shown}", *([recipes] if recipes else [])])


@dataclass(frozen=True)
class ShiftFigure:
    """does a deployed demodulator know when not to trust itself? SER under distribution shift

    A demodulator run's learned receiver, the classical receiver its bundle carries (MMSE channel estimate + ML on the
    nominal constellation) and the selecting receiver its device runs (per frame, the classical one where the adaptation
    guard or the frame residual says so), on fresh devices as trained and under shifts (--shifts), paired over the same
    devices and frames."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench shift runs/demo/metasgd --json > shift.json      # 1000 devices × 2000 symbols, ~5 min on 2 cores
  metaedge bench shift runs/demo/metasgd --shifts trained,iq-milder --pilots 4,8
  metaedge bench shift runs/demo/metasgd --margin 0 --plot shift-m0.png
  metaedge bench shift runs/demo/metasgd --split val --seed 7 --margin 0.1 --json   # choose a margin on validation devices
"""

    run: Path = option(help="a demodulator run (metaedge train demod)", positional=True, metavar="RUN_DIR")
    shifts: tuple[str, ...] | None = option(None, f"shifts (default all: {','.join(SHIFTS)})", parse=str_list)
    pilots: tuple[int, ...] = option((1, 2, 4, 8, 16), "pilot counts", parse=int_list)
    devices: int = option(1000, "fresh devices per shift", parse=positive_int)
    payload: int = option(2000, "payload symbols per frame", parse=positive_int)
    margin: float = option(SELECT.margin, "the selection margin (what bundles carry)", parse=margin)
    split: str = option("test", "fresh devices of the meta-test stream, or of the validation stream to choose a margin on", choices=("test", "val"))
    seed: int | None = option(None, "seed of the fresh devices (default: the run's)")
    quick: bool = quick_option()
    plot: Path = plot_option("shift.png", "SER vs pilots per shift")


@dataclass(frozen=True)
class AlgorithmsFigure:
    """every algorithm on the demodulation task: SER, ECE, time, memory

    Meta-train every algorithm on the same demodulation task and budget (16-QAM, 18 dB, 16 devices per batch, at
    least 2 inner steps at each algorithm's recipe rate), evaluate SER and expected calibration error at 1, 4, 8
    and 16 pilots on the same fresh devices, and report meta-training time and peak memory. Finished runs in
    --out are reused. Writes OUT/algorithms.json, OUT/algorithms.md and OUT/reliability.png (at 8 pilots)."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench algorithms --out runs/algorithms            # ~25 min on 2 cores: all 14, table and reliability diagram
  metaedge bench algorithms --algos maml,vbmaml,bmaml --json
  metaedge bench algorithms --quick --out /tmp/quick          # seconds: the machinery, not the figures
"""

    out: Path = option(Path("runs/algorithms"), "runs and results", parse=output_dir)
    algos: tuple[str, ...] | None = option(None, "algorithms (default: all; see metaedge algorithms)", parse=str_list)
    iterations: int = option(2000, "meta-iterations per algorithm", parse=positive_int)
    train_pilots: tuple[int, int] = option(
        (4, 8),
        "pilots per meta-training task: N or LOW-HIGH (4-8: the published 4 and the 8 of the calibration target)",
        parse=pilot_range,
        metavar="N|LOW-HIGH",
    )
    pilots: tuple[int, ...] = option((1, 4, 8, 16), "pilot counts at meta-test (must include 8)", parse=int_list)
    devices: int = option(200, "meta-test devices", parse=positive_int)
    payload: int = option(2000, "payload symbols per device", parse=positive_int)
    seed: int = seed_option("devices, initialisation and sampling")
    fresh: bool = option(False, "retrain even if --out holds finished runs")
    quick: bool = option(False, "tiny budget and model, for tests of the machinery")
    command: str | None = option(None, flag=False)  # the command line that asked for the report
    quiet: bool = option(False, flag=False)  # no progress bars of its own


BENCH = (
    command("shift", ShiftFigure, "metaedge.sdk.families.demod.shift"),
    command("algorithms", AlgorithmsFigure, "metaedge.sdk.families.demod.bench"),
)


@dataclass(frozen=True)
class EvalOptions:
    """SER of trained runs vs the model-based receiver

    Meta-test: adapt each run on P pilots of fresh devices and measure the symbol error rate on their payload,
    next to training from scratch and the model-based receiver (MMSE channel estimate + ML detection)."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge eval runs/maml runs/fomaml runs/joint
  metaedge eval runs/* --pilots 1,2,4,8,16,32 --json > ser.json
  metaedge eval runs/maml --inner-steps 5 --plot ser.png
  metaedge eval runs/modular --pilots 8 --assignment exhaustive     # modules chosen as an exported device chooses them
  metaedge eval runs/maml runs/bmaml --pilots 8 --reliability reliability.png
  metaedge eval runs/metasgd --select --devices 1000 --payload 2000       # and as the device selects per frame
"""

    runs: tuple[Path, ...] = option(help="demodulator runs (metaedge train demod)", positional=True, metavar="RUN_DIR")
    pilots: tuple[int, ...] = option((1, 2, 4, 8, 16, 32), "pilot counts", parse=int_list)
    devices: int = option(100, "meta-test devices", parse=positive_int)
    payload: int = option(10_000, "payload symbols per device", parse=positive_int)
    inner_steps: int | None = option(None, "adaptation steps for every learned method (default: each run's inner steps)")
    assignment: str | None = option(
        None,
        "modular runs: how each device's modules are chosen (default: the run's; exhaustive is what an exported bundle's device computes)",
        choices=("anneal", "exhaustive", "relaxed"),
    )
    scratch_lr: float = option(0.1, "step size of training from scratch")
    no_baselines: bool = option(False, "skip training from scratch and the model-based receiver")
    seed: int | None = option(None, "seed of the meta-test devices (default: the runs' seed)")
    pilot_sequence: str | None = option(
        None, "the frames' pilot symbols: the known sequence, or drawn at random (default: as the first run was trained)", choices=PILOT_SEQUENCES
    )
    select: float | None = option(
        None,
        "also score each run's selecting receiver, as its bundle's device decides: the classical receiver where the guard or the "
        f"frame residual says so (margin default {SELECT.margin})",
        parse=margin,
        const=SELECT.margin,
        metavar="MARGIN",
    )
    plot: Path | None = option(None, "write SER vs pilots as a PNG", parse=output_file)
    reliability: Path | None = option(
        None, "write reliability diagrams (accuracy vs confidence, 10 bins, with ECE) at --reliability-pilots", parse=output_file, metavar="PNG"
    )
    reliability_pilots: int | None = option(
        None, "pilot count of the reliability diagrams (default: 8 if evaluated, else the largest)", parse=positive_int, metavar="P"
    )
    command: str | None = option(None, flag=False)  # the command line that asked for the report
    quiet: bool = option(False, flag=False)  # no progress bars of its own


DEMO_ALGOS = ("maml", "fomaml", "reptile", "cavia", "metasgd", "joint")


@dataclass(frozen=True)
class DemoOptions:
    """meta-train every algorithm, evaluate, print the SER table

    Meta-train MAML, FOMAML, Reptile, CAVIA, Meta-SGD and joint learning on the demodulation task (monograph
    §5.2) with 1-32 pilots per frame, then adapt each with one SGD step on the pilots of 100 fresh devices and
    measure the SER on 10^4 payload symbols, next to training from scratch and the model-based receiver (MMSE +
    ML); then deploy Meta-SGD to a simulated device and run the same frames there. Finished runs in --out are
    reused."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge demo                       # ~4 min on 2 CPU cores: 6 algorithms, SER table, device run, plots
  metaedge demo --algos maml,cavia --iterations 20000 --out runs/long
  metaedge demo --fresh               # retrain instead of reusing runs/demo
  metaedge demo --target none         # host evaluation only, no device
  metaedge demo --target qiskit       # ~3 min: Born-machine BNN meta-learned, deployed to a noisy FakeManilaV2 device
  metaedge demo --target loihi        # ~2 min: spiking receiver, rule-based FOMAML, deployed to a Lava (Loihi 2) device
"""

    out: Path = option(Path("runs/demo"), "where the runs go", parse=output_dir)
    algos: tuple[str, ...] = option(DEMO_ALGOS, "algorithms", parse=str_list)
    iterations: int | None = option(None, "meta-iterations per algorithm (default: each recipe's)", parse=positive_int)
    devices: int = option(100, "meta-test devices", parse=positive_int)
    payload: int = option(10_000, "payload symbols per device", parse=positive_int)
    fresh: bool = option(False, "retrain even if --out holds finished runs")
    target: str = option(
        "onnx",
        "after the host evaluation, export the --device-algo run, deploy it to a simulated device of this target and run the "
        "same frames there (none: host only); qiskit runs the Born-machine demo instead (QPSK, meta vs joint vs uniform prior, "
        "a noisy FakeManilaV2 device); loihi the spiking-receiver demo (three-factor rule on a Lava device)",
        choices=("onnx", "qiskit", "loihi", "none"),
    )
    device_algo: str = option("metasgd", "which run goes to the device")
    quiet: bool = option(False, flag=False)  # no progress bars of its own


EVAL = command("eval", EvalOptions, "metaedge.sdk.families.demod.runs")

DEMO = command("demo", DemoOptions, "metaedge.sdk.families.demod.demo")
