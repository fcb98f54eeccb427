"""Writing the shards of one preprocessing task: HDF5 files, then the task's index and inputs parts.

A :class:`TaskWriter` belongs to one task (:mod:`msaformer.data.preprocess`). It streams the task's records into
HDF5 shards under temporary names (a shard is closed after ``shard_size_records`` records or
``shard_size_bytes`` aligned cells), and :meth:`TaskWriter.commit` puts them in place: the shards are renamed
to ``msa-<task>-<k>.h5``, then the index part and the inputs part are written, each atomically, the inputs part
last (it marks the task committed). A task that is run again (retried after a worker died, or because one of
its inputs changed) writes the same names and replaces its own files, never anybody else's; it withdraws its
earlier commit (the inputs part) before replacing anything, so a crash half-way leaves it uncommitted. Nothing is visible
under a final name before :meth:`commit`; :meth:`abort` removes the temporaries.

The chunk encoding is :mod:`msaformer.data.chunks`; the layout of the directory is
:mod:`msaformer.data.shard_format`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msaformer.data.chunks import EncodedArray, EncodedRecord, deflate
from msaformer.data.shard_format import (
    CHUNK_BYTES,
    COMPRESSIONS,
    FORMAT,
    FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_DIR,
    INPUTS_COLUMNS,
    INPUTS_DIR,
    NAMES_CHUNK_BYTES,
    hash_key,
    index_schema,
    inputs_schema,
    shard_name,
    task_of_shard,
)
from msaformer.errors import ShardError
from msaformer.files import atomic_path, temporary_name


class _ChunkedArray:
    """A 1-D uint8 dataset written one whole chunk at a time (``write_direct_chunk``), records packed.

    Small records and the tails of large ones are gathered in the chunk being filled; a record that
    comes with its own whole chunks first closes that chunk (zero padding), so it starts on a boundary.
    """

    def __init__(self, h5file, name: str, chunk: int, compression: str) -> None:
        kwargs = {} if compression == "none" else {"compression": "gzip", "compression_opts": 1}
        self.dataset = h5file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(chunk,), **kwargs)
        self.chunk = chunk
        self.compression = compression
        self.end = 0  # logical end of the data written so far
        self._size = 0  # the dataset's shape, kept here (h5py's .shape costs a call into HDF5)
        self._base = 0  # start of the chunk being filled, a multiple of chunk
        self._open = bytearray()  # its raw bytes so far, fewer than chunk
        self._open_chunk: bytes | None = None  # its encoding made by a worker, while nothing was packed after it

    def append(self, array: EncodedArray) -> int:
        """Writes one record's bytes; returns its start offset."""
        if array.chunks:
            self._close_chunk()
            start = self._base
            for data in array.chunks:
                self._store(data)
            self._open, self._open_chunk = bytearray(array.tail), array.tail_chunk
        else:
            start = self.end
            self._pack(array.tail)
        self.end = start + array.n_bytes
        return start

    def _pack(self, data: bytes) -> None:
        view, pos, chunk = memoryview(data), 0, self.chunk
        self._open_chunk = None
        if self._open:
            pos = min(chunk - len(self._open), len(view))
            self._open += view[:pos]
            if len(self._open) < chunk:
                return
            self._store(self._encode(self._open))
            self._open = bytearray()
        while len(view) - pos >= chunk:
            self._store(self._encode(view[pos : pos + chunk]))
            pos += chunk
        self._open += view[pos:]

    def _encode(self, raw) -> bytes:
        return raw if self.compression == "none" else deflate(raw)

    def _store(self, data) -> None:
        need = self._base + self.chunk
        if need > self._size:
            self._size = max(need, 2 * self._size)
            self.dataset.resize((self._size,))
        self.dataset.id.write_direct_chunk((self._base,), data)
        self._base += self.chunk

    def _close_chunk(self) -> None:
        if self._open:
            data = self._open_chunk
            if data is None:
                data = self._encode(bytes(self._open) + bytes(self.chunk - len(self._open)))
            self._store(data)
            self._open, self._open_chunk = bytearray(), None

    def finish(self) -> None:
        self._close_chunk()
        self.dataset.resize((self.end,))  # drops the growth margin; the last chunk keeps its zero padding


