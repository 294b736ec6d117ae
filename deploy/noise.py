"""Standard-normal draws that a host and any device reproduce from a seed (docs/bundle-format.md §7.4).

A Gaussian-posterior receiver (vbmaml) adapts and predicts with weight draws μ + σ·ε. A device
shares no generator with torch, and shipping the draws would not fit a flash slot (100 draws
of the reference demodulator are 714 KB), so a bundle names a seed and this counter-based
generator: value i of a stream is SplitMix64's output function applied to
seed + (i + 1)·0x9E3779B97F4A7C15 (mod 2⁶⁴); its high and low 32 bits give the uniforms
u₁ = (hi + ½)/2³², u₂ = (lo + ½)/2³² in (0, 1), and the Box–Muller transform
√(−2 ln u₁)·cos(2π u₂), computed in float64 and rounded to float32, the normal. Every value
depends on its index alone, so a stream is a few vectorised numpy operations.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

GENERATOR = "splitmix64-box-muller"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


def standard_normal(seed: int, count: int) -> np.ndarray:
    """The first ``count`` values of the stream of ``seed`` (an integer in [0, 2⁶⁴)), float32."""
    index = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic is meant to wrap
        z = np.uint64(seed) + index * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    u1 = ((z >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32
    u2 = ((z & _LOW32).astype(np.float64) + 0.5) / 2.0**32
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def weight_noise(seed: int, draws: int, shapes: Sequence[tuple[str, Sequence[int]]]) -> dict[str, np.ndarray]:
    """ε of ``draws`` weight samples for the parameters ``shapes`` ((name, shape), canonical order): one stream of
    draws × Σ sizes values read row by row, row d holding draw d of every parameter side by side in that order."""
    sizes = [math.prod(shape) for _, shape in shapes]
    rows = standard_normal(seed, draws * sum(sizes)).reshape(draws, sum(sizes))
    noise, start = {}, 0
    for (name, shape), size in zip(shapes, sizes):
        noise[name] = np.ascontiguousarray(rows[:, start : start + size].reshape(draws, *shape))
        start += size
    return noise


MAX_DRAWS = 1024  # per stream: bounds what a bundle can make a device compute and hold


def weight_draws(section: object, params: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The draws an ``algorithm.noise`` section (spec §7.4) defines for θ's ``params``, stream → name → array, after
    checking the section; no section, no draws. Raises ValueError naming what is wrong."""
    if section is None:
        return {}
    if not isinstance(section, dict) or section.get("generator") != GENERATOR:
        raise ValueError(f"algorithm.noise.generator must be '{GENERATOR}'")
    names = section.get("parameters")
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names) or any(n not in params for n in names):
        raise ValueError("algorithm.noise.parameters must list distinct parameters of θ")
    draws = {}
    for stream in ("adapt", "predict"):
        entry = section.get(stream)
        seed, count = (entry.get("seed"), entry.get("draws")) if isinstance(entry, dict) else (None, None)
        if type(seed) is not int or not 0 <= seed < 2**64 or type(count) is not int or not 1 <= count <= MAX_DRAWS:
            raise ValueError(f'algorithm.noise.{stream} must be {{"seed": integer in [0, 2^64), "draws": integer in [1, {MAX_DRAWS}]}}')
        draws[stream] = weight_noise(seed, count, [(n, params[n].shape) for n in names])
    return draws
