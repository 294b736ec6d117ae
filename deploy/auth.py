"""Operator authentication of device requests (docs/device-protocol.md §3.4), shared by host and device.

An operator signs each request with an Ed25519 key over a nonce the device issued on that
connection; a nonce is good for one request, so a recorded request cannot be replayed, and
the signature covers the operation, every argument and the hash of every attachment, so an
on-path attacker cannot alter it. The signed bytes are

    b"metaedge-request-v1\\n" + nonce (16 bytes) + SHA-256(canonical request)

where the canonical request is the header without ``seq``, ``auth`` and ``blobs``, plus
``"attachments": {name: SHA-256 hex of its bytes}``, serialised as JSON with sorted keys,
no whitespace and ASCII escapes.
"""

from __future__ import annotations

import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from metaedge.deploy.signing import key_id

DOMAIN = b"metaedge-request-v1\n"
NONCE_BYTES = 16
CHALLENGE = "auth.challenge"  # the operation that issues a nonce
UNSIGNED = ("seq", "auth", "blobs")  # header members outside the signature


class AuthError(ValueError):
    """A request whose authentication is missing, malformed, stale or not by an operator."""


def _attachment_bytes(value) -> bytes:
    """An attachment's bytes as they travel (arrays little-endian, row-major)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    import numpy as np  # only requests with arrays need it; the CLI imports this module at start

    return np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()


def request_digest(header: dict, arrays: dict | None) -> bytes:
    """SHA-256 of the canonical request (module docstring)."""
    canonical = {k: v for k, v in header.items() if k not in UNSIGNED}
    canonical["attachments"] = {name: hashlib.sha256(_attachment_bytes(v)).hexdigest() for name, v in (arrays or {}).items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).digest()


def sign_request(key: Ed25519PrivateKey, nonce: bytes, header: dict, arrays: dict | None) -> dict:
    """The ``auth`` member for ``header`` (without it) and its attachments."""
    signature = key.sign(DOMAIN + nonce + request_digest(header, arrays))
    return {"key": key_id(key.public_key()), "nonce": nonce.hex(), "signature": signature.hex()}


def verify_request(auth: object, nonce: bytes | None, header: dict, arrays: dict, operators: dict[str, Ed25519PublicKey]) -> str:
    """The key id of the operator who signed this request with the connection's current ``nonce``; AuthError if none."""
    if not isinstance(auth, dict) or not all(isinstance(auth.get(k), str) for k in ("key", "nonce", "signature")):
        raise AuthError("'auth' must be an object with string members key, nonce and signature")
    if nonce is None or auth["nonce"] != nonce.hex():
        raise AuthError(f"the nonce is not the one this connection was issued; ask '{CHALLENGE}' for a fresh one")
    public = operators.get(auth["key"])
    if public is None:
        raise AuthError(f"key {auth['key'][:16]} is not an operator key of this device")
    try:
        public.verify(bytes.fromhex(auth["signature"]), DOMAIN + nonce + request_digest(header, arrays))
    except (ValueError, InvalidSignature):
        raise AuthError("the request's signature does not verify (wrong key, or the request was altered)") from None
    return auth["key"]
