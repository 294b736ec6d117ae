"""``metaedge bench algorithms``: every meta-learning algorithm on the demodulation task, one table.

Each algorithm is meta-trained with the same task, budget and batch (the published Bayesian demodulator's setup:
16-QAM, 18 dB, 16 devices per batch, α = 0.1 with 2 inner steps — or the algorithm's recipe where it needs more steps
or another rate), then adapted on the pilots of the same fresh devices. Reported per algorithm: SER with 95 %
intervals and ECE at each pilot count, the meta-training time (validations excluded), and the peak memory one
meta-gradient adds."""

from __future__ import annotations

import json

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.config import AlgorithmsFigure
from metaedge.sdk.options import Progress, silent

SNR_DB, TASKS_PER_BATCH, CALIBRATION_PILOTS = 18.0, 16, 8


def run(options: AlgorithmsFigure, progress: Progress = silent) -> dict:
    """Train (or reuse) every algorithm's run in ``out``, evaluate them side by side; writes algorithms.json,
    algorithms.md and the reliability diagram at 8 pilots into ``out``."""
    from metaedge.sdk.bench.meta_train import peak_memory_mib
    from metaedge.sdk.families.demod.runs import evaluate_runs, train_or_reuse
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.meta import ALGORITHMS, get_algorithm
    from metaedge.sdk.plots import plot_reliability

    algos = options.algos or tuple(ALGORITHMS)
    for algo in algos:
        get_algorithm(algo)
    if CALIBRATION_PILOTS not in options.pilots:
        raise UserError(f"--pilots {','.join(map(str, options.pilots))} must include {CALIBRATION_PILOTS} (the calibration target's pilot count)")
    low, high = options.train_pilots
    task = DemodConfig(pilots=high, snr_db=SNR_DB, **({"val_pilots": 16} if options.quick else {}))
    runs, timing = [], {}
    for algo in algos:
        train = train_config(algo, 4 if options.quick else options.iterations, low, options.seed, options.quick)
        state = train_or_reuse(options.out / algo, task, train, options.fresh, options.quiet)
        timing[algo] = {
            "train_seconds": state.get("train_seconds"),
            "iterations": state["iteration"],
            "best_iteration": state["best_iteration"],
            "inner_steps": train.inner_steps,
            "inner_lr": train.inner_lr,
            "peak_memory_mib": peak_memory_mib(algo, train.tasks_per_batch, train.inner_steps),
        }
        runs.append(options.out / algo)
    devices, payload = (3, 50) if options.quick else (options.devices, options.payload)
    report = evaluate_runs(runs, list(options.pilots), devices, payload, None, scratch_lr=0.1, baselines=True, seed=None, quiet=options.quiet)
    for method in report["methods"]:
        method.update(timing.get(method.get("algo"), {}))
    report["command"] = options.command
    report["setup"] = {
        "iterations": options.iterations,
        "tasks_per_batch": TASKS_PER_BATCH,
        "train_pilots": [low, high],
        "snr_db": SNR_DB,
        "inner": "α and steps per algorithm (recipe, at least 2 steps)",
        "seed": options.seed,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "algorithms.json").write_text(json.dumps(report, indent=2))
    (options.out / "algorithms.md").write_text(text(report))
    shown = ("maml", "vbmaml", "bmaml", "model-based")
    diagrams = {m["name"]: m["reliability"][str(CALIBRATION_PILOTS)] for m in report["methods"] if m.get("algo") in shown}
    plot_reliability(diagrams, options.out / "reliability.png", f"16-QAM, {SNR_DB:g} dB, {CALIBRATION_PILOTS} pilots")
    return report


def text(report: dict) -> str:
    """The table as Markdown (also written to algorithms.md)."""
    pilots = report["pilots"]
    head = ["method", *(f"SER {p}" for p in pilots), *(f"ECE {p}" for p in pilots), "train s", "peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report["methods"]:
        ser = [f"{m['ser'][str(p)]['ser']:.4f} ±{(m['ser'][str(p)]['ci95'][1] - m['ser'][str(p)]['ci95'][0]) / 2:.4f}" for p in pilots]
        ece = [f"{m['ser'][str(p)]['ece']:.4f}" for p in pilots]
        seconds, memory = m.get("train_seconds"), m.get("peak_memory_mib")
        cells = [m["name"], *ser, *ece, "" if seconds is None else f"{seconds:.0f}", "" if memory is None else f"{memory:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        f"SER (±95 % over {report['devices']} devices × {report['payload']} symbols) and ECE (10 bins) per pilot count; "
        "meta-training time without validations; peak memory of one meta-gradient.\n\n" + "\n".join(lines) + "\n"
    )


def train_config(algo: str, iterations: int, pilots_min: int, seed: int, quick: bool):
    """The common budget, with the algorithm's own rate and steps where its recipe needs them."""
    from metaedge.sdk.families.demod.recipes import recipe
    from metaedge.sdk.families.demod.training import TrainConfig

    own = recipe(algo)
    fields = {
        **own,
        "algo": algo,
        "iterations": iterations,
        "tasks_per_batch": TASKS_PER_BATCH,
        "inner_steps": max(own["inner_steps"], 2),
        "pilots_min": pilots_min,
        "seed": seed,
        "val_every": max(iterations // 8, 1),
        "patience": 8,
    }
    if quick:
        fields.update(
            tasks_per_batch=2,
            meta_devices=8,
            val_devices=2,
            hidden=(4,),
            particles=2,
            modules=2,
            proposals=3,
            samples=1,
            es_directions=2,
            solver_steps=2,
        )
    return TrainConfig(**fields)
