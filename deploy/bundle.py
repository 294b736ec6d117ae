"""The portable bundle, format ``metaedge-bundle`` version 1 (normative text: docs/bundle-format.md).

A bundle is a directory: ``manifest.json`` and the artifacts it lists, each with its size
and SHA-256. This module writes and reads bundles with numpy and the standard library
alone, so a device can verify what it receives. ``read_bundle`` checks everything the
specification says a reader must reject and raises ``BundleError`` with the reason.
"""
from __future__ import annotations

import hashlib
import json
import struct
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from metaedge.deploy import tensors
from metaedge.deploy.jsonobj import json_object

FORMAT = "metaedge-bundle"
VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"          # detached signature over manifest.json (a later format feature)
MAX_MANIFEST = 1 << 20              # bytes
MAX_CLASSES = 1 << 16               # task.classes: a one-hot row per pilot must stay small
MAX_FEATURES = 1 << 10              # task.features: inputs per received sample
# Artifact roles each target requires; a reader rejects targets it does not know.
REQUIRED_ROLES = {"onnx": ("theta", "forward", "adapt_step", "selftest"), "qiskit": ("theta", "circuit", "selftest"),
                  "loihi": ("theta", "selftest"), "linear": ("theta", "selftest")}
TARGETS = tuple(REQUIRED_ROLES)
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


PACKED_MAGIC = b"MEBNDL\x00\x01"   # packed form, version 1 (§11 of the specification)


class BundleError(ValueError):
    """A bundle a reader must reject; the message names the reason and the place."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest (parsed and exact bytes), every artifact by role, and its signature."""

    path: Path | None
    manifest: dict
    artifacts: dict[str, bytes]
    manifest_raw: bytes = b""
    signature: bytes = b""      # detached Ed25519 signature over manifest_raw; empty if unsigned

    @property
    def target(self) -> str:
        return self.manifest["target"]

    def tensors(self, role: str) -> dict[str, np.ndarray]:
        """A safetensors artifact (θ, self-test vectors) as arrays."""
        try:
            return tensors.loads(self.artifacts[role])[0]
        except tensors.TensorFileError as e:
            raise BundleError(f"artifact '{role}': {e}") from None

    def size(self) -> int:
        """Bytes the bundle occupies: manifest plus artifacts."""
        return len(self.manifest_raw) + sum(len(b) for b in self.artifacts.values())


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical encoding: UTF-8 JSON on one line, sorted keys, no spaces, trailing newline (half the bytes of an
    indented manifest; ``metaedge inspect`` is how people read one)."""
    return (json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(out: str | os.PathLike, manifest: dict, artifacts: Mapping[str, tuple[str, bytes]], key=None) -> Bundle:
    """Write ``artifacts`` (role → (file name, bytes)) and a manifest that lists them with size and hash.

    ``manifest`` is completed with the format name, version and artifact table; the bundle
    is read back and verified before this returns.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"'{out}' already exists and is not empty; choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    table = {}
    for role, (name, data) in artifacts.items():
        (out / name).write_bytes(data)
        table[role] = {"path": name, "size": len(data), "sha256": sha256(data)}
    full = {**manifest, "format": FORMAT, "version": VERSION, "artifacts": table}
    raw = manifest_bytes(full)
    (out / MANIFEST).write_bytes(raw)
    if key is not None:
        sign_bundle(out, key)
    return read_bundle(out)


def sign_bundle(path: str | os.PathLike, key) -> bytes:
    """Sign the exact bytes of the bundle's manifest with an Ed25519 private key; writes manifest.sig."""
    from metaedge.deploy.signing import sign

    path = Path(path)
    signature = sign(read_bundle(path).manifest_raw, key)
    (path / SIGNATURE).write_bytes(signature)
    return signature


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read and verify a bundle directory (see ``verify`` for what is checked)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"'{path}' is not a bundle directory")
    file = path / MANIFEST
    if not file.is_file():
        raise BundleError(f"'{path}' has no {MANIFEST}")
    raw = file.read_bytes()
    manifest = parse_manifest(raw)
    artifacts = {}
    for role, entry in manifest["artifacts"].items():
        artifact = path / entry["path"]
        if not artifact.is_file():
            raise BundleError(f"artifact '{role}': file {entry['path']} is missing")
        if artifact.stat().st_size != entry["size"]:
            raise BundleError(f"artifact '{role}': {entry['path']} has {artifact.stat().st_size} bytes, the manifest says {entry['size']}")
        artifacts[role] = artifact.read_bytes()
    signature = (path / SIGNATURE).read_bytes() if (path / SIGNATURE).is_file() else b""
    return verify(manifest, artifacts, path, raw, signature)


def check_task(manifest: dict) -> None:
    """The task members a device sizes its frames by (§4): ``features``, and ``classes`` for a classifier or
    ``outputs`` for a predictor."""
    task = manifest.get("task")
    if not isinstance(task, dict):
        raise BundleError("manifest has no task section")
    if "outputs" in task:
        if type(task["outputs"]) is not int or not 1 <= task["outputs"] <= MAX_FEATURES:
            raise BundleError(f"task.outputs must be an integer in [1, {MAX_FEATURES}]")
    elif type(task.get("classes")) is not int or not 2 <= task["classes"] <= MAX_CLASSES:
        raise BundleError(f"task.classes must be an integer in [2, {MAX_CLASSES}]")
    features = task.get("features")
    if (not isinstance(features, list) or not 1 <= len(features) <= MAX_FEATURES
            or not all(isinstance(f, str) for f in features)):
        raise BundleError(f"task.features must list 1 to {MAX_FEATURES} feature names")


