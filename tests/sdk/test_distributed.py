"""Scale-out meta-training: data-parallel ranks through torch.distributed (gloo, two processes on this machine) give
the θ trajectory of one process; a run resumes with another world size; CUDA placement where a GPU exists."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.meta.placement import Placement, torch_device

TRAIN = ["train", "demod", "--algo", "maml", "--val-every", "10", "--val-devices", "4", "--meta-devices", "20", "--tasks-per-batch", "7"]
TRAIN += ["--pilots", "8", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def single(out, iterations: int, *extra: str) -> None:
    command = [sys.executable, "-m", "metaedge.sdk.cli.main", *TRAIN, "--iterations", str(iterations), "--out", str(out), *extra]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def ranks(out, iterations: int, *extra: str, world: int = 2) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    command = [torchrun, "--standalone", f"--nproc-per-node={world}", "-m", "metaedge.sdk.cli.main", *TRAIN, "--distributed"]
    done = subprocess.run(
        [*command, "--iterations", str(iterations), "--out", str(out), *extra], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]


def theta_of(run) -> dict[str, np.ndarray]:
    """The latest θ of a run (its checkpoint), not only the best one."""
    arrays = tensors.load(run / "checkpoint.safetensors")[0]
    return {k: v for k, v in arrays.items() if k.startswith("theta.")}


def largest_difference(a, b) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.slow
def test_two_gloo_ranks_train_the_theta_of_one_process(tmp_path):
    single(tmp_path / "one", 20)
    ranks(tmp_path / "two", 20)  # 7 tasks per batch: shares of 4 and 3, weighted
    assert largest_difference(theta_of(tmp_path / "one"), theta_of(tmp_path / "two")) <= 1e-6
    curves = [tensors.load(tmp_path / r / "theta.safetensors")[1]["val_ser"] for r in ("one", "two")]
    assert curves[0] == curves[1]  # the same validation SER at the same kept iteration
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
def test_a_run_resumes_with_another_world_size(tmp_path):
    single(tmp_path / "straight", 20)
    ranks(tmp_path / "resumed", 10)
    single(tmp_path / "resumed", 20, "--resume")  # two ranks for 10 iterations, then one process
    assert largest_difference(theta_of(tmp_path / "straight"), theta_of(tmp_path / "resumed")) <= 1e-6


def test_the_ranks_shares_cover_every_task_once():
    for total in (1, 5, 6, 7, 1024):
        for world in range(1, min(total, 5) + 1):
            covered = [i for rank in range(world) for i in range(total)[Placement("cpu", rank, world).share(total)]]
            assert covered == list(range(total))


def test_fewer_tasks_than_ranks_are_refused(tmp_path):
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer

    with pytest.raises(UserError, match="below the 4 ranks"):
        Trainer(tmp_path / "run", DemodConfig(), TrainConfig(algo="maml", tasks_per_batch=2), Placement("cpu", 0, 4))


def test_devices_are_checked_in_one_line():
    with pytest.raises(UserError, match="not a device"):
        torch_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device is available"):
            torch_device("cuda")


def test_several_processes_without_distributed_are_refused(monkeypatch):
    from metaedge.sdk.meta.placement import placement

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="without --distributed"):
        placement("cpu", distributed=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False here)")
def test_the_meta_gradient_on_cuda_equals_the_cpus():
    from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
    from metaedge.sdk.families.demod.training import TrainConfig, initial_theta
    from metaedge.sdk.meta import get_algorithm, meta_gradient, to_batch

    task, train = DemodConfig(pilots=8), TrainConfig(algo="fomaml")
    tasks = DemodTasks(task, seed=0)
    frames = tasks.frames(tasks.devices("train", 64), 8, 32, tasks.rng("train", 1))
    batch = to_batch(frames.x_tr, frames.y_tr, frames.x_va, frames.y_va, task.order)
    theta = {k: torch.tensor(v) for k, v in initial_theta(train.model(task), train, np.random.default_rng(0)).items()}
    objective, inner = get_algorithm("fomaml").objective, train.inner()
    cpu, _ = meta_gradient(objective, theta, batch, inner)
    on_gpu = {k: v.cuda() for k, v in theta.items()}
    gpu, _ = meta_gradient(objective, on_gpu, tuple(t.cuda() for t in batch), inner)
    assert max(float((cpu[k] - gpu[k].cpu()).abs().max()) for k in cpu) <= 1e-5
