"""DeepSpeed checkpoints of a run directory: written by every rank, marked complete, pointed at by ``latest``.

Layout: ``RUN/checkpoints/step-XXXXXXXX/`` holds DeepSpeed's files, one ``rng_state_rankNNNNN.pt`` per rank and,
once every rank has finished writing, a ``COMPLETE`` marker; ``RUN/checkpoints/latest`` (DeepSpeed's own
convention) names the newest complete one. A crash at any moment leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from msaformer.errors import MsaformerError
from msaformer.files import atomic_path, write_text
from msaformer.train.distributed import barrier

#: Sub-directory of a run directory that holds DeepSpeed checkpoints (one folder per tag + ``latest``).
CHECKPOINT_DIR = "checkpoints"
#: File written inside a checkpoint folder once every rank has finished writing it.
COMPLETE_MARKER = "COMPLETE"
#: Name of the marker file (DeepSpeed's own convention) that holds the tag of the newest complete checkpoint.
LATEST_MARKER = "latest"


def rng_state() -> dict:
    """Returns this process's Python, NumPy, torch (and CUDA) RNG states as tensors, numbers and strings only,
    so that :func:`set_rng_state` can read them back with ``torch.load(weights_only=True)``."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restores the RNG states saved by :func:`rng_state`."""
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
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
    barrier()
    state = dict(client_state or {})
    state["step"] = step
    engine.save_checkpoint(str(root), tag=tag, client_state=state, save_latest=False)
    with atomic_path(root / tag / f"rng_state_rank{rank:05d}.pt") as tmp:
        torch.save(rng_state(), tmp)
    barrier()
    if rank == 0:
        write_text(root / tag / COMPLETE_MARKER, f"{step}\n")
        write_text(root / LATEST_MARKER, tag)
        if keep_last and keep_last > 0:
            for old in complete_checkpoints(run_dir)[:-keep_last]:
                if old != tag:
                    shutil.rmtree(root / old, ignore_errors=True)
    barrier()
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
        try:
            saved = torch.load(rng_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - damaged, or holding pickled objects: refused, nothing run
            from msaformer.model.files import torch_file_problem

            raise MsaformerError(f"{rng_file}: {torch_file_problem(rng_file, exc)}") from None
        set_rng_state(saved)
    state = dict(client_state or {})
    state["tag"] = tag
    return state
