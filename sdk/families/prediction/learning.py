"""The biases of linear channel predictors, their per-frame fit and NMSE (monograph §5.4); the benchmark is ``bench``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from metaedge.backends.linear import predictor as pr
from metaedge.backends.selection import HOLDOUT
from metaedge.deploy.manifest import Holdout
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.prediction.task import ChannelConfig
from metaedge.sdk.options import option, positive_int, seed_option


def lstd_rank(text: str) -> str | int:
    """meta, aic or a positive number."""
    return int(text) if text.isdigit() else text


@dataclass(frozen=True)
class PredictionBench:
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    test_channel: ChannelConfig | None = None  # the test frames' channels, where they differ from meta-training's (a shift)
    test_split: str = option("test", "test frames' stream: test, or val to choose the selection on", flag="split", choices=("test", "val"))
    holdout: Holdout = HOLDOUT  # the selection the "selecting" rows score, as a device runs it (bundle-format.md §15.5)
    window: pr.Window = field(default_factory=pr.Window)
    lam: float = option(1.0, "ridge λ toward the bias (1 in Park and Simeone 2022)")
    meta_frames: int = option(500, "meta-training frames K", flag="frames", parse=positive_int)
    val_samples: int = option(20, "validation windows N_va per meta-training frame", parse=positive_int)
    test_frames: int = option(500, "new frames tested on", parse=positive_int)
    test_samples: int = option(20, "predictions scored per test frame", flag=False)
    sample_grid: tuple[int, ...] = option((1, 2, 5, 10, 20), "training windows N_tr per frame", flag="samples")
    rank: str | int = option("meta", "LSTD rank: meta (one R by meta-validation), aic (per frame) or a number", parse=lstd_rank)
    seed: int = seed_option("channels and frames")

    def __post_init__(self) -> None:
        if self.rank not in ("meta", "aic") and not (type(self.rank) is int and self.rank >= 1):
            raise UserError(f"--rank '{self.rank}' must be meta, aic or a positive number")
        if not self.lam > 0:
            raise UserError(f"--lam {self.lam} must be positive")


@dataclass
class Split:
    """Observed and true channels of a set of frames, with the number of training windows."""

    observed: np.ndarray
    true: np.ndarray
    train: int


def meta_training_pairs(form: str, cfg: PredictionBench, meta: Split, rank) -> tuple[np.ndarray, ...]:
    """Training and validation pairs of the meta-training frames; LSTD's basis from each frame's training slots."""
    w = cfg.window
    basis, mask = pr.lstd_basis(meta.observed[:, : w.slots(meta.train)], rank) if form == "lstd" else (None, None)
    x_tr, y_tr = pr.training_pairs(form, w, meta.observed, w.length - 1, meta.train, basis, mask)
    x_va, y_va = pr.training_pairs(form, w, meta.observed, w.length - 1 + meta.train, cfg.val_samples, basis, mask)
    return x_tr, y_tr, x_va, y_va


def biases(form: str, cfg: PredictionBench, meta: Split, rank) -> dict[str, np.ndarray | None]:
    """Θ of each scheme, from the meta-training frames."""
    x_tr, y_tr, x_va, y_va = meta_training_pairs(form, cfg, meta, rank)
    pooled_x, pooled_y = np.concatenate([x_tr, x_va], -2), np.concatenate([y_tr, y_va], -2)
    return {
        "conventional": None,
        "joint": pr.joint_bias(pooled_x, pooled_y),
        "meta": pr.meta_bias(*pr.per_sample(x_tr, y_tr), *pr.per_sample(x_va, y_va), cfg.lam),
    }


def frame_nmse(form: str, cfg: PredictionBench, frames: Split, bias, rank, scored: int, holdout: Holdout | None = None) -> float:
    """Mean NMSE of the ``scored`` predictions after each frame's training windows, each frame's predictor fitted
    on those windows toward ``bias`` (or, with ``holdout``, toward the bias the device's hold-out selection picks
    for that frame, bundle-format.md §15.5), against the true channels."""
    w = cfg.window
    seen = frames.observed[:, : w.slots(frames.train)]  # the frames' pilots
    (filters, basis, mask), *_ = pr.fit_selected(form, w, cfg.lam, seen, frames.train, bias, rank, holdout)
    history = frames.observed[:, frames.train : frames.train + w.length - 1 + scored]
    truth = w.targets(frames.true, w.length - 1 + frames.train, scored)
    return float(pr.nmse(pr.predict(form, w, filters, basis, mask, history), truth).mean())


def meta_rank(cfg: PredictionBench, meta: Split) -> int:
    """R minimising the meta-learned LSTD predictor's NMSE on the meta-training frames' validation windows."""
    return min(
        range(1, cfg.channel.entries + 1), key=lambda r: frame_nmse("lstd", cfg, meta, biases("lstd", cfg, meta, r)["meta"], r, cfg.val_samples)
    )
