"""``metaedge train link``: meta-train an encoder/decoder pair for the learned link and keep it as a run
directory (config.json, theta.safetensors of the best validation, curves.json) that ``metaedge export``
turns into a receiver bundle. Validation: BLER on held-out channels after the run's adaptation steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.link.config import LinkBench, LinkTraining
from metaedge.sdk.families.link.learning import bler_curve, initial, meta_training, spec_of
from metaedge.sdk.families.link.task import LinkConfig
from metaedge.sdk.meta.outer import OuterLoop, of_objective
from metaedge.sdk.meta.trainer import Schedule, train
from metaedge.sdk.options import Progress, per_iteration, silent, trained_line
from metaedge.sdk.rundir import CONFIG, RUN_FORMAT, RUN_VERSION, THETA, read_config, read_theta, write_json

MODEL_KIND = "autoencoder"
VAL_CHANNELS = 50
VAL_MESSAGES = 2000


def run(options: LinkTraining, progress: Progress = silent) -> dict:
    """``metaedge train link``: train ``options.algo`` into ``options.out``; the final state."""
    name = f"link-{options.algo}"
    progress(0, total=options.setup.iterations, label=name)
    state = train_link(options.out, options.algo, options.setup, options.inner_steps, options.val_every, per_iteration(progress, name, "val_bler"))
    return {"run": str(options.out), "name": name, **state, "label": f"best validation BLER after {options.inner_steps} step(s)"}


def text(state: dict) -> str:
    return trained_line(state, state["label"], "val_bler")


def run_config(method: str, cfg: LinkBench, steps: int, val_every: int) -> dict:
    spec = spec_of(cfg)
    train_fields = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("link", "hidden", "rtn_taps", "steps", "test_channels", "test_messages")
    }
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "task": {"name": "link", **cfg.link.to_dict()},
        "model": {"kind": MODEL_KIND, "messages": spec.messages, "uses": spec.uses, "hidden": list(spec.hidden), "rtn_taps": spec.rtn_taps},
        "train": {"method": method, **train_fields, "steps": steps, "val_every": val_every},
    }


def bench_config(config: dict) -> tuple[str, LinkBench, int]:
    """(method, training configuration, device adaptation steps) of a link run's config."""
    try:
        link = LinkConfig(**{k: v for k, v in config["task"].items() if k != "name"})
        t = config["train"]
        cfg = LinkBench(
            link=link,
            hidden=tuple(config["model"]["hidden"]),
            rtn_taps=int(config["model"].get("rtn_taps", 0)),
            iterations=t["iterations"],
            meta_channels=t["meta_channels"],
            tasks_per_batch=t["tasks_per_batch"],
            inner_lr=t["inner_lr"],
            outer_lr=t["outer_lr"],
            seed=t["seed"],
        )
        return t["method"], cfg, int(t["steps"])
    except (KeyError, TypeError) as e:
        raise UserError(f"the link run's {CONFIG} has unknown or missing fields ({e}); it was written by another MetaEdge version") from None


def is_link_run(config: dict) -> bool:
    return config["model"].get("kind") == MODEL_KIND


class LinkProblem:
    """Meta-training one link method, validated by the BLER on held-out channels after the device's steps."""

    metric, label, maximize = "val_bler", "validation BLER", False

    def __init__(self, method: str, cfg: LinkBench, steps: int) -> None:
        objective, theta, inner, self.batches = meta_training(method, cfg)
        self.loop, self.iteration = OuterLoop(theta, of_objective(objective, inner), cfg.outer_lr), 0
        self.method, self.steps, self.validation = method, steps, dataclasses.replace(cfg, test_messages=VAL_MESSAGES)

    def step(self) -> float:
        self.iteration += 1
        return self.loop.step(self.batches(self.iteration))

    def validate(self) -> dict:
        curve = bler_curve(self.method, self.loop.theta, self.validation, split="val", channels=VAL_CHANNELS, steps=(self.steps,))
        return {"val_bler": curve[str(self.steps)]["ser"]}

    def keep(self, out: Path, record: dict) -> None:
        tensors.save(out / THETA, {k: v.numpy().copy() for k, v in self.loop.theta.items()}, {"iteration": str(record["iteration"])})


def train_link(out: Path, method: str, cfg: LinkBench, steps: int, val_every: int, progress: Callable[[int, dict], None] | None = None) -> dict:
    """Train, validating every ``val_every`` iterations; the best θ by validation BLER is kept."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    problem = LinkProblem(method, cfg, steps)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, run_config(method, cfg, steps, val_every))
    return train(problem, Schedule(cfg.iterations, val_every), out, progress)


def load_link_run(path: Path) -> tuple[dict, dict]:
    """(config, best θ as numpy arrays) of a link run, or a UserError saying what is wrong."""
    config = read_config(path)
    if not is_link_run(config):
        raise UserError(f"'{path}' is not a learned-link run (train one with 'metaedge train link --out {path}')")
    method, cfg, _ = bench_config(config)
    theta = read_theta(path, "retrain it with 'metaedge train link'")
    expected = {k: tuple(v.shape) for k, v in initial(method, cfg).items()}
    if {k: tuple(v.shape) for k, v in theta.items()} != expected:
        raise UserError(f"{path / THETA} does not match the model in {CONFIG}; retrain or restore the run directory")
    return config, theta