@dataclass(frozen=True)
class InputRow:
    """One input of a task as the inputs part records it."""

    input: str  # the resume key: the path relative to its input root
    path: str  # where it was read this time
    input_sha256: str
    bytes: int
    mtime_ns: int
    n_records: int
    status: str  # ok | filtered | rejected
    reason: str = ""


def write_parquet(path: Path, columns: dict, schema) -> None:
    """Writes a Parquet file atomically (zstd-compressed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


class TaskWriter:
    """Writes the records of one task into ``out_dir`` (see the module docstring).

    Args:
        out_dir: the shard directory.
        task: the task's id (16 hex digits), which names its files.
        compression: ``gzip`` or ``none`` (records must be encoded with the same).
        shard_size_records, shard_size_bytes: when a shard is closed and the next one started.
    """

    def __init__(self, out_dir: str | os.PathLike, task: str, *, compression: str = "gzip",
                 shard_size_records: int = 4096, shard_size_bytes: int = 1 << 30) -> None:
        if compression not in COMPRESSIONS:
            raise ShardError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
        if shard_size_records < 1 or shard_size_bytes < 1:
            raise ShardError("shard size must be at least 1 record and 1 byte")
        self.out_dir = Path(out_dir)
        self.task = task
        self.compression = compression
        self.shard_size_records = int(shard_size_records)
        self.shard_size_bytes = int(shard_size_bytes)
        self._file = None
        self._done: list[Path] = []  # finished shards, under their temporary names
        self._index_writer = None  # the index part being written, one row group per finished shard
        self._index_tmp = temporary_name(self.out_dir / INDEX_DIR / f"{task}.parquet")
        self._records: list[tuple[EncodedRecord, str, str, list[str]]] = []
        self._cells = 0
        self.bytes_written = 0

    # -- writing ---------------------------------------------------------------------------------
    def add(self, record: EncodedRecord, *, input_key: str, input_sha256: str, aliases: tuple[str, ...] = ()) -> None:
        """Adds one alignment encoded by :func:`msaformer.data.chunks.encode_record` (``aliases``: other names of
        the same alignment, kept in the index)."""
        if record.compression != self.compression:
            raise ValueError(f"record encoded with {record.compression!r}, writer uses {self.compression!r}")
        if self._file is None:
            self._open_shard()
        self._offsets.append(self._tokens.append(record.tokens))
        self._deletions.append(record.deletions)  # same sizes, so the same offset as the tokens
        self._names_offset.append(self._names.append(record.names))
        self._names_length.append(record.names.n_bytes)
        self._records.append((record, input_key, input_sha256, list(aliases)))
        self._cells += record.n_seq * record.n_res
        if len(self._records) >= self.shard_size_records or self._cells >= self.shard_size_bytes:
            self._close_shard()

    def _open_shard(self) -> None:
        import h5py

        final = self.out_dir / shard_name(self.task, len(self._done))
        self._tmp_path = temporary_name(final)
        self._file = h5py.File(self._tmp_path, "w")
        self._tokens = _ChunkedArray(self._file, "tokens", CHUNK_BYTES, self.compression)
        self._deletions = _ChunkedArray(self._file, "deletions", CHUNK_BYTES, self.compression)
        self._names = _ChunkedArray(self._file, "row_names", NAMES_CHUNK_BYTES, self.compression)
        self._offsets, self._names_offset, self._names_length = [], [], []

    def _close_shard(self) -> None:
        import h5py

        f, records = self._file, [r for r, *_ in self._records]
        for array in (self._tokens, self._deletions, self._names):
            array.finish()
        group = f.create_group("records")
        text = h5py.string_dtype("utf-8")
        columns = {
            "name": [r.name for r in records],
            "source": [r.source for r in records],
            "metadata": [r.metadata for r in records],
            "input": [key for _, key, _, _ in self._records],
            "input_sha256": [sha for _, _, sha, _ in self._records],
        }
        for column, values in columns.items():
            clean = [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in values]
            group.create_dataset(column, data=np.array(clean, dtype=object), dtype=text)
        group.create_dataset("hash", data=np.array([r.hash for r in records], dtype="S64"))
        group.create_dataset("n_seq", data=np.array([r.n_seq for r in records], dtype=np.int32))
        group.create_dataset("n_res", data=np.array([r.n_res for r in records], dtype=np.int32))
        group.create_dataset("offset", data=np.array(self._offsets + [self._tokens.end], dtype=np.int64))
        group.create_dataset("names_offset", data=np.array(self._names_offset + [self._names.end], dtype=np.int64))
        group.create_dataset("names_length", data=np.array(self._names_length, dtype=np.int64))
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["alphabet"] = "ascii"
        f.attrs["compression"] = self.compression
        f.attrs["chunk_bytes"] = CHUNK_BYTES
        f.attrs["n_records"] = len(records)
        f.attrs["complete"] = True  # last: a reader refuses files without it
        f.close()
        self._file = None
        k = len(self._done)
        self._write_index_rows(shard_name(self.task, k))
        self._done.append(self._tmp_path)
        self._records, self._cells = [], 0

    def _write_index_rows(self, name: str) -> None:
        """Appends the index rows of the shard just finished to the task's index part (under its temporary
        name): the writer holds the rows of one shard at a time, however many records the task has."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [(name, i, r.name, r.source, key, sha, r.n_seq, r.n_res, r.hash, hash_key(r.hash), aliases)
                for i, (r, key, sha, aliases) in enumerate(self._records)]  # fmt: skip
        columns = {c: [row[j] for row in rows] for j, c in enumerate(INDEX_COLUMNS)}
        if self._index_writer is None:
            self._index_tmp.parent.mkdir(parents=True, exist_ok=True)
            self._index_writer = pq.ParquetWriter(self._index_tmp, index_schema(), compression="zstd")
        self._index_writer.write_table(pa.table(columns, schema=index_schema()))

    def _close_index(self) -> None:
        if self._index_writer is not None:
            self._index_writer.close()
            self._index_writer = None

    # -- committing ------------------------------------------------------------------------------
    def commit(self, inputs: list[InputRow]) -> list[str]:
        """Puts the task's shards, index part and inputs part in place; returns the shard names."""
        if self._file is not None:
            self._close_shard()
        # An earlier commit of this task is withdrawn first: a crash below leaves the task uncommitted (so the
        # next run redoes it), never committed with shards of two runs.
        (self.out_dir / INPUTS_DIR / f"{self.task}.parquet").unlink(missing_ok=True)
        names = []
        for k, tmp in enumerate(self._done):
            final = self.out_dir / shard_name(self.task, k)
            os.replace(tmp, final)
            self.bytes_written += final.stat().st_size
            names.append(final.name)
        index_part = self.out_dir / INDEX_DIR / f"{self.task}.parquet"
        if self._index_writer is None:  # no record at all: an empty part
            write_parquet(index_part, {c: [] for c in INDEX_COLUMNS}, index_schema())
        else:
            self._close_index()
            os.replace(self._index_tmp, index_part)
        for path in self.out_dir.glob(f"msa-{self.task}-*.h5"):  # shards of an earlier, longer run of this task
            if path.name not in names and task_of_shard(path.name) == self.task:
                path.unlink()
        table = {c: [getattr(row, c) for row in inputs] for c in INPUTS_COLUMNS}
        write_parquet(self.out_dir / INPUTS_DIR / f"{self.task}.parquet", table, inputs_schema())
        self._done = []
        return names

    def abort(self) -> None:
        """Removes everything this writer wrote; committed files of earlier runs stay."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._tmp_path.unlink(missing_ok=True)
        for tmp in self._done:
            tmp.unlink(missing_ok=True)
        try:
            self._close_index()
        finally:
            self._index_tmp.unlink(missing_ok=True)
        self._done, self._records = [], []
