"""``metaedge bench loihi``: spiking-receiver quality after on-chip adaptation, and Lava's speed, in one JSON report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command, add_seed, output_dir, positive_int
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge bench loihi --json                  # trains what is missing into runs/bench-loihi first (~2 min)
  metaedge bench loihi --devices 200 --lava-frames 2 --lava-payload 50     # quick look
  metaedge bench loihi --fomaml runs/snn-fomaml --onnx runs/qpsk-metasgd --no-lava
  metaedge bench loihi --channel phase --out runs/bench-loihi-phase      # residual carrier phase within ±60°
  metaedge bench loihi --order 16 --pilots 16 --out runs/bench-loihi-16qam --no-lava
"""
METHODS = ("fomaml", "reptile", "joint")
ONNX_ITERATIONS = 2000


def register(benches) -> None:
    b = add_command(
        benches,
        "loihi",
        help="spiking receivers: SER after on-chip adaptation per start, Lava speed",
        description="Adapts the FOMAML-, Reptile- and jointly trained θ, θ = 0 and a random θ with the "
        "three-factor rule on the same pilots of many new devices (host reference, exactly "
        "Lava's dynamics), next to the ONNX receiver (Meta-SGD MLP) and the model-based "
        "receiver; then runs frames on Lava and times them. Writes OUT/loihi.json.",
        examples=EXAMPLES,
    )
    for method in METHODS:
        b.add_argument(f"--{method}", type=Path, help=f"{method} run (metaedge train snn --algo {method}); default: train into OUT")
    b.add_argument(
        "--onnx",
        type=Path,
        help="an MLP run for the same task (metaedge train demod --order 4 --pilots 4 --algo metasgd); default: train one into OUT",
    )
    b.add_argument("--out", type=output_dir, default=Path("runs/bench-loihi"), help="output directory (default runs/bench-loihi)")
    b.add_argument(
        "--channel",
        default="rayleigh",
        choices=("rayleigh", "phase"),
        help="task of the runs trained here: rayleigh (default) or a residual phase (--phase-max-deg)",
    )
    b.add_argument("--phase-max-deg", type=float, default=60.0, help="phase channel: range ± degrees (default 60)")
    b.add_argument("--order", type=int, default=4, help="constellation of the runs trained here: 4 (QPSK, default) or 16")
    b.add_argument("--pilots", type=positive_int, default=4, help="pilots per frame of the runs trained here (default 4)")
    b.add_argument("--devices", type=positive_int, default=500, help="new devices for the quality comparison (default 500)")
    b.add_argument("--payload", type=positive_int, default=1000, help="payload symbols per device (default 1000)")
    b.add_argument("--lava-frames", type=positive_int, default=5, help="frames run on Lava (default 5)")
    b.add_argument("--lava-payload", type=positive_int, default=100, help="payload symbols per Lava frame (default 100)")
    b.add_argument(
        "--fixed-frames",
        type=int,
        default=20,
        help="frames run on Lava in both floating and fixed point, for the SER cost of fixed point (default 20; 0 skips it)",
    )
    b.add_argument("--no-lava", action="store_true", help="skip the Lava part (quality only)")
    add_seed(b)
    b.add_argument("--json", action="store_true")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.sdk.families.demod.receivers import ModelBasedReceiver
    from metaedge.sdk.families.demod.snn.bench import paired, quality, starts_of, test_frames
    from metaedge.sdk.families.demod.snn.training import snn_task
    from metaedge.sdk.families.demod.task import DemodTasks
    from metaedge.sdk.lava_env import lava_python
    from metaedge.sdk.rundir import write_json

    interpreter = None if args.no_lava else lava_python()
    if args.lava_payload > args.payload:
        raise UserError(f"--lava-payload {args.lava_payload} exceeds --payload {args.payload}")
    task = snn_task(args.order, args.pilots, channel=args.channel, phase_max_deg=args.phase_max_deg)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = spiking_runs(args, task)
    main_run = runs["fomaml"]
    onnx_dir = args.onnx or args.out / "onnx-metasgd"
    if args.onnx is None and not onnx_dir.exists():
        train_onnx(onnx_dir, main_run.task, args.seed)
    receivers = {
        "ONNX receiver (Meta-SGD MLP)": onnx_receiver(onnx_dir, main_run.task),
        "model-based (MMSE + ML)": ModelBasedReceiver(DemodTasks(main_run.task).constellation, main_run.task.noise_var, main_run.task.channel_var),
    }
    frame = test_frames(main_run, args.devices, args.payload, args.seed + 1000)
    starts = starts_of(runs, args.seed)
    with tqdm(total=len(starts) + len(receivers), desc="loihi quality", disable=args.quiet or None, file=sys.stderr) as bar:
        q = quality(main_run, starts, frame, receivers, progress=bar.update)
    names = list(q["results"])
    report = {
        "task": {
            "order": main_run.task.order,
            "snr_db": main_run.task.snr_db,
            "pilots": main_run.task.pilots,
            "channel": main_run.task.channel,
            "phase_max_deg": main_run.task.phase_max_deg,
        },
        "snn": main_run.spec.to_dict(),
        "devices": args.devices,
        "payload": args.payload,
        "seed": args.seed,
        "runs": {m: str(r.path) for m, r in runs.items()} | {"onnx": str(onnx_dir)},
        "quality": q["results"],
        "paired": {
            "fomaml θ": paired(q["per_device"], "fomaml θ", [n for n in names if n != "fomaml θ"]),
            "reptile θ": paired(q["per_device"], "reptile θ", [n for n in names if n != "reptile θ"]),
        },
    }
    if interpreter:
        report.update(lava_report(args, main_run, frame, interpreter))
    report["command"] = "metaedge bench loihi " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "loihi"] else None
    write_json(args.out / "loihi.json", report)
    print(json.dumps(report, indent=2) if args.json else render(report))
    if not args.json:
        print(f"→ {args.out / 'loihi.json'}")
    return 0


