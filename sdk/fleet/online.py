"""Online meta-learning from a fleet's telemetry: follow the meta-leader with a bounded replay buffer.

Each accepted frame report with samples is a task: its first pilots are the support set (what the device adapts on),
its check symbols the query set (what it decides). The learner starts from the offline θ and, every ``batch`` new
tasks, takes ``steps`` outer steps of the run's own algorithm (its objective and inner loop, on the shared core), each
on ``batch`` tasks drawn uniformly from the buffer of the most recent devices' tasks. This is follow-the-meta-leader
(Finn, Rajeswaran, Kakade, Levine, "Online meta-learning", ICML 2019) with its leader's objective — the average
meta-loss over every task seen — approximated by a replay buffer of recent ones, as the continual meta-learning of
Chen et al., "Learning with limited samples" (Found. Trends Signal Process., 2023), §7.1.1 describes for demodulators
(Park, Jang, Simeone, Kang, IEEE Trans. Signal Process. 2021): θ follows the devices that report now, and replay
keeps a step from following one device's channel alone. Tasks of held-back devices never train; they score the
candidate θ against the running one, paired over devices.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
import torch

from metaedge.deploy.telemetry import Report
from metaedge.sdk.families.demod.receivers import LearnedReceiver
from metaedge.sdk.fleet.config import OnlineOptions
from metaedge.sdk.meta import get_algorithm, meta_gradient, to_batch
from metaedge.sdk.meta.outer import OuterLoop
from metaedge.sdk.stats import paired_interval

MIN_SCORING_DEVICES = 5  # held-back devices needed before a candidate is scored


@dataclass(frozen=True)
class Task:
    device: str
    x: np.ndarray  # [n, 2] float32: support pilots then query check symbols
    y: np.ndarray  # [n] int64


def held_back(device: str, fraction: float) -> bool:
    """Whether a device's telemetry scores candidates instead of training them (fixed by its name)."""
    return int.from_bytes(hashlib.sha256(device.encode()).digest()[:4], "little") / 2**32 < fraction


class OnlineLearner:
    """θ updated online from reports; ``add`` returns a verdict when a candidate was scored."""

    def __init__(self, theta: dict[str, np.ndarray], train, classes: int, support: int, options: OnlineOptions, seed: int = 0) -> None:
        self.options, self.classes, self.support = options, classes, support
        self.inner = train.inner()
        self.objective = get_algorithm(train.algo).objective
        gradient = lambda p, b: meta_gradient(self.objective, p, b, self.inner)  # noqa: E731
        params = {k: torch.tensor(v) for k, v in theta.items()}
        self.loop = OuterLoop(params, gradient, options.outer_lr, "adam", [k for k in params if k != "context"])
        self.running = {k: v.clone() for k, v in params.items()}
        self.train: OrderedDict[str, deque] = OrderedDict()
        self.scoring: OrderedDict[str, deque] = OrderedDict()
        self.rng = np.random.default_rng(seed)
        self.new_tasks = self.since_score = 0
        self.counts = {"tasks": 0, "held_back": 0, "steps": 0, "skipped_steps": 0, "scored": 0}

    def add(self, report: Report) -> dict | None:
        """Take one report; a verdict {"release": bool, "difference": …} when a candidate was scored."""
        samples = report.pilots
        if samples is None or report.support != self.support:  # no samples, or frames of another pilot count
            return None
        task = Task(report.device, np.asarray(samples.x, np.float32), np.asarray(samples.y, np.int64))
        if held_back(report.device, self.options.holdout):
            self.counts["held_back"] += 1
            self._keep(self.scoring, task)
            return None
        self.counts["tasks"] += 1
        self._keep(self.train, task)
        self.new_tasks += 1
        self.since_score += 1
        if self.new_tasks >= self.options.batch:
            self.new_tasks = 0
            for _ in range(self.options.steps):
                self.step()
        if self.since_score >= self.options.evaluate_every and len(self.scoring) >= MIN_SCORING_DEVICES:
            self.since_score = 0
            return self.score()
        return None

    def _keep(self, buffer: OrderedDict, task: Task) -> None:
        frames = buffer.pop(task.device, None) or deque(maxlen=self.options.frames_per_device)
        frames.append(task)
        buffer[task.device] = frames  # most recent last
        while len(buffer) > self.options.buffer:
            buffer.popitem(last=False)

    def step(self) -> float | None:
        """One outer step on ``batch`` tasks drawn from the replay buffer; a step whose meta-gradient is not finite is
        skipped (and counted), so that no report can corrupt θ or the optimizer's state."""
        tasks = [t for frames in self.train.values() for t in frames]
        chosen = [tasks[i] for i in self.rng.integers(0, len(tasks), size=self.options.batch)]
        loss = self.loop.step(to_batch(*self.batch_of(chosen), self.classes), finite_only=True)
        self.counts["steps" if loss is not None else "skipped_steps"] += 1
        return loss

    def batch_of(self, tasks: list[Task]) -> tuple[np.ndarray, ...]:
        """(x_tr, y_tr, x_va, y_va) of tasks with as many query samples each (the fewest among them)."""
        n = min(len(t.y) for t in tasks)
        x = np.stack([t.x[:n] for t in tasks])
        y = np.stack([t.y[:n] for t in tasks])
        s = self.support
        return x[:, :s], y[:, :s], x[:, s:], y[:, s:]

    def ser(self, theta: dict[str, torch.Tensor], tasks: list[Task]) -> np.ndarray:
        """Query SER per task of the receiver that adapts ``theta`` on each task's support."""
        x_tr, y_tr, x_va, y_va = self.batch_of(tasks)
        receiver = LearnedReceiver("candidate", theta, self.inner, self.classes)
        decisions = receiver.probabilities(x_tr, y_tr, x_va).argmax(-1)
        return (decisions != y_va).mean(axis=1)

    def score(self) -> dict:
        """Candidate against running θ on the held-back devices' tasks, paired over devices."""
        self.counts["scored"] += 1
        devices = list(self.scoring.items())
        tasks = [t for _, frames in devices for t in frames]
        owner = np.concatenate([[i] * len(frames) for i, (_, frames) in enumerate(devices)])
        per_task = {name: self.ser(theta, tasks) for name, theta in (("candidate", self.loop.theta), ("running", self.running))}
        per_device = {k: np.array([v[owner == i].mean() for i in range(len(devices))]) for k, v in per_task.items()}
        difference = paired_interval(per_device["candidate"] - per_device["running"])
        release = difference["diff"] < -self.options.margin and difference["ci95"][1] < 0
        return {
            "release": bool(release),
            "devices": len(devices),
            "tasks": len(tasks),
            "candidate_ser": float(per_device["candidate"].mean()),
            "running_ser": float(per_device["running"].mean()),
            "difference": difference,
        }

    def candidate(self) -> dict[str, np.ndarray]:
        """The candidate θ as float32 arrays, for a release."""
        return {k: v.numpy().astype(np.float32) for k, v in self.loop.theta.items()}

    def accept(self) -> None:
        """Make the candidate the running θ (the fleet now runs it)."""
        self.running = {k: v.clone() for k, v in self.loop.theta.items()}
