"""Meta-training runs of the demodulator, as the demo, the algorithm benchmark and the report use them: trained or
reused by configuration, with a progress bar; evaluated side by side on the same meta-test devices."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from metaedge.deploy.manifest import Selection
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.config import EvalOptions
from metaedge.sdk.log import LOGGER
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table

UNSOLVED = 0.2  # proximal residual above which the implicit meta-gradient is not to be trusted (docs/results/algorithms.md)


def train_or_reuse(path: Path, task, train, fresh: bool, quiet: bool) -> dict:
    """Train ``train`` on ``task`` into ``path``; a finished run with the same configuration is reused, an
    interrupted one resumed, one with another configuration refused (``fresh`` retrains)."""
    import shutil

    from metaedge.sdk.families.demod.training import Trainer, configs_from_run
    from metaedge.sdk.rundir import read_config

    if fresh and path.exists():
        shutil.rmtree(path)
    resume = path.is_dir() and any(path.iterdir())
    if resume and configs_from_run(read_config(path)) != (task, train):
        raise UserError(f"{path} holds a run with another configuration; pass --fresh to retrain or choose another --out")
    trainer = Trainer(path, task, train)
    trainer.start(resume=resume)
    if trainer.state["stop_reason"]:
        LOGGER.info(f"{train.algo}: reusing {path} ({trainer.state['stop_reason']})")
    return train_with_progress(trainer, quiet=quiet, label=f"train {train.algo}")


def train_with_progress(trainer, quiet: bool, label: str | None = None) -> dict:
    """Run the trainer with a progress bar (stderr) that shows meta-loss and validation SER."""
    from tqdm import tqdm

    from metaedge.sdk.plots import plot_curves

    bar = tqdm(
        total=trainer.cfg.iterations,
        initial=trainer.state["iteration"],
        desc=label or trainer.cfg.algo,
        disable=quiet or None,
        file=sys.stderr,
        unit="it",
        dynamic_ncols=True,
    )

    def progress(iteration: int, last: dict) -> None:
        bar.update(iteration - bar.n)
        if last.get("iteration") == iteration:
            bar.set_postfix(
                loss=f"{last['meta_loss']:.3f}",
                val_ser=f"{last['val_ser']:.4f}",
                **({"prox_residual": f"{last['prox_residual']:.3f}"} if "prox_residual" in last else {}),
            )

    try:
        state = trainer.run(progress)
    finally:
        bar.close()
    if trainer.where.writer:  # data-parallel ranks other than 0 write nothing
        plot_curves(trainer.curves, trainer.dir / "curves.png", title=f"{trainer.cfg.algo}: {trainer.dir}")
        warn_if_unsolved(trainer)
    return state


def evaluate_runs(
    runs: list[Path],
    pilots: list[int],
    devices: int,
    payload: int,
    inner_steps: int | None,
    scratch_lr: float,
    baselines: bool,
    seed: int | None,
    quiet: bool,
    assignment: str | None = None,
    pilot_sequence: str | None = None,
    select: Selection | None = None,
    selecting: list[Path] | None = None,
) -> dict:
    """Load runs, build receivers, evaluate them on the same meta-test devices; ``inner_steps`` overrides every
    run's adaptation steps, ``assignment`` how modular runs choose their modules, ``pilot_sequence`` ("fixed" or
    "random") how the frames' pilots are drawn (default: as the first run was trained); ``select`` (a ``Selection``): also the
    selecting receiver of each run (or of the runs in ``selecting``), as its bundle's device decides (bundle-format.md
    §6.2)."""
    from tqdm import tqdm

    from metaedge.sdk.families.demod.evaluation import evaluate
    from metaedge.sdk.families.demod.task import DemodTasks

    if inner_steps is not None and inner_steps < 0:
        raise UserError(f"--inner-steps {inner_steps} must be 0 or more")
    loaded, configs = runs_of_one_task(runs)
    task = configs[0][0] if pilot_sequence is None else configs[0][0].replace(pilot_sequence=pilot_sequence)
    if max(pilots) + payload > task.frame:
        raise UserError(f"max pilots {max(pilots)} + payload {payload} exceed the frame of {task.frame} symbols; lower --payload")
    tasks = DemodTasks(task, seed=configs[0][1].seed if seed is None else seed)
    receivers = learned_receivers(loaded, configs, inner_steps, assignment)
    if select is not None:
        from metaedge.sdk.families.demod.receivers import ModelBasedReceiver, SelectingReceiver

        classical = ModelBasedReceiver(tasks.constellation, task.noise_var, task.channel_var)
        chosen = [(r, info) for r, info in receivers if selecting is None or Path(info["run"]) in selecting]
        receivers += [(SelectingReceiver(r, classical, select), {**info, "algo": f"{info['algo']} + selection"}) for r, info in chosen]
    if baselines:
        steps = inner_steps if inner_steps is not None else max(c[1].inner_steps for c in configs)
        receivers += _baselines(loaded[0].config, tasks, steps, scratch_lr)
    reference = receivers[-1][0].name if baselines else None
    with tqdm(total=len(receivers) * len(pilots), desc="eval", disable=quiet or None, file=sys.stderr) as bar:
        results = evaluate(receivers, tasks, pilots, devices, payload, progress=bar.update, reference=reference)
    return {
        "task": task.to_dict(),
        "seed": tasks.seed,
        "devices": devices,
        "payload": payload,
        "pilots": pilots,
        "methods": [r.to_dict() for r in results],
    }


def runs_of_one_task(runs: list[Path]) -> tuple[list, list]:
    """The runs and their (task, train) configurations; a UserError if they were trained on different tasks."""
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.rundir import load_run

    loaded = [load_run(r) for r in runs]
    configs = [configs_from_run(r.config) for r in loaded]
    task = configs[0][0]
    for run, (t, _) in zip(loaded, configs):  # how the pilots were drawn in training is theirs to differ in
        if t.replace(pilots=task.pilots, val_pilots=task.val_pilots, pilot_sequence=task.pilot_sequence) != task:
            raise UserError(f"{run.path} was trained on another task configuration than {loaded[0].path}; evaluate them separately")
    return loaded, configs


def learned_receivers(loaded: list, configs: list, inner_steps: int | None, assignment: str | None) -> list:
    """Each run's receiver, labelled by its algorithm (and directory, where two runs share one)."""
    import dataclasses

    import torch

    from metaedge.sdk.families.demod.receivers import LearnedReceiver

    if assignment is not None and not any(train.inner().assignment for _, train in configs):
        raise UserError("--assignment applies to modular runs, and none was given")
    names = [r.algo for r in loaded]
    receivers = []
    for run, (task, train), name in zip(loaded, configs, names):
        inner = train.inner()
        if inner_steps is not None:
            inner = dataclasses.replace(inner, steps=inner_steps)
        if assignment is not None and inner.assignment:
            inner = dataclasses.replace(inner, options=dataclasses.replace(inner.options, assignment=assignment))
        label = name if names.count(name) == 1 else f"{name} ({run.path.name})"
        params = {k: torch.from_numpy(v) for k, v in run.theta.items()}
        receivers.append((LearnedReceiver(label, params, inner, task.order), {"run": str(run.path), "algo": run.algo}))
    return receivers


