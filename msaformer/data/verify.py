"""Checking a shard directory: what every read checks cheaply, and the content hashes on request.

Two levels, one code path:

* **layout** (``content=False``, what :class:`~msaformer.data.shards.ShardReader` checks when it first opens
  a shard, and what ``preprocess`` checks on the whole directory before it reports success): the task's index
  part reads, every shard it names is a shard of that task in this directory, is complete and of a known
  format version, and its per-record arrays are consistent (offsets in bounds and in order, each record's
  rows fit before the next record, names in bounds, depth and length as the index says);
* **content** (``content=True``: ``msaformer verify DIR``, ``inspect --verify``, and ``preprocess --resume`` on
  the tasks it keeps): also every record's aligned rows are read back and their SHA-256 compared with the
  content hash stored when it was written (in the shard and in the index). The hash covers the aligned rows
  (``tokens``); deletion counts and row names are checked for bounds, and in ``gzip`` shards also by deflate's
  own checksum as they are read.

Problems are one line each, naming the file, and the record where there is one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msaformer.data.shard_format import (
    INDEX_DIR,
    REPAIR_HINT,
    committed_tasks,
    is_shard_name,
    read_manifest,
    task_of_shard,
)
from msaformer.errors import ShardError
from msaformer.progress import ProgressCallback


@dataclass
class VerifyReport:
    """What :func:`verify_directory` found: counts, and one line per problem (at most one per shard)."""

    directory: Path
    tasks: int = 0
    shards: int = 0
    records: int = 0
    verified: int = 0  # records whose content hash was recomputed and matched
    problems: list[str] = field(default_factory=list)
    damaged_tasks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def layout_problem(path: Path, arrays: dict, tokens_size: int, deletions_size: int, names_size: int,
                   n_records: int) -> str | None:
    """Returns what is inconsistent in one shard's per-record arrays (None when nothing): the checks a reader
    makes before it trusts any offset."""
    offset, names_offset, names_length = arrays["offset"], arrays["names_offset"], arrays["names_length"]
    n_seq, n_res = arrays["n_seq"], arrays["n_res"]
    if not (len(offset) == len(names_offset) == n_records + 1 and len(n_seq) == len(n_res) == len(names_length)
            == n_records):  # fmt: skip
        return f"{path}: damaged record table (its arrays do not all hold {n_records} records)"
    if tokens_size != deletions_size:
        return f"{path}: damaged shard (tokens hold {tokens_size} bytes, deletions {deletions_size})"
    if n_records == 0:
        return None
    cells = n_seq.astype(np.int64) * n_res.astype(np.int64)
    bad = (n_seq < 1) | (n_res < 0) | (offset[:-1] < 0) | (offset[:-1] + cells > offset[1:])
    bad |= (names_offset[:-1] < 0) | (names_length < 0) | (names_offset[:-1] + names_length > names_size)
    if offset[-1] > tokens_size:
        bad[-1] = True
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        return f"{path}: record {r}: damaged record table (its offsets or shape point outside the data)"
    return None


def _hash_bytes(column) -> np.ndarray:
    """The index's hex content hashes as a numpy ``S64`` array (zero-copy when every one is 64 characters)."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n and array.null_count == 0:
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=n + 1, offset=array.offset * 4)
        if offsets[-1] - offsets[0] == 64 * n and np.all(np.diff(offsets) == 64):
            data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
            return data.view("S64")
    return np.array([h if h is not None else "" for h in array.to_pylist()], dtype="S64")


def _check_shard_records(path: Path, rows: dict, content: bool, name_of) -> tuple[str | None, int]:
    """Checks one shard against the index rows that name it (numpy arrays ``record``, ``n_seq``, ``n_res``,
    ``hash``; ``name_of(k)`` the name of row ``k``, read only for a message); returns (problem, records whose
    content hash was recomputed and matched)."""
    import h5py

    from msaformer.data.msa import content_hash
    from msaformer.data.shards import check_shard

    try:
        n_records = check_shard(path)
    except ShardError as exc:
        return str(exc), 0
    verified, r = 0, -1
    records = rows["record"]
    try:
        with h5py.File(path, "r") as f:
            g = f["records"]
            arrays = {k: g[k][:] for k in ("offset", "names_offset", "names_length", "n_seq", "n_res")}
            stored = g["hash"][:]
            problem = layout_problem(path, arrays, f["tokens"].shape[0], f["deletions"].shape[0],
                                     f["row_names"].shape[0], n_records)
            if problem:
                return problem, 0
            if len(stored) != n_records:
                return f"{path}: damaged record table (hash holds {len(stored)} entries, not {n_records})", 0
            if len(records) and (records.min() < 0 or records.max() >= n_records):
                bad = int(records[(records < 0) | (records >= n_records)][0])
                return f"{path}: the index lists record {bad}, the shard holds {n_records}", 0
            shape = (arrays["n_seq"][records] != rows["n_seq"]) | (arrays["n_res"][records] != rows["n_res"])
            if shape.any():
                k = int(np.argmax(shape))
                r = int(records[k])
                return (f"{path}: record {r} ({name_of(k)}): the index says {int(rows['n_seq'][k])} x "
                        f"{int(rows['n_res'][k])}, the shard {int(arrays['n_seq'][r])} x {int(arrays['n_res'][r])}"), 0
            differ = stored.astype("S64")[records] != rows["hash"]
            if differ.any():
                k = int(np.argmax(differ))
                return f"{path}: record {int(records[k])} ({name_of(k)}): the index and the shard disagree on its " \
                    "content hash", 0  # fmt: skip
            if content:
                for k, r in enumerate(records.tolist()):
                    start = int(arrays["offset"][r])
                    depth, width = int(arrays["n_seq"][r]), int(arrays["n_res"][r])
                    tokens = f["tokens"][start : start + depth * width].reshape(depth, width)
                    f["deletions"][start : start + depth * width]  # read: deflate's checksum covers it
                    if content_hash(tokens).encode("ascii") != rows["hash"][k]:
                        return f"{path}: record {r} ({name_of(k)}): content hash mismatch (its data is damaged)", verified
                    verified += 1
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        where = f"record {r}: " if r >= 0 else ""
        detail = " ".join(str(exc).split())[:160]
        return f"{path}: {where}unreadable shard data ({detail})", verified
    return None, verified


