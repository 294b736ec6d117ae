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
from dataclasses import asdict
from typing import Callable

import numpy as np

from metaedge.backends.linear import predictor as pr
from metaedge.deploy.manifest import Holdout
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.prediction.config import PredictionFigure
from metaedge.sdk.families.prediction.learning import PredictionBench, Split, biases, frame_nmse, meta_rank
from metaedge.sdk.families.prediction.task import DOPPLER, ChannelConfig, ChannelFrames
from metaedge.sdk.options import Progress, chosen, silent
from metaedge.sdk.stats import format_table


def run(options: PredictionFigure, progress: Progress = silent) -> dict:
    """``metaedge bench prediction``: the benchmark in every regime of ``options`` and its plot."""
    from metaedge.sdk.plots import plot_prediction

    regimes = chosen(options.doppler, tuple(DOPPLER), "--doppler", "regime")
    if not options.slot > 0:
        raise UserError(f"--slot {options.slot} must be a positive number of seconds")
    channel = lambda regime: ChannelConfig(doppler_hz=DOPPLER[regime], slot_s=options.slot)  # noqa: E731
    shifted = channel(options.test_doppler) if options.test_doppler else None
    holdout = Holdout(options.holdout_margin, options.holdout_windows)
    setup = quick(options.setup) if options.quick else options.setup
    progress(0, total=len(regimes) * len(setup.sample_grid))
    reports = {}
    for regime in regimes:
        progress(0, label=f"prediction {regime}")
        cfg = dataclasses.replace(setup, channel=channel(regime), test_channel=shifted, holdout=holdout)
        reports[regime] = {**run_benchmark(cfg, progress=lambda _: progress()), "tested_on": options.test_doppler or regime}
    report = {"benchmark": "prediction", "regimes": reports}
    plot_prediction(report, options.plot)
    return {**report, "plot": str(options.plot)}


def text(report: dict) -> str:
    lines = []
    for regime, r in report["regimes"].items():
        grid = [str(n) for n in r["setup"]["sample_grid"]]
        tested = f", tested on {r['tested_on']} fading" if r["tested_on"] != regime else ""
        lines.append(f"NMSE (dB) on {r['setup']['test_frames']} new frames, {regime} fading{tested}, vs training samples N_tr")
        lines += [format_table(["scheme", *grid], [[name, *(f"{v[n]:.2f}" for n in grid)] for name, v in r["nmse_db"].items()]), ""]
    return "\n".join([*lines, f"written: {report['plot']}"])


def run_benchmark(cfg: PredictionBench, progress: Callable[[int], None] | None = None) -> dict:
    env = ChannelFrames(cfg.channel, seed=cfg.seed)
    tested = env if cfg.test_channel is None else ChannelFrames(cfg.test_channel, seed=cfg.seed)
    w = cfg.window
    results: dict[str, dict[str, float]] = {f"{s}-{f}": {} for f in pr.FORMS for s in (*pr.SCHEMES, "selecting")}
    ranks: dict[str, float] = {}
    for n in cfg.sample_grid:
        meta = Split(*env.frames("train", cfg.meta_frames, w.slots(n + cfg.val_samples))[::-1], train=n)
        test = Split(*tested.frames(cfg.test_split, cfg.test_frames, w.slots(n + cfg.test_samples))[::-1], train=n)
        rank = meta_rank(cfg, meta) if cfg.rank == "meta" else cfg.rank
        seen = test.observed[:, : w.slots(n)]
        ranks[str(n)] = float(rank) if rank != "aic" else float(pr.lstd_basis(seen, "aic")[1].sum(1).mean())
        for form in pr.FORMS:
            thetas = biases(form, cfg, meta, rank)
            for scheme, bias in thetas.items():
                results[f"{scheme}-{form}"][str(n)] = 10 * np.log10(frame_nmse(form, cfg, test, bias, rank, cfg.test_samples))
            # the meta-learned predictor as its device runs it: conventional where the hold-out selection says so
            selecting = frame_nmse(form, cfg, test, thetas["meta"], rank, cfg.test_samples, cfg.holdout)
            results[f"selecting-{form}"][str(n)] = 10 * np.log10(selecting)
        if progress:
            progress(n)
    setup = {**asdict(cfg), "entries": cfg.channel.entries}
    return {"benchmark": "prediction", "setup": setup, "nmse_db": results, "lstd_rank": ranks}


def quick(cfg: PredictionBench) -> PredictionBench:
    """A budget of a second, for tests of the machinery."""
    return dataclasses.replace(cfg, meta_frames=20, test_frames=10, val_samples=4, test_samples=4, sample_grid=(1, 2))
