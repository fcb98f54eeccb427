"""A generic DeepSpeed training engine: process group, ZeRO config, optimizer, checkpoints, metrics.

Nothing here knows about MSAs: the MSA language model loop (``msaformer.train.loop``) and the promoter
classifier both build on these functions. The CPU traps of DeepSpeed (an op that JIT-compiles at init,
FusedAdam, gloo threads aborting at exit, mpi4py lookups without a launcher) are handled here once.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msaformer.errors import ConfigError, MsaformerError

#: Sub-directory of a run directory that holds DeepSpeed checkpoints (one folder per tag + ``latest``).
CHECKPOINT_DIR = "checkpoints"
#: File written inside a checkpoint folder once every rank has finished writing it.
COMPLETE_MARKER = "COMPLETE"
#: Name of the marker file (DeepSpeed's own convention) that holds the tag of the newest complete checkpoint.
LATEST_MARKER = "latest"


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed() -> DistInfo:
    """Returns this process's rank, world size and device, starting the process group if needed.

    Works with no launcher (a one-rank group on a free local port), under ``torchrun`` and under the
    ``deepspeed`` launcher. Idempotent: a second call returns the same information.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    if not has_cuda:
        # Without this DeepSpeed probes for accelerators and may pick one that cannot run here.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    single = "RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ
    if single:
        # No launcher: without these DeepSpeed tries mpi4py discovery and fails.
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("LOCAL_RANK", "0")

    if not has_cuda and "OMP_NUM_THREADS" not in os.environ:
        # The deepspeed launcher does not set it: N ranks x all cores thrash a small CPU (30x slower seen).
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))

    import deepspeed
    import deepspeed.ops

    # This op (shared-memory inference all-reduce) is JIT-compiled at init (~50 s of g++) and never used here.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if has_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if single and not torch.distributed.is_initialized():
        # A one-rank group needs no rendezvous: an in-memory store cannot collide with another job's port
        # (a free port picked above may be taken by someone else before it is bound).
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


