"""Encoding alignments into HDF5 chunks, done in the parser workers so that compression runs in parallel.

``tokens`` and ``deletions`` are cut into ``CHUNK_BYTES`` HDF5 chunks, ``row_names`` into ``NAMES_CHUNK_BYTES``
ones, each deflated (HDF5's standard gzip filter; ISA-L when the ``isal`` package is importable, else zlib) or
stored raw. With ``gzip``, a record holding at least one whole chunk is compressed here, chunk by chunk, and
the writer stores those chunks with ``write_direct_chunk`` as they are; smaller records and the tails of large
ones are packed back to back by the writer (:mod:`msaformer.data.shard_writer`).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from msaformer.data.msa import Msa, content_hash
from msaformer.data.shard_format import CHUNK_BYTES, COMPRESSIONS, NAMES_CHUNK_BYTES, record_name
from msaformer.errors import ShardError


_COMPRESSORS: dict = {}


def _compressor():
    """Returns this process's thread pool for deflate (which releases the GIL); threads do not survive a fork."""
    from concurrent.futures import ThreadPoolExecutor

    pool = _COMPRESSORS.get(os.getpid())
    if pool is None:
        _COMPRESSORS.clear()
        pool = _COMPRESSORS[os.getpid()] = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    return pool


_PARALLEL = [True]


def set_parallel_deflate(parallel: bool) -> None:
    """Whether large records' chunks are deflated by a thread pool (the default) or by the calling thread
    (a preprocess worker that shares the machine's cores with other workers: no oversubscription)."""
    _PARALLEL[0] = bool(parallel)


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


def deflate(chunk) -> bytes:
    """Returns ``chunk`` deflated by the encoder in use (:func:`use_deflate`)."""
    if not _DEFLATE:
        use_deflate()
    return _DEFLATE["fn"](chunk)


def _zero_chunk(chunk: int) -> bytes:
    cached = _ZERO_CHUNKS.get(chunk)
    if cached is None:
        cached = _ZERO_CHUNKS[chunk] = deflate(bytes(chunk))
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
    if len(work) >= 8 and _PARALLEL[0]:
        packed = list(_compressor().map(deflate, work))
    else:
        packed = [deflate(p) for p in work]
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
    :meth:`~msaformer.data.shard_writer.TaskWriter.add`, which only packs small pieces.
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


def encode_record(msa: Msa, compression: str = "gzip", *, name: str | None = None) -> EncodedRecord:
    """Returns ``msa`` encoded into shard chunks, with its name (``name``, else :func:`record_name`) and content
    hash."""
    if compression not in COMPRESSIONS:
        raise ShardError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    if msa.depth == 0:
        raise ShardError(f"{msa.source or 'alignment'}: has no rows; nothing to store")
    names = ("\n".join(msa.names) + "\n").encode("utf-8", "surrogateescape")
    tokens = np.ascontiguousarray(msa.tokens)
    return EncodedRecord(
        name=name or record_name(msa),
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
