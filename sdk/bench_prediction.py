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

from metaedge.sdk import prediction as pr
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


def naive_data(cfg: PredictionBench, data: Split, evaluated: int):
    w = cfg.window
    x_tr, y_tr = w.pairs(data.observed, w.length - 1, data.train)
    x_ev, _ = w.pairs(data.observed, w.length - 1 + data.train, evaluated)
    _, y_true = w.pairs(data.true, w.length - 1 + data.train, evaluated)
    _, y_ev = w.pairs(data.observed, w.length - 1 + data.train, evaluated)
    return x_tr, y_tr, x_ev, y_ev, y_true


def lstd_basis(cfg: PredictionBench, data: Split, rank) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's basis B [F, S, S] from its training slots and a mask [F, S] of its first R paths."""
    seen = data.observed[:, :cfg.window.slots(data.train)]
    basis, values = pr.subspace(seen)
    s = basis.shape[-1]
    r = pr.aic_rank(values, seen.shape[1]) if rank == "aic" else np.full(len(basis), int(rank))
    return basis, (np.arange(s) < np.clip(r, 1, s)[:, None]).astype(float)


def lstd_data(cfg: PredictionBench, data: Split, evaluated: int, basis: np.ndarray, mask: np.ndarray):
    """Per-path amplitude windows (masked paths are zero rows, which no least-squares fit sees)."""
    w = cfg.window
    d = pr.amplitudes(data.observed, basis) * mask[:, None, :]
    x_tr, y_tr = pr.path_pairs(w, d, w.length - 1, data.train)
    x_ev, y_ev = pr.path_pairs(w, d, w.length - 1 + data.train, evaluated)
    return x_tr, y_tr, x_ev, y_ev


def lstd_predict(x_ev: np.ndarray, filters: np.ndarray, basis: np.ndarray, mask: np.ndarray, evaluated: int) -> np.ndarray:
    """ĥ = B d̂ for every evaluated window: [F, evaluated, S]."""
    paths = basis.shape[-1]
    d_hat = (x_ev @ filters).reshape(len(basis), paths, evaluated) * mask[:, :, None]
    return np.swapaxes(d_hat, -1, -2) @ np.swapaxes(basis, -1, -2)


def biases(form: str, cfg: PredictionBench, meta: Split, rank) -> dict[str, np.ndarray | None]:
    """Θ of each scheme, from the meta-training frames."""
    if form == "naive":
        x_tr, y_tr, x_va, y_va, _ = naive_data(cfg, meta, cfg.val_samples)
    else:
        basis, mask = lstd_basis(cfg, meta, rank)
        x_tr, y_tr, x_va, y_va = lstd_data(cfg, meta, cfg.val_samples, basis, mask)
    pooled_x, pooled_y = np.concatenate([x_tr, x_va], 1), np.concatenate([y_tr, y_va], 1)
    return {"conventional": None, "joint": pr.joint_bias(pooled_x, pooled_y),
            "meta": pr.meta_bias(*pr.per_sample(x_tr, y_tr), *pr.per_sample(x_va, y_va), cfg.lam)}


def test_nmse(form: str, cfg: PredictionBench, test: Split, bias, rank) -> float:
    """Mean NMSE over the test frames' scored predictions."""
    if form == "naive":
        x_tr, y_tr, x_ev, _, y_true = naive_data(cfg, test, cfg.test_samples)
        predicted = x_ev @ pr.ridge(*pr.per_sample(x_tr, y_tr), cfg.lam, bias)
    else:
        basis, mask = lstd_basis(cfg, test, rank)
        x_tr, y_tr, x_ev, _ = lstd_data(cfg, test, cfg.test_samples, basis, mask)
        predicted = lstd_predict(x_ev, pr.ridge(*pr.per_sample(x_tr, y_tr), cfg.lam, bias), basis, mask, cfg.test_samples)
        y_true = cfg.window.pairs(test.true, cfg.window.length - 1 + test.train, cfg.test_samples)[1]
    return float(pr.nmse(predicted, y_true).mean())


def meta_rank(cfg: PredictionBench, meta: Split) -> int:
    """R minimising the meta-learned LSTD predictor's NMSE on the meta-training frames' validation windows."""
    def validation_nmse(r: int) -> float:
        theta = biases("lstd", cfg, meta, r)["meta"]
        basis, mask = lstd_basis(cfg, meta, r)
        x_tr, y_tr, x_va, _ = lstd_data(cfg, meta, cfg.val_samples, basis, mask)
        predicted = lstd_predict(x_va, pr.ridge(*pr.per_sample(x_tr, y_tr), cfg.lam, theta), basis, mask, cfg.val_samples)
        truth = cfg.window.pairs(meta.true, cfg.window.length - 1 + meta.train, cfg.val_samples)[1]
        return float(pr.nmse(predicted, truth).mean())

    return min(range(1, cfg.channel.entries + 1), key=validation_nmse)


def run_benchmark(cfg: PredictionBench, progress: Callable[[int], None] | None = None) -> dict:
    env = ChannelFrames(cfg.channel, seed=cfg.seed)
    w = cfg.window
    results: dict[str, dict[str, float]] = {f"{s}-{f}": {} for f in pr.FORMS for s in pr.SCHEMES}
    ranks: dict[str, float] = {}
    for n in cfg.sample_grid:
        meta = Split(*env.frames("train", cfg.meta_frames, w.slots(n + cfg.val_samples))[::-1], train=n)
        test = Split(*env.frames("test", cfg.test_frames, w.slots(n + cfg.test_samples))[::-1], train=n)
        rank = meta_rank(cfg, meta) if cfg.rank == "meta" else cfg.rank
        ranks[str(n)] = float(rank) if rank != "aic" else float(lstd_basis(cfg, test, "aic")[1].sum(1).mean())
        for form in pr.FORMS:
            for scheme, bias in biases(form, cfg, meta, rank).items():
                results[f"{scheme}-{form}"][str(n)] = 10 * np.log10(test_nmse(form, cfg, test, bias, rank))
        if progress:
            progress(n)
    setup = {**asdict(cfg), "entries": cfg.channel.entries}
    return {"benchmark": "prediction", "setup": setup, "nmse_db": results, "lstd_rank": ranks}


def quick(cfg: PredictionBench) -> PredictionBench:
    """A budget of a second, for tests of the machinery."""
    return dataclasses.replace(cfg, meta_frames=20, test_frames=10, val_samples=4, test_samples=4, sample_grid=(1, 2))
