"""Batch inference on many processes: ``torchrun``, the ``deepspeed`` launcher or SLURM ``srun``, one device each.

The same ``msaformer embed`` / ``contacts`` command line runs under a launcher; :func:`msaformer.infer.msa.embed`
hands the work here when the launcher started more than one rank (:func:`launched_world_size`). The result is
exactly the files a one-process run writes: the same HDF5 groups and datasets (bit for bit: every batch is the
batch a one-process run would make), the same index rows in the same order, the same side files.

1. **Scan.** Every rank expands the inputs (files, shard directories, alignment databases; the rules of
   :mod:`msaformer.data.inputs`) and reads a disjoint share of the sources (every N-th), recording each
   alignment's name, content hash, subsampled shape, column windows or the reason it cannot be used. The
   records are exchanged (gloo), so every rank knows the whole run.
2. **Plan.** The alignments to compute (not failed, not reusable from a previous complete output of the same
   run) are cut into the batches a one-process run makes (:meth:`EmbedRun.batches`); batches already held by
   the part files of an interrupted run of the same plan are dropped; the rest are dealt out to the ranks,
   the most expensive first, each to the rank with the fewest padded tokens so far.
3. **Compute.** Each rank reads the alignments of its batches (streaming, in input order) and writes their
   arrays to part files ``.OUT.parts/part-<rank>-<k>.h5``, each written atomically, every
   ``MSAFORMER_PART_SECONDS`` (30) seconds or 256 MiB of results.
4. **Merge.** Rank 0 writes the output from the part files (and the reused groups), as the one-process run
   would (:class:`~msaformer.infer.writer.ResultWriter`, all or nothing), then removes the part folder.

A run that is killed leaves its part files; the same command again (any number of ranks) computes only the
batches they lack. Ranks meet through the launcher's ``MASTER_ADDR`` / ``MASTER_PORT``, or, under a plain
``srun`` without them, through a file store in the part folder (a file system all nodes share). The process
group is gloo on CPUs and GPUs alike: ranks exchange only small Python objects, never tensors.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msaformer.errors import MsaformerError
from msaformer.progress import Counter, ProgressCallback

#: Seconds between part files of one rank (a killed run loses at most this much work per rank).
PART_SECONDS_ENV = "MSAFORMER_PART_SECONDS"
#: Seconds a rank waits for the others at a barrier (a slow rank's share, the merge) before giving up.
TIMEOUT_ENV = "MSAFORMER_DIST_TIMEOUT"
PART_FORMAT = "msaformer-embed-part"
#: A part file is also written once this many bytes of results are waiting (bounds each rank's memory).
PART_MAX_BYTES = 256 << 20


@dataclass(frozen=True)
class Ranks:
    """Where this process sits among the launcher's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launcher_ranks() -> Ranks:
    """Returns the ranks the launcher set in the environment: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``
    (torchrun, the deepspeed launcher), else SLURM's ``SLURM_PROCID`` / ``SLURM_STEP_NUM_TASKS`` /
    ``SLURM_LOCALID`` inside an ``srun`` step, else Open MPI's; one rank without a launcher."""
    env = os.environ

    def read(*names: str, default: int) -> int:
        for name in names:
            if env.get(name, "").strip():
                try:
                    return int(env[name])
                except ValueError:
                    raise MsaformerError(f"environment variable {name}={env[name]!r} is not an integer") from None
        return default

    if "RANK" in env and "WORLD_SIZE" in env:
        world = read("WORLD_SIZE", default=1)
        return Ranks(read("RANK", default=0), world, read("LOCAL_RANK", default=0),
                     read("LOCAL_WORLD_SIZE", default=world))  # fmt: skip
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:  # srun sets these; an sbatch script alone does not
        world = read("SLURM_STEP_NUM_TASKS", default=1)
        return Ranks(read("SLURM_PROCID", default=0), world, read("SLURM_LOCALID", default=0),
                     read("SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", default=world))  # fmt: skip
    if "OMPI_COMM_WORLD_RANK" in env:
        world = read("OMPI_COMM_WORLD_SIZE", default=1)
        return Ranks(read("OMPI_COMM_WORLD_RANK", default=0), world, read("OMPI_COMM_WORLD_LOCAL_RANK", default=0),
                     read("OMPI_COMM_WORLD_LOCAL_SIZE", default=world))  # fmt: skip
    return Ranks()


