"""``metaedge demo``: the main job — meta-train every algorithm, evaluate, deploy one to a device, print the tables.

Runs land in ``out`` (default runs/demo); a finished run with the same configuration is reused, an interrupted one
resumed, so running the demo twice costs only the evaluation. ``target`` qiskit and loihi run the Born-machine and
spiking-receiver demos instead (``born/demo.py``, ``snn/demo.py``)."""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.config import DemoOptions
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import format_table

PILOTS = (1, 2, 4, 8, 16, 32)
TRAIN_PILOTS = (1, 32)  # each meta-batch draws its pilot count log-uniformly from this range
RELEASE_KEY, OPERATOR_KEY = "metaedge", "operator"
ADAPT_STEPS = 1  # the common adaptation budget at meta-test: one SGD step, as published and as trained
OTHER_DEMOS = {"qiskit": "metaedge.sdk.families.demod.born.demo", "loihi": "metaedge.sdk.families.demod.snn.demo"}


def run(options: DemoOptions, progress: Progress = silent) -> dict:
    """The demo of ``options.target``: its report, also written to ``out``/ser.json (onnx, none)."""
    from metaedge.sdk.families.demod.runs import train_or_reuse
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig
    from metaedge.sdk.meta import get_algorithm
    from metaedge.sdk.plots import plot_ser

    if options.target in OTHER_DEMOS:
        return importlib.import_module(OTHER_DEMOS[options.target]).run(options, progress)
    for algo in options.algos:
        get_algorithm(algo)  # unknown names fail before any training
    if options.target != "none" and options.device_algo not in options.algos:
        raise UserError(f"--device-algo {options.device_algo} is not among --algos {','.join(options.algos)}")
    task = DemodConfig(pilots=TRAIN_PILOTS[1])
    runs, trained = [], {}
    for algo in options.algos:
        path = options.out / algo
        state = train_or_reuse(
            path, task, TrainConfig(algo=algo, pilots_min=TRAIN_PILOTS[0], iterations=options.iterations), options.fresh, options.quiet
        )
        trained[algo] = {"best_val_ser": state["best_val_ser"], "best_iteration": state["best_iteration"]}
        runs.append(path)
    report = {**host_evaluation(options, runs), "demo": "onnx", "trained": trained}
    plot_ser(report["methods"], list(PILOTS), options.out / "ser.png", title="16-QAM, 20 dB, I/Q imbalance, Rayleigh")
    if options.target != "none":
        report["device"] = device_stage(options, report)
    report["written"] = [str(options.out / "ser.json"), str(options.out / "ser.png")]
    (options.out / "ser.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def text(report: dict) -> str:
    if report["demo"] in OTHER_DEMOS:
        return importlib.import_module(OTHER_DEMOS[report["demo"]]).text(report)
    from metaedge.sdk.families.demod.runs import text as ser_table

    trained = [f"{algo}: best validation SER {s['best_val_ser']:.4f} at iteration {s['best_iteration']}" for algo, s in report["trained"].items()]
    lines = [*trained, ser_table(report), "", f"written: {', '.join(report['written'])}"]
    return "\n".join(lines + (["", device_table(report["device"])] if "device" in report else []))


def host_evaluation(options: DemoOptions, runs: list[Path]) -> dict:
    """Every run on the host, with the device algorithm's receiver also as its device decides each frame (learned or
    classical, bundle-format §6.2), and the equivalent ``metaedge eval`` command."""
    from metaedge.backends.selection import SELECT
    from metaedge.sdk.families.demod.runs import evaluate_runs

    selecting = [options.out / options.device_algo] if options.target == "onnx" and options.device_algo in options.algos else []
    select = SELECT if selecting else None
    report = evaluate_runs(
        runs,
        list(PILOTS),
        options.devices,
        options.payload,
        inner_steps=ADAPT_STEPS,
        scratch_lr=0.1,
        baselines=True,
        seed=None,
        quiet=options.quiet,
        select=select,
        selecting=selecting,
    )
    report["command"] = (
        "metaedge eval "
        + " ".join(str(r) for r in runs)
        + f" --inner-steps {ADAPT_STEPS} --devices {options.devices} --payload {options.payload}"
        + (" --select" if selecting else "")
    )
    return report


def device_stage(options: DemoOptions, host: dict) -> dict:
    """Export, start a device process, deploy and confirm, stream the meta-test frames, stop the device."""
    import shutil

    from metaedge.deploy.client import DeviceClient
    from metaedge.sdk.families.demod.receivers import ModelBasedReceiver
    from metaedge.sdk.families.demod.task import DemodTasks
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.plots import plot_ser
    from metaedge.sdk.rundir import read_config
    from metaedge.sdk.targets import export

    run = options.out / options.device_algo
    bundle_dir, state, keys = options.out / "bundle", options.out / "device", options.out / "keys"
    for path in (bundle_dir, state):
        shutil.rmtree(path, ignore_errors=True)
    # the same adaptation budget as the host evaluation; signed, as every device requires
    export("onnx", run, bundle_dir, inner_steps=ADAPT_STEPS, key=demo_keys(keys))
    task, train = configs_from_run(read_config(run))
    tasks = DemodTasks(task, seed=train.seed)
    devs = tasks.devices("test", options.devices)
    frame = tasks.frames(devs, max(PILOTS), options.payload, tasks.rng("test", 1))  # the frames 'metaedge eval' used
    reference = ModelBasedReceiver(tasks.constellation, task.noise_var, task.channel_var)
    learned = next(m for m in host["methods"] if m["run"] == str(run) and m["algo"] == options.device_algo)["ser"]
    selecting = next(m for m in host["methods"] if m["run"] == str(run) and m["algo"] == f"{options.device_algo} + selection")["ser"]
    with deployed_device(options.target, state, keys, bundle_dir) as url:
        with DeviceClient(url) as client:
            rows = [device_row(client, url, frame, p, reference, selecting[str(p)], learned[str(p)]) for p in PILOTS]
    curves = [
        {
            "name": f"{options.device_algo} on the {options.target} device",
            "algo": options.device_algo,
            "ser": {str(r["pilots"]): r["device"] for r in rows},
        },
        {"name": "model-based (MMSE + ML)", "algo": "model-based", "ser": {str(r["pilots"]): r["model_based"] for r in rows}},
    ]
    plot_ser(curves, list(PILOTS), options.out / "device-ser.png", title=f"{options.device_algo} adapted on the simulated {options.target} device")
    return {
        "target": options.target,
        "algo": options.device_algo,
        "bundle": str(bundle_dir),
        "bundle_bytes": sum(f.stat().st_size for f in bundle_dir.iterdir()),
        "devices": options.devices,
        "payload": options.payload,
        "rows": rows,
        "plot": str(options.out / "device-ser.png"),
    }


def device_row(client, url: str, frame, pilots: int, reference, host: dict, learned: dict) -> dict:
    """The device's SER on the frames at ``pilots`` pilots, beside the host's (``host``: the same per-frame selection;
    ``learned``: the learned receiver alone) and the model-based receiver's."""
    from metaedge.sdk.device_frames import score_frames, send_frames
    from metaedge.sdk.stats import summarise

    result = send_frames(client, url, frame.x_tr[:, :pilots], frame.y_tr[:, :pilots], frame.x_va)
    device_errors = score_frames(result, frame.y_va)
    result.pop("reliability")
    mb_errors = (reference.probabilities(frame.x_tr[:, :pilots], frame.y_tr[:, :pilots], frame.x_va).argmax(-1) != frame.y_va).mean(1)
    return {
        "pilots": pilots,
        "device": summarise(device_errors),
        "host": host,
        "learned": learned,
        "vs_model_based": summarise(device_errors - mb_errors),
        "model_based": summarise(mb_errors),
        **result,
    }


def default_runs(out: Path, prefix: str, methods: tuple[str, ...], fresh: bool, train, load, progress: Progress) -> dict:
    """Each method's run in ``out``/``prefix``-METHOD: reused when finished (unless ``fresh``), else trained by
    ``train(path, method)``; loaded by ``load(path)``."""
    import shutil

    runs = {}
    for method in methods:
        path = out / f"{prefix}-{method}"
        if fresh or not (path / "theta.safetensors").is_file():
            shutil.rmtree(path, ignore_errors=True)
            progress(0, label=f"training {path}")
            train(path, method)
        runs[method] = load(path)
    return runs


def demo_keys(keys: Path):
    """The demo's own keys in ``keys``, made on first use: a release key (``metaedge``; the device trusts only it) and
    an operator key (``operator``; only it may deploy). Returns the release private key."""
    from metaedge.deploy.signing import generate, load_private

    for name in (RELEASE_KEY, OPERATOR_KEY):
        if not (keys / f"{name}.key").is_file():
            generate(keys, name)
    return load_private(keys / f"{RELEASE_KEY}.key")


@contextlib.contextmanager
def deployed_device(target: str, state: Path, keys: Path, bundle: Path, extra: tuple[str, ...] = (), python: str | None = None):
    """A device process of ``target`` (run by ``python``, default this interpreter) that trusts the demo's release key
    and is managed by its operator key (``demo_keys``), with ``bundle`` deployed and confirmed: yields its URL."""
    from metaedge.sdk.device_process import deployed

    trust = ("--trusted-key", str(keys / f"{RELEASE_KEY}.pub"), "--operator", str(keys / f"{OPERATOR_KEY}.pub"))
    with deployed(target, state, bundle, *trust, *extra, python=python, operator_key=keys / f"{OPERATOR_KEY}.key") as (_, url):
        yield url


def device_table(device: dict) -> str:
    rows = []
    for r in device["rows"]:
        vs = r["vs_model_based"]
        mark = "*" if vs["ci95"][1] < 0 else "-" if vs["ci95"][0] > 0 else " "
        rows.append(
            [
                str(r["pilots"]),
                f"{r['device']['ser']:.4f}{mark}",
                f"{r['host']['ser']:.4f}",
                f"{r['learned']['ser']:.4f}",
                f"{r['model_based']['ser']:.4f}",
                f"{r['classical_frames']}/{device['devices']}",
                f"{r['device_us']['p50']:.0f}",
                f"{r['round_trip_us']['p50']:.0f}",
            ]
        )
    head = (
        f"{device['algo']} deployed to a simulated {device['target']} device ({device['bundle_bytes']:,}-byte bundle): "
        f"the same {device['devices']} devices × {device['payload']} symbols, adapted on the device"
    )
    table = format_table(["pilots", "device SER", "host SER", "learned alone", "model-based", "classical frames", "device µs", "round trip µs"], rows)
    return (
        head
        + "\n"
        + table
        + "\ndevice and host: each frame decided by the adapted receiver or the bundle's classical one, whichever splits it "
        + f"better (bundle-format §6.2)\n*: fewer errors than model-based (paired, 95 %); written: {device['plot']}"
    )
