"""The spiking receiver as Lava processes, built once and run chunk by chunk.

    RingBuffer(inputs) → Dense(W_in) → LIF(hidden, biases) → LearningDense(θ, three-factor rule) → ErrorLIF(out) → sink
                                                            ↑  bap, y1, y2, y3   ←─────────┘      ↑
                                                                                RingBuffer(teacher) → third-factor port

``ErrorLIF`` (``processes/error_lif``) is our output neuron, which sends the rule's third factors.
Every run is a whole ring buffer (``spec.chunk`` symbols), so buffer index and stream step
stay aligned; the state (u, v, Dense buffers, traces) is zeroed before each stream, and
θ is written with ``weights.set`` — the network is never rebuilt per frame.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
import weakref

import numpy as np
from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
from lava.magma.core.run_conditions import RunSteps
from lava.proc.dense.process import Dense, LearningDense
from lava.proc.io.sink import RingBuffer as SpikeSink
from lava.proc.io.source import RingBuffer as SpikeSource
from lava.proc.lif.process import LIF

from metaedge.backends.base import BackendError
from metaedge.backends.loihi.network import RULE, TRACE_IMPULSE, VOLTAGE_SHIFT, FixedPoint, SnnParameters, SnnSpec, decay_int
from metaedge.backends.loihi.processes.error_lif import ErrorLIF

FIXED_SEED = 0  # the fixed-point learning engine rounds stochastically


def learning_rule(spec: SnnSpec, fixed: FixedPoint | None = None) -> Loihi3FLearningRule:
    # every trace gets a positive τ: in the float model an unused trace with τ = 0 becomes NaN
    if fixed is None:
        return Loihi3FLearningRule(dw=RULE, x1_impulse=spec.trace_impulse, x1_tau=spec.trace_tau, x2_impulse=0.0, x2_tau=1.0, t_epoch=1)
    return Loihi3FLearningRule(
        dw=fixed.rule, x1_impulse=TRACE_IMPULSE, x1_tau=int(round(spec.trace_tau)), x2_impulse=0, x2_tau=1, t_epoch=1, rng_seed=FIXED_SEED
    )


def float_layers(spec: SnnSpec, params: SnnParameters, theta: np.ndarray) -> tuple:
    """Input Dense, hidden LIF, plastic LearningDense and output neuron for Lava's floating-point models."""
    out = ErrorLIF(
        shape=(spec.classes,),
        du=spec.out_du,
        dv=spec.out_dv,
        vth=spec.out_vth,
        learning_rates=params.learning_rates,
        surrogate_width=spec.surrogate_width,
        learning_rule=learning_rule(spec),
    )
    return (
        Dense(weights=params.input_weights),
        LIF(shape=(spec.hidden,), du=spec.hidden_du, dv=spec.hidden_dv, vth=spec.hidden_vth, bias_mant=params.hidden_bias),
        LearningDense(weights=theta, learning_rule=learning_rule(spec)),
        out,
    )


def fixed_layers(spec: SnnSpec, params: SnnParameters, theta: np.ndarray, fixed: FixedPoint) -> tuple:
    """The same layers as Loihi's integers (bundle-format §14.8)."""
    from lava.utils.weightutils import SignMode

    scale = 2**fixed.weight_exp
    bias_mant, bias_exp = fixed.hidden_bias(params)
    hidden = LIF(
        shape=(spec.hidden,),
        du=decay_int(spec.hidden_du, 1),
        dv=decay_int(spec.hidden_dv, 0),
        vth=fixed.hidden_threshold(spec),
        bias_mant=bias_mant,
        bias_exp=bias_exp,
    )
    out = ErrorLIF(
        shape=(spec.classes,),
        du=decay_int(spec.out_du, 1),
        dv=decay_int(spec.out_dv, 0),
        vth=int(round(spec.out_vth * scale)),
        learning_rates=fixed.y_scale.astype(float),
        surrogate_width=spec.surrogate_width * scale * 2**VOLTAGE_SHIFT,
        learning_rule=learning_rule(spec, fixed),
    )
    plastic = LearningDense(weights=fixed.quantise(theta), learning_rule=learning_rule(spec, fixed), sign_mode=SignMode.MIXED)
    return Dense(weights=fixed.input_weights(params), sign_mode=SignMode.MIXED), hidden, plastic, out