def launched_world_size() -> int:
    """Returns how many processes the launcher started (1 without one)."""
    return launcher_ranks().world_size


class ProcessGroup:
    """The gloo process group of one multi-process command (a context manager; see the module docstring)."""

    def __init__(self, store_dir: Path, device: str = "auto") -> None:
        self.ranks = launcher_ranks()
        self.store_dir = store_dir
        self.device = device
        self._owned = False
        self._store_file: Path | None = None

    def __enter__(self) -> ProcessGroup:
        import torch
        import torch.distributed as dist

        ranks = self.ranks
        if not (0 <= ranks.rank < ranks.world_size):
            raise MsaformerError(f"rank {ranks.rank} is outside the launcher's world of {ranks.world_size} processes")
        if torch.cuda.is_available() and self.device in ("auto", "cuda"):
            torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())  # "cuda" is then this rank's GPU
        elif "OMP_NUM_THREADS" not in os.environ:
            # The deepspeed launcher and srun do not set it: N ranks x all cores thrash a CPU.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ranks.local_world_size)))
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 24 * 3600)))
            if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):  # the launcher's rendezvous
                dist.init_process_group("gloo", init_method="env://", rank=ranks.rank, world_size=ranks.world_size,
                                        timeout=timeout)  # fmt: skip
            else:  # plain srun: meet through a file on the output's (shared) file system
                if "SLURM_JOB_ID" not in os.environ:
                    raise MsaformerError(
                        f"rank {ranks.rank} of {ranks.world_size}: set MASTER_ADDR and MASTER_PORT (torchrun and the "
                        "deepspeed launcher do), or start the ranks with srun"
                    )
                self.store_dir.mkdir(parents=True, exist_ok=True)
                job = os.environ.get("SLURM_JOB_ID", "local") + "-" + os.environ.get("SLURM_STEP_ID", "0")
                self._store_file = self.store_dir / f"store-{job}"
                store = dist.FileStore(str(self._store_file), ranks.world_size)
                dist.init_process_group("gloo", store=store, rank=ranks.rank, world_size=ranks.world_size,
                                        timeout=timeout)  # fmt: skip
            self._owned = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import torch.distributed as dist

        if self._owned and dist.is_initialized():
            if exc_type is None:
                dist.barrier()
            dist.destroy_process_group()
            if self._store_file is not None and self.ranks.is_main:
                self._store_file.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.store_dir.rmdir()  # only when empty

    def all_gather(self, value: Any) -> list[Any]:
        """Returns every rank's ``value`` (picklable), in rank order."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.ranks.world_size
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        """Returns rank 0's ``value`` on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


# --- reading a share of the inputs ------------------------------------------------------------------------------


def source_records(source) -> Iterator[tuple]:
    """Yields ``(name, source, msa, error)`` for every alignment of one input source, as
    :func:`msaformer.data.inputs.iter_inputs` does for it."""
    from msaformer.data.inputs import source_records as records_of

    for _, *record in records_of(source):
        yield tuple(record)


def selected_records(source, wanted: set[int]) -> Iterator[tuple]:
    """Yields ``(position, name, source, msa, error)`` for the alignments of ``source`` at ``wanted`` positions;
    a shard directory reads only those records."""
    from msaformer.data.inputs import source_records as records_of

    yield from records_of(source, wanted)


@dataclass
class _Record:
    """What the scan learned about one alignment (no arrays)."""

    source_index: int
    position: int  # within its source
    name: str
    where: str
    error: str | None = None
    depth: int = 0
    rows: int = 0
    length: int = 0
    input_hash: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    reused: bool = False
    query: str = ""  # the query row as aligned (the group's attribute; windows average over its residues)


