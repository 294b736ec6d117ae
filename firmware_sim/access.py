"""Who may do what on a device (docs/device-protocol.md §3.4): operations that change the device need an operator's
signature when the device has operator keys; reads and frames are open or not as the device is configured."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from metaedge.deploy.auth import CHALLENGE, NONCE_BYTES, AuthError, verify_request
from metaedge.deploy.signing import key_id

MANAGE = ("image.upload", "image.test", "image.confirm", "reset")
CLASSES = {"read": ("info", "image.list", "image.upload_status", "stats"), "frame": ("frame",)}
DEFAULT_OPEN = ("read", "frame")


class AccessError(ValueError):
    """A request refused for want of a valid operator signature."""


@dataclass
class Session:
    """One connection's authentication state: the nonce it was issued, good for one signed request."""

    nonce: bytes | None = None

    def challenge(self) -> bytes:
        self.nonce = os.urandom(NONCE_BYTES)
        return self.nonce


@dataclass(frozen=True)
class Policy:
    """``operators``: key id → public key (none: management is open, for loopback development); ``open``: the
    classes of ``CLASSES`` that need no signature even with operator keys."""

    operators: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    open: tuple[str, ...] = DEFAULT_OPEN

    @classmethod
    def of(cls, keys: list[Ed25519PublicKey], open_classes: tuple[str, ...] = DEFAULT_OPEN) -> "Policy":
        unknown = set(open_classes) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown operation class {', '.join(sorted(unknown))}; choose from {', '.join(CLASSES)}")
        return cls({key_id(k): k for k in keys}, tuple(open_classes))

    @property
    def enforced(self) -> bool:
        return bool(self.operators)

    def needs_signature(self, op: object) -> bool:
        return self.enforced and op != CHALLENGE and not any(op in CLASSES[c] for c in self.open)

    def authorise(self, session: Session, header: dict, arrays: dict) -> tuple[str | None, dict]:
        """(the signing operator's key id or None, response members to add); AccessError when refused.

        A signed request consumes the connection's nonce whether or not its signature holds, and a
        successful one is answered with ``next_nonce`` for the following request."""
        op, auth = header.get("op"), header.get("auth")
        if auth is None:
            if self.needs_signature(op):
                raise AccessError(f"'{op}' needs an operator's signature: connect with an operator key (--operator-key)")
            return None, {}
        nonce, session.nonce = session.nonce, None
        try:
            operator = verify_request(auth, nonce, header, arrays, self.operators)
        except AuthError as e:
            raise AccessError(f"authentication failed: {e}") from None
        return operator, {"next_nonce": session.challenge().hex()}
