"""Reading shard directories: a lazy, fork-safe random-access reader, summaries, export back to A3M.

Layout of one shard ``msa-<task>-<k>.h5`` (``FORMAT_VERSION`` 1), anndata-style flat arrays plus offsets, so
that everything compresses and a plain ``h5py`` user can read it:

* root attributes: ``format="msaformer-msa"``, ``format_version``, ``alphabet="ascii"``, ``n_records``,
  ``compression`` (``gzip`` = HDF5's standard deflate filter, or ``none``), ``chunk_bytes`` and, written
  last, ``complete=True``.
* ``tokens`` / ``deletions``: uint8, flat; record ``i`` is ``[offset[i] : offset[i] + n_seq[i] * n_res[i]]``,
  row-major ``[n_seq, n_res]`` with the query row first (so query + first K-1 rows is one contiguous
  slice). Records are packed back to back, except that with ``gzip`` a record of at least one chunk starts
  on a chunk boundary (less than a chunk of zero padding before it); see :mod:`msaformer.data.chunks`.
* ``row_names``: uint8, flat; record ``i``'s UTF-8 row headers, each followed by ``\\n``, are
  ``[names_offset[i] : names_offset[i] + names_length[i]]``.
* ``records/``: ``name``, ``source``, ``metadata``, ``input``, ``input_sha256`` (strings), ``hash``
  (``S64``, :meth:`Msa.content_hash`), ``n_seq``, ``n_res`` (int32), ``offset`` and ``names_offset``
  (int64, ``n_records + 1``; the last entry is the end of the data), ``names_length`` (int64).

The directory around the shards (manifest, Parquet index parts, one per task) is described in
:mod:`msaformer.data.shard_format`. :class:`ShardReader` holds only a few numeric columns per record (shard,
record, depth, length and a 64-bit key of the content hash: 24 bytes); names and sources are read on demand.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from msaformer.data.msa import Msa
from msaformer.data.shard_format import (
    DIRECTORY_VERSION,
    FORMAT,
    FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_DIR,
    MANIFEST_FILE,
    REPAIR_HINT as _REPAIR,
    committed_tasks,
    is_shard_name,
    read_manifest,
)
from msaformer.errors import ShardError

#: Shards a reader keeps open per process (least recently used closed first), well under ``ulimit -n``.
MAX_OPEN_SHARDS = 64


def _detail(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160]


def is_shard_dir(path: str | os.PathLike) -> bool:
    """Returns whether ``path`` is a directory written by ``msaformer preprocess`` (it has a manifest)."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


def check_shard(path: str | os.PathLike) -> int:
    """Returns the record count of a finished shard; raises ShardError for anything a reader must refuse."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file is missing; re-run msaformer preprocess --resume") from None
    except OSError as exc:
        raise ShardError(f"{path}: not a readable HDF5 file ({exc}); re-run msaformer preprocess --resume") from None
    if attrs.get("format") != FORMAT:
        raise ShardError(f"{path}: not an msaformer shard (format attribute is {attrs.get('format')!r})")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise ShardError(
            f"{path}: shard format_version {version} is not supported (this msaformer reads version "
            f"{FORMAT_VERSION}); re-run msaformer preprocess"
        )
    if not attrs.get("complete", False):
        raise ShardError(f"{path}: shard is incomplete (its writer was interrupted); re-run msaformer preprocess --resume")
    return int(attrs["n_records"])


def index_parts(directory: str | os.PathLike) -> list[Path]:
    """Returns the index parts of the committed tasks of a shard directory, in task order."""
    directory = Path(directory)
    return [directory / INDEX_DIR / f"{task}.parquet" for task in committed_tasks(directory)]


def read_index(directory: str | os.PathLike, columns: list[str] | None = None):
    """Returns the index of a shard directory (its committed tasks) as a pyarrow Table of ``columns`` (default:
    all of :data:`~msaformer.data.shard_format.INDEX_COLUMNS`). A damaged part is a ShardError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msaformer.data.shard_format import index_schema

    schema = index_schema()
    columns = list(columns or INDEX_COLUMNS)
    tables = []
    for part in index_parts(directory):
        try:
            table = pq.read_table(part, columns=columns)
        except FileNotFoundError:
            raise ShardError(f"{part}: index part is missing; re-run msaformer preprocess --resume") from None
        except (OSError, pa.ArrowException) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise ShardError(f"{part}: damaged index part ({detail}); re-run msaformer preprocess --resume") from None
        tables.append(table)
    if not tables:
        return pa.table({c: pa.array([], type=schema.field(c).type) for c in columns})
    return pa.concat_tables(tables)


