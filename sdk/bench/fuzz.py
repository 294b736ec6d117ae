"""``metaedge bench fuzz``: many mutated inputs against every reader of untrusted bytes.

Seeded mutations (byte flips, insertions, deletions, truncations, overwrites, splices) of a
valid packed bundle, its manifest, a safetensors file, a protocol message, and the bundle's
adaptation graph (with its hash updated, so that the device's content policy and ONNX Runtime itself must parse it). Each input must
be accepted or refused with the reader's own typed error; anything else is a crash, and an
input that takes longer than ``HANG_S`` is a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
import traceback
from typing import Callable

import numpy as np

from metaedge.backends.base import BackendError
from metaedge.backends.onnx import OnnxBackend
from metaedge.deploy import tensors, wire
from metaedge.deploy.bundle import Bundle, BundleError, pack, parse_manifest, sha256, unpack
from metaedge.deploy.manifest import parse
from metaedge.sdk.bench.config import FuzzBench
from metaedge.sdk.errors import bundle_at
from metaedge.sdk.options import Progress, silent

HANG_S = 1.0


def mutate(seed: bytes, rng: np.random.Generator, corpus: list[bytes]) -> bytes:
    data = bytearray(seed)
    for _ in range(int(rng.integers(1, 8))):
        kind = int(rng.integers(0, 6))
        at = int(rng.integers(0, max(1, len(data))))
        if kind == 0 and data:
            data[at] ^= int(rng.integers(1, 256))
        elif kind == 1:
            data[at:at] = rng.bytes(int(rng.integers(1, 32)))
        elif kind == 2 and data:
            del data[at : at + int(rng.integers(1, 64))]
        elif kind == 3:
            del data[at:]
        elif kind == 4 and data:
            chunk = rng.bytes(int(rng.integers(1, 8)))
            data[at : at + len(chunk)] = chunk
        elif kind == 5:
            other = corpus[int(rng.integers(0, len(corpus)))]
            start = int(rng.integers(0, max(1, len(other))))
            data[at:at] = other[start : start + int(rng.integers(1, 256))]
    return bytes(data)


def graph_reader(bundle: Bundle, role: str) -> Callable[[bytes], object]:
    """A bundle whose ``role`` graph is replaced (hashes updated), as a device takes it: the content policy at upload,
    then ONNX Runtime loads it and the self-test runs."""

    def read(graph: bytes) -> object:
        raw = bundle.manifest.raw
        entry = {**raw["artifacts"][role], "size": len(graph), "sha256": sha256(graph)}
        manifest = parse({**raw, "artifacts": {**raw["artifacts"], role: entry}})
        changed = dataclasses.replace(bundle, manifest=manifest, artifacts={**bundle.artifacts, role: graph})
        OnnxBackend.inspect(changed)
        backend = OnnxBackend()
        with contextlib.redirect_stderr(io.StringIO()):  # ONNX Runtime's diagnostics on broken graphs are expected here
            backend.load(changed)
        return backend.selftest()

    return read


def targets(bundle: Bundle) -> dict[str, tuple[bytes, Callable[[bytes], object], type[Exception]]]:
    safetensors = bundle.artifacts["theta"]
    message = wire.encode({"op": "frame", "seq": 1}, {"pilots": np.zeros((8, 2), np.float32), "payload": np.zeros((16, 2), np.float32)})
    return {
        "packed_bundle": (pack(bundle), unpack, BundleError),
        "manifest": (bundle.manifest_raw, parse_manifest, BundleError),
        "safetensors": (safetensors, tensors.loads, tensors.TensorFileError),
        "protocol_message": (message, lambda b: wire.read_message(io.BytesIO(b)), wire.WireError),
        "onnx_graph": (bundle.artifacts["adapt_step"], graph_reader(bundle, "adapt_step"), BackendError),
    }


def bench_fuzz(bundle: Bundle, count: int, seed: int = 0, progress: Callable[[int], None] | None = None) -> dict:
    rng = np.random.default_rng(seed)
    table = targets(bundle)
    corpus = [seed_bytes for seed_bytes, _, _ in table.values()]
    per_target = {name: {"inputs": 0, "accepted": 0, "refused": 0, "crashes": 0, "hangs": 0, "max_s": 0.0, "examples": []} for name in table}
    names = list(table)
    for i in range(count):
        name = names[i % len(names)]
        seed_bytes, reader, error = table[name]
        blob = mutate(seed_bytes, rng, corpus)
        stats = per_target[name]
        stats["inputs"] += 1
        start = time.perf_counter()
        try:
            reader(blob)
            stats["accepted"] += 1
        except error:
            stats["refused"] += 1
        except Exception as e:  # noqa: BLE001 — exactly what the benchmark counts
            stats["crashes"] += 1
            if len(stats["examples"]) < 3:
                stats["examples"].append(f"{type(e).__name__}: {e} | {traceback.format_exc(limit=2).splitlines()[-3]}")
        elapsed = time.perf_counter() - start
        stats["max_s"] = max(stats["max_s"], elapsed)
        stats["hangs"] += elapsed > HANG_S
        if progress and i % 1000 == 999:
            progress(1000)
    total = {k: sum(t[k] for t in per_target.values()) for k in ("inputs", "accepted", "refused", "crashes", "hangs")}
    return {"benchmark": "fuzz", "seed": seed, "hang_threshold_s": HANG_S, "total": total, "targets": per_target}


def run(options: FuzzBench, progress: Progress = silent) -> dict:
    """``metaedge bench fuzz``."""
    bundle = bundle_at(options.bundle)
    progress(0, total=options.count)
    return bench_fuzz(bundle, options.count, options.seed, progress=progress)


def text(report: dict) -> str:
    lines = [
        f"{name:<17} {t['inputs']:>7} inputs: {t['accepted']:>6} accepted, {t['refused']:>7} refused, "
        f"{t['crashes']} crashes, {t['hangs']} hangs, slowest {t['max_s'] * 1e3:.1f} ms"
        for name, t in report["targets"].items()
    ]
    total = report["total"]
    return "\n".join([*lines, f"total: {total['inputs']} inputs, {total['crashes']} crashes, {total['hangs']} hangs"])


def exit_code(report: dict) -> int:
    return 0 if report["total"]["crashes"] == report["total"]["hangs"] == 0 else 1
