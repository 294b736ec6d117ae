"""A demodulator run: the family's training problem on the one training loop (``meta.trainer``), with checkpoints.

State lives in the run directory (see ``rundir``). A checkpoint holds θ, the optimizer's
state and the sampler's random state, so ``resume`` continues exactly where a run stopped.
A non-finite meta-loss stops training with ``TrainingDiverged`` and leaves the last good
checkpoint untouched.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.config import TrainConfig
from metaedge.sdk.families.demod.evaluation import evaluate
from metaedge.sdk.families.demod.receivers import LearnedReceiver
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.meta import compiled_meta_gradient, get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.bayes import LOGSTD_PREFIX
from metaedge.sdk.meta.core import STEP_PREFIX, proximal_residual
from metaedge.sdk.meta.outer import OuterLoop
from metaedge.sdk.meta.placement import Placement, sharded
from metaedge.sdk.meta.trainer import Schedule, TrainingDiverged, new_state, train  # noqa: F401 — TrainingDiverged: this run's error
from metaedge.sdk.models.mlp import MLPSpec
from metaedge.sdk.rundir import CHECKPOINT, CONFIG, CURVES, RUN_FORMAT, RUN_VERSION, THETA, read_config, write_json

VAL_PAYLOAD = 1000  # payload symbols per validation device


def run_config(task: DemodConfig, train: TrainConfig) -> dict:
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "task": {"name": "demod", **task.to_dict()},
        "model": train.model(task).to_dict(),
        "train": {**dataclasses.asdict(train), "hidden": list(train.hidden)},
    }


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
    if algorithm.stacked:  # BMAML's particles or the module set: independently initialised networks, stacked
        draws = [spec.init(rng) for _ in range(train.modules if algorithm.modular else train.particles)]
        return {k: np.stack([d[k] for d in draws]) for k in draws[0]}
    init = spec.init(rng)
    # beside the network (theta_shapes names them): Meta-SGD's step sizes start at --inner-lr, the Gaussian prior's
    # log-std net at log --prior-std
    start = {STEP_PREFIX: train.inner_lr, LOGSTD_PREFIX: np.log(train.prior_std)}
    extra = {k: shape for k, shape in algorithm.theta_shapes(spec.shapes(), 0, train.adapt).items() if k not in init}
    init.update({k: np.full(shape, start[k.split(".")[0] + "."], np.float32) for k, shape in extra.items()})
    return init


def _optimizer_tensor(name: str, array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A checkpointed optimizer state tensor where the optimizer keeps it: Adam's step count on the host, its moments
    beside their parameter."""
    tensor = torch.from_numpy(array)
    return tensor if name == "step" else tensor.to(device)


