"""The receiver image of the ``mcu`` target (docs/bundle-format.md §16): one flat little-endian binary that the
firmware validates and runs in place, so the same firmware runs any conforming receiver without recompiling.

``encode`` is the exporter's, ``decode`` the device's check at upload; both follow the layout below, which the C
reader (firmware_sim/mcu/receiver.c) implements independently.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace

import numpy as np

MAGIC, BYTE_ORDER, LAYOUT = b"MEMC", 0x01020304, 1
HEADER = struct.Struct("<4sIHHIHHHHHHIffHHHHfI8HII")  # 80 bytes, §16.2
TRAILER = 32  # SHA-256 of everything before it
LOSS_CROSS_ENTROPY, ACTIVATION_RELU = 1, 1
FLAG_STEP_SIZES = 1  # per-entry step sizes (Meta-SGD) follow θ
MAX_LAYERS, MAX_WIDTH, MAX_CONTEXT, MAX_STEPS, MAX_SELFTEST = 8, 256, 64, 1024, 256
STEP_PREFIX = "lr."  # the name of a learned step-size tensor: "lr.<parameter>"


class ImageError(ValueError):
    """The image breaks §16.2; the message says which rule."""


@dataclass(frozen=True)
class Selftest:
    samples: np.ndarray  # [S, F]
    log_probs: np.ndarray  # [S, M] at θ
    pilots: np.ndarray  # [Q, F]
    labels: np.ndarray  # [Q]
    adapted_log_probs: np.ndarray  # [S, M] after the K steps on the pilots
    atol: float


@dataclass(frozen=True)
class Image:
    features: int
    classes: int
    widths: tuple[int, ...]  # every layer's outputs; the last is ``classes``
    context: int
    steps: int
    lr: float
    prox: float
    adapts: tuple[str, ...]  # names of the adapted tensors, in tensor order
    theta: dict[str, np.ndarray] = field(default_factory=dict)  # l{i}.weight [in, out], l{i}.bias [out], context [C]
    step_sizes: dict[str, np.ndarray] | None = None  # lr.<name> per adapted tensor, or None (one scalar lr)
    selftest: Selftest | None = None  # None only while a reader checks the header's sizes

    def tensor_names(self) -> list[str]:
        names = [f"l{i}.{kind}" for i in range(len(self.widths)) for kind in ("weight", "bias")]
        return names + (["context"] if self.context else [])

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes, fan_in = {}, self.features + self.context
        for i, width in enumerate(self.widths):
            shapes[f"l{i}.weight"], shapes[f"l{i}.bias"], fan_in = (fan_in, width), (width,), width
        return shapes | ({"context": (self.context,)} if self.context else {})

    def work_bytes(self) -> int:
        """RAM the firmware's work area needs for this receiver: φ and its gradient, activations, two delta rows."""
        shapes, inputs = self.shapes(), self.features + self.context
        adapted = sum(int(np.prod(shapes[k])) for k in self.adapts)
        return 4 * (2 * adapted + inputs + sum(self.widths) + 2 * max(inputs, *self.widths))


def _f32(values) -> bytes:
    return np.ascontiguousarray(values, "<f4").tobytes()


def encode(image: Image) -> bytes:
    """The image's bytes, hash included; ``ImageError`` for a receiver the layout cannot carry."""
    if image.selftest is None:
        raise ImageError("an image needs its self-test vectors")
    _check_sizes(image, len(image.selftest.samples), len(image.selftest.pilots))
    _check_arrays(image)
    names = image.tensor_names()
    mask = sum(1 << names.index(k) for k in image.adapts)
    st = image.selftest
    body = b"".join(_f32(image.theta[k]) for k in names)
    if image.step_sizes is not None:
        body += b"".join(_f32(image.step_sizes[STEP_PREFIX + k]) for k in names if k in image.adapts)
    labels = np.ascontiguousarray(st.labels, "<u2").tobytes()
    body += _f32(st.samples) + _f32(st.log_probs) + _f32(st.pilots) + labels + b"\0" * (-len(labels) % 4) + _f32(st.adapted_log_probs)
    total = HEADER.size + len(body) + TRAILER
    widths = list(image.widths) + [0] * (MAX_LAYERS - len(image.widths))
    flags = FLAG_STEP_SIZES if image.step_sizes is not None else 0
    header = HEADER.pack(
        MAGIC, BYTE_ORDER, LAYOUT, HEADER.size, total, image.features, image.classes, len(image.widths), image.context, image.steps, flags,
        mask, image.lr, image.prox, LOSS_CROSS_ENTROPY, ACTIVATION_RELU, len(st.samples), len(st.pilots), st.atol, 0, *widths, 0, 0,
    )  # fmt: skip
    data = header + body
    return data + hashlib.sha256(data).digest()


def _check_sizes(image: Image, samples: int, pilots: int) -> None:
    layers = len(image.widths)
    if not 1 <= layers <= MAX_LAYERS:
        raise ImageError(f"the network has {layers} layers; the mcu target runs 1 to {MAX_LAYERS}")
    if not 1 <= image.features <= MAX_WIDTH or not 0 <= image.context <= MAX_CONTEXT or image.features + image.context > MAX_WIDTH:
        raise ImageError(f"{image.features} features and {image.context} context inputs exceed the mcu target's {MAX_WIDTH} inputs")
    if any(not 1 <= w <= MAX_WIDTH for w in image.widths) or image.widths[-1] != image.classes or image.classes < 2:
        raise ImageError(f"layer widths {list(image.widths)} must lie in 1..{MAX_WIDTH} and end in the {image.classes} classes")
    if not 1 <= image.steps <= MAX_STEPS:
        raise ImageError(f"{image.steps} inner steps; the mcu target takes 1 to {MAX_STEPS}")
    if not image.adapts:
        raise ImageError("no parameter adapts")
    if not (1 <= samples <= MAX_SELFTEST and 1 <= pilots <= MAX_SELFTEST):
        raise ImageError(f"self-test vectors must hold 1 to {MAX_SELFTEST} samples and pilots")
    if not (np.isfinite(image.lr) and np.isfinite(image.prox) and image.prox >= 0):
        raise ImageError("inner_lr or prox is not a finite number (prox ≥ 0)")


