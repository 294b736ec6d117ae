"""Receivers adapted on the device with ONNX Runtime and numpy alone.

The bundle's ``adapt_step`` graph maps (parameters, pilots, one-hot labels) to the adapted
parameters; the backend runs it ``inner_steps`` times, feeding the adapted parameters
back, then ``forward`` on the payload. One intra-op thread by default, as on a small device.

Three ways to run the inner loop (``metaedge bench device`` times them side by side):
- ``onnx_loop`` (default): all steps in one call of the bundle's optional ``adapt_loop``
  graph (an ONNX ``Loop`` around ``adapt_step``), which saves a runtime call per step;
  bundles without that graph (one-step bundles leave it out) fall back to ``iobinding``;
- ``iobinding``: θ is converted to ONNX Runtime values once at load; adapted parameters
  pass from step to step and into ``forward`` as ORT values, no numpy copies;
- ``step_loop``: a plain ``session.run`` per step with numpy feeds.

A one-step bundle carries a fused ``frame`` graph instead: adaptation and inference in one
call, which every mode but ``step_loop`` uses for a whole frame.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import numpy as np
import onnxruntime as ort

from metaedge.backends.base import AdaptReport, BackendError, Frame, Receiver, Resources, SelftestReport
from metaedge.backends.onnx.policy import PolicyError, check_model
from metaedge.deploy import manifest as m
from metaedge.deploy.bundle import Bundle
from metaedge.deploy.noise import weight_draws

_STDOUT = threading.Lock()  # guards the redirection of sys.stdout while a session loads


class OnnxBackend(Receiver):
    target = "onnx"

    MODES = ("onnx_loop", "iobinding", "step_loop")

    def __init__(self, threads: int = 1, mode: str = MODES[0]) -> None:
        if threads < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        if mode not in self.MODES:
            raise BackendError(f"adaptation mode '{mode}' is unknown; use one of {', '.join(self.MODES)}")
        self.threads, self.mode = threads, mode
        self.bundle: Bundle | None = None

    @classmethod
    def configure(cls, threads: int, options: dict) -> "OnnxBackend":
        return cls(threads=threads, mode=options.get("mode", cls.MODES[0]))

    @classmethod
    def inspect(cls, bundle: Bundle) -> None:
        """Every graph passes the content policy (external data, operator domains, functions, sizes)."""
        for role in bundle.manifest.graphs:
            if role in bundle.artifacts:
                try:
                    check_model(bundle.artifacts[role], bundle.manifest.opset, f"graph '{role}'")
                except PolicyError as e:
                    raise BackendError(f"content policy: {e}") from None

    # -- loading -----------------------------------------------------------------------------
    def _session(self, role: str) -> ort.InferenceSession:
        """A session for the graph ``role``, whose input and output names are checked against the manifest."""
        session = self._open(role)
        self._check_io(role, session)
        return session

    def _open(self, role: str) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            # ONNX Runtime prints provider diagnostics to stdout; on a device serving over stdio that is
            # the protocol stream, so they go to stderr. sys.stdout is the process's: receivers loading in
            # several threads at once (a fleet's devices) take turns, or one would restore another's redirection
            with _STDOUT, contextlib.redirect_stdout(sys.stderr):
                return ort.InferenceSession(self.bundle.artifacts[role], options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            raise BackendError(f"graph '{role}' cannot be loaded by ONNX Runtime: {e}") from None

    def load(self, bundle: Bundle) -> Resources:
        if bundle.target != self.target:
            raise BackendError(f"bundle target is '{bundle.target}', this device runs '{self.target}'")
        self.bundle = bundle
        manifest = bundle.manifest
        if manifest.algorithm.inner_steps is None:
            raise BackendError("algorithm.inner_steps is missing: an ONNX bundle says how many steps to adapt")
        # a classifier adapts on labelled pilots and returns class probabilities; a predictor (task.outputs)
        # adapts on its pilots alone and returns its outputs (bundle-format.md §6)
        self.classifier = not manifest.task.predictor
        self.fall_back_to(manifest.task)
        self.output = manifest.graphs[m.FORWARD].outputs[0].name
        self.steps = manifest.algorithm.inner_steps
        self.onehot_table = np.eye(manifest.task.classes, dtype=np.float32) if self.classifier else None
        theta = bundle.tensors(m.THETA)
        for p in manifest.parameters:
            if p.name not in theta or theta[p.name].shape != p.shape:
                raise BackendError(f"θ lacks parameter {p.name} of shape {list(p.shape)}")
        self.theta = {p.name: theta[p.name].astype(np.float32) for p in manifest.parameters}
        self.adapted_names = manifest.adapted
        try:
            draws = weight_draws(manifest.algorithm.raw.get("noise"), self.theta)
        except ValueError as e:
            raise BackendError(str(e)) from None
        self.fixed = {role: self._fixed_inputs(role, draws) for role in (m.ADAPT_STEP, m.FORWARD)}
        self.forward_session = self._session(m.FORWARD)
        self.adapt_session = self._session(m.ADAPT_STEP)
        self.theta_ort = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in self.theta.items()}
        self.fixed_ort = {role: {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in fixed.items()} for role, fixed in self.fixed.items()}
        # one-step bundles carry a fused frame graph (spec §7.6): adaptation and inference in one call
        self.frame_session = None
        if m.FRAME in bundle.artifacts and self.mode != "step_loop":
            self.frame_session = self._session(m.FRAME)
        self.effective_mode = self.mode
        if self.mode == "onnx_loop":
            if m.ADAPT_LOOP in bundle.artifacts:
                self.loop_session = self._session(m.ADAPT_LOOP)
            else:
                self.effective_mode = "iobinding"
        self.reset()
        count = sum(v.size for v in self.theta.values())
        return Resources(parameter_bytes=2 * 4 * count, artifact_bytes=self.bundle.size(), parameters=int(count))

    def _fixed_inputs(self, role: str, draws: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """A graph's inputs that stay the same every frame: a proximal step's anchors, θ's adapted parameters
        (iMAML, Prox-MAML, ALSET; spec §7.2), and a Gaussian posterior's weight draws (spec §7.4)."""
        fixed = {}
        for port in self.bundle.manifest.graphs[role].inputs:
            if port.role == m.ROLE_ANCHOR:
                if role != m.ADAPT_STEP or port.parameter not in self.adapted_names:
                    raise BackendError(f"{role} has an anchor input for a parameter that does not adapt")
                fixed[port.name] = self.theta[port.parameter]
            elif port.role == m.ROLE_NOISE:
                value = draws.get(port.stream, {}).get(port.parameter)
                if value is None:
                    raise BackendError(
                        f"{role} input '{port.name}' reads draws of stream '{port.stream}' for "
                        f"parameter '{port.parameter}', which algorithm.noise does not define"
                    )
                fixed[port.name] = value
        return fixed

    def _check_io(self, role: str, session: ort.InferenceSession) -> None:
        graph = self.bundle.manifest.graphs.get(role)
        if graph is None:
            raise BackendError(f"the bundle carries graph '{role}' but graphs.{role} does not declare its inputs and outputs")
        got_in = [i.name for i in session.get_inputs()]
        got_out = [o.name for o in session.get_outputs()]
        if got_in != graph.input_names or got_out != graph.output_names:
            raise BackendError(
                f"graph '{role}' has inputs {got_in} and outputs {got_out}; the manifest declares {graph.input_names} and {graph.output_names}"
            )

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
        labels = {m.PILOT_ONEHOT: self.onehot_table[pilot_labels]} if self.classifier else {}
        if self.effective_mode == "step_loop":
            feeds = {**self.params, **self.fixed[m.ADAPT_STEP], m.PILOT_SAMPLES: pilots, **labels}
            for _ in range(self.steps):
                feeds.update(zip(self.adapted_names, self.adapt_session.run(None, feeds)))
            self.current.update({k: ort.OrtValue.ortvalue_from_numpy(feeds[k]) for k in self.adapted_names})
        else:
            loop = self.effective_mode == "onnx_loop"
            session = self.loop_session if loop else self.adapt_session
            binding = session.io_binding()
            binding.bind_cpu_input(m.PILOT_SAMPLES, pilots)
            for name, value in labels.items():
                binding.bind_cpu_input(name, value)
            if loop:
                binding.bind_cpu_input(m.STEPS, np.array(self.steps, np.int64))
            for name, value in self.fixed_ort[m.ADAPT_STEP].items():
                binding.bind_ortvalue_input(name, value)
            for name, value in self.current.items():
                binding.bind_ortvalue_input(name, value)
            for _ in range(1 if loop else self.steps):
                # fresh output buffers every call: ORT reuses bound outputs, which are the next step's inputs
                binding.clear_binding_outputs()
                for name in self.adapted_names:
                    binding.bind_output(m.adapted_name(name), "cpu")
                session.run_with_iobinding(binding)
                outputs = binding.get_outputs()
                for name, value in zip(self.adapted_names, outputs):
                    binding.bind_ortvalue_input(name, value)
            self.current.update(zip(self.adapted_names, outputs))
        return AdaptReport(steps=self.steps, seconds=time.perf_counter() - start)

    @property
    def fused(self) -> bool:
        """Whether frames run the bundle's fused graph (one call per frame)."""
        return self.frame_session is not None

    def fused_log_probs(self, frame: Frame) -> tuple[np.ndarray, float, int] | None:
        """One call of the bundle's fused ``frame`` graph on the pilots followed by the payload: the adapted
        parameters stay inside the runtime, and the backend is still at θ afterwards."""
        if self.frame_session is None or frame.labels is None:
            return None
        start = time.perf_counter()
        out = self.run_fused(frame.pilots, frame.labels, np.concatenate([frame.pilots, frame.payload]))
        return out, time.perf_counter() - start, self.steps

    def run_fused(self, pilot_samples: np.ndarray, pilot_labels: np.ndarray | None, samples: np.ndarray) -> np.ndarray:
        """The forward output on ``samples`` after adapting θ on the pilots, by the fused graph."""
        feeds = {
            **self.theta,
            **self.fixed[m.ADAPT_STEP],
            m.PILOT_SAMPLES: np.ascontiguousarray(pilot_samples, np.float32),
            **({m.PILOT_ONEHOT: self.onehot_table[pilot_labels]} if self.classifier else {}),
            m.SAMPLES: np.ascontiguousarray(samples, np.float32),
        }
        return self.frame_session.run(None, feeds)[0]

    def forward(self, samples: np.ndarray) -> np.ndarray:
        """The forward graph's output: log-probabilities (classifier) or the outputs (predictor)."""
        samples = np.ascontiguousarray(samples, np.float32)
        if self.effective_mode == "step_loop":
            return self.forward_session.run(None, {**self.params, **self.fixed[m.FORWARD], m.SAMPLES: samples})[0]
        binding = self.forward_session.io_binding()
        for name, value in (self.current | self.fixed_ort[m.FORWARD]).items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_cpu_input(m.SAMPLES, samples)
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

    # -- acceptance --------------------------------------------------------------------------
    def selftest(self) -> SelftestReport:
        """Replay the bundle's vectors: a forward pass from θ and a full adaptation."""
        vectors = self.bundle.tensors(m.SELFTEST)
        tolerance = self.bundle.manifest.selftest.atol
        try:
            self.reset()
            errors = [np.abs(self.forward(vectors["forward.samples"]) - vectors[f"forward.{self.output}"]).max()]
            labels = vectors["adapt.pilot_onehot"].argmax(-1) if self.classifier else None
            self.adapt(vectors["adapt.pilot_samples"], labels)
            errors += [np.abs(self.params[k] - vectors[f"adapt.{k}"]).max() for k in self.adapted_names]
            errors.append(np.abs(self.forward(vectors["forward.samples"]) - vectors[f"adapt.{self.output}"]).max())
            if self.fused:  # the fused graph must compute the same frame
                fused = self.run_fused(vectors["adapt.pilot_samples"], labels, vectors["forward.samples"])
                errors.append(np.abs(fused - vectors[f"adapt.{self.output}"]).max())
        except KeyError as e:
            raise BackendError(f"self-test vectors lack {e}") from None
        except Exception as e:  # the runtime's own errors (a graph that loads but cannot run these inputs)
            raise BackendError(f"self-test could not run: {type(e).__name__}: {e}") from None
        finally:
            self.reset()
        worst = float(max(errors))
        return SelftestReport(passed=bool(worst <= tolerance), max_error=worst, tolerance=tolerance, checks=len(errors))
