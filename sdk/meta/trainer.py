"""The one training loop of every family and target: outer steps, a validation every few of them (and after the
last), the best θ kept, the curves written, early stopping, progress. What differs between families is their
``Problem``: how one step moves θ (a meta-gradient and Adam through ``outer.OuterLoop`` for every network trained
through the batched core; the Born machine's exact gradient through its simulator; the spiking receiver's
three-factor rule estimate, which is not a gradient of anything torch computes), how θ is validated and saved.
Torch-free: the loop only counts, compares and writes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from metaedge.sdk.errors import UserError
from metaedge.sdk.rundir import CURVES, write_json


class Problem(Protocol):
    metric: str  # the validation score's key in the curves and the state ("val_ser"), …
    label: str  # … as people read it ("validation SER")
    maximize: bool  # higher scores are better (a sum-rate); else lower (an error rate, a loss)

    def step(self) -> float | None:
        """One outer step; its meta-loss (None where the step has none)."""

    def validate(self) -> dict:
        """The validation record: ``metric`` and any other curve fields."""

    def keep(self, out: Path, record: dict) -> None:
        """Save the current θ in ``out`` as the best so far (``record``: its validation)."""


@dataclass(frozen=True)
class Schedule:
    iterations: int
    val_every: int | None = None  # validate every N steps and after the last; None: never
    patience: int | None = None  # stop after this many validations without a better score; None: never
    halt_on_divergence: bool = False  # a non-finite meta-loss stops the run with one line


class TrainingDiverged(UserError):
    """The meta-loss stopped being finite; the message says what was kept and what to try."""


def new_state(problem: Problem) -> dict:
    return {"iteration": 0, "best_iteration": None, f"best_{problem.metric}": None, "bad_validations": 0, "stop_reason": None, "train_seconds": 0.0}


def train(
    problem: Problem,
    schedule: Schedule,
    out: Path | None = None,
    progress: Callable[[int, dict], None] | None = None,
    state: dict | None = None,
    curves: list[dict] | None = None,
    validated: Callable[[dict, list[dict]], None] | None = None,
) -> dict:
    """Step until the budget or early stopping; ``out`` receives the best θ and the curves, ``validated(state,
    curves)`` follows every validation (a checkpoint), ``progress(iteration, last validation)`` every step. A
    resumed run passes its ``state`` and ``curves``. Returns the state, with the budget and the wall time."""
    state = new_state(problem) if state is None else state
    curves = [] if curves is None else curves
    window: list[float] = []
    start = time.perf_counter()
    while state["iteration"] < schedule.iterations and state["stop_reason"] is None:
        tick = time.perf_counter()
        loss = problem.step()
        state["train_seconds"] += time.perf_counter() - tick  # validations excluded
        if loss is not None:
            if schedule.halt_on_divergence and not math.isfinite(loss):
                raise TrainingDiverged(_diverged(loss, state, curves, out))
            window.append(loss)
        state["iteration"] += 1
        it = state["iteration"]
        if schedule.val_every and (it % schedule.val_every == 0 or it == schedule.iterations):
            _validation(problem, schedule, out, state, curves, window)
            window.clear()
            if validated:
                validated(state, curves)
        if progress:
            progress(it, curves[-1] if curves else {})
    return {**state, "iterations": schedule.iterations, "seconds": time.perf_counter() - start}


def _validation(problem: Problem, schedule: Schedule, out: Path | None, state: dict, curves: list[dict], window: list[float]) -> None:
    it = state["iteration"]
    record = {"iteration": it, **({"meta_loss": sum(window) / len(window)} if window else {}), **problem.validate()}
    curves.append(record)
    score, best = record[problem.metric], state[f"best_{problem.metric}"]
    if best is None or (score > best if problem.maximize else score < best):
        state.update({f"best_{problem.metric}": score, "best_iteration": it, "bad_validations": 0})
        if out is not None:
            problem.keep(out, record)
    else:
        state["bad_validations"] += 1
        if schedule.patience and state["bad_validations"] >= schedule.patience:
            state["stop_reason"] = f"early stop: no better {problem.label} in {schedule.patience} validations"
    if it >= schedule.iterations and state["stop_reason"] is None:
        state["stop_reason"] = "reached --iterations"
    if out is not None:
        write_json(out / CURVES, curves)


def _diverged(loss: float, state: dict, curves: list[dict], out: Path | None) -> str:
    kept = f"the last good checkpoint (iteration {curves[-1]['iteration']}) is kept in {out}" if curves else "no checkpoint had been written yet"
    return f"meta-training loss became {loss} at iteration {state['iteration'] + 1}; {kept}; lower --outer-lr or --inner-lr and rerun"