def verify_task(directory: str | os.PathLike, task: str, *, content: bool = True) -> tuple[str | None, int, int, int]:
    """Checks one committed task's index part and shards; returns ``(first problem or None, shards, records,
    records verified)``. Reads the index part one row group at a time (a group per shard as written), holding
    numeric columns and 64-byte hashes only, never a Python object per record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    part = directory / INDEX_DIR / f"{task}.parquet"
    shards: set[str] = set()
    records = verified = 0

    def damaged(exc: Exception) -> str:
        if isinstance(exc, FileNotFoundError):
            return f"{part}: index part is missing"
        return f"{part}: damaged index part ({' '.join(str(exc).split())[:160]})"

    try:
        parquet = pq.ParquetFile(part)
        groups = parquet.num_row_groups
    except (OSError, pa.ArrowException) as exc:
        return damaged(exc), 0, 0, 0
    for group in range(groups):
        try:
            table = parquet.read_row_group(group, columns=["shard", "record", "n_seq", "n_res", "hash"])
        except (OSError, pa.ArrowException) as exc:
            return damaged(exc), len(shards), records, verified
        coded = table.column("shard").combine_chunks().dictionary_encode()
        which = coded.indices.to_numpy(zero_copy_only=False)
        numeric = {c: table.column(c).to_numpy().astype(np.int64) for c in ("record", "n_seq", "n_res")}
        hashes = _hash_bytes(table.column("hash"))
        for code, name in enumerate(coded.dictionary.to_pylist()):
            if not is_shard_name(name) or task_of_shard(name) != task:  # never a path: nothing outside is opened
                return f"{part}: the index names {name!r}, not a shard of this task", len(shards), records, verified
            sel = np.flatnonzero(which == code)
            rows = {c: v[sel] for c, v in numeric.items()}
            rows["hash"] = hashes[sel]

            def name_of(k: int, group=group, sel=sel) -> str:
                return str(parquet.read_row_group(group, columns=["name"]).column("name")[int(sel[k])])

            problem, ok = _check_shard_records(directory / name, rows, content, name_of)
            shards.add(name)
            records += len(sel)
            verified += ok
            if problem:
                return problem, len(shards), records, verified
        del table, coded, which, numeric, hashes
    return None, len(shards), records, verified


def count_records(directory: str | os.PathLike) -> int:
    """Returns the records the committed index parts hold (from their footers)."""
    import pyarrow.parquet as pq

    total = 0
    for task in committed_tasks(directory):
        try:
            total += pq.read_metadata(Path(directory) / INDEX_DIR / f"{task}.parquet").num_rows
        except Exception:  # noqa: BLE001 - verify_task reports it
            pass
    return total


def verify_directory(directory: str | os.PathLike, *, content: bool = True,
                     progress: ProgressCallback | None = None) -> VerifyReport:
    """Checks every committed task of a shard directory (see the module docstring); never raises for damaged
    data, which it reports, only for a directory that is not a shard directory at all."""
    from msaformer.progress import Counter

    directory = Path(directory)
    if not directory.is_dir() or read_manifest(directory) is None:
        raise ShardError(f"{directory}: not a shard directory written by msaformer preprocess")
    report = VerifyReport(directory)
    counter = Counter("verify", "records", progress, total=count_records(directory))
    for task in committed_tasks(directory):
        problem, shards, records, verified = verify_task(directory, task, content=content)
        report.tasks += 1
        report.shards += shards
        report.records += records
        report.verified += verified
        if problem:
            report.problems.append(problem)
            report.damaged_tasks.append(task)
        counter.advance(records, detail=f"{len(report.problems)} problem(s)")
    return report


def require_readable(directory: str | os.PathLike) -> None:
    """Raises a one-line ShardError for the first problem a reader would refuse (layout checks only)."""
    report = verify_directory(directory, content=False)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more; msaformer verify {directory} lists them)" if len(report.problems) > 1 else ""
        hint = "" if "msaformer preprocess" in report.problems[0] else f"; {REPAIR_HINT}"
        raise ShardError(f"{report.problems[0]}{more}{hint}")
