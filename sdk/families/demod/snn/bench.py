"""``metaedge bench loihi``: quality of the on-chip-adapted spiking receiver and the speed of Lava.

Quality, on the host reference (exactly Lava's dynamics) over many new devices, all starts
adapted on the same pilots with the same rule and timesteps: the meta-learned receiver (FOMAML:
hidden layer, θ and the learning rates), the jointly trained one (hidden layer and θ), the
hand-designed grid with a FOMAML θ (hidden layer and rates fixed), and on that grid θ = 0 and a
random θ; paired per-device differences with 95 % intervals, and the SER split by whether the
symbol's class was among the frame's pilots.
Next to them, on the same frames: the ONNX receiver (an MLP meta-trained with Meta-SGD for
the same task) and the model-based receiver (MMSE channel estimate + ML), as received; and, where
the spiking receiver has the pilots' phase reference, the ONNX receiver given the same rotation.
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

from metaedge.backends.loihi.network import SnnParameters, rotate_frame, stream_length
from metaedge.backends.loihi.reference import hidden_spikes
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.snn.config import BENCH_RUNS, LoihiFigure
from metaedge.sdk.families.demod.snn.training import (
    SnnRun,
    Streams,
    adapt,
    decide,
    decide_hidden,
    load_snn_run,
    phase_referenced,
    snn_task,
    train_default,
)
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks, TaskBatch
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table, summarise

RANDOM_SCALE = 0.3
MAIN = "fomaml"  # the receiver the bench deploys and compares every other with
UNTRAINED = "untrained (grid, θ = 0)"
ONNX_ROTATED = "ONNX receiver, frames rotated by the pilots' phase"
LABELS = {"fomaml": "meta-learned (hidden, θ, η_i)", "joint": "joint (hidden, θ)", "grid": "grid (FOMAML θ only)"}  # as people read them
ONNX_ITERATIONS = 2000


def run(options: LoihiFigure, progress: Progress = silent) -> dict:
    """``metaedge bench loihi``: the quality comparison, then (unless ``no_lava``) Lava's speed and fixed point;
    written to ``out``/loihi.json."""
    from metaedge.sdk.families.demod.receivers import ModelBasedReceiver
    from metaedge.sdk.lava_env import lava_python
    from metaedge.sdk.rundir import write_json

    interpreter = None if options.no_lava else lava_python()
    if options.lava_payload > options.payload:
        raise UserError(f"--lava-payload {options.lava_payload} exceeds --payload {options.payload}")
    options.out.mkdir(parents=True, exist_ok=True)
    runs = spiking_runs(options, snn_task(options.task), progress)
    main_run = runs[MAIN]
    onnx_dir = options.onnx or options.out / "onnx-metasgd"
    if options.onnx is None and not onnx_dir.exists():
        progress(0, label=f"training the ONNX receiver (Meta-SGD, {ONNX_ITERATIONS} iterations) into {onnx_dir}")
        train_onnx(onnx_dir, main_run.task, options.seed)
    receivers = {
        "ONNX receiver (Meta-SGD MLP)": onnx_receiver(onnx_dir, main_run.task),
        "model-based (MMSE + ML)": ModelBasedReceiver(DemodTasks(main_run.task).constellation, main_run.task.noise_var, main_run.task.channel_var),
    }
    if main_run.spec.pilot_phase:
        receivers[ONNX_ROTATED] = PhaseReferenced(receivers["ONNX receiver (Meta-SGD MLP)"], main_run)
    frame = test_frames(main_run, options.devices, options.payload, options.seed + 1000)
    starts = starts_of(runs, options.seed)
    progress(0, total=len(starts) + len(receivers), label="loihi quality")
    q = quality(main_run, starts, frame, receivers, progress=progress)
    names = list(q["results"])
    report = {
        "task": {k: getattr(main_run.task, k) for k in ("order", "snr_db", "pilots", "channel", "phase_max_deg")},
        "snn": main_run.spec.to_dict(),
        "devices": options.devices,
        "payload": options.payload,
        "seed": options.seed,
        "runs": {m: str(r.path) for m, r in runs.items()} | {"onnx": str(onnx_dir)},
        "quality": q["results"],
        "paired": {start: paired(q["per_device"], start, [n for n in names if n != start]) for start in (MAIN, "joint")},
    }
    if interpreter:
        progress(0, label=f"{max(options.lava_frames, options.fixed_frames)} frames on Lava, {options.fixed_frames} also in fixed point")
        report.update(lava_report(options, main_run, frame, interpreter))
    report["command"] = options.command
    write_json(options.out / "loihi.json", report)
    return {**report, "written": str(options.out / "loihi.json")}


def spiking_runs(options: LoihiFigure, task: DemodConfig, progress: Progress) -> dict[str, SnnRun]:
    """The runs compared, by name: given, found in ``out``, or trained there; one task and network."""
    runs = {}
    for name, (method, train) in BENCH_RUNS.items():
        path = getattr(options, name) or options.out / f"snn-{name}"
        if getattr(options, name) is None and not path.exists():
            progress(0, label=f"training the {name} receiver into {path}")
            train_default(path, method, options.seed, task, not options.no_pilot_phase, **train)
        runs[name] = load_snn_run(path)
    if any(r.task != runs[MAIN].task or r.spec != runs[MAIN].spec for r in runs.values()):
        raise UserError("the runs were trained on different tasks or networks; compare runs of one configuration")
    return runs


def lava_report(options: LoihiFigure, main_run: SnnRun, frame: TaskBatch, interpreter: str) -> dict:
    """Frames of the FOMAML bundle on Lava (float, and fixed point): speed and agreement with the host."""
    from metaedge.sdk.targets import export

    bundle = options.out / "bundle-fomaml"
    if not bundle.exists():
        export("loihi", main_run.path, bundle)
    try:
        speed = lava_speed(main_run, bundle, frame, options.lava_frames, options.lava_payload, interpreter, options.fixed_frames)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    return {**({"fixed_point": speed.pop("fixed_point")} if "fixed_point" in speed else {}), "speed": speed}


def train_onnx(out: Path, task: DemodConfig, seed: int) -> None:
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer

    # the outer step and patience of the receiver behind the published loihi figures (docs/results/loihi.md)
    train = TrainConfig(algo="metasgd", iterations=ONNX_ITERATIONS, outer_lr=1e-3, patience=8, seed=seed)
    trainer = Trainer(out, task.replace(val_pilots=32), train)
    trainer.start(resume=False)
    trainer.run()


def onnx_receiver(path: Path, task: DemodConfig):
    import torch

    from metaedge.sdk.families.demod.receivers import LearnedReceiver
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.rundir import load_run

    run = load_run(path)
    run_task, train = configs_from_run(run.config)
    if run_task.order != task.order or run_task.snr_db != task.snr_db or run_task.channel != task.channel:
        raise UserError(f"--onnx {path} was trained on another task than the spiking runs (order, SNR and channel must match)")
    return LearnedReceiver("ONNX receiver", {k: torch.from_numpy(v) for k, v in run.theta.items()}, train.inner(), task.order)


def text(report: dict) -> str:
    rows = []
    for name, r in report["quality"].items():
        adapted = report["paired"][MAIN].get(name)
        rows.append(
            [
                LABELS.get(name, name),
                r["where"],
                f"{r['ser']:.4f}",
                f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]",
                f"{r['without_adaptation']:.4f}" if "without_adaptation" in r else "",
                *(f"{r[key]:.4f}" if r[key] is not None else "" for key in ("ser_piloted", "ser_unpiloted")),
                f"{adapted['ser_difference']:+.4f} [{adapted['ci95'][0]:+.4f}, {adapted['ci95'][1]:+.4f}]" if adapted else "",
            ]
        )
    t = report["task"]
    channel = t["channel"] + (f" ±{t['phase_max_deg']:g}°" if t["channel"] == "phase" else "")
    head = (
        f"{t['order']}-QAM" if t["order"] != 4 else "QPSK"
    ) + f", {t['pilots']} pilots, {t['snr_db']:g} dB, {channel}; {report['devices']} new devices × {report['payload']} symbols"
    columns = ["receiver", "where", "SER", "95 % CI", "no adaptation", "classes piloted", "not piloted", "meta-learned − this (paired)"]
    lines = [head, format_table(columns, rows)]
    if "speed" in report:
        s = report["speed"]
        lines.append(
            f"Lava: {s['lava']['timesteps_per_s_median']:.0f} timesteps/s, {s['lava']['frame_s_median']:.2f} s per frame "
            f"({s['pilots']} pilots + {s['payload']} symbols = {s['timesteps_per_frame']} timesteps); host reference "
            f"{s['speedup_over_lava']['per_frame']:.0f}× faster per frame, {s['speedup_over_lava']['batched']:.0f}× batched; "
            f"decisions equal: {s['decisions_equal_reference']}"
        )
    if "fixed_point" in report:
        f = report["fixed_point"]
        lines.append(
            f"fixed point (Lava fixed_pt): SER {f['fixed_ser']:.4f} vs {f['float_ser']:.4f} floating on the same frames "
            f"(cost {f['ser_cost']['ser']:+.4f} [{f['ser_cost']['ci95'][0]:+.4f}, {f['ser_cost']['ci95'][1]:+.4f}]); "
            f"decisions agree on {f['decision_agreement']:.1%}"
        )
    return "\n".join([*lines, f"→ {report['written']}"])


def test_frames(run: SnnRun, devices: int, payload: int, seed: int) -> TaskBatch:
    tasks = DemodTasks(run.task, seed=seed)
    return tasks.frames(tasks.devices("test", devices), run.task.pilots, payload, tasks.rng("test", 1))


def starts_of(runs: dict[str, SnnRun], seed: int) -> dict[str, tuple[np.ndarray, SnnParameters]]:
    """Every start the bench compares: each run's θ with its parameters; the untrained receiver (the hand-designed
    grid, θ = 0, one η); a random θ on the grid run's parameters."""
    grid = runs["grid"]
    shape = grid.theta.shape
    return {
        **{name: (run.theta, run.params) for name, run in runs.items()},
        UNTRAINED: (np.zeros(shape), SnnParameters.grid(grid.spec)),
        "grid, random θ": (np.random.default_rng([seed, 5]).normal(scale=RANDOM_SCALE, size=shape), grid.params),
    }


