"""``metaedge deploy`` (upload, test, trial boot, confirm) and ``metaedge run`` (frames from new devices)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command, add_device
from metaedge.sdk.errors import bundle_at
from metaedge.sdk.options import output_file, positive_int

EXAMPLES = """
examples:
  metaedge deploy bundles/cavia --device tcp://127.0.0.1:7410 --confirm
  metaedge deploy bundles/cavia --device tcp://10.0.0.7:7410 --operator-key keys/operator.key --confirm
  metaedge run --device tcp://127.0.0.1:7410 --frames 200 --pilots 8 --json
"""


def register(sub) -> None:
    d = add_command(
        sub,
        "deploy",
        help="upload a bundle to a device, trial-boot it, optionally confirm",
        description="Upload the packed bundle in chunks into the device's inactive slot, mark it for test, "
        "reset the device (trial boot with self-test) and, with --confirm, make it permanent.",
        examples=EXAMPLES,
    )
    d.add_argument("bundle", type=Path, metavar="BUNDLE")
    add_device(d)
    d.add_argument("--confirm", action="store_true", help="confirm after a successful trial boot")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(handler=run_deploy)
    r = add_command(
        sub,
        "run",
        help="stream frames from new simulated devices to a device; SER and latency",
        description="Frames from new simulated devices (meta-test split: fresh impairments and channels) "
        "for the running receiver's task (constellation and SNR from the device), one per "
        "device; reports SER, mean confidence, expected calibration error and latency percentiles. "
        "For a learned-link receiver each frame is a new channel, the transmitter sends the "
        "codebook from the device's task section, and the error rate is the BLER. For a "
        "channel predictor, --pilots is the training windows per frame, --symbols the "
        "predictions, and the score the NMSE; for a power allocator, --pilots slots to adapt "
        "on, --symbols slots to allocate, and the score the sum-rate.",
        examples=EXAMPLES,
    )
    add_device(r)
    r.add_argument("--frames", type=positive_int, default=100, help="frames, one per new simulated device (default 100)")
    r.add_argument("--pilots", type=positive_int, default=8, help="pilots per frame (default 8)")
    r.add_argument("--symbols", type=positive_int, default=1000, help="payload symbols per frame (default 1000)")
    r.add_argument("--seed", type=int, default=0, help="seed of the simulated devices (default 0)")
    r.add_argument("--reliability", type=output_file, metavar="PNG", help="write the device's reliability diagram (10 bins)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=run_frames)


def run_deploy(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.deploy.bundle import pack
    from metaedge.sdk.device_frames import deploy

    image = pack(bundle_at(args.bundle))
    with tqdm(total=len(image), unit="B", unit_scale=True, desc="upload", disable=args.quiet or None, file=sys.stderr) as bar:
        result = deploy(args.device, image, args.confirm, progress=bar.update, operator_key=args.operator_key)
    state = "confirmed" if args.confirm else "on trial (confirm with 'metaedge device confirm', or reset to revert)"
    print(f"deployed {args.bundle} ({len(image):,} B, sha256 {result['sha256'][:16]}…) to slot {result['slot']}: {state}")
    return 0


def run_frames(args: argparse.Namespace) -> int:
    from metaedge.sdk import families
    from metaedge.sdk.device_frames import stream

    report = stream(args.device, args.frames, args.pilots, args.symbols, args.seed, args.operator_key)
    if args.reliability and "reliability" in report:
        from metaedge.sdk.plots import plot_reliability

        plot_reliability({"device": report["reliability"]}, args.reliability, f"on the device, {args.pilots} pilots")
    print(json.dumps(report, indent=2) if args.json else families.get(report["task"]).report_text(report))
    return 0
