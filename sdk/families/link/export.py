"""The learned link's receiver as an ONNX bundle: the decoder (a plain MLP on the 2n received reals) and
its adaptation on pilots, with the encoder's codebook in the task section for the transmitter side.

Why a codebook: the encoder takes a one-hot message, so it is exactly a table of 2^k codewords; the
transmitter sends ``codebook[m]`` and needs no network, no runtime and no update when the receiver is
re-deployed with the same θ. Only runs whose inner loop adapts the decoder alone (methods ``*-rx``)
export: the device has pilots, not the channel simulator the encoder's adaptation needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.link import model as autoencoder
from metaedge.sdk.families.link.learning import algorithm_of, decoder_only, spec_of
from metaedge.sdk.families.link.model import DECODER
from metaedge.sdk.families.link.run import bench_config, load_link_run
from metaedge.sdk.families.link.task import LinkConfig, LinkTasks
from metaedge.sdk.meta.core import STEP_PREFIX, InnerLoop
from metaedge.sdk.targets.onnx import Receiver, mlp_model, selftest_vectors

SELFTEST_SAMPLES = 64


def codebook(theta: dict[str, torch.Tensor], messages: int) -> np.ndarray:
    """The encoder's codewords [2^k, 2n] (energy n each), row m for message m."""
    with torch.no_grad():
        return autoencoder.encode(theta, torch.eye(messages)).numpy()


def receiver_params(theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's parameters (and its learned step sizes) under plain MLP names: dec.l0.weight → l0.weight."""
    out = {}
    for k, v in theta.items():
        if k.startswith(DECODER):
            out[k[len(DECODER) :]] = v
        elif k.startswith(STEP_PREFIX + DECODER):
            out[STEP_PREFIX + k[len(STEP_PREFIX + DECODER) :]] = v
    return out


def task_section(link: LinkConfig, book: np.ndarray) -> dict:
    n = link.uses
    return {
        "name": "link",
        "features": [f"Re y{t}" for t in range(n)] + [f"Im y{t}" for t in range(n)],
        "classes": link.messages,
        "codebook": book.tolist(),
        "pilot_sequence": list(range(link.messages)),
        "bits": link.bits,
        "uses": n,
        "taps": link.taps,
        "ebn0_db": link.ebn0_db,
        "noise_var": link.noise_var,
    }


def received(link: LinkConfig, book: np.ndarray, channels: np.ndarray, messages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a receiver sees [channels, N, 2n] when the transmitter sends ``codebook[messages]`` over ``channels``."""
    env = LinkTasks(link)
    noise = env.noise(messages.shape, rng)
    taps = np.broadcast_to(channels[:, None, :], (*messages.shape, channels.shape[-1])).reshape(-1, channels.shape[-1])
    y = autoencoder.channel(
        torch.from_numpy(book[messages.reshape(-1)]),
        torch.from_numpy(np.ascontiguousarray(taps)),
        torch.from_numpy(noise.reshape(-1, noise.shape[-1])),
    )
    return y.numpy().reshape(*messages.shape, -1)


def receiver(run_dir: Path, steps: int | None) -> Receiver:
    config, theta_np = load_link_run(run_dir)
    method, cfg, run_steps = bench_config(config)
    if not decoder_only(method):
        raise UserError(
            f"'{run_dir}' is a {method} run: it adapts the encoder too, which needs the channel simulator, not "
            f"pilots; train a deployable receiver with 'metaedge train link --algo {algorithm_of(method)}-rx'"
        )
    theta = {k: torch.from_numpy(v) for k, v in theta_np.items()}
    book = codebook(theta, cfg.link.messages)
    params = receiver_params(theta)
    inner = InnerLoop(lr=cfg.inner_lr, steps=steps or run_steps, loss=autoencoder.receiver_loss)
    env = LinkTasks(cfg.link, seed=cfg.seed)
    rng = env.rng("test", 99)
    channel = env.channels("test", 1)
    pilots = env.pilots(cfg.link.messages)
    payload = env.messages((1, SELFTEST_SAMPLES), rng)
    selftest = selftest_vectors(
        params,
        inner,
        received(cfg.link, book, channel, pilots[None], rng)[0],
        np.eye(cfg.link.messages, dtype=np.float32)[pilots],
        received(cfg.link, book, channel, payload, rng)[0],
        fn=autoencoder.receiver_log_probs,
    )
    model = {**mlp_model(params), **({"rtn": list(spec_of(cfg).rtn.sizes), "rtn_activation": "tanh"} if cfg.rtn_taps else {})}
    return Receiver(
        params,
        inner,
        algorithm_of(method),
        task_section(cfg.link, book),
        selftest,
        {"run": str(run_dir), "algo": method, "seed": cfg.seed},
        model=model,
        forward=autoencoder.receiver_log_probs,
    )


def link_frames(task: dict, frames: int, pilots: int, messages: int, seed: int) -> tuple[np.ndarray, ...]:
    """Frames for a link receiver, one new channel (meta-test split) each: received pilots, their messages
    (the known sequence), received payload and its messages. The transmitter sends ``task["codebook"]``."""
    link = LinkConfig(bits=task["bits"], uses=task["uses"], taps=task["taps"], ebn0_db=task["ebn0_db"])
    env = LinkTasks(link, seed=seed)
    book = np.asarray(task["codebook"], np.float32)
    channels, rng = env.channels("test", frames), env.rng("test", 1)
    sent_pilots = np.broadcast_to(np.resize(np.asarray(task["pilot_sequence"]), pilots), (frames, pilots))
    payload = env.messages((frames, messages), rng)
    return (
        received(link, book, channels, sent_pilots, rng).astype(np.float32),
        sent_pilots.copy(),
        received(link, book, channels, payload, rng).astype(np.float32),
        payload,
    )
