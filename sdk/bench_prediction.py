"""The channel-prediction benchmark (monograph §5.4, Figure 5.9): NMSE on new frames against the number of
training samples N_tr, for conventional, joint and meta-learned linear predictors, naive and with the
long-short-term decomposition (LSTD). Every method fits its frame's predictor by the same ridge
solution (eq. 2.11, λ); they differ only in the bias Θ it is pulled toward (0, joint, meta-learned).

Meta-training frame k has N_tr training and N_va validation windows (eq. 5.22); a test frame has N_tr
training windows, and is scored on the next ``test_samples`` predictions against the true channels.
LSTD's subspace comes from the channels a frame has seen in its training slots only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from metaedge.backends.linear import predictor as pr
from metaedge.sdk.tasks.channels import ChannelConfig, ChannelFrames


@dataclass(frozen=True)
class PredictionBench:
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    window: pr.Window = field(default_factory=pr.Window)
    lam: float = 1.0                 # ridge λ (FACTS.md: 1)
    meta_frames: int = 500           # K
    val_samples: int = 20            # N_va per meta-training frame
    test_frames: int = 500
    test_samples: int = 20           # predictions scored per test frame
    sample_grid: tuple[int, ...] = (1, 2, 5, 10, 20)
    rank: str = "meta"               # LSTD rank: "aic" per frame, "meta" (one R by meta-validation) or a number
    seed: int = 0


@dataclass
class Split:
    """Observed and true channels of a set of frames, with the number of training windows."""
    observed: np.ndarray
    true: np.ndarray
    train: int


def meta_training_pairs(form: str, cfg: PredictionBench, meta: Split, rank) -> tuple[np.ndarray, ...]:
    """Training and validation pairs of the meta-training frames; LSTD's basis from each frame's training slots."""
    w = cfg.window
    basis, mask = pr.lstd_basis(meta.observed[:, :w.slots(meta.train)], rank) if form == "lstd" else (None, None)
    x_tr, y_tr = pr.training_pairs(form, w, meta.observed, w.length - 1, meta.train, basis, mask)
    x_va, y_va = pr.training_pairs(form, w, meta.observed, w.length - 1 + meta.train, cfg.val_samples, basis, mask)
    return x_tr, y_tr, x_va, y_va


def biases(form: str, cfg: PredictionBench, meta: Split, rank) -> dict[str, np.ndarray | None]:
    """Θ of each scheme, from the meta-training frames."""
    x_tr, y_tr, x_va, y_va = meta_training_pairs(form, cfg, meta, rank)
    pooled_x, pooled_y = np.concatenate([x_tr, x_va], -2), np.concatenate([y_tr, y_va], -2)
    return {"conventional": None, "joint": pr.joint_bias(pooled_x, pooled_y),
            "meta": pr.meta_bias(*pr.per_sample(x_tr, y_tr), *pr.per_sample(x_va, y_va), cfg.lam)}


def frame_nmse(form: str, cfg: PredictionBench, frames: Split, bias, rank, scored: int) -> float:
    """Mean NMSE of the ``scored`` predictions after each frame's training windows, each frame's predictor fitted
    on those windows toward ``bias``, against the true channels."""
    w = cfg.window
    filters, basis, mask = pr.fit(form, w, cfg.lam, frames.observed, frames.train, bias, rank)
    history = frames.observed[:, frames.train:frames.train + w.length - 1 + scored]
    truth = w.targets(frames.true, w.length - 1 + frames.train, scored)
    return float(pr.nmse(pr.predict(form, w, filters, basis, mask, history), truth).mean())


def meta_rank(cfg: PredictionBench, meta: Split) -> int:
    """R minimising the meta-learned LSTD predictor's NMSE on the meta-training frames' validation windows."""
    return min(range(1, cfg.channel.entries + 1),
               key=lambda r: frame_nmse("lstd", cfg, meta, biases("lstd", cfg, meta, r)["meta"], r, cfg.val_samples))


def run_benchmark(cfg: PredictionBench, progress: Callable[[int], None] | None = None) -> dict:
    env = ChannelFrames(cfg.channel, seed=cfg.seed)
    w = cfg.window
    results: dict[str, dict[str, float]] = {f"{s}-{f}": {} for f in pr.FORMS for s in pr.SCHEMES}
    ranks: dict[str, float] = {}
    for n in cfg.sample_grid:
        meta = Split(*env.frames("train", cfg.meta_frames, w.slots(n + cfg.val_samples))[::-1], train=n)
        test = Split(*env.frames("test", cfg.test_frames, w.slots(n + cfg.test_samples))[::-1], train=n)
        rank = meta_rank(cfg, meta) if cfg.rank == "meta" else cfg.rank
        seen = test.observed[:, :w.slots(n)]
        ranks[str(n)] = float(rank) if rank != "aic" else float(pr.lstd_basis(seen, "aic")[1].sum(1).mean())
        for form in pr.FORMS:
            for scheme, bias in biases(form, cfg, meta, rank).items():
                results[f"{scheme}-{form}"][str(n)] = 10 * np.log10(frame_nmse(form, cfg, test, bias, rank, cfg.test_samples))
        if progress:
            progress(n)
    setup = {**asdict(cfg), "entries": cfg.channel.entries}
    return {"benchmark": "prediction", "setup": setup, "nmse_db": results, "lstd_rank": ranks}


def quick(cfg: PredictionBench) -> PredictionBench:
    """A budget of a second, for tests of the machinery."""
    return dataclasses.replace(cfg, meta_frames=20, test_frames=10, val_samples=4, test_samples=4, sample_grid=(1, 2))
