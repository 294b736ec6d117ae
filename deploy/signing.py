"""Ed25519 signatures over the manifest (which hashes every artifact), and trusted keys.

A signature is the raw 64-byte Ed25519 signature of the exact bytes of ``manifest.json``,
stored as ``manifest.sig`` beside it (and in the packed form's signature field); the signed
manifest names its signer (``signer``: the key's id), so a device with several trusted keys
checks the one named and reports who signed. Keys are PEM files: private keys PKCS#8, public
keys SubjectPublicKeyInfo. A key's id is the SHA-256 of its raw 32-byte public key, as 64
lowercase hex digits (TUF's key ids are hashes of the key in the same way); people are shown
its first 16.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_SIZE = 64


class SignatureError(ValueError):
    """A missing, malformed or untrusted signature, or an unusable key file."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def short(identifier: str) -> str:
    """A key id as people read it."""
    return identifier[:16]


def generate(directory: str | os.PathLike, name: str = "metaedge") -> tuple[Path, Path]:
    """Write ``NAME.key`` (private, mode 600) and ``NAME.pub``; refuses to overwrite."""
    directory = Path(directory)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    if private_path.exists() or public_path.exists():
        raise SignatureError(f"{private_path} or {public_path} already exists; choose another --out or --name")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private(path: str | os.PathLike) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise SignatureError(f"{path} is not a readable unencrypted PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def load_public(path: str | os.PathLike) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise SignatureError(f"{path} is not a readable PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key


def sign(manifest_raw: bytes, key: Ed25519PrivateKey) -> bytes:
    return key.sign(manifest_raw)


def verify(manifest_raw: bytes, signature: bytes, trusted: list[Ed25519PublicKey], signer: str | None = None) -> str:
    """The id of the trusted key that made ``signature``; SignatureError if none did. ``signer``: the key id the manifest
    names (spec 1.1); only that key is tried. Without one (a 1.0 bundle) every trusted key is."""
    if not signature:
        raise SignatureError("bundle is not signed; this device accepts only bundles signed by its trusted keys")
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(f"signature has {len(signature)} bytes; an Ed25519 signature has {SIGNATURE_SIZE}")
    candidates = trusted
    if signer is not None:
        candidates = [public for public in trusted if key_id(public) == signer]
        if not candidates:
            raise SignatureError(f"bundle is signed by key {short(signer)}, which this device does not trust")
    for public in candidates:
        try:
            public.verify(signature, manifest_raw)
            return key_id(public)
        except InvalidSignature:
            continue
    named = f"key {short(signer)}" if signer else "any trusted key"
    raise SignatureError(f"signature does not verify with {named} (a tampered manifest, or a wrong signature)")