def _scan_source(run, index: int, source, reusable: set[tuple[str, str]]) -> list[_Record]:
    from msaformer.data.msa import content_hash
    from msaformer.data.inputs import InputItem
    from msaformer.data.sampling import subsample

    out = []
    for position, (name, where, msa, error) in enumerate(source_records(source)):
        record = _Record(index, position, name, where)
        if error is not None:
            record.error = error
        else:
            record.input_hash = content_hash(msa.tokens)
            if (where, record.input_hash) in reusable:
                record.reused = True
            else:
                prepared = run.prepare(InputItem(0, name, where, msa))
                if isinstance(prepared, str):
                    kept = subsample(msa, run.max_rows, run.opts.subsample, run.opts.seed)
                    record.error, record.depth, record.rows, record.length = prepared, msa.depth, kept.depth, kept.length
                else:
                    record.depth, record.rows, record.length = prepared.depth, prepared.msa.depth, prepared.msa.length
                    record.spans = list(prepared.spans)
                    record.query = prepared.msa.query
        out.append(record)
    return out


# --- the plan ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PieceRef:
    item: int  # index into the run's records
    k: int  # window


def _plan_batches(run, records: list[_Record]) -> list[list[_PieceRef]]:
    """Returns the batches a one-process run makes of the records to compute (same order, same members)."""

    @dataclass
    class _Shape:
        ref: _PieceRef
        shape: tuple[int, int]

    def pieces() -> Iterator[_Shape]:
        for i, r in enumerate(records):
            if r.error is None and not r.reused:
                for k, (a, b) in enumerate(r.spans):
                    yield _Shape(_PieceRef(i, k), (r.rows, b - a))

    from msaformer.infer.batching import stream_batches

    return [[s.ref for s in batch] for batch in
            stream_batches(pieces(), lambda s: s.shape, run.opts.toks_per_batch,
                           same_depth=run.runner.same_depth_batches)]  # fmt: skip


def _batch_cost(batch: list[_PieceRef], records: list[_Record]) -> int:
    rows = max(records[p.item].rows for p in batch)
    cols = max(b - a for p in batch for a, b in [records[p.item].spans[p.k]])
    return len(batch) * rows * (cols + 1)


def assign_batches(costs: Sequence[int], world_size: int) -> list[list[int]]:
    """Returns the batch indices of each rank: the most expensive batch first, each to the least loaded rank
    (ties: the lower batch index, the lower rank), so the ranks' padded tokens come out balanced."""
    loads = [0] * world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for b in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda k: (loads[k], k))
        shares[r].append(b)
        loads[r] += costs[b]
    return [sorted(s) for s in shares]


def _plan_hash(key: str, batches: list[list[_PieceRef]], records: list[_Record]) -> str:
    digest = hashlib.sha256(key.encode())
    for batch in batches:
        digest.update(json.dumps([(records[p.item].where, records[p.item].input_hash, p.k) for p in batch]).encode())
    return digest.hexdigest()


# --- part files -------------------------------------------------------------------------------------------------


def parts_dir(out: Path) -> Path:
    """Returns the folder of an output's part files (hidden, beside it)."""
    return out.with_name(f".{out.name}.parts")


def _done_parts(folder: Path, plan: str) -> dict[int, Path]:
    """Returns ``{batch: part file}`` of the complete part files of this plan in ``folder``."""
    import h5py

    done: dict[int, Path] = {}
    if not folder.is_dir():
        return done
    for path in sorted(folder.glob("part-*.h5")):
        try:
            with h5py.File(path, "r") as h5:
                if h5.attrs.get("format") != PART_FORMAT or h5.attrs.get("plan") != plan:
                    continue
                for b in json.loads(h5.attrs["batches"]):
                    done[int(b)] = path
        except (OSError, KeyError, ValueError):
            continue  # a damaged part is computed again
    return done


class _PartWriter:
    """Collects one rank's batch results and writes them as part files, each atomically."""

    def __init__(self, folder: Path, rank: int, plan: str, seconds: float) -> None:
        self.folder, self.rank, self.plan, self.seconds = folder, rank, plan, seconds
        self.pending: list[tuple[int, list[dict]]] = []
        self.last = time.monotonic()
        self.bytes = 0  # held in memory until the next part file
        self.k = 0

    def add(self, batch: int, arrays: list[dict]) -> None:
        self.pending.append((batch, arrays))
        self.bytes += sum(value.nbytes for piece in arrays for value in piece.values())
        if time.monotonic() - self.last >= self.seconds or self.bytes >= PART_MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        import h5py
        import numpy as np

        from msaformer.files import atomic_path

        if not self.pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        while (self.folder / f"part-{self.rank:05d}-{self.k:06d}.h5").exists():
            self.k += 1  # parts of an earlier, interrupted run of the same rank stay
        path = self.folder / f"part-{self.rank:05d}-{self.k:06d}.h5"
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = PART_FORMAT
            h5.attrs["plan"] = self.plan
            h5.attrs["batches"] = json.dumps([b for b, _ in self.pending])
            for b, arrays in self.pending:
                for j, piece in enumerate(arrays):
                    group = h5.create_group(f"{b}/{j}")
                    for key, value in piece.items():
                        group.create_dataset(key, data=np.ascontiguousarray(value))
        self.pending.clear()
        self.bytes = 0
        self.last = time.monotonic()
        self.k += 1