def _check_arrays(image: Image) -> None:
    """What ``decode`` would refuse in the arrays: shapes, finiteness, the self-test's classes and tolerance."""
    shapes, st = image.shapes(), image.selftest
    tensors = {**image.theta, **(image.step_sizes or {})}
    expected = {**shapes, **({STEP_PREFIX + k: shapes[k] for k in image.adapts} if image.step_sizes is not None else {})}
    if {k: tuple(np.shape(v)) for k, v in tensors.items()} != expected:
        raise ImageError(f"tensors {sorted(tensors)} do not have the network's shapes {expected}")
    if not all(np.isfinite(v).all() for v in tensors.values()):
        raise ImageError("a parameter or step size is not finite")
    if not (np.isfinite(st.atol) and st.atol > 0) or (np.asarray(st.labels) >= image.classes).any() or (np.asarray(st.labels) < 0).any():
        raise ImageError("the self-test's tolerance is not positive or a pilot's class is outside 0..classes-1")


def decode(data: bytes) -> Image:
    """The image in ``data``, checked as the firmware checks it (§16.5); ``ImageError`` names the first broken rule."""
    if len(data) < HEADER.size + TRAILER or len(data) % 4:
        raise ImageError(f"image of {len(data)} bytes: it must be a multiple of 4 of at least {HEADER.size + TRAILER}")
    (magic, order, layout, header_bytes, total, features, classes, layers, context, steps, flags, mask, lr, prox, loss, activation,
     n_samples, n_pilots, atol, reserved, *rest) = HEADER.unpack_from(data)  # fmt: skip
    widths, reserved_tail = rest[:MAX_LAYERS], rest[MAX_LAYERS:]
    checks = [
        (magic == MAGIC, "magic is not MEMC"),
        (order == BYTE_ORDER, "byte-order mark is not 0x01020304 little-endian"),
        (layout == LAYOUT, f"layout {layout} is not 1"),
        (header_bytes == HEADER.size, f"header length {header_bytes} is not {HEADER.size}"),
        (total == len(data), f"total length {total} differs from the {len(data)} bytes"),
        (hashlib.sha256(data[:-TRAILER]).digest() == data[-TRAILER:], "SHA-256 does not match the trailer"),
        (1 <= layers <= MAX_LAYERS, f"{layers} layers outside 1..{MAX_LAYERS}"),
        (flags & ~FLAG_STEP_SIZES == 0, f"unknown flag bits {flags:#x}"),
        (loss == LOSS_CROSS_ENTROPY and activation == ACTIVATION_RELU, "loss or activation code is not 1"),
        (reserved == 0 and reserved_tail == [0, 0], "reserved header bytes are not zero"),
        (all(w == 0 for w in widths[layers:]), "a width beyond the last layer is not zero"),
        (np.isfinite(atol) and atol > 0, "self-test tolerance is not a positive number"),
    ]
    for ok, why in checks:
        if not ok:
            raise ImageError(why)
    names = [f"l{i}.{kind}" for i in range(layers) for kind in ("weight", "bias")] + (["context"] if context else [])
    if mask == 0 or mask >> len(names):
        raise ImageError("the adapted-tensor mask is empty or names a tensor the network lacks")
    adapts = tuple(k for i, k in enumerate(names) if mask >> i & 1)
    reader = _Reader(data, HEADER.size)
    image = Image(features, classes, tuple(widths[:layers]), context, steps, float(lr), float(prox), adapts)
    _check_sizes(image, n_samples, n_pilots)
    shapes = image.shapes()
    theta = {k: reader.floats(shapes[k]) for k in names}
    step_sizes = {STEP_PREFIX + k: reader.floats(shapes[k]) for k in adapts} if flags & FLAG_STEP_SIZES else None
    samples, log_probs = reader.floats((n_samples, features)), reader.floats((n_samples, classes))
    pilots, labels = reader.floats((n_pilots, features)), reader.labels(n_pilots)
    selftest = Selftest(samples, log_probs, pilots, labels, reader.floats((n_samples, classes)), float(atol))
    if reader.offset != len(data) - TRAILER:
        raise ImageError("its length disagrees with the sizes its header gives")
    result = replace(image, theta=theta, step_sizes=step_sizes, selftest=selftest)
    _check_arrays(result)
    return result


class _Reader:
    """Consecutive arrays of the image body; running past its end is an ``ImageError``."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def _take(self, n: int) -> bytes:
        if self.offset + n > len(self.data) - TRAILER:
            raise ImageError("its length disagrees with the sizes its header gives")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def floats(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(self._take(4 * int(np.prod(shape))), "<f4").reshape(shape).astype(np.float32)

    def labels(self, n: int) -> np.ndarray:
        raw = self._take(2 * n + (-2 * n) % 4)
        if any(raw[2 * n :]):
            raise ImageError("the self-test labels' padding is not zero")
        return np.frombuffer(raw[: 2 * n], "<u2").astype(np.int64)