class Trainer:
    """Meta-trains one algorithm on the demodulation task (a ``meta.trainer.Problem``); ``run()`` resumes from the
    directory's checkpoint if ``start(resume=True)`` loaded one."""

    metric, label, maximize = "val_ser", "validation SER", False

    def __init__(self, run_dir: Path, task: DemodConfig, train: TrainConfig, where: Placement = Placement()) -> None:
        self.dir, self.task_cfg, self.cfg, self.where = Path(run_dir), task, train, where
        if train.tasks_per_batch < where.world:
            raise UserError(f"--tasks-per-batch {train.tasks_per_batch} is below the {where.world} ranks: every rank needs a share of the tasks")
        self.algorithm = get_algorithm(train.algo)
        self.tasks = DemodTasks(task, seed=train.seed)
        self.spec = train.model(task)
        self.inner = train.inner()
        # θ learned by the outer loop: for CAVIA the context starts every task at 0 and is not meta-learned.
        init = initial_theta(self.spec, train, np.random.default_rng([train.seed, 99]))
        if train.compile:
            gradient = compiled_meta_gradient(self.algorithm.objective, self.inner)
        else:
            gradient = lambda p, b: meta_gradient(self.algorithm.objective, p, b, self.inner)  # noqa: E731
        learned = [k for k in init if k != "context"]
        theta = {k: torch.tensor(v, device=where.device) for k, v in init.items()}
        self.loop = OuterLoop(theta, sharded(gradient, where), train.outer_lr, train.outer_opt, learned)
        self.pool = self.tasks.devices("train", train.meta_devices)
        self.rng = self.tasks.rng("train", 1)
        # the objectives' own random draws (ES directions, Gaussian samples, annealing) come from torch's generator;
        # the run keeps its own state of it, checkpointed, so that runs repeat and resume exactly
        self.torch_rng = torch.Generator().manual_seed(train.seed).get_state()
        self.state = new_state(self)
        self.curves: list[dict] = []
        self.started = False  # the run directory exists (start), or was loaded (start with resume)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.loop.params

    # -- persistence -----------------------------------------------------------------------
    def start(self, resume: bool = False) -> None:
        """Create the run directory (rank 0), or load its checkpoint when resuming. ``run`` starts a new run by itself."""
        self.started = True
        if resume:
            # a field added to the task after the run was written holds its default, which is what the run used
            saved_task, _ = configs_from_run(read_config(self.dir))
            if saved_task != self.task_cfg:
                raise UserError(
                    f"--resume: the task configuration differs from the one in {self.dir / CONFIG}; drop the task flags to resume as it was"
                )
            self._load_checkpoint()
            if self.state["stop_reason"] == "reached --iterations" and self.state["iteration"] < self.cfg.iterations:
                self.state["stop_reason"] = None
            return
        if self.dir.exists() and any(self.dir.iterdir()):
            raise UserError(f"'{self.dir}' already holds files; pass --resume to continue that run or choose another --out")
        self.where.barrier()  # every rank has looked before rank 0 writes
        if self.where.writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json(self.dir / CONFIG, run_config(self.task_cfg, self.cfg))

    def _numpy_params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.params.items()}

    def _save_checkpoint(self, state: dict, curves: list[dict]) -> None:
        arrays = {f"theta.{k}": v for k, v in self._numpy_params().items()}
        for k in self.loop.learned:
            for name, value in self.loop.opt.state.get(self.params[k], {}).items():
                arrays[f"opt.{name}.{k}"] = value.detach().cpu().numpy()
        # One atomic file holds everything resume needs; curves.json is the human-readable copy.
        meta = {
            "state": json.dumps(state),
            "rng": json.dumps(self.rng.bit_generator.state),
            "curves": json.dumps(curves),
            "torch_rng": self.torch_rng.numpy().tobytes().hex(),
        }
        tensors.save(self.dir / CHECKPOINT, arrays, meta)
        write_json(self.dir / CURVES, curves)

    def _load_checkpoint(self) -> None:
        file = self.dir / CHECKPOINT
        if not file.is_file():
            raise UserError(f"--resume: '{self.dir}' has no {CHECKPOINT}; start a new run without --resume")
        try:
            arrays, meta = tensors.load(file)
            self.state = {**new_state(self), **json.loads(meta["state"])}
            self.rng.bit_generator.state = json.loads(meta["rng"])
            if "torch_rng" in meta:  # absent in checkpoints of earlier versions
                self.torch_rng = torch.frombuffer(bytearray.fromhex(meta["torch_rng"]), dtype=torch.uint8)
            self.curves = json.loads(meta["curves"])
            with torch.no_grad():
                for k, v in self.params.items():
                    v.copy_(torch.from_numpy(arrays[f"theta.{k}"]))
            for k in self.loop.learned:
                state = {
                    name.split(".")[1]: _optimizer_tensor(name.split(".")[1], a, self.params[k].device)
                    for name, a in arrays.items()
                    if name.startswith("opt.") and name.split(".", 2)[2] == k
                }
                if state:
                    self.loop.opt.state[self.params[k]] = state
        except (tensors.TensorFileError, KeyError, ValueError, TypeError) as e:
            raise UserError(f"--resume: {file} is corrupt ({e}); start a new run") from None

    # -- the problem the training loop steps -------------------------------------------------
    def step(self) -> float:
        """One meta-batch of devices (and its pilot count), its meta-gradient under the run's torch random state."""
        idx = self.rng.choice(self.cfg.meta_devices, size=self.cfg.tasks_per_batch, replace=False)
        frames = self.tasks.frames(self.pool.take(idx), self._pilots(), self.task_cfg.val_pilots, self.rng)
        batch = tuple(t.to(self.where.device) for t in to_batch(frames.x_tr, frames.y_tr, frames.x_va, frames.y_va, self.task_cfg.order))
        with torch.random.fork_rng():
            torch.set_rng_state(self.torch_rng)
            if self.where.world > 1:  # each rank its own draws; the shared state advances alike on every rank
                seeds = torch.randint(0, 2**62, (self.where.world,))
                shared = torch.get_rng_state()
                torch.manual_seed(int(seeds[self.where.rank]))
            loss = self.loop.step(batch)
            self.torch_rng = shared if self.where.world > 1 else torch.get_rng_state()
        return loss

    def validate(self) -> dict:
        """SER after adaptation on the pilots (mean over the pilot counts trained for), on held-out devices; for a
        proximal algorithm also how well its inner problem is solved."""
        receiver = LearnedReceiver("val", self.cpu_theta(), self.inner, self.task_cfg.order)
        counts = self.cfg.pilot_counts(self.task_cfg)
        result = evaluate([(receiver, {})], self.tasks, counts, self.cfg.val_devices, VAL_PAYLOAD, split="val")[0]
        record = {"val_ser": float(np.mean([result.ser[p]["ser"] for p in counts]))}
        return {**record, "prox_residual": self.proximal_residual()} if self.algorithm.proximal else record

    def cpu_theta(self) -> dict[str, torch.Tensor]:
        """θ on the host, where validation runs (on the numpy devices of the validation split)."""
        return {k: v.cpu() for k, v in self.loop.theta.items()}

    def keep(self, out: Path, record: dict) -> None:
        tensors.save(out / THETA, self._numpy_params(), {"iteration": str(record["iteration"]), "val_ser": repr(record["val_ser"])})

    def proximal_residual(self) -> float:
        """Median over validation devices (at most 16, the largest pilot count) of how far the inner steps end from
        the proximal minimum (``core.proximal_residual``): the check that a proximal algorithm's meta-gradient holds."""
        devices = self.tasks.devices("val", min(self.cfg.val_devices, 16))
        frames = self.tasks.frames(devices, self.task_cfg.pilots, 1, self.tasks.rng("val", 2))
        x, onehot, _, _ = to_batch(frames.x_tr, frames.y_tr, frames.x_va, frames.y_va, self.task_cfg.order)
        residuals = torch.func.vmap(proximal_residual, in_dims=(None, 0, 0, None))(self.cpu_theta(), x, onehot, self.inner)
        return float(residuals.median())

    def _pilots(self) -> int:
        """This meta-batch's pilot count: fixed, or log-uniform over the configured range."""
        if not self.cfg.pilots_min:
            return self.task_cfg.pilots
        low, high = np.log(self.cfg.pilots_min), np.log(self.task_cfg.pilots + 1)
        return int(min(self.task_cfg.pilots, np.floor(np.exp(self.rng.uniform(low, high)))))

    def run(self, progress: Callable[[int, dict], None] | None = None) -> dict:
        """Meta-train until the iteration budget or early stopping; a trainer not yet started starts a new run.
        ``progress(iteration, last validation)`` follows every step."""
        if not self.started:
            self.start()
        schedule = Schedule(self.cfg.iterations, self.cfg.val_every, self.cfg.patience, halt_on_divergence=True)
        if not self.where.writer:  # every rank validates the same θ (the same decisions); rank 0 alone writes
            return train(self, schedule, None, None, self.state, self.curves)
        return train(self, schedule, self.dir, progress, self.state, self.curves, self._save_checkpoint)
