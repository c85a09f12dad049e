"""Data-parallel training on PyTorch's own engine: torch.distributed, launched by torchrun.

mlrun reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT). With more than one process it joins the process group
(gloo on CPU, nccl on CUDA), wraps the model in DistributedDataParallel and gives
each rank a disjoint shard of every epoch's sample order. ``train.batch_size`` is
per process: the global batch is ``batch_size * world_size``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mlrun.errors import EXIT_BAD_INPUT, MlrunError, UsageError

# Set by the mlrun launcher for its workers: their parent's pid, to notice a parent
# that died before the worker asked to die with it.
LAUNCHER_PID_VAR = "MLRUN_LAUNCHER_PID"


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
    die_with_parent()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    uses_cuda = device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available())
    backend = backend_setting if backend_setting != "auto" else ("nccl" if uses_cuda else "gloo")
    if uses_cuda:
        torch.cuda.set_device(local_rank)
    else:
        # N processes on one machine share its cores: 2 threads each on 2 cores would
        # fight over them and be slower than 1 each.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, cpu_count() // local))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return Group(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def leave(group: Group | None) -> None:
    """Leave the process group (at the end of a run, successful or not)."""
    if group is not None and dist.is_initialized():
        dist.destroy_process_group()


def cpu_count() -> int:
    """The cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def die_with_parent() -> None:
    """Have the kernel kill this worker when its launcher dies (Linux; elsewhere a no-op).

    torchrun stops its workers when it is stopped with a signal it can catch, but not
    when it is killed outright (kill -9, the OOM killer): the workers would train on as
    orphans. SIGKILL, because a launcher that vanished cannot collect a graceful stop.
    Only under torch's elastic agent (TORCHELASTIC_RUN_ID): a rank started by hand from
    a shell must not die with that shell.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    # The launcher may have died before the request above: then it can never fire.
    launcher = os.environ.get(LAUNCHER_PID_VAR)
    if launcher and launcher.isdigit() and os.getppid() != int(launcher):
        os._exit(1)


def check_launch_options(nproc: int | None, max_restarts: int | None) -> None:
    """Refuse impossible --nproc / --max-restarts values before anything starts."""
    if nproc is not None and nproc < 1:
        raise UsageError(
            f"--nproc must be at least 1, got {nproc}",
            problems=["--nproc 2 trains in 2 processes; leave it out to train in this one"],
        )
    if max_restarts is not None and max_restarts < 0:
        raise UsageError(
            f"--max-restarts must be 0 or more, got {max_restarts}",
            problems=["--max-restarts 0 (the default) ends the job at the first failure"],
        )


def check_process_count(nproc: int, *, uses_cuda: bool, cpus: int | None = None, gpus: int | None = None) -> str | None:
    """A warning when ``nproc`` local workers oversubscribe the CPU cores; None when they fit.

    On CUDA every process needs a GPU of its own (``LOCAL_RANK``), so too many is an error.
    """
    if uses_cuda:
        gpus = torch.cuda.device_count() if gpus is None else gpus
        if nproc > gpus:
            raise UsageError(
                f"--nproc {nproc} but {gpus} GPU{'s' if gpus != 1 else ''} here: "
                "on CUDA each process needs its own GPU",
                problems=[f"use --nproc {max(1, gpus)}", "or train on the CPU: train.device=cpu"],
            )
        return None
    cpus = cpu_count() if cpus is None else cpus
    if nproc <= cpus:
        return None
    return (
        f"--nproc {nproc} is more than the {cpus} CPU core{'s' if cpus != 1 else ''} here: each worker "
        f"gets 1 thread and they take turns on the cores, so training will be slower than with --nproc {cpus}"
    )


def saved_world_size(run_dir: str | Path) -> int | None:
    """How many processes trained a run folder (None: one, or not a run folder)."""
    from mlrun.runs import RunFolder

    found = (RunFolder(Path(run_dir)).read_status().distributed or {}).get("world_size")
    return found if isinstance(found, int) else None


def resume_world_size(saved_world_size: int | None, requested: int | None) -> int:
    """The process count to resume with: the run's own; a different one is refused.

    Each rank's share of the data order depends on the world size, so another count
    would silently change the batches and the weights.
    """
    saved = saved_world_size or 1
    if requested is not None and requested != saved:
        plural = "es" if saved != 1 else ""
        fix = f"--nproc {saved}" if saved > 1 else "one process (leave out --nproc)"
        raise UsageError(
            f"this run was trained with {saved} process{plural}; resume with {fix} "
            "(a different count changes the batch order and weights)",
            problems=[f"asked for {requested}"],
        )
    return saved


def processes_to_launch(nproc: int | None, max_restarts: int | None, resume_dir: str | None) -> int | None:
    """How many workers the mlrun launcher starts; None trains in this process.

    A resumed run keeps its world size: ``mlrun resume RUN`` relaunches a 2-process run
    with 2 processes, and ``--nproc`` with another count is refused.
    """
    check_launch_options(nproc, max_restarts)
    if resume_dir is None:
        return nproc
    count = resume_world_size(saved_world_size(resume_dir), nproc)
    return count if nproc is not None or count > 1 else None


def launch(
    argv: Sequence[str],
    nproc: int,
    max_restarts: int,
    *,
    output_dir: str | None = None,
    resume_dir: str | None = None,
) -> int:
    """Run ``mlrun ARGV`` in ``nproc`` local processes under torch's elastic agent, in this process.

    The agent (what ``torchrun --standalone`` runs) lives in the launcher itself, so
    there is no extra process layer: killing ``mlrun`` kills the agent, and the workers
    die with it (:func:`die_with_parent`). Workers inherit stdout and stderr, so their
    output streams live; a failure ends with one line naming the rank instead of
    torchrun's 45-line ChildFailedError. ``output_dir`` (a new run) or ``resume_dir``
    lets that line name the run folder to resume.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    check_launch_options(nproc, max_restarts)
    run_id = str(uuid.uuid4())
    # The same configuration as `torchrun --standalone`: a c10d rendezvous on a free local port.
    args = torchrun.parse_args([
        "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={run_id}",
        f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "-m", "mlrun", *argv,
    ])  # fmt: skip
    # Each worker gets an equal share of the cores (torchrun would otherwise force 1 thread).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_count() // nproc)))
    # With the rendezvous store shared, restarted workers can read the previous attempt's
    # addresses and fail to connect (pytorch/pytorch#135712); a store per attempt avoids it.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    os.environ[LAUNCHER_PID_VAR] = str(os.getpid())
    config, command, command_args = torchrun.config_from_args(args)
    # The agent's own notices ("Sending process N closing signal SIGTERM", "failed
    # (exitcode: -9) ...") repeat what the one failure line below says.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config=config, entrypoint=command)(*command_args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode == EXIT_BAD_INPUT:  # the ranks have said what was wrong
            return EXIT_BAD_INPUT
        raise MlrunError(
            _failure_line(rank, failure.exitcode),
            problems=[_resume_hint(_failed_run_folder(output_dir, run_id) or resume_dir)],
        ) from None
    except SignalException as exc:
        # Ctrl-C or a termination request: the agent has passed it on to the workers,
        # which stop at a safe point and save a checkpoint.
        print("interrupted", file=sys.stderr)
        return 128 + int(exc.sigval)
    finally:
        _forget_elastic_pointer(output_dir, run_id)
    return 0


