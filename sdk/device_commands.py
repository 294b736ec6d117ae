"""The commands that talk to a running device — ``metaedge deploy``, ``run`` and ``device info|list|reset|confirm|
stats`` — declared once: their options (the flags) and what each runs. Torch-free."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.sdk.errors import bundle_at
from metaedge.sdk.options import Progress, command, option, output_file, positive_int, silent

OPERATOR_KEY_ENV = "METAEDGE_OPERATOR_KEY"
EXAMPLES = """
examples:
  metaedge deploy bundles/cavia --device tcp://127.0.0.1:7410 --confirm
  metaedge deploy bundles/cavia --device tcp://10.0.0.7:7410 --operator-key keys/operator.key --confirm
  metaedge run --device tcp://127.0.0.1:7410 --frames 200 --pilots 8 --json
  metaedge device stats --device tcp://127.0.0.1:7410 --json
"""


@dataclass(frozen=True, kw_only=True)
class DeviceRequest:
    """ask a device"""

    EXAMPLES: ClassVar[str] = EXAMPLES

    device: str = option(help="tcp://HOST:PORT")
    operator_key: Path | None = option(
        None,
        "operator's Ed25519 private key: signs every request, as a device started with --operator needs for deploy, test, reset "
        f"and confirm (default ${OPERATOR_KEY_ENV})",
        metavar="KEY",
    )

    def signer(self) -> Path | None:
        return self.operator_key or (Path(os.environ[OPERATOR_KEY_ENV]) if os.environ.get(OPERATOR_KEY_ENV) else None)


@dataclass(frozen=True, kw_only=True)
class DeployOptions(DeviceRequest):
    """upload a bundle to a device, trial-boot it, optionally confirm

    Upload the packed bundle in chunks into the device's inactive slot, mark it for test, reset the device (trial boot
    with self-test) and, with --confirm, make it permanent."""

    bundle: Path = option(help="a bundle directory", positional=True, metavar="BUNDLE")
    confirm: bool = option(False, "confirm after a successful trial boot")


@dataclass(frozen=True, kw_only=True)
class RunOptions(DeviceRequest):
    """stream frames from new simulated devices to a device; SER and latency

    Frames from new simulated devices (meta-test split: fresh impairments and channels) for the running receiver's task
    (constellation and SNR from the device), one per device; reports SER, mean confidence, expected calibration error and
    latency percentiles. For a learned-link receiver each frame is a new channel, the transmitter sends the codebook from
    the device's task section, and the error rate is the BLER. For a channel predictor, --pilots is the training windows
    per frame, --symbols the predictions, and the score the NMSE; for a power allocator, --pilots slots to adapt on,
    --symbols slots to allocate, and the score the sum-rate."""

    frames: int = option(100, "frames, one per new simulated device", parse=positive_int)
    pilots: int = option(8, "pilots per frame", parse=positive_int)
    symbols: int = option(1000, "payload symbols per frame", parse=positive_int)
    seed: int = option(0, "seed of the simulated devices")
    reliability: Path | None = option(None, "write the device's reliability diagram (10 bins)", parse=output_file, metavar="PNG")


def deploy(options: DeployOptions, progress: Progress = silent) -> dict:
    from metaedge.deploy.bundle import pack
    from metaedge.sdk.device_frames import deploy as upload

    image = pack(bundle_at(options.bundle))
    progress(0, total=len(image), label="upload")
    result = upload(options.device, image, options.confirm, progress=progress, operator_key=options.signer())
    return {"bundle": str(options.bundle), "bytes": len(image), "confirmed": options.confirm, **result}


def deploy_text(report: dict) -> str:
    state = "confirmed" if report["confirmed"] else "on trial (confirm with 'metaedge device confirm', or reset to revert)"
    return f"deployed {report['bundle']} ({report['bytes']:,} B, sha256 {report['sha256'][:16]}…) to slot {report['slot']}: {state}"


def frames(options: RunOptions, progress: Progress = silent) -> dict:
    from metaedge.sdk.device_frames import stream

    report = stream(options.device, options.frames, options.pilots, options.symbols, options.seed, options.signer())
    if options.reliability and "reliability" in report:
        from metaedge.sdk.plots import plot_reliability

        plot_reliability({"device": report["reliability"]}, options.reliability, f"on the device, {options.pilots} pilots")
    return report


def frames_text(report: dict) -> str:
    from metaedge.sdk import families

    return families.get(report["task"]).report_text(report)


@dataclass(frozen=True, kw_only=True)
class Request(DeviceRequest):
    """one management request"""

    op: str = option("info", flag=False)  # the protocol operation, set by each command


def ask(options: Request, progress: Progress = silent) -> dict:
    from metaedge.deploy.client import answer
    from metaedge.sdk.device_frames import call, connect

    with connect(options.device, options.signer()) as client:
        return answer(call(client, options.op)[0])


def _image_line(image: dict) -> str:
    flags = " ".join(f for f in ("active", "confirmed", "pending", "trial") if image[f])
    if not image["valid"]:
        return f"slot {image['slot']}: empty  [{flags}]"
    expires = f", expires {image['expires']}" if image.get("expires") else ""
    return (
        f"slot {image['slot']}: {image.get('algorithm', '?')}, counter {image.get('security_counter', '?')}, release "
        f"{image.get('release', 0)}, {image['size']:,} B, sha256 {image['sha256'][:16]}…{expires}  [{flags}]"
    )


def ask_text(header: dict) -> str:
    if "images" in header:
        return "\n".join(map(_image_line, header["images"]))
    return "\n".join(f"{k}: {v}" for k, v in header.items())


REQUESTS = {  # command → (protocol operation, help)
    "info": ("info", "target, profile and running image"),
    "list": ("image.list", "the two image slots"),
    "reset": ("reset", "reboot: trial-boot a tested image, or revert an unconfirmed one"),
    "confirm": ("image.confirm", "make the image on trial permanent"),
    "stats": ("stats", "frames served, latency, boot events"),
}
DEPLOY = command("deploy", DeployOptions, "metaedge.sdk.device_commands:deploy")
RUN = command("run", RunOptions, "metaedge.sdk.device_commands:frames")
MANAGEMENT = tuple(command(name, Request, "metaedge.sdk.device_commands:ask", help=help, fixed={"op": op}) for name, (op, help) in REQUESTS.items())
