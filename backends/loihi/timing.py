"""Device-side timing of a loihi bundle on Lava: ``python -m metaedge.backends.loihi.timing BUNDLE FRAMES.npz [--fixed]``.

FRAMES.npz holds ``pilots`` [F, P, 2], ``labels`` [F, P] and ``payload`` [F, N, 2]. Prints one
JSON object: the build time, per frame (rotated by its pilots' phase where the bundle asks, as a
device frame is) the adaptation and decoding wall times and the
decisions, and Lava timesteps per second. Run by ``metaedge bench loihi`` in the Lava
environment; it needs Lava, not torch.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from metaedge.backends.base import Frame
from metaedge.backends.loihi.backend import LoihiBackend
from metaedge.backends.loihi.network import stream_length
from metaedge.deploy.bundle import read_bundle


def time_frames(bundle_path: str, frames_path: str, fixed_point: bool = False) -> dict:
    frames = np.load(frames_path)
    backend = LoihiBackend(engine="lava", fixed_point=fixed_point)
    start = time.perf_counter()
    backend.load(read_bundle(bundle_path))
    build = time.perf_counter() - start
    records = []
    try:
        for pilots, labels, payload in zip(frames["pilots"], frames["labels"], frames["payload"]):
            t0 = time.perf_counter()
            frame = backend.phase_reference(Frame(pilots, labels.astype(np.int64), payload))
            backend.reset()
            backend.adapt(frame.pilots, frame.labels)
            t1 = time.perf_counter()
            decisions = backend.predict(frame.payload).argmax(-1)
            t2 = time.perf_counter()
            steps = stream_length(backend.spec, len(labels)) + stream_length(backend.spec, len(payload))
            records.append(
                {"adapt_s": t1 - t0, "decode_s": t2 - t1, "timesteps": steps, "steps_per_s": steps / (t2 - t0), "decisions": decisions.tolist()}
            )
    finally:
        backend.close()
    return {"build_s": build, "frames": records}


if __name__ == "__main__":
    print(json.dumps(time_frames(sys.argv[1], sys.argv[2], fixed_point="--fixed" in sys.argv[3:])))