def _failure_line(rank: int, exitcode: int) -> str:
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"worker rank {rank} died (signal {signal.Signals(-exitcode).name})"
        return f"worker rank {rank} died (signal {-exitcode})"
    return f"worker rank {rank} failed (exit code {exitcode})"


def _resume_hint(folder: str | Path | None) -> str:
    from mlrun.checkpoint import CHECKPOINT_FILE

    if folder is None or not (Path(folder) / CHECKPOINT_FILE).is_file():
        return "no checkpoint was saved yet: start the run again"
    return f"the run folder keeps its last checkpoint: resume with `mlrun resume {folder}`"


def _elastic_pointer(output_dir: str, run_id: str) -> Path:
    # Written by the engine's rank 0 (`output_dir/.elastic-<TORCHELASTIC_RUN_ID>`) so that
    # an elastic restart finds the run folder; the run id is the rendezvous id.
    return Path(output_dir) / f".elastic-{run_id}"


def _failed_run_folder(output_dir: str | None, run_id: str) -> str | None:
    """The run folder this job's rank 0 created, if it got that far."""
    if output_dir is None:
        return None
    with contextlib.suppress(OSError):
        return _elastic_pointer(output_dir, run_id).read_text(encoding="utf-8").strip() or None
    return None


def _forget_elastic_pointer(output_dir: str | None, run_id: str) -> None:
    """The job is over: no elastic restart will look for its run folder any more."""
    if output_dir is not None:
        with contextlib.suppress(OSError):
            _elastic_pointer(output_dir, run_id).unlink()