class LavaReceiver:
    """The network on Lava's Loihi 2 simulation (``floating_pt``, or ``fixed_pt``); ``stop`` ends its runtime processes.

    Every call into the runtime runs under a watchdog: an exception inside a Lava process
    leaves the runtime waiting forever, so a call that takes longer than ``timeout_s``
    tears the runtime down (its processes killed, its shared memory unlinked) and raises
    ``BackendError``; the receiver is then ``stopped``."""

    def __init__(
        self,
        spec: SnnSpec,
        params: SnnParameters,
        theta: np.ndarray,
        timeout_s: float = 120.0,
        hardware: bool = False,
        fixed: FixedPoint | None = None,
    ) -> None:
        """``fixed``: run Lava's fixed-point models with θ as integers (``FixedPoint``); None: floating point."""
        from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg

        self.spec, self.timeout_s, self.fixed = spec, timeout_s, fixed
        self.length = spec.chunk * spec.period
        self.source = SpikeSource(data=np.zeros((spec.inputs, self.length), dtype=self._dtype))
        layers = float_layers(spec, params, theta) if fixed is None else fixed_layers(spec, params, theta, fixed)
        self.dense, self.hidden, self.plastic, self.out = layers
        self.teacher = SpikeSource(data=np.zeros((spec.classes, self.length), dtype=self._dtype))
        self.sink = SpikeSink(shape=(spec.classes,), buffer=self.length)
        self.source.s_out.connect(self.dense.s_in)
        self.dense.a_out.connect(self.hidden.a_in)
        self.hidden.s_out.connect(self.plastic.s_in)
        self.plastic.a_out.connect(self.out.a_in)
        self.out.s_out.connect(self.sink.a_in)
        self.out.s_out_bap.connect(self.plastic.s_in_bap)
        for k in (1, 2, 3):
            getattr(self.out, f"s_out_y{k}").connect(getattr(self.plastic, f"s_in_y{k}"))
        self.teacher.s_out.connect(self.out.a_third_factor_in)
        # hardware (lava-loihi installed): Lava places what has a chip model on Loihi 2 and the rest on the host CPU
        self.run_cfg = Loihi2HwCfg() if hardware else Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt")
        self.timesteps = 0
        self.stopped = False
        _LIVE.add(self)
        self._guarded(self._run_chunk)  # compiles the network and starts its runtime processes, on silence

    def _run_chunk(self) -> None:
        self.source.run(condition=RunSteps(num_steps=self.length, blocking=True), run_cfg=self.run_cfg)
        self.timesteps += self.length

    def _guarded(self, fn, *args):
        """``fn(*args)`` under the watchdog; any failure tears the runtime down."""
        if self.stopped:
            raise BackendError("the Lava runtime of this network was stopped; reload the bundle")
        result: dict = {}

        def call() -> None:
            try:
                result["value"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 — reported to the caller below
                result["error"] = e

        worker = threading.Thread(target=call, name="lava-call", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive() or "error" in result:
            self._teardown()
            reason = (
                f"did not answer within {self.timeout_s:g} s" if worker.is_alive() else f"failed: {type(result['error']).__name__}: {result['error']}"
            )
            raise BackendError(f"the Lava runtime {reason}; it was stopped (processes killed, shared memory freed)")
        return result.get("value")

    @property
    def _dtype(self):
        return np.float64 if self.fixed is None else np.int64

    def set_weights(self, theta: np.ndarray) -> None:
        values = np.asarray(theta, dtype=np.float64) if self.fixed is None else self.fixed.quantise(theta)
        self._guarded(self.plastic.weights.set, values)

    def weights(self) -> np.ndarray:
        values = self._guarded(self.plastic.weights.get)
        return values if self.fixed is None else self.fixed.weights(values)

    def _zero_state(self) -> None:
        for var in (self.hidden.u, self.hidden.v, self.out.u, self.out.v, self.dense.a_buff, self.plastic.a_buff, self.plastic.x1, self.plastic.x2):
            var.set(np.zeros(var.shape, dtype=self._dtype))

    def _chunk(self, inputs: np.ndarray, teacher: np.ndarray) -> np.ndarray:
        self.source.data.set(np.ascontiguousarray(inputs.T, dtype=self._dtype))
        self.teacher.data.set(np.ascontiguousarray(teacher.T, dtype=self._dtype))
        self._run_chunk()
        return self.sink.data.get().T

    def run_stream(self, inputs: np.ndarray, teacher: np.ndarray) -> np.ndarray:
        """Output spikes [steps, classes] for rasters [steps, inputs] and [steps, classes] (whole chunks)."""
        steps = inputs.shape[0]
        if steps % self.length:
            raise ValueError(f"stream of {steps} steps is not a whole number of {self.length}-step chunks")
        self._guarded(self._zero_state)
        out = np.zeros((steps, self.spec.classes))
        for start in range(0, steps, self.length):
            block = slice(start, start + self.length)
            out[block] = self._guarded(self._chunk, inputs[block], teacher[block])
        return out

    def stop(self) -> None:
        """End the runtime cleanly; if it does not answer, tear it down."""
        if self.stopped:
            return
        try:
            self._guarded(self.source.stop)
        except BackendError:
            pass
        self.stopped = True
        _LIVE.discard(self)

    def _teardown(self) -> None:
        """Kill the runtime's processes and free its shared memory (lava-nc 0.10.0 internals)."""
        self.stopped = True
        _LIVE.discard(self)
        runtime = getattr(self.source, "runtime", None)
        infra = getattr(runtime, "_messaging_infrastructure", None)
        if infra is None:
            return
        for actor in list(infra.actors):
            if actor.is_alive():
                actor.kill()
            multiprocessing.Process.join(actor, 5)  # Lava's SystemProcess.join takes no timeout
        smm = infra.smm
        if smm is not None and smm._manager is not None:
            for handle in smm._shared_memory_handles:
                for release in (handle.close, handle.unlink):
                    try:
                        release()
                    except (OSError, FileNotFoundError):
                        pass
            smm._shared_memory_handles.clear()
            smm._manager.shutdown()
            smm._manager = None
        watchdog = getattr(runtime, "_watchdog_manager", None)
        if watchdog is not None:
            try:
                watchdog.stop()
            except Exception:  # noqa: BLE001 — best effort on a runtime that is being abandoned
                pass


_LIVE: "weakref.WeakSet[LavaReceiver]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Interpreter exit (including SIGTERM handled by the server) stops every runtime still running."""
    for receiver in list(_LIVE):
        receiver.stop()
