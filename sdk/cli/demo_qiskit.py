"""``metaedge demo --target qiskit``: the Born-machine receiver from meta-training to a noisy IBM device model.

Trains the meta-learned and the jointly learned circuit (reused when present), compares them
with the uniform prior exactly and on the noisy FakeManilaV2 target (``metaedge bench
qiskit``), then exports the meta-learned bundle signed, deploys it to a qiskit device
process and runs new devices' frames through the protocol.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

NOISY = "noisy:FakeManilaV2"
DEVICE_FRAMES = 10


def run_qiskit_demo(args: argparse.Namespace) -> int:
    import contextlib
    import io

    from metaedge.sdk.cli.demo import demo_keys, deployed_device
    from metaedge.sdk.device_frames import stream as stream_frames
    from metaedge.sdk.families.demod.born.bench import bench_qiskit, text
    from metaedge.sdk.families.demod.born.training import load_born_run, train_default
    from metaedge.sdk.plots import plot_reliability
    from metaedge.sdk.rundir import write_json
    from metaedge.sdk.targets import export

    out = args.out / "qiskit"
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for method in ("meta", "joint"):
        path = out / f"born-{method}"
        if args.fresh:
            shutil.rmtree(path, ignore_errors=True)
        if not (path / "theta.safetensors").is_file():
            shutil.rmtree(path, ignore_errors=True)
            train_default(path, method, seed=0)
        runs[method] = load_born_run(path)
    if not args.quiet:
        print(f"bench: exact evaluation on 300 devices, then {DEVICE_FRAMES} devices per prior on {NOISY}", file=sys.stderr)
    report = bench_qiskit(runs["meta"], runs["joint"], exact_devices=300, device_frames=DEVICE_FRAMES, targets=(NOISY,))
    exact = report["exact"]["results"]
    plot_reliability(
        {n: exact[n]["reliability"] for n in ("meta-learned", "point-estimate BNN", "joint")},
        out / "reliability.png",
        "Born-machine BNN, exact ensemble",
    )
    keys, bundle, state = args.out / "keys", out / "bundle", out / "device"
    for path in (bundle, state):
        shutil.rmtree(path, ignore_errors=True)
    key = demo_keys(keys)
    export("qiskit", out / "born-meta", bundle, key=key)
    with deployed_device("qiskit", state, keys, bundle, ("--backend", NOISY)) as url:
        with contextlib.redirect_stdout(io.StringIO()):
            report["protocol"] = stream_frames(url, DEVICE_FRAMES, runs["meta"].task.pilots, 1000, seed=1)
    write_json(out / "qiskit.json", report)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    p = report["protocol"]
    print(text(report))
    print(
        f"\nmeta-learned bundle deployed to a {NOISY} device process: SER {p['ser']:.4f} over {p['frames']} new devices × "
        f"{p['symbols']} symbols, {p['pilots']} pilots; device time per frame median {p['device_us']['p50'] / 1e3:.0f} ms"
    )
    print(f"written: {out / 'qiskit.json'}, {out / 'reliability.png'}")
    return 0
