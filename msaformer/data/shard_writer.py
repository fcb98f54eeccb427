"""Writing HDF5 shards: the format constants, the chunk encoding done in parser workers, and ShardWriter.

See :mod:`msaformer.data.shards` for the layout of a shard and the reader. Only this module writes shards.

Chunks. ``tokens`` and ``deletions`` are cut into ``CHUNK_BYTES`` HDF5 chunks, ``row_names`` into
``NAMES_CHUNK_BYTES`` ones, each deflated (HDF5's standard gzip filter) or stored raw. Records are packed
one after the other, with one exception: with ``gzip``, a record holding at least one whole chunk starts on
a chunk boundary, so that its parser worker compresses its chunks in parallel with the others and the
writer stores them with ``write_direct_chunk`` as they are. The zero padding before such a record is less
than one chunk, so it is less than the record itself, and deflates to a few bytes. Small records, the
tails of large ones and ``none`` chunks are packed (and, for ``gzip``, compressed) by the writer. So a
million tiny alignments take about their own size on disk, whatever the compression.
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
from typing import NamedTuple

import numpy as np

from msaformer.data.msa import Msa
from msaformer.errors import ShardError

FORMAT = "msaformer-msa"
FORMAT_VERSION = 1
INDEX_FILE = "index.csv"
INPUTS_FILE = "inputs.csv"
INDEX_COLUMNS = ("shard", "record", "name", "source", "input", "input_sha256", "n_seq", "n_res", "hash")
INPUTS_COLUMNS = ("input", "input_sha256", "bytes", "n_records", "status", "reason")
#: Bytes per HDF5 chunk of ``tokens`` / ``deletions``: small enough that reading the first rows of a
#: record decompresses little more than it needs, large enough to deflate well.
CHUNK_BYTES = 1 << 16
#: Bytes per HDF5 chunk of ``row_names``.
NAMES_CHUNK_BYTES = 1 << 14
COMPRESSIONS = ("gzip", "none")

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
    """Returns this process's thread pool for deflate (which releases the GIL); threads do not survive a fork."""
    from concurrent.futures import ThreadPoolExecutor

    pool = _COMPRESSORS.get(os.getpid())
    if pool is None:
        _COMPRESSORS.clear()
        pool = _COMPRESSORS[os.getpid()] = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    return pool


def compressor_threads() -> int:
    """Returns how many of this process's threads are idle deflate helpers (they do not get in the way of a fork)."""
    pool = _COMPRESSORS.get(os.getpid())
    return len(getattr(pool, "_threads", ())) if pool is not None else 0


def _zlib_deflate(chunk) -> bytes:
    # Z_RLE: run-length matches only (gap runs, zero deletion runs); ~1.7x faster than level-1 deflate
    # with the standard library's zlib, and about as small on HHblits alignments (see BENCHMARKS.md)
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    return packer.compress(chunk) + packer.flush()


DEFLATE_CODECS = ("auto", "isal", "zlib")
_DEFLATE: dict = {}  # "name" and "fn" of the encoder in use, chosen on first use


def use_deflate(codec: str | None = None) -> str:
    """Chooses the deflate encoder of ``gzip`` chunks and returns its name.

    ``isal`` (ISA-L level 1, the ``isal`` package: ~2.4x faster than ``zlib`` and smaller on alignments),
    ``zlib`` (the standard library, level 1 with the ``Z_RLE`` strategy) or ``auto`` (``isal`` when it is
    installed, else ``zlib``). ``None`` reads ``MSAFORMER_DEFLATE`` (default ``auto``). Both write the zlib
    stream of HDF5's standard gzip filter, so every HDF5 reader decodes either. Worker processes forked
    after this call inherit the choice; others get it from ``MSAFORMER_DEFLATE``.
    """
    wanted = (codec if codec is not None else os.environ.get("MSAFORMER_DEFLATE", "") or "auto").strip().lower()
    if wanted not in DEFLATE_CODECS:
        raise ShardError(
            f"deflate encoder {wanted!r} (MSAFORMER_DEFLATE) is unknown; choose one of {', '.join(DEFLATE_CODECS)}"
        )
    name, fn = "zlib", _zlib_deflate
    if wanted != "zlib":
        try:
            from isal import isal_zlib
        except ImportError:
            if wanted == "isal":
                raise ShardError(
                    "deflate encoder 'isal' asked for (MSAFORMER_DEFLATE), but the isal package is not installed: "
                    "pip install isal"
                ) from None
        else:
            name, fn = "isal", lambda chunk, _compress=isal_zlib.compress: _compress(chunk, 1)
    _DEFLATE.update(name=name, fn=fn)
    _ZERO_CHUNKS.clear()
    return name


def deflate_codec() -> str:
    """Returns the name of the deflate encoder in use (see :func:`use_deflate`)."""
    if not _DEFLATE:
        use_deflate()
    return _DEFLATE["name"]


def _deflate(chunk) -> bytes:
    if not _DEFLATE:
        use_deflate()
    return _DEFLATE["fn"](chunk)


def _zero_chunk(chunk: int) -> bytes:
    cached = _ZERO_CHUNKS.get(chunk)
    if cached is None:
        cached = _ZERO_CHUNKS[chunk] = _deflate(bytes(chunk))
    return cached


_ZERO_CHUNKS: dict[int, bytes] = {}


