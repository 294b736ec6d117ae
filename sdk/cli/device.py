"""``metaedge device``: run a simulated edge device, and manage one over its protocol."""

from __future__ import annotations

import argparse
import json

from metaedge.sdk.cli import serve
from metaedge.sdk.cli.parsing import add_command, add_device
from metaedge.sdk.device_frames import call, connect

EXAMPLES = """
examples:
  metaedge device serve --target onnx --state devices/dev1 --listen 127.0.0.1:7410 --trusted-key keys/metaedge.pub
  metaedge device list --device tcp://127.0.0.1:7410
  metaedge device confirm --device tcp://127.0.0.1:7410 --operator-key keys/operator.key
  metaedge device stats --device tcp://127.0.0.1:7410 --json
"""


def register(sub) -> None:
    p = add_command(sub, "device", help="run or manage a simulated edge device", examples=EXAMPLES)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(p))
    serve.register(actions)
    for name, help_text in (
        ("info", "target, profile and running image"),
        ("list", "the two image slots"),
        ("reset", "reboot: trial-boot a tested image, or revert an unconfirmed one"),
        ("confirm", "make the image on trial permanent"),
        ("stats", "frames served, latency, boot events"),
    ):
        a = add_command(actions, name, help=help_text)
        add_device(a)
        a.add_argument("--json", action="store_true")
        a.set_defaults(handler=run_management, op={"list": "image.list", "confirm": "image.confirm"}.get(name, name))


def run_management(args: argparse.Namespace) -> int:
    with connect(args.device, args.operator_key) as client:
        header, _ = call(client, args.op)
    header = {k: v for k, v in header.items() if k not in ("seq", "ok", "blobs")}
    if args.json:
        print(json.dumps(header, indent=2))
    elif args.op == "image.list":
        for image in header["images"]:
            flags = [f for f in ("active", "confirmed", "pending", "trial") if image[f]]
            desc = (
                f"{image.get('algorithm', '?')}, counter {image.get('security_counter', '?')}, release {image.get('release', 0)}, "
                f"{image['size']:,} B, sha256 {image['sha256'][:16]}…" + (f", expires {image['expires']}" if image.get("expires") else "")
                if image["valid"]
                else "empty"
            )
            print(f"slot {image['slot']}: {desc}  [{' '.join(flags)}]")
    else:
        print("\n".join(f"{k}: {v}" for k, v in header.items()))
    return 0
