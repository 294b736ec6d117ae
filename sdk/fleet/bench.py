"""``metaedge bench fleet``: online meta-learning from a fleet's frames, scored on fresh devices (the learner of
``fleet learn`` fed in process, so that curves are measured, not waited for), and the fleet itself on the broker.

- frames: SER against the number of frames used for online meta-learning from an untrained θ, next to the
  conventional per-frame receiver (LMMSE channel estimate + ML on the pilots of each frame): the shape of Fig. 7.1 of
  Chen et al., "Learning with limited samples" (2023);
- rho: SER against the channels' frame-to-frame correlation ρ for one budget of frames from a few devices (Fig. 7.2's
  shape: a high ρ shows the learner fewer distinct channels);
- shift: a fleet in a milder field than trained, starting from the offline θ: SER over frames of the learned and
  the selecting receiver (what devices run) against the classical one;
- system (``--system``): a fleet of ``--devices`` device processes' worth on Mosquitto: telemetry throughput at the
  learner, the frame loop's rate, and the time from the report that completed a candidate's evidence to its release
  confirmed on every device; then the fire drill.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from metaedge.backends.selection import SELECT
from metaedge.deploy.telemetry import Report, Samples
from metaedge.firmware_sim.fleet import known_samples
from metaedge.sdk.families.demod.receivers import LearnedReceiver, ModelBasedReceiver, SelectingReceiver
from metaedge.sdk.families.demod.task import DemodTasks
from metaedge.sdk.families.demod.training import configs_from_run, initial_theta
from metaedge.sdk.fleet.online import OnlineLearner
from metaedge.sdk.fleet.rollout import PARALLEL
from metaedge.sdk.fleet.scenario import Field, Fleet
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table, paired_text, summarise

VERSION = {"sha256": "0" * 64, "security_counter": 1, "release": 0}


def reports(fleet: Fleet, frame: int) -> list[Report]:
    """One frame of every device of ``fleet`` as the reports its devices would send: their known samples as
    ``firmware_sim.fleet.known_samples`` makes them (pilots, then check symbols)."""
    pilots, payload, _ = fleet.frames()
    check, out = fleet.field.check, []
    for i in range(len(pilots)):
        known = known_samples(pilots[i], fleet.pilot_labels, payload[i, -check:], fleet.reference)
        samples = Samples(known["pilots"]["x"], known["pilots"]["y"])
        out.append(Report(f"dev-{i:04d}", frame, frame, VERSION, "learned", (0, check), support=known["support"], pilots=samples))
    return out


def scores(theta: dict, learner: OnlineLearner, test: tuple, task) -> dict:
    """SER on the test frames of the learned, the classical and the selecting receiver, with 95 % intervals."""
    pilots, labels, payload, symbols = test
    learned = LearnedReceiver("learned", {k: torch.as_tensor(v) for k, v in theta.items()}, learner.inner, task.order)
    classical = ModelBasedReceiver(DemodTasks(task).constellation, task.noise_var, task.channel_var)
    per_device = {}
    for name, receiver in (("learned", learned), ("classical", classical), ("selecting", SelectingReceiver(learned, classical, SELECT))):
        per_device[name] = (receiver.probabilities(pilots, labels, payload).argmax(-1) != symbols).mean(axis=1)
    out = {name: summarise(ser) for name, ser in per_device.items()}
    for name in ("learned", "selecting"):  # paired over the test devices: negative, fewer errors than the classical receiver
        paired = summarise(per_device[name] - per_device["classical"])
        out[f"{name}_vs_classical"] = {"diff": paired["ser"], "ci95": paired["ci95"]}
    return out


def test_frames(task, field: Field, devices: int, seed: int) -> tuple:
    """One frame of each of ``devices`` fresh devices: (pilots, pilot labels, payload, payload symbols)."""
    fleet = Fleet(task, dataclasses.replace(field, rho=1.0), devices, seed + 1000)
    pilots, payload, symbols = fleet.frames()
    return pilots, np.broadcast_to(fleet.pilot_labels, (devices, field.pilots)).copy(), payload, symbols


def curve(start: dict, setup: tuple, field: Field, devices: int, frames: int, checkpoints: list[int], test: tuple) -> list:
    """Scores of θ learned online from ``start`` after each checkpoint's number of frames of every device (and at the
    end); ``setup``: (task, train, online options, seed)."""
    task, train, options, seed = setup
    learner = OnlineLearner(start, train, task.order, field.pilots, dataclasses.replace(options, holdout=0.0), seed=seed)
    fleet = Fleet(task, field, devices, seed)
    points = []
    for frame in range(frames + 1):
        if frame in checkpoints or frame == frames:
            theta = {k: v.numpy() for k, v in learner.loop.theta.items()}
            points.append({"tasks": frame * devices, "frames": frame, **scores(theta, learner, test, task)})
        if frame == frames:
            break
        for report in reports(fleet, frame):
            learner.add(report)
    return points


def run(options, progress: Progress = silent) -> dict:
    if options.system:
        return system(options, progress)
    return curves(options, progress)


def system(options, progress: Progress) -> dict:
    """``--system``: the fleet on the broker (``fleet.system``), in ``--dir`` or a temporary directory."""
    import tempfile

    from metaedge.sdk.fleet.system import run_system

    progress(0, total=1, label=f"{options.devices} devices on the broker")
    if options.dir is not None:
        return {"benchmark": "fleet-system", **run_system(options, options.dir)}
    with tempfile.TemporaryDirectory(prefix="metaedge-fleet-") as directory:
        return {"benchmark": "fleet-system", **run_system(options, Path(directory) / "fleet")}


def curves(options, progress: Progress) -> dict:
    """The three panels (module docstring)."""
    from metaedge.sdk.plots import plot_fleet
    from metaedge.sdk.rundir import load_run

    loaded = load_run(options.run)
    task, train = configs_from_run(loaded.config)
    online = options.online
    fresh = initial_theta(train.model(task), train, np.random.default_rng([options.seed, 99]))
    base = Field(pilots=options.pilots)
    progress(0, total=2 + len(options.rhos))
    test = test_frames(task, base, options.test_devices, options.seed)
    report = {"run": str(options.run), "algo": train.algo, "pilots": options.pilots, "test_devices": options.test_devices}
    report["online"] = dataclasses.asdict(online)
    checkpoints = [0, *np.unique(np.geomspace(1, options.frames, 8).astype(int)).tolist()]
    setup = (task, train, online, options.seed)
    report["frames"] = curve(fresh, setup, dataclasses.replace(base, rho=0.0), options.devices, options.frames, checkpoints, test)
    few, budget = max(2, options.devices // 10), options.devices * options.frames
    report["rho"] = []
    for rho in options.rhos:
        progress(1, label=f"rho {rho:g}")
        report["rho"].append({"rho": rho, **curve(fresh, setup, dataclasses.replace(base, rho=rho), few, budget // few, [], test)[-1]})
    shifted = dataclasses.replace(base, shift=options.shift)
    shift_test = test_frames(task, shifted, options.test_devices, options.seed)
    points = curve(loaded.theta, setup, shifted, options.devices, options.frames, checkpoints, shift_test)
    report["shift"] = {"scenario": options.shift, "points": points}
    progress(1, label="plot")
    plot_fleet(report, options.plot)
    return {**report, "plot": str(options.plot)}


def text(report: dict) -> str:
    if report.get("benchmark") == "fleet-system":
        return system_text(report)
    return curves_text(report)


def system_text(report: dict) -> str:
    loop, tel, learned, drill = report["loop"], report["telemetry"], report["learn"], report["drill"]
    lines = [
        f"{report['devices']} devices: provisioned in {report['provision_s']:.0f} s, all reporting {report['ready_s']:.0f} s after start",
        f"frame loop: {loop.get('device_frames_per_s', float('nan')):.0f} device frames/s; peak memory of the fleet process "
        f"{report['fleet_process_peak_rss_bytes'] / 2**20:.0f} MiB ({report['rss_per_device_bytes'] / 2**20:.1f} MiB per device)",
        f"telemetry at the learner: {tel['reports_per_s']:.0f} reports/s over {tel['seconds']:.0f} s, dropped {tel['dropped'] or 'none'}",
    ]
    cap = report["capacity"]
    lines.append(
        f"at full load ({cap['publishers']} publishers, {cap['sent']} reports with samples): {cap['reports_per_s']:.0f} reports/s "
        f"accepted ({cap['accepted']} of {cap['sent']}; dropped by the learner {cap['dropped'] or 'none'}, lost at the broker {cap['lost']})"
    )
    for r in learned["rollouts"]:
        after = f"{r['latency_s']:.1f} s after the report that completed its evidence"
        if "confirm_s" in r:
            after += f" (of which {r['confirm_s']:.1f} s installing and confirming it on every device, {PARALLEL} at a time)"
        lines.append(f"release {r['security_counter']}: {r['outcome']} {after} ({r['reason']})")
    if not learned["rollouts"]:
        lines.append(f"no release in {learned['seconds']:.0f} s: no candidate beat the running θ by the margin")
    for when, field in report["field"].items():
        e = field["excess"]
        lines.append(
            f"the fleet {when} learning: check-symbol SER {field['ser']['ser']:.4f}, {e['diff']:+.4f} [{e['ci95'][0]:+.4f}, "
            f"{e['ci95'][1]:+.4f}] against the model-based receiver on the same symbols ({field['devices']} devices × {field['frames']} frames)"
        )
    lines.append(f"drill: {'stopped at the canary stage' if drill['stopped_at_canaries'] else 'NOT stopped'} ({drill['reason']})")
    return "\n".join(lines)


def curves_text(report: dict) -> str:
    def rows(points: list, key: str) -> list[list[str]]:
        return [
            [str(p[key]), *(f"{p[r]['ser']:.4f}" for r in ("learned", "selecting", "classical")), paired_text(p["selecting_vs_classical"], 4)]
            for p in points
        ]

    head = ["learned", "selecting", "classical (per frame)", "selecting − classical"]
    shift = report["shift"]
    return "\n".join(
        [
            f"{report['algo']} ({report['run']}), {report['pilots']} pilots, SER on {report['test_devices']} fresh devices",
            "online meta-learning from an untrained θ (ρ = 0):",
            format_table(["tasks used", *head], rows(report["frames"], "tasks")),
            "",
            "the same budget from a tenth of the devices, against the channel correlation ρ:",
            format_table(["ρ", *head], rows(report["rho"], "rho")),
            "",
            f"field shift '{shift['scenario']}', from the offline θ:",
            format_table(["tasks used", *head], rows(shift["points"], "tasks")),
            "",
            f"written: {report['plot']}",
        ]
    )
