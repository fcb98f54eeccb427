"""HDF5 shards of alignments: an atomic, append-only writer and a lazy, fork-safe random-access reader.

Layout of one shard ``msa-{i:05d}.h5`` (``FORMAT_VERSION`` 1), anndata-style flat arrays plus offsets, so
that everything compresses and a plain ``h5py`` user can read it:

* root attributes: ``format="msaformer-msa"``, ``format_version``, ``alphabet="ascii"``, ``n_records``,
  ``compression`` (``gzip`` = HDF5's standard deflate filter, or ``none``), ``chunk_bytes`` and, written
  last, ``complete=True``.
* ``tokens`` / ``deletions``: uint8, flat; record ``i`` is ``[offset[i] : offset[i] + n_seq[i] * n_res[i]]``,
  row-major ``[n_seq, n_res]`` with the query row first (so query + first K-1 rows is one contiguous
  slice). Records start on chunk boundaries (zero padding in between), so parser workers compress whole
  chunks in parallel and the writer stores them with ``write_direct_chunk``.
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

import csv
import hashlib
import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from msaformer.data.msa import Msa
from msaformer.errors import ShardError

FORMAT = "msaformer-msa"
FORMAT_VERSION = 1
INDEX_FILE = "index.csv"
INPUTS_FILE = "inputs.csv"
INDEX_COLUMNS = ("shard", "record", "name", "source", "input", "input_sha256", "n_seq", "n_res", "hash")
INPUTS_COLUMNS = ("input", "input_sha256", "bytes", "n_records", "status", "reason")
#: Bytes per HDF5 chunk of ``tokens`` / ``deletions`` (and of ``row_names``). Records start on chunk
#: boundaries so that parser workers can compress their own chunks; the zero padding costs a few bytes
#: on disk. Small enough that reading the first rows of a record decompresses little more than it needs.
CHUNK_BYTES = 1 << 16
NAMES_CHUNK_BYTES = 1 << 14
COMPRESSIONS = ("gzip", "none")
#: Shards a reader keeps open per process (least recently used closed first), well under ``ulimit -n``.
MAX_OPEN_SHARDS = 64

_SHARD_RE = re.compile(r"^msa-(\d{5,})\.h5$")
_TMP_RE = re.compile(r"^\.msa-(\d{5,})\.h5\.tmp$")


def shard_name(number: int) -> str:
    """Returns the file name of shard ``number``."""
    return f"msa-{number:05d}.h5"


def record_name(msa: Msa) -> str:
    """Returns a record's name: the first word of the query header, else the file name in ``source``."""
    header = msa.names[0].split(None, 1) if msa.names else []
    if header:
        return header[0]
    return os.path.basename(msa.source) or "query"


def _csv_line(row: tuple) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()


def _write_csv_atomic(path: Path, columns: tuple[str, ...], lines) -> None:
    """Replaces ``path`` with a header and pre-formatted lines: temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        fh.write(",".join(columns) + "\n")
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != columns:
            raise ShardError(f"{path}: unexpected header {header}; expected {','.join(columns)}")
        return [tuple(row) for row in reader]


_COMPRESSORS: dict = {}


def _compressor():
    """Returns this process's thread pool for zlib (which releases the GIL); threads do not survive a fork."""
    from concurrent.futures import ThreadPoolExecutor

    pool = _COMPRESSORS.get(os.getpid())
    if pool is None:
        _COMPRESSORS.clear()
        pool = _COMPRESSORS[os.getpid()] = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    return pool


def compressor_threads() -> int:
    """Returns how many of this process's threads are idle zlib helpers (they do not get in the way of a fork)."""
    pool = _COMPRESSORS.get(os.getpid())
    return len(getattr(pool, "_threads", ())) if pool is not None else 0


def _deflate(chunk: bytes) -> bytes:
    # Z_RLE: run-length matches only (gap runs, zero deletion runs). On HHblits / JackHMMER alignments it is
    # ~1.7x faster than level-1 deflate and compresses as well or better (see BENCHMARKS.md); the stream is
    # ordinary deflate, so any HDF5 reader decodes it.
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    return packer.compress(chunk) + packer.flush()


def _zero_chunk(chunk: int) -> bytes:
    cached = _ZERO_CHUNKS.get(chunk)
    if cached is None:
        cached = _ZERO_CHUNKS[chunk] = _deflate(bytes(chunk))
    return cached


