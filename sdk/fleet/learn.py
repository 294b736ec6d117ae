"""``metaedge fleet learn``: consume the fleet's telemetry, meta-learn θ online, release what beats the running θ — and,
with ``--rollout``, roll each release out through the canary stage at once."""

from __future__ import annotations

import time
from pathlib import Path

from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.online import OnlineLearner
from metaedge.sdk.fleet.store import FleetDir
from metaedge.sdk.fleet.stream import Telemetry
from metaedge.sdk.fleet.up import demod_task, export_release
from metaedge.sdk.options import Progress, silent


def run(options, progress: Progress = silent) -> dict:
    """Learn until ``options.releases`` releases were made, ``options.tasks`` tasks taken, or ``options.duration``
    seconds passed."""
    from metaedge.sdk.rundir import load_run

    fleet = FleetDir(options.dir)
    spec = fleet.spec()
    counter = fleet.confirmed_release()  # what the fleet runs: not a reverted candidate, nor a drill's bad release
    run = load_run(fleet.release(counter) / "run")
    task, train = demod_task(run.path)
    learner = OnlineLearner(run.theta, train, task.order, spec.field.pilots, options.online, seed=spec.seed)
    telemetry = Telemetry(fleet, broker.LEARNER, task.order)
    report = {"started_from": counter, "verdicts": [], "releases": [], "rollouts": []}
    started = time.monotonic()
    progress(0, total=options.tasks or None, label="tasks")
    try:
        while not _done(options, report, learner, started):
            for item, arrived in telemetry.reports(timeout=0.5):
                taken = learner.counts["tasks"]
                verdict = learner.add(item)
                progress(learner.counts["tasks"] - taken)
                if verdict is None:
                    continue
                report["verdicts"].append({**verdict, "tasks": learner.counts["tasks"], "seconds": time.monotonic() - started})
                if verdict["release"]:
                    _release(fleet, run.config, learner, arrived, options, report)
    finally:
        telemetry.close()
    return {**report, "counts": dict(learner.counts), "telemetry": telemetry.counts(), "seconds": time.monotonic() - started}


def _done(options, report: dict, learner: OnlineLearner, started: float) -> bool:
    released = [r for r in report["rollouts"] if r["outcome"] == "confirmed"] if options.rollout else report["releases"]
    return (
        (options.releases and len(released) >= options.releases)
        or (options.tasks and learner.counts["tasks"] >= options.tasks)
        or (options.duration and time.monotonic() - started >= options.duration)
    )


def _release(fleet: FleetDir, config: dict, learner: OnlineLearner, arrived: float, options, report: dict) -> None:
    """Export and sign the candidate as the next release; with ``--rollout``, roll it out, and keep it as the running θ
    only when it is confirmed (a reverted candidate is not what the fleet runs)."""
    from metaedge.sdk.fleet.rollout import run_rollout

    counter = fleet.latest_release() + 1
    bundle = export_release(fleet, counter, config, learner.candidate())
    report["releases"].append({"security_counter": counter, "bundle": str(bundle), "after_tasks": learner.counts["tasks"]})
    if not options.rollout:
        learner.accept()
        return
    outcome = run_rollout(fleet, Path(bundle), options.canary, options.window, options.tolerance, options.timeout)
    # from the report that completed the candidate's evidence to the release confirmed on every device (or reverted)
    outcome["latency_s"] = time.monotonic() - arrived
    report["rollouts"].append(outcome)
    if outcome["outcome"] == "confirmed":
        learner.accept()


def text(report: dict) -> str:
    counts, tel = report["counts"], report["telemetry"]
    lines = [
        f"took {counts['tasks']} tasks ({counts['held_back']} held back), {counts['steps']} outer steps, scored {counts['scored']} candidates "
        f"in {report['seconds']:.0f} s; telemetry accepted {tel['accepted']}, dropped {sum(tel['dropped'].values())} {tel['dropped'] or ''}"
    ]
    for v in report["verdicts"]:
        d = v["difference"]
        lines.append(
            f"  after {v['tasks']} tasks: candidate {v['candidate_ser']:.4f} vs running {v['running_ser']:.4f} on {v['devices']} held-back devices "
            f"({d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]) → {'release' if v['release'] else 'keep'}"
        )
    lines += [f"  released counter {r['security_counter']}: {r['bundle']}" for r in report["releases"]]
    lines += [f"  rollout of {r['security_counter']}: {r['outcome']} ({r['reason']})" for r in report["rollouts"]]
    return "\n".join(lines)
