"""``metaedge demo --target loihi``: the spiking receiver from meta-training to a Lava (Loihi 2) device.

Trains the meta-learned receiver (FOMAML: hidden layer, θ, learning rates) and the jointly trained one on the host
reference simulator (reused when present), compares them on new devices with paired differences, exports the
meta-learned bundle signed, starts a Loihi device with the Lava environment's interpreter, deploys,
and runs new devices' frames through the protocol: the rule adapts the synapses on the pilots of every frame."""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np

from metaedge.backends.loihi.network import SnnParameters
from metaedge.sdk.families.demod.config import DemoOptions
from metaedge.sdk.families.demod.snn.bench import LABELS, MAIN, UNTRAINED, paired, quality, test_frames
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
    runs = default_runs(out, "snn", (MAIN, "joint"), options.fresh, train_default, load_snn_run, progress)
    run = runs[MAIN]
    starts = {name: (r.theta, r.params) for name, r in runs.items()} | {UNTRAINED: (np.zeros_like(run.theta), SnnParameters.grid(run.spec))}
    compared = quality(run, starts, test_frames(run, HOST_DEVICES, 1000, seed=1000), {})
    host = compared["results"]
    difference = paired(compared["per_device"], MAIN, ["joint"])["joint"]
    keys, bundle, state = options.out / "keys", out / "bundle", out / "device"
    for path in (bundle, state):
        shutil.rmtree(path, ignore_errors=True)
    export("loihi", run.path, bundle, key=demo_keys(keys))
    progress(0, label=f"Loihi device (Lava): {DEVICE_FRAMES} frames of {run.task.pilots} pilots + {DEVICE_SYMBOLS} symbols")
    with deployed_device("loihi", state, keys, bundle, python=interpreter) as url:
        with contextlib.redirect_stdout(io.StringIO()):
            protocol = stream_frames(url, DEVICE_FRAMES, run.task.pilots, DEVICE_SYMBOLS, seed=1)
    report = {"host": host, "paired": difference, "protocol": protocol, "bundle": str(bundle), "task": constellation_line(run)}
    write_json(out / "loihi.json", report)
    return {**report, "demo": "loihi", "written": [str(out / "loihi.json")]}


def constellation_line(run) -> str:
    t = run.task
    return f"{'QPSK' if t.order == 4 else f'{t.order}-QAM'}, {t.pilots} pilots, {t.snr_db:g} dB, {t.channel}"


def text(report: dict) -> str:
    rows = [
        [LABELS.get(name, name), f"{r['ser']:.4f}", f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]", f"{r['without_adaptation']:.4f}"]
        for name, r in report["host"].items()
    ]
    p, d = report["protocol"], report["paired"]
    verdict = "better" if d["ci95"][1] < 0 else "worse" if d["ci95"][0] > 0 else "not distinguishable"
    return "\n".join(
        [
            f"spiking receiver, {report['task']}, on-chip three-factor rule; {HOST_DEVICES} new devices (host reference = Lava's dynamics)",
            format_table(["receiver", "SER after adaptation", "95 % CI", "no adaptation"], rows),
            f"meta-learned − joint, paired over devices: {d['ser_difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] ({verdict})",
            "",
            f"meta-learned bundle on a Loihi device (Lava): SER {p['ser']:.4f} over {p['frames']} new devices × {p['symbols']} symbols; "
            f"device time per frame median {p['device_us']['p50'] / 1e6:.1f} s",
            f"written: {', '.join(report['written'])}",
        ]
    )