def load_ds_config(path_or_dict: str | Path | dict) -> dict:
    """Returns a DeepSpeed config as a dict, read from a JSON file or copied from a dict."""
    if isinstance(path_or_dict, dict):
        return copy.deepcopy(path_or_dict)
    path = Path(path_or_dict)
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config not found: {path} (see configs/deepspeed/zero{{1,2,3}}.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def build_ds_config(
    path_or_dict: str | Path | dict,
    *,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    device: Any,
    grad_clip: float | None = 1.0,
    zero_stage: int | None = None,
    precision: str = "auto",
) -> dict:
    """Returns a complete DeepSpeed config: batch sizes, clipping, precision and ZeRO stage filled in.

    ``precision="auto"`` gives bf16 on a GPU that supports it and fp32 on CPU (so CPU runs are exact and
    comparable across stages). The optimizer and scheduler sections are dropped: :func:`initialize` passes
    a torch AdamW and a LambdaLR, so nothing is JIT-compiled.
    """
    cfg = load_ds_config(path_or_dict)
    for name, value in (("micro_batch_size", micro_batch_size), ("grad_accum_steps", grad_accum_steps)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    cfg.pop("optimizer", None)
    cfg.pop("scheduler", None)
    cfg["train_micro_batch_size_per_gpu"] = micro_batch_size
    cfg["gradient_accumulation_steps"] = grad_accum_steps
    cfg["train_batch_size"] = micro_batch_size * grad_accum_steps * world_size
    if grad_clip is not None and grad_clip > 0:
        cfg["gradient_clipping"] = float(grad_clip)
    else:
        cfg.pop("gradient_clipping", None)

    zero = dict(cfg.get("zero_optimization") or {})
    stage = zero.get("stage", 0) if zero_stage is None else zero_stage
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    zero["stage"] = stage
    cfg["zero_optimization"] = zero
    if zero.get("offload_optimizer") or zero.get("offload_param"):
        # Offload with a torch optimizer: otherwise DeepSpeed insists on DeepSpeedCPUAdam (a 40 s compile).
        cfg["zero_force_ds_cpu_optimizer"] = False

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    on_gpu = getattr(device, "type", str(device)) == "cuda"
    if precision == "auto":
        import torch

        precision = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and stage == 0:
        # Stage 0 keeps bf16 gradients and accumulates in bf16; stage 1 adds fp32 master weights.
        zero["stage"] = 1
    cfg["bf16"] = {"enabled": precision == "bf16"}
    cfg["fp16"] = {"enabled": precision == "fp16"}
    cfg.setdefault("steps_per_print", 10**9)  # msaformer logs itself
    cfg.setdefault("wall_clock_breakdown", False)
    return cfg


def lr_lambda(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Returns the learning-rate multiplier at ``step``: linear warmup, then cosine decay to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _WarmupCosine:
    """Picklable LR lambda (a LambdaLR stores callable objects in its state dict, but not closures)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        return lr_lambda(
            step, warmup_steps=self.warmup_steps, total_steps=self.total_steps, min_lr_ratio=self.min_lr_ratio
        )


def param_groups(model, weight_decay: float) -> list[dict]:
    """Returns AdamW parameter groups: weight decay on matrices (dim >= 2) only, not on biases and norms."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def initialize(
    model,
    ds_config: dict,
    *,
    lr: float,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    total_steps: int = 1,
    min_lr_ratio: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
):
    """Returns a DeepSpeed engine wrapping ``model`` with torch AdamW and warmup-then-cosine LR.

    The scheduler steps once per optimizer step (DeepSpeed calls it at gradient-accumulation boundaries),
    and its state is saved and restored with DeepSpeed checkpoints.
    """
    import deepspeed
    import torch

    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
    schedule = _WarmupCosine(warmup_steps, total_steps, min_lr_ratio)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        # A callable gets the optimizer DeepSpeed wrapped (ZeRO), so the schedule drives the real param groups.
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=ds_config,
    )
    return engine


# --------------------------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tag_step(tag: str) -> int:
    try:
        return int(tag.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def complete_checkpoints(run_dir: str | Path) -> list[str]:
    """Returns the tags of complete checkpoints in ``run_dir``, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    tags = [p.name for p in root.iterdir() if p.is_dir() and (p / COMPLETE_MARKER).is_file()]
    return sorted(tags, key=lambda t: (_tag_step(t), t))


def latest_checkpoint(run_dir: str | Path) -> str | None:
    """Returns the tag of the newest complete checkpoint in ``run_dir``, or None.

    The ``latest`` marker is trusted only if it names a complete checkpoint; otherwise (a crash between
    writing files and committing) the newest folder with a completion marker wins.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    marker = root / LATEST_MARKER
    if marker.is_file():
        tag = marker.read_text().strip()
        if tag and (root / tag / COMPLETE_MARKER).is_file():
            return tag
    tags = complete_checkpoints(run_dir)
    return tags[-1] if tags else None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_checkpoint(engine, run_dir: str | Path, step: int, client_state: dict | None = None, keep_last: int = 3) -> str:
    """Saves a DeepSpeed checkpoint ``step-XXXXXXXX`` under ``run_dir/checkpoints``; returns its tag.

    Every rank must call this. Each rank also stores its own RNG states. Only once every rank has finished
    writing does rank 0 mark the folder complete and atomically point ``latest`` at it, so a crash at any
    moment leaves the previous checkpoint as the latest. Then all but the newest ``keep_last`` complete
    checkpoints are deleted.
    """
    import torch

    root = Path(run_dir) / CHECKPOINT_DIR
    tag = f"step-{step:08d}"
    rank = engine.global_rank
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        stale = root / tag
        if stale.exists():  # a half-written leftover of a crashed run (or an overwrite after resume)
            shutil.rmtree(stale)
    _barrier()
    state = dict(client_state or {})
    state["step"] = step
    engine.save_checkpoint(str(root), tag=tag, client_state=state, save_latest=False)
    torch.save(_rng_state(), root / tag / f"rng_state_rank{rank:05d}.pt")
    _barrier()
    if rank == 0:
        _atomic_write(root / tag / COMPLETE_MARKER, f"{step}\n")
        _atomic_write(root / LATEST_MARKER, tag)
        if keep_last and keep_last > 0:
            for old in complete_checkpoints(run_dir)[:-keep_last]:
                if old != tag:
                    shutil.rmtree(root / old, ignore_errors=True)
    _barrier()
    return tag


def load_latest_checkpoint(engine, run_dir: str | Path, *, restore_rng: bool = True) -> dict | None:
    """Loads the newest complete checkpoint of ``run_dir`` into ``engine``; returns its client state or None.

    The returned dict holds what the caller passed to :func:`save_checkpoint` plus ``step`` and ``tag``.
    RNG states (python, numpy, torch, cuda) of this rank are restored too, when saved for this rank.
    """
    import torch

    tag = latest_checkpoint(run_dir)
    if tag is None:
        return None
    root = Path(run_dir) / CHECKPOINT_DIR
    load_path, client_state = engine.load_checkpoint(
        str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise MsaformerError(f"{root / tag}: DeepSpeed could not load this checkpoint (files missing?)")
    rng_file = root / tag / f"rng_state_rank{engine.global_rank:05d}.pt"
    if restore_rng and rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    state = dict(client_state or {})
    state["tag"] = tag
    return state


# ------------------------------------------------------------------------------------------------- metrics


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


class MetricsLogger:
    """Logs metrics to a rich console line (stderr), ``metrics.csv`` and TensorBoard (if installed).

    Only rank 0 writes. ``metrics.csv`` has one row per logged (step, split): training rows carry plain
    names (``step``, ``loss``, ``accuracy``, ...); rows of another split carry prefixed names (``val_loss``).
    A new column appearing later rewrites the header. With ``start_step`` (a resumed run), rows after that
    step, left by the interrupted run, are dropped so the file reads as one continuous run.
    """

    def __init__(self, run_dir: str | Path, rank: int = 0, *, start_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.path = self.run_dir / "metrics.csv"
        self._columns: list[str] = []
        self._rows: list[dict] = []
        self._tb = None
        if rank != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                self._columns = list(reader.fieldnames or [])
                self._rows = [r for r in reader if start_step is None or int(float(r["step"])) <= start_step]
            self._rewrite()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        except Exception:  # tensorboard not installed: CSV and console only
            self._tb = None

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self.path)

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Writes one row of ``metrics`` for ``step``; a no-op on ranks other than 0."""
        if self.rank != 0:
            return
        prefix = "" if split == "train" else f"{split}_"
        row = {"step": int(step), "split": split}
        for key, value in metrics.items():
            row[prefix + key] = float(value) if not isinstance(value, int) else value
        new = [k for k in row if k not in self._columns]
        self._rows.append(row)
        if new:
            self._columns.extend(new)
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self._columns, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{split}/{key}", value, step)
        from rich.console import Console

        text = "  ".join(f"{k} {_format_value(v)}" for k, v in metrics.items())
        Console(stderr=True).print(f"[bold]{split}[/] step {step:>6d}  {text}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


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


class Throughput:
    """Tokens per second between calls of :meth:`rate`."""

    def __init__(self) -> None:
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, tokens: int) -> None:
        self.tokens += int(tokens)

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.tokens / max(now - self.start, 1e-9)
        self.tokens, self.start = 0, now
        return value