def spiking_runs(args: argparse.Namespace, task) -> dict:
    """The runs compared, by method: given on the command line, found in --out, or trained there; one configuration."""
    from metaedge.sdk.families.demod.snn.training import load_snn_run

    runs = {}
    for method in METHODS:
        given = getattr(args, method) or args.out / f"snn-{method}"
        if getattr(args, method) is None and not given.exists():
            train_default(given, method, args.seed, task)
        runs[method] = load_snn_run(given)
    if any(r.task != runs["fomaml"].task or r.spec != runs["fomaml"].spec for r in runs.values()):
        raise UserError("the runs were trained on different tasks or networks; compare runs of one configuration")
    return runs


def lava_report(args: argparse.Namespace, main_run, frame, interpreter: str) -> dict:
    """Frames of the FOMAML bundle on Lava (float, and fixed point): speed and agreement with the host."""
    from metaedge.sdk.families.demod.snn.bench import lava_speed
    from metaedge.sdk.targets import export

    bundle = args.out / "bundle-fomaml"
    if not bundle.exists():
        export("loihi", main_run.path, bundle)
    print(
        f"bench: {max(args.lava_frames, args.fixed_frames)} frames on Lava, {args.fixed_frames} of them also in fixed point (this is the slow part)",
        file=sys.stderr,
    )
    try:
        speed = lava_speed(main_run, bundle, frame, args.lava_frames, args.lava_payload, interpreter, args.fixed_frames)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    return {**({"fixed_point": speed.pop("fixed_point")} if "fixed_point" in speed else {}), "speed": speed}


def train_default(out: Path, method: str, seed: int, task=None) -> None:
    from metaedge.backends.loihi.network import SnnSpec
    from metaedge.sdk.families.demod.snn.training import SnnTrainConfig, default_task, train_snn

    print(f"bench: training the {method} start into {out}", file=sys.stderr)
    task = task or default_task()
    train_snn(out, task, SnnSpec(classes=task.order), SnnTrainConfig(method=method, seed=seed))


def train_onnx(out: Path, task, seed: int) -> None:
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer

    print(f"bench: training the ONNX receiver (Meta-SGD, {ONNX_ITERATIONS} iterations) into {out}", file=sys.stderr)
    # the outer step and patience of the receiver behind the published loihi figures (docs/results/loihi.md)
    train = TrainConfig(algo="metasgd", iterations=ONNX_ITERATIONS, outer_lr=1e-3, patience=8, seed=seed)
    trainer = Trainer(out, task.replace(val_pilots=32), train)
    trainer.start(resume=False)
    trainer.run()


def onnx_receiver(path: Path, task):
    import torch

    from metaedge.sdk.families.demod.receivers import LearnedReceiver
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.rundir import load_run

    run = load_run(path)
    run_task, train = configs_from_run(run.config)
    if run_task.order != task.order or run_task.snr_db != task.snr_db or run_task.channel != task.channel:
        raise UserError(f"--onnx {path} was trained on another task than the spiking runs (order, SNR and channel must match)")
    return LearnedReceiver("ONNX receiver", {k: torch.from_numpy(v) for k, v in run.theta.items()}, train.inner(), task.order)


def render(report: dict) -> str:
    from metaedge.sdk.stats import format_table

    rows = []
    for name, r in report["quality"].items():
        adapted = report["paired"]["fomaml θ"].get(name)
        rows.append(
            [
                name,
                r["where"],
                f"{r['ser']:.4f}",
                f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]",
                f"{r['without_adaptation']:.4f}" if "without_adaptation" in r else "",
                f"{adapted['ser_difference']:+.4f}" if adapted else "",
            ]
        )
    t = report["task"]
    channel = t["channel"] + (f" ±{t['phase_max_deg']:g}°" if t["channel"] == "phase" else "")
    head = (
        f"{t['order']}-QAM" if t["order"] != 4 else "QPSK"
    ) + f", {t['pilots']} pilots, {t['snr_db']:g} dB, {channel}; {report['devices']} new devices × {report['payload']} symbols"
    lines = [head, format_table(["start / receiver", "where", "SER", "95 % CI", "no adaptation", "fomaml − this"], rows)]
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
    return "\n".join(lines)
