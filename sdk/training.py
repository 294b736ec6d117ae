"""The outer loop: meta-train θ on batches of devices, validate, checkpoint, stop early.

State lives in the run directory (see ``rundir``). A checkpoint holds θ, the optimizer's
state and the sampler's random state, so ``resume`` continues exactly where a run stopped.
A non-finite meta-loss stops training with ``TrainingDiverged`` and leaves the last good
checkpoint untouched.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metaedge.deploy import tensors
from metaedge.sdk.algorithms import ADAPTED, PARTIAL_ADAPTATION, compiled_meta_gradient, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.algorithms.bayes import LOGSTD_PREFIX
from metaedge.sdk.algorithms.core import STEP_PREFIX, InnerLoop, proximal_residual
from metaedge.sdk.errors import UserError
from metaedge.sdk.evaluation import evaluate
from metaedge.sdk.models.mlp import MLPSpec
from metaedge.sdk.receivers import LearnedReceiver
from metaedge.sdk.rundir import CHECKPOINT, CONFIG, CURVES, RUN_FORMAT, RUN_VERSION, THETA, read_config, write_json
from metaedge.sdk.tasks.demod import DemodConfig, DemodTasks

VAL_PAYLOAD = 1000  # payload symbols per validation device


class TrainingDiverged(UserError):
    """The meta-loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    algo: str = "maml"
    iterations: int = 3000
    tasks_per_batch: int = 5
    inner_lr: float = 0.1
    inner_steps: int = 1
    outer_lr: float = 1e-3
    outer_opt: str = "adam"        # "sgd" with Reptile gives eq. 2.23 literally
    meta_devices: int = 1000       # K, the pool of meta-training devices
    val_devices: int = 100         # devices held out for early stopping
    val_every: int = 250
    patience: int = 8              # validations without improvement before stopping
    hidden: tuple[int, ...] = (10, 30, 30)
    context: int = 10              # CAVIA context size
    seed: int = 0
    pilots_min: int = 0            # > 0: each meta-batch draws its pilot count log-uniformly from [pilots_min, task pilots]
    compile: bool = False          # torch.compile the meta-gradient (pays off on long runs)
    prox: float = 1.0              # iMAML: λ of the proximal inner problem (eq. 2.4b)
    solver_steps: int = 5          # iMAML, ALSET: iterations of the inverse-Hessian solver
    solver: str = "cg"             # iMAML, ALSET: "cg", "neumann" or (ALSET) "stochastic"
    samples: int = 4               # vbmaml: reparameterised weight draws per inner step and per validation loss
    prior_std: float = 0.05        # vbmaml: initial standard deviation of the Gaussian prior (then meta-learned)
    kl_weight: float = 0.1         # vbmaml: weight of the KL term (1: eq. 2.32; 1 stalls with 4 pilots, see docs)
    particles: int = 5             # bmaml: particles M of the ensemble
    modules: int = 3               # modular: candidate modules per layer
    assignment: str = "anneal"     # modular: "anneal" (simulated annealing), "exhaustive" (all M^L) or "relaxed" (softmax mixture)
    proposals: int = 40            # modular: annealing proposals per task
    sharp_in: float = 0.05         # sharpmaml: perturbation radii α_in, α_ot (eq. 2.14)
    sharp_out: float = 0.05
    es_directions: int = 16        # esmaml: random directions n and smoothing δ of the ES estimators
    es_delta: float = 0.02
    es_hessian: bool = False       # esmaml: the (I − αH_es) correction of eq. 2.18
    adapt: str = "all"             # which parameters the inner loop adapts: "all" or "input" (the first layer, ADAPTED)
    inner_data: str = "support"    # reptile: "support" (every step on D_tr, eq. 2.22) or "pooled" (minibatches of D_tr ∪ D_va)

    def __post_init__(self) -> None:
        algorithm = get_algorithm(self.algo)
        checks = [
            (self.iterations >= 1, f"--iterations {self.iterations} must be at least 1"),
            (self.tasks_per_batch >= 1, f"--tasks-per-batch {self.tasks_per_batch} must be at least 1"),
            (self.tasks_per_batch <= self.meta_devices, f"--tasks-per-batch {self.tasks_per_batch} exceeds --meta-devices {self.meta_devices}; lower it or add devices"),
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
            (self.solver in ("cg", "neumann", "stochastic") and (self.solver != "stochastic" or self.algo == "alset"),
             f"--solver '{self.solver}' is unknown; use cg or neumann (or stochastic with alset)"),
            (self.solver_steps >= 1, f"--solver-steps {self.solver_steps} must be at least 1"),
            (self.samples >= 1, f"--samples {self.samples} must be at least 1"),
            (math.isfinite(self.kl_weight) and self.kl_weight >= 0, f"--kl-weight {self.kl_weight} must be 0 or more"),
            (math.isfinite(self.prior_std) and self.prior_std > 0, f"--prior-std {self.prior_std} must be a positive number"),
            (self.sharp_in >= 0 and self.sharp_out >= 0, f"--sharp-in {self.sharp_in} and --sharp-out {self.sharp_out} must be 0 or more"),
            (self.es_directions >= 1 and self.es_delta > 0, f"--es-directions {self.es_directions} must be ≥ 1 and --es-delta {self.es_delta} > 0"),
            (self.modules >= 2 and self.proposals >= 1, f"--modules {self.modules} must be ≥ 2 and --proposals {self.proposals} ≥ 1"),
            (self.assignment in ("anneal", "exhaustive", "relaxed"),
             f"--assignment '{self.assignment}' is unknown; use anneal, exhaustive or relaxed"),
            (self.particles >= 2, f"--particles {self.particles} must be at least 2 (SVGD moves particles relative to each other)"),
            (self.adapt in ADAPTED, f"--adapt '{self.adapt}' is unknown; use {' or '.join(ADAPTED)}"),
            (self.adapt == "all" or self.algo in PARTIAL_ADAPTATION,
             f"--adapt {self.adapt} works with {', '.join(PARTIAL_ADAPTATION)} (their meta-gradient reaches the parameters "
             f"that do not adapt); {self.algo} needs --adapt all"),
            (self.inner_data in ("support", "pooled"), f"--inner-data '{self.inner_data}' is unknown; use support or pooled"),
            (self.inner_data == "support" or self.algo == "reptile",
             f"--inner-data pooled works with reptile only (the others' meta-gradient needs D_va held out); {self.algo} "
             "needs --inner-data support"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def inner(self) -> InnerLoop:
        return get_algorithm(self.algo).inner(
            self.inner_lr, self.inner_steps, self.prox, solver=self.solver, solver_steps=self.solver_steps, samples=self.samples,
            kl_weight=self.kl_weight, assignment=self.assignment, proposals=self.proposals,
            sharp_in=self.sharp_in, sharp_out=self.sharp_out, es_directions=self.es_directions, es_delta=self.es_delta,
            es_hessian=self.es_hessian, adapt=ADAPTED.get(self.adapt), pooled=self.inner_data == "pooled")

    def pilot_counts(self, task: DemodConfig) -> list[int]:
        """Pilot counts seen in meta-training and validated on: task.pilots, or powers of two spanning the range."""
        if not self.pilots_min:
            return [task.pilots]
        if self.pilots_min > task.pilots:
            raise UserError(f"pilot range {self.pilots_min}-{task.pilots} is empty; give --pilots LOW-HIGH with LOW ≤ HIGH")
        grid = {self.pilots_min, task.pilots} | {2 ** k for k in range(12) if self.pilots_min < 2 ** k < task.pilots}
        return sorted(grid)

    def model(self, task: DemodConfig) -> MLPSpec:
        context = self.context if get_algorithm(self.algo).context else 0
        return MLPSpec(sizes=(2, *self.hidden, task.order), context=context)


def run_config(task: DemodConfig, train: TrainConfig) -> dict:
    return {"format": RUN_FORMAT, "version": RUN_VERSION, "task": {"name": "demod", **task.to_dict()},
            "model": train.model(task).to_dict(), "train": {**dataclasses.asdict(train), "hidden": list(train.hidden)}}


def configs_from_run(config: dict) -> tuple[DemodConfig, TrainConfig]:
    try:
        task = DemodConfig(**{k: v for k, v in config["task"].items() if k != "name"})
        train = TrainConfig(**{**config["train"], "hidden": tuple(config["train"]["hidden"])})
    except TypeError as e:
        raise UserError(f"the run's {CONFIG} has unknown or missing fields ({e}); it was written by another MetaEdge version") from None
    return task, train


def initial_theta(spec: MLPSpec, train: TrainConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """θ before meta-training: the network's initialisation, plus what the algorithm meta-learns with it."""
    algorithm = get_algorithm(train.algo)
    if algorithm.stacked:   # BMAML's particles or the module set: independently initialised networks, stacked
        draws = [spec.init(rng) for _ in range(train.modules if algorithm.modular else train.particles)]
        return {k: np.stack([d[k] for d in draws]) for k in draws[0]}
    init = spec.init(rng)
    # beside the network (theta_shapes names them): Meta-SGD's step sizes start at --inner-lr, the Gaussian prior's
    # log-std net at log --prior-std
    start = {STEP_PREFIX: train.inner_lr, LOGSTD_PREFIX: np.log(train.prior_std)}
    extra = {k: shape for k, shape in algorithm.theta_shapes(spec.shapes(), 0, train.adapt).items() if k not in init}
    init.update({k: np.full(shape, start[k.split(".")[0] + "."], np.float32) for k, shape in extra.items()})
    return init


class Trainer:
    """Meta-trains one algorithm; ``run()`` resumes from the directory's checkpoint if present."""

    def __init__(self, run_dir: Path, task: DemodConfig, train: TrainConfig) -> None:
        self.dir, self.task_cfg, self.cfg = Path(run_dir), task, train
        self.algorithm = get_algorithm(train.algo)
        self.tasks = DemodTasks(task, seed=train.seed)
        self.spec = train.model(task)
        self.inner = train.inner()
        # θ learned by the outer loop: for CAVIA the context starts every task at 0 and is not meta-learned.
        init = initial_theta(self.spec, train, np.random.default_rng([train.seed, 99]))
        self.params = {k: torch.tensor(v) for k, v in init.items()}
        self.learned = [k for k in self.params if k != "context"]
        leaves = [self.params[k].requires_grad_(True) for k in self.learned]
        self.opt = (torch.optim.Adam(leaves, lr=train.outer_lr) if train.outer_opt == "adam" else torch.optim.SGD(leaves, lr=train.outer_lr))
        self.pool = self.tasks.devices("train", train.meta_devices)
        self.rng = self.tasks.rng("train", 1)
        # the objectives' own random draws (ES directions, Gaussian samples, annealing) come from torch's generator;
        # the run keeps its own state of it, checkpointed, so that runs repeat and resume exactly
        self.torch_rng = torch.Generator().manual_seed(train.seed).get_state()
        self.state = {"iteration": 0, "best_iteration": None, "best_val_ser": None, "bad_validations": 0, "stop_reason": None,
                      "train_seconds": 0.0}
        self.curves: list[dict] = []
        if train.compile:
            self.step = compiled_meta_gradient(self.algorithm.objective, self.inner)
        else:
            self.step = lambda p, b: meta_gradient(self.algorithm.objective, p, b, self.inner)

    # -- persistence -----------------------------------------------------------------------
    def start(self, resume: bool) -> None:
        """Create the run directory, or load its checkpoint when resuming."""
        if resume:
            # a field added to the task after the run was written holds its default, which is what the run used
            saved_task, _ = configs_from_run(read_config(self.dir))
            if saved_task != self.task_cfg:
                raise UserError(f"--resume: the task configuration differs from the one in {self.dir / CONFIG}; drop the task flags to resume as it was")
            self._load_checkpoint()
            if self.state["stop_reason"] == "reached --iterations" and self.state["iteration"] < self.cfg.iterations:
                self.state["stop_reason"] = None
            return
        if self.dir.exists() and any(self.dir.iterdir()):
            raise UserError(f"'{self.dir}' already holds files; pass --resume to continue that run or choose another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / CONFIG, run_config(self.task_cfg, self.cfg))

    def _numpy_params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.params.items()}

    def _save_checkpoint(self) -> None:
        arrays = {f"theta.{k}": v for k, v in self._numpy_params().items()}
        for k in self.learned:
            for name, value in self.opt.state.get(self.params[k], {}).items():
                arrays[f"opt.{name}.{k}"] = value.detach().numpy()
        # One atomic file holds everything resume needs; curves.json is the human-readable copy.
        meta = {"state": json.dumps(self.state), "rng": json.dumps(self.rng.bit_generator.state), "curves": json.dumps(self.curves),
                "torch_rng": self.torch_rng.numpy().tobytes().hex()}
        tensors.save(self.dir / CHECKPOINT, arrays, meta)
        write_json(self.dir / CURVES, self.curves)

    def _load_checkpoint(self) -> None:
        file = self.dir / CHECKPOINT
        if not file.is_file():
            raise UserError(f"--resume: '{self.dir}' has no {CHECKPOINT}; start a new run without --resume")
        try:
            arrays, meta = tensors.load(file)
            self.state = json.loads(meta["state"])
            self.rng.bit_generator.state = json.loads(meta["rng"])
            if "torch_rng" in meta:   # absent in checkpoints of earlier versions
                self.torch_rng = torch.frombuffer(bytearray.fromhex(meta["torch_rng"]), dtype=torch.uint8)
            self.curves = json.loads(meta["curves"])
            with torch.no_grad():
                for k, v in self.params.items():
                    v.copy_(torch.from_numpy(arrays[f"theta.{k}"]))
            for k in self.learned:
                state = {name.split(".")[1]: torch.from_numpy(a) for name, a in arrays.items() if name.startswith("opt.") and name.split(".", 2)[2] == k}
                if state:
                    self.opt.state[self.params[k]] = state
        except (tensors.TensorFileError, KeyError, ValueError, TypeError) as e:
            raise UserError(f"--resume: {file} is corrupt ({e}); start a new run") from None

    # -- the loop --------------------------------------------------------------------------
    def validate(self) -> float:
        """SER after adaptation on the pilots (mean over the pilot counts trained for), on held-out devices."""
        receiver = LearnedReceiver("val", {k: v.detach() for k, v in self.params.items()}, self.inner, self.task_cfg.order)
        counts = self.cfg.pilot_counts(self.task_cfg)
        result = evaluate([(receiver, {})], self.tasks, counts, self.cfg.val_devices, VAL_PAYLOAD, split="val")[0]
        return float(np.mean([result.ser[p]["ser"] for p in counts]))

    def proximal_residual(self) -> float:
        """Median over validation devices (at most 16, the largest pilot count) of how far the inner steps end from
        the proximal minimum (``core.proximal_residual``): the check that a proximal algorithm's meta-gradient holds."""
        devices = self.tasks.devices("val", min(self.cfg.val_devices, 16))
        frames = self.tasks.frames(devices, self.task_cfg.pilots, 1, self.tasks.rng("val", 2))
        x, onehot, _, _ = to_batch(frames.x_tr, frames.y_tr, frames.x_va, frames.y_va, self.task_cfg.order)
        theta = {k: v.detach() for k, v in self.params.items()}
        residuals = torch.func.vmap(proximal_residual, in_dims=(None, 0, 0, None))(theta, x, onehot, self.inner)
        return float(residuals.median())

    def _pilots(self) -> int:
        """This meta-batch's pilot count: fixed, or log-uniform over the configured range."""
        if not self.cfg.pilots_min:
            return self.task_cfg.pilots
        low, high = np.log(self.cfg.pilots_min), np.log(self.task_cfg.pilots + 1)
        return int(min(self.task_cfg.pilots, np.floor(np.exp(self.rng.uniform(low, high)))))

    def run(self, progress: Callable[[int, dict], None] | None = None) -> dict:
        cfg = self.cfg
        window: list[float] = []
        while self.state["iteration"] < cfg.iterations and self.state["stop_reason"] is None:
            tick = time.perf_counter()
            idx = self.rng.choice(cfg.meta_devices, size=cfg.tasks_per_batch, replace=False)
            frames = self.tasks.frames(self.pool.take(idx), self._pilots(), self.task_cfg.val_pilots, self.rng)
            batch = to_batch(frames.x_tr, frames.y_tr, frames.x_va, frames.y_va, self.task_cfg.order)
            with torch.random.fork_rng():
                torch.set_rng_state(self.torch_rng)
                grads, loss = self.step({k: v.detach() for k, v in self.params.items()}, batch)
                self.torch_rng = torch.get_rng_state()
            loss = float(loss)
            if not math.isfinite(loss):
                kept = f"the last good checkpoint (iteration {self.curves[-1]['iteration']}) is kept in {self.dir}" if self.curves else "no checkpoint had been written yet"
                raise TrainingDiverged(
                    f"meta-training loss became {loss} at iteration {self.state['iteration'] + 1}; {kept}; "
                    "lower --outer-lr or --inner-lr and rerun")
            for k in self.learned:
                self.params[k].grad = grads[k]
            self.opt.step()
            self.state["train_seconds"] = self.state.get("train_seconds", 0.0) + time.perf_counter() - tick  # validations excluded
            window.append(loss)
            self.state["iteration"] += 1
            it = self.state["iteration"]
            if it % cfg.val_every == 0 or it == cfg.iterations:
                self._validation(it, float(np.mean(window)))
                window.clear()
            if progress:
                progress(it, self.state)
        return self.state

    def _validation(self, iteration: int, meta_loss: float) -> None:
        ser = self.validate()
        record = {"iteration": iteration, "meta_loss": meta_loss, "val_ser": ser}
        if self.algorithm.proximal:
            record["prox_residual"] = self.proximal_residual()
        self.curves.append(record)
        best = self.state["best_val_ser"]
        if best is None or ser < best:
            self.state.update(best_val_ser=ser, best_iteration=iteration, bad_validations=0)
            tensors.save(self.dir / THETA, self._numpy_params(), {"iteration": str(iteration), "val_ser": repr(ser)})
        else:
            self.state["bad_validations"] += 1
            if self.state["bad_validations"] >= self.cfg.patience:
                self.state["stop_reason"] = f"early stop: no better validation SER in {self.cfg.patience} validations"
        if iteration >= self.cfg.iterations and self.state["stop_reason"] is None:
            self.state["stop_reason"] = "reached --iterations"
        self._save_checkpoint()
