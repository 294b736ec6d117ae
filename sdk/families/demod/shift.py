"""``metaedge bench shift``: does a deployed demodulator know when not to trust itself?

A run's learned receiver alone, the classical receiver its bundle carries (bundle-format.md §6.1) alone, and
the selecting receiver the device runs (§6.2), on fresh devices of the training distribution and of shifted
ones, all three on the same devices, channels, noise and payload (paired). The figures: SER per receiver and
pilot count with 95 % intervals over devices, the selecting receiver's paired difference to each of the others
and to the better of the two, the share of frames the classical receiver decided, and the issue's claims
checked against them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from metaedge.deploy.manifest import Selection
from metaedge.sdk.options import Progress, chosen, silent
from metaedge.sdk.stats import format_table, paired_text, summarise

# name → (what a reader sees, the task fields it changes); shifts are absolute values, whatever the run trained on
SHIFTS: dict[str, tuple[str, dict]] = {
    "trained": ("as trained", {}),
    "snr-15": ("SNR 15 dB", {"snr_db": 15.0}),
    "snr-18": ("SNR 18 dB", {"snr_db": 18.0}),
    "iq-milder": ("milder I/Q imbalance: ε = 0.15·Beta(2, 5), δ = 15°·Beta(2, 5)", {"beta_a": 2.0, "beta_b": 5.0}),
    "iq-stronger": ("stronger I/Q imbalance: ε = 0.25·Beta(5, 2), δ = 25°·Beta(5, 2)", {"eps_max": 0.25, "delta_max_deg": 25.0}),
    "rician": ("Rician channel, K = 10 dB", {"channel": "rician", "k_factor_db": 10.0}),
    "iq-none": ("an ideal transmitter (no I/Q imbalance)", {"eps_max": 0.0, "delta_max_deg": 0.0}),
    "snr-25": ("SNR 25 dB (cleaner than trained)", {"snr_db": 25.0}),
    "snr-12": ("SNR 12 dB", {"snr_db": 12.0}),
}
RECEIVERS = ("learned", "classical", "selecting")
IN_DISTRIBUTION_COST = 0.005  # the issue's claims: at most this SER above the learned receiver in distribution (≥ 2 pilots)
SHIFT_TOLERANCE = 0.01  # … and within this of the better receiver under every shift (≥ 4 pilots)


def run(options, progress: Progress = silent) -> dict:
    """``metaedge bench shift``: the benchmark of ``options`` (a ``config.ShiftFigure``) and its plot."""
    from metaedge.backends.selection import SELECT
    from metaedge.sdk.plots import plot_shift

    shifts = chosen(options.shifts, tuple(SHIFTS), "--shifts", "shift")
    devices, payload, pilots = (20, 100, options.pilots[:2]) if options.quick else (options.devices, options.payload, options.pilots)
    progress(0, total=len(shifts) * len(RECEIVERS) * len(pilots))
    select = dataclasses.replace(SELECT, margin=options.margin)
    report = run_shift(options.run, list(shifts), list(pilots), devices, payload, select, options.seed, options.split, progress=progress)
    plot_shift(report, options.plot)
    return {**report, "plot": str(options.plot)}


def text(report: dict) -> str:
    """SER per shift and receiver, the classical share and the paired difference to the better receiver, then the claims."""
    pilots = [str(p) for p in report["pilots"]]
    rows = []
    for shift in report["shifts"]:
        for receiver in RECEIVERS:
            rows.append([f"{shift['name']} {receiver}", *(f"{shift['ser'][receiver][p]['ser']:.4f}" for p in pilots)])
        rows.append([f"{shift['name']} classical share", *(f"{shift['classical_share'][p]:.2f}" for p in pilots)])
        rows.append([f"{shift['name']} selecting − better", *(paired_text(shift["selecting_vs"][p]["better"], 4) for p in pilots)])
    lines = [
        f"{report['algo']} ({report['run']}): SER on {report['devices']} fresh devices × {report['payload']} symbols per shift, "
        f"margin {report['select']['margin']:g} on {report['select']['samples']} payload samples; ±: 95 % paired interval over devices",
        format_table(["shift / receiver", *pilots], rows),
        "",
    ]
    lines += [f"{'holds' if c['holds'] else 'FAILS'}: {c['claim']}" + "".join(f"\n    {f}" for f in c["failures"]) for c in report["checks"]]
    return "\n".join([*lines, "", f"written: {report['plot']}"])


def run_shift(
    run_dir,
    shifts: list[str],
    pilots: list[int],
    devices: int,
    payload: int,
    select: Selection,
    seed: int | None,
    split: str = "test",
    progress: Callable[[], None] | None = None,
) -> dict:
    """The benchmark on ``run_dir``'s learned receiver; fresh devices of ``split`` ("test", or "val" to choose a margin
    on), ``seed`` None: the run's own."""
    from metaedge.sdk.families.demod.evaluation import evaluate
    from metaedge.sdk.families.demod.receivers import ModelBasedReceiver, SelectingReceiver
    from metaedge.sdk.families.demod.runs import learned_receivers, runs_of_one_task
    from metaedge.sdk.families.demod.task import DemodTasks

    loaded, configs = runs_of_one_task([run_dir])
    task, train = configs[0]
    seed = train.seed if seed is None else seed
    learned = dataclasses.replace(learned_receivers(loaded, configs, None, None)[0][0], name="learned")
    # the bundle's classical receiver knows the trained noise level, not the field's
    classical = ModelBasedReceiver(DemodTasks(task).constellation, task.noise_var, task.channel_var, name="classical")
    report = {
        "benchmark": "shift",
        "run": str(run_dir),
        "algo": loaded[0].algo,
        "trained": task.to_dict(),
        "devices": devices,
        "payload": payload,
        "pilots": pilots,
        "seed": seed,
        "split": split,
        "select": dataclasses.asdict(select),
        "shifts": [],
    }
    for name in shifts:
        description, changes = SHIFTS[name]
        tasks = DemodTasks(task.replace(**changes), seed=seed)
        selecting = SelectingReceiver(learned, classical, select, name="selecting")
        results = evaluate(
            [(r, {}) for r in (learned, classical, selecting)], tasks, pilots, devices, payload, split, progress=progress and (lambda _: progress())
        )
        errors = {r.name: r.errors for r in results}
        report["shifts"].append(
            {
                "name": name,
                "description": description,
                "changes": changes,
                "ser": {r.name: {str(p): {k: r.ser[p][k] for k in ("ser", "ci95")} for p in pilots} for r in results},
                "classical_share": {str(p): float(np.concatenate(selecting.decided[p]).mean()) for p in pilots},
                "selecting_vs": {str(p): _paired(errors, p) for p in pilots},
            }
        )
    report["checks"] = checks(report)
    return report