# --- the run ----------------------------------------------------------------------------------------------------


def embed_distributed(
    inputs: Sequence[str | Path],
    checkpoint: str | Path,
    out: str | Path,
    options=None,
    *,
    index: str | Path | None = None,
    model=None,
    progress: ProgressCallback | None = None,
):
    """:func:`msaformer.infer.msa.embed` on every rank of a launcher's job; returns the run's summary on rank 0
    and this rank's share of it elsewhere. See the module docstring."""
    from msaformer.data.inputs import iter_sources
    from msaformer.infer.msa import EmbedOptions, EmbedRun, EmbedSummary
    from msaformer.infer.writer import previous_run_keys

    opts = options or EmbedOptions()
    out = Path(out)
    if not out.parent.is_dir():
        raise MsaformerError(f"output folder does not exist: {out.parent} (create it first)")
    folder = parts_dir(out)
    start = time.perf_counter()
    with ProcessGroup(folder, opts.device) as group:
        ranks = group.ranks
        run = EmbedRun.create(checkpoint, out, opts, model)
        sources = list(iter_sources(inputs))
        reusable = previous_run_keys(out, run.key)
        mine = [_scan_source(run, i, s, reusable) for i, s in enumerate(sources) if i % ranks.world_size == ranks.rank]
        records = sorted((r for share in group.all_gather(mine) for lst in share for r in lst),
                         key=lambda r: (r.source_index, r.position))  # fmt: skip
        failed = [r for r in records if r.error is not None]
        if failed and opts.on_error == "fail":
            raise MsaformerError(f"{failed[0].where}: {failed[0].error} (use --on-error skip to record it and go on)")
        batches = _plan_batches(run, records)
        plan = _plan_hash(run.key, batches, records)
        done = group.broadcast(_done_parts(folder, plan) if ranks.is_main else None)
        todo = [b for b in range(len(batches)) if b not in done]
        share = assign_batches([_batch_cost(batches[b], records) for b in todo], ranks.world_size)[ranks.rank]
        my_batches = [todo[i] for i in share]
        progress = progress if ranks.is_main else None  # rank 0 draws its own share's bar
        counter = Counter(f"embed (rank 0 of {ranks.world_size})", "batches", progress, total=len(my_batches))
        if ranks.is_main and done:
            counter.report(f"{len(done)} of {len(batches)} batches done by an earlier run")
        seconds = float(os.environ.get(PART_SECONDS_ENV, "30"))
        parts = _PartWriter(folder, ranks.rank, plan, seconds)
        _compute_share(run, sources, records, batches, my_batches, parts, counter)
        parts.flush()
        group.barrier()
        summary = EmbedSummary(out=out)
        summary.resumed_batches, summary.batches = len(done), len(batches)
        if ranks.is_main:
            _merge(run, out, index, records, batches, folder, plan, summary, progress)
            shutil.rmtree(folder, ignore_errors=True)
        summary.seconds = time.perf_counter() - start
        summary.side_dirs = run.side
        if summary.index is None:
            summary.index = Path(index) if index is not None else out.with_suffix(".csv")
    return summary


