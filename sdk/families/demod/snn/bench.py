"""``metaedge bench loihi``: quality of the on-chip-adapted spiking receiver and the speed of Lava.

Quality, on the host reference (exactly Lava's dynamics) over many new devices, all starts
adapted on the same pilots with the same rule and timesteps: the FOMAML-, Reptile- and
jointly trained θ, θ = 0 and a random θ; paired per-device differences with 95 % intervals.
Next to them, on the same frames: the ONNX receiver (an MLP meta-trained with Meta-SGD for
the same task) and the model-based receiver (MMSE channel estimate + ML).
Speed: a few frames through the backend on Lava (in the Lava environment), whose decisions
must equal the reference's; Lava timesteps per second, the device-side time of one frame,
and the host reference's speed-up over Lava, per frame and batched over devices.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from metaedge.backends.loihi.network import stream_length
from metaedge.sdk.families.demod.snn.training import SnnRun, Streams, adapt, decide
from metaedge.sdk.families.demod.task import DemodTasks, TaskBatch
from metaedge.sdk.stats import summarise

RANDOM_SCALE = 0.3


def test_frames(run: SnnRun, devices: int, payload: int, seed: int) -> TaskBatch:
    tasks = DemodTasks(run.task, seed=seed)
    return tasks.frames(tasks.devices("test", devices), run.task.pilots, payload, tasks.rng("test", 1))


def starts_of(runs: dict[str, SnnRun], seed: int) -> dict[str, np.ndarray]:
    """Every θ the bench compares: the trained ones, zero, and a random start."""
    shape = next(iter(runs.values())).theta.shape
    return {
        **{f"{name} θ": run.theta for name, run in runs.items()},
        "zero θ": np.zeros(shape),
        "random θ": np.random.default_rng([seed, 5]).normal(scale=RANDOM_SCALE, size=shape),
    }


def quality(
    run: SnnRun, starts: dict[str, np.ndarray], frame: TaskBatch, others: dict[str, object], progress: Callable[[int], None] | None = None
) -> dict:
    """SER per start (after adaptation, and without), and of the other receivers, on the same frames."""
    spec = run.spec
    pilots, payload = Streams.encode(spec, frame.x_tr, frame.y_tr), Streams.encode(spec, frame.x_va, None)
    per_device, results = {}, {}
    for name, theta in starts.items():
        adapted = (decide(spec, adapt(spec, theta, pilots), payload) != frame.y_va).mean(-1)
        unadapted = (decide(spec, theta, payload) != frame.y_va).mean(-1)
        per_device[name] = adapted
        results[name] = {**summarise(adapted), "without_adaptation": summarise(unadapted)["ser"], "where": "spiking, on-chip rule"}
        if progress:
            progress(1)
    for name, receiver in others.items():
        probs = receiver.probabilities(frame.x_tr, frame.y_tr, frame.x_va)
        per_device[name] = (probs.argmax(-1) != frame.y_va).mean(-1)
        results[name] = {**summarise(per_device[name]), "where": "host (ONNX-exportable MLP)" if "ONNX" in name else "host"}
        if progress:
            progress(1)
    return {"results": results, "per_device": per_device}


def paired(per_device: dict[str, np.ndarray], a: str, others: list[str]) -> dict:
    """SER(a) − SER(b) per device, mean and 95 % interval (negative: a is better)."""
    out = {}
    for b in others:
        s = summarise(per_device[a] - per_device[b])
        out[b] = {"ser_difference": s["ser"], "ci95": s["ci95"], "better": bool(s["ci95"][1] < 0)}
    return out


def lava_frames(bundle: Path, pilots: np.ndarray, labels: np.ndarray, payload: np.ndarray, lava_python: str, fixed_point: bool = False) -> dict:
    """Frames through the backend on Lava: a subprocess in the Lava environment (``backends/loihi/timing``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.npz"
        np.savez(path, pilots=pilots, labels=labels, payload=payload)
        result = subprocess.run(
            [lava_python, "-m", "metaedge.backends.loihi.timing", str(bundle), str(path)] + (["--fixed"] if fixed_point else []),
            capture_output=True,
            text=True,
            timeout=3600,
        )
    if result.returncode != 0:
        raise RuntimeError(f"the Lava timing run failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def lava_speed(run: SnnRun, bundle: Path, frame: TaskBatch, frames: int, payload: int, lava_python: str, fixed_frames: int = 0) -> dict:
    """The first max(frames, fixed_frames) frames on Lava against the reference on the same frames; the first
    ``fixed_frames`` of them also on Lava's fixed_pt models, compared with the floating-point run."""
    spec = run.spec
    frames = max(frames, fixed_frames)
    x_p, y_p, x_s, y_s = frame.x_tr[:frames], frame.y_tr[:frames], frame.x_va[:frames, :payload], frame.y_va[:frames, :payload]
    lava = lava_frames(bundle, x_p, y_p, x_s, lava_python)
    lava_decisions = np.array([r["decisions"] for r in lava["frames"]])
    # the same frames on the host reference, one device at a time, and all at once
    single = []
    for k in range(frames):
        start = time.perf_counter()
        decide(spec, adapt(spec, run.theta, Streams.encode(spec, x_p[k : k + 1], y_p[k : k + 1])), Streams.encode(spec, x_s[k : k + 1], None))
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    batched = decide(spec, adapt(spec, run.theta, Streams.encode(spec, x_p, y_p)), Streams.encode(spec, x_s, None))
    batched_s = time.perf_counter() - start
    frame_s = np.array([r["adapt_s"] + r["decode_s"] for r in lava["frames"]])
    steps = stream_length(spec, run.task.pilots) + stream_length(spec, payload)
    report = {
        "frames": frames,
        "pilots": run.task.pilots,
        "payload": payload,
        "timesteps_per_frame": steps,
        "decisions_equal_reference": bool(np.array_equal(lava_decisions, batched)),
        "lava": {
            "build_s": lava["build_s"],
            "frame_s_median": float(np.median(frame_s)),
            "adapt_s_median": float(np.median([r["adapt_s"] for r in lava["frames"]])),
            "timesteps_per_s_median": float(np.median([r["steps_per_s"] for r in lava["frames"]])),
        },
        "reference": {
            "frame_s_median": float(np.median(single)),
            "batched_frame_s": batched_s / frames,
            "timesteps_per_s": steps / float(np.median(single)),
        },
        "speedup_over_lava": {
            "per_frame": float(np.median(frame_s) / np.median(single)),
            "batched": float(np.median(frame_s) / (batched_s / frames)),
        },
    }
    if fixed_frames:
        pick = slice(0, fixed_frames)
        fixed = lava_frames(bundle, x_p[pick], y_p[pick], x_s[pick], lava_python, fixed_point=True)
        fixed_decisions = np.array([r["decisions"] for r in fixed["frames"]])
        float_decisions, labels = lava_decisions[pick], y_s[pick]
        float_ser, fixed_ser = (float_decisions != labels).mean(-1), (fixed_decisions != labels).mean(-1)
        report["fixed_point"] = {
            "float_ser": float(float_ser.mean()),
            "fixed_ser": float(fixed_ser.mean()),
            "ser_cost": summarise(fixed_ser - float_ser),
            "frames": fixed_frames,
            "decision_agreement": float(np.mean(fixed_decisions == float_decisions)),
            "frame_s_median": float(np.median([r["adapt_s"] + r["decode_s"] for r in fixed["frames"]])),
        }
    return report
