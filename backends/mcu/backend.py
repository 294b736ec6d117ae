"""Receivers adapted by the MetaEdge firmware on an emulated Cortex-M4F (docs/bundle-format.md §16).

The device process keeps the management protocol; each frame goes over the serial link to the firmware, which
adapts from θ on the pilots and decides the samples. The firmware starts at ``load`` in a fresh QEMU, receives the
image, checks its hash and runs its self-test; if it ever stops, the next request restarts it with the same image.
"""

from __future__ import annotations

import time

import numpy as np

from metaedge.backends.base import AdaptReport, BackendError, Receiver, Resources, SelftestReport
from metaedge.backends.mcu import image as mcu_image
from metaedge.backends.mcu.link import FirmwareError, Link, LinkError
from metaedge.backends.mcu.qemu import Emulator, EmulatorError
from metaedge.deploy import manifest as m
from metaedge.deploy.bundle import Bundle


class McuBackend(Receiver):
    target = "mcu"

    def __init__(self, fixed_point: bool = False) -> None:
        self.emulator: Emulator | None = None
        self.link: Link | None = None
        self.image: bytes = b""
        self.adapted = False
        self.fixed_point = fixed_point  # the forward passes in q15 (the adaptation stays in float)

    @classmethod
    def configure(cls, threads: int, options: dict) -> "McuBackend":
        return cls(fixed_point=bool(options.get("fixed_point", False)))

    @classmethod
    def inspect(cls, bundle: Bundle) -> None:
        """The image decodes by §16.2 and carries exactly the manifest's receiver: θ, adapted tensors, steps, task."""
        cls._decoded(bundle)

    @staticmethod
    def _decoded(bundle: Bundle) -> mcu_image.Image:
        manifest = bundle.manifest
        try:
            image = mcu_image.decode(bundle.artifacts[m.IMAGE])
        except mcu_image.ImageError as e:
            raise BackendError(f"mcu image: {e}") from None
        theta = bundle.tensors(m.THETA)
        carried = {**image.theta, **(image.step_sizes or {})}
        mismatched = [k for k, v in carried.items() if k not in theta or theta[k].shape != v.shape or not np.array_equal(theta[k], v)]
        checks = [
            (not mismatched, f"θ differs from the image's tensors {mismatched[:3]}"),
            (set(carried) == set(theta), "θ holds parameters the image does not carry"),
            (list(image.adapts) == manifest.adapted, f"the image adapts {list(image.adapts)}, the manifest {manifest.adapted}"),
            (image.steps == manifest.algorithm.inner_steps, "the image's inner steps differ from algorithm.inner_steps"),
            (np.float32(manifest.algorithm.inner_lr or 0.0) == np.float32(image.lr), "the image's inner_lr differs from algorithm.inner_lr"),
            (np.float32(manifest.algorithm.prox) == np.float32(image.prox), "the image's prox differs from algorithm.prox"),
            (manifest.algorithm.loss == "cross_entropy_mean_onehot", "algorithm.loss is not cross_entropy_mean_onehot"),
            (np.float32(manifest.selftest.atol) == np.float32(image.selftest.atol), "the image's self-test atol differs from selftest.atol"),
            (not manifest.task.predictor and image.classes == manifest.task.classes, "the image's classes differ from task.classes"),
            (image.features == len(manifest.task.features), "the image's features differ from task.features"),
        ]
        for ok, why in checks:
            if not ok:
                raise BackendError(f"mcu bundle: {why}")
        return image

    # -- the emulated microcontroller -------------------------------------------------------------------------------
    def _boot(self) -> None:
        """A fresh QEMU with the firmware, then the image; its self-test result is kept for ``selftest``."""
        self.close()
        try:
            self.emulator = Emulator()
        except EmulatorError as e:
            raise BackendError(str(e)) from None
        self.link = Link(self.emulator.connection)
        self.info = self.link.info()
        if len(self.image) > self.info.image_capacity:
            raise BackendError(f"the image of {len(self.image)} bytes exceeds the firmware's slot of {self.info.image_capacity}")
        self.boot_selftest = self.link.load(self.image)
        self.info = self.link.info()

    def _call(self, request: str, *args, **kwargs):
        """The link's ``request`` method; a refusal is a ``BackendError`` with the firmware's sentence, a broken link
        restarts the microcontroller (the frame is lost, the receiver is not)."""
        if self.link is None:
            self._restart("it was not running")
        try:
            return getattr(self.link, request)(*args, **kwargs)
        except FirmwareError as e:
            raise BackendError(f"the microcontroller refused: {e}") from None
        except LinkError as e:
            said = self.emulator.stderr() if self.emulator else ""
            why = f"{e}; {said}" if said else str(e)
            self._restart(why)
            raise BackendError(f"the microcontroller stopped ({why}); it was restarted") from None

    def _restart(self, why: str) -> None:
        try:
            self._boot()
        except (FirmwareError, LinkError, BackendError) as e:
            self.close()
            raise BackendError(f"the microcontroller stopped ({why}) and could not be restarted: {e}") from None

    def load(self, bundle: Bundle) -> Resources:
        if bundle.target != self.target:
            raise BackendError(f"bundle target is '{bundle.target}', this device runs '{self.target}'")
        decoded = self._decoded(bundle)
        self.bundle, self.image, self.classes = bundle, bundle.artifacts[m.IMAGE], decoded.classes
        self.fall_back_to(bundle.manifest.task)
        try:
            self._boot()
        except (FirmwareError, LinkError) as e:
            self.close()
            raise BackendError(f"the firmware did not take the image: {e}") from None
        except BackendError:
            self.close()
            raise
        count = sum(v.size for v in bundle.tensors(m.THETA).values())
        costs = {"ram_bytes": self.ram_bytes(), "flash_bytes": self.info.firmware_flash + len(self.image), "work_bytes": self.info.work_used}
        return Resources(parameter_bytes=self.info.work_used, artifact_bytes=bundle.size(), parameters=int(count), costs=costs)

    def ram_bytes(self) -> int:
        """Peak RAM so far: .data + .bss, the receiver's work area and the stack's high-water mark."""
        return self.info.static_ram + self.info.work_used + self.info.stack_high_water

    # -- per frame --------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.adapted = False

    def adapt(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray | None) -> AdaptReport:
        start = time.perf_counter()
        reply = self._call("adapt", pilot_samples, pilot_labels)
        self.adapted, self.last_adapt = True, reply
        return AdaptReport(steps=reply.steps, seconds=time.perf_counter() - start)

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """Class log-probabilities at θ, or at the adapted parameters after ``adapt``, computed by the firmware in
        float32 (the guard's losses come from these, also with ``fixed_point``)."""
        return self.decisions(samples, log_probs=True, q15=False).log_probs

    def decisions(self, samples: np.ndarray, log_probs: bool = False, q15: bool | None = None):
        """The firmware's decisions and confidences (and log-probabilities) for ``samples``; ``q15`` (default: as the
        backend was configured) by its fixed-point forward."""
        q15 = self.fixed_point if q15 is None else q15
        return self._call("decide", samples, self.classes, log_probs=log_probs, at_theta=not self.adapted, q15=q15)

    def predict(self, samples: np.ndarray) -> np.ndarray:
        """Class probabilities of the payload, by the q15 forward with ``fixed_point``."""
        return np.exp(self.decisions(samples, log_probs=True).log_probs)

    def selftest(self) -> SelftestReport:
        """The firmware replays the image's vectors (forward at θ, then after the K steps on its pilots)."""
        reply = self._call("selftest")
        return SelftestReport(passed=bool(reply.max_error <= reply.atol), max_error=float(reply.max_error), tolerance=float(reply.atol), checks=2)

    def close(self) -> None:
        if self.emulator is not None:
            self.emulator.close()
        self.emulator, self.link = None, None
