"""The Born-machine receiver's task, adaptation budget and outer loop, and the options of ``metaedge train born``,
declared once (the circuit's own defaults live in the device's ``BornSpec``). Torch-free."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.backends.qiskit.model import BornSpec
from metaedge.sdk.errors import UserError, require_at_least_one
from metaedge.sdk.options import command, count, nested, option, out_option, output_dir, positive_int, seed_option, str_list

METHODS = ("meta", "joint")


@dataclass(frozen=True)
class BornTask:
    """QPSK with a residual carrier phase: one pilot at 10 dB is the regime where the prior decides."""

    pilots: int = option(1, "known pilots per frame", parse=positive_int)
    snr_db: float = option(10.0, "Es/N0 in dB")
    phase_max_deg: float = option(60.0, "residual carrier phase range ± degrees")


@dataclass(frozen=True)
class InnerConfig:
    """The adaptation budget a device runs: gradient steps, step size, KL weight λ, shots."""

    steps: int = option(2, "adaptation steps on the device", flag="inner-steps", parse=count)
    lr: float = option(0.01, "initial step size (meta learns one per angle)", flag="inner-lr")
    kl_weight: float = option(1.0, "weight λ of the KL term of the free energy")
    shots: int = option(256, "device shots per parameter setting of a step", parse=positive_int)
    predict_shots: int = option(1024, "weight samples of the predictive ensemble", flag=False)
    prior_shots: int = option(4096, "samples of q(·|θ) a device draws once, for its density-ratio estimate", flag=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--inner-lr {self.lr} must be a positive number")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BornTrainConfig:
    method: str = option("meta", "meta (through the inner loop, eq. 2.33) or joint (one circuit for all tasks)", flag="algo", choices=METHODS)
    iterations: int = option(400, "outer steps", parse=positive_int)
    tasks_per_batch: int = option(32, "devices per outer step", parse=positive_int)
    outer_lr: float = option(0.05, "Adam step size")
    val_devices: int = option(256, "validation devices", parse=positive_int)
    val_every: int = option(25, "validate every N iterations", parse=positive_int)
    seed: int = seed_option("devices, channels and shots")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method '{self.method}' is unknown; use meta or joint")
        require_at_least_one(self, ("iterations", "tasks_per_batch", "val_devices", "val_every"))
        if not self.outer_lr > 0:
            raise UserError(f"outer_lr must be > 0, got {self.outer_lr}")


@dataclass(frozen=True)
class BornTraining:
    """Born-machine binary network for QPSK with a residual phase (monograph §6.2.2)

    Meta-learn (or jointly learn) the prior circuit of a Born-machine binary network for few-pilot QPSK
    demodulation; export it with --target qiskit."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge train born --out runs/born-meta
  metaedge train born --algo joint --out runs/born-joint
  metaedge train born --qubits 8 --layers 3 --inner-steps 3 --out runs/born-8q     # ideal simulation only (> 5 qubits)
"""

    out: Path = out_option()
    task: BornTask = nested(BornTask)
    qubits: int = option(BornSpec.qubits, "binary weights = qubits (exact simulation beyond 5; at most 12)", parse=positive_int)
    layers: int = option(BornSpec.layers, "entangling layers of the ansatz", parse=count)
    inner: InnerConfig = nested(InnerConfig)
    train: BornTrainConfig = nested(BornTrainConfig)


TRAIN = command("born", BornTraining, "metaedge.sdk.families.demod.born.training", skip=("train.val_devices", "train.val_every"))


@dataclass(frozen=True)
class QiskitFigure:
    """Born-machine receivers: SER, log-loss, ECE, noise gap, circuits/shots/time

    Adapts the meta-learned prior, the jointly learned circuit and the uniform prior on the same pilots with the
    same shot budget: exactly on many new devices (with the point-estimate BNN as frequentist counterpart), and
    through the Qiskit backend on each target. Writes OUT/qiskit.json and OUT/reliability.png."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench qiskit --json                        # trains meta and joint circuits first (~20 s), then measures
  metaedge bench qiskit --meta runs/born-meta --joint runs/born-joint --out runs/bench-qiskit
  metaedge bench qiskit --targets ideal --device-frames 10 --exact-devices 200   # quick look
"""

    meta: Path | None = option(None, "meta-learned run (metaedge train born); default: train one into --out")
    joint: Path | None = option(None, "jointly learned run (--algo joint); default: train one into --out")
    out: Path = option(Path("runs/bench-qiskit"), "runs and results", parse=output_dir)
    exact_devices: int = option(500, "new devices for the exact evaluation", parse=positive_int)
    device_frames: int = option(30, "new devices per target through the backend", parse=positive_int)
    targets: tuple[str, ...] = option(("ideal", "noisy:FakeManilaV2"), "backends: ideal, noisy:<Fake device>", parse=str_list)
    seed: int = seed_option("devices, channels, shots and the runs trained here")
    command: str | None = option(None, flag=False)  # the command line that asked for the report


BENCH = command("qiskit", QiskitFigure, "metaedge.sdk.families.demod.born.bench")