def _baselines(config: dict, tasks, steps: int, scratch_lr: float) -> list:
    """The network trained from scratch on each device's pilots, and the model-based receiver (the reference)."""
    import numpy as np
    import torch

    from metaedge.sdk.families.demod.receivers import LearnedReceiver, ModelBasedReceiver
    from metaedge.sdk.meta.core import InnerLoop
    from metaedge.sdk.models.mlp import MLPSpec

    task = tasks.config
    spec = MLPSpec(sizes=tuple(config["model"]["sizes"]))
    init = {k: torch.from_numpy(v) for k, v in spec.init(np.random.default_rng([tasks.seed, 7])).items()}
    scratch = LearnedReceiver("scratch", init, InnerLoop(lr=scratch_lr, steps=steps), task.order)
    return [(scratch, {"algo": "scratch"}), (ModelBasedReceiver(tasks.constellation, task.noise_var, task.channel_var), {"algo": "model-based"})]


def warn_if_unsolved(trainer) -> None:
    """One warning when the kept θ's inner steps end far from the proximal minimum their meta-gradient assumes."""
    best = next((c for c in trainer.curves if c["iteration"] == trainer.state["best_iteration"]), None)
    if best is not None and best.get("prox_residual", 0.0) > UNSOLVED:
        from metaedge.sdk.families.demod.recipes import recipe

        own = recipe("imaml")
        LOGGER.warning(
            f"{trainer.cfg.algo}: at the kept iteration {best['iteration']} the inner steps end far from the proximal "
            f"minimum (gradient {best['prox_residual']:.2f} of the starting one; curves.json prox_residual), so the "
            f"meta-gradient was unreliable; retrain with a smaller --inner-lr and more --inner-steps "
            f"(iMAML's recipe: {own['inner_steps']} steps of {own['inner_lr']:g})"
        )


