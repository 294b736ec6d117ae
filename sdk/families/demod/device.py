"""``metaedge run`` for a demodulator: frames of new devices through the device, scored by SER and calibration."""

from __future__ import annotations

from metaedge.sdk.device_frames import error_rate_report, latency_text
from metaedge.sdk.families.demod.task import DemodTasks, config_of_conditions


def stream(client, url: str, task: dict, frames: int, pilots: int, symbols: int, seed: int) -> dict:
    """Frames for the task the running receiver was trained for (channel and I/Q imbalance from its manifest's
    training conditions), one per new device of the meta-test split."""
    config = config_of_conditions(task, pilots=pilots, val_pilots=1, payload=symbols, frame=pilots + symbols)
    tasks = DemodTasks(config, seed=seed)
    batch = tasks.frames(tasks.devices("test", frames), pilots, symbols, tasks.rng("test", 1))
    return error_rate_report(client, url, "SER", seed, batch.x_tr, batch.y_tr, batch.x_va, batch.y_va)


def report_text(report: dict) -> str:
    """An error-rate report (SER, or a link's BLER) with calibration and latency."""
    return (
        f"{report['frames']} frames × {report['symbols']} symbols, {report['pilots']} pilots: {report['metric']} "
        f"{report['ser']:.4f} (±{(report['ser_ci95'][1] - report['ser_ci95'][0]) / 2:.4f}), mean confidence "
        f"{report['mean_confidence']:.3f}, ECE {report['ece']:.4f}\n"
        f"frames decided by the learned receiver {report['frames'] - report['classical_frames']}, by the bundle's classical "
        f"receiver {report['classical_frames']}; adaptation diverged in {report['diverged_frames']}\n" + latency_text(report)
    )


def describe(task: dict) -> str:
    return (
        f"{task['classes']}-point constellation, features {'/'.join(task['features'])}, pilots "
        f"{'known sequence' if task['pilot_sequence'] else 'random'}"
    )
