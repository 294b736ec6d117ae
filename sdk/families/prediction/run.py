"""Channel prediction from the host to a device: ``metaedge train prediction`` meta-learns the predictor's bias
in closed form and keeps it as a run directory; ``metaedge export --target linear`` writes the bundle
(bundle-format.md §15) whose device fits each frame's predictor toward that bias; ``metaedge run`` streams
frames of new channels and scores the device's predictions (NMSE against the true channels)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from metaedge.backends.linear import predictor as pr
from metaedge.backends.linear.backend import to_rows
from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.prediction.config import PredictionTraining
from metaedge.sdk.families.prediction.learning import PredictionBench, Split, biases, frame_nmse, meta_rank
from metaedge.sdk.families.prediction.task import DOPPLER, ChannelConfig, ChannelFrames
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.rundir import CONFIG, RUN_FORMAT, RUN_VERSION, THETA, read_config, read_theta, write_json

MODEL_KIND = "linear-predictor"


def run(options: PredictionTraining, progress: Progress = silent) -> dict:
    """``metaedge train prediction``: the bias of ``options.scheme`` into ``options.out`` (seconds: no progress)."""
    cfg = dataclasses.replace(options.setup, channel=ChannelConfig(doppler_hz=DOPPLER[options.doppler]))
    state = train_prediction(options.out, cfg, options.samples, options.form, options.scheme)
    return {"run": str(options.out), "name": f"prediction-{options.scheme}-{options.form}", "samples": options.samples, **state}


def text(state: dict) -> str:
    return (
        f"{state['name']}: validation NMSE {state['val_nmse_db']:.2f} dB with {state['samples']} training windows "
        f"(rank {state['rank']}, {state['seconds']:.1f} s) → {state['run']}"
    )


def run_config(cfg: PredictionBench, samples: int, form: str, scheme: str, rank) -> dict:
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "task": {"name": "prediction", **dataclasses.asdict(cfg.channel)},
        "model": {"kind": MODEL_KIND, "form": form, "window": cfg.window.length, "lag": cfg.window.lag, "rank": rank},
        "train": {
            "scheme": scheme,
            "samples": samples,
            "lam": cfg.lam,
            "meta_frames": cfg.meta_frames,
            "val_samples": cfg.val_samples,
            "seed": cfg.seed,
        },
    }


def train_prediction(out: Path, cfg: PredictionBench, samples: int, form: str, scheme: str) -> dict:
    """Θ of ``scheme`` for frames with ``samples`` training windows; validation NMSE on held-out frames."""
    if form not in pr.FORMS or scheme not in pr.SCHEMES:
        raise UserError(f"--form must be one of {', '.join(pr.FORMS)} and --scheme one of {', '.join(pr.SCHEMES)}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    start = time.perf_counter()
    env, w = ChannelFrames(cfg.channel, seed=cfg.seed), cfg.window
    meta = Split(*env.frames("train", cfg.meta_frames, w.slots(samples + cfg.val_samples))[::-1], train=samples)
    rank = (meta_rank(cfg, meta) if cfg.rank == "meta" else cfg.rank) if form == "lstd" else 1
    bias = biases(form, cfg, meta, rank)[scheme]
    if bias is None:
        bias = np.zeros((w.length * cfg.channel.entries, cfg.channel.entries) if form == "naive" else (w.length, 1), complex)
    val = Split(*env.frames("val", cfg.test_frames, w.slots(samples + cfg.test_samples))[::-1], train=samples)
    nmse = frame_nmse(form, cfg, val, bias, rank, cfg.test_samples)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, run_config(cfg, samples, form, scheme, rank))
    tensors.save(out / THETA, {"bias.re": bias.real.copy(), "bias.im": bias.imag.copy()})
    return {"val_nmse_db": 10 * np.log10(nmse), "rank": rank, "seconds": time.perf_counter() - start}


def load_prediction_run(path: Path) -> tuple[dict, PredictionBench, np.ndarray]:
    config = read_config(path)
    if config["model"].get("kind") != MODEL_KIND:
        raise UserError(f"'{path}' is not a channel-prediction run (train one with 'metaedge train prediction --out {path}')")
    try:
        task = {k: tuple(v) if isinstance(v, list) else v for k, v in config["task"].items() if k != "name"}
        cfg = PredictionBench(
            channel=ChannelConfig(**task),
            window=pr.Window(config["model"]["window"], config["model"]["lag"]),
            lam=config["train"]["lam"],
            seed=config["train"]["seed"],
        )
        theta = read_theta(path, "retrain it with 'metaedge train prediction'")
        bias = theta["bias.re"] + 1j * theta["bias.im"]
    except (KeyError, TypeError) as e:
        raise UserError(f"'{path}' is an incomplete or corrupt prediction run ({e}); retrain it") from None
    return config, cfg, bias


def prediction_frames(task: dict, frames: int, samples: int, predictions: int, seed: int) -> tuple[np.ndarray, ...]:
    """Frames of new channels (meta-test split) for a predictor: pilot channels (N training windows' worth), the
    payload history (``predictions`` windows) and the true channels it should predict."""
    channel = ChannelConfig(
        **{f.name: tuple(task[f.name]) if isinstance(task[f.name], list) else task[f.name] for f in dataclasses.fields(ChannelConfig)}
    )
    w = pr.Window(length=task["window"], lag=task["lag"])
    true, observed = ChannelFrames(channel, seed=seed).frames("test", frames, w.slots(samples + predictions))
    pilots = observed[:, : w.slots(samples)]
    history = observed[:, samples : samples + w.length - 1 + predictions]
    return to_rows(pilots), to_rows(history), w.targets(true, w.length - 1 + samples, predictions)
