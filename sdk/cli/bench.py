"""``metaedge bench``: speed benchmarks with JSON output."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from metaedge.sdk.cli.options import add_declared
from metaedge.sdk.cli.parsing import add_command, add_seed, int_list, positive_int, read_bundle_arg, str_list
from metaedge.sdk.errors import UserError

DECLARED = tuple(  # modules whose BENCH command is generated from its options
    f"metaedge.sdk.families.{name}.config" for name in ("link", "power", "prediction", "sinusoid", "demod.snn", "demod.born")
)
EXAMPLES = """
examples:
  metaedge bench meta-train
  metaedge bench meta-train --json > bench.json
  metaedge bench meta-train --algos fomaml --tasks 32 --repeats 100 --no-compile
  metaedge bench qiskit --json
  metaedge bench loihi --json
"""


def register(sub) -> None:
    p = add_command(sub, "bench", help="speed benchmarks (JSON with --json)")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK", parser_class=type(p))
    m = add_command(
        benches,
        "meta-train",
        help="batched core vs per-task loop: tasks/s and meta-gradient agreement",
        description="Times one meta-gradient of the batched core (eager and torch.compile'd) against "
        "the per-task loop of the incumbent libraries on the same tasks, and checks that "
        "both give the same meta-gradient (within 1e-5).",
        examples=EXAMPLES,
    )
    m.add_argument("--algos", type=str_list, default=["fomaml", "maml"], help="algorithms, or 'all' (default fomaml,maml)")
    m.add_argument(
        "--memory-steps",
        type=int_list,
        default=[],
        metavar="K,K,...",
        help="also measure peak memory of maml, fomaml and imaml at these inner step counts (e.g. 1,5,10)",
    )
    m.add_argument("--tasks", type=int_list, default=[5, 32], help="tasks per batch (default 5,32)")
    m.add_argument("--repeats", type=positive_int, default=30, help="timed repeats per configuration (default 30)")
    m.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd variant (saves ~30 s per configuration)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(handler=run_meta_train)
    d = add_command(
        benches,
        "device",
        help="device-side cost of a frame: ONNX Runtime vs eager torch, protocol round trip",
        description="Times one frame (reset, K adaptation steps on the pilots, inference on the payload) "
        "on one core with the ONNX backend (ONNX Loop, IO binding, step loop) and with eager torch, "
        "alternating per repeat; then deploys the bundle to a real device process and times "
        "frames through the protocol and reports its peak memory.",
        examples="examples:\n  metaedge bench device --bundle bundles/cavia --json\n  metaedge bench device --bundle bundles/cavia --inner-steps 5",
    )
    d.add_argument("--bundle", type=Path, required=True, help="an exported bundle (metaedge export)")
    d.add_argument("--pilots", type=positive_int, default=8)
    d.add_argument("--symbols", type=positive_int, default=1000)
    d.add_argument("--inner-steps", type=positive_int, default=None, help="adaptation steps (default: the bundle's)")
    d.add_argument("--repeats", type=positive_int, default=300)
    d.add_argument("--frames", type=positive_int, default=200, help="frames through the protocol (default 200)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=run_device)
    register_powercut(benches)
    register_fuzz(benches)
    register_soak(benches)
    from metaedge.sdk.cli import bench_algorithms, bench_shift

    bench_algorithms.register(benches)
    for module in DECLARED:
        add_declared(benches, importlib.import_module(module).BENCH, add_command)
    bench_shift.register(benches)


def register_powercut(benches) -> None:
    p = add_command(
        benches,
        "powercut",
        help="cut power at every flash write of an update and a revert; count failures",
        description="Runs a full update (upload, test, trial boot, confirm) and a revert on a simulated "
        "device and cuts power at every flash write, before it and torn halfway (trailer "
        "writes also torn at their magic and flag bytes); after each cut the device reboots "
        "and must run a verified image that decodes a frame exactly as that image does. Then it "
        "records the writes and fsyncs of each scenario and boots crash states that keep every "
        "synced write and a random subset of the unsynced sectors (ALICE/CrashMonkey style); the "
        "counter floor must never drop below what was durable.",
        examples="examples:\n  metaedge bench powercut --bundle runs/demo/bundle --json\n"
        "  metaedge bench powercut --bundle runs/demo/bundle --crash-states 0   # cuts only",
    )
    p.add_argument("--bundle", type=Path, required=True, help="the image to update from (a second one is derived from it)")
    p.add_argument("--crash-states", type=int, default=1000, help="crash states to boot, over both scenarios (default 1000; 0: none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_powercut)


def run_powercut(args: argparse.Namespace) -> int:
    import contextlib

    from tqdm import tqdm

    from metaedge.sdk.bench.powercut import bench_powercut

    with contextlib.ExitStack() as bars:

        def progress(label: str):
            return bars.enter_context(tqdm(desc=label, disable=None, file=sys.stderr)).update

        if args.crash_states < 0:
            raise UserError(f"--crash-states {args.crash_states} must be 0 or more")
        report = bench_powercut(read_bundle_arg(args.bundle), args.crash_states, progress)
    reports = report["scenarios"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in reports:
            what = "crash states booted" if "crash" in r["scenario"] else "injected cuts"
            print(f"{r['scenario']}: {r['writes']} flash writes, {r['cuts']} {what}, {r['failures']} failures")
        print(f"total: {report['cuts']} cuts and crash states, {report['failures']} failures")
    return 0 if report["failures"] == 0 else 1


def register_fuzz(benches) -> None:
    p = add_command(
        benches,
        "fuzz",
        help="mutated inputs against every reader of untrusted bytes; crashes and hangs",
        description="Feeds seeded mutations of a valid packed bundle, its manifest, a safetensors file "
        "and a protocol message to their readers; each must accept or refuse with its own "
        "typed error. Reports crashes (any other exception) and hangs (> 1 s).",
        examples="examples:\n  metaedge bench fuzz --bundle runs/demo/bundle --count 100000 --json",
    )
    p.add_argument("--bundle", type=Path, required=True, help="a valid bundle: the seed of the mutations")
    p.add_argument("--count", type=positive_int, default=100_000, help="mutated inputs in all (default 100000)")
    add_seed(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_fuzz)


def run_fuzz(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.sdk.bench.fuzz import bench_fuzz

    bundle = read_bundle_arg(args.bundle)
    with tqdm(total=args.count, desc="fuzz", disable=None, file=sys.stderr) as bar:
        report = bench_fuzz(bundle, args.count, args.seed, progress=bar.update)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, t in report["targets"].items():
            print(
                f"{name:<17} {t['inputs']:>7} inputs: {t['accepted']:>6} accepted, {t['refused']:>7} refused, "
                f"{t['crashes']} crashes, {t['hangs']} hangs, slowest {t['max_s'] * 1e3:.1f} ms"
            )
        total = report["total"]
        print(f"total: {total['inputs']} inputs, {total['crashes']} crashes, {total['hangs']} hangs")
    return 0 if report["total"]["crashes"] == report["total"]["hangs"] == 0 else 1


def register_soak(benches) -> None:
    p = add_command(
        benches,
        "soak",
        help="many frames against one device process: throughput, latency, memory, fds (--attack: under attack)",
        description="Streams frames to one device process and reports throughput, round-trip percentiles, memory "
        "growth and file descriptors. With --attack the device runs a signed bundle whose graph hangs on a trigger "
        "input, an attacker holds 200 idle and 100 half-sent 8 MiB connections for the whole run and sends one "
        "trigger frame halfway, and an authenticated operator's frames are timed (target: p99 under 50 ms, device "
        "and receiver under 512 MiB resident).",
        examples="examples:\n  metaedge bench soak --bundle runs/demo/bundle --frames 100000 --json\n"
        "  metaedge bench soak --bundle runs/demo/bundle --frames 20000 --attack --json",
    )
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--frames", type=positive_int, default=100_000, help="frames in all (default 100000)")
    p.add_argument("--pilots", type=positive_int, default=8)
    p.add_argument("--symbols", type=positive_int, default=100, help="payload symbols per frame (default 100)")
    p.add_argument("--attack", action="store_true", help="under attack (see the description)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_soak)


def run_soak(args: argparse.Namespace) -> int:
    import tempfile

    from tqdm import tqdm

    from metaedge.sdk.bench.device import bench_soak

    read_bundle_arg(args.bundle)
    with tempfile.TemporaryDirectory() as work, tqdm(total=args.frames, desc="soak", disable=None, file=sys.stderr) as bar:
        if args.attack:
            from metaedge.sdk.bench.attack_soak import bench_attack

            report = bench_attack(args.bundle, args.frames, args.pilots, args.symbols, Path(work), progress=bar.update)
        else:
            report = bench_soak(args.bundle, args.frames, args.pilots, args.symbols, Path(work), progress=bar.update)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.attack:
        lat, attack = report["round_trip_us"], report["attack"]
        print(
            f"{report['frames']} operator frames under attack in {report['seconds']:.0f} s: round trip p50 {lat['p50']:.0f} µs, "
            f"p99 {lat['p99']:.0f} µs, max {lat['max'] / 1e3:.0f} ms; peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB; "
            f"attacker opened {attack['connections_opened']} connections, {attack['refused_busy']} refused busy; "
            f"trigger frame: {attack['trigger'].get('answer')}"
        )
    else:
        lat = report["round_trip_us"]
        print(
            f"{report['frames']} frames in {report['seconds']:.0f} s ({report['frames_per_s']:.0f}/s); round trip p50 "
            f"{lat['p50']:.0f} µs, p99 {lat['p99']:.0f} µs, p99.9 {lat['p99.9']:.0f} µs; RSS growth "
            f"{report['rss_growth_percent']:+.2f} %; fds {report['fds_after_warmup']} → {report['fds_end']}"
        )
    return 0 if report.get("p99_met", True) and report.get("memory_met", True) else 1


def run_device(args: argparse.Namespace) -> int:
    import tempfile

    from metaedge.sdk.bench.device import bench_device, bench_round_trip

    bundle = read_bundle_arg(args.bundle)
    report = bench_device(bundle, args.repeats, args.pilots, args.symbols, args.inner_steps)
    with tempfile.TemporaryDirectory() as state:
        report["protocol"] = bench_round_trip(args.bundle, args.frames, args.pilots, args.symbols, Path(state))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    f, med = report["frame"], report["median_us"]
    print(f"one frame: {f['pilots']} pilots, {f['steps']} step(s), {f['symbols']} symbols, 1 thread, median of {report['repeats']}")
    for name, us in med.items():
        print(f"  {name:<26} {us:8.1f} µs   p90 {report['p90_us'][name]:8.1f} µs")
    p = report["protocol"]
    ratio = (
        f"torch / onnx ({report['device_mode']}, the device's mode): {report['torch_over_onnx']:.1f}× (at most "
        f"{report['torch_over_torch_forward_only']:.1f}× for a device whose adaptation were free and whose inference "
        f"were as fast as torch's)"
        if report["torch_over_onnx"]
        else f"{report['torch_unavailable']}; device mode {report['device_mode']}"
    )
    print(
        f"{ratio}; the device's frame with the selection costs {report['selection_over_guard_only']:.2f}× the guard alone on the field's "
        f"frames ({report['classical_share']['receiver_frame']:.0%} decided by the classical receiver), "
        f"{report['selection_worst_over_guard_only']:.2f}× on random samples; bundle {report['bundle_bytes']:,} B; "
        f"round trip median {p['round_trip_us']['p50']:.0f} µs (device {p['device_us']['p50']:.0f} µs) with the receiver "
        f"contained, {p['in_process']['round_trip_us']['p50']:.0f} µs in the device process; peak RSS of device and receiver "
        f"{p['device_peak_rss_bytes'] / 2**20:.1f} MiB ({p['in_process']['device_peak_rss_bytes'] / 2**20:.1f} MiB in one process)"
    )
    return 0


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run_meta_train(args: argparse.Namespace) -> int:
    from metaedge.sdk.bench.meta_train import bench_meta_train
    from metaedge.sdk.meta import ALGORITHMS
    from metaedge.sdk.stats import format_table

    algos = list(ALGORITHMS) if args.algos == ["all"] else args.algos
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown:
        raise UserError(f"--algos: unknown {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)} or all")
    report = bench_meta_train(
        algos,
        args.tasks,
        args.repeats,
        compile=not args.no_compile,
        progress=lambda what: print(f"bench: {what} done", file=sys.stderr),
        memory_steps=args.memory_steps,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = []
    for r in report["results"]:
        for variant in ("batched", "compiled"):
            if variant in r["median_ms"]:
                diff = r["max_abs_grad_diff_vs_loop"]
                rows.append(
                    [
                        f"{r['algo']} × {r['tasks']}",
                        variant,
                        f"{r['median_ms'][variant]:.2f}",
                        f"{r['median_ms']['loop']:.2f}",
                        f"{r['tasks_per_s'][variant]:.0f}",
                        f"{r['speedup_vs_loop'][variant]:.1f}×",
                        "random" if diff is None else f"{diff[variant]:.1e}",
                        mib(r["peak_memory_mib"]),
                    ]
                )
    env = report["environment"]
    print(f"meta-gradient, median of {report['repeats']} (torch {env['torch']}, {env['threads']} threads)")
    print(format_table(["algo × tasks", "core", "core ms", "loop ms", "tasks/s", "speedup", "max |Δgrad|", "peak MiB"], rows))
    if report["memory_vs_inner_steps"]:
        print("\npeak memory of one meta-gradient vs inner steps (MiB)")
        print(
            format_table(
                ["algo", "inner steps", "tasks", "peak MiB"],
                [[m["algo"], str(m["inner_steps"]), str(m["tasks"]), mib(m["peak_memory_mib"])] for m in report["memory_vs_inner_steps"]],
            )
        )
    return 0
