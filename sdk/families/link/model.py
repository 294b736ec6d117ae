"""The learned link of monograph §5.3 (Fig. 5.6): an encoder maps the one-hot message s_m to a
codeword of n complex channel uses, the channel of eq. 5.11 convolves it with the taps h and adds
noise, a decoder classifies the received samples. Encoder and decoder are MLPs whose parameters
live in one dict under the prefixes ``enc.`` and ``dec.``.

Real layout of n complex values: [Re x_0 … Re x_{n−1}, Im x_0 … Im x_{n−1}]. The encoder's
codewords are normalised to energy n (unit average power per channel use).

Inside meta-training a sample is a simulator draw x = [noise w (2n reals), taps h (2L reals)]
and its target the one-hot message: the loss (eq. 5.13) runs encoder, channel and decoder, so
it is differentiable with respect to both ends and fits the bilevel core's
``loss(params, x, onehot)`` signature unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metaedge.sdk.models import mlp
from metaedge.sdk.models.mlp import MLPSpec, Params

ENCODER, DECODER = "enc.", "dec."


RTN = "rtn."  # inside the decoder: the radio-transformer network's parameters


@dataclass(frozen=True)
class AutoencoderSpec:
    """Encoder 2^k → hidden (ReLU) → 2n, decoder 2n → hidden (ReLU) → 2^k (the published 16→16→8, 8→16→16).
    With ``rtn_taps`` > 0 the decoder first equalises: a radio-transformer network 2n → 2n → 2n (tanh) →
    2·rtn_taps estimates an inverse filter w from y, and the MLP decodes ȳ = y ∗ w (the published 8→8→8→6)."""

    messages: int = 16
    uses: int = 4
    hidden: tuple[int, ...] = (16,)
    rtn_taps: int = 0

    @property
    def encoder(self) -> MLPSpec:
        return MLPSpec(sizes=(self.messages, *self.hidden, 2 * self.uses))

    @property
    def decoder(self) -> MLPSpec:
        return MLPSpec(sizes=(2 * self.uses, *self.hidden, self.messages))

    @property
    def rtn(self) -> MLPSpec:
        return MLPSpec(sizes=(2 * self.uses, 2 * self.uses, 2 * self.uses, 2 * self.rtn_taps))

    def parts(self) -> dict[str, MLPSpec]:
        return {ENCODER: self.encoder, DECODER: self.decoder, **({DECODER + RTN: self.rtn} if self.rtn_taps else {})}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {prefix + k: s for prefix, spec in self.parts().items() for k, s in spec.shapes().items()}

    def init(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {prefix + k: v for prefix, spec in self.parts().items() for k, v in spec.init(rng).items()}


def is_autoencoder(params: Params) -> bool:
    return ENCODER + "l0.weight" in params


def part(params: Params, prefix: str) -> Params:
    """The encoder's or decoder's own parameters, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def decoder_keys(params: Params) -> tuple[str, ...]:
    return tuple(k for k in params if k.startswith(DECODER))


def encode(params: Params, onehot: Tensor) -> Tensor:
    """Codewords [N, 2n] of the one-hot messages [N, 2^k], each scaled to energy n."""
    x = mlp.outputs(part(params, ENCODER), onehot)
    uses = x.shape[-1] // 2
    return x * torch.sqrt(uses / (x**2).sum(-1, keepdim=True).clamp_min(1e-12))


def channel(codewords: Tensor, taps: Tensor, noise: Tensor) -> Tensor:
    """y = h ∗ x + w (eq. 5.11) per sample: the block's linear convolution with L taps, truncated to its n
    uses (ISI inside the block; a guard interval between blocks). All arguments real-laid-out: codewords
    and noise [N, 2n], taps [N, 2L]."""
    uses, length = codewords.shape[-1] // 2, taps.shape[-1] // 2
    steps = torch.arange(uses)
    lag = steps[:, None] - steps[None, :]  # H[t, s] = h[t − s]
    inside = ((lag >= 0) & (lag < length)).to(codewords.dtype)
    index = lag.clamp(0, length - 1)
    h_re, h_im = taps[:, :length][:, index] * inside, taps[:, length:][:, index] * inside
    x_re, x_im = codewords[:, :uses, None], codewords[:, uses:, None]
    y_re = (h_re @ x_re - h_im @ x_im)[..., 0]
    y_im = (h_re @ x_im + h_im @ x_re)[..., 0]
    return torch.cat([y_re, y_im], dim=-1) + noise


def received(params: Params, x: Tensor, onehot: Tensor) -> Tensor:
    """The decoder's inputs for simulator draws ``x`` = [noise, taps] carrying messages ``onehot``."""
    uses = params[DECODER + "l0.weight"].shape[0] // 2
    return channel(encode(params, onehot), x[:, 2 * uses :], x[:, : 2 * uses])


def equalised(decoder: Params, y: Tensor) -> Tensor:
    """ȳ = y ∗ w with w = RTN(y) (tanh hidden layers, linear output), truncated to the block; y itself without an RTN."""
    if RTN + "l0.weight" not in decoder:
        return y
    rtn, h = part(decoder, RTN), y
    depth = sum(1 for k in rtn if k.endswith(".weight"))
    for i in range(depth):
        h = torch.addmm(rtn[f"l{i}.bias"], h, rtn[f"l{i}.weight"])
        h = torch.tanh(h) if i < depth - 1 else h
    return channel(y, h, torch.zeros_like(y))


def has_rtn(params: Params) -> bool:
    """A receiver's own parameters (the decoder without its prefix) that start with a radio-transformer network."""
    return RTN + "l0.weight" in params and ENCODER + "l0.weight" not in params


def receiver_log_probs(decoder: Params, y: Tensor) -> Tensor:
    """The receiver alone (decoder parameters without their prefix): message log-probabilities for y [N, 2n]."""
    return mlp.forward(decoder, equalised(decoder, y))


def receiver_loss(decoder: Params, y: Tensor, onehot: Tensor) -> Tensor:
    return mlp.task_loss(decoder, equalised(decoder, y), onehot)


def task_loss(params: Params, x: Tensor, onehot: Tensor) -> Tensor:
    """The link's cross-entropy (eq. 5.13) for simulator draws ``x`` and messages ``onehot``."""
    return receiver_loss(part(params, DECODER), received(params, x, onehot), onehot)


def decode(params: Params, y: Tensor) -> Tensor:
    """Message log-probabilities for received samples ``y`` [N, 2n]."""
    return receiver_log_probs(part(params, DECODER), y)