def quality(
    run: SnnRun,
    starts: dict[str, tuple[np.ndarray, SnnParameters]],
    frame: TaskBatch,
    others: dict[str, object],
    progress: Callable[[int], None] | None = None,
) -> dict:
    """SER per start (after adaptation, without, and split by whether the symbol's class was among the pilots), and
    of the other receivers, on the same frames."""
    spec = run.spec
    spiking = phase_referenced(spec, DemodTasks(run.task).constellation, frame)  # the other receivers get the frames as received
    pilots, payload = Streams.encode(spec, spiking.x_tr, spiking.y_tr), Streams.encode(spec, spiking.x_va, None)
    piloted = (frame.y_va[..., None] == frame.y_tr[:, None, :]).any(-1)
    per_device, results = {}, {}
    for name, (theta, params) in starts.items():
        hidden = hidden_spikes(spec, params, payload.inputs)  # the payload's, for the adapted weights and for θ
        wrong = decide_hidden(spec, adapt(spec, theta, params, pilots), hidden, payload.symbols) != frame.y_va
        unadapted = (decide_hidden(spec, np.broadcast_to(theta, (len(wrong), *theta.shape)), hidden, payload.symbols) != frame.y_va).mean(-1)
        per_device[name] = wrong.mean(-1)
        results[name] = {
            **summarise(per_device[name]),
            "without_adaptation": summarise(unadapted)["ser"],
            **split_by_pilots(wrong, piloted),
            "where": "spiking, on-chip rule",
        }
        if progress:
            progress(1)
    for name, receiver in others.items():
        probs = receiver.probabilities(frame.x_tr, frame.y_tr, frame.x_va)
        wrong = probs.argmax(-1) != frame.y_va
        per_device[name] = wrong.mean(-1)
        results[name] = {
            **summarise(per_device[name]),
            **split_by_pilots(wrong, piloted),
            "where": "host (ONNX-exportable MLP)" if name.startswith("ONNX") else "host",
        }
        if progress:
            progress(1)
    return {"results": results, "per_device": per_device}


