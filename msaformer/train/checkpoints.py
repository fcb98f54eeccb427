"""DeepSpeed checkpoints of a run directory: written by every rank, checksummed, marked complete, pointed at by
``latest``; loaded without unpickling anything, verified, with a fallback to the previous good one.

Layout: ``RUN/checkpoints/step-XXXXXXXX/`` holds DeepSpeed's files, one ``rng_state_rankNNNNN.pt`` per rank,
``CHECKSUMS.json`` (size and SHA-256 of every other file) and, once every rank has finished writing, a
``COMPLETE`` marker; ``RUN/checkpoints/latest`` (DeepSpeed's own convention) names the newest complete one. A
crash at any moment leaves the previous checkpoint as the latest.

Loading (:func:`load_latest_checkpoint`) verifies the checksums first (the ranks share the hashing) and loads
every file with ``torch.load(weights_only=True)`` (:mod:`msaformer.train.safe_load`): a damaged, truncated or
tampered checkpoint is reported in one line on stderr and the previous complete one that verifies is used.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from msaformer.errors import MsaformerError
from msaformer.files import atomic_path, file_sha256, write_text
from msaformer.train.distributed import barrier

#: Sub-directory of a run directory that holds DeepSpeed checkpoints (one folder per tag + ``latest``).
CHECKPOINT_DIR = "checkpoints"
#: File written inside a checkpoint folder once every rank has finished writing it.
COMPLETE_MARKER = "COMPLETE"
#: Name of the marker file (DeepSpeed's own convention) that holds the tag of the newest complete checkpoint.
LATEST_MARKER = "latest"
#: Size and SHA-256 of every file of a checkpoint folder, written before the completion marker.
CHECKSUMS_FILE = "CHECKSUMS.json"


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
        write_checksums(root / tag)
        write_text(root / tag / COMPLETE_MARKER, f"{step}\n")
        write_text(root / LATEST_MARKER, tag)
        if keep_last and keep_last > 0:
            for old in complete_checkpoints(run_dir)[:-keep_last]:
                if old != tag:
                    shutil.rmtree(root / old, ignore_errors=True)
    barrier()
    return tag


def write_checksums(folder: Path) -> None:
    """Writes ``CHECKSUMS.json``: size and SHA-256 of every file under ``folder`` (the markers excepted)."""
    import json

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (COMPLETE_MARKER, CHECKSUMS_FILE))
    sums = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    write_text(folder / CHECKSUMS_FILE, json.dumps(sums, indent=1, sort_keys=True) + "\n")


def checkpoint_problem(folder: Path, rank: int = 0, world_size: int = 1) -> str | None:
    """Returns why checkpoint ``folder`` cannot be trusted (a file missing, of another size or content), or None.

    The files are hashed by the ranks in turn (rank r takes every world_size-th file); the caller combines the
    ranks' answers. A checkpoint written before checksums existed has no ``CHECKSUMS.json``: only its files'
    presence is checked.
    """
    import json

    listing = folder / CHECKSUMS_FILE
    if not listing.is_file():
        return None if any(folder.glob("*model_states.pt")) else f"{folder}: no model states file"
    try:
        sums = json.loads(listing.read_text(encoding="utf-8"))
        items = sorted(sums.items())
    except (OSError, ValueError, AttributeError) as exc:
        return f"{listing}: unreadable ({exc})"
    for name, expected in items:
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        try:
            size = path.stat().st_size
        except OSError as exc:
            return f"{path}: {exc.strerror}"
        if size != expected.get("bytes"):
            return f"{path}: {size} bytes, {expected.get('bytes')} when written (truncated or replaced)"
    for name, expected in items[rank::world_size]:
        if file_sha256(folder / name) != expected.get("sha256"):
            return f"{folder / name}: content differs from its checksum (damaged or modified)"
    return None


def load_latest_checkpoint(engine, run_dir: str | Path, *, restore_rng: bool = True, warn=None) -> dict | None:
    """Loads the newest complete checkpoint of ``run_dir`` that verifies into ``engine``; returns its client
    state (what was passed to :func:`save_checkpoint`, plus ``step`` and ``tag``) or None when there is none.

    A checkpoint whose files do not match their checksums, or that DeepSpeed cannot load, is reported through
    ``warn`` (one line; default: stderr on rank 0) and the previous complete one is tried. RNG states of this rank
    are restored too, when saved for this rank.

    Raises:
        CheckpointError: complete checkpoints exist but none of them loads.
    """
    from msaformer.errors import CheckpointError
    from msaformer.train.distributed import all_reduce_sum

    tags = complete_checkpoints(run_dir)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    order = [latest] + [t for t in reversed(tags) if t != latest]
    root = Path(run_dir) / CHECKPOINT_DIR
    rank, world = engine.global_rank, engine.world_size if hasattr(engine, "world_size") else 1
    problems = []
    for tag in order:
        problem = checkpoint_problem(root / tag, rank, world)
        # every rank must take the same decision: a checkpoint is good when no rank found a problem
        failed = all_reduce_sum([1.0 if problem else 0.0], engine.device)[0]
        if not failed:
            try:
                return _load_tag(engine, root, tag, restore_rng=restore_rng)
            except (CheckpointError, MsaformerError) as exc:
                problem = str(exc)
        problems.append(problem or f"{root / tag}: damaged on another rank")
        _warn(warn, rank, f"checkpoint {tag} is damaged ({problems[-1]}); trying the one before")
    raise CheckpointError(f"{root}: no complete checkpoint loads ({problems[0]}); move the run directory aside "
                          "to start over")


def _warn(warn, rank: int, message: str) -> None:
    if warn is not None:
        warn(message)
    elif rank == 0:
        import sys

        print(f"warning: {message}", file=sys.stderr, flush=True)


def _load_tag(engine, root: Path, tag: str, *, restore_rng: bool) -> dict:
    from msaformer.errors import CheckpointError
    from msaformer.train.safe_load import install_safe_loader, safe_load

    install_safe_loader(engine)
    try:
        load_path, client_state = engine.load_checkpoint(
            str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
    except CheckpointError:
        raise
    except (RuntimeError, OSError, KeyError, ValueError, EOFError) as exc:  # DeepSpeed's errors on damaged files
        raise CheckpointError(f"{root / tag}: cannot be loaded ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if load_path is None:
        raise CheckpointError(f"{root / tag}: DeepSpeed could not load this checkpoint (files missing?)")
    rng_file = root / tag / f"rng_state_rank{engine.global_rank:05d}.pt"
    if restore_rng and rng_file.is_file():
        set_rng_state(safe_load(rng_file))
    state = dict(client_state or {})
    state["tag"] = tag
    return state