def _compute_share(run, sources, records, batches, my_batches, parts, counter) -> None:
    """Computes this rank's batches, reading their alignments once, in input order."""
    from collections import deque

    from msaformer.data.inputs import InputItem

    if not my_batches:
        return
    last_item = {b: max(p.item for p in batches[b]) for b in my_batches}
    queue = deque(sorted(my_batches, key=lambda b: (last_item[b], b)))
    needed = sorted({p.item for b in my_batches for p in batches[b]})
    uses = {}
    for b in my_batches:
        for p in batches[b]:
            uses[p.item] = uses.get(p.item, 0) + 1
    by_source: dict[int, dict[int, int]] = {}
    for i in needed:
        by_source.setdefault(records[i].source_index, {})[records[i].position] = i
    cache: dict[int, Any] = {}

    def run_ready(upto: int) -> None:
        while queue and last_item[queue[0]] <= upto:
            b = queue.popleft()
            pieces = [run.pieces(cache[p.item])[p.k] for p in batches[b]]
            parts.add(b, run.compute(pieces))
            for p in batches[b]:
                uses[p.item] -= 1
                if uses[p.item] == 0:
                    del cache[p.item]
            counter.advance()

    for s in sorted(by_source):
        wanted = by_source[s]
        for position, name, where, msa, error in selected_records(sources[s], set(wanted)):
            i = wanted[position]
            if msa is None:
                raise MsaformerError(f"{where}: could not be read again ({error}); run the command again")
            prepared = run.prepare(InputItem(i, name, where, msa))
            if isinstance(prepared, str) or prepared.input_hash != records[i].input_hash:
                raise MsaformerError(f"{where}: changed while the run was reading it; run the command again")
            cache[i] = prepared
            run_ready(i)
    run_ready(len(records))
    if queue:
        raise MsaformerError(f"{len(queue)} batches could not be read back from their inputs; run the command again")


def _merge(run, out, index, records, batches, folder, plan, summary, progress) -> None:
    """Writes the output of the run from the part files, as the one-process run writes it."""
    import h5py
    import numpy as np

    from msaformer.data.inputs import InputItem, UniqueNames
    from msaformer.data.msa import Msa
    from msaformer.infer.msa import _Prepared
    from msaformer.infer.writer import ResultWriter

    where: dict[tuple[int, int], tuple[Path, str]] = {}
    for b, path in _done_parts(folder, plan).items():
        for j, p in enumerate(batches[b]):
            where[(p.item, p.k)] = (path, f"{b}/{j}")
    files: dict[Path, Any] = {}
    names = UniqueNames()
    counter = Counter("merge", "MSAs", progress, total=len(records))
    try:
        with ResultWriter(out, index, run.root_attrs, run.side, run_key=run.key) as writer:
            for i, r in enumerate(records):
                if r.error is not None:
                    summary.failed += 1
                    summary.errors.append((r.where, r.error))
                    writer.record(i, dict(name=r.name, group="", source=r.where, depth=r.depth, rows_used=r.rows,
                                          length=r.length, status=r.error))  # fmt: skip
                    counter.advance()
                    continue
                group = names(r.name)
                if r.reused:
                    attrs = writer.reuse(r.where, r.input_hash, group)
                    summary.reused += 1
                    r.depth, r.rows, r.length = int(attrs["depth"]), int(attrs["rows_used"]), int(attrs["length"])
                else:
                    pieces = []
                    for k in range(len(r.spans)):
                        if (i, k) not in where:
                            raise MsaformerError(f"{r.where}: its results are missing from {folder}; run the command again")
                        path, key = where[(i, k)]
                        if path not in files:
                            files[path] = h5py.File(path, "r")
                        pieces.append({name: ds[()] for name, ds in files[path][key].items()})
                    row = np.frombuffer(r.query.encode("ascii"), dtype=np.uint8)[None, :]
                    p = _Prepared(InputItem(i, r.name, r.where), r.depth, Msa([r.name], row, np.zeros_like(row)),
                                  group, r.input_hash, list(r.spans))  # fmt: skip
                    attrs = dict(name=r.name, source=r.where, input_hash=r.input_hash, depth=r.depth,
                                 rows_used=r.rows, length=r.length, query=r.query)  # fmt: skip
                    run.write(writer, group, attrs, run.finish(p, pieces))
                summary.ok += 1
                writer.record(i, dict(name=r.name, group=group, source=r.where, depth=r.depth, rows_used=r.rows,
                                      length=r.length, status="ok"))  # fmt: skip
                counter.advance()
    finally:
        for h5 in files.values():
            h5.close()
    summary.index = writer.index
