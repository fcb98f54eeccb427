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
import shutil
import socket
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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

#: Default input bytes per task.
TASK_BYTES = 64 << 20
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


@dataclass(frozen=True)
class InputRef:
    """One input of a task: its key, where it is, its size and modification time when planned."""

    key: str
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class TaskSpec:
    task: str  # 16 hex digits: names the task's files
    inputs: tuple[InputRef, ...]
    options: TaskOptions


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
    from msaformer.data import parsers

    if data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar":
        return parsers.read_alignments(path, dedup=dedup)  # gzip and tar: the parser owns the unpacking
    return parsers.parse_alignment(data, parsers.detect_format(path, data), source=path, dedup=dedup)


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _unchanged(spec: TaskSpec) -> dict | None:
    """Returns the committed inputs part of this task if its inputs are the same as then, else None."""
    import pyarrow.parquet as pq

    part = Path(spec.options.out_dir) / INPUTS_DIR / f"{spec.task}.parquet"
    if not part.is_file():
        return None
    try:
        rows = pq.read_table(part).to_pylist()
    except Exception:  # noqa: BLE001 - a damaged part: redo the task
        return None
    previous = {row["input"]: row for row in rows}
    if set(previous) != {ref.key for ref in spec.inputs}:
        return None
    for ref in spec.inputs:
        row = previous[ref.key]
        if row["bytes"] != ref.size:
            return None
        if row["mtime_ns"] != ref.mtime_ns and _file_sha256(ref.path) != row["input_sha256"]:
            return None
    return {"rows": rows}


