"""The portable bundle, format ``metaedge-bundle`` version 1 (normative text: docs/bundle-format.md).

A bundle is a directory: ``manifest.json`` and the artifacts it lists, each with its size
and SHA-256. This module writes and reads bundles with numpy and the standard library
alone, so a device can verify what it receives. ``read_bundle`` checks everything the
specification says a reader must reject and raises ``BundleError`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from metaedge.deploy import tensors
from metaedge.deploy.jsonobj import json_object
from metaedge.deploy.manifest import FORMAT, MANIFEST_FILE, MAX_MANIFEST, SELFTEST, SIGNATURE_FILE, THETA, VERSION, BundleError, Manifest, parse

PACKED_MAGIC = b"MEBNDL\x00\x01"  # packed form, version 1 (§11 of the specification)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest (parsed and exact bytes), every artifact by role, and its signature."""

    path: Path | None
    manifest: Manifest
    artifacts: dict[str, bytes]
    manifest_raw: bytes = b""
    signature: bytes = b""  # detached Ed25519 signature over manifest_raw; empty if unsigned

    @property
    def target(self) -> str:
        return self.manifest.target

    def tensors(self, role: str) -> dict[str, np.ndarray]:
        """A safetensors artifact (θ, self-test vectors) as arrays."""
        try:
            return tensors.loads(self.artifacts[role])[0]
        except tensors.TensorFileError as e:
            raise BundleError(f"artifact '{role}': {e}") from None

    def size(self) -> int:
        """Bytes the bundle occupies: manifest plus artifacts."""
        return len(self.manifest_raw) + sum(len(b) for b in self.artifacts.values())


def check_tensors(bundle: Bundle) -> None:
    """The checks of §9 on tensor artifacts that need no runtime (a device makes them at upload): θ and the self-test
    vectors are valid tensor files (§3), and θ holds every listed parameter with its shape and dtype (§5)."""
    theta = bundle.tensors(THETA)
    for p in bundle.manifest.parameters:
        value = theta.get(p.name)
        if value is None or value.shape != p.shape or value.dtype != np.dtype(p.dtype):
            raise BundleError(f"θ lacks parameter {p.name} as {p.dtype} of shape {list(p.shape)}")
    if SELFTEST in bundle.artifacts:
        bundle.tensors(SELFTEST)


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
    (out / MANIFEST_FILE).write_bytes(raw)
    if key is not None:
        sign_bundle(out, key)
    return read_bundle(out)


def sign_bundle(path: str | os.PathLike, key) -> bytes:
    """Name ``key`` (an Ed25519 private key) as the manifest's ``signer`` and sign the manifest's exact bytes with it:
    rewrites manifest.json, writes manifest.sig. Re-signing with another key replaces both."""
    from metaedge.deploy.signing import key_id, sign

    path = Path(path)
    raw = manifest_bytes({**read_bundle(path).manifest.raw, "signer": key_id(key.public_key())})
    parse_manifest(raw)
    (path / MANIFEST_FILE).write_bytes(raw)
    signature = sign(raw, key)
    (path / SIGNATURE_FILE).write_bytes(signature)
    return signature


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read and verify a bundle directory (see ``verify`` for what is checked)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"'{path}' is not a bundle directory")
    file = path / MANIFEST_FILE
    if not file.is_file():
        raise BundleError(f"'{path}' has no {MANIFEST_FILE}")
    raw = file.read_bytes()
    manifest = parse_manifest(raw)
    artifacts = {}
    for role, entry in manifest.artifacts.items():
        artifact = path / entry.path
        if not artifact.is_file():
            raise BundleError(f"artifact '{role}': file {entry.path} is missing")
        if artifact.stat().st_size != entry.size:
            raise BundleError(f"artifact '{role}': {entry.path} has {artifact.stat().st_size} bytes, the manifest says {entry.size}")
        artifacts[role] = artifact.read_bytes()
    signature = (path / SIGNATURE_FILE).read_bytes() if (path / SIGNATURE_FILE).is_file() else b""
    return verify(manifest, artifacts, path, raw, signature)


def parse_manifest(raw: bytes) -> Manifest:
    """Decode the manifest's bytes and validate every section (``manifest.parse``)."""
    if len(raw) > MAX_MANIFEST:
        raise BundleError(f"manifest of {len(raw)} bytes exceeds the {MAX_MANIFEST}-byte limit")
    return parse(json_object(raw, BundleError, "manifest"))


def verify(
    manifest: Manifest, artifacts: Mapping[str, bytes], path: Path | None = None, manifest_raw: bytes | None = None, signature: bytes = b""
) -> Bundle:
    """Check every artifact against the manifest's size and SHA-256 (the required roles were checked at parse)."""
    table = manifest.artifacts
    if set(artifacts) != set(table):
        raise BundleError(f"artifacts {sorted(set(table) ^ set(artifacts))} do not match the manifest")
    for role, data in artifacts.items():
        entry = table[role]
        if len(data) != entry.size:
            raise BundleError(f"artifact '{role}': {len(data)} bytes, the manifest says {entry.size}")
        if sha256(data) != entry.sha256:
            raise BundleError(f"artifact '{role}': SHA-256 does not match the manifest (tampered or corrupt)")
    raw = manifest_bytes(manifest.raw) if manifest_raw is None else manifest_raw
    return Bundle(path=path, manifest=manifest, artifacts=dict(artifacts), manifest_raw=raw, signature=signature)


def pack(bundle: Bundle) -> bytes:
    """The packed form (one blob, for upload and flash): magic, manifest, artifacts by sorted role, signature."""
    return pack_parts(bundle.manifest_raw, bundle.artifacts, bundle.signature)


def pack_parts(manifest_raw: bytes, artifacts: Mapping[str, bytes], signature: bytes) -> bytes:
    """The packed form from its parts as they are, valid or not (the conformance suite packs invalid bundles too)."""
    parts = [PACKED_MAGIC, struct.pack("<I", len(manifest_raw)), manifest_raw]
    parts += [artifacts[role] for role in sorted(artifacts)]
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
    raw = blob[offset : offset + length]
    manifest = parse_manifest(raw)
    offset += length
    artifacts = {}
    for role in sorted(manifest.artifacts):
        size = manifest.artifacts[role].size
        if offset + size > len(blob):
            raise BundleError(f"packed bundle is truncated inside artifact '{role}'")
        artifacts[role] = blob[offset : offset + size]
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
