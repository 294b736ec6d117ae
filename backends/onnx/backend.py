"""Receivers adapted on the device with ONNX Runtime and numpy alone.

The bundle's ``adapt_step`` graph maps (parameters, pilots, one-hot labels) to the adapted
parameters; the backend runs it ``inner_steps`` times, feeding the adapted parameters
back, then ``forward`` on the payload. One intra-op thread by default, as on a small device.

Three ways to run the inner loop, measured by ``metaedge bench device``:
- ``onnx_loop`` (default, fastest from two steps on: 215 µs against 339 µs for ``iobinding``
  to adapt in 5 steps, 173 against 155 µs in one, side by side): all steps in one call of the
  bundle's optional ``adapt_loop`` graph (an ONNX ``Loop`` around ``adapt_step``), IO-bound;
  one-step bundles leave that graph out, and bundles without it fall back to ``iobinding``;
- ``iobinding``: θ is converted to ONNX Runtime values once at load; adapted parameters
  pass from step to step and into ``forward`` as ORT values, no numpy copies;
- ``step_loop``: a plain ``session.run`` per step with numpy feeds.

A one-step bundle also carries a fused ``frame`` graph (adaptation and inference in one call): ``frame``
runs it in every mode but ``step_loop`` — 206 µs against 298 µs for adapt and forward as two IO-bound
calls, and 1236 µs for eager torch, side by side (``metaedge bench device``).
"""
from __future__ import annotations

import contextlib
import sys
import time

import numpy as np
import onnxruntime as ort

from metaedge.backends.base import AdaptReport, BackendError, Resources, SelftestReport
from metaedge.deploy.bundle import Bundle
from metaedge.deploy.noise import weight_draws


