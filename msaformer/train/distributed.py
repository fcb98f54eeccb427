"""The process group of a training job: one process without a launcher, or many under torchrun / deepspeed / SLURM.

DeepSpeed's traps on machines without a GPU are handled here once: it is imported with its log lines kept off
stdout (shown on stderr with ``msaformer --verbose``), the shared-memory op it would JIT-compile at init (~50 s of
g++) is switched off, a one-process job needs no rendezvous port, and multi-rank CPU jobs leave with
``os._exit(0)`` to dodge a gloo abort at interpreter exit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: Any  # torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def quiet_third_party():
    """Keeps what third-party code prints (log lines, tqdm bars) off stdout, which is for data, and off stderr;
    shows it on stderr with ``msaformer --verbose``."""
    from msaformer.progress import verbose

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        if verbose() and buffer.getvalue():
            sys.stderr.write(buffer.getvalue())


def import_deepspeed():
    """Returns the ``deepspeed`` module, imported so that its log lines go to stderr, and only with --verbose
    (its logger writes to stdout, starting with an accelerator warning at import)."""
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    from msaformer.progress import verbose

    import torch

    if not torch.cuda.is_available():
        # Without this DeepSpeed probes for accelerators and may pick one that cannot run here.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with quiet_third_party():
        import deepspeed
        import deepspeed.ops
    from deepspeed.utils import logger

    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    logger.setLevel(logging.INFO if verbose() else logging.ERROR)
    # This op (shared-memory inference all-reduce) is JIT-compiled at init (~50 s of g++) and never used here.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def init_distributed() -> DistInfo:
    """Returns this process's rank, world size and device, starting the process group if needed.

    Works with no launcher (a one-rank group with an in-memory store), under ``torchrun`` and under the
    ``deepspeed`` launcher. Idempotent: a second call returns the same information.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    single = "RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ
    if single:
        # No launcher: without these DeepSpeed tries mpi4py discovery and fails.
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("LOCAL_RANK", "0")
    if not has_cuda and "OMP_NUM_THREADS" not in os.environ:
        # The deepspeed launcher does not set it: N ranks x all cores thrash a small CPU (30x slower seen).
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    deepspeed = import_deepspeed()

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if has_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if single and not torch.distributed.is_initialized():
        # A one-rank group needs no rendezvous: an in-memory store cannot collide with another job's port.
        torch.distributed.init_process_group(
            "nccl" if has_cuda else "gloo", store=torch.distributed.HashStore(), rank=0, world_size=1
        )
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if has_cuda else "gloo", verbose=False)
    return DistInfo(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        device=device,
    )


def barrier() -> None:
    """Waits for every rank (a no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Returns the element-wise sum of ``values`` over all ranks (float64)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def finish(exit_process: bool | None = None) -> None:
    """Flushes output; in a multi-rank CPU job, leaves with ``os._exit(0)``.

    DeepSpeed keeps gloo threads alive that abort about one CPU run in ten at interpreter exit
    ("terminate called without an active exception") after training finished; skipping the interpreter's
    teardown avoids it. A single-process run returns normally (so it can be called from tests and notebooks).
    """
    import torch
    import torch.distributed as dist

    multi_rank = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if exit_process is None:
        exit_process = multi_rank and not torch.cuda.is_available()
    if multi_rank:
        try:
            dist.barrier()
        except Exception:  # a rank already gone: exiting is still right
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    if exit_process:
        os._exit(0)
