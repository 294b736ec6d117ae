"""The spiking receiver's task and outer loop, and the options of ``metaedge train snn``, declared once (the network's
own defaults live in the device's ``SnnSpec``). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.backends.loihi.network import SnnSpec
from metaedge.sdk.errors import UserError, require_at_least_one
from metaedge.sdk.options import command, count, nested, option, out_option, output_dir, positive_int, seed_option

METHODS = ("fomaml", "reptile", "joint")
DEFAULT_META_LR = {"fomaml": 0.04, "reptile": 0.1, "joint": 0.04}
# the receivers ``metaedge bench loihi`` compares: name → (outer loop, outer-loop options)
BENCH_RUNS = {"fomaml": ("fomaml", {}), "joint": ("joint", {}), "grid": ("fomaml", {"hidden_lr": 0.0, "rate_lr": 0.0})}


@dataclass(frozen=True)
class SnnTask:
    """The spiking receiver's task: 16-QAM (or QPSK), the published I/Q imbalance, a channel, a few pilots."""

    order: int = option(16, "constellation: 16 (16-QAM) or 4 (QPSK)")
    pilots: int = option(8, "known pilots per frame", parse=positive_int)
    snr_db: float = option(20.0, "Es/N0 in dB")
    channel: str = option("rayleigh", "rayleigh or a residual phase", choices=("rayleigh", "phase"))
    phase_max_deg: float = option(60.0, "phase channel only: range ± degrees")


NO_PILOT_PHASE = option(False, "present the samples as received: no rotation by the phase of the pilots' channel estimate")


@dataclass(frozen=True)
class SnnTrainConfig:
    method: str = option("fomaml", "outer loop", flag="algo", choices=METHODS)
    iterations: int = option(600, "outer steps", parse=positive_int)
    tasks_per_batch: int = option(64, "devices per outer step", parse=positive_int)
    meta_lr: float | None = option(
        None, "β (default: the method's, " + ", ".join(f"{m} {b:g}" for m, b in DEFAULT_META_LR.items()) + ")", flag="outer-lr"
    )
    hidden_lr: float = option(0.1, "step size of the hidden layer's input weights and biases (0: keep the hand-designed grid)")
    rate_lr: float = option(1.0, "step size of the output neurons' learning rates, on log η (0: every neuron keeps η; joint: always 0)")
    val_devices: int = option(200, "validation devices", parse=positive_int)
    val_every: int = option(25, "validate every N iterations", parse=positive_int)
    seed: int = seed_option("devices, channels and pilots")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method '{self.method}' is unknown; use one of {', '.join(METHODS)}")
        require_at_least_one(self, ("iterations", "tasks_per_batch", "val_devices", "val_every"))
        if self.meta_lr is not None and not self.meta_lr > 0:
            raise UserError(f"meta_lr must be > 0, got {self.meta_lr}")
        for name in ("hidden_lr", "rate_lr"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name} must be ≥ 0, got {getattr(self, name)}")

    @property
    def beta(self) -> float:
        return self.meta_lr if self.meta_lr is not None else DEFAULT_META_LR[self.method]


@dataclass(frozen=True)
class SnnTraining:
    """spiking receiver for Loihi: the rule's starting point, the hidden layer and the learning rates (monograph §6.1)

    Meta-learn a spiking demodulator whose output layer adapts on-chip with a three-factor rule: the plastic
    synapses' starting point θ with the rule itself (FOMAML or Reptile), the hidden layer by a surrogate gradient and
    each output neuron's learning rate by first-order Meta-SGD; or train θ and the hidden layer jointly. Export it
    with --target loihi."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge train snn --out runs/snn-fomaml                       # 16-QAM, 8 pilots: ~100 s
  metaedge train snn --algo joint --out runs/snn-joint
  metaedge train snn --hidden-lr 0 --rate-lr 0 --out runs/snn-grid   # the hand-designed grid, one η: θ only
  metaedge train snn --hidden 128 --out runs/snn-h128
  metaedge train snn --order 4 --pilots 4 --out runs/snn-qpsk
  metaedge train snn --channel phase --phase-max-deg 60 --out runs/snn-phase
"""

    out: Path = out_option()
    task: SnnTask = nested(SnnTask)
    timesteps: int = option(SnnSpec.steps, "timesteps each symbol is presented", parse=positive_int)
    grid: int = option(SnnSpec.grid, "receptive fields per rail", parse=positive_int)
    hidden: int | None = option(None, "hidden LIF neurons (default grid²: the hand-designed grid is the start)", parse=positive_int)
    learning_rate: float = option(SnnSpec.learning_rate, "η every output neuron's rule starts from")
    no_pilot_phase: bool = NO_PILOT_PHASE
    train: SnnTrainConfig = nested(SnnTrainConfig)


TRAIN = command("snn", SnnTraining, "metaedge.sdk.families.demod.snn.training", skip=("train.val_devices", "train.val_every"))


@dataclass(frozen=True)
class LoihiFigure:
    """spiking receivers: SER after on-chip adaptation, meta-learned vs joint vs grid, Lava speed

    Adapts the meta-learned receiver (hidden layer, θ, rates), the jointly trained one, the hand-designed grid with
    a FOMAML θ, the untrained receiver and a random θ with the three-factor rule on the same pilots of many new
    devices (host reference, exactly Lava's dynamics), next to the ONNX receiver (Meta-SGD MLP) and the model-based
    receiver; paired differences, and the SER split by whether a symbol's class was among the pilots. Then runs
    frames on Lava (float and fixed point) and times them. Writes OUT/loihi.json."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench loihi --json                  # trains what is missing into runs/bench-loihi first (~8 min)
  metaedge bench loihi --devices 200 --lava-frames 2 --lava-payload 50     # quick look
  metaedge bench loihi --fomaml runs/snn-fomaml --joint runs/snn-joint --grid runs/snn-grid --no-lava
  metaedge bench loihi --pilots 8 --no-lava --out runs/bench-loihi-p8    # another pilot count
  metaedge bench loihi --channel phase --out runs/bench-loihi-phase      # residual carrier phase within ±60°
  metaedge bench loihi --order 4 --pilots 4 --out runs/bench-loihi-qpsk --no-lava
"""

    fomaml: Path | None = option(None, "meta-learned run (metaedge train snn --algo fomaml); default: train into --out")
    joint: Path | None = option(None, "jointly trained run (metaedge train snn --algo joint); default: train into --out")
    grid: Path | None = option(None, "the hand-designed grid run (metaedge train snn --hidden-lr 0 --rate-lr 0); default: train into --out")
    onnx: Path | None = option(None, "an MLP run for the same task (metaedge train demod --algo metasgd, same order and pilots); default: train one")
    out: Path = option(Path("runs/bench-loihi"), "runs and results", parse=output_dir)
    task: SnnTask = nested(SnnTask)
    devices: int = option(500, "new devices for the quality comparison", parse=positive_int)
    payload: int = option(1000, "payload symbols per device", parse=positive_int)
    lava_frames: int = option(5, "frames run on Lava", parse=positive_int)
    lava_payload: int = option(100, "payload symbols per Lava frame", parse=positive_int)
    fixed_frames: int = option(20, "frames run on Lava in floating and fixed point, for the SER cost of fixed point (0 skips it)", parse=count)
    no_lava: bool = option(False, "skip the Lava part (quality only)")
    no_pilot_phase: bool = NO_PILOT_PHASE
    seed: int = seed_option("devices, channels and the runs trained here")
    command: str | None = option(None, flag=False)  # the command line that asked for the report


BENCH = command("loihi", LoihiFigure, "metaedge.sdk.families.demod.snn.bench")
