"""``metaedge bench qiskit``: quality, calibration, noise gap and cost of Born-machine receivers.

Three priors adapt with the same pilots, steps and shot budget: the meta-learned θ (with
its per-angle step sizes), the jointly learned circuit and the uniform (uninformed) prior,
the latter two with their best scalar step size on validation devices. They are scored
(1) exactly on many new devices (host simulator: exact gradients and ensemble), with the
point-estimate BNN as the frequentist counterpart, and (2) through the Qiskit backend on
each target (ideal and noisy Aer), which is what a device runs, on fewer devices.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from metaedge.backends.qiskit.backend import QiskitBackend
from metaedge.backends.qiskit.model import uniform_prior
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.born.config import METHODS, QiskitFigure
from metaedge.sdk.families.demod.born.evaluation import Scores, evaluate_exact, test_frames, tune_step_size
from metaedge.sdk.families.demod.born.training import BornRun, load_born_run, train_default
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table, paired_text, summarise
from metaedge.sdk.targets import Release
from metaedge.sdk.targets.qiskit import write_born_bundle

PRIORS = ("meta-learned", "joint", "uniform prior")


def run(options: QiskitFigure, progress: Progress = silent) -> dict:
    """``metaedge bench qiskit``: the report, written to ``out``/qiskit.json with its reliability diagram."""
    from metaedge.backends.base import BackendError
    from metaedge.backends.qiskit.targets import parse_target
    from metaedge.sdk.plots import plot_reliability
    from metaedge.sdk.rundir import write_json

    for target in options.targets:
        try:
            parse_target(target)
        except BackendError as e:
            raise UserError(f"--targets: {e}") from None
    options.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for method in METHODS:
        path = getattr(options, method) or options.out / f"born-{method}"
        if getattr(options, method) is None and not path.exists():
            progress(0, label=f"training the {method} circuit into {path}")
            train_default(path, method, options.seed)
        runs[method] = load_born_run(path)
    progress(0, total=len(options.targets) * len(PRIORS) * options.device_frames, label="qiskit frames")
    report = bench_qiskit(runs["meta"], runs["joint"], options.exact_devices, options.device_frames, options.targets, options.seed, progress)
    report["command"] = options.command
    exact = report["exact"]["results"]
    plot_reliability(
        {name: exact[name]["reliability"] for name in ("meta-learned", "point-estimate BNN", "joint")},
        options.out / "reliability.png",
        f"Born-machine BNN, {report['task']['pilots']} pilots, exact ensemble",
    )
    write_json(options.out / "qiskit.json", report)
    return {**report, "written": [str(options.out / "qiskit.json"), str(options.out / "reliability.png")]}


def _ser(r: dict) -> str:
    return f"{r['ser']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]"


def text(report: dict) -> str:
    rows = [[name, "exact", _ser(r), f"{r['log_loss']:.4f}", f"{r['ece']:.4f}", "", ""] for name, r in report["exact"]["results"].items()]
    for target, d in report["device"].items():
        for name, r in d["results"].items():
            c = r["costs"]
            cells = [_ser(r), f"{r['log_loss']:.4f}", f"{r['ece']:.4f}", f"{r['seconds_per_frame'] * 1e3:.0f}"]
            rows.append([name, target, *cells, f"{c['circuits_per_frame']}×/{c['shots_per_frame']:,}"])
    devices = next(iter(report["device"].values()))["devices"] if report["device"] else 0
    head = (
        f"{report['task']['pilots']} pilots, {report['inner']['steps']} steps, {report['inner']['shots']} shots per setting; "
        f"exact over {report['exact']['devices']} devices, targets over {devices}; SER with its 95 % interval over devices"
    )
    table = format_table(["prior", "where", "SER [95 %]", "log-loss", "ECE", "ms/frame", "circuits/shots per frame"], rows)
    paired = [
        f"{where} ({d['devices']} devices): {comparison} {paired_text({'diff': p['ser_difference'], 'ci95': p['ci95']}, 4)}"
        for where, d in [("exact", report["exact"]), *report["device"].items()]
        for comparison, p in d["paired"].items()
    ]
    note = "paired SER differences (negative: the meta-learned prior makes fewer errors; an interval across 0 is no difference):"
    return "\n".join([head, table, note, *paired, *(["→ " + ", ".join(report["written"])] if "written" in report else [])])


def priors_of(meta: BornRun, joint: BornRun) -> dict[str, BornRun]:
    """The three starting points; baselines get their tuned scalar step size."""
    if (meta.task, meta.spec, meta.inner) != (joint.task, joint.spec, joint.inner):
        raise UserError("the meta and joint runs differ in task, circuit or adaptation budget; train both with the same flags")
    uniform = uniform_prior(meta.spec)
    return {
        "meta-learned": meta,
        "joint": BornRun(
            joint.path,
            joint.task,
            joint.spec,
            joint.inner,
            joint.train,
            joint.theta,
            np.full(meta.spec.parameters, tune_step_size(meta.spec, meta.inner, joint.theta, meta.task)),
        ),
        "uniform prior": BornRun(
            None,
            meta.task,
            meta.spec,
            meta.inner,
            None,
            uniform,
            np.full(meta.spec.parameters, tune_step_size(meta.spec, meta.inner, uniform, meta.task)),
        ),
    }


def _brief(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "per_device_ser"}


def _paired(results: dict, a: str, b: str) -> dict:
    """SER(a) − SER(b) per device, mean and 95 % interval (negative: a is better)."""
    diff = np.asarray(results[a]["per_device_ser"]) - np.asarray(results[b]["per_device_ser"])
    s = summarise(diff)
    return {"ser_difference": s["ser"], "ci95": s["ci95"]}


def device_quality(priors: dict[str, BornRun], target: str, devices: int, seed: int, progress: Callable[[int], None] | None = None) -> dict:
    """Adapt and predict through the Qiskit backend on ``target`` for each prior; quality and wall times."""
    run = next(iter(priors.values()))
    frames = test_frames(run.task, devices, seed)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, prior in priors.items():
            bundle = write_born_bundle(prior, prior.inner, Path(tmp) / name.replace(" ", "-"), name, Release())
            backend = QiskitBackend(target, seed=seed)
            resources = backend.load(bundle)
            scores, adapt_s, frame_s = Scores.empty(), [], []
            for d in range(devices):
                start = time.perf_counter()
                backend.reset()
                report = backend.adapt(frames.x_tr[d], frames.y_tr[d])
                log_probs = backend.log_probs(frames.x_va[d])
                frame_s.append(time.perf_counter() - start)
                adapt_s.append(report.seconds)
                scores.add(log_probs[None], frames.y_va[d][None])
                if progress:
                    progress(1)
            out[name] = {
                **scores.summary(),
                "seconds_per_frame": statistics.median(frame_s),
                "seconds_per_step": statistics.median(adapt_s) / max(backend.steps, 1),
                "costs": resources.costs,
            }
    return out


def bench_qiskit(
    meta: BornRun,
    joint: BornRun,
    exact_devices: int = 500,
    device_frames: int = 30,
    targets: tuple[str, ...] = ("ideal", "noisy:FakeManilaV2"),
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    priors = priors_of(meta, joint)
    exact = evaluate_exact(meta.spec, meta.inner, {k: (p.theta, p.lr) for k, p in priors.items()}, meta.task, exact_devices, seed)
    report = {
        "task": meta.task.to_dict(),
        "born": meta.spec.to_dict(),
        "inner": meta.inner.to_dict(),
        "seed": seed,
        "step_sizes": {k: (p.lr.tolist() if k == "meta-learned" else float(p.lr[0])) for k, p in priors.items()},
        "exact": {
            "devices": exact_devices,
            "results": {k: _brief(v) for k, v in exact.items()},
            "paired": {
                "meta-learned vs joint": _paired(exact, "meta-learned", "joint"),
                "meta-learned vs uniform prior": _paired(exact, "meta-learned", "uniform prior"),
            },
        },
        "device": {},
    }
    for target in targets:
        results = device_quality(priors, target, device_frames, seed, progress)
        report["device"][target] = {
            "devices": device_frames,
            "results": {k: _brief(v) for k, v in results.items()},
            "paired": {
                "meta-learned vs joint": _paired(results, "meta-learned", "joint"),
                "meta-learned vs uniform prior": _paired(results, "meta-learned", "uniform prior"),
            },
        }
    if "ideal" in report["device"] and len(report["device"]) > 1:
        ideal = report["device"]["ideal"]["results"]
        report["noise_gap"] = {
            t: {k: {"ser": r[k]["ser"] - ideal[k]["ser"], "log_loss": r[k]["log_loss"] - ideal[k]["log_loss"]} for k in r}
            for t, d in report["device"].items()
            if t != "ideal"
            for r in [d["results"]]
        }
    return report
