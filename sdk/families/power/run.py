"""Power control from the host to a device: ``metaedge train power`` trains the REGNN allocator (jointly or by
FOMAML or Reptile) and keeps it as a run directory; ``metaedge export`` writes an ONNX predictor bundle (the
allocator's forward graph, and one SGD step on the negative sum-rate of the pilot slots, which need no labels);
``metaedge run`` sends new topologies and scores the sum-rate of the powers the device returns."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.power import model as regnn
from metaedge.sdk.families.power.config import PowerBench, PowerTraining, RegnnSpec
from metaedge.sdk.families.power.learning import inner, meta_training, new_topology_rates
from metaedge.sdk.families.power.task import PowerConfig, PowerTasks
from metaedge.sdk.meta.outer import OuterLoop, of_objective
from metaedge.sdk.meta.trainer import Schedule, train
from metaedge.sdk.options import Progress, per_iteration, silent, trained_line
from metaedge.sdk.rundir import CONFIG, RUN_FORMAT, RUN_VERSION, THETA, read_config, read_theta, write_json
from metaedge.sdk.targets.onnx import Receiver, deployed_modular, selftest_vectors

MODEL_KIND = "regnn"


def run(options: PowerTraining, progress: Progress = silent) -> dict:
    """``metaedge train power``: train ``options.algo`` into ``options.out``; the final state."""
    name = f"power-{options.algo}"
    progress(0, total=options.setup.iterations, label=name)
    state = train_power(options.out, options.algo, options.periods, options.setup, per_iteration(progress, name, "val_sum_rate"))
    return {"run": str(options.out), "name": name, **state}


def text(state: dict) -> str:
    return trained_line(state, "validation sum-rate (bit/s/Hz per slot)", "val_sum_rate")


def run_config(method: str, periods: int, cfg: PowerBench) -> dict:
    train_fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("power", "model", "period_grid")}
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "task": {"name": "power", **cfg.power.to_dict()},
        "model": {"kind": MODEL_KIND, "features": list(cfg.model.features), "taps": cfg.model.taps},
        "train": {"method": method, "periods": periods, **train_fields},
    }


class PowerProblem:
    """Training the allocator on ``periods`` periods, validated once trained by the sum-rate on held-out topologies."""

    metric, label, maximize = "val_sum_rate", "validation sum-rate", True

    def __init__(self, method: str, periods: int, cfg: PowerBench) -> None:
        objective, theta, inner_loop, self.batches = meta_training(method, periods, cfg)
        self.loop, self.iteration, self.method, self.cfg = OuterLoop(theta, of_objective(objective, inner_loop), cfg.outer_lr), 0, method, cfg

    def step(self) -> float:
        self.iteration += 1
        return self.loop.step(self.batches(self.iteration))

    def validate(self) -> dict:
        return {"val_sum_rate": float(new_topology_rates(self.method, self.loop.theta, self.cfg, split="val").mean())}

    def keep(self, out: Path, record: dict) -> None:
        tensors.save(out / THETA, {k: v.numpy().copy() for k, v in self.loop.theta.items()})


def train_power(out: Path, method: str, periods: int, cfg: PowerBench, progress: Callable[[int, dict], None] | None = None) -> dict:
    """Train the allocator on ``periods`` meta-training periods; validation sum-rate on held-out topologies."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    problem = PowerProblem(method, periods, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, run_config(method, periods, cfg))
    return train(problem, Schedule(cfg.iterations, val_every=cfg.iterations), out, progress)