def _paired(errors: dict[str, dict[int, np.ndarray]], p: int) -> dict:
    """The selecting receiver's per-device SER difference to each receiver and to the better one (by mean SER)."""
    mine = errors["selecting"][p]
    out = {}
    for other in ("learned", "classical"):
        diff = summarise(mine - errors[other][p])
        out[other] = {"diff": diff["ser"], "ci95": diff["ci95"]}
    better = min(("learned", "classical"), key=lambda r: errors[r][p].mean())
    out["better"] = {"receiver": better, **out[better]}
    return out


def checks(report: dict) -> list[dict]:
    """The issue's claims, each with whether it holds and where it does not."""
    in_distribution, shifted, strictly = [], [], []
    for shift in report["shifts"]:
        for p in report["pilots"]:
            vs, where = shift["selecting_vs"][str(p)], f"{shift['name']} at {p} pilots"
            if shift["name"] == "trained" and p >= 2 and vs["learned"]["diff"] > IN_DISTRIBUTION_COST:
                in_distribution.append(f"{where}: {vs['learned']['diff']:+.4f}")
            if shift["name"] != "trained" and p >= 4:
                if vs["better"]["diff"] > SHIFT_TOLERANCE:
                    shifted.append(f"{where}: {vs['better']['diff']:+.4f} vs {vs['better']['receiver']}")
                learned_better = shift["ser"]["learned"][str(p)]["ser"] < shift["ser"]["classical"][str(p)]["ser"]
                if learned_better and not vs["classical"]["ci95"][1] < 0:
                    strictly.append(f"{where}: {vs['classical']['diff']:+.4f} {_interval(vs['classical'])}")
    return [
        _check(f"in distribution, selecting costs at most {IN_DISTRIBUTION_COST} SER against learned at ≥ 2 pilots", in_distribution),
        _check(f"under every shift at ≥ 4 pilots, selecting is within {SHIFT_TOLERANCE} SER of the better receiver", shifted),
        _check("under every shift at ≥ 4 pilots, selecting is strictly better than classical wherever learned is better", strictly),
    ]


def _check(claim: str, failures: list[str]) -> dict:
    return {"claim": claim, "holds": not failures, "failures": failures}


def _interval(paired: dict) -> str:
    return f"[{paired['ci95'][0]:+.4f}, {paired['ci95'][1]:+.4f}]"