_ZERO_CHUNKS: dict[int, bytes] = {}


def encode_chunks(data: np.ndarray | bytes, chunk: int, compression: str) -> list[bytes]:
    """Returns ``data`` cut into ``chunk``-byte HDF5 chunks (the last one zero-padded), each deflated
    (HDF5's standard gzip filter) or stored raw, ready for ``write_direct_chunk``."""
    flat = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data.reshape(-1)
    n = -(-flat.size // chunk)
    padded = np.zeros(n * chunk, dtype=np.uint8)
    padded[: flat.size] = flat
    blocks = padded.reshape(n, chunk)
    if compression == "none":
        return [block.tobytes() for block in blocks]
    # all-zero chunks (deletions of alignments without insertions, padding) share one precomputed encoding
    busy = np.flatnonzero(blocks.any(axis=1)).tolist()
    view = memoryview(padded)
    pieces = [view[i * chunk : (i + 1) * chunk] for i in busy]
    packed = list(_compressor().map(_deflate, pieces)) if len(pieces) >= 8 else [_deflate(p) for p in pieces]
    out = [_zero_chunk(chunk)] * n
    for i, data in zip(busy, packed):
        out[i] = data
    return out


@dataclass(frozen=True)
class EncodedRecord:
    """One alignment ready to be written: its index fields and its compressed chunks.

    Made by :func:`encode_record` (in a parser worker, so compression runs in parallel); written by
    :meth:`ShardWriter.add_encoded` with direct chunk writes, no further compression in the writer.
    """

    name: str
    source: str
    metadata: str
    n_seq: int
    n_res: int
    hash: str
    compression: str
    tokens: list[bytes]
    deletions: list[bytes]
    names: list[bytes]
    names_length: int


def content_hash(tokens: np.ndarray) -> str:
    """Returns :meth:`Msa.content_hash` of a token matrix (rows joined by ``\\n``), without Python strings."""
    n, width = tokens.shape
    lines = np.empty((n, width + 1), dtype=np.uint8)
    lines[:, :width] = tokens
    lines[:, width] = ord("\n")
    return hashlib.sha256(memoryview(lines.reshape(-1))[: max(n * (width + 1) - 1, 0)]).hexdigest()


def encode_record(msa: Msa, compression: str = "gzip") -> EncodedRecord:
    """Returns ``msa`` compressed into shard chunks, with its name and content hash."""
    if compression not in COMPRESSIONS:
        raise ShardError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    if msa.depth == 0:
        raise ShardError(f"{msa.source or 'alignment'}: has no rows; nothing to store")
    names = "".join(f"{n}\n" for n in msa.names).encode("utf-8", "surrogateescape")
    tokens = np.ascontiguousarray(msa.tokens)
    return EncodedRecord(
        name=record_name(msa),
        source=msa.source,
        metadata="\n".join(msa.metadata),
        n_seq=msa.depth,
        n_res=msa.length,
        hash=content_hash(tokens),
        compression=compression,
        tokens=encode_chunks(tokens, CHUNK_BYTES, compression),
        deletions=encode_chunks(np.ascontiguousarray(msa.deletions), CHUNK_BYTES, compression),
        names=encode_chunks(names, NAMES_CHUNK_BYTES, compression),
        names_length=len(names),
    )


class _ChunkedArray:
    """A 1-D uint8 dataset filled with pre-encoded chunks; every record starts on a chunk boundary."""

    def __init__(self, h5file, name: str, chunk: int, compression: str) -> None:
        kwargs = {} if compression == "none" else {"compression": "gzip", "compression_opts": 1}
        self.dataset = h5file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(chunk,), **kwargs)
        self.chunk = chunk
        self.end = 0  # logical end of the data written so far

    def append(self, chunks: list[bytes], n_bytes: int) -> int:
        """Writes one record's chunks at the next chunk boundary; returns its start offset."""
        start = -(-self.end // self.chunk) * self.chunk
        need = start + len(chunks) * self.chunk
        if need > self.dataset.shape[0]:
            self.dataset.resize((max(need, 2 * self.dataset.shape[0]),))
        for k, data in enumerate(chunks):
            self.dataset.id.write_direct_chunk((start + k * self.chunk,), data)
        self.end = start + n_bytes
        return start

    def finish(self) -> None:
        self.dataset.resize((self.end,))  # drops the growth margin; the last chunk keeps its zero padding


class ShardWriter:
    """Writes alignments into ``msa-00000.h5``, ``msa-00001.h5``, ... under ``out_dir``.

    Use as a context manager; :meth:`add` one :class:`Msa` at a time. A shard is closed after
    ``shard_size_records`` records or ``shard_size_bytes`` aligned cells, whichever comes first.

    ``mode``: ``"create"`` (the directory must hold no shards), ``"append"`` (continue an existing
    directory; records of inputs that were never committed are dropped from the index) or ``"overwrite"``
    (delete existing shards and indexes first).

    Leaving the ``with`` block normally, or by a :class:`~msaformer.errors.MsaformerError`, finishes the
    open shard; any other exception (a crash, Ctrl-C) deletes it, keeping the shards finished before.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        shard_size_records: int = 4096,
        shard_size_bytes: int = 1 << 30,
        compression: str = "gzip",
        mode: str = "create",
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ShardError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
        if mode not in ("create", "append", "overwrite"):
            raise ValueError(f"mode must be create, append or overwrite, not {mode!r}")
        if shard_size_records < 1 or shard_size_bytes < 1:
            raise ShardError("shard size must be at least 1 record and 1 byte")
        self.out_dir = Path(out_dir)
        self.shard_size_records = int(shard_size_records)
        self.shard_size_bytes = int(shard_size_bytes)
        self.compression = compression
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # rows kept with their CSV lines, so that rewriting an index after each shard is a single write
        self._index: list[tuple[tuple, str]] = []
        self._inputs: dict[str, tuple[tuple, str]] = {}
        self._pending_inputs: list[tuple] = []
        self._prepare(mode)
        self._next_number = 1 + max((_shard_number(p.name) for p in self.out_dir.glob("msa-*.h5")), default=-1)
        self._file = None
        self._records: list[tuple[EncodedRecord, str, str]] = []
        self._cells = 0
        self.shards_written = 0
        self.records_written = 0
        self.bytes_written = 0

    # -- directory state -------------------------------------------------------------------------
    def _prepare(self, mode: str) -> None:
        for tmp in self.out_dir.iterdir():
            if _TMP_RE.match(tmp.name) or tmp.name in (f".{INDEX_FILE}.tmp", f".{INPUTS_FILE}.tmp"):
                tmp.unlink()  # left by a killed run; never readable
        existing = sorted(p for p in self.out_dir.glob("msa-*.h5") if _SHARD_RE.match(p.name))
        index_path, inputs_path = self.out_dir / INDEX_FILE, self.out_dir / INPUTS_FILE
        if mode == "overwrite":
            for path in existing + [index_path, inputs_path]:
                path.unlink(missing_ok=True)
            return
        if mode == "create":
            if existing or index_path.exists():
                raise ShardError(
                    f"{self.out_dir} already holds shards; pass --resume to add to them, --overwrite to "
                    "replace them, or choose an empty directory"
                )
            return
        # append: keep only records whose input was committed (or that came without an input)
        index = _read_csv(index_path, INDEX_COLUMNS) if index_path.exists() else []
        inputs = _read_csv(inputs_path, INPUTS_COLUMNS) if inputs_path.exists() else []
        self._inputs = {row[0]: (row, _csv_line(row)) for row in inputs}
        committed = {(row[0], row[1]) for row in inputs}
        self._index = [(row, _csv_line(row)) for row in index if not row[4] or (row[4], row[5]) in committed]
        referenced = {row[0] for row, _ in self._index}
        for path in existing:
            if path.name not in referenced:
                path.unlink()  # a shard renamed just before a kill, or holding only dropped records
        self._write_indexes()

    @property
    def committed_inputs(self) -> dict[str, dict[str, str]]:
        """Returns ``{input path: inputs.csv row as a dict}`` for inputs whose records are all in finished shards."""
        return {path: dict(zip(INPUTS_COLUMNS, row)) for path, (row, _) in self._inputs.items()}

    def forget_input(self, input_path: str) -> None:
        """Drops an input (and its records) from the indexes, e.g. because the file changed since."""
        if self._inputs.pop(input_path, None) is not None:
            self._index = [entry for entry in self._index if entry[0][4] != input_path]
            self._write_indexes()

    # -- writing ---------------------------------------------------------------------------------
    def add(self, msa: Msa, *, input_path: str = "", input_sha256: str = "") -> None:
        """Adds one alignment (compressing it here); closes the current shard when it is full."""
        self.add_encoded(encode_record(msa, self.compression), input_path=input_path, input_sha256=input_sha256)

    def add_encoded(self, record: EncodedRecord, *, input_path: str = "", input_sha256: str = "") -> None:
        """Adds one alignment compressed by :func:`encode_record`; closes the current shard when it is full."""
        if record.compression != self.compression:
            raise ValueError(f"record encoded with {record.compression!r}, writer uses {self.compression!r}")
        if self._file is None:
            self._open_shard()
        cells = record.n_seq * record.n_res
        self._offsets.append(self._tokens.append(record.tokens, cells))
        self._deletions.append(record.deletions, cells)
        self._names_offset.append(self._names.append(record.names, record.names_length))
        self._names_length.append(record.names_length)
        self._records.append((record, input_path, input_sha256))
        self._cells += cells
        if len(self._records) >= self.shard_size_records or self._cells >= self.shard_size_bytes:
            self.flush()

    def commit_input(
        self, input_path: str, sha256: str, n_bytes: int, n_records: int, status: str = "ok", reason: str = ""
    ) -> None:
        """Marks an input as done; it is recorded in ``inputs.csv`` with the next finished shard (or at close)."""
        self._pending_inputs.append((input_path, sha256, str(n_bytes), str(n_records), status, reason))

    def _open_shard(self) -> None:
        import h5py

        number = self._next_number
        self._tmp_path = self.out_dir / f".{shard_name(number)}.tmp"
        self._final_path = self.out_dir / shard_name(number)
        self._file = h5py.File(self._tmp_path, "w")
        self._tokens = _ChunkedArray(self._file, "tokens", CHUNK_BYTES, self.compression)
        self._deletions = _ChunkedArray(self._file, "deletions", CHUNK_BYTES, self.compression)
        self._names = _ChunkedArray(self._file, "row_names", NAMES_CHUNK_BYTES, self.compression)
        self._offsets, self._names_offset, self._names_length = [], [], []

    def flush(self) -> None:
        """Finishes the current shard (if it has records): writes it, renames it, rewrites the indexes."""
        if self._file is None:
            self._commit_pending()
            return
        import h5py

        f, records = self._file, [r for r, _, _ in self._records]
        for array in (self._tokens, self._deletions, self._names):
            array.finish()
        group = f.create_group("records")
        text = h5py.string_dtype("utf-8")
        columns = {
            "name": [r.name for r in records],
            "source": [r.source for r in records],
            "metadata": [r.metadata for r in records],
            "input": [path for _, path, _ in self._records],
            "input_sha256": [sha for _, _, sha in self._records],
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
        os.replace(self._tmp_path, self._final_path)
        self._file = None
        self.bytes_written += self._final_path.stat().st_size
        for i, (r, path, sha) in enumerate(self._records):
            row = (self._final_path.name, str(i), r.name, r.source, path, sha, str(r.n_seq), str(r.n_res), r.hash)
            self._index.append((row, _csv_line(row)))
        self.shards_written += 1
        self.records_written += len(records)
        self._next_number += 1
        self._records, self._cells = [], 0
        self._commit_pending(write=False)
        self._write_indexes()

    def _commit_pending(self, write: bool = True) -> None:
        pending, self._pending_inputs = self._pending_inputs, []
        for row in pending:
            self._inputs[row[0]] = (row, _csv_line(row))
        if write and pending:
            self._write_indexes()

    def _write_indexes(self) -> None:
        # index first: an input listed as done always has its records indexed
        _write_csv_atomic(self.out_dir / INDEX_FILE, INDEX_COLUMNS, (line for _, line in self._index))
        _write_csv_atomic(self.out_dir / INPUTS_FILE, INPUTS_COLUMNS, (line for _, line in self._inputs.values()))

    def close(self) -> None:
        """Writes the buffered records as a last shard and the final indexes."""
        self.flush()
        if not (self.out_dir / INDEX_FILE).exists():
            self._write_indexes()

    def abort(self) -> None:
        """Discards the shard being written; finished shards and their indexes stay."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._tmp_path.unlink(missing_ok=True)
        self._records, self._cells, self._pending_inputs = [], 0, []

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from msaformer.errors import MsaformerError

        if exc_type is None or issubclass(exc_type, MsaformerError):
            self.close()
        else:
            self.abort()


def _shard_number(name: str) -> int:
    match = _SHARD_RE.match(name)
    return int(match.group(1)) if match else -1


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
