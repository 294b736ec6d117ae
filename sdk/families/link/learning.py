"""Training, adaptation and scoring of the learned link (monograph §5.3); its benchmark is ``bench``."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.func import vmap

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.link import model as autoencoder
from metaedge.sdk.families.link.config import TRAINABLE, LinkBench
from metaedge.sdk.families.link.model import AutoencoderSpec
from metaedge.sdk.families.link.task import LinkTasks
from metaedge.sdk.meta import get_algorithm
from metaedge.sdk.meta.core import STEP_PREFIX, InnerLoop, adapt
from metaedge.sdk.meta.outer import fit
from metaedge.sdk.stats import summarise


def decoder_only(method: str) -> bool:
    return method.endswith("-rx")


def inner_loop(method: str, theta: dict, cfg: LinkBench) -> InnerLoop:
    """One adaptation step on what ``method`` adapts: the decoder for a deployable receiver, else both ends."""
    return InnerLoop(lr=cfg.inner_lr, steps=1, adapt=autoencoder.decoder_keys(theta) if decoder_only(method) else None, loss=autoencoder.task_loss)


def algorithm_of(method: str) -> str:
    return method.removesuffix("-rx")


def spec_of(cfg: LinkBench) -> AutoencoderSpec:
    return AutoencoderSpec(messages=cfg.link.messages, uses=cfg.link.uses, hidden=cfg.hidden, rtn_taps=cfg.rtn_taps)


def initial(method: str, cfg: LinkBench) -> dict[str, torch.Tensor]:
    """The network's initialisation, with Meta-SGD's step sizes (all α) where the method learns them."""
    init = spec_of(cfg).init(np.random.default_rng([cfg.seed, 1]))
    if method != "scratch" and get_algorithm(algorithm_of(method)).learned_steps:
        init.update({STEP_PREFIX + k: np.full_like(v, cfg.inner_lr) for k, v in list(init.items())})
    return {k: torch.from_numpy(v) for k, v in init.items()}


def onehot(messages: np.ndarray, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(messages), classes).to(torch.float32)


def meta_training(method: str, cfg: LinkBench) -> tuple:
    """What meta-training ``method`` needs: (objective, θ₀, inner loop, batches), ``batches(i)`` step i's channels
    with fresh messages and noise."""
    if method not in TRAINABLE:
        raise UserError(f"unknown link method '{method}'; choose from {', '.join(TRAINABLE)} or scratch")
    theta = initial(method, cfg)
    torch.manual_seed(cfg.seed)
    env = LinkTasks(cfg.link, seed=cfg.seed)
    pool, rng, m = env.channels("train", cfg.meta_channels), env.rng("train", 1), cfg.link.messages

    def batch(_: int) -> tuple[torch.Tensor, ...]:
        chosen = pool[rng.choice(cfg.meta_channels, cfg.tasks_per_batch, replace=cfg.meta_channels < cfg.tasks_per_batch)]
        tr, va = env.pilots(m), env.messages((len(chosen), m), rng)
        return (
            torch.from_numpy(env.draws(chosen, tr, rng)),
            onehot(np.broadcast_to(tr, va.shape).copy(), m),
            torch.from_numpy(env.draws(chosen, va, rng)),
            onehot(va, m),
        )

    return get_algorithm(algorithm_of(method)).objective, theta, inner_loop(method, theta, cfg), batch


def train(method: str, cfg: LinkBench, progress: Callable[[int, dict, float], None] | None = None) -> dict[str, torch.Tensor]:
    """θ for ``method``: meta-trained (or jointly trained) on K channels; the initialisation for scratch.
    ``progress(iteration, θ, meta-loss)`` is called after every outer step (θ detached, not to be modified)."""
    if method == "scratch":
        return initial(method, cfg)
    return fit(*meta_training(method, cfg), cfg.iterations, cfg.outer_lr, progress)


@torch.no_grad()
def block_errors(params: dict[str, torch.Tensor], channels: np.ndarray, env: LinkTasks, count: int, rng: np.random.Generator) -> np.ndarray:
    """Per-channel BLER of per-channel ``params`` (leading channel axis) on ``count`` random messages each."""
    messages = env.messages((len(channels), count), rng)
    x = torch.from_numpy(env.draws(channels, messages, rng))
    decided = vmap(lambda p, xs, y: autoencoder.decode(p, autoencoder.received(p, xs, y)).argmax(-1))(
        params, x, onehot(messages, env.config.messages)
    )
    return (decided.numpy() != messages).mean(1)


def bler_curve(
    method: str,
    theta: dict[str, torch.Tensor],
    cfg: LinkBench,
    split: str = "test",
    channels: int | None = None,
    steps: tuple[int, ...] | None = None,
) -> dict[str, dict]:
    """BLER (mean over new channels of ``split``, with its 95 % interval) after each number of adaptation steps."""
    env = LinkTasks(cfg.link, seed=cfg.seed)
    taps, rng, m = env.channels(split, channels or cfg.test_channels), env.rng(split, 1), cfg.link.messages
    inner = inner_loop(method, theta, cfg)
    step = vmap(lambda p, x, y: adapt(p, x, y, inner), in_dims=(0, 0, None))
    params = {k: v.expand(len(taps), *v.shape).clone() for k, v in theta.items()}
    pilots = onehot(env.pilots(m), m)
    curve, done = {}, 0
    for target in sorted(steps or cfg.steps):
        for _ in range(target - done):
            params = step(params, torch.from_numpy(env.draws(taps, env.pilots(m), rng)), pilots)
        done = target
        curve[str(target)] = summarise(block_errors(params, taps, env, cfg.test_messages, rng))
    return curve
