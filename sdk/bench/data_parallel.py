"""One rank of ``metaedge bench meta-train --distributed``: run by ``torchrun``, it times the sharded meta-gradient
(its share of the batch, then the all-reduce) on the same tasks as every other rank; rank 0 prints the medians as
JSON. ``python -m metaedge.sdk.bench.data_parallel ALGO TASKS REPEATS``."""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch


def main(algo: str, tasks: int, repeats: int) -> dict | None:
    import torch.distributed as dist

    from metaedge.sdk.bench.meta_train import _setup
    from metaedge.sdk.meta import meta_gradient
    from metaedge.sdk.meta.placement import placement, sharded

    torch.set_num_threads(1)  # one core per rank: the scaling is over processes
    where = placement("cpu", distributed=True)
    _, _, algorithm, inner, params, batch = _setup(algo, tasks, None)
    gradient = sharded(lambda p, b: meta_gradient(algorithm.objective, p, b, inner), where)
    gradient(params, batch)  # warm-up
    samples = []
    for _ in range(repeats):
        where.barrier()
        start = time.perf_counter()
        gradient(params, batch)
        samples.append(time.perf_counter() - start)
    dist.destroy_process_group()
    if not where.writer:
        return None
    ms = statistics.median(samples) * 1e3
    return {"world": where.world, "tasks": tasks, "median_ms": ms, "tasks_per_s": tasks / (ms / 1e3)}


if __name__ == "__main__":
    report = main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    if report is not None:
        print(json.dumps(report))
