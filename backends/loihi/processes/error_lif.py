"""``ErrorLIF``: the output neuron of the spiking receiver, as a Lava process with a float ProcessModel.

The stock learning LIF models never send on the y ports; this one computes the
three-factor rule's per-neuron error and post-synaptic term from a teacher signal on its
third-factor port (c_i ∈ {−1, 0, +1}: should be silent, no learning, should spike) and sends
y2 = η_i·post·max(e, 0), y3 = η_i·post·max(−e, 0) (η_i: neuron i's learning rate) with e_i = |c_i|·([c_i > 0] − s_i) and
post_i = 1 / (1 + |v_i − vth| / width)² on the membrane before reset (monograph eq. 6.4–6.5).

It lives alone in this package because Lava looks for ProcessModels by executing every
module next to the process's own.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
from lava.magma.core.model.py.neuron import LearningNeuronModelFixed, LearningNeuronModelFloat
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat
from lava.proc.lif.process import LearningLIF


class ErrorLIF(LearningLIF):
    """LIF output neuron that emits the three-factor rule's error and post-synaptic terms on y2/y3."""

    def __init__(
        self, *, shape, du: float, dv: float, vth: float, learning_rates, surrogate_width: float, learning_rule: Loihi3FLearningRule, **kwargs
    ) -> None:
        super().__init__(shape=shape, du=du, dv=dv, vth=vth, learning_rule=learning_rule, **kwargs)
        self.learning_rates = Var(shape=shape, init=np.asarray(learning_rates, dtype=float))
        self.surrogate_width = Var(shape=(1,), init=surrogate_width)


@implements(proc=ErrorLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyErrorLIFModelFloat(LearningNeuronModelFloat, AbstractPyLifModelFloat):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)
    learning_rates: np.ndarray = LavaPyType(np.ndarray, float)
    surrogate_width: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        drive = self.a_in.recv()
        teacher = self.a_third_factor_in.recv()
        self.subthr_dynamics(activation_in=drive)
        spikes = self.v > self.vth
        post = 1.0 / np.square(1.0 + np.abs(self.v - self.vth) / self.surrogate_width[0])
        err = np.abs(teacher) * ((teacher > 0).astype(float) - spikes)
        self.y1 = np.zeros_like(self.v)
        self.y2 = self.learning_rates * post * np.maximum(err, 0.0)
        self.y3 = self.learning_rates * post * np.maximum(-err, 0.0)
        self.v[spikes] = 0.0
        self.s_out.send(spikes)
        self.s_out_bap.send(spikes)
        self.s_out_y1.send(self.y1)
        self.s_out_y2.send(self.y2)
        self.s_out_y3.send(self.y3)


@implements(proc=ErrorLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyErrorLIFModelFixed(LearningNeuronModelFixed, AbstractPyLifModelFixed):
    """Fixed point: Loihi's integer LIF; ``learning_rates`` holds each neuron's 7-bit scale of y2/y3 (the
    rule's m·2^e constant carries the rest of η_i) and ``surrogate_width`` the width in internal voltage units."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    learning_rates: np.ndarray = LavaPyType(np.ndarray, float)
    surrogate_width: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        drive = self.a_in.recv()
        teacher = self.a_third_factor_in.recv()
        if not self.isthrscaled:
            self.effective_vth = np.left_shift(self.vth, self.vth_shift)
            self.isthrscaled = True
        if not self.isbiasscaled:
            self.scale_bias()
        self.subthr_dynamics(activation_in=drive)
        spikes = self.v > self.effective_vth
        post = 1.0 / np.square(1.0 + np.abs(self.v - self.effective_vth) / self.surrogate_width[0])
        err = np.abs(teacher) * ((teacher > 0).astype(np.int32) - spikes)
        scale = self.learning_rates
        self.y1 = np.zeros(self.v.shape, dtype=np.int32)
        self.y2 = np.round(scale * post * np.maximum(err, 0)).astype(np.int32)
        self.y3 = np.round(scale * post * np.maximum(-err, 0)).astype(np.int32)
        self.v[spikes] = 0
        self.s_out.send(spikes)
        self.s_out_bap.send(spikes)
        self.s_out_y1.send(self.y1)
        self.s_out_y2.send(self.y2)
        self.s_out_y3.send(self.y3)
