"""The device: management operations (image list, upload, test, reset, confirm) and the frame loop.

Each public method is one protocol operation (docs/device-protocol.md §3). Bad requests
raise ``DeviceError``, which the server returns as an error response; the device keeps
its images and keeps serving whatever a client sends.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from metaedge.backends import registry
from metaedge.backends.base import Backend, BackendError, Frame, Resources
from metaedge.deploy.bundle import Bundle, BundleError, check_tensors, unpack
from metaedge.deploy.manifest import Task
from metaedge.deploy.signing import SignatureError, verify
from metaedge.firmware_sim import boot as bootsm
from metaedge.firmware_sim.contain import Contained, Containment, Violation
from metaedge.firmware_sim.flash import Flash
from metaedge.firmware_sim.profile import Profile, required_ram

FLASH_FILE = "flash.img"


class DeviceError(Exception):
    """A refused request; the message is the reason the client sees."""


def _reason(error: BaseException) -> str:
    """One line for the boot log: our own errors say why; anything else is named by its type."""
    if isinstance(error, (BundleError, BackendError, DeviceError)):
        return str(error)
    return f"{type(error).__name__}: {str(error)[:200]}"


@dataclass
class Upload:
    slot: int
    length: int
    sha256: str
    owner: str | None  # the operator key that started it (None on a device without operator keys)
    received: int = 0


@dataclass
class Stats:
    frames: int = 0
    errors: int = 0
    fallbacks: int = 0
    diverged: int = 0
    violations: int = 0  # frames that broke the receiver's time or memory limit
    symbols: int = 0
    adapt_s: float = 0.0
    infer_s: float = 0.0
    boots: list[str] = field(default_factory=list)


class Device:
    """``trusted_keys``: the Ed25519 public keys whose signatures it accepts; with none and
    ``allow_unsigned`` (development only) it accepts unsigned bundles. ``clock`` gives UTC now;
    ``backend_options`` configure the backend (qiskit: ``{"backend": "noisy:FakeManilaV2", "seed": 0}``);
    ``containment`` runs the receiver in a child process under its limits (None: in this process)."""

    def __init__(
        self,
        state_dir: str | Path,
        target: str,
        profile: Profile,
        flash: Flash | None = None,
        trusted_keys: list | None = None,
        allow_unsigned: bool = False,
        clock=None,
        backend_options: dict | None = None,
        containment: Containment | None = None,
    ) -> None:
        from datetime import datetime, timezone

        if not trusted_keys and not allow_unsigned:
            raise ValueError("a device needs at least one trusted public key (or allow_unsigned for development)")
        self.target, self.profile = target, profile
        self.backend_options = dict(backend_options or {})
        self.containment = containment
        self.frame_lock = threading.Lock()  # one frame at a time through the receiver
        self.trusted_keys, self.allow_unsigned = list(trusted_keys or []), allow_unsigned
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.flash = flash or Flash(Path(state_dir) / FLASH_FILE, profile.slot_size)
        self.stats = Stats()
        self.upload_session: Upload | None = None
        self.backend: Backend | None = None
        self.resources: Resources | None = None
        self.bundle: Bundle | None = None
        self.running = bootsm.BootResult(None, "none")
        self.reset()

    # -- boot ----------------------------------------------------------------------------------
    def _start(self, slot: int) -> str | None:
        """Verify, load and self-test the image in ``slot``; None when it runs, else why it does not."""
        image = self.flash.verified_image(slot)
        if image is None:
            return "its bytes do not match its header"
        backend = None
        try:
            bundle = unpack(image)
            self._admit(bundle, "start")
            backend = self._new_backend(bundle.target)
            resources = backend.load(bundle)
            report = backend.selftest()
            if not report.passed:
                raise DeviceError(f"self-test failed: error {report.max_error:.3g} above the tolerance {report.tolerance:.3g}")
        except Exception as e:  # noqa: BLE001 — whatever an image does while starting, the device must keep booting
            if backend is not None:
                with contextlib.suppress(Exception):
                    backend.close()
            return _reason(e)
        self.backend, self.bundle, self.resources = backend, bundle, resources
        return None

    def _new_backend(self, target: str) -> Backend:
        if self.containment is None:
            return registry.create(target, self.profile.threads, self.backend_options)
        return Contained(target, self.profile.threads, self.backend_options, self.containment)

    @property
    def concurrent_frames(self) -> bool:
        """Whether frames may run beside management requests: true when the receiver is contained in its own process,
        which a reset can stop at any moment."""
        return self.containment is not None

    def _admit(self, bundle: Bundle, action: str) -> None:
        """Trust, rollback, expiry, target and resource checks: when an image is installed (``action`` "install"),
        selected for a trial ("select") and started ("start")."""
        # strict devices verify every bundle; a development device (allow_unsigned) accepts unsigned
        # bundles and checks a signature only when it has keys to check it against
        if not self.allow_unsigned or (bundle.signature and self.trusted_keys):
            try:
                verify(bundle.manifest_raw, bundle.signature, self.trusted_keys, bundle.manifest.signer)
            except SignatureError as e:
                raise DeviceError(str(e)) from None
        floor = self.flash.boot_state().counter
        manifest = bundle.manifest
        if manifest.security_counter < floor:
            raise DeviceError(f"rollback refused: security counter {manifest.security_counter} is below {floor}, the counter of the confirmed image")
        confirmed = self._confirmed_manifest()
        if confirmed is not None and manifest.order < confirmed.order:
            raise DeviceError(
                f"older release refused: counter {manifest.security_counter}, release {manifest.release} is older than the confirmed "
                f"image's counter {confirmed.security_counter}, release {confirmed.release}"
            )
        self._check_expiry(manifest, action)
        if bundle.target != self.target:
            raise DeviceError(f"wrong target: bundle is for '{bundle.target}', this device runs '{self.target}'")
        try:
            registry.backend_class(self.target).inspect(bundle)
        except BackendError as e:
            raise DeviceError(str(e)) from None
        try:
            needed = required_ram(bundle.manifest, self.profile)
        except BundleError as e:
            raise DeviceError(f"bundle refused: {e}") from None
        if needed > self.profile.ram:
            raise DeviceError(f"bundle does not fit: needs {needed:,} bytes of RAM, the {self.profile.name} profile has {self.profile.ram:,}")

    def _confirmed_manifest(self):
        """The confirmed image's manifest, when its slot still verifies (the order a new image must not fall below)."""
        slot = self.flash.boot_state().confirmed
        image = None if slot is None else self.flash.verified_image(slot)
        if image is None:
            return None
        try:
            return unpack(image).manifest
        except BundleError:
            return None

    def _check_expiry(self, manifest, action: str) -> None:
        """Expired bundles are never installed, selected for a trial or started (spec: bundle-format.md §2)."""
        if manifest.expires is not None and self.clock() >= manifest.expires:
            raise DeviceError(
                f"bundle expired at {manifest.raw['expires']}: refusing to {action} it (a stale or frozen update channel; ask for a fresh release)"
            )

    def reset(self) -> dict:
        """Reboot: the boot state machine picks what runs (trial of a pending image, revert, or the confirmed one)."""
        self.close()
        self.bundle, self.resources, self.upload_session = None, None, None
        self.running = bootsm.boot(self.flash, self._start)
        self.stats.boots.extend(self.running.events)
        return {"slot": self.running.slot, "mode": self.running.mode, "events": self.running.events}

    def close(self) -> None:
        """Power down the running receiver's runtime (a reset or the end of the process)."""
        backend, self.backend = getattr(self, "backend", None), None
        if backend is not None:
            backend.close()

    # -- management ----------------------------------------------------------------------------
    def info(self) -> dict:
        task = None
        if self.bundle is not None:
            # the whole task section: a client needs it to send what the receiver was trained for
            task = {**self.bundle.manifest.task.raw, "algorithm": self.bundle.manifest.algorithm.name}
        return {
            "target": self.target,
            "profile": self.profile.to_dict(),
            "running": self.running.slot,
            "mode": self.running.mode,
            "image_capacity": self.flash.image_capacity,
            "task": task,
            "resources": asdict(self.resources) if self.resources else None,
        }

    def list_images(self) -> dict:
        state = self.flash.boot_state()
        images = []
        for slot in (0, 1):
            header = self.flash.header(slot)
            entry = {
                "slot": slot,
                "valid": header is not None,
                "active": slot == self.running.slot,
                "confirmed": slot == state.confirmed,
                "pending": slot == state.pending,
                "trial": slot == state.trial,
            }
            if header:
                entry.update(size=header[0], sha256=header[1].hex())
                image = self.flash.verified_image(slot)
                if image is not None:
                    try:
                        manifest = unpack(image).manifest
                        entry.update(
                            algorithm=manifest.algorithm.name,
                            security_counter=manifest.security_counter,
                            release=manifest.release,
                            signer=manifest.signer,
                            expires=manifest.raw.get("expires"),
                        )
                    except BundleError as e:
                        entry.update(error=str(e))
            images.append(entry)
        return {"images": images, "security_counter": state.counter}

    def _upload_slot(self) -> int:
        state = self.flash.boot_state()
        if self.running.mode == "trial":
            raise DeviceError("an image is on trial: confirm it or reset (to revert) before uploading another")
        occupied = self.running.slot if self.running.slot is not None else state.confirmed
        return 1 - occupied if occupied is not None else 0

    def upload(self, offset: int, length: int, sha256: str, chunk: bytes, owner: str | None = None) -> dict:
        """Write ``chunk`` at ``offset`` of an image of ``length`` bytes; offset 0 starts a new upload.

        Uploads resume: a chunk must start where the previous one ended (the response and
        ``upload_status`` say where). The last chunk triggers verification. An upload belongs to
        the operator (``owner``) who started it; another one may only start a new upload.
        """
        if type(offset) is not int or type(length) is not int or not isinstance(sha256, str):
            raise DeviceError("upload needs integer 'offset' and 'length' and a hex 'sha256'")
        if length <= 0 or length > self.flash.image_capacity:
            raise DeviceError(f"image of {length:,} bytes does not fit the {self.flash.image_capacity:,}-byte slot")
        if offset == 0:
            slot = self._upload_slot()
            self.upload_session = Upload(slot, length, sha256.lower(), owner)
            self.flash.erase_header(slot)
        session = self.upload_session
        if session is not None and session.owner != owner:
            raise DeviceError(
                f"the upload in progress belongs to operator key {session.owner}: continue it with that key, or start a new one at offset 0"
            )
        if session is None or (session.length, session.sha256) != (length, sha256.lower()):
            raise DeviceError("no upload in progress for this image: start again at offset 0")
        if offset != session.received:
            raise DeviceError(
                f"upload offset {offset} does not continue the upload, which has {session.received} bytes; resume at {session.received}"
            )
        if offset + len(chunk) > length:
            raise DeviceError(f"chunk runs past the declared image length ({offset + len(chunk)} > {length})")
        self.flash.write_image(session.slot, offset, chunk)
        session.received += len(chunk)
        if session.received < length:
            return {"slot": session.slot, "received": session.received, "complete": False}
        self.upload_session = None
        return {"slot": session.slot, "received": session.received, "complete": True, **self._verify_upload(session)}

    def _verify_upload(self, session: Upload) -> dict:
        image = self.flash.read_image(session.slot, session.length)
        digest = hashlib.sha256(image).digest()
        if digest.hex() != session.sha256:
            raise DeviceError("uploaded image does not match its declared SHA-256 (corrupted or truncated upload); the slot stays empty")
        try:
            bundle = unpack(image)
            check_tensors(bundle)
        except BundleError as e:
            raise DeviceError(f"uploaded image is not a valid bundle: {e}") from None
        self._admit(bundle, "install")
        self.flash.commit_header(session.slot, session.length, digest)
        return {"sha256": digest.hex(), "algorithm": bundle.manifest.algorithm.name}

    def upload_status(self) -> dict:
        s = self.upload_session
        return {"in_progress": s is not None, **({"slot": s.slot, "received": s.received, "length": s.length} if s else {})}

    def test(self, sha256: str) -> dict:
        """Mark the verified image with this hash for a trial boot at the next reset."""
        for slot in (0, 1):
            header = self.flash.header(slot)
            if header and header[1].hex() == str(sha256).lower() and slot != self.running.slot:
                self._selectable(slot)
                bootsm.request_test(self.flash, slot)
                return {"slot": slot, "pending": True}
        raise DeviceError(f"no verified image with sha256 {str(sha256)[:16]}… in the inactive slot; upload it first")

    def _selectable(self, slot: int) -> None:
        """The selection rules of ``image.test``: the image verifies, is not expired, not below the counter floor."""
        image = self.flash.verified_image(slot)
        if image is None:
            raise DeviceError(f"the image in slot {slot} no longer verifies; upload it again")
        try:
            bundle = unpack(image)
        except BundleError as e:
            raise DeviceError(f"the image in slot {slot} is not a valid bundle: {e}") from None
        self._admit(bundle, "select")

    def confirm(self) -> dict:
        if self.running.mode != "trial":
            raise DeviceError("nothing to confirm: the running image is not on trial (test and reset first)")
        bootsm.confirm(self.flash, self.running, counter=self.bundle.manifest.security_counter)
        return {"slot": self.running.slot, "confirmed": True}

    # -- runtime -------------------------------------------------------------------------------
    def frame(self, arrays: dict) -> tuple[dict, dict]:
        """Adapt on the frame's pilots from θ, decide its payload; decisions and confidence (a classifier) or outputs
        (a predictor), and telemetry."""
        backend, bundle, mode, slot = self.backend, self.bundle, self.running.mode, self.running.slot
        if backend is None:
            raise DeviceError("no image is running: deploy and confirm a bundle first")
        task = bundle.manifest.task
        pilots = self._samples(arrays, "pilots", self.profile.max_pilots, task.features)
        payload = self._samples(arrays, "payload", self.profile.payload_limit(task), task.features)
        labels = None if task.predictor else self._pilot_labels(arrays.get("labels"), len(pilots), task)
        frame = Frame(pilots=pilots, labels=labels, payload=payload)
        try:
            with self.frame_lock:
                result = backend.frame(frame)
        except Violation as e:
            raise DeviceError(self._contain(e, backend, mode)) from None
        except BackendError as e:
            raise DeviceError(str(e)) from None
        if not np.isfinite(result.outputs).all():
            raise DeviceError("the receiver's outputs are not finite for these samples: their magnitudes lie far outside what it was trained on")
        self.stats.frames += 1
        self.stats.symbols += len(result.outputs)
        self.stats.adapt_s += result.adapt_s
        self.stats.infer_s += result.infer_s
        self.stats.fallbacks += result.receiver == "classical"
        self.stats.diverged += result.diverged
        telemetry = {
            "adapt_us": result.adapt_s * 1e6,
            "infer_us": result.infer_s * 1e6,
            "steps": result.steps,
            "fused": result.fused,
            "pilots": int(frame.pilots.shape[0]),
            "symbols": int(len(result.outputs)),
            "slot": slot,
            "receiver": result.receiver,
            "diverged": result.diverged,
            "fallback": result.fallback,
            "residuals": None if result.residuals is None else {"learned": result.residuals[0], "classical": result.residuals[1]},
            "select_us": result.select_s * 1e6,
        }
        if task.predictor:
            return telemetry, {"outputs": result.outputs.astype(np.float32)}
        decisions = result.outputs.argmax(-1)
        confidence = result.outputs[np.arange(len(decisions)), decisions]
        return telemetry, {"decisions": decisions.astype(np.int16), "confidence": confidence.astype(np.float32)}

    def _contain(self, violation: Violation, backend: Backend, mode: str) -> str:
        """After a receiver broke its limits: revert an image on trial, count it; the reason for the client."""
        if backend is not self.backend:
            return "the device was reset while this frame ran"
        self.stats.violations += 1
        if mode == "trial":
            self.reset()
            return f"{violation}; the image on trial was reverted (events: {'; '.join(self.running.events)})"
        return f"{violation}; the receiver restarts with the next frame"

    def _samples(self, arrays: dict, name: str, limit: int, features: list[str]) -> np.ndarray:
        value = arrays.get(name)
        if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.ndim != 2 or value.shape[1] != len(features):
            raise DeviceError(f"'{name}' must be a float32 array of shape [n, {len(features)}] ({', '.join(features)})")
        if not 1 <= value.shape[0] <= limit:
            raise DeviceError(f"'{name}' has {value.shape[0]} samples; this device takes 1 to {limit}")
        if not np.isfinite(value).all():
            raise DeviceError(f"'{name}' contains NaN or infinite values")
        return value

    @staticmethod
    def _pilot_labels(labels: object, count: int, task: Task) -> np.ndarray:
        """The pilots' classes: sent with the frame, or the bundle's known pilot sequence."""
        if labels is None:
            if task.pilot_sequence is None:
                raise DeviceError("this bundle has no known pilot sequence: send 'labels' with the pilots")
            return np.resize(np.asarray(task.pilot_sequence, np.int64), count)
        if not isinstance(labels, np.ndarray) or labels.shape != (count,) or labels.dtype.kind not in "iu":
            raise DeviceError("'labels' must be an integer array with one class per pilot")
        if labels.min() < 0 or labels.max() >= task.classes:
            raise DeviceError(f"pilot labels must lie in [0, {task.classes})")
        if task.pilot_sequence is not None and not np.array_equal(labels, np.resize(np.asarray(task.pilot_sequence), count)):
            raise DeviceError(
                "pilot labels break the bundle's pilot sequence (task.pilot_sequence), which its receiver was trained on: "
                "send pilots in that order (or omit 'labels'), or deploy a bundle trained for arbitrary pilots"
            )
        return labels.astype(np.int64)

    def stats_report(self) -> dict:
        s = self.stats
        per = lambda total: total / s.frames * 1e6 if s.frames else None  # noqa: E731
        return {
            "frames": s.frames,
            "errors": s.errors,
            "fallbacks": s.fallbacks,
            "diverged": s.diverged,
            "violations": s.violations,
            "symbols": s.symbols,
            "mean_adapt_us": per(s.adapt_s),
            "mean_infer_us": per(s.infer_s),
            "boot_events": s.boots[-10:],
            "running": self.running.slot,
            "mode": self.running.mode,
        }
