"""Spiking receivers that adapt on-chip: the Loihi backend (Lava's Loihi 2 simulation by default).

Per frame: θ is written to the plastic synapses (``weights.set``), the pilots are presented
with the teacher signal on (the three-factor rule adapts the weights), then the payload with
the teacher off (no learning); decisions come from output spike counts (``network``).
Engines: ``lava`` (the device: Lava's Loihi 2 simulation; needs the Lava environment),
``reference`` (the host simulator of the same dynamics in numpy, for machines without Lava)
and ``loihi2`` (``Loihi2HwCfg``, real Loihi 2 through Intel's proprietary lava-loihi package;
untested here, see docs/bundle-format.md §14.8).
"""

from __future__ import annotations

import time

import numpy as np

from metaedge.backends.base import AdaptReport, BackendError, Frame, FrameResult, Receiver, Resources, SelftestReport
from metaedge.backends.loihi.network import SnnParameters, SnnSpec, encode, fixed_point, probabilities, rotate_frame, stream_length, teacher
from metaedge.deploy import manifest as m
from metaedge.deploy.bundle import Bundle

ENGINES = ("lava", "reference", "loihi2")
FIXED_AGREEMENT = 0.9  # fixed point: self-test payload decisions that must match the floating-point host's


class LoihiBackend(Receiver):
    target = "loihi"

    def __init__(self, engine: str = "lava", timeout_s: float = 120.0, fixed_point: bool = False) -> None:
        if engine not in ENGINES:
            raise BackendError(f"engine '{engine}' is unknown; use one of {', '.join(ENGINES)}")
        if fixed_point and engine == "reference":
            raise BackendError("fixed point runs on Lava's fixed_pt models: use engine lava (or loihi2)")
        self.engine, self.timeout_s, self.fixed_point = engine, timeout_s, fixed_point
        self.receiver = None
        self.bundle: Bundle | None = None

    @classmethod
    def configure(cls, threads: int, options: dict) -> "LoihiBackend":
        return cls(engine=options.get("engine", "lava"), fixed_point=bool(options.get("fixed_point", False)))

    # -- loading -----------------------------------------------------------------------------
    def load(self, bundle: Bundle) -> Resources:
        if bundle.target != self.target:
            raise BackendError(f"bundle target is '{bundle.target}', this device runs '{self.target}'")
        try:
            self.spec = SnnSpec.from_dict(bundle.manifest.section("snn"))
        except (KeyError, TypeError, ValueError) as e:
            raise BackendError(f"manifest 'snn' section is invalid: {e}") from None
        if bundle.manifest.task.classes != self.spec.classes:
            raise BackendError(f"task has {bundle.manifest.task.classes} classes, the network {self.spec.classes} output neurons")
        tensors = bundle.tensors(m.THETA)
        shape = (self.spec.classes, self.spec.hidden)
        if "theta" not in tensors or tensors["theta"].shape != shape or not np.isfinite(tensors["theta"]).all():
            raise BackendError(f"θ artifact lacks a finite 'theta' of shape {shape}")
        try:
            self.params = SnnParameters.from_tensors(self.spec, tensors)
        except ValueError as e:
            raise BackendError(str(e)) from None
        self.theta = tensors["theta"].astype(np.float64)
        try:
            task = bundle.manifest.task
            self.constellation = np.array(m.task_constellation(task.raw, task.classes)) if self.spec.pilot_phase else None
        except m.BundleError as e:
            raise BackendError(f"snn.pilot_phase needs the nominal constellation: {e}") from None
        # Loihi 2 hardware computes in fixed point only
        self.fixed = fixed_point(self.spec, self.theta, self.params) if self.fixed_point or self.engine == "loihi2" else None
        self.close()
        self.receiver = self._build()
        self.bundle = bundle
        self.fall_back_to(bundle.manifest.task)
        count = 2 * self.theta.size + sum(value.size for value in self.params.tensors().values())
        return Resources(parameter_bytes=8 * count, artifact_bytes=bundle.size(), parameters=count)

    def _build(self):
        if self.engine == "reference":
            from metaedge.backends.loihi.reference import ReferenceReceiver

            return ReferenceReceiver(self.spec, self.params, self.theta)
        try:
            from metaedge.backends.loihi.lava_net import LavaReceiver
        except ImportError as e:
            raise BackendError(
                f"Lava is not importable here ({e}); run the Loihi device with the Lava environment: "
                ".venv-lava/bin/metaedge device serve --target loihi …"
            ) from None
        if self.engine == "loihi2":
            from lava.utils.loihi import is_installed

            if not is_installed():
                raise BackendError(
                    "engine 'loihi2' runs on Loihi 2 hardware and needs Intel's lava-loihi package "
                    "(available to INRC members), which is not installed; use --engine lava for the simulation"
                )
        return LavaReceiver(self.spec, self.params, self.theta, timeout_s=self.timeout_s, hardware=self.engine == "loihi2", fixed=self.fixed)

    def close(self) -> None:
        """Stop the engine's runtime (Lava's processes and shared memory)."""
        if self.receiver is not None:
            receiver, self.receiver = self.receiver, None
            receiver.stop()

    # -- per frame ---------------------------------------------------------------------------
    def phase_reference(self, frame: Frame) -> Frame:
        """The frame rotated by the phase of its pilots' channel estimate (§14.3) where the bundle asks for it.
        The classical receiver and the selection are unaffected: a common rotation rotates their estimate alike."""
        if not self.spec.pilot_phase or frame.labels is None:
            return frame
        pilots, payload = rotate_frame(self.constellation, frame.pilots, frame.labels, frame.payload)
        return Frame(pilots, frame.labels, payload)

    def frame(self, frame: Frame) -> FrameResult:
        return super().frame(self.phase_reference(frame))

    def _run(self, samples: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if self.receiver is None:
            raise BackendError("no network is loaded")
        n = samples.shape[0]
        length = stream_length(self.spec, n)
        inputs = encode(self.spec, samples, length)
        teach = teacher(self.spec, labels, length) if labels is not None else np.zeros((length, self.spec.classes))
        try:
            return self.receiver.run_stream(inputs, teach)
        except BackendError:
            if getattr(self.receiver, "stopped", False):
                self.receiver = None  # the runtime was torn down; a reset builds a new one
            raise

    def reset(self) -> None:
        """Back to θ; a runtime torn down after a failure is rebuilt here, so the device keeps serving."""
        if self.receiver is None and self.bundle is not None:
            self.receiver = self._build()
        if self.receiver is not None:
            self.receiver.set_weights(self.theta)

    def adapt(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray) -> AdaptReport:
        start = time.perf_counter()
        self._run(pilot_samples, pilot_labels)
        return AdaptReport(steps=pilot_samples.shape[0] * self.spec.period, seconds=time.perf_counter() - start)

    def output_spikes(self, samples: np.ndarray) -> np.ndarray:
        """Output spikes [steps, classes] for a block presented with learning off."""
        return self._run(samples, None)

    def predict(self, samples: np.ndarray) -> np.ndarray:
        return probabilities(self.spec, self.output_spikes(samples), samples.shape[0]).astype(np.float32)

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        return np.log(self.predict(samples))

    def weights(self) -> np.ndarray:
        """The plastic synapses' weights now (the self-test and the Lava parity checks read them)."""
        return self.receiver.weights()

    # -- self-test ----------------------------------------------------------------------------
    def selftest(self) -> SelftestReport:
        """Adapt on the host's pilots and decode its payload: weights within atol and output spikes identical;
        in fixed point, payload decisions agreeing with the host's on ≥ FIXED_AGREEMENT of the symbols."""
        vectors = self.bundle.tensors(m.SELFTEST)
        atol = self.bundle.manifest.selftest.atol
        try:
            self.reset()
            self.adapt(vectors["adapt.pilot_samples"], vectors["adapt.pilot_labels"].astype(np.int64))
            weight_error = float(np.abs(self.weights() - vectors["adapt.weights"]).max())
            samples = vectors["predict.samples"]
            spikes = self.output_spikes(samples)
            if self.fixed is not None:
                agree = float(
                    np.mean(
                        probabilities(self.spec, spikes, len(samples)).argmax(-1)
                        == probabilities(self.spec, vectors["predict.spikes"], len(samples)).argmax(-1)
                    )
                )
                return SelftestReport(passed=agree >= FIXED_AGREEMENT, max_error=1.0 - agree, tolerance=1.0 - FIXED_AGREEMENT, checks=1)
            mismatches = float(np.abs(spikes - vectors["predict.spikes"]).sum())
        except (KeyError, ValueError) as e:
            raise BackendError(f"self-test vectors are unusable: {e}") from None
        finally:
            self.reset()
        worst = max(weight_error, mismatches)
        return SelftestReport(passed=bool(np.isfinite(worst) and weight_error <= atol and mismatches == 0), max_error=worst, tolerance=atol, checks=2)
