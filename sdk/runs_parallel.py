"""Independent benchmark runs, in this process or in parallel ones: each run seeds itself, so where it runs does
not change its result, and a 2-core machine finishes a sweep of small models in about half the time."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Hashable, Iterator

import torch


def run_all(run: Callable[..., Any], keys: list[tuple[Hashable, ...]], jobs: int, *shared: Any) -> Iterator[tuple[tuple, Any]]:
    """(key, run(*key, *shared)) for every key, as each finishes: in this process, or in ``jobs`` spawned processes
    with one torch thread each (``run`` and its arguments must pickle: a module-level function and plain data)."""
    if jobs <= 1:
        yield from ((key, run(*key, *shared)) for key in keys)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {pool.submit(run, *key, *shared): key for key in keys}
        for done in as_completed(futures):
            yield futures[done], done.result()
