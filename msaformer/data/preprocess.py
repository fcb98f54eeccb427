"""``msaformer preprocess``: alignment files in, HDF5 shards out.

Inputs (files, directories searched recursively, glob patterns) are parsed in a process pool, in input
order, and written by the calling process, so the shards are the same whatever the number of workers.
With ``resume=True`` an input already committed to the output directory with the same path and SHA-256 of
its bytes is hashed but not parsed again.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from msaformer.data.msa import Msa
from msaformer.data.shard_writer import COMPRESSIONS, EncodedRecord, compressor_threads, encode_record
from msaformer.errors import AlignmentError, MsaformerError, ShardError

REJECTED_FILE = "rejected.csv"


def expand_inputs(inputs: Sequence[str | os.PathLike], *, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Returns the alignment files named by ``inputs``: files as given, directories recursively, globs.

    Hidden files and directories are skipped inside directories, and so is ``exclude`` (the output
    directory). Duplicates are dropped, keeping the first occurrence.
    """
    from msaformer.data.parsers import is_alignment_path

    excluded = Path(exclude).resolve() if exclude is not None else None

    def scan(directory: Path) -> Iterator[Path]:
        for root, dirs, files in os.walk(directory):
            root_path = Path(root)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() != excluded)
            for name in sorted(files):
                if not name.startswith(".") and is_alignment_path(name):
                    yield root_path / name

    found: dict[Path, Path] = {}
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            matches = list(scan(path))
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(text):
            matches = []
            for hit in sorted(glob.glob(text, recursive=True)):
                hit_path = Path(hit)
                matches.extend(scan(hit_path) if hit_path.is_dir() else [hit_path])
            if not matches:
                raise AlignmentError(f"input pattern {text!r} matches no files")
        else:
            raise AlignmentError(f"input not found: {text} (give alignment files, directories or glob patterns)")
        for match in matches:
            found.setdefault(match.resolve(), match)
    return list(found.values())


@dataclass(frozen=True)
class _Options:
    max_seqs: int | None
    min_seqs: int
    dedup: bool
    compression: str


@dataclass
class _Outcome:
    """What a worker sends back for one input."""

    path: str
    key: str  # absolute path, the resume key
    sha256: str
    n_bytes: int
    status: str  # ok | skipped | rejected
    records: list[EncodedRecord] = field(default_factory=list)
    filtered: int = 0
    reason: str = ""


def _parse_file(path: str, data: bytes, dedup: bool) -> list[Msa]:
    from msaformer.data import parsers

    if data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar":
        return parsers.read_alignments(path, dedup=dedup)  # gzip and tar: the parser owns the unpacking
    return parsers.parse_alignment(data, parsers.detect_format(path, data), source=path, dedup=dedup)


def _truncate(msa: Msa, max_rows: int) -> Msa:
    if msa.depth <= max_rows:
        return msa
    return Msa(
        names=msa.names[:max_rows],
        tokens=msa.tokens[:max_rows],
        deletions=msa.deletions[:max_rows],
        source=msa.source,
        metadata=msa.metadata,
    )


def _process(task: tuple[str, str | None, _Options]) -> _Outcome:
    """Reads, hashes and (unless already done) parses one input. Runs in a worker process."""
    path, known_sha, options = task
    key = os.path.abspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return _Outcome(path, key, "", 0, "rejected", reason=f"cannot read: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
    outcome = _Outcome(path, key, sha, len(data), "ok")
    if known_sha == sha:
        outcome.status = "skipped"
        return outcome
    try:
        msas = _parse_file(path, data, options.dedup)
        if not msas:
            raise AlignmentError("no alignment found")
    except MsaformerError as exc:
        outcome.status, outcome.reason = "rejected", str(exc)
        return outcome
    except Exception as exc:  # a parser bug must not take down a long run; report it with the file
        outcome.status, outcome.reason = "rejected", f"unexpected {type(exc).__name__} while parsing: {exc}"
        return outcome
    if options.max_seqs is not None:
        msas = [_truncate(m, options.max_seqs) for m in msas]
    kept = [m for m in msas if m.depth >= options.min_seqs]
    # compressing here, in the worker, keeps the writer process free for I/O and halves what is sent back
    outcome.records = [encode_record(m, options.compression) for m in kept]
    outcome.filtered = len(msas) - len(kept)
    return outcome


@dataclass
class PreprocessProgress:
    """Running totals handed to the progress callback after every input."""

    files_total: int
    bytes_total: int
    files_done: int = 0
    bytes_done: int = 0
    records: int = 0
    rows: int = 0
    skipped: int = 0
    rejected: int = 0
    filtered: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def mb_per_s(self) -> float:
        return self.bytes_done / 1e6 / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class PreprocessResult:
    """Summary of one ``preprocess`` run."""

    out_dir: Path
    inputs: int
    parsed: int
    skipped: int
    rejected: list[tuple[str, str]]
    records: int
    filtered: int
    rows: int
    bytes_in: int
    bytes_out: int
    shards: int
    seconds: float
    report: Path | None

    @property
    def mb_per_s(self) -> float:
        """Input megabytes (10^6) per second of wall-clock time."""
        return self.bytes_in / 1e6 / max(self.seconds, 1e-9)


def _default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))