def run_task(spec: TaskSpec) -> TaskResult:
    """Reads, parses and writes the inputs of one task into the shard directory; returns its counts.

    Runs in a worker (or in the client with one worker). With ``on_error="fail"`` a bad input raises
    :class:`~msaformer.errors.AlignmentError` naming it, and the task commits nothing.
    """
    from msaformer.data.chunks import encode_record
    from msaformer.data.shard_writer import InputRow, TaskWriter

    opts = spec.options
    result = TaskResult(task=spec.task, inputs=len(spec.inputs))
    if opts.resume:
        previous = _unchanged(spec)
        if previous is not None:
            result.skipped = True
            rows = previous["rows"]
            result.records = sum(r["n_records"] for r in rows)
            result.rejected = sum(r["status"] == "rejected" for r in rows)
            result.bytes_in = sum(r["bytes"] for r in rows)
            return result
    writer = TaskWriter(opts.out_dir, spec.task, compression=opts.compression,
                        shard_size_records=opts.shard_size_records, shard_size_bytes=opts.shard_size_bytes)
    rows: list[InputRow] = []
    try:
        for ref in spec.inputs:
            try:
                with open(ref.path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                data, reason = b"", f"cannot read: {exc.strerror or exc}"
            else:
                reason = ""
            sha = hashlib.sha256(data).hexdigest() if not reason else ""
            result.bytes_in += len(data)
            msas: list[Msa] = []
            if not reason:
                try:
                    msas = _parse_file(ref.path, data, opts.dedup)
                    if not msas:
                        raise AlignmentError("no alignment found")
                except MsaformerError as exc:
                    reason = str(exc)
                except Exception as exc:  # a parser bug must not take down a long run; report it with the file
                    reason = f"unexpected {type(exc).__name__} while parsing: {exc}"
            del data
            if reason:
                message = reason if ref.path in reason else f"{ref.path}: {reason}"
                if opts.on_error == "fail":
                    raise AlignmentError(f"{message} (pass --on-error skip to go on without this input)")
                rows.append(InputRow(ref.key, ref.path, sha, ref.size, ref.mtime_ns, 0, "rejected", message))
                result.rejected += 1
                result.first_rejection = result.first_rejection or message
                continue
            if opts.max_seqs is not None:
                msas = [_truncate(m, opts.max_seqs) for m in msas]
            kept = [m for m in msas if m.depth >= opts.min_seqs]
            for msa in kept:
                writer.add(encode_record(msa, opts.compression), input_key=ref.key, input_sha256=sha)
                result.rows += msa.depth
            result.parsed += 1
            result.records += len(kept)
            result.filtered += len(msas) - len(kept)
            status = "ok" if kept else "filtered"
            rows.append(InputRow(ref.key, ref.path, sha, ref.size, ref.mtime_ns, len(kept), status))
        result.shards = len(writer.commit(rows))
        result.bytes_out = writer.bytes_written
    except BaseException:
        writer.abort()
        raise
    return result


# --------------------------------------------------------------------------------------------- planning


def task_id(keys: Sequence[str]) -> str:
    """Returns the id of the task holding the inputs of ``keys``: 16 hex digits of their SHA-256."""
    return hashlib.sha256("\n".join(keys).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _is_boundary(key: str) -> bool:
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % BOUNDARY_EVERY == 0


def plan_tasks(refs: Sequence[InputRef], task_bytes: int, options: TaskOptions) -> Iterator[TaskSpec]:
    """Yields the tasks of ``refs`` (in input order): consecutive inputs, cut after an input whose key hashes to
    a boundary once the task holds ``task_bytes``, or at ``4 x task_bytes`` (see the module docstring)."""
    group: list[InputRef] = []
    size = 0
    for ref in refs:
        group.append(ref)
        size += ref.size
        if (size >= task_bytes and _is_boundary(ref.key)) or size >= 4 * task_bytes:
            yield TaskSpec(task_id([r.key for r in group]), tuple(group), options)
            group, size = [], 0
    if group:
        yield TaskSpec(task_id([r.key for r in group]), tuple(group), options)


def _refs(paths) -> list[InputRef]:
    """Returns the inputs of a run; two inputs with the same key (their resume key) are an error."""
    refs = []
    seen: dict[str, str] = {}
    for source in paths:
        other = seen.setdefault(source.key, os.fspath(source.path))
        if other != os.fspath(source.path):
            raise AlignmentError(
                f"inputs {other} and {source.path} would both be recorded as {source.key!r}; give their directories "
                "instead"
            )
        try:
            stat = source.path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = 0, 0  # reported by the task (cannot read)
        refs.append(InputRef(source.key, os.fspath(source.path), size, mtime))
    return refs


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


def _drop_superseded(out: Path, planned: set[str], keys: set[str]) -> None:
    """Removes committed tasks that this run's tasks replace: those not planned now that hold an input of
    this run (its file changed, or the task boundaries moved). Tasks of inputs not given this time stay."""
    import pyarrow.parquet as pq

    for task in committed_tasks(out):
        if task in planned:
            continue
        try:
            held = pq.read_table(out / INPUTS_DIR / f"{task}.parquet", columns=["input"]).column("input").to_pylist()
        except Exception:  # noqa: BLE001 - damaged: it cannot be trusted anyway
            held = None
        if held is None or keys.intersection(held):
            _remove_task(out, task)


def _clear(out: Path) -> None:
    """Deletes what msaformer wrote in ``out`` (``--overwrite``)."""
    for path in out.glob("msa-*.h5"):
        if is_shard_name(path.name):
            path.unlink()
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
    task_bytes: int = TASK_BYTES,
    max_seqs: int | None = None,
    min_seqs: int = 1,
    dedup: bool = False,
    on_error: str = "fail",
    report: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compression: str = "gzip",
    progress: ProgressCallback | None = None,
) -> PreprocessResult:
    """Parses ``inputs`` into shards under ``out_dir``; returns the run's summary.

    Args:
        workers: processes of the local Dask cluster (1: run in this process; 0: one per core, at most 8).
        scheduler: the address (``tcp://...``) or scheduler file of an existing Dask cluster to run on.
        task_bytes: input bytes per task (smaller for a small corpus, so that every worker gets work).
        max_seqs: keep the query and the first ``max_seqs - 1`` rows of each alignment.
        min_seqs: drop alignments with fewer rows (after ``dedup`` and ``max_seqs``).
        on_error: ``"fail"`` raises :class:`AlignmentError` naming the first bad input (tasks finished before it
            stay committed); ``"skip"`` goes on and writes the rejected inputs with their reasons to ``report``
            (default ``out_dir/rejected.csv``).
        resume: skip tasks already committed to ``out_dir`` whose inputs are unchanged.
        overwrite: replace what ``out_dir`` holds.
        progress: called as tasks finish (see :mod:`msaformer.progress`).
    """
    from msaformer import __version__
    from msaformer.data.engine import default_workers, run_tasks
    from msaformer.data.inputs import expand_inputs

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
    if task_bytes < 1:
        raise MsaformerError(f"--task-size must be at least 1 byte, got {task_bytes}")
    if resume and overwrite:
        raise MsaformerError("--resume and --overwrite exclude each other; pick one")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ShardError(f"--out {out} is a file; give a directory for the shards")
    workers = workers if workers > 0 else default_workers()
    sources = expand_inputs(inputs, exclude=out)
    shard_dirs = [s.path for s in sources if s.kind != "file"]
    if shard_dirs:
        raise AlignmentError(f"{shard_dirs[0]} is a shard directory; preprocess reads alignment files "
                             "(msaformer export writes a shard directory back as A3M)")
    refs = _refs(sources)
    total = sum(r.size for r in refs)
    # a small corpus gets smaller tasks, so that every worker has some
    task_bytes = max(1, min(task_bytes, total // (4 * workers) if workers > 1 else task_bytes))
    options = TaskOptions(os.fspath(out), max_seqs, min_seqs, dedup, compression, on_error, shard_size,
                          shard_size_bytes, resume)
    settings = {"compression": compression, "max_seqs": max_seqs, "min_seqs": min_seqs, "dedup": dedup}

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with DirectoryLock(out):
            _prepare(out, settings, resume=resume, overwrite=overwrite, version=__version__)
            counter = Counter("preprocess", "files", progress, total=len(refs))
            totals = TaskResult(task="")
            skipped = [0]
            planned: list[str] = []
            earlier = committed_tasks(out)

            def specs() -> Iterator[TaskSpec]:
                for spec in plan_tasks(refs, task_bytes, options):
                    planned.append(spec.task)
                    yield spec

            def collect(result: TaskResult) -> None:
                for name in ("inputs", "parsed", "rejected", "records", "filtered", "rows", "bytes_in", "bytes_out",
                             "shards"):
                    setattr(totals, name, getattr(totals, name) + getattr(result, name))
                skipped[0] += result.inputs if result.skipped else 0
                mb_s = totals.bytes_in / 1e6 / max(counter.seconds, 1e-9)
                counter.advance(result.inputs, detail=f"{totals.records:,} records  {mb_s:.1f} MB/s")

            try:
                run_tasks(run_task, specs(), workers=workers, scheduler=scheduler, on_result=collect,
                          key=lambda spec: f"msaformer-preprocess-{spec.task}-{os.getpid()}")
                _drop_superseded(out, set(planned), {r.key for r in refs})
            finally:  # also after an error: the tasks that did commit keep their input order
                write_task_order(out, planned + [t for t in earlier if t not in set(planned)])
            _remove_debris(out)
            report_path = Path(report) if report is not None else out / REJECTED_FILE
            rejected = _write_report(out, report_path) if on_error == "skip" else 0
    finally:
        if created and not committed_tasks(out):
            shutil.rmtree(out, ignore_errors=True)  # a run that committed nothing leaves nothing behind
    return PreprocessResult(
        out_dir=out, inputs=len(refs), parsed=totals.parsed, skipped=skipped[0], rejected=rejected,
        records=totals.records, filtered=totals.filtered, rows=totals.rows, bytes_in=totals.bytes_in,
        bytes_out=totals.bytes_out, shards=totals.shards, tasks=len(planned), seconds=time.perf_counter() - start,
        report=report_path if rejected else None,
    )  # fmt: skip


def _prepare(out: Path, settings: dict, *, resume: bool, overwrite: bool, version: str) -> None:
    """Makes ``out`` ready for this run (under the lock): checks or writes the manifest, clears debris."""
    if overwrite:
        _clear(out)
    manifest = read_manifest(out) if (out / MANIFEST_FILE).exists() else None
    holds = bool(committed_tasks(out))
    if holds and not resume:
        raise ShardError(
            f"{out} already holds shards; pass --resume to add to them, --overwrite to replace them, or choose an "
            "empty directory"
        )
    if manifest is not None and holds:
        differing = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
        if differing:
            text = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in differing.items())
            raise ShardError(f"{out} was written with other options ({text}); use them again, or --overwrite")
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
    msas: Sequence[Msa],
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
    from msaformer import __version__
    from msaformer.data.chunks import encode_record
    from msaformer.data.shard_writer import InputRow, TaskWriter

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ShardError(f"{out} is a file; give a directory for the shards")
    out.mkdir(parents=True, exist_ok=True)
    settings = {"compression": compression, "max_seqs": None, "min_seqs": 1, "dedup": False}
    with DirectoryLock(out):
        _prepare(out, settings, resume=False, overwrite=overwrite, version=__version__)
        task = task_id([input_key])
        writer = TaskWriter(out, task, compression=compression, shard_size_records=shard_size_records,
                            shard_size_bytes=shard_size_bytes)
        try:
            for msa in msas:
                writer.add(encode_record(msa, compression), input_key=input_key, input_sha256="")
            names = writer.commit([InputRow(input_key, "", "", 0, 0, len(msas), "ok")])
        except BaseException:
            writer.abort()
            raise
        write_task_order(out, [task])
    return names
