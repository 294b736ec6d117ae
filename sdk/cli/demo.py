"""``metaedge demo``: the main job — meta-train every algorithm, evaluate, print the SER table.

Runs land in ``--out`` (default runs/demo); a finished run with the same configuration is
reused, an interrupted one resumed, so running the demo twice costs only the evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command, add_reporting
from metaedge.sdk.errors import UserError
from metaedge.sdk.options import output_dir, positive_int, str_list

ALGOS = ["maml", "fomaml", "reptile", "cavia", "metasgd", "joint"]
PILOTS = [1, 2, 4, 8, 16, 32]
TRAIN_PILOTS = (1, 32)  # each meta-batch draws its pilot count log-uniformly from this range
RELEASE_KEY, OPERATOR_KEY = "metaedge", "operator"
ADAPT_STEPS = 1  # the common adaptation budget at meta-test: one SGD step, as published and as trained
EXAMPLES = """
examples:
  metaedge demo                       # ~4 min on 2 CPU cores: 6 algorithms, SER table, device run, plots
  metaedge demo --algos maml,cavia --iterations 20000 --out runs/long
  metaedge demo --fresh               # retrain instead of reusing runs/demo
  metaedge demo --target none         # host evaluation only, no device
  metaedge demo --target qiskit       # ~3 min: Born-machine BNN meta-learned, deployed to a noisy FakeManilaV2 device
  metaedge demo --target loihi        # ~2 min: spiking receiver, rule-based FOMAML, deployed to a Lava (Loihi 2) device
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "demo",
        help="meta-train every algorithm, evaluate, print the SER table",
        description="Meta-train MAML, FOMAML, Reptile, CAVIA, Meta-SGD and joint learning on the "
        "demodulation task (monograph §5.2) with 1-32 pilots per frame, then adapt each with one "
        "SGD step on the pilots of 100 fresh devices and measure the SER on 10^4 payload symbols, "
        "next to training from scratch and the model-based receiver (MMSE + ML); then deploy "
        "Meta-SGD to a simulated device and run the same frames there.",
        examples=EXAMPLES,
    )
    p.add_argument("--out", type=output_dir, default=Path("runs/demo"), help="where the runs go (default runs/demo)")
    p.add_argument("--algos", type=str_list, default=ALGOS, help=f"algorithms (default {','.join(ALGOS)})")
    p.add_argument("--iterations", type=positive_int, help="meta-iterations per algorithm (default: each recipe's)")
    p.add_argument("--devices", type=positive_int, default=100, help="meta-test devices (default 100)")
    p.add_argument("--payload", type=positive_int, default=10_000, help="payload symbols per device (default 10000)")
    p.add_argument("--fresh", action="store_true", help="retrain even if --out holds finished runs")
    p.add_argument(
        "--target",
        choices=("onnx", "qiskit", "loihi", "none"),
        default="onnx",
        help="after the host evaluation, export the --device-algo run, deploy it to a simulated device of "
        "this target and run the same frames there (default onnx; none: host only); qiskit runs the "
        "Born-machine demo instead (QPSK, meta vs joint vs uniform prior, a noisy FakeManilaV2 device); "
        "loihi the spiking-receiver demo (three-factor rule on a Lava device)",
    )
    p.add_argument("--device-algo", default="metasgd", help="which run goes to the device (default metasgd)")
    add_reporting(p, "the evaluation")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.cli.evaluate import ser_table
    from metaedge.sdk.families.demod.runs import train_or_reuse
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig
    from metaedge.sdk.meta import get_algorithm
    from metaedge.sdk.plots import plot_ser

    if args.target == "qiskit":
        from metaedge.sdk.cli.demo_qiskit import run_qiskit_demo

        return run_qiskit_demo(args)
    if args.target == "loihi":
        from metaedge.sdk.cli.demo_loihi import run_loihi_demo

        return run_loihi_demo(args)
    for algo in args.algos:
        get_algorithm(algo)  # unknown names fail before any training
    task = DemodConfig(pilots=TRAIN_PILOTS[1])
    runs = []
    for algo in args.algos:
        path = args.out / algo
        train = TrainConfig(algo=algo, pilots_min=TRAIN_PILOTS[0], iterations=args.iterations)
        state = train_or_reuse(path, task, train, args.fresh, args.quiet)
        if not args.quiet:
            print(f"{algo}: best validation SER {state['best_val_ser']:.4f} at iteration {state['best_iteration']}")
        runs.append(path)
    report = host_evaluation(args, runs)
    plot_ser(report["methods"], PILOTS, args.out / "ser.png", title="16-QAM, 20 dB, I/Q imbalance, Rayleigh")
    if args.target != "none":
        if args.device_algo not in args.algos:
            raise UserError(f"--device-algo {args.device_algo} is not among --algos {','.join(args.algos)}")
        report["device"] = device_stage(args, report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(ser_table(report) + f"\n\nwritten: {args.out / 'ser.json'}, {args.out / 'ser.png'}")
        if "device" in report:
            print("\n" + device_table(report["device"]))
    (args.out / "ser.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def host_evaluation(args: argparse.Namespace, runs: list[Path]) -> dict:
    """Every run on the host, with the device algorithm's receiver also as its device decides each frame (learned or
    classical, bundle-format §6.2), and the equivalent ``metaedge eval`` command."""
    from metaedge.backends.selection import SELECT
    from metaedge.sdk.families.demod.runs import evaluate_runs

    selecting = [args.out / args.device_algo] if args.target == "onnx" and args.device_algo in args.algos else []
    select = SELECT if selecting else None
    report = evaluate_runs(
        runs,
        PILOTS,
        args.devices,
        args.payload,
        inner_steps=ADAPT_STEPS,
        scratch_lr=0.1,
        baselines=True,
        seed=None,
        quiet=args.quiet,
        select=select,
        selecting=selecting,
    )
    report["command"] = (
        "metaedge eval "
        + " ".join(str(r) for r in runs)
        + f" --inner-steps {ADAPT_STEPS} --devices {args.devices} --payload {args.payload}"
        + (" --select" if selecting else "")
    )
    return report


def device_stage(args: argparse.Namespace, host: dict) -> dict:
    """Export, start a device process, deploy and confirm, stream the meta-test frames, stop the device."""
    import shutil

    from metaedge.deploy.client import DeviceClient
    from metaedge.sdk.families.demod.receivers import ModelBasedReceiver
    from metaedge.sdk.families.demod.task import DemodTasks
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.plots import plot_ser
    from metaedge.sdk.rundir import read_config
    from metaedge.sdk.targets import export

    run = args.out / args.device_algo
    bundle_dir, state, keys = args.out / "bundle", args.out / "device", args.out / "keys"
    for path in (bundle_dir, state):
        shutil.rmtree(path, ignore_errors=True)
    # the same adaptation budget as the host evaluation; signed, as every device requires
    export("onnx", run, bundle_dir, inner_steps=ADAPT_STEPS, key=demo_keys(keys))
    task, train = configs_from_run(read_config(run))
    tasks = DemodTasks(task, seed=train.seed)
    devs = tasks.devices("test", args.devices)
    frame = tasks.frames(devs, max(PILOTS), args.payload, tasks.rng("test", 1))  # the frames 'metaedge eval' used
    reference = ModelBasedReceiver(tasks.constellation, task.noise_var, task.channel_var)
    learned = next(m for m in host["methods"] if m["run"] == str(run) and m["algo"] == args.device_algo)["ser"]
    selecting = next(m for m in host["methods"] if m["run"] == str(run) and m["algo"] == f"{args.device_algo} + selection")["ser"]
    with deployed_device(args.target, state, keys, bundle_dir) as url:
        with DeviceClient(url) as client:
            rows = [device_row(client, url, frame, p, reference, selecting[str(p)], learned[str(p)]) for p in PILOTS]
    curves = [
        {"name": f"{args.device_algo} on the {args.target} device", "algo": args.device_algo, "ser": {str(r["pilots"]): r["device"] for r in rows}},
        {"name": "model-based (MMSE + ML)", "algo": "model-based", "ser": {str(r["pilots"]): r["model_based"] for r in rows}},
    ]
    plot_ser(curves, PILOTS, args.out / "device-ser.png", title=f"{args.device_algo} adapted on the simulated {args.target} device")
    return {
        "target": args.target,
        "algo": args.device_algo,
        "bundle": str(bundle_dir),
        "bundle_bytes": sum(f.stat().st_size for f in bundle_dir.iterdir()),
        "devices": args.devices,
        "payload": args.payload,
        "rows": rows,
        "plot": str(args.out / "device-ser.png"),
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


def demo_keys(keys: Path):
    """The demo's own keys in ``keys``, made on first use: a release key (``metaedge``; the device trusts only it) and
    an operator key (``operator``; only it may deploy). Returns the release private key."""
    from metaedge.deploy.signing import generate, load_private

    for name in (RELEASE_KEY, OPERATOR_KEY):
        if not (keys / f"{name}.key").is_file():
            generate(keys, name)
    return load_private(keys / f"{RELEASE_KEY}.key")


@__import__("contextlib").contextmanager
def deployed_device(target: str, state: Path, keys: Path, bundle: Path, extra: tuple[str, ...] = (), python: str | None = None):
    """A device process of ``target`` (run by ``python``, default this interpreter) that trusts the demo's release key
    and is managed by its operator key (``demo_keys``), with ``bundle`` deployed and confirmed: yields its URL."""
    from metaedge.sdk.device_process import deployed

    trust = ("--trusted-key", str(keys / f"{RELEASE_KEY}.pub"), "--operator", str(keys / f"{OPERATOR_KEY}.pub"))
    with deployed(target, state, bundle, *trust, *extra, python=python, operator_key=keys / f"{OPERATOR_KEY}.key") as (_, url):
        yield url


def device_table(device: dict) -> str:
    from metaedge.sdk.stats import format_table

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
