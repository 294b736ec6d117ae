"""``metaedge demo --target loihi``: the spiking receiver from meta-training to a Lava (Loihi 2) device.

Trains θ with FOMAML and jointly on the host reference simulator (reused when present), compares them with θ = 0 on
new devices, exports the FOMAML bundle signed, starts a Loihi device with the Lava environment's interpreter, deploys,
and runs new devices' frames through the protocol: the rule adapts the synapses on the pilots of every frame."""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np

from metaedge.sdk.families.demod.config import DemoOptions
from metaedge.sdk.families.demod.snn.bench import quality, test_frames
from metaedge.sdk.families.demod.snn.training import load_snn_run, train_default
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table

DEVICE_FRAMES, DEVICE_SYMBOLS, HOST_DEVICES = 4, 100, 300


def run(options: DemoOptions, progress: Progress = silent) -> dict:
    from metaedge.sdk.device_frames import stream as stream_frames
    from metaedge.sdk.families.demod.demo import default_runs, demo_keys, deployed_device
    from metaedge.sdk.lava_env import lava_python
    from metaedge.sdk.rundir import write_json
    from metaedge.sdk.targets import export

    interpreter = lava_python()
    out = options.out / "loihi"
    out.mkdir(parents=True, exist_ok=True)
    runs = default_runs(out, "snn", ("fomaml", "joint"), options.fresh, train_default, load_snn_run, progress)
    run = runs["fomaml"]
    starts = {"fomaml θ": run.theta, "joint θ": runs["joint"].theta, "zero θ": np.zeros_like(run.theta)}
    host = quality(run, starts, test_frames(run, HOST_DEVICES, 1000, seed=1000), {})["results"]
    keys, bundle, state = options.out / "keys", out / "bundle", out / "device"
    for path in (bundle, state):
        shutil.rmtree(path, ignore_errors=True)
    export("loihi", run.path, bundle, key=demo_keys(keys))
    progress(0, label=f"Loihi device (Lava): {DEVICE_FRAMES} frames of {run.task.pilots} pilots + {DEVICE_SYMBOLS} symbols")
    with deployed_device("loihi", state, keys, bundle, python=interpreter) as url:
        with contextlib.redirect_stdout(io.StringIO()):
            protocol = stream_frames(url, DEVICE_FRAMES, run.task.pilots, DEVICE_SYMBOLS, seed=1)
    report = {"host": host, "protocol": protocol, "bundle": str(bundle), "pilots": run.task.pilots}
    write_json(out / "loihi.json", report)
    return {**report, "demo": "loihi", "written": [str(out / "loihi.json")]}


def text(report: dict) -> str:
    rows = [
        [name, f"{r['ser']:.4f}", f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]", f"{r['without_adaptation']:.4f}"] for name, r in report["host"].items()
    ]
    p = report["protocol"]
    return "\n".join(
        [
            f"spiking receiver, QPSK, {report['pilots']} pilots, on-chip three-factor rule; {HOST_DEVICES} new devices "
            "(host reference = Lava's dynamics)",
            format_table(["start", "SER after adaptation", "95 % CI", "no adaptation"], rows),
            "",
            f"FOMAML bundle on a Loihi device (Lava): SER {p['ser']:.4f} over {p['frames']} new devices × {p['symbols']} symbols; "
            f"device time per frame median {p['device_us']['p50'] / 1e6:.1f} s",
            f"written: {', '.join(report['written'])}",
        ]
    )
