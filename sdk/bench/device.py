"""``metaedge bench device``: device-side cost of one frame, ONNX Runtime against eager torch.

One frame = reset to θ, K adaptation steps on the pilots, inference on the payload. Measured
in one run, alternating variants in blocks, one thread each: the ONNX backend in each of its
adaptation modes the bundle allows (the fused frame graph of a one-step bundle, which a device runs;
an ONNX ``Loop``, the device's default for a multi-step bundle; IO binding; a plain ``session.run``
step loop), eager torch on the same parameters and
data, and eager torch's inference alone, which bounds the ratio a device can reach; the device's whole frame (the
adaptation guard and the per-frame selection of the classical receiver included) next to the same frame with the
guard alone. Then a real device process on loopback: the round trip of a frame through the protocol, and the
process's peak memory.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from metaedge.backends.base import Frame
from metaedge.backends.onnx import OnnxBackend
from metaedge.deploy.bundle import Bundle, pack
from metaedge.sdk.bench.config import DeviceBench
from metaedge.sdk.errors import UserError, bundle_at
from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.meta.defaults import Proximal
from metaedge.sdk.models.mlp import forward
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import percentiles

BLOCK = 10  # frames per variant before switching


def _torch_frame(theta: dict, inner: InnerLoop, classes: int):
    def run(pilots, labels, payload):
        onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), classes).to(torch.float32)
        adapted = {k: v.detach() for k, v in adapt(theta, torch.from_numpy(pilots), onehot, inner).items()}
        with torch.no_grad():
            return forward(adapted, torch.from_numpy(payload)).exp().numpy()

    return run


def _torch_forward_only(theta: dict):
    """Eager torch's inference alone (no adaptation): with a free adaptation, the best a device whose
    inference is as fast as torch's could do; torch's frame over it bounds the attainable ratio."""

    def run(pilots, labels, payload):
        with torch.no_grad():
            return forward(theta, torch.from_numpy(payload)).exp().numpy()

    return run


def _variant(mode: str) -> str:
    return "onnx_loop" if mode == "onnx_loop" else f"onnx_{mode}"


def _fused_frame(backend: OnnxBackend):
    def run(pilots, labels, payload):
        return np.exp(backend.run_fused(pilots, labels, payload))

    return run


def _onnx_frame(backend: OnnxBackend):
    def run(pilots, labels, payload):
        backend.reset()
        backend.adapt(pilots, labels)
        return backend.predict(payload)

    return run


def torch_unavailable(manifest: dict) -> str | None:
    """Why eager torch cannot recompute a bundle's frame from its manifest alone, or None when it can: an MLP
    classifier adapting by SGD (with Meta-SGD's rates, a CAVIA context or a proximal term)."""
    model = manifest["model"]
    for key, what in (
        ("particles", "a particle ensemble"),
        ("posterior", "a Gaussian posterior"),
        ("modules", "a module assignment"),
        ("rtn", "a radio-transformer network"),
    ):
        if key in model:
            return what
    return None if model.get("kind") == "mlp" else f"a {model.get('kind')} model"


def _onnx_variants(bundle: Bundle, steps: int) -> tuple[dict, str]:
    """A frame function for each ONNX adaptation mode, and the name of the one a device runs: the fused frame graph
    of a one-step bundle, else the default mode or its fallback."""
    variants, device_mode = {}, None
    for mode in OnnxBackend.MODES:
        backend = OnnxBackend(threads=1, mode=mode)
        backend.load(bundle)
        backend.steps = steps
        if mode == OnnxBackend.MODES[0]:  # the default mode, a device's
            fused = backend.fused and steps == bundle.manifest.algorithm.inner_steps
            device_mode = "onnx_frame" if fused else _variant(backend.effective_mode)
            if fused:
                variants["onnx_frame"] = _fused_frame(backend)
        variants.setdefault(_variant(backend.effective_mode), _onnx_frame(backend))
    return variants, device_mode


FIELD_FRAMES = 64  # frames of the bundle's training conditions that the device-frame variants cycle through


def _field_frames(bundle: Bundle, pilots: int, symbols: int) -> list | None:
    """Frames as the field sends them, one per fresh device of a demodulator's training conditions (so the selection
    decides as it would there); None for bundles without a classical receiver."""
    from metaedge.sdk.families.demod.task import DemodTasks, config_of_conditions

    task = bundle.manifest.task
    if task.fallback is None:  # the training conditions describe a demodulator's devices, which carry a classical receiver
        return None
    tasks = DemodTasks(config_of_conditions(task.raw, pilots=pilots, payload=symbols), seed=0)
    batch = tasks.frames(tasks.devices("test", FIELD_FRAMES), pilots, symbols, tasks.rng("test", 1))
    return [Frame(batch.x_tr[i], batch.y_tr[i], batch.x_va[i]) for i in range(FIELD_FRAMES)]


def _receiver_frames(bundle: Bundle, steps: int, field: list | None, bench_frame) -> tuple[dict, dict]:
    """The device's whole frame (``Receiver.frame``: the guard's pilot losses, adaptation, inference, and the classical
    receiver with the per-frame selection the bundle asks for, bundle-format.md §6.2) on the field's frames, next to
    the same frames with the guard alone and no classical receiver (as devices decided frames before the
    selection), and on the bench's frame of random samples, which the classical receiver decides (the worst case).
    Also, per variant, the share of its frames the classical receiver decided."""
    variants, shares = {}, {}
    for name, selecting, frames in (
        ("receiver_frame", True, field or [bench_frame]),
        ("receiver_frame_guard_only", False, field or [bench_frame]),
        ("receiver_frame_random_samples", True, [bench_frame]),
    ):
        backend = OnnxBackend(threads=1)
        backend.load(bundle)
        backend.steps = steps
        if not selecting:
            backend.classical = backend.select = None
        cycle = itertools.cycle(frames)
        variants[name] = lambda pilots, labels, payload, backend=backend, cycle=cycle: backend.frame(next(cycle)).outputs
        shares[name] = sum(backend.frame(f).receiver == "classical" for f in frames) / len(frames)
    return variants, shares


def _alternating(variants: dict, repeats: int, frame: tuple) -> dict[str, list[float]]:
    """Seconds per frame of each variant. Variants alternate in blocks: frame by frame, torch's large code path
    evicts ORT's from the caches and slows it, which a device without torch never sees."""
    samples = {n: [] for n in variants}
    for _ in range(max(1, repeats // BLOCK)):
        for n, f in variants.items():
            for _ in range(BLOCK):
                start = time.perf_counter()
                f(*frame)
                samples[n].append(time.perf_counter() - start)
    return samples


def bench_device(bundle: Bundle, repeats: int, pilots: int = 8, symbols: int = 1000, steps: int | None = None) -> dict:
    """One frame on the device's runtime in each adaptation mode, next to eager torch where torch can recompute the
    bundle's frame (``torch_unavailable``); classifier bundles (demodulators, link decoders) only."""
    manifest = bundle.manifest.raw
    if "classes" not in manifest["task"]:
        raise UserError(
            f"bench device times classifier bundles (demodulators, link decoders); this "
            f"{manifest['task'].get('name')} bundle predicts outputs: time it with 'metaedge run --json'"
        )
    classes, features = int(manifest["task"]["classes"]), len(manifest["task"]["features"])
    k = steps or int(manifest["algorithm"]["inner_steps"])
    rng = np.random.default_rng(0)
    x_p = rng.normal(0, 2, (pilots, features)).astype(np.float32)
    y_p = rng.integers(0, classes, pilots)
    x = rng.normal(0, 2, (symbols, features)).astype(np.float32)
    torch.set_num_threads(1)
    theta = {name: torch.from_numpy(a) for name, a in bundle.tensors("theta").items()}
    adapts = manifest["algorithm"]["adapts"]
    prox = float(manifest["algorithm"].get("prox") or 0.0)
    inner = InnerLoop(
        lr=float(manifest["algorithm"]["inner_lr"]),
        steps=k,
        adapt=None if len(adapts) == len(theta) else tuple(adapts),
        options=Proximal(prox=prox) if prox else None,
    )
    unavailable = torch_unavailable(manifest)
    variants, device_mode = _onnx_variants(bundle, k)
    agreement = None
    if unavailable is None:
        variants["torch_eager"] = _torch_frame(theta, inner, classes)
        reference = variants["torch_eager"](x_p, y_p, x)
        agreement = {n: float(np.abs(f(x_p, y_p, x) - reference).max()) for n, f in variants.items() if n != "torch_eager"}
        variants["torch_forward_only"] = _torch_forward_only(theta)
    receivers, shares = _receiver_frames(bundle, k, _field_frames(bundle, pilots, symbols), Frame(x_p, y_p, x))
    variants.update(receivers)
    samples = _alternating(variants, repeats, (x_p, y_p, x))
    median_us = {n: statistics.median(s) * 1e6 for n, s in samples.items()}
    return {
        "benchmark": "device",
        "frame": {"pilots": pilots, "symbols": symbols, "steps": k, "algorithm": manifest["algorithm"]["name"]},
        "repeats": repeats,
        "threads": 1,
        "median_us": median_us,
        "p90_us": {n: percentiles(s, (90,), scale=1e6)["p90"] for n, s in samples.items()},
        "device_mode": device_mode,
        "torch_over_onnx": median_us["torch_eager"] / median_us[device_mode] if agreement else None,
        "torch_over_torch_forward_only": median_us["torch_eager"] / median_us["torch_forward_only"] if agreement else None,
        "selection_over_guard_only": median_us["receiver_frame"] / median_us["receiver_frame_guard_only"],
        "selection_worst_over_guard_only": median_us["receiver_frame_random_samples"] / median_us["receiver_frame_guard_only"],
        "classical_share": shares,
        "max_abs_prob_diff_vs_torch": agreement,
        **({"torch_unavailable": f"eager torch cannot recompute the frame of {unavailable} from the manifest"} if unavailable else {}),
        "bundle_bytes": bundle.size(),
        "packed_bytes": len(pack(bundle)),
        "environment": {"onnxruntime": ort.__version__, "torch": torch.__version__, "python": sys.version.split()[0]},
    }


def device_process(bundle_path: Path, state: Path, *options: str):
    """A real device process on loopback with ``bundle_path`` deployed and confirmed (unsigned: this measures speed;
    trust is tested elsewhere): a context yielding (process, url). ``options``: more serve flags."""
    from metaedge.sdk.device_process import deployed

    return deployed("onnx", state, bundle_path, "--allow-unsigned", *options)


def process_tree(root: int) -> list[int]:
    """``root`` and every process it started, transitively (a device and its contained receiver)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = [root], {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        tree.extend(sorted(frontier))
    return tree


def process_status(pid: int) -> dict:
    """Resident and peak memory (bytes) of a device process and the processes it started (its contained receiver),
    summed, and the device process's open file descriptors, from /proc."""
    rss = peak = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue  # it ended meanwhile
        fields = {key: int(value.split()[0]) * 1024 for key, _, value in (line.partition(":") for line in lines) if key in ("VmRSS", "VmHWM")}
        rss, peak = rss + fields.get("VmRSS", 0), peak + fields.get("VmHWM", 0)
    return {"rss": rss, "peak_rss": peak, "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


def bench_round_trip(bundle_path: Path, frames: int, pilots: int, symbols: int, state: Path) -> dict:
    """Deploy to a real device process, stream frames; round trip, device time and peak memory of device and receiver
    — with the receiver contained in its own process (the default) and inside the device process, side by side."""
    from metaedge.sdk.device_frames import stream as stream_frames

    results = {}
    for name, options in (("contained", ()), ("in_process", ("--in-process",))):
        with device_process(bundle_path, state / name, *options) as (proc, url):
            report = stream_frames(url, frames, pilots, symbols, seed=0)
            peak = process_status(proc.pid)["peak_rss"]
        results[name] = {"round_trip_us": report["round_trip_us"], "device_us": report["device_us"], "device_peak_rss_bytes": peak}
    return {"frames": frames, **results["contained"], "in_process": results["in_process"]}


def bench_soak(bundle_path: Path, frames: int, pilots: int, symbols: int, state: Path, progress: Callable[[int], None] | None = None) -> dict:
    """Many frames against one device process: throughput, latency, memory growth, file descriptors."""
    from metaedge.deploy.client import DeviceClient
    from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks

    tasks = DemodTasks(DemodConfig(pilots=pilots, val_pilots=1, payload=symbols, frame=pilots + symbols), seed=0)
    pool = 500
    batch = tasks.frames(tasks.devices("test", pool), pilots, symbols, tasks.rng("test", 1))
    warmup = max(1, frames // 10)
    latencies = np.empty(frames)
    with device_process(bundle_path, state) as (proc, url), DeviceClient(url) as client:
        start = time.perf_counter()
        for i in range(frames):
            if i == warmup:
                after_warmup = process_status(proc.pid)
            k = i % pool
            t = time.perf_counter()
            client.call("frame", {"pilots": batch.x_tr[k], "labels": batch.y_tr[k].astype(np.int32), "payload": batch.x_va[k]})
            latencies[i] = time.perf_counter() - t
            if progress and i % 1000 == 999:
                progress(1000)
        elapsed = time.perf_counter() - start
        end = process_status(proc.pid)
        served = client.call("stats")[0]
    return {
        "benchmark": "soak",
        "frames": frames,
        "pilots": pilots,
        "symbols": symbols,
        "seconds": elapsed,
        "frames_per_s": frames / elapsed,
        "round_trip_us": percentiles(latencies, (50, 90, 99, 99.9), scale=1e6),
        "rss_after_warmup": after_warmup["rss"],
        "rss_end": end["rss"],
        "rss_growth_percent": 100.0 * (end["rss"] - after_warmup["rss"]) / after_warmup["rss"],
        "fds_after_warmup": after_warmup["fds"],
        "fds_end": end["fds"],
        "device_frames": served["frames"],
        "device_errors": served["errors"],
        "device_fallbacks": served["fallbacks"],
    }


def run(options: DeviceBench, progress: Progress = silent) -> dict:
    """``metaedge bench device``: the frame on one core, then the protocol round trip."""
    import tempfile

    report = bench_device(bundle_at(options.bundle), options.repeats, options.pilots, options.symbols, options.inner_steps)
    progress(0, label="protocol round trip")
    with tempfile.TemporaryDirectory() as state:
        report["protocol"] = bench_round_trip(options.bundle, options.frames, options.pilots, options.symbols, Path(state))
    return report


def text(report: dict) -> str:
    f, med, p = report["frame"], report["median_us"], report["protocol"]
    lines = [f"one frame: {f['pilots']} pilots, {f['steps']} step(s), {f['symbols']} symbols, 1 thread, median of {report['repeats']}"]
    lines += [f"  {name:<26} {us:8.1f} µs   p90 {report['p90_us'][name]:8.1f} µs" for name, us in med.items()]
    ratio = (
        f"torch / onnx ({report['device_mode']}, the device's mode): {report['torch_over_onnx']:.1f}× (at most "
        f"{report['torch_over_torch_forward_only']:.1f}× for a device whose adaptation were free and whose inference "
        f"were as fast as torch's)"
        if report["torch_over_onnx"]
        else f"{report['torch_unavailable']}; device mode {report['device_mode']}"
    )
    lines.append(
        f"{ratio}; the device's frame with the selection costs {report['selection_over_guard_only']:.2f}× the guard alone on the field's "
        f"frames ({report['classical_share']['receiver_frame']:.0%} decided by the classical receiver), "
        f"{report['selection_worst_over_guard_only']:.2f}× on random samples; bundle {report['bundle_bytes']:,} B; "
        f"round trip median {p['round_trip_us']['p50']:.0f} µs (device {p['device_us']['p50']:.0f} µs) with the receiver "
        f"contained, {p['in_process']['round_trip_us']['p50']:.0f} µs in the device process; peak RSS of device and receiver "
        f"{p['device_peak_rss_bytes'] / 2**20:.1f} MiB ({p['in_process']['device_peak_rss_bytes'] / 2**20:.1f} MiB in one process)"
    )
    return "\n".join(lines)
