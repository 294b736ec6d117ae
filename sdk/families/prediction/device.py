"""``metaedge run`` for a channel predictor: new channels through the device, scored by the NMSE of its predictions."""

from __future__ import annotations

import numpy as np

from metaedge.backends.linear.backend import to_complex
from metaedge.backends.linear.predictor import nmse
from metaedge.sdk.device_frames import latency_text, predictor_report, timed_frames
from metaedge.sdk.families.prediction.run import prediction_frames


def stream(client, url: str, task: dict, frames: int, samples: int, predictions: int, seed: int) -> dict:
    """``samples`` training windows' worth of pilot channels and a history to predict ``predictions`` channels from;
    NMSE of the device's predictions against the true channels."""
    pilots, history, truth = prediction_frames(task, frames, samples, predictions, seed)
    results, device_us, round_trip = timed_frames(client, ({"pilots": p, "payload": h} for p, h in zip(pilots, history)))
    per_frame = np.asarray([nmse(to_complex(out["outputs"]), t).mean() for t, (_, out) in zip(truth, results)])
    scores = {"nmse": float(per_frame.mean()), "nmse_db": float(10 * np.log10(per_frame.mean())), "per_frame_nmse": per_frame.tolist()}
    return predictor_report("NMSE", frames, samples, predictions, seed, results, device_us, round_trip, **scores)


def report_text(report: dict) -> str:
    return (
        f"{report['frames']} frames, {report['pilots']} training windows, {report['symbols']} predictions each: NMSE "
        f"{report['nmse_db']:.2f} dB; the conventional fit decided {report['classical_frames']} of the frames\n" + latency_text(report)
    )


def describe(task: dict) -> str:
    return (
        f"{task['rx']}×{task['tx']} antennas, {task['taps']} taps ({len(task['features']) // 2} complex entries), "
        f"Doppler {task['doppler_hz'][0]:g}-{task['doppler_hz'][1]:g} Hz; pilots are the frame's past channels"
    )