class PhaseReferenced:
    """Another receiver given the frames as the spiking receiver sees them, rotated by their pilots' phase: what
    the phase reference would do for it."""

    def __init__(self, receiver, run: SnnRun) -> None:
        self.receiver, self.constellation = receiver, DemodTasks(run.task).constellation

    def probabilities(self, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray) -> np.ndarray:
        pilots, payload = rotate_frame(self.constellation, x_tr, y_tr, x_va)
        return self.receiver.probabilities(pilots.astype(np.float32), y_tr, payload.astype(np.float32))


def split_by_pilots(wrong: np.ndarray, piloted: np.ndarray) -> dict:
    """SER on payload symbols whose class was among the frame's pilots, and on the others (None when there are none)."""
    return {key: float(wrong[mask].mean()) if mask.any() else None for key, mask in (("ser_piloted", piloted), ("ser_unpiloted", ~piloted))}


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
    lava = lava_frames(bundle, x_p, y_p, x_s, lava_python)  # the device rotates them by their pilots' phase itself
    rotated = phase_referenced(spec, DemodTasks(run.task).constellation, TaskBatch(x_p, y_p, x_s, y_s))  # … and so does the reference here
    lava_decisions = np.array([r["decisions"] for r in lava["frames"]])
    # the same frames on the host reference, one device at a time, and all at once
    single = []
    for k in range(frames):
        start = time.perf_counter()
        pilots = Streams.encode(spec, rotated.x_tr[k : k + 1], y_p[k : k + 1])
        decide(spec, adapt(spec, run.theta, run.params, pilots), run.params, Streams.encode(spec, rotated.x_va[k : k + 1], None))
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    batched = decide(
        spec, adapt(spec, run.theta, run.params, Streams.encode(spec, rotated.x_tr, y_p)), run.params, Streams.encode(spec, rotated.x_va, None)
    )
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
