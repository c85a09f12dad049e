"""Data-parallel training on PyTorch's own engine: torch.distributed, launched by torchrun.

mlrun reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT). With more than one process it joins the process group
(gloo on CPU, nccl on CUDA), wraps the model in DistributedDataParallel and gives
each rank a disjoint shard of every epoch's sample order. ``train.batch_size`` is
per process: the global batch is ``batch_size * world_size``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mlrun.errors import UsageError


@dataclass(frozen=True)
class Group:
    """This process's place in a distributed job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, writes the run folder, checkpoints and plots."""
        return self.rank == 0

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's order; every rank gets the same number of samples.

        Like DistributedSampler, the order is padded by wrapping around so it divides
        evenly: DDP needs every rank to take the same number of steps.
        """
        total = -(-len(indices) // self.world_size) * self.world_size
        if total > len(indices):
            indices = torch.cat([indices, indices[: total - len(indices)]])
        return indices[self.rank :: self.world_size]

    def eval_shard(self, size: int) -> torch.Tensor:
        """This rank's disjoint part of the test split (no padding: sums are reduced exactly)."""
        return torch.arange(self.rank, size, self.world_size)

    def sum(self, *values: float) -> list[float]:
        """Add numbers across all ranks."""
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def max(self, *values: float) -> list[float]:
        """The largest of each number across all ranks (used to agree on stopping)."""
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        found: list[Any] = [None] * self.world_size
        dist.all_gather_object(found, value)
        return found


def join(backend_setting: str, device_setting: str, timeout_s: int) -> Group | None:
    """Join the process group when launched with WORLD_SIZE > 1; None for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise UsageError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: launch with "
            "`mlrun RECIPE --nproc N` or `torchrun --nproc-per-node N -m mlrun RECIPE`"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    uses_cuda = device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available())
    backend = backend_setting if backend_setting != "auto" else ("nccl" if uses_cuda else "gloo")
    if uses_cuda:
        torch.cuda.set_device(local_rank)
    else:
        # N processes on one machine share its cores: 2 threads each on 2 cores would
        # fight over them and be slower than 1 each.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return Group(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def leave(group: Group | None) -> None:
    """Leave the process group (at the end of a run, successful or not)."""
    if group is not None and dist.is_initialized():
        dist.destroy_process_group()


def launch(argv: Sequence[str], nproc: int, max_restarts: int) -> int:
    """Run ``mlrun ARGV`` in ``nproc`` local processes through torch's elastic launcher."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
        "-m", "mlrun", *argv,
    ]  # fmt: skip
    # Each worker gets an equal share of the cores (torchrun would otherwise force 1 thread).
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # With the rendezvous store shared, restarted workers can read the previous attempt's
    # addresses and fail to connect (pytorch/pytorch#135712); a store per attempt avoids it.
    env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    return subprocess.run(command, env=env).returncode