def _read_numeric_index(directory: Path, shards: list[str]) -> dict[str, np.ndarray]:
    """Returns the numeric index columns of a shard directory (``shard`` as positions in ``shards``, which it
    fills), one index part at a time into arrays sized from the parts' footers: peak memory is the result plus
    one part, whatever the corpus."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dtypes = {"shard": np.int32, "record": np.int32, "n_seq": np.int32, "n_res": np.int32, "hash_key": np.uint64}

    def damaged(part: Path, exc: Exception) -> ShardError:
        if isinstance(exc, FileNotFoundError):
            return ShardError(f"{part}: index part is missing; re-run msaformer preprocess --resume")
        detail = " ".join(str(exc).split())[:160]
        return ShardError(f"{part}: damaged index part ({detail}); re-run msaformer preprocess --resume")

    parts = index_parts(directory)
    sizes = []
    for part in parts:
        try:
            sizes.append(pq.read_metadata(part).num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise damaged(part, exc) from None
    out = {c: np.empty(sum(sizes), dtype=t) for c, t in dtypes.items()}
    position: dict[str, int] = {}
    at = 0
    for part, n in zip(parts, sizes):
        try:
            table = pq.read_table(part, columns=list(dtypes), read_dictionary=["shard"])
        except (OSError, pa.ArrowException) as exc:
            raise damaged(part, exc) from None
        if table.num_rows != n:
            raise ShardError(f"{part}: damaged index part (its footer counts {n} rows, it holds {table.num_rows}); "
                             "re-run msaformer preprocess --resume")
        shard = table.column("shard").combine_chunks()
        names = [str(name) for name in shard.dictionary.to_pylist()]
        remap = np.array([position.setdefault(name, len(position)) for name in names], dtype=np.int32)
        if n:
            out["shard"][at : at + n] = remap[shard.indices.to_numpy(zero_copy_only=False)]
        for column in ("record", "n_seq", "n_res", "hash_key"):
            out[column][at : at + n] = table.column(column).to_numpy()
        at += n
        del table, shard
    shards.extend(position)
    return out


class _OpenShard(NamedTuple):
    """One shard opened by a reader in this process: its file, datasets and small per-record arrays."""

    file: object
    tokens: object
    deletions: object
    row_names: object
    offset: np.ndarray
    names_offset: np.ndarray
    names_length: np.ndarray
    n_seq: np.ndarray
    n_res: np.ndarray
    source: np.ndarray
    metadata: np.ndarray


class ShardReader:
    """Random access to the records of a shard directory, as :class:`Msa` objects.

    Holds only the directory and a few numeric columns per record: ``n_seq``, ``n_res`` and ``hash_key`` (the
    first 64 bits of the content hash, for splitting) as numpy arrays. ``reader.index`` loads the whole index
    (a pandas DataFrame: ``shard``, ``record``, ``name``, ``source``, ``input``, ``input_sha256``, ``n_seq``,
    ``n_res``, ``hash``) when asked. HDF5 files are opened lazily and re-opened in a new process, so a reader
    can be pickled into DataLoader workers.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ShardError(f"{self.directory}: not a directory; run msaformer preprocess INPUTS --out DIR first")
        if read_manifest(self.directory) is None:
            raise ShardError(f"{self.directory}: not a shard directory written by msaformer preprocess (no {MANIFEST_FILE})")
        self._shards: list[str] = []
        columns = _read_numeric_index(self.directory, self._shards)
        for name in self._shards:
            if not is_shard_name(name):  # never a path: nothing outside the directory is opened
                raise ShardError(f"{self.directory}: the index names {name!r}, not a shard of this directory")
        self._shard_ids, self._records = columns["shard"], columns["record"]
        self.n_seq, self.n_res, self.hash_key = columns["n_seq"], columns["n_res"], columns["hash_key"]
        self._index = None
        self._checked: set[int] = set()
        self._pid = None
        self._open: dict[int, _OpenShard] = {}

    @property
    def shards(self) -> list[str]:
        """The shard file names the index refers to."""
        return list(self._shards)

    @property
    def index(self):
        """The whole index as a pandas DataFrame (loaded on first use; holds every name and source)."""
        if self._index is None:
            frame = read_index(self.directory).to_pandas()
            for column in ("record", "n_seq", "n_res"):
                frame[column] = frame[column].astype(np.int64)
            self._index = frame
        return self._index

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Msa:
        return self.read(i)

    def __iter__(self) -> Iterator[Msa]:
        for i in range(len(self)):
            yield self.read(i)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pid"], state["_open"], state["_index"] = None, {}, None
        return state

    def _shard(self, sid: int) -> _OpenShard:
        if self._pid != os.getpid():
            # a forked child must not use (or close) its parent's handles
            self._open, self._pid = {}, os.getpid()
        entry = self._open.pop(sid, None)
        if entry is None:
            import h5py

            path = self.directory / self._shards[sid]
            if sid not in self._checked:
                n_records = check_shard(path)
                largest = int(self._records[self._shard_ids == sid].max(initial=-1))
                if largest >= n_records:
                    raise ShardError(f"{path}: the index lists record {largest}, the shard holds {n_records}")
            if len(self._open) >= MAX_OPEN_SHARDS:  # bound open files: close the least recently used
                self._open.pop(next(iter(self._open))).file.close()
            try:
                f = h5py.File(path, "r")
                g = f["records"]
                entry = _OpenShard(
                    file=f,
                    tokens=f["tokens"],
                    deletions=f["deletions"],
                    row_names=f["row_names"],
                    offset=g["offset"][:],
                    names_offset=g["names_offset"][:],
                    names_length=g["names_length"][:],
                    n_seq=g["n_seq"][:],
                    n_res=g["n_res"][:],
                    source=g["source"].asstr()[:],
                    metadata=g["metadata"].asstr()[:],
                )
            except (OSError, KeyError, ValueError, RuntimeError) as exc:
                raise ShardError(f"{path}: unreadable shard ({_detail(exc)}); {_REPAIR}") from None
            if sid not in self._checked:
                self._check_layout(sid, path, entry)
                self._checked.add(sid)
        self._open[sid] = entry  # most recently used last
        return entry

    def _check_layout(self, sid: int, path: Path, entry: _OpenShard) -> None:
        """Refuses a shard whose record table points outside its data, or disagrees with the index."""
        from msaformer.data.verify import layout_problem

        arrays = {"offset": entry.offset, "names_offset": entry.names_offset, "names_length": entry.names_length,
                  "n_seq": entry.n_seq, "n_res": entry.n_res}  # fmt: skip
        problem = layout_problem(path, arrays, entry.tokens.shape[0], entry.deletions.shape[0],
                                 entry.row_names.shape[0], len(entry.n_seq))
        mine = np.flatnonzero(self._shard_ids == sid)
        if problem is None and len(mine):
            r = self._records[mine]
            wrong = (entry.n_seq[r] != self.n_seq[mine]) | (entry.n_res[r] != self.n_res[mine])
            if wrong.any():
                problem = f"{path}: record {int(r[np.argmax(wrong)])}: its depth or length differs from the index"
        if problem:
            entry.file.close()
            raise ShardError(f"{problem}; {_REPAIR}")

    def verify(self, i: int) -> None:
        """Reads record ``i`` whole and checks its content hash; raises a one-line ShardError when it differs."""
        from msaformer.data.msa import content_hash

        msa = self.read(i, names=False)
        shard = self._shard(int(self._shard_ids[i]))
        r = int(self._records[i])
        try:
            stored = shard.file["records/hash"][r].decode("ascii", "replace")
        except (OSError, KeyError, ValueError) as exc:
            raise ShardError(f"{self.directory / self._shards[int(self._shard_ids[i])]}: unreadable record table "
                             f"({_detail(exc)}); {_REPAIR}") from None
        if content_hash(msa.tokens) != stored:
            raise ShardError(f"{self.directory / self._shards[int(self._shard_ids[i])]}: record {r}: content hash "
                             f"mismatch (its data is damaged); {_REPAIR}")

    def read(self, i: int, max_rows: int | None = None, *, names: bool = True) -> Msa:
        """Returns record ``i`` with only its query and first ``max_rows - 1`` other rows (one slice)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for {n} records")
        i = int(i) % n
        shard = self._shard(int(self._shard_ids[i]))
        r = int(self._records[i])
        depth, width = int(shard.n_seq[r]), int(shard.n_res[r])
        if max_rows is not None:
            if max_rows < 1:
                raise ValueError(f"max_rows must be >= 1, got {max_rows}")
            depth = min(depth, int(max_rows))
        start = int(shard.offset[r])
        stop = start + depth * width
        try:
            tokens = shard.tokens[start:stop].reshape(depth, width)
            deletions = shard.deletions[start:stop].reshape(depth, width)
            if names:
                first = int(shard.names_offset[r])
                row_names = self._read_names(shard.row_names, first, first + int(shard.names_length[r]), depth)
            else:
                row_names = [""] * depth
        except (OSError, ValueError, RuntimeError) as exc:
            path = self.directory / self._shards[int(self._shard_ids[i])]
            raise ShardError(f"{path}: record {r}: unreadable shard data ({_detail(exc)}); {_REPAIR}") from None
        meta = tuple(shard.metadata[r].split("\n")) if shard.metadata[r] else ()
        return Msa(names=row_names, tokens=tokens, deletions=deletions, source=str(shard.source[r]), metadata=meta)

    def name(self, i: int) -> str:
        """Returns the name of record ``i`` (read from its shard; negative ``i`` counts from the end)."""
        i = range(len(self))[i]
        shard = self._shard(int(self._shard_ids[i]))
        return str(shard.file["records/name"].asstr()[int(self._records[i])])

    def location(self, i: int) -> tuple[str, int]:
        """Returns ``(shard file name, record number in it)`` of record ``i``."""
        return self._shards[int(self._shard_ids[i])], int(self._records[i])

    @staticmethod
    def _read_names(dataset, start: int, stop: int, depth: int) -> list[str]:
        # names are newline-terminated: read a guess, grow until `depth` names are in, never past `stop`
        want = min(stop, start + 64 * depth)
        while True:
            raw = dataset[start:want].tobytes()
            if raw.count(b"\n") >= depth or want >= stop:
                break
            want = min(stop, start + 2 * (want - start))
        parts = raw.decode("utf-8", "surrogateescape").split("\n")
        return parts[:depth]

    def close(self) -> None:
        """Closes the HDF5 files opened by this process."""
        if self._pid == os.getpid():
            for entry in self._open.values():
                entry.file.close()
        self._open = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"ShardReader({str(self.directory)!r}, records={len(self)}, shards={len(self._shards)})"


def summarize(directory: str | os.PathLike) -> dict:
    """Returns counts and distributions of a shard directory, from its index and file sizes only."""
    reader = ShardReader(directory)
    index = read_index(directory, ["n_seq", "n_res", "input"]).to_pandas()
    files = [reader.directory / name for name in reader.shards]
    quantiles = (0.0, 0.05, 0.5, 0.95, 1.0)

    def spread(values) -> dict:
        if len(values) == 0:
            return {k: 0 for k in ("min", "p5", "median", "p95", "max", "mean")}
        q = np.quantile(np.asarray(values, dtype=np.float64), quantiles)
        return {"min": int(q[0]), "p5": float(q[1]), "median": float(q[2]), "p95": float(q[3]), "max": int(q[4]),
                "mean": float(np.mean(values))}  # fmt: skip

    return {
        "directory": str(reader.directory),
        "format_version": DIRECTORY_VERSION,
        "shard_format_version": FORMAT_VERSION,
        "records": len(index),
        "rows": int(index["n_seq"].sum()),
        "cells": int((index["n_seq"] * index["n_res"]).sum()),
        "inputs": int(index["input"].nunique()),
        "shards": len(files),
        "bytes": int(sum(p.stat().st_size for p in files)),
        "length": spread(index["n_res"].to_numpy()),
        "depth": spread(index["n_seq"].to_numpy()),
    }


def export_a3m(directory: str | os.PathLike, out, record: str | None = None) -> int:
    """Writes records as A3M (aligned rows only, stored headers) to ``out``; returns the number written.

    ``out`` is a path or a binary file object. ``record`` selects the records whose name or source equals
    it. Several records are separated by a NUL byte, as MMseqs2 / ColabFold do, so that
    :func:`~msaformer.data.parsers.parse_alignment` reads them back as separate alignments.
    """
    from msaformer.files import atomic_write

    reader = ShardReader(directory)
    if record is None:
        selected = list(range(len(reader)))
    else:
        hits = (reader.index["name"] == record) | (reader.index["source"] == record)
        selected = np.flatnonzero(hits.to_numpy()).tolist()
        if not selected:
            raise ShardError(
                f"no record named {record!r} in {reader.directory}; `msaformer inspect {reader.directory} --records` "
                "lists names and sources"
            )
    with (atomic_write(out, "wb") if not hasattr(out, "write") else contextlib.nullcontext(out)) as fh:
        for k, i in enumerate(selected):
            msa = reader.read(i)
            if k:
                fh.write(b"\x00")
            width = msa.length
            rows = np.ascontiguousarray(msa.tokens).tobytes()
            fh.write(
                b"".join(
                    b">" + name.encode("utf-8", "surrogateescape") + b"\n" + rows[j * width : (j + 1) * width] + b"\n"
                    for j, name in enumerate(msa.names)
                )
            )
    reader.close()
    return len(selected)