@contextlib.contextmanager
def _outcome_stream(tasks: list[tuple], workers: int) -> Iterator[Iterator[_Outcome]]:
    """Yields an iterator of outcomes in task order, from a process pool when ``workers > 1``."""
    if workers <= 1 or len(tasks) <= 1:
        yield map(_process, tasks)
        return
    import multiprocessing as mp
    import threading

    # fork is instant, and safe while this process runs no thread but its idle zlib helpers (the pool is
    # made before any progress-bar thread starts); otherwise a fork server gives workers a clean interpreter
    methods = mp.get_all_start_methods()
    single = threading.active_count() - compressor_threads() == 1
    method = "fork" if "fork" in methods and single else "forkserver" if "forkserver" in methods else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["msaformer.data.preprocess", "msaformer.data.parsers"])
    chunksize = max(1, min(16, len(tasks) // (workers * 8)))
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield pool.imap(_process, tasks, chunksize=chunksize)


def preprocess(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    shard_size: int = 4096,
    shard_size_bytes: int = 1 << 30,
    max_seqs: int | None = None,
    min_seqs: int = 1,
    dedup: bool = False,
    on_error: str = "fail",
    report: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compression: str = "gzip",
    progress: Callable[[PreprocessProgress], None] | None = None,
    on_start: Callable[[PreprocessProgress], None] | None = None,
) -> PreprocessResult:
    """Parses ``inputs`` into shards under ``out_dir``; returns the run's summary.

    Args:
        max_seqs: keep the query and the first ``max_seqs - 1`` rows of each alignment.
        min_seqs: drop alignments with fewer rows (after ``dedup`` and ``max_seqs``).
        on_error: ``"fail"`` raises :class:`AlignmentError` naming the first bad input; ``"skip"`` goes on
            and writes the rejected inputs with their reasons to ``report`` (default ``out_dir/rejected.csv``).
        resume: skip inputs already committed to ``out_dir`` with the same path and content SHA-256.
        overwrite: replace the shards already in ``out_dir``.
        progress: called after every input with the running totals.
    """
    from msaformer.data.shard_writer import ShardWriter

    if compression not in COMPRESSIONS:
        raise MsaformerError(f"--compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    if on_error not in ("fail", "skip"):
        raise MsaformerError(f"--on-error must be 'fail' or 'skip', not {on_error!r}")
    if max_seqs is not None and max_seqs < 1:
        raise MsaformerError(f"--max-seqs must be at least 1 (the query), got {max_seqs}")
    if min_seqs < 1:
        raise MsaformerError(f"--min-seqs must be at least 1, got {min_seqs}")
    if resume and overwrite:
        raise MsaformerError("--resume and --overwrite exclude each other; pick one")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ShardError(f"--out {out_dir} is a file; give a directory for the shards")
    paths = expand_inputs(inputs, exclude=out_dir)
    if not paths:
        raise AlignmentError(f"no alignment files found in {', '.join(map(os.fspath, inputs)) or 'the inputs'}")
    options = _Options(max_seqs=max_seqs, min_seqs=min_seqs, dedup=dedup, compression=compression)
    mode = "append" if resume else "overwrite" if overwrite else "create"
    report_path = Path(report) if report is not None else out_dir / REJECTED_FILE
    state = PreprocessProgress(files_total=len(paths), bytes_total=sum(_size(p) for p in paths))
    rejected: list[tuple[str, str]] = []
    parsed = 0
    with ShardWriter(out_dir, shard_size_records=shard_size, shard_size_bytes=shard_size_bytes,
                     compression=compression, mode=mode) as writer:  # fmt: skip
        previous = writer.committed_inputs
        known = {k: row["input_sha256"] for k, row in previous.items() if row["status"] != "rejected"}
        tasks = [(os.fspath(p), known.get(os.path.abspath(p)), options) for p in paths]
        with _outcome_stream(tasks, workers if workers > 0 else _default_workers()) as outcomes:
            if on_start is not None:
                on_start(state)
            for outcome in outcomes:
                state.files_done += 1
                state.bytes_done += outcome.n_bytes
                if outcome.status != "skipped" and outcome.key in previous:
                    writer.forget_input(outcome.key)  # changed since the last run: drop its old records
                if outcome.status == "skipped":
                    state.skipped += 1
                elif outcome.status == "rejected":
                    if on_error == "fail":
                        reason = outcome.reason if outcome.path in outcome.reason else f"{outcome.path}: {outcome.reason}"
                        raise AlignmentError(f"{reason} (pass --on-error skip to go on without this input)")
                    rejected.append((outcome.path, outcome.reason))
                    state.rejected += 1
                    writer.commit_input(outcome.key, outcome.sha256, outcome.n_bytes, 0, "rejected", outcome.reason)
                else:
                    parsed += 1
                    for record in outcome.records:
                        writer.add_encoded(record, input_path=outcome.key, input_sha256=outcome.sha256)
                        state.rows += record.n_seq
                    state.records += len(outcome.records)
                    state.filtered += outcome.filtered
                    status = "ok" if outcome.records else "filtered"
                    writer.commit_input(outcome.key, outcome.sha256, outcome.n_bytes, len(outcome.records), status)
                if progress is not None:
                    progress(state)
    if on_error == "skip":
        _write_report(report_path, rejected)
    return PreprocessResult(
        out_dir=out_dir,
        inputs=len(paths),
        parsed=parsed,
        skipped=state.skipped,
        rejected=rejected,
        records=state.records,
        filtered=state.filtered,
        rows=state.rows,
        bytes_in=state.bytes_done,
        bytes_out=writer.bytes_written,
        shards=writer.shards_written,
        seconds=state.seconds,
        report=report_path if rejected else None,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_report(path: Path, rejected: Iterable[tuple[str, str]]) -> None:
    rejected = list(rejected)
    if not rejected:
        path.unlink(missing_ok=True)  # a report from an earlier run would be stale
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("input", "reason"))
        writer.writerows(rejected)
