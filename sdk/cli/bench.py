"""``metaedge bench``: speed benchmarks with JSON output."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import int_list, positive_int, str_list
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge bench meta-train
  metaedge bench meta-train --json > bench.json
  metaedge bench meta-train --algos fomaml --tasks 32 --repeats 100 --no-compile
"""


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks (JSON with --json)")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK", parser_class=type(p))
    m = benches.add_parser("meta-train", help="batched core vs per-task loop: tasks/s and meta-gradient agreement",
                           description="Times one meta-gradient of the batched core (eager and torch.compile'd) against "
                                       "the per-task loop of the incumbent libraries on the same tasks, and checks that "
                                       "both give the same meta-gradient (within 1e-5).",
                           epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--algos", type=str_list, default=["fomaml", "maml"], help="fomaml and/or maml (default both)")
    m.add_argument("--tasks", type=int_list, default=[5, 32], help="tasks per batch (default 5,32)")
    m.add_argument("--repeats", type=positive_int, default=30, help="timed repeats per configuration (default 30)")
    m.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd variant (saves ~30 s per configuration)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(handler=run_meta_train)
    d = benches.add_parser("device", help="device-side cost of a frame: ONNX Runtime vs eager torch, protocol round trip",
                           description="Times one frame (reset, K adaptation steps on the pilots, inference on the payload) "
                                       "on one core with the ONNX backend (ONNX Loop, IO binding, step loop) and with eager torch, "
                                       "alternating per repeat; then deploys the bundle to a real device process and times "
                                       "frames through the protocol and reports its peak memory.",
                           epilog="examples:\n  metaedge bench device --bundle bundles/cavia --json\n"
                                  "  metaedge bench device --bundle bundles/cavia --steps 5",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--bundle", type=Path, required=True, help="an exported bundle (metaedge export)")
    d.add_argument("--pilots", type=positive_int, default=8)
    d.add_argument("--symbols", type=positive_int, default=1000)
    d.add_argument("--steps", type=positive_int, default=None, help="adaptation steps (default: the bundle's)")
    d.add_argument("--repeats", type=positive_int, default=300)
    d.add_argument("--frames", type=positive_int, default=200, help="frames through the protocol (default 200)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=run_device)


def run_device(args: argparse.Namespace) -> int:
    import tempfile

    from metaedge.deploy.bundle import BundleError, read_bundle
    from metaedge.sdk.bench_device import bench_device, bench_round_trip

    try:
        bundle = read_bundle(args.bundle)
    except BundleError as e:
        raise UserError(f"{args.bundle}: {e}") from None
    report = bench_device(bundle, args.repeats, args.pilots, args.symbols, args.steps)
    with tempfile.TemporaryDirectory() as state:
        report["protocol"] = bench_round_trip(args.bundle, args.frames, args.pilots, args.symbols, Path(state))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    f, med = report["frame"], report["median_us"]
    print(f"one frame: {f['pilots']} pilots, {f['steps']} step(s), {f['symbols']} symbols, 1 thread, median of {report['repeats']}")
    for name, us in med.items():
        print(f"  {name:<15} {us:8.1f} µs   p90 {report['p90_us'][name]:8.1f} µs")
    p = report["protocol"]
    print(f"torch / onnx: {report['torch_over_onnx']:.1f}×; bundle {report['bundle_bytes']:,} B; "
          f"round trip median {p['round_trip_us']['p50']:.0f} µs (device {p['device_us']['p50']:.0f} µs); "
          f"device peak RSS {p['device_peak_rss_bytes'] / 2**20:.1f} MiB")
    return 0


def run_meta_train(args: argparse.Namespace) -> int:
    from metaedge.sdk.bench import SECOND_ORDER, bench_meta_train
    from metaedge.sdk.cli.main import format_table

    unknown = [a for a in args.algos if a not in SECOND_ORDER]
    if unknown:
        raise UserError(f"--algos: {', '.join(unknown)} not benchmarked; choose from {', '.join(SECOND_ORDER)}")
    report = bench_meta_train(args.algos, args.tasks, args.repeats, compile=not args.no_compile,
                              progress=lambda what: print(f"bench: {what} done", file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = []
    for r in report["results"]:
        for variant in ("batched", "compiled"):
            if variant in r["median_ms"]:
                rows.append([f"{r['algo']} × {r['tasks']}", variant, f"{r['median_ms'][variant]:.2f}",
                             f"{r['median_ms']['loop']:.2f}", f"{r['tasks_per_s'][variant]:.0f}",
                             f"{r['speedup_vs_loop'][variant]:.1f}×", f"{r['max_abs_grad_diff_vs_loop'][variant]:.1e}"])
    env = report["environment"]
    print(f"meta-gradient, median of {report['repeats']} (torch {env['torch']}, {env['threads']} threads)")
    print(format_table(["algo × tasks", "core", "core ms", "loop ms", "tasks/s", "speedup", "max |Δgrad|"], rows))
    return 0