def load_power_run(path: Path) -> tuple[str, PowerBench, dict[str, torch.Tensor]]:
    config = read_config(path)
    if config["model"].get("kind") != MODEL_KIND:
        raise UserError(f"'{path}' is not a power-control run (train one with 'metaedge train power --out {path}')")
    _require_coupling(config.get("task", {}), f"'{path}' is a power-control run", "retrain it with 'metaedge train power'")
    try:
        task = {k: tuple(v) if isinstance(v, list) else v for k, v in config["task"].items() if k != "name"}
        t = config["train"]
        cfg = PowerBench(
            power=PowerConfig(**task),
            model=RegnnSpec(tuple(config["model"]["features"]), config["model"]["taps"]),
            **{
                k: t[k]
                for k in (
                    "iterations",
                    "tasks_per_batch",
                    "inner_lr",
                    "inner_steps",
                    "outer_lr",
                    "modules",
                    "proposals",
                    "train_slots",
                    "val_slots",
                    "test_periods",
                    "test_slots",
                    "seed",
                )
            },
        )
    except (KeyError, TypeError) as e:
        raise UserError(f"'{path}' is an incomplete or corrupt power-control run ({e}); retrain it") from None
    theta = {k: torch.from_numpy(v) for k, v in read_theta(path, "retrain it with 'metaedge train power'").items()}
    return t["method"], cfg, theta


def task_section(config: PowerConfig) -> dict:
    v = config.max_links
    return {
        "name": "power",
        "features": [f"G[{j},{i}]" for j in range(v) for i in range(v)] + ["noise", "coupling"],
        "outputs": v,
        "pilot_sequence": None,
        **config.to_dict(),
    }


def receiver(run_dir: Path, steps: int | None) -> Receiver:
    method, cfg, theta = load_power_run(run_dir)
    loop, powers = inner(method, cfg), regnn.powers
    if steps is not None:
        loop = dataclasses.replace(loop, steps=steps)
    if loop.assignment:  # modular: the device picks the best assignment of modules on the pilot slots (spec §7.5)
        theta, loop, powers = deployed_modular(theta, loop, steps, run_dir, regnn.powers)
    env = PowerTasks(cfg.power, seed=cfg.seed)
    topology = env.topologies("val", 1)
    pilots, samples = (env.slots(topology, n, env.rng("val", 99 + n))[0] for n in (cfg.train_slots, 16))
    model = {
        "kind": MODEL_KIND,
        "features": list(cfg.model.features),
        "taps": cfg.model.taps,
        "output": "sigmoid",
        **({"modules": cfg.modules} if loop.assignment else {}),
    }
    return Receiver(
        theta,
        loop,
        method,
        task_section(cfg.power),
        selftest_vectors(theta, loop, pilots, None, samples, fn=powers, output="outputs"),
        {"run": str(run_dir), "algo": method, "seed": cfg.seed},
        model=model,
        forward=powers,
        output="outputs",
        loss="negative_sum_rate",
    )


def _require_coupling(task: dict, what: str, fix: str) -> None:
    """Runs and bundles made before the interference coupling existed were trained on another task (c = 1) and
    take samples without it: refuse them by name rather than mis-score them."""
    if isinstance(task, dict) and "coupling" not in task:
        raise UserError(f"{what} from before the interference coupling (its task has no 'coupling'); {fix}")


def power_frames(task: dict, frames: int, pilots: int, slots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames of new topologies (meta-test split): ``pilots`` slots to adapt on and ``slots`` slots to allocate."""
    _require_coupling(task, "the device runs a power allocator", "re-export its run with this version and deploy it")
    config = PowerConfig(**{f.name: tuple(task[f.name]) if isinstance(task[f.name], list) else task[f.name] for f in dataclasses.fields(PowerConfig)})
    env = PowerTasks(config, seed=seed)
    topologies = env.topologies("test", frames)
    return env.slots(topologies, pilots, env.rng("test", 1)), env.slots(topologies, slots, env.rng("test", 2))


def sum_rates(samples: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """Sum-rate of each slot [N] for samples [N, V² + 2] and powers [N, V] (eq. 5.26)."""
    return regnn.sum_rate(*regnn.gains(torch.tensor(samples, dtype=torch.float64)), torch.tensor(powers, dtype=torch.float64)).numpy()