class OnnxBackend:
    target = "onnx"

    MODES = ("onnx_loop", "iobinding", "step_loop")

    def __init__(self, threads: int = 1, mode: str = "onnx_loop") -> None:
        if threads < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        if mode not in self.MODES:
            raise BackendError(f"adaptation mode '{mode}' is unknown; use one of {', '.join(self.MODES)}")
        self.threads, self.mode = threads, mode
        self.bundle: Bundle | None = None

    # -- loading -----------------------------------------------------------------------------
    def _session(self, role: str) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            # ONNX Runtime prints provider diagnostics to stdout; on a device serving over stdio that is
            # the protocol stream, so they go to stderr
            with contextlib.redirect_stdout(sys.stderr):
                return ort.InferenceSession(self.bundle.artifacts[role], options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            raise BackendError(f"graph '{role}' cannot be loaded by ONNX Runtime: {e}") from None

    def load(self, bundle: Bundle) -> None:
        if bundle.target != self.target:
            raise BackendError(f"bundle target is '{bundle.target}', this device runs '{self.target}'")
        self.bundle = bundle
        manifest = bundle.manifest
        self.algorithm = manifest["algorithm"]
        # a classifier adapts on labelled pilots and returns class probabilities; a predictor (task.outputs)
        # adapts on its pilots alone and returns its outputs (bundle-format.md §6)
        self.classifier = "outputs" not in manifest["task"]
        self.output = manifest["graphs"]["forward"]["outputs"][0]["name"]
        self.steps = int(self.algorithm["inner_steps"])
        self.onehot_table = np.eye(int(manifest["task"]["classes"]), dtype=np.float32) if self.classifier else None
        theta = bundle.tensors("theta")
        order = [p["name"] for p in manifest["parameters"]]
        for p in manifest["parameters"]:
            if p["name"] not in theta or list(theta[p["name"]].shape) != p["shape"]:
                raise BackendError(f"θ lacks parameter {p['name']} of shape {p['shape']}")
        self.theta = {k: theta[k].astype(np.float32) for k in order}
        self.adapted_names = [p["name"] for p in manifest["parameters"] if p["adapts"]]
        try:
            draws = weight_draws(manifest["algorithm"].get("noise"), self.theta)
        except ValueError as e:
            raise BackendError(str(e)) from None
        self.fixed = {role: self._fixed_inputs(role, draws) for role in ("adapt_step", "forward")}
        self.forward_session = self._session("forward")
        self.adapt_session = self._session("adapt_step")
        self._check_io("forward", self.forward_session)
        self._check_io("adapt_step", self.adapt_session)
        self.theta_ort = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in self.theta.items()}
        self.fixed_ort = {role: {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in fixed.items()} for role, fixed in self.fixed.items()}
        # one-step bundles carry a fused frame graph (spec §7.6): adaptation and inference in one call
        self.frame_session = None
        if "frame" in bundle.artifacts and self.mode != "step_loop":
            self.frame_session = self._session("frame")
            self._check_io("frame", self.frame_session)
        self.effective_mode = self.mode
        if self.mode == "onnx_loop":
            if "adapt_loop" in bundle.artifacts:
                self.loop_session = self._session("adapt_loop")
                self._check_io("adapt_loop", self.loop_session)
            else:
                self.effective_mode = "iobinding"
        self.reset()

    def _fixed_inputs(self, role: str, draws: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """A graph's inputs that stay the same every frame: a proximal step's anchors, θ's adapted parameters
        (iMAML, Prox-MAML, ALSET; spec §7.2), and a Gaussian posterior's weight draws (spec §7.4)."""
        fixed = {}
        for spec in self.bundle.manifest["graphs"][role]["inputs"]:
            if spec.get("role") == "anchor":
                if role != "adapt_step" or spec.get("parameter") not in self.adapted_names:
                    raise BackendError(f"{role} has an anchor input for a parameter that does not adapt")
                fixed[spec["name"]] = self.theta[spec["parameter"]]
            elif spec.get("role") == "noise":
                value = draws.get(spec.get("stream"), {}).get(spec.get("parameter"))
                if value is None:
                    raise BackendError(f"{role} input '{spec['name']}' reads draws of stream '{spec.get('stream')}' for "
                                       f"parameter '{spec.get('parameter')}', which algorithm.noise does not define")
                fixed[spec["name"]] = value
        return fixed

    def _check_io(self, role: str, session: ort.InferenceSession) -> None:
        spec = self.bundle.manifest["graphs"][role]
        want_in = [i["name"] for i in spec["inputs"]]
        want_out = [o["name"] for o in spec["outputs"]]
        got_in = [i.name for i in session.get_inputs()]
        got_out = [o.name for o in session.get_outputs()]
        if got_in != want_in or got_out != want_out:
            raise BackendError(f"graph '{role}' has inputs {got_in} and outputs {got_out}; the manifest declares {want_in} and {want_out}")

    # -- per frame ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.current = dict(self.theta_ort)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The current (θ or adapted) parameters as numpy arrays."""
        return {k: v.numpy() for k, v in self.current.items()}

    def adapt(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray) -> AdaptReport:
        start = time.perf_counter()
        pilots = np.ascontiguousarray(pilot_samples, np.float32)
        labels = {"pilot_onehot": self.onehot_table[pilot_labels]} if self.classifier else {}
        if self.effective_mode == "step_loop":
            feeds = {**self.params, **self.fixed["adapt_step"], "pilot_samples": pilots, **labels}
            for _ in range(self.steps):
                feeds.update(zip(self.adapted_names, self.adapt_session.run(None, feeds)))
            self.current.update({k: ort.OrtValue.ortvalue_from_numpy(feeds[k]) for k in self.adapted_names})
        else:
            loop = self.effective_mode == "onnx_loop"
            session = self.loop_session if loop else self.adapt_session
            binding = session.io_binding()
            binding.bind_cpu_input("pilot_samples", pilots)
            for name, value in labels.items():
                binding.bind_cpu_input(name, value)
            if loop:
                binding.bind_cpu_input("steps", np.array(self.steps, np.int64))
            for name, value in self.fixed_ort["adapt_step"].items():
                binding.bind_ortvalue_input(name, value)
            for name, value in self.current.items():
                binding.bind_ortvalue_input(name, value)
            for _ in range(1 if loop else self.steps):
                # fresh output buffers every call: ORT reuses bound outputs, which are the next step's inputs
                binding.clear_binding_outputs()
                for name in self.adapted_names:
                    binding.bind_output(f"adapted.{name}", "cpu")
                session.run_with_iobinding(binding)
                outputs = binding.get_outputs()
                for name, value in zip(self.adapted_names, outputs):
                    binding.bind_ortvalue_input(name, value)
            self.current.update(zip(self.adapted_names, outputs))
        return AdaptReport(steps=self.steps, seconds=time.perf_counter() - start)

    @property
    def fused(self) -> bool:
        """Whether ``frame`` runs the bundle's fused graph (one call per frame)."""
        return self.frame_session is not None

    def frame(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray | None, samples: np.ndarray) -> tuple[np.ndarray, float]:
        """The forward output on ``samples`` after adapting θ on the pilots, and the seconds it took: one call of the
        bundle's fused ``frame`` graph (callers check ``fused``). The adapted parameters stay inside the runtime:
        afterwards the backend is still at θ."""
        if self.frame_session is None:
            raise BackendError("this bundle has no fused frame graph (or the mode is step_loop): reset, adapt and predict")
        start = time.perf_counter()
        feeds = {**self.theta, **self.fixed["adapt_step"], "pilot_samples": np.ascontiguousarray(pilot_samples, np.float32),
                 **({"pilot_onehot": self.onehot_table[pilot_labels]} if self.classifier else {}),
                 "samples": np.ascontiguousarray(samples, np.float32)}
        out = self.frame_session.run(None, feeds)[0]
        return out, time.perf_counter() - start

    def forward(self, samples: np.ndarray) -> np.ndarray:
        """The forward graph's output: log-probabilities (classifier) or the outputs (predictor)."""
        samples = np.ascontiguousarray(samples, np.float32)
        if self.effective_mode == "step_loop":
            return self.forward_session.run(None, {**self.params, **self.fixed["forward"], "samples": samples})[0]
        binding = self.forward_session.io_binding()
        for name, value in (self.current | self.fixed_ort["forward"]).items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_cpu_input("samples", samples)
        binding.bind_output(self.output, "cpu")
        self.forward_session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """A classifier's class log-probabilities (the device's adaptation guard reads them)."""
        return self.forward(samples)

    def predict(self, samples: np.ndarray) -> np.ndarray:
        out = self.forward(samples)
        return np.exp(out) if self.classifier else out

    def close(self) -> None:
        """Nothing outlives this backend's objects."""

    def resources(self) -> Resources:
        count = sum(v.size for v in self.theta.values())
        return Resources(parameter_bytes=2 * 4 * count, artifact_bytes=self.bundle.size(), parameters=int(count))

    # -- acceptance --------------------------------------------------------------------------
    def selftest(self) -> SelftestReport:
        """Replay the bundle's vectors: a forward pass from θ and a full adaptation."""
        vectors = self.bundle.tensors("selftest")
        tolerance = float(self.bundle.manifest["selftest"]["atol"])
        try:
            self.reset()
            errors = [np.abs(self.forward(vectors["forward.samples"]) - vectors[f"forward.{self.output}"]).max()]
            labels = vectors["adapt.pilot_onehot"].argmax(-1) if self.classifier else None
            self.adapt(vectors["adapt.pilot_samples"], labels)
            errors += [np.abs(self.params[k] - vectors[f"adapt.{k}"]).max() for k in self.adapted_names]
            errors.append(np.abs(self.forward(vectors["forward.samples"]) - vectors[f"adapt.{self.output}"]).max())
            if self.fused:   # the fused graph must compute the same frame
                fused, _ = self.frame(vectors["adapt.pilot_samples"], labels, vectors["forward.samples"])
                errors.append(np.abs(fused - vectors[f"adapt.{self.output}"]).max())
        except KeyError as e:
            raise BackendError(f"self-test vectors lack {e}") from None
        except Exception as e:  # the runtime's own errors (a graph that loads but cannot run these inputs)
            raise BackendError(f"self-test could not run: {type(e).__name__}: {e}") from None
        finally:
            self.reset()
        worst = float(max(errors))
        return SelftestReport(passed=bool(worst <= tolerance), max_error=worst, tolerance=tolerance, checks=len(errors))
