"""HDF5 shards of alignments: the layout, and a lazy, fork-safe random-access reader.

The writer (:class:`ShardWriter`, the chunk encoding) lives in :mod:`msaformer.data.shard_writer` and is
re-exported here, so ``from msaformer.data.shards import ShardWriter`` keeps working.

Layout of one shard ``msa-{i:05d}.h5`` (``FORMAT_VERSION`` 1), anndata-style flat arrays plus offsets, so
that everything compresses and a plain ``h5py`` user can read it:

* root attributes: ``format="msaformer-msa"``, ``format_version``, ``alphabet="ascii"``, ``n_records``,
  ``compression`` (``gzip`` = HDF5's standard deflate filter, or ``none``), ``chunk_bytes`` and, written
  last, ``complete=True``.
* ``tokens`` / ``deletions``: uint8, flat; record ``i`` is ``[offset[i] : offset[i] + n_seq[i] * n_res[i]]``,
  row-major ``[n_seq, n_res]`` with the query row first (so query + first K-1 rows is one contiguous
  slice). Records are packed back to back, except that with ``gzip`` a record of at least one chunk starts
  on a chunk boundary (less than a chunk of zero padding before it), so that parser workers compress its
  chunks in parallel; see :mod:`msaformer.data.shard_writer`.
* ``row_names``: uint8, flat; record ``i``'s UTF-8 row headers, each followed by ``\\n``, are
  ``[names_offset[i] : names_offset[i] + names_length[i]]``.
* ``records/``: ``name``, ``source``, ``metadata``, ``input``, ``input_sha256`` (strings), ``hash``
  (``S64``, :meth:`Msa.content_hash`), ``n_seq``, ``n_res`` (int32), ``offset`` and ``names_offset``
  (int64, ``n_records + 1``; the last entry is the end of the data), ``names_length`` (int64).

A shard is written under ``.msa-{i:05d}.h5.tmp`` and renamed when complete; ``index.csv`` (one row per
record over all shards) and ``inputs.csv`` (inputs fully written, for ``--resume``) are replaced atomically
after every shard. The reader trusts ``index.csv`` only, so a killed run never exposes half a shard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from msaformer.data.msa import Msa
from msaformer.data.shard_writer import (  # noqa: F401  (re-exported: the public API of shards)
    CHUNK_BYTES,
    COMPRESSIONS,
    FORMAT,
    FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_FILE,
    INPUTS_COLUMNS,
    INPUTS_FILE,
    NAMES_CHUNK_BYTES,
    EncodedArray,
    EncodedRecord,
    ShardWriter,
    compressor_threads,
    content_hash,
    deflate_codec,
    encode_chunks,
    encode_record,
    record_name,
    shard_name,
)
from msaformer.errors import ShardError

#: Shards a reader keeps open per process (least recently used closed first), well under ``ulimit -n``.
MAX_OPEN_SHARDS = 64

def check_shard(path: str | os.PathLike) -> int:
    """Returns the record count of a finished shard; raises ShardError for anything a reader must refuse."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file is missing; re-run msaformer preprocess") from None
    except OSError as exc:
        raise ShardError(f"{path}: not a readable HDF5 file ({exc}); re-run msaformer preprocess") from None
    if attrs.get("format") != FORMAT:
        raise ShardError(f"{path}: not an msaformer shard (format attribute is {attrs.get('format')!r})")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise ShardError(
            f"{path}: shard format_version {version} is not supported (this msaformer reads version "
            f"{FORMAT_VERSION}); re-run msaformer preprocess"
        )
    if not attrs.get("complete", False):
        raise ShardError(f"{path}: shard is incomplete (its writer was interrupted); re-run msaformer preprocess")
    return int(attrs["n_records"])


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

    Holds only the directory and its index (``reader.index``, a pandas DataFrame with one row per record:
    ``shard``, ``record``, ``name``, ``source``, ``input``, ``input_sha256``, ``n_seq``, ``n_res``, ``hash``).
    HDF5 files are opened lazily and re-opened in a new process, so a reader can be pickled into
    DataLoader workers.
    """

    def __init__(self, directory: str | os.PathLike, *, validate: bool = True) -> None:
        import pandas as pd

        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ShardError(f"{self.directory}: not a directory; run msaformer preprocess INPUTS --out DIR first")
        index_path = self.directory / INDEX_FILE
        if not index_path.is_file():
            raise ShardError(f"{self.directory}: no {INDEX_FILE}; not a shard directory written by msaformer preprocess")
        text_columns = {c: str for c in INDEX_COLUMNS if c not in ("record", "n_seq", "n_res")}
        try:
            index = pd.read_csv(index_path, dtype=text_columns, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise ShardError(f"{index_path}: unreadable index ({exc}); re-run msaformer preprocess") from None
        if tuple(index.columns) != INDEX_COLUMNS:
            raise ShardError(f"{index_path}: unexpected columns {list(index.columns)}; re-run msaformer preprocess")
        for column in ("record", "n_seq", "n_res"):
            index[column] = index[column].astype(np.int64)
        self.index = index
        self._shards = sorted(set(index["shard"]))
        if validate:
            last = index.groupby("shard")["record"].max()
            for name in self._shards:
                if last[name] >= check_shard(self.directory / name):
                    raise ShardError(f"{self.directory / name}: index.csv lists records the shard does not hold")
        self._shard_ids = index["shard"].map({s: i for i, s in enumerate(self._shards)}).to_numpy(np.int64)
        self._records = index["record"].to_numpy(np.int64)
        self._pid = None
        self._open: dict[int, _OpenShard] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Msa:
        return self.read(i)

    def __iter__(self) -> Iterator[Msa]:
        for i in range(len(self)):
            yield self.read(i)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pid"], state["_open"] = None, {}
        return state

    def _shard(self, sid: int) -> "_OpenShard":
        if self._pid != os.getpid():
            # a forked child must not use (or close) its parent's handles
            self._open, self._pid = {}, os.getpid()
        entry = self._open.pop(sid, None)
        if entry is None:
            import h5py

            if len(self._open) >= MAX_OPEN_SHARDS:  # bound open files: close the least recently used
                self._open.pop(next(iter(self._open))).file.close()
            f = h5py.File(self.directory / self._shards[sid], "r")
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
        self._open[sid] = entry  # most recently used last
        return entry

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
        tokens = shard.tokens[start:stop].reshape(depth, width)
        deletions = shard.deletions[start:stop].reshape(depth, width)
        if names:
            first = int(shard.names_offset[r])
            row_names = self._read_names(shard.row_names, first, first + int(shard.names_length[r]), depth)
        else:
            row_names = [""] * depth
        meta = tuple(shard.metadata[r].split("\n")) if shard.metadata[r] else ()
        return Msa(names=row_names, tokens=tokens, deletions=deletions, source=str(shard.source[r]), metadata=meta)

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
    index = reader.index
    files = [reader.directory / name for name in reader._shards]
    quantiles = (0.0, 0.05, 0.5, 0.95, 1.0)

    def spread(values) -> dict:
        if len(values) == 0:
            return {k: 0 for k in ("min", "p5", "median", "p95", "max", "mean")}
        q = np.quantile(np.asarray(values, dtype=np.float64), quantiles)
        return {"min": int(q[0]), "p5": float(q[1]), "median": float(q[2]), "p95": float(q[3]), "max": int(q[4]),
                "mean": float(np.mean(values))}  # fmt: skip

    return {
        "directory": str(reader.directory),
        "format_version": FORMAT_VERSION,
        "records": int(len(index)),
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
    own = not hasattr(out, "write")
    fh = open(out, "wb") if own else out
    try:
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
    finally:
        if own:
            fh.close()
        reader.close()
    return len(selected)
