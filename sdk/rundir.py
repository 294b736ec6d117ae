"""A run directory: everything one meta-training run produced, readable without our code.

config.json          task, model and training configuration (format "metaedge-run", version 1)
theta.safetensors    θ with the best validation SER (float32, names of MLPSpec.shapes)
checkpoint.safetensors  latest θ and optimizer state; training state in __metadata__["state"]
curves.json          one record per validation: iteration, meta-loss, validation SER (proximal algorithms:
                     prox_residual, how far the inner steps end from the proximal minimum)
curves.png           the same, plotted
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.meta import get_algorithm
from metaedge.sdk.models.mlp import MLPSpec

RUN_FORMAT = "metaedge-run"
RUN_VERSION = 1
CONFIG, THETA, CHECKPOINT, CURVES = "config.json", "theta.safetensors", "checkpoint.safetensors", "curves.json"


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


@dataclass
class Run:
    path: Path
    config: dict
    theta: dict[str, np.ndarray]

    @property
    def algo(self) -> str:
        return self.config["train"]["algo"]


def read_config(path: Path) -> dict:
    """The run's config.json, or a UserError that says what is wrong with the directory."""
    if not path.is_dir():
        raise UserError(f"run directory '{path}' does not exist; train one with 'metaedge train demod --out {path}'")
    file = path / CONFIG
    if not file.is_file():
        raise UserError(f"'{path}' is not a run directory (no {CONFIG}); pass a directory written by 'metaedge train'")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is corrupt ({e}); retrain or restore the run directory") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise UserError(f"{file} is not a MetaEdge run configuration (format must be '{RUN_FORMAT}')")
    if config.get("version") != RUN_VERSION:
        raise UserError(f"{file} has run format version {config.get('version')}; this MetaEdge reads version {RUN_VERSION}")
    for key in ("task", "model", "train"):
        if not isinstance(config.get(key), dict):
            raise UserError(f"{file} lacks its '{key}' section; retrain or restore the run directory")
    return config


def read_kind_config(path: Path, kind: str, what: str, train_command: str) -> dict:
    """The config of a run whose model is of ``kind`` (e.g. "born", "snn"), or a UserError naming the command that makes one."""
    config = read_config(path)
    if config["model"].get("kind") != kind:
        raise UserError(f"'{path}' is not a {what} run (train one with '{train_command} --out {path}')")
    return config


def read_best_theta(path: Path, names: tuple[str, ...]) -> list[np.ndarray]:
    """The arrays ``names`` of the run's best θ file, as float64, or a UserError saying what is wrong."""
    file = path / THETA
    if not file.is_file():
        raise UserError(f"'{path}' has no {THETA} yet (training stopped before its first validation)")
    try:
        stored = tensors.load(file)[0]
        return [stored[name].astype(np.float64) for name in names]
    except (tensors.TensorFileError, KeyError) as e:
        raise UserError(f"{file} is corrupt ({e}); retrain the run") from None


def read_theta(path: Path, hint: str) -> dict[str, np.ndarray]:
    """The run's best θ, or a UserError: missing (with ``hint``, what to do) or corrupt."""
    file = path / THETA
    if not file.is_file():
        raise UserError(f"'{path}' has no {THETA} yet (training stopped before its first validation); {hint}")
    try:
        return tensors.load(file)[0]
    except tensors.TensorFileError as e:
        raise UserError(f"{file} is corrupt: {e}; retrain or restore the run directory") from None


def load_run(path: str | os.PathLike) -> Run:
    """Config and best θ of a finished (or interrupted) run."""
    path = Path(path)
    config = read_config(path)
    kind = config["model"].get("kind")
    if kind is not None:  # a run of another model: its family says what to do with it
        from metaedge.sdk import families

        family = families.of_run(config, path)
        use = family.uses.get(kind, f"see '{family.train_command} --help'").replace("RUN", str(path))
        raise UserError(f"'{path}' is a {family.name} run of a {kind} model, not an MLP demodulator: {use}")
    theta = read_theta(path, f"resume it with 'metaedge train demod --out {path} --resume'")
    try:
        expected = MLPSpec.from_dict(config["model"]).shapes()
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / CONFIG} has an invalid model section ({e})") from None
    try:
        algorithm = get_algorithm(config["train"]["algo"])
        stack = config["train"].get("modules" if algorithm.modular else "particles", 0)
        expected = algorithm.theta_shapes(expected, int(stack), config["train"].get("adapt", "all"))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / CONFIG} has an invalid train section ({e})") from None
    got = {k: tuple(v.shape) for k, v in theta.items()}
    if got != expected:
        raise UserError(
            f"{path / THETA} does not match the model in {CONFIG} (expected {expected}, found {got}); retrain or restore the run directory"
        )
    return Run(path=path, config=config, theta=theta)