def parse_manifest(raw: bytes) -> dict:
    """Decode and validate the manifest's structure (not the artifacts)."""
    if len(raw) > MAX_MANIFEST:
        raise BundleError(f"manifest of {len(raw)} bytes exceeds the {MAX_MANIFEST}-byte limit")
    manifest = json_object(raw, BundleError, "manifest")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"manifest format is {manifest.get('format')!r}, not '{FORMAT}'")
    if manifest.get("version") != VERSION:
        raise BundleError(f"bundle format version {manifest.get('version')!r} is not supported (this reader: {VERSION})")
    if manifest.get("target") not in TARGETS:
        raise BundleError(f"target {manifest.get('target')!r} is unknown; expected one of {', '.join(TARGETS)}")
    counter = manifest.get("security_counter")
    if type(counter) is not int or not 0 <= counter < 2**32:
        raise BundleError("security_counter must be an integer in [0, 2^32)")
    if "expires" in manifest:
        expires(manifest)
    table = manifest.get("artifacts")
    if not isinstance(table, dict) or not table:
        raise BundleError("manifest has no artifact table")
    seen = set()
    for role, entry in table.items():
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            raise BundleError(f"artifact '{role}': entry must have exactly path, size and sha256")
        name, size, digest = entry["path"], entry["size"], entry["sha256"]
        if not isinstance(name, str) or not _ARTIFACT_NAME.match(name) or name in (MANIFEST, SIGNATURE) or name in seen:
            raise BundleError(f"artifact '{role}': path {name!r} is not a plain, unique file name")
        if type(size) is not int or size < 0:
            raise BundleError(f"artifact '{role}': size must be a non-negative integer")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BundleError(f"artifact '{role}': sha256 must be 64 lowercase hex digits")
        seen.add(name)
    return manifest


def expires(manifest: dict):
    """The manifest's expiry as an aware UTC datetime, or None; BundleError if malformed."""
    from datetime import datetime, timezone

    value = manifest.get("expires")
    if value is None:
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ") if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise BundleError(f"expires {value!r} is not a UTC time of the form 2027-01-31T00:00:00Z")
    return moment.replace(tzinfo=timezone.utc)


def verify(manifest: dict, artifacts: Mapping[str, bytes], path: Path | None = None,
           manifest_raw: bytes | None = None, signature: bytes = b"") -> Bundle:
    """Check every artifact against the manifest's size and SHA-256 and the target's required roles."""
    table = manifest["artifacts"]
    missing = [r for r in REQUIRED_ROLES[manifest["target"]] if r not in table]
    if missing:
        raise BundleError(f"target '{manifest['target']}' needs artifacts {', '.join(missing)}, which the manifest does not list")
    if set(artifacts) != set(table):
        raise BundleError(f"artifacts {sorted(set(table) ^ set(artifacts))} do not match the manifest")
    for role, data in artifacts.items():
        entry = table[role]
        if len(data) != entry["size"]:
            raise BundleError(f"artifact '{role}': {len(data)} bytes, the manifest says {entry['size']}")
        if sha256(data) != entry["sha256"]:
            raise BundleError(f"artifact '{role}': SHA-256 does not match the manifest (tampered or corrupt)")
    raw = manifest_bytes(manifest) if manifest_raw is None else manifest_raw
    return Bundle(path=path, manifest=manifest, artifacts=dict(artifacts), manifest_raw=raw, signature=signature)


def pack(bundle: Bundle) -> bytes:
    """The packed form (one blob, for upload and flash): magic, manifest, artifacts by sorted role, signature."""
    raw, signature = bundle.manifest_raw, bundle.signature
    parts = [PACKED_MAGIC, struct.pack("<I", len(raw)), raw]
    parts += [bundle.artifacts[role] for role in sorted(bundle.manifest["artifacts"])]
    parts += [struct.pack("<I", len(signature)), signature]
    return b"".join(parts)


def unpack(blob: bytes) -> Bundle:
    """Parse and verify a packed bundle (sizes and hashes; the signature is the device's to check)."""
    if len(blob) < len(PACKED_MAGIC) + 8 or not blob.startswith(PACKED_MAGIC):
        raise BundleError("not a packed MetaEdge bundle (bad magic or too short)")
    offset = len(PACKED_MAGIC)
    (length,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    if length > MAX_MANIFEST:
        raise BundleError(f"packed manifest length {length} exceeds the {MAX_MANIFEST}-byte limit")
    if offset + length > len(blob):
        raise BundleError(f"packed bundle is truncated inside its manifest ({len(blob)} of {offset + length} bytes)")
    raw = blob[offset:offset + length]
    manifest = parse_manifest(raw)
    offset += length
    artifacts = {}
    for role in sorted(manifest["artifacts"]):
        size = manifest["artifacts"][role]["size"]
        if offset + size > len(blob):
            raise BundleError(f"packed bundle is truncated inside artifact '{role}'")
        artifacts[role] = blob[offset:offset + size]
        offset += size
    if offset + 4 > len(blob):
        raise BundleError("packed bundle is truncated before its signature field")
    (sig_len,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    if offset + sig_len > len(blob):
        raise BundleError(f"packed bundle is truncated inside its signature ({len(blob)} of {offset + sig_len} bytes)")
    if offset + sig_len < len(blob):
        raise BundleError(f"packed bundle has {len(blob) - offset - sig_len} bytes beyond its declared end")
    return verify(manifest, artifacts, None, raw, blob[offset:])