def run(options: EvalOptions, progress: Progress = silent) -> dict:
    """``metaedge eval``: the report of ``evaluate_runs``, with its plots where asked."""
    import dataclasses

    from metaedge.backends.selection import SELECT

    if options.reliability_pilots is not None and options.reliability_pilots not in options.pilots:
        pilots = ",".join(map(str, options.pilots))
        raise UserError(f"--reliability-pilots {options.reliability_pilots} is not among --pilots {pilots}; add it there")
    report = evaluate_runs(
        list(options.runs),
        list(options.pilots),
        options.devices,
        options.payload,
        options.inner_steps,
        options.scratch_lr,
        baselines=not options.no_baselines,
        seed=options.seed,
        quiet=options.quiet,
        assignment=options.assignment,
        pilot_sequence=options.pilot_sequence,
        select=None if options.select is None else dataclasses.replace(SELECT, margin=options.select),
    )
    report["command"] = options.command
    task = f"{report['task']['order']}-QAM, {report['task']['snr_db']:g} dB"
    if options.plot:
        from metaedge.sdk.plots import plot_ser

        plot_ser(report["methods"], list(options.pilots), options.plot, title=task)
    if options.reliability:
        from metaedge.sdk.plots import plot_reliability

        at = options.reliability_pilots or (8 if 8 in options.pilots else max(options.pilots))
        plot_reliability({m["name"]: m["reliability"][str(at)] for m in report["methods"]}, options.reliability, f"{task}, {at} pilots")
    return report


def evaluate(*runs: str | Path, progress: Progress = silent, **options: Any) -> dict:
    """``metaedge eval`` from Python: ``options`` are ``EvalOptions``' fields (pilots=(1, 8), devices=1000, …),
    with its defaults."""
    return run(EvalOptions(runs=tuple(Path(r) for r in runs), **options), progress)


def text(report: dict) -> str:
    """SER per method and pilot count with intervals and the comparison to the model-based receiver, then ECE."""
    pilots = report["pilots"]

    def cell(entry: dict) -> str:
        vs = entry.get("vs_reference", {})
        mark = "*" if vs.get("better") else "-" if vs.get("worse") else " "
        return f"{entry['ser']:.4f} ±{(entry['ci95'][1] - entry['ci95'][0]) / 2:.4f}{mark}"

    rows = [[m["name"], *(cell(m["ser"][str(p)]) for p in pilots)] for m in report["methods"]]
    head = (
        f"SER on {report['devices']} devices × {report['payload']} payload symbols "
        f"({report['task']['order']}-QAM, {report['task']['snr_db']:g} dB, seed {report['seed']}; ±: 95 % interval over devices)"
    )
    legend = (
        "*: fewer errors than the model-based receiver, -: more (paired over devices, 95 %)"
        if any("vs_reference" in e for m in report["methods"] for e in m["ser"].values())
        else ""
    )
    ece_rows = [[m["name"], *(f"{m['ser'][str(p)]['ece']:.4f}" for p in pilots)] for m in report["methods"]]
    return (
        head
        + "\n"
        + format_table(["method \\ pilots", *map(str, pilots)], rows)
        + ("\n" + legend if legend else "")
        + "\n\nexpected calibration error (10 equal bins, all payload symbols)\n"
        + format_table(["method \\ pilots", *map(str, pilots)], ece_rows)
    )
