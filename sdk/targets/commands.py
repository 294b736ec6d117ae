"""The bundle commands — ``metaedge export``, ``inspect``, ``sign`` and ``keys generate`` — declared once: their
options (the flags) and what each runs. Torch-free until an export runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.sdk.errors import UserError, bundle_at
from metaedge.sdk.options import Progress, command, option, out_option, output_dir, silent
from metaedge.sdk.targets import OPTIONS, TARGETS, Release


@dataclass(frozen=True)
class ExportOptions:
    """export a trained run to a portable bundle

    Write the portable bundle of a trained run (docs/bundle-format.md): θ, the forward and adaptation-step graphs, and
    self-test vectors, each listed with size and SHA-256."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge export runs/demo/cavia --target onnx --out bundles/cavia
  metaedge export runs/maml --out bundles/maml-v7 --security-counter 7
  metaedge export runs/vbmaml --out bundles/vbmaml --ensemble 20
  metaedge export runs/born-meta --target qiskit --out bundles/born --shots 512
  metaedge export runs/snn-fomaml --target loihi --out bundles/snn
  metaedge export runs/pred --target linear --out bundles/pred
"""

    run: Path = option(help="a trained run", positional=True, metavar="RUN_DIR")
    out: Path = out_option("bundle directory to create")
    target: str = option("onnx", "device target: " + "; ".join(f"{name} ({t.runs})" for name, t in TARGETS.items()), choices=tuple(TARGETS))
    security_counter: int = option(Release.security_counter, "monotonic counter a device uses against rollback")
    release: int = option(
        Release.release,
        "release number within the security counter: a device never selects an image older than its confirmed one by (counter, release)",
    )
    inner_steps: int | None = option(None, "adaptation steps on the device (default: the run's)")
    shots: int | None = option(None, "qiskit: shots per parameter setting (default: the run's)")
    ensemble: int | None = option(
        None, "onnx, vbmaml runs: weight draws the device's predictive averages (default 100, as metaedge eval; fewer cost less per frame)"
    )
    key: Path | None = option(None, "Ed25519 private key to sign with (metaedge keys generate)")
    expires: str | None = option(None, "UTC time after which devices refuse to install it, e.g. 2027-01-31T00:00:00Z")


@dataclass(frozen=True)
class InspectOptions:
    """summarise a bundle (verifies sizes and hashes)"""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge inspect bundles/cavia
  metaedge inspect bundles/cavia --json | jq .algorithm
"""

    bundle: Path = option(help="a bundle directory", positional=True, metavar="BUNDLE")


@dataclass(frozen=True)
class SignOptions:
    """sign a bundle's manifest with an Ed25519 key (writes manifest.sig)"""

    EXAMPLES: ClassVar[str] = "\nexamples:\n  metaedge keys generate --out keys\n  metaedge sign bundles/cavia --key keys/metaedge.key\n"

    bundle: Path = option(help="a bundle directory", positional=True, metavar="BUNDLE")
    key: Path = option(help="Ed25519 private key (PEM)")


@dataclass(frozen=True)
class KeysOptions:
    """a new Ed25519 key pair: NAME.key (private, mode 600) and NAME.pub"""

    EXAMPLES: ClassVar[str] = "\nexamples:\n  metaedge keys generate --out keys --name release-2027\n"

    out: Path = option(help="directory for the key files", parse=output_dir)
    name: str = option("metaedge", "file name stem")


def private_key(path: Path):
    from metaedge.deploy.signing import SignatureError, load_private

    try:
        return load_private(path)
    except SignatureError as e:
        raise UserError(str(e)) from None


def export(options: ExportOptions, progress: Progress = silent) -> dict:
    from metaedge.sdk.targets import export as export_run

    release = Release(options.security_counter, options.expires, options.release)
    key = private_key(options.key) if options.key else None
    return bundle_report(export_run(options.target, options.run, options.out, release, key, **{name: getattr(options, name) for name in OPTIONS}))


def inspect(options: InspectOptions, progress: Progress = silent) -> dict:
    return bundle_report(bundle_at(options.bundle))


def bundle_report(bundle) -> dict:
    """The manifest, and the summary a person reads (``_summary``: not printed with ``--json``)."""
    from metaedge.sdk.targets.describe import summary

    return {**bundle.manifest.raw, "_summary": summary(bundle)}


def export_text(report: dict) -> str:
    return report["_summary"]


inspect_text = export_text


def sign(options: SignOptions, progress: Progress = silent) -> dict:
    from metaedge.deploy.bundle import BundleError, sign_bundle
    from metaedge.deploy.signing import key_id

    key = private_key(options.key)
    try:
        sign_bundle(options.bundle, key)
    except BundleError as e:
        raise UserError(str(e)) from None
    return {"bundle": str(options.bundle), "signature": str(options.bundle / "manifest.sig"), "key": key_id(key.public_key())}


def sign_text(report: dict) -> str:
    from metaedge.deploy.signing import short

    return f"signed {report['bundle']} with key {short(report['key'])} (named as the manifest's signer) → {report['signature']}"


def keys(options: KeysOptions, progress: Progress = silent) -> dict:
    from metaedge.deploy.signing import SignatureError, generate, key_id, load_public

    try:
        private, public = generate(options.out, options.name)
    except SignatureError as e:
        raise UserError(str(e)) from None
    return {"key": key_id(load_public(public)), "private": str(private), "public": str(public)}


def keys_text(report: dict) -> str:
    from metaedge.deploy.signing import short

    return f"key {short(report['key'])}: private {report['private']} (keep it secret), public {report['public']} (provision devices with it)"


EXPORT = command("export", ExportOptions, "metaedge.sdk.targets.commands:export")
INSPECT = command("inspect", InspectOptions, "metaedge.sdk.targets.commands:inspect")
SIGN = command("sign", SignOptions, "metaedge.sdk.targets.commands:sign")
KEYS = command("generate", KeysOptions, "metaedge.sdk.targets.commands:keys")
