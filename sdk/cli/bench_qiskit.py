"""``metaedge bench qiskit``: Born-machine quality, calibration, noise gap and cost, in one JSON report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command, add_seed, output_dir, positive_int, str_list
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge bench qiskit --json                        # trains meta and joint circuits first (~20 s), then measures
  metaedge bench qiskit --meta runs/born-meta --joint runs/born-joint --out runs/bench-qiskit
  metaedge bench qiskit --targets ideal --device-frames 10 --exact-devices 200   # quick look
"""


def register(benches) -> None:
    q = add_command(
        benches,
        "qiskit",
        help="Born-machine receivers: SER, log-loss, ECE, noise gap, circuits/shots/time",
        description="Adapts the meta-learned prior, the jointly learned circuit and the uniform prior on "
        "the same pilots with the same shot budget: exactly on many new devices (with the "
        "point-estimate BNN as frequentist counterpart), and through the Qiskit backend on "
        "each target. Writes OUT/qiskit.json and OUT/reliability.png.",
        examples=EXAMPLES,
    )
    q.add_argument("--meta", type=Path, help="meta-learned run (metaedge train born); default: train one into OUT")
    q.add_argument("--joint", type=Path, help="jointly learned run (--algo joint); default: train one into OUT")
    q.add_argument("--out", type=output_dir, default=Path("runs/bench-qiskit"), help="output directory (default runs/bench-qiskit)")
    q.add_argument("--exact-devices", type=positive_int, default=500, help="new devices for the exact evaluation (default 500)")
    q.add_argument("--device-frames", type=positive_int, default=30, help="new devices per target through the backend (default 30)")
    q.add_argument("--targets", type=str_list, default=["ideal", "noisy:FakeManilaV2"], help="backends (default ideal,noisy:FakeManilaV2)")
    add_seed(q)
    q.add_argument("--json", action="store_true")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.backends.base import BackendError
    from metaedge.backends.qiskit.targets import parse_target
    from metaedge.sdk.families.demod.born.bench import PRIORS, bench_qiskit
    from metaedge.sdk.families.demod.born.training import load_born_run
    from metaedge.sdk.plots import plot_reliability
    from metaedge.sdk.rundir import write_json

    for target in args.targets:
        try:
            parse_target(target)
        except BackendError as e:
            raise UserError(f"--targets: {e}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for method in ("meta", "joint"):
        given = getattr(args, method)
        if given is None:
            given = args.out / f"born-{method}"
            if not given.exists():
                train_default(given, method, args.seed, args.quiet)
        runs[method] = load_born_run(given)
    bar = tqdm(
        total=len(args.targets) * len(PRIORS) * args.device_frames, desc="qiskit frames", disable=args.quiet or None, file=sys.stderr, unit="frame"
    )
    try:
        report = bench_qiskit(
            runs["meta"], runs["joint"], args.exact_devices, args.device_frames, tuple(args.targets), args.seed, progress=bar.update
        )
    finally:
        bar.close()
    report["command"] = "metaedge bench qiskit " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "qiskit"] else None
    exact = report["exact"]["results"]
    plot_reliability(
        {name: exact[name]["reliability"] for name in ("meta-learned", "point-estimate BNN", "joint")},
        args.out / "reliability.png",
        f"Born-machine BNN, {report['task']['pilots']} pilots, exact ensemble",
    )
    write_json(args.out / "qiskit.json", report)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(render(report))
    print(f"→ {args.out / 'qiskit.json'}, {args.out / 'reliability.png'}")
    return 0


def train_default(out: Path, method: str, seed: int, quiet: bool) -> None:
    from metaedge.sdk.families.demod.born.learning import InnerConfig
    from metaedge.sdk.families.demod.born.training import BornTrainConfig, default_task, make_spec, train_born

    task = default_task()
    print(f"bench: training the {method} circuit into {out}", file=sys.stderr)
    train_born(out, task, make_spec(task, 5, 2), InnerConfig(), BornTrainConfig(method=method, seed=seed))


def render(report: dict) -> str:
    from metaedge.sdk.stats import format_table

    rows = []
    for name, r in report["exact"]["results"].items():
        rows.append([name, "exact", f"{r['ser']:.4f}", f"{r['log_loss']:.4f}", f"{r['ece']:.4f}", "", ""])
    for target, d in report["device"].items():
        for name, r in d["results"].items():
            c = r["costs"]
            rows.append(
                [
                    name,
                    target,
                    f"{r['ser']:.4f}",
                    f"{r['log_loss']:.4f}",
                    f"{r['ece']:.4f}",
                    f"{r['seconds_per_frame'] * 1e3:.0f}",
                    f"{c['circuits_per_frame']}×/{c['shots_per_frame']:,}",
                ]
            )
    head = (
        f"{report['task']['pilots']} pilots, {report['inner']['steps']} steps, {report['inner']['shots']} shots per setting; "
        f"exact over {report['exact']['devices']} devices, targets over {next(iter(report['device'].values()))['devices'] if report['device'] else 0}"
    )
    return head + "\n" + format_table(["prior", "where", "SER", "log-loss", "ECE", "ms/frame", "circuits/shots per frame"], rows)
