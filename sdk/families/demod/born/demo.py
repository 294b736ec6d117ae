"""``metaedge demo --target qiskit``: the Born-machine receiver from meta-training to a noisy IBM device model.

Trains the meta-learned and the jointly learned circuit (reused when present), compares them with the uniform prior
exactly and on the noisy FakeManilaV2 target (as ``metaedge bench qiskit`` does), then exports the meta-learned
bundle signed, deploys it to a qiskit device process and runs new devices' frames through the protocol."""

from __future__ import annotations

import contextlib
import io
import shutil

from metaedge.sdk.families.demod.born.bench import bench_qiskit
from metaedge.sdk.families.demod.born.bench import text as bench_text
from metaedge.sdk.families.demod.born.config import METHODS
from metaedge.sdk.families.demod.born.training import load_born_run, train_default
from metaedge.sdk.families.demod.config import DemoOptions
from metaedge.sdk.options import Progress, silent

NOISY = "noisy:FakeManilaV2"
DEVICE_FRAMES, EXACT_DEVICES = 10, 300


def run(options: DemoOptions, progress: Progress = silent) -> dict:
    from metaedge.sdk.device_frames import stream as stream_frames
    from metaedge.sdk.families.demod.demo import default_runs, demo_keys, deployed_device
    from metaedge.sdk.plots import plot_reliability
    from metaedge.sdk.rundir import write_json
    from metaedge.sdk.targets import export

    out = options.out / "qiskit"
    out.mkdir(parents=True, exist_ok=True)
    runs = default_runs(out, "born", METHODS, options.fresh, train_default, load_born_run, progress)
    progress(0, label=f"exact evaluation on {EXACT_DEVICES} devices, then {DEVICE_FRAMES} devices per prior on {NOISY}")
    report = bench_qiskit(runs["meta"], runs["joint"], exact_devices=EXACT_DEVICES, device_frames=DEVICE_FRAMES, targets=(NOISY,))
    exact = report["exact"]["results"]
    shown = ("meta-learned", "point-estimate BNN", "joint")
    plot_reliability({n: exact[n]["reliability"] for n in shown}, out / "reliability.png", "Born-machine BNN, exact ensemble")
    keys, bundle, state = options.out / "keys", out / "bundle", out / "device"
    for path in (bundle, state):
        shutil.rmtree(path, ignore_errors=True)
    export("qiskit", out / "born-meta", bundle, key=demo_keys(keys))
    with deployed_device("qiskit", state, keys, bundle, ("--backend", NOISY)) as url:
        with contextlib.redirect_stdout(io.StringIO()):
            report["protocol"] = stream_frames(url, DEVICE_FRAMES, runs["meta"].task.pilots, 1000, seed=1)
    write_json(out / "qiskit.json", report)
    return {**report, "demo": "qiskit", "written": [str(out / "qiskit.json"), str(out / "reliability.png")]}


def text(report: dict) -> str:
    p = report["protocol"]
    return (
        f"{bench_text(report)}\n\nmeta-learned bundle deployed to a {NOISY} device process: SER {p['ser']:.4f} over {p['frames']} "
        f"new devices × {p['symbols']} symbols, {p['pilots']} pilots; device time per frame median {p['device_us']['p50'] / 1e3:.0f} ms"
    )
