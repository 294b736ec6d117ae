"""Where meta-training runs: a torch device, and data-parallel ranks through ``torch.distributed``.

Every rank draws the same meta-batch (the same seeded sampler) and computes the meta-gradient of its own contiguous
share of the tasks; the shares' gradients, each weighted by its share of the tasks, are summed over the ranks
(all-reduce). The weighted sum is the mean over the whole batch, so N ranks × B/N tasks give the meta-gradient of
1 rank × B tasks up to the order of floating-point additions, every rank takes the same optimizer step, and θ stays
identical on every rank (rank 0 writes the run directory). Algorithms whose objective draws random numbers (ES-MAML,
the Gaussian posterior, ALSET, modular assignment) draw them from a seed of their own on each rank (taken from the
run's shared random state, which advances alike everywhere): their meta-gradients follow the same distribution as
one process's, not the same values. The checkpoint holds nothing per rank, so a run resumes with another world size.
Launch with ``torchrun``; gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from metaedge.sdk.errors import UserError

Params = dict[str, torch.Tensor]
Gradient = Callable[[Params, Any], tuple[Params, torch.Tensor]]


@dataclass(frozen=True)
class Placement:
    device: str = "cpu"
    rank: int = 0
    world: int = 1

    @property
    def writer(self) -> bool:
        """Whether this rank writes checkpoints, curves and progress (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank is here (a rank must not see what another already wrote)."""
        if self.world > 1:
            import torch.distributed as dist

            device = torch.device(self.device)
            dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier()

    def share(self, total: int) -> slice:
        """This rank's contiguous share of ``total`` tasks (the first ``total % world`` ranks take one more)."""
        base, extra = divmod(total, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def torch_device(text: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked against what this machine has."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"--device '{text}' is not a device; give cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device '{text}': MetaEdge trains on cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {text}: no CUDA device is available here (torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device


def placement(device: str = "cpu", distributed: bool = False) -> Placement:
    """The placement of this process: ``device``, and with ``distributed`` its rank in the process group ``torchrun``
    describes in the environment (joined here: gloo on CPU, NCCL on CUDA; with CUDA, each rank the GPU of its local rank)."""
    target = torch_device(device)
    if not distributed:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError(
                "started by torchrun with several processes but without --distributed: they would all write the same run; add --distributed"
            )
        return Placement(str(target))
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise UserError("--distributed needs the process group torchrun starts: torchrun --nproc-per-node N -m metaedge.sdk.cli.main train demod …")
    if target.type == "cuda":
        if target.index is not None:
            raise UserError(f"--device {device} --distributed: each rank takes the GPU of its local rank; give --device cuda")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; start at most that many processes per node"
            )
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
    return _joined(target)


def _joined(target: torch.device) -> Placement:
    """Join the process group (gloo on CPU, NCCL on CUDA, bound to this rank's GPU); its failures as one line."""
    import torch.distributed as dist

    if not dist.is_initialized():
        try:
            if target.type == "cuda":
                dist.init_process_group(backend="nccl", device_id=target)
            else:
                dist.init_process_group(backend="gloo")
        except (ValueError, RuntimeError) as e:
            raise UserError(f"--distributed: joining the process group failed ({str(e).splitlines()[0]}); start the ranks with torchrun") from None
    return Placement(str(target), dist.get_rank(), dist.get_world_size())


def sharded(gradient: Gradient, where: Placement) -> Gradient:
    """``gradient`` over this rank's share of a batch's tasks (axis 0 of every batch tensor), all-reduced to the
    whole batch's mean meta-gradient and meta-loss (module docstring); unchanged on one rank."""
    if where.world == 1:
        return gradient
    import torch.distributed as dist

    def over_shares(theta: Params, batch: tuple[torch.Tensor, ...]) -> tuple[Params, torch.Tensor]:
        total = batch[0].shape[0]
        if total < where.world:
            raise ValueError(f"a batch of {total} tasks cannot be shared by {where.world} ranks: every rank needs one")
        share = where.share(total)
        grads, loss = gradient(theta, tuple(t[share] for t in batch))
        weight = (share.stop - share.start) / total
        names = sorted(grads)
        flat = torch.cat([grads[k].reshape(-1) * weight for k in names] + [loss.detach().reshape(1) * weight])
        dist.all_reduce(flat)
        out, offset = {}, 0
        for k in names:
            out[k] = flat[offset : offset + grads[k].numel()].view_as(grads[k])
            offset += grads[k].numel()
        return out, flat[-1]

    return over_shares
