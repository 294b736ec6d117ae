"""``metaedge run`` for a power allocator: new topologies through the device, scored by their sum-rate."""

from __future__ import annotations

import numpy as np

from metaedge.sdk.device_frames import latency_text, predictor_report, timed_frames
from metaedge.sdk.families.power.run import power_frames, sum_rates


def stream(client, url: str, task: dict, frames: int, pilots: int, slots: int, seed: int) -> dict:
    """``pilots`` slots of channel measurements to adapt on and ``slots`` slots to allocate per new topology; the
    sum-rate of the powers the device returns, and of every link at full power."""
    adaptation, scored = power_frames(task, frames, pilots, slots, seed)
    results, device_us, round_trip = timed_frames(client, ({"pilots": p, "payload": x} for p, x in zip(adaptation, scored)))
    rates = [float(sum_rates(x, out["outputs"]).mean()) for x, (_, out) in zip(scored, results)]
    full = [float(sum_rates(x, np.ones_like(out["outputs"])).mean()) for x, (_, out) in zip(scored, results)]
    scores = {"sum_rate": float(np.mean(rates)), "full_power_sum_rate": float(np.mean(full)), "per_frame_sum_rate": rates}
    return predictor_report("sum-rate", frames, pilots, slots, seed, results, device_us, round_trip, **scores)


def report_text(report: dict) -> str:
    return (
        f"{report['frames']} topologies, {report['pilots']} adaptation slots, {report['symbols']} slots each: sum-rate "
        f"{report['sum_rate']:.2f} bit/s/Hz per slot (every link at full power: {report['full_power_sum_rate']:.2f})\n" + latency_text(report)
    )


def describe(task: dict) -> str:
    return (
        f"power control for up to {task['outputs']} links (features: the slot's {len(task['features']) - 1} gains and "
        f"the noise power); pilots are slots of channel measurements, no labels"
    )
