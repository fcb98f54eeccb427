"""``msaformer preprocess``: alignment files in, a shard directory out, one task at a time.

The inputs (:func:`msaformer.data.inputs.expand_inputs`: in argument order, directories sorted; each with a key,
its path relative to the command-line argument it came from) are cut into tasks of about ``task_bytes`` of
input, in that order. A task reads, hashes,
parses and encodes its inputs and commits its own files (:class:`~msaformer.data.shard_writer.TaskWriter`):
shards named after the task, then its index part, then its inputs part. So

* finished tasks stay committed whatever happens later: after an error, Ctrl-C or ``kill -9``, ``--resume``
  redoes only the tasks that did not commit;
* a task run twice (Dask retries it after its worker died) writes the same files again: no record is lost or
  written twice;
* ``--resume`` keys on the inputs' keys and content: a task whose inputs are unchanged (same size and mtime,
  or the same SHA-256) is skipped without parsing, wherever the corpus now lives; a task with a changed input
  is redone; new inputs make new tasks;
* the client holds the plan (the input paths) and a few counters, never the records.

Task boundaries are content-defined (a task closes once it holds ``task_bytes`` and an input's key hashes to a
boundary, or at 4 x ``task_bytes``), so adding or changing a few inputs re-plans only the tasks around them.
A lock file keeps two runs from writing into one directory at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msaformer.data.databases import DatabaseSlice
from msaformer.data.msa import Msa
from msaformer.data.shard_format import (
    COMPRESSIONS,
    INDEX_DIR,
    INPUTS_DIR,
    LOCK_FILE,
    MANIFEST_FILE,
    ORDER_FILE,
    REJECTED_FILE,
    committed_tasks,
    is_shard_name,
    read_manifest,
    task_of_shard,
    write_manifest,
    write_task_order,
)
from msaformer.errors import AlignmentError, MsaformerError, ShardError
from msaformer.progress import Counter, ProgressCallback

#: Largest input bytes per task chosen by default (a corpus of under 64 x 64 MB gets smaller tasks).
TASK_BYTES = 64 << 20
#: Smallest input bytes per task chosen by default.
MIN_TASK_BYTES = 1 << 20
#: One key in this many closes a task (once it holds task_bytes): the content-defined boundary.
BOUNDARY_EVERY = 8


@dataclass(frozen=True)
class TaskOptions:
    """What a task needs besides its inputs (the run's options)."""

    out_dir: str
    max_seqs: int | None
    min_seqs: int
    dedup: bool
    compression: str
    on_error: str
    shard_size_records: int
    shard_size_bytes: int
    resume: bool
    merge_per_chain: bool = False
    parallel_deflate: bool = True  # False on Dask: the workers already use every core
    max_expansion: int | None = None  # gzip limits (None: msaformer.data.parsers' defaults)
    max_decompressed: int | None = None


@dataclass(frozen=True)
class InputRef:
    """One input file of a task: its key, where it is, its size and modification time when planned, and for the
    files of an OpenFold chain directory the record name (``chain/file``) and the chain's key."""

    key: str
    path: str
    size: int
    mtime_ns: int
    record: str = ""
    chain: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """One task: input files, or a slice of one database (``database``, its entries keyed ``label::key``)."""

    task: str  # 16 hex digits: names the task's files
    inputs: tuple[InputRef, ...]
    options: TaskOptions
    database: DatabaseSlice | None = None
    label: str = ""


@dataclass
class TaskResult:
    """What a finished task reports to the client (counts only: the records are in its files)."""

    task: str
    skipped: bool = False
    inputs: int = 0
    parsed: int = 0
    rejected: int = 0
    first_rejection: str = ""
    records: int = 0
    filtered: int = 0
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    shards: int = 0
    repaired: str = ""  # why a kept task was re-parsed (its shards failed verification)


@dataclass(frozen=True)
class PreprocessResult:
    """Summary of one ``preprocess`` run."""

    out_dir: Path
    inputs: int
    parsed: int
    skipped: int
    rejected: int
    records: int
    filtered: int
    rows: int
    bytes_in: int
    bytes_out: int
    shards: int
    tasks: int
    seconds: float
    report: Path | None
    startup_seconds: float = 0.0  # of ``seconds``: starting (or reaching) the Dask cluster
    repaired: tuple[str, ...] = ()  # with resume: why each re-parsed task's kept shards were refused

    @property
    def mb_per_s(self) -> float:
        """Input megabytes (10^6) per second of wall-clock time."""
        return self.bytes_in / 1e6 / max(self.seconds, 1e-9)


# ------------------------------------------------------------------------------------------------ the task


def _truncate(msa: Msa, max_rows: int) -> Msa:
    if msa.depth <= max_rows:
        return msa
    return Msa(names=msa.names[:max_rows], tokens=msa.tokens[:max_rows], deletions=msa.deletions[:max_rows],
               source=msa.source, metadata=msa.metadata)


def _parse_file(path: str, data: bytes, dedup: bool) -> list[Msa]:
    from msaformer.data.parsers import parse_file_bytes

    return parse_file_bytes(data, path, dedup=dedup, lazy=True)  # many small blocks: read group by group


@dataclass
class _Unit:
    """One input as a task reads it: a file, or a database entry."""

    key: str  # the resume key
    where: str  # the path (file) or ``database::key`` (entry), for messages and the inputs part
    size: int
    mtime_ns: int
    record: str  # the record name ("" = from the query header)
    chain: str  # the chain key ("" = none)
    chain_name: str  # the record name of a merged chain
    aliases: tuple[str, ...]
    read: object  # () -> bytes (raises OSError / AlignmentError)
    parse: object  # (bytes) -> list[Msa]


def _units(spec: TaskSpec, handles: dict) -> Iterator[_Unit]:
    """The inputs of a task, in order (a database slice's entries are read from the index by the worker)."""
    dedup = spec.options.dedup
    if spec.database is None:
        for ref in spec.inputs:
            def read(path=ref.path) -> bytes:
                with open(path, "rb") as fh:
                    return fh.read()
            yield _Unit(ref.key, ref.path, ref.size, ref.mtime_ns, ref.record, ref.chain,
                        ref.record.partition("/")[0], (), read, lambda data, path=ref.path: _parse_file(path, data, dedup))
        return
    db = spec.database.db
    mtime = db.mtime_ns
    for entry in spec.database.iter_entries():
        aliases = tuple(a.partition("/")[0] for a in entry.aliases) if spec.options.merge_per_chain else entry.aliases
        yield _Unit(f"{spec.label}::{entry.key}", db.entry_source(entry), entry.length, mtime, entry.key, entry.chain,
                    entry.chain, aliases, lambda e=entry: db.read(e, handles),
                    lambda data, e=entry: db.parse(e, data, dedup=dedup))  # fmt: skip


def _unchanged(spec: TaskSpec) -> dict | None:
    """Returns the committed inputs part of this task if its inputs are the same as then, else None."""
    import pyarrow.parquet as pq

    from msaformer.data.databases import close_handles

    part = Path(spec.options.out_dir) / INPUTS_DIR / f"{spec.task}.parquet"
    if not part.is_file():
        return None
    try:
        rows = pq.read_table(part).to_pylist()
    except Exception:  # noqa: BLE001 - a damaged part: redo the task
        return None
    if spec.options.on_error == "fail" and any(row["status"] == "rejected" for row in rows):
        return None  # redo it: this run stops at the bad input instead of carrying it silently
    previous = {row["input"]: row for row in rows}
    handles: dict = {}
    try:
        seen = 0
        for unit in _units(spec, handles):
            seen += 1
            row = previous.get(unit.key)
            if row is None or row["bytes"] != unit.size:
                return None
            if row["mtime_ns"] != unit.mtime_ns:
                try:
                    data = unit.read()
                except (OSError, MsaformerError):
                    return None
                if hashlib.sha256(data).hexdigest() != row["input_sha256"]:
                    return None
        return {"rows": rows} if seen == len(previous) else None
    finally:
        close_handles(handles)


def _merge(msas: list[Msa], name: str) -> Msa:
    """One chain's alignments as one: the first one's query and rows, then the others' rows, exact duplicate rows
    dropped (as OpenFold's training joins a chain's MSAs)."""
    from msaformer.data.parsers import dedup_rows

    first = msas[0]
    merged = Msa(names=[n for m in msas for n in m.names], tokens=np.concatenate([m.tokens for m in msas]),
                 deletions=np.concatenate([m.deletions for m in msas]), source=first.source,
                 metadata=first.metadata)  # fmt: skip
    return dedup_rows(merged)


def run_task(spec: TaskSpec) -> TaskResult:
    """Reads, parses and writes the inputs of one task into the shard directory; returns its counts.

    Runs in a worker (or in the client with one worker). With ``on_error="fail"`` a bad input raises
    :class:`~msaformer.errors.AlignmentError` naming it, and the task commits nothing.
    """
    from msaformer.data.parsers import decompression_limits

    with decompression_limits(spec.options.max_expansion, spec.options.max_decompressed):
        return _run_task(spec)


def _run_task(spec: TaskSpec) -> TaskResult:
    from msaformer.allocator import keep_freed_memory
    from msaformer.data.chunks import encode_record, set_parallel_deflate
    from msaformer.data.databases import close_handles
    from msaformer.data.shard_writer import InputRow, TaskWriter

    keep_freed_memory()  # a worker process parses file after file: keep its large buffers for reuse
    opts = spec.options
    set_parallel_deflate(opts.parallel_deflate)
    result = TaskResult(task=spec.task)
    if opts.resume:
        previous = _unchanged(spec)
        if previous is not None:
            from msaformer.data.verify import verify_task

            problem = verify_task(opts.out_dir, spec.task, content=True)[0]
            if problem:  # its inputs are unchanged but its shards are damaged: parse them again
                previous, result.repaired = None, problem
        if previous is not None:
            rows = previous["rows"]
            result.skipped, result.inputs = True, len(rows)
            result.records = sum(r["n_records"] for r in rows)
            result.rejected = sum(r["status"] == "rejected" for r in rows)
            result.bytes_in = sum(r["bytes"] for r in rows)
            return result
    writer = TaskWriter(opts.out_dir, spec.task, compression=opts.compression,
                        shard_size_records=opts.shard_size_records, shard_size_bytes=opts.shard_size_bytes)
    rows: list[InputRow] = []
    handles: dict = {}
    chain: list[tuple[_Unit, str, list[Msa]]] = []  # the chain being gathered (--merge-per-chain)

    def reject(unit: _Unit, sha: str, reason: str) -> None:
        message = reason if unit.where in reason else f"{unit.where}: {reason}"
        if opts.on_error == "fail":
            raise AlignmentError(f"{message} (pass --on-error skip to go on without this input)")
        rows.append(InputRow(unit.key, unit.where, sha, unit.size, unit.mtime_ns, 0, "rejected", message))
        result.rejected += 1
        result.first_rejection = result.first_rejection or message

    def store(msas, unit: _Unit, sha: str, name: str, aliases: tuple[str, ...]) -> int:
        # one alignment at a time: ``msas`` may be a DenseAlignments that parses its blocks group by group
        several, kept = len(msas) > 1, 0
        for msa in msas:
            if opts.max_seqs is not None:
                msa = _truncate(msa, opts.max_seqs)
            if msa.depth < opts.min_seqs:
                continue
            record = f"{name}#{kept}" if name and several else name
            writer.add(encode_record(msa, opts.compression, name=record or None), input_key=unit.key,
                       input_sha256=sha, aliases=aliases)
            result.rows += msa.depth
            kept += 1
        result.records += kept
        result.filtered += len(msas) - kept
        return kept

    def close_chain() -> None:
        if not chain:
            return
        first, sha, msas = chain[0]
        length = msas[0].length
        joined = [msas]
        for unit, unit_sha, more in chain[1:]:
            bad = next((m for m in more if m.length != length), None)
            if bad is not None:
                reject(unit, unit_sha, f"its query has {bad.length} columns, the chain's first alignment "
                       f"({first.where}) {length}; --merge-per-chain joins alignments of one query")
                continue
            joined.append(more)
        n = store([_merge([m for ms in joined for m in ms], first.chain_name)], first, sha, first.chain_name,
                  first.aliases)
        merged = {id(ms) for ms in joined}
        for unit, unit_sha, ms in chain:
            if id(ms) in merged:
                first_row = unit is first
                rows.append(InputRow(unit.key, unit.where, unit_sha, unit.size, unit.mtime_ns, n if first_row else 0,
                                     ("ok" if n else "filtered") if first_row else "merged"))  # fmt: skip
        chain.clear()

    try:
        for unit in _units(spec, handles):
            result.inputs += 1
            if chain and unit.chain != chain[0][0].chain:
                close_chain()
            try:
                data, reason = unit.read(), ""
            except OSError as exc:
                data, reason = b"", f"cannot read: {exc.strerror or exc}"
            except MsaformerError as exc:
                data, reason = b"", str(exc)
            sha = hashlib.sha256(data).hexdigest() if not reason else ""
            result.bytes_in += len(data)
            msas: list[Msa] = []
            if not reason:
                try:
                    msas = unit.parse(data)
                    if not msas:
                        raise AlignmentError("no alignment found")
                except MsaformerError as exc:
                    reason = str(exc)
                except Exception as exc:  # a parser bug must not take down a long run; report it with the input
                    reason = f"unexpected {type(exc).__name__} while parsing: {exc}"
            del data
            if reason:
                reject(unit, sha, reason)
                continue
            result.parsed += 1
            if opts.merge_per_chain and unit.chain:
                chain.append((unit, sha, list(msas)))
                continue
            n = store(msas, unit, sha, unit.record, unit.aliases)
            rows.append(InputRow(unit.key, unit.where, sha, unit.size, unit.mtime_ns, n, "ok" if n else "filtered"))
        close_chain()
        result.shards = len(writer.commit(rows))
        result.bytes_out = writer.bytes_written
    except BaseException:
        writer.abort()
        raise
    finally:
        close_handles(handles)
    return result


# --------------------------------------------------------------------------------------------- planning


def task_id(keys: Sequence[str]) -> str:
    """Returns the id of the task holding the inputs of ``keys``: 16 hex digits of their SHA-256."""
    return hashlib.sha256("\n".join(keys).encode("utf-8", "surrogateescape")).hexdigest()[:16]


class _TaskId:
    """:func:`task_id` of keys added one at a time (a database slice's keys are never held together)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._first = True

    def add(self, key: str) -> None:
        self._digest.update((key if self._first else "\n" + key).encode("utf-8", "surrogateescape"))
        self._first = False

    def hex(self) -> str:
        return self._digest.hexdigest()[:16]


def _is_boundary(key: str) -> bool:
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % BOUNDARY_EVERY == 0


def auto_task_bytes(total: int) -> int:
    """Returns the default task size for a corpus of ``total`` bytes: about 64 tasks (so that a small corpus
    keeps many workers busy), a power of two between 1 MiB and 64 MiB (so that a corpus that grows or shrinks
    a little keeps its task plan)."""
    target = max(total // 64, 1)
    return int(min(TASK_BYTES, max(MIN_TASK_BYTES, 1 << (target.bit_length() - 1))))


def _cut(size: int, key: str, task_bytes: int) -> bool:
    """Whether a task closes after an input of ``key``, holding ``size`` bytes: the content-defined rule."""
    return (size >= task_bytes and _is_boundary(key)) or size >= 4 * task_bytes


def plan_tasks(refs: Iterable[InputRef], task_bytes: int, options: TaskOptions) -> Iterator[TaskSpec]:
    """Yields the tasks of input files (in input order): consecutive inputs, cut by :func:`_cut` after an input,
    never inside an OpenFold chain (its files stay in one task, for ``--merge-per-chain``)."""
    group: list[InputRef] = []
    size, due = 0, False
    for ref in refs:
        if due and (not ref.chain or ref.chain != group[-1].chain):
            yield TaskSpec(task_id([r.key for r in group]), tuple(group), options)
            group, size, due = [], 0, False
        group.append(ref)
        size += ref.size
        due = due or _cut(size, ref.chain or ref.key, task_bytes)
    if group:
        yield TaskSpec(task_id([r.key for r in group]), tuple(group), options)


def plan_database(db, label: str, task_bytes: int, options: TaskOptions) -> Iterator[TaskSpec]:
    """Yields the tasks of a database: runs of index lines (ffindex, MMseqs2) or of whole chains (alignment_db)
    of about ``task_bytes`` of entries, cut by the same content-defined rule as files, streaming the index."""
    from msaformer.data.databases import DatabaseSlice, scan_index

    size, ident, start = 0, _TaskId(), 0
    if db.kind != "alignment_db":
        position = 0
        for key, length, position in scan_index(db):
            ident.add(f"{label}::{key}")
            size += length
            if _cut(size, key, task_bytes):
                yield TaskSpec(ident.hex(), (), options, DatabaseSlice(db, start, position), label)
                size, ident, start = 0, _TaskId(), position
        if size or not ident._first:
            yield TaskSpec(ident.hex(), (), options, DatabaseSlice(db, start, position), label)
        return
    group: list = []
    for entry in db.entries():
        if group and size and entry.chain != group[-1].chain and _cut(size, group[-1].chain, task_bytes):
            yield TaskSpec(ident.hex(), (), options, DatabaseSlice(db, entries=tuple(group)), label)
            group, size, ident = [], 0, _TaskId()
        group.append(entry)
        ident.add(f"{label}::{entry.key}")
        size += entry.length
    if group:
        yield TaskSpec(ident.hex(), (), options, DatabaseSlice(db, entries=tuple(group)), label)


def _file_ref(source) -> InputRef:
    try:
        stat = source.path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime = 0, 0  # reported by the task (cannot read)
    return InputRef(source.key, os.fspath(source.path), size, mtime, source.record, source.chain)


def key_hash(key: str) -> int:
    """A 64-bit hash of an input key: the client remembers the keys of a run as these (8 bytes each)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


@dataclass
class _Plan:
    """What the client keeps of a run's inputs while it plans: 8 bytes per input file, a name per database."""

    file_keys: array = field(default_factory=lambda: array("Q"))
    databases: set = field(default_factory=set)
    tasks: list = field(default_factory=list)


def _plan_all(sources: Iterable, task_bytes: int, options: TaskOptions, plan: _Plan) -> Iterator[TaskSpec]:
    """Yields the tasks of every source in order, streaming: runs of files, and the slices of each database."""
    from msaformer.data.databases import open_database

    sources = iter(sources)
    held: list = []  # the database that ended a run of files

    def run_of_files() -> Iterator[InputRef]:
        for source in sources:
            if source.kind != "file":
                held.append(source)
                return
            plan.file_keys.append(key_hash(source.key))
            yield _file_ref(source)

    while True:
        for spec in plan_tasks(run_of_files(), task_bytes, options):
            plan.tasks.append(spec.task)
            yield spec
        if not held:
            return
        source = held.pop()
        if source.kind != "database":
            raise AlignmentError(f"{source.path} is a shard directory; preprocess reads alignment files "
                                 "(msaformer export writes a shard directory back as A3M)")
        plan.databases.add(source.key)
        for spec in plan_database(open_database(source.path), source.key, task_bytes, options):
            plan.tasks.append(spec.task)
            yield spec


def survey(sources: Iterable) -> tuple[int, int]:
    """Returns (inputs, bytes) of the sources: files and database entries, for the progress total and task
    sizes (a walk over the inputs that keeps nothing)."""
    from msaformer.data.databases import count_entries, open_database

    count = size = 0
    for source in sources:
        if source.kind == "database":
            db = open_database(source.path)
            count += count_entries(db)
            size += db.data_bytes
        elif source.kind == "file":
            count += 1
            try:
                size += source.path.stat().st_size
            except OSError:
                pass
        else:
            raise AlignmentError(f"{source.path} is a shard directory; preprocess reads alignment files "
                                 "(msaformer export writes a shard directory back as A3M)")
    return count, size


# ------------------------------------------------------------------------------------ directory handling


class DirectoryLock:
    """``OUT/.lock`` while a run writes into OUT: a second run is refused, a lock left by a dead process on this
    host is taken over."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self.owner = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self) -> DirectoryLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    held = self.path.read_text(errors="replace").strip() or "another process"
                    host, _, pid = held.partition(" ")
                    raise ShardError(
                        f"{self.path.parent} is being written by another msaformer preprocess (pid {pid or '?'} on "
                        f"{host}); wait for it to finish, or delete {self.path} if that process is gone"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.owner + "\n")
            return self
        raise ShardError(f"cannot take the lock {self.path}")

    def _stale(self) -> bool:
        try:
            host, _, pid = self.path.read_text(errors="replace").strip().partition(" ")
            pid_number = int(pid)
        except (OSError, ValueError):
            return False
        if host != socket.gethostname():
            return False
        try:
            os.kill(pid_number, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def __exit__(self, *exc) -> None:
        try:
            if self.path.read_text(errors="replace").strip() == self.owner:
                self.path.unlink()
        except OSError:
            pass


def _remove_debris(out: Path) -> None:
    """Removes what interrupted runs left: temporaries, and shards of tasks that never committed."""
    committed = set(committed_tasks(out))
    for folder in (out, out / INDEX_DIR, out / INPUTS_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and ".tmp-" in path.name:
                path.unlink(missing_ok=True)
    for path in out.glob("msa-*.h5"):
        if is_shard_name(path.name) and task_of_shard(path.name) not in committed:
            path.unlink(missing_ok=True)
    for part in (out / INDEX_DIR).glob("*.parquet") if (out / INDEX_DIR).is_dir() else ():
        if part.stem not in committed:
            part.unlink(missing_ok=True)


def _remove_task(out: Path, task: str) -> None:
    (out / INPUTS_DIR / f"{task}.parquet").unlink(missing_ok=True)  # uncommit first
    (out / INDEX_DIR / f"{task}.parquet").unlink(missing_ok=True)
    for path in out.glob(f"msa-{task}-*.h5"):
        path.unlink(missing_ok=True)


def _drop_superseded(out: Path, plan: _Plan) -> None:
    """Removes committed tasks that this run's tasks replace: those not planned now that hold an input of this
    run (its file changed, or the task boundaries moved) or an entry of a database given again. Tasks of inputs
    not given this time stay."""
    import pyarrow.parquet as pq

    planned = set(plan.tasks)
    keys = np.sort(np.frombuffer(plan.file_keys, dtype=np.uint64)) if len(plan.file_keys) else np.zeros(0, np.uint64)

    def given(key: str) -> bool:
        label, sep, _ = key.partition("::")
        if sep:
            return label in plan.databases
        h = np.uint64(key_hash(key))
        i = int(np.searchsorted(keys, h))
        return i < len(keys) and keys[i] == h

    for task in committed_tasks(out):
        if task in planned:
            continue
        try:
            held = pq.read_table(out / INPUTS_DIR / f"{task}.parquet", columns=["input"]).column("input").to_pylist()
        except Exception:  # noqa: BLE001 - damaged: it cannot be trusted anyway
            held = None
        if held is None or any(given(key) for key in held):
            _remove_task(out, task)


#: What the first shard directory layout (before task-named shards) held: ``--overwrite`` clears it too.
_EARLIER_LAYOUT = ("index.csv", "inputs.csv")


def _clear(out: Path) -> None:
    """Deletes what msaformer wrote in ``out`` (``--overwrite``), also in the earlier layout."""
    for path in out.glob("msa-*.h5"):
        if is_shard_name(path.name) or re.fullmatch(r"msa-\d{5,}\.h5", path.name):
            path.unlink()
    for name in _EARLIER_LAYOUT:
        (out / name).unlink(missing_ok=True)
    for folder in (out / INDEX_DIR, out / INPUTS_DIR):
        if folder.is_dir():
            shutil.rmtree(folder)
    for name in (MANIFEST_FILE, REJECTED_FILE, ORDER_FILE):
        (out / name).unlink(missing_ok=True)


def _write_report(out: Path, report: Path) -> int:
    """Writes every rejected input recorded in ``out`` (with its reason) to ``report``; returns how many."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from msaformer.files import write_csv

    rows = []
    for task in committed_tasks(out):
        table = pq.read_table(out / INPUTS_DIR / f"{task}.parquet", columns=["path", "status", "reason"])
        table = table.filter(pc.equal(table.column("status"), "rejected"))
        rows.extend(zip(table.column("path").to_pylist(), table.column("reason").to_pylist()))
    if rows:
        write_csv(report, ("input", "reason"), rows, make_parents=True)
    else:
        report.unlink(missing_ok=True)  # a report of an earlier run would be stale
    return len(rows)


# ------------------------------------------------------------------------------------------------ the run


def preprocess(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    shard_size: int = 4096,
    shard_size_bytes: int = 1 << 30,
    task_bytes: int | None = None,
    max_seqs: int | None = None,
    min_seqs: int = 1,
    dedup: bool = False,
    on_error: str = "fail",
    report: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compression: str = "gzip",
    merge_per_chain: bool = False,
    max_expansion: int | None = None,
    max_decompressed: int | None = None,
    progress: ProgressCallback | None = None,
) -> PreprocessResult:
    """Parses ``inputs`` into shards under ``out_dir``; returns the run's summary.

    Args:
        workers: processes of the local Dask cluster (1: run in this process; 0: one per core, at most 8).
        scheduler: the address (``tcp://...``) or scheduler file of an existing Dask cluster to run on.
        task_bytes: input bytes per task; default :func:`auto_task_bytes` of the corpus size (the same whatever
            ``workers`` is, so that a run resumed with other workers re-plans nothing).
        max_seqs: keep the query and the first ``max_seqs - 1`` rows of each alignment.
        min_seqs: drop alignments with fewer rows (after ``dedup`` and ``max_seqs``).
        on_error: ``"fail"`` raises :class:`AlignmentError` naming the first bad input (tasks finished before it
            stay committed); ``"skip"`` goes on and writes the rejected inputs with their reasons to ``report``
            (default ``out_dir/rejected.csv``).
        resume: skip tasks already committed to ``out_dir`` whose inputs are unchanged.
        overwrite: replace what ``out_dir`` holds.
        merge_per_chain: join the alignments of each OpenFold chain (a chain directory's files, an alignment_db
            chain's members) into one record named after the chain: the first one's query, all rows, exact
            duplicate rows dropped.
        max_expansion, max_decompressed: how far a gzip input may decompress: ``max_expansion`` times its size
            (default 64, and always 64 MiB) but never past ``max_decompressed`` bytes (default 16 GiB); beyond
            that it is rejected as a decompression bomb.
        progress: called as tasks finish (see :mod:`msaformer.progress`).
    """
    from msaformer import __version__
    from msaformer.data.engine import default_workers, run_tasks
    from msaformer.data.inputs import iter_sources
    from msaformer.data.verify import require_readable

    if compression not in COMPRESSIONS:
        raise MsaformerError(f"--compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    if on_error not in ("fail", "skip"):
        raise MsaformerError(f"--on-error must be 'fail' or 'skip', not {on_error!r}")
    if max_seqs is not None and max_seqs < 1:
        raise MsaformerError(f"--max-seqs must be at least 1 (the query), got {max_seqs}")
    if min_seqs < 1:
        raise MsaformerError(f"--min-seqs must be at least 1, got {min_seqs}")
    if shard_size < 1:
        raise MsaformerError(f"--shard-size must be at least 1 record, got {shard_size}")
    if task_bytes is not None and task_bytes < 1:
        raise MsaformerError(f"--task-size must be at least 1 byte, got {task_bytes}")
    if resume and overwrite:
        raise MsaformerError("--resume and --overwrite exclude each other; pick one")
    from msaformer.data.parsers import decompression_limits

    with decompression_limits(max_expansion, max_decompressed):  # checks them (each task applies them)
        pass
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ShardError(f"--out {out} is a file; give a directory for the shards")
    workers = workers if workers > 0 else default_workers()
    n_inputs, total = survey(iter_sources(inputs, exclude=out, unique_keys=True))  # also: every input exists, before anything is made
    task_bytes = task_bytes or auto_task_bytes(total)
    options = TaskOptions(os.fspath(out), max_seqs, min_seqs, dedup, compression, on_error, shard_size,
                          shard_size_bytes, resume, merge_per_chain, parallel_deflate=workers <= 1 and not scheduler,
                          max_expansion=max_expansion, max_decompressed=max_decompressed)
    settings = {"compression": compression, "max_seqs": max_seqs, "min_seqs": min_seqs, "dedup": dedup,
                "merge_per_chain": merge_per_chain}

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with DirectoryLock(out):
            _prepare(out, settings, resume=resume, overwrite=overwrite, version=__version__)
            counter = Counter("preprocess", "inputs", progress, total=n_inputs)
            totals = TaskResult(task="")
            skipped = [0]
            repaired: list[str] = []
            plan = _Plan()
            earlier = committed_tasks(out)

            def collect(result: TaskResult) -> None:
                for name in ("inputs", "parsed", "rejected", "records", "filtered", "rows", "bytes_in", "bytes_out",
                             "shards"):
                    setattr(totals, name, getattr(totals, name) + getattr(result, name))
                skipped[0] += result.inputs if result.skipped else 0
                if result.repaired:
                    repaired.append(result.repaired)
                mb_s = totals.bytes_in / 1e6 / max(counter.seconds, 1e-9)
                counter.advance(result.inputs, detail=f"{totals.records:,} records  {mb_s:.1f} MB/s")

            specs = _plan_all(iter_sources(inputs, exclude=out, unique_keys=True), task_bytes, options, plan)
            ready = [0.0]
            try:
                run_tasks(run_task, specs, workers=workers, scheduler=scheduler, on_result=collect,
                          key=lambda spec: f"msaformer-preprocess-{spec.task}-{os.getpid()}",
                          on_ready=lambda: ready.__setitem__(0, time.perf_counter() - start))
                _drop_superseded(out, plan)
            finally:  # also after an error: the tasks that did commit keep their input order
                planned = set(plan.tasks)
                write_task_order(out, plan.tasks + [t for t in earlier if t not in planned])
            _remove_debris(out)
            require_readable(out)  # never report success on a directory a reader would refuse
            report_path = Path(report) if report is not None else out / REJECTED_FILE
            rejected = _write_report(out, report_path) if on_error == "skip" else 0
    finally:
        if created and not committed_tasks(out):
            shutil.rmtree(out, ignore_errors=True)  # a run that committed nothing leaves nothing behind
    return PreprocessResult(
        out_dir=out, inputs=totals.inputs, parsed=totals.parsed, skipped=skipped[0], rejected=rejected,
        records=totals.records, filtered=totals.filtered, rows=totals.rows, bytes_in=totals.bytes_in,
        bytes_out=totals.bytes_out, shards=totals.shards, tasks=len(plan.tasks), seconds=time.perf_counter() - start,
        report=report_path if rejected else None, startup_seconds=ready[0], repaired=tuple(repaired),
    )  # fmt: skip


def _prepare(out: Path, settings: dict, *, resume: bool, overwrite: bool, version: str,
             choices: str = "pass --resume to add to them, --overwrite to replace them") -> None:
    """Makes ``out`` ready for this run (under the lock): checks or writes the manifest, clears debris
    (``choices``: what the caller can do about a directory that already holds shards, in its own words)."""
    if overwrite:
        _clear(out)
    manifest = read_manifest(out) if (out / MANIFEST_FILE).exists() else None
    holds = bool(committed_tasks(out))
    if holds and not resume:
        raise ShardError(
            f"{out} already holds shards; {choices}, or choose an empty directory"
        )
    if manifest is not None and holds:
        differing = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
        if differing:
            text = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in differing.items())
            raise ShardError(f"{out} was written with other options ({text}); use them again, or replace its shards "
                             "(--overwrite)")
    elif manifest is None:
        ours = {LOCK_FILE, INDEX_DIR, INPUTS_DIR, REJECTED_FILE, ORDER_FILE}
        others = sorted(p.name for p in out.iterdir()
                        if p.name not in ours and not p.name.startswith(".") and not is_shard_name(p.name))
        if others:
            raise ShardError(f"{out} holds other files ({', '.join(others[:3])}); give an empty or new directory")
    (out / INDEX_DIR).mkdir(exist_ok=True)
    (out / INPUTS_DIR).mkdir(exist_ok=True)
    _remove_debris(out)
    write_manifest(out, {**settings, "written_by": f"msaformer {version}"})


def write_msas(
    out_dir: str | os.PathLike,
    msas: Iterable[Msa],
    *,
    compression: str = "gzip",
    shard_size_records: int = 4096,
    shard_size_bytes: int = 1 << 30,
    input_key: str = "python",
    overwrite: bool = False,
) -> list[str]:
    """Writes alignments held in memory as a new shard directory (one task); returns the shard file names.

    The Python-side twin of ``msaformer preprocess`` for alignments that do not come from files: the result
    reads with :class:`~msaformer.data.shards.ShardReader` and trains like any other shard directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ShardError(f"{out} is a file; give a directory for the shards")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"compression": compression, "max_seqs": None, "min_seqs": 1, "dedup": False, "merge_per_chain": False}
    try:
        return _write_msas(out, msas, settings, compression, shard_size_records, shard_size_bytes, input_key,
                           overwrite)
    finally:
        if created and not committed_tasks(out):
            shutil.rmtree(out, ignore_errors=True)


def _write_msas(out: Path, msas, settings, compression, shard_size_records, shard_size_bytes, input_key,
                overwrite) -> list[str]:
    from msaformer import __version__
    from msaformer.data.chunks import encode_record
    from msaformer.data.shard_writer import InputRow, TaskWriter

    with DirectoryLock(out):
        _prepare(out, settings, resume=False, overwrite=overwrite, version=__version__,
                 choices="pass overwrite=True to replace them")
        task = task_id([input_key])
        writer = TaskWriter(out, task, compression=compression, shard_size_records=shard_size_records,
                            shard_size_bytes=shard_size_bytes)
        try:
            count = 0
            for msa in msas:  # any iterable: a generator is written as it comes
                writer.add(encode_record(msa, compression), input_key=input_key, input_sha256="")
                count += 1
            names = writer.commit([InputRow(input_key, "", "", 0, 0, count, "ok")])
        except BaseException:
            writer.abort()
            raise
        write_task_order(out, [task])
    return names