def _flat(data: np.ndarray | bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data.reshape(-1)


def encode_chunks(data: np.ndarray | bytes, chunk: int, compression: str) -> list[bytes]:
    """Returns ``data`` cut into ``chunk``-byte HDF5 chunks (the last one zero-padded), each deflated
    (HDF5's standard gzip filter) or stored raw, ready for ``write_direct_chunk``."""
    flat = _flat(data)
    full = flat.size // chunk
    n = -(-flat.size // chunk)
    last = np.zeros(chunk, dtype=np.uint8)  # only the last chunk is copied, to pad it
    last[: flat.size - full * chunk] = flat[full * chunk :]
    view = memoryview(np.ascontiguousarray(flat[: full * chunk]))
    pieces = [view[i * chunk : (i + 1) * chunk] for i in range(full)] + ([memoryview(last)] if n > full else [])
    if compression == "none":
        return [bytes(p) for p in pieces]
    # all-zero chunks (deletions of alignments without insertions, padding) share one precomputed encoding
    zero = np.ones(n, dtype=bool)
    zero[:full] = ~flat[: full * chunk].reshape(full, chunk).any(axis=1)
    zero[full:] = not last.any()
    busy = np.flatnonzero(~zero).tolist()
    work = [pieces[i] for i in busy]
    packed = list(_compressor().map(_deflate, work)) if len(work) >= 8 else [_deflate(p) for p in work]
    out = [_zero_chunk(chunk)] * n
    for i, encoded in zip(busy, packed):
        out[i] = encoded
    return out


class EncodedArray(NamedTuple):
    """One record's bytes of one dataset (``tokens``, ``deletions`` or ``row_names``), ready for the writer.

    ``chunks``: encoded whole chunks that must start on a chunk boundary (``gzip`` records of at least one
    chunk, compressed in the parser worker). ``tail``: the raw bytes after them (the whole record when
    ``chunks`` is empty), which the writer packs together with the next records. ``tail_chunk``: ``tail``
    zero-padded to a whole chunk and encoded, stored as it is when nothing gets packed after it.
    """

    n_bytes: int
    chunks: list[bytes]
    tail: bytes
    tail_chunk: bytes | None


def encode_array(data: np.ndarray | bytes, chunk: int, compression: str) -> EncodedArray:
    """Returns ``data`` split for the writer: whole chunks compressed here (``gzip``), the rest raw."""
    flat = _flat(data)
    full = flat.size // chunk
    if compression == "none" or full == 0:
        return EncodedArray(flat.size, [], flat.tobytes(), None)
    encoded = encode_chunks(flat, chunk, compression)
    tail = flat[full * chunk :].tobytes()
    return EncodedArray(flat.size, encoded[:full], tail, encoded[full] if tail else None)


@dataclass(frozen=True)
class EncodedRecord:
    """One alignment ready to be written: its index fields and its encoded arrays.

    Made by :func:`encode_record` (in a parser worker, so compression runs in parallel); written by
    :meth:`ShardWriter.add_encoded`, which only packs small pieces.
    """

    name: str
    source: str
    metadata: str
    n_seq: int
    n_res: int
    hash: str
    compression: str
    tokens: EncodedArray
    deletions: EncodedArray
    names: EncodedArray

    @property
    def names_length(self) -> int:
        return self.names.n_bytes


def content_hash(tokens: np.ndarray) -> str:
    """Returns :meth:`Msa.content_hash` of a token matrix (rows joined by ``\\n``), without Python strings."""
    n, width = tokens.shape
    # ~1 MiB of rows at a time through one reused buffer: a full [N, L + 1] copy costs more in page faults
    # than SHA-256 itself
    rows = max(1, min(n, (1 << 20) // (width + 1)))
    lines = np.empty((rows, width + 1), dtype=np.uint8)
    lines[:, width] = ord("\n")
    flat = memoryview(lines.reshape(-1))
    digest = hashlib.sha256()
    for first in range(0, n, rows):
        k = min(rows, n - first)
        lines[:k, :width] = tokens[first : first + k]
        digest.update(flat[: k * (width + 1) - (first + k == n)])  # no newline after the last row
    return digest.hexdigest()


def encode_record(msa: Msa, compression: str = "gzip") -> EncodedRecord:
    """Returns ``msa`` encoded into shard chunks, with its name and content hash."""
    if compression not in COMPRESSIONS:
        raise ShardError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    if msa.depth == 0:
        raise ShardError(f"{msa.source or 'alignment'}: has no rows; nothing to store")
    names = ("\n".join(msa.names) + "\n").encode("utf-8", "surrogateescape")
    tokens = np.ascontiguousarray(msa.tokens)
    return EncodedRecord(
        name=record_name(msa),
        source=msa.source,
        metadata="\n".join(msa.metadata),
        n_seq=msa.depth,
        n_res=msa.length,
        hash=content_hash(tokens),
        compression=compression,
        tokens=encode_array(tokens, CHUNK_BYTES, compression),
        deletions=encode_array(np.ascontiguousarray(msa.deletions), CHUNK_BYTES, compression),
        names=encode_array(names, NAMES_CHUNK_BYTES, compression),
    )


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
        return raw if self.compression == "none" else _deflate(raw)

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
        self._offsets.append(self._tokens.append(record.tokens))
        self._deletions.append(record.deletions)  # same sizes, so the same offset as the tokens
        self._names_offset.append(self._names.append(record.names))
        self._names_length.append(record.names.n_bytes)
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

