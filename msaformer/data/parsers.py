"""Alignment parsers: A3M / A2M / aligned FASTA / Stockholm bytes (and .gz / .tar archives) in, :class:`Msa` out.

``parse_alignment`` is pure (bytes in, frozen dataclasses out); ``read_alignments`` is the one place that reads
files and archives. Every problem with user data raises :class:`~msaformer.errors.AlignmentError` with a one-line
message naming the file, the line or record, and what was found.

Semantics (see README "Alignment formats"):

* A3M / A2M / aligned FASTA: the first real record is the query; uppercase and ``-`` are aligned columns,
  lowercase letters are insertions (counted in ``deletions`` on the next column, dropped after the last one),
  ``.`` and ``*`` are dropped, whitespace is ignored. ``#`` lines are metadata; hh-suite pseudo-sequences
  (``>ss_*``, ``>sa_*``, ``>aa_*``) are skipped. A query without any uppercase letter makes every character a
  column (uppercased).
* Stockholm: columns are those where the query has a residue; ``-`` and ``.`` are gaps; residues of other rows
  in the query's gap columns are deletions; rows are uppercased; ``//`` ends an alignment.
* NUL bytes separate independent alignments (MMseqs2 / ColabFold): each block is its own ``Msa``, with
  ``#k`` (0-based) appended to ``source`` when a file holds more than one.
"""

from __future__ import annotations

import contextlib

import io
import os
import re
import tarfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from msaformer.data._a3m import parse_a3m
from msaformer.data._stockholm import parse_stockholm, split_stockholm
from msaformer.data.msa import Msa
from msaformer.errors import AlignmentError, MsaformerError

__all__ = [
    "ALIGNMENT_SUFFIXES",
    "ARCHIVE_SUFFIXES",
    "FORMATS",
    "dedup_rows",
    "detect_format",
    "is_alignment_path",
    "parse_alignment",
    "parse_file_bytes",
    "read_alignments",
]

FORMATS = ("a3m", "fasta", "stockholm")
_SUFFIX_FORMAT = {
    ".a3m": "a3m",
    ".a2m": "a3m",
    ".fasta": "fasta",
    ".fa": "fasta",
    ".fas": "fasta",
    ".afa": "fasta",
    ".afasta": "fasta",
    ".sto": "stockholm",
    ".stk": "stockholm",
    ".stockholm": "stockholm",
}
# Extensions whose format is decided by content (they occur in the wild for FASTA-like alignments).
_CONTENT_SUFFIXES = (".ali", ".pro")
ALIGNMENT_SUFFIXES: tuple[str, ...] = tuple(_SUFFIX_FORMAT) + _CONTENT_SUFFIXES
ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz", ".gz")
_FORMAT_ALIASES = {"a3m": "a3m", "a2m": "a3m", "fasta": "fasta", "afa": "fasta", "sto": "stockholm",
                   "stockholm": "stockholm"}
_BOM = b"\xef\xbb\xbf"
_NUL_RUNS = re.compile(rb"\x00{2,}")


def _strip_gz(name: str) -> str:
    lower = name.lower()
    return lower[:-3] if lower.endswith(".gz") else lower


def is_alignment_path(name: str | os.PathLike) -> bool:
    """Return True if a file name (optionally ``.gz``) has an alignment extension, or is a tar archive."""
    lower = str(name).lower()
    return _is_tar_name(lower) or _strip_gz(lower).endswith(ALIGNMENT_SUFFIXES)


def _is_tar_name(lower: str) -> bool:
    return lower.endswith((".tar", ".tar.gz", ".tgz"))


def _content_start(data: bytes) -> bytes:
    """Return the first few meaningful bytes (after a BOM, NULs and whitespace)."""
    head = data[:4096]
    if head.startswith(_BOM):
        head = head[3:]
    return head.lstrip(b"\x00 \t\r\n\v\f")[:16]


def detect_format(name: str | os.PathLike | None, data: bytes) -> str:
    """Return ``"a3m"``, ``"fasta"`` or ``"stockholm"`` for a file name and its (decompressed) content.

    A ``# STOCKHOLM`` first line always means Stockholm; otherwise the extension decides (``.gz`` ignored);
    otherwise a leading ``>`` or ``#`` means A3M/FASTA.
    """
    start = _content_start(data)
    if start.upper().startswith(b"# STOCKHOLM"):
        return "stockholm"
    suffix = os.path.splitext(_strip_gz(str(name or "")))[1]
    if suffix in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffix]
    if start[:1] in (b">", b"#"):
        return "fasta" if suffix in (".fasta", ".fa") else "a3m"
    where = str(name) if name else "input"
    if not start:
        raise AlignmentError(f"{where}: empty file (no sequences)")
    raise AlignmentError(
        f"{where}: unknown alignment format: content starts with {start[:12]!r}; expected '>' (A3M/FASTA), "
        "'#' (A3M comment) or '# STOCKHOLM'"
    )


def dedup_rows(msa: Msa) -> Msa:
    """Return ``msa`` without exact duplicate aligned rows (first occurrence kept, so the query always is)."""
    if msa.depth <= 1:
        return msa
    rows = np.ascontiguousarray(msa.tokens).view(np.dtype((np.void, msa.length))).ravel()
    _, first = np.unique(rows, return_index=True)
    if first.size == msa.depth:
        return msa
    keep = np.sort(first)
    return Msa(
        names=[msa.names[i] for i in keep.tolist()],
        tokens=msa.tokens[keep],
        deletions=msa.deletions[keep],
        source=msa.source,
        metadata=msa.metadata,
    )


def _normalise(data: bytes) -> bytes:
    """The bytes every reader parses: no BOM, runs of NULs as one, classic Mac line ends as ``\\n``."""
    if data.startswith(_BOM):
        data = data[3:]
    if b"\x00\x00" in data:  # runs of NULs are empty blocks: one NUL each, so memory does not grow with them
        data = _NUL_RUNS.sub(b"\x00", data)
    if b"\n" not in data and b"\r" in data:  # classic Mac line ends
        data = data.replace(b"\r", b"\n")
    return data


#: A3M / FASTA files larger than this whose blocks average under DENSE_BLOCK_BYTES are read group by group
#: by ``parse_file_bytes(..., lazy=True)`` (what ``preprocess`` does): their Msa objects would otherwise cost
#: far more than the file.
DENSE_FILE_BYTES = 4 << 20
DENSE_BLOCK_BYTES = 1024


class DenseAlignments:
    """The alignments of a file of many small NUL-separated A3M / FASTA blocks, read in groups: iterating
    parses one group of blocks at a time (the whole file was parsed once on creation, to find any error and
    count them, and holds no Msa). ``len()`` is the number of alignments."""

    def __init__(self, data: bytes, source: str, where: str, dedup: bool) -> None:
        from msaformer.data._a3m import iter_a3m_groups

        self._data, self._source, self._where, self._dedup = data, source, where, dedup
        self._n = sum(len(group) for group in iter_a3m_groups(data, source, where))
        if not self._n:
            raise AlignmentError(f"{where}: empty file (no sequences)")

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Msa]:
        from msaformer.data._a3m import iter_a3m_groups

        for group in iter_a3m_groups(self._data, self._source, self._where):
            for label, names, tokens, deletions, metadata in group:
                msa = Msa(names=names, tokens=tokens, deletions=deletions, source=label, metadata=metadata)
                yield dedup_rows(msa) if self._dedup else msa


def parse_alignment(data: bytes, fmt: str | None = None, *, source: str = "", dedup: bool = False) -> list[Msa]:
    """Return one :class:`Msa` per alignment in ``data`` (NUL-separated blocks, Stockholm ``//`` sections).

    Args:
        data: the file content (already decompressed).
        fmt: ``"a3m"`` (also A2M), ``"fasta"``, ``"stockholm"``, or None to detect from the content.
        source: the file name, used in ``Msa.source`` and error messages.
        dedup: remove exact duplicate aligned rows (keeping the first occurrence; the query is always kept).
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"parse_alignment expects bytes, got {type(data).__name__}")
    where = source or "input"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise AlignmentError(f"{where}: the file is UTF-16 encoded; save it as ASCII or UTF-8 text")
    if fmt is None:
        fmt = detect_format(source, data)
    elif fmt.lower() not in _FORMAT_ALIASES:
        raise AlignmentError(f"{where}: unknown alignment format {fmt!r}; choose one of {', '.join(FORMATS)}")
    else:
        fmt = _FORMAT_ALIASES[fmt.lower()]
    data = _normalise(data)

    if fmt != "stockholm":
        # All NUL-separated blocks in one vectorised pass; each block's matrices are slices of shared buffers.
        parsed = parse_a3m(data, source, where)
        if not parsed:
            raise AlignmentError(f"{where}: empty file (no sequences)")
        results = []
        for label, names, tokens, deletions, metadata in parsed:
            msa = Msa(names=names, tokens=tokens, deletions=deletions, source=label, metadata=metadata)
            results.append(dedup_rows(msa) if dedup else msa)
        return results

    # (text, first line number) of every Stockholm alignment; NUL bytes separate blocks.
    blocks: list[tuple[bytes, int]] = []
    pieces = data.split(b"\x00") if b"\x00" in data else [data]
    line = 1
    for i, piece in enumerate(pieces):
        if piece and not piece.isspace():
            blocks.extend((text, line + offset - 1) for text, offset in split_stockholm(piece))
        if i + 1 < len(pieces):
            line += piece.count(b"\n")
    if not blocks:
        raise AlignmentError(f"{where}: empty file (no sequences)")

    results = []
    for k, (text, first_line) in enumerate(blocks):
        label = f"{source}#{k}" if len(blocks) > 1 else source
        names, tokens, deletions, metadata = parse_stockholm(text, label or where, first_line)
        msa = Msa(names=names, tokens=tokens, deletions=deletions, source=label, metadata=metadata)
        results.append(dedup_rows(msa) if dedup else msa)
    return results


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


#: gzip data may decompress to this many times its size, and always to MIN_DECOMPRESSED_BYTES, never to more than
#: MAX_DECOMPRESSED_BYTES: real MSAs compress 3-20x; a "zip bomb" is refused before it fills the memory.
MAX_EXPANSION = 64
MIN_DECOMPRESSED_BYTES = 64 << 20
MAX_DECOMPRESSED_BYTES = 16 << 30


#: This process's limits (``preprocess --max-expansion / --max-decompressed`` set them in every worker).
_limits = {"expansion": MAX_EXPANSION, "ceiling": MAX_DECOMPRESSED_BYTES}


@contextlib.contextmanager
def decompression_limits(max_expansion: int | None = None, max_bytes: int | None = None):
    """Within the block, gzip inputs read in this process use these limits (None: the default); see
    :func:`decompressed_limit`."""
    for value, name in ((max_expansion, "--max-expansion"), (max_bytes, "--max-decompressed")):
        if value is not None and value < 1:
            raise MsaformerError(f"{name} must be at least 1, got {value}")
    previous = dict(_limits)
    _limits["expansion"] = MAX_EXPANSION if max_expansion is None else int(max_expansion)
    _limits["ceiling"] = MAX_DECOMPRESSED_BYTES if max_bytes is None else int(max_bytes)
    try:
        yield
    finally:
        _limits.update(previous)


def decompressed_limit(compressed: int) -> int:
    """Returns how many bytes ``compressed`` bytes of gzip data may decompress to: ``max_expansion`` times as
    many, and at least ``MIN_DECOMPRESSED_BYTES``, but never more than ``max_bytes``."""
    return min(_limits["ceiling"], max(MIN_DECOMPRESSED_BYTES, _limits["expansion"] * compressed))


def _decompress(raw: bytes, where: str) -> bytes:
    """Decompresses gzip data (every member, as ``gzip.decompress``), streaming, refusing to go past
    :func:`decompressed_limit`."""
    limit = decompressed_limit(len(raw))
    out: list[bytes] = []
    total = 0
    data = raw
    try:
        while data:
            stream = zlib.decompressobj(31)
            pending = data
            while pending and not stream.eof:
                piece = stream.decompress(pending, limit - total + 1)
                total += len(piece)
                if total > limit:
                    raise AlignmentError(
                        f"{where}: decompresses to more than {limit:,} bytes (the limit: {_limits['expansion']}x its "
                        f"{len(raw):,} bytes, at least {MIN_DECOMPRESSED_BYTES >> 20} MiB, at most "
                        f"{_limits['ceiling']:,}); refused as a decompression bomb (if it is real, raise "
                        "--max-expansion or --max-decompressed)"
                    )
                out.append(piece)
                pending = stream.unconsumed_tail
            if not stream.eof:
                raise EOFError("compressed data ended before the end-of-stream marker")
            data = stream.unused_data.lstrip(b"\x00")  # trailing zero padding, as gzip allows
    except (OSError, EOFError, zlib.error) as exc:
        raise AlignmentError(f"{where}: cannot decompress gzip data ({_one_line(exc)}); the file is damaged or truncated") from None
    return b"".join(out)


def read_alignments(path: str | os.PathLike, *, dedup: bool = False) -> list[Msa]:
    """Return the alignments of a file: plain, ``.gz``, or a ``.tar`` / ``.tar.gz`` archive of alignment files.

    Compression and tar archives are recognised by content (gzip magic, ``ustar`` header) as well as by name.
    Archive members without an alignment extension (e.g. ColabFold's ``pdb70.m8``) are ignored; the member name
    is appended to ``source`` as ``path::member``.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise AlignmentError(f"{where}: is a directory, not an alignment file") from None
    except OSError as exc:
        raise AlignmentError(f"{where}: cannot read file ({exc.strerror or _one_line(exc)})") from None
    return parse_file_bytes(raw, where, dedup=dedup)


def parse_file_bytes(raw: bytes, where: str, *, dedup: bool = False, lazy: bool = False) -> list[Msa]:
    """Returns the alignments of a file's bytes as :func:`read_alignments` reads them (``where``: its path,
    whose name decides the format and the tar case when the content does not). With ``lazy``, a large file of
    small NUL-separated A3M / FASTA blocks comes back as :class:`DenseAlignments` (iterable, sized), not a list."""
    if raw[:2] == b"\x1f\x8b":
        raw = _decompress(raw, where)
    if raw[257:262] == b"ustar" or _is_tar_name(Path(where).name.lower()):
        return _read_tar(raw, where, dedup)
    fmt = detect_format(where, raw)
    if lazy and fmt != "stockholm" and len(raw) > DENSE_FILE_BYTES and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = _normalise(raw)
        if data.count(b"\x00") * DENSE_BLOCK_BYTES > len(data):
            dense = DenseAlignments(data, where, where, dedup)
            if len(dense) > 1:
                return dense
    return parse_alignment(raw, fmt, source=where, dedup=dedup)


def _read_tar(raw: bytes, where: str, dedup: bool) -> list[Msa]:
    results: list[Msa] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
            for member in archive:
                if not member.isfile() or not _strip_gz(member.name).endswith(ALIGNMENT_SUFFIXES):
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                label = f"{where}::{member.name}"
                if data[:2] == b"\x1f\x8b":
                    data = _decompress(data, label)
                results.extend(parse_alignment(data, detect_format(label, data), source=label, dedup=dedup))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise AlignmentError(f"{where}: cannot read tar archive ({_one_line(exc)}); the file is damaged or truncated") from None
    if not results:
        raise AlignmentError(f"{where}: the archive holds no alignment files (expected {', '.join(ALIGNMENT_SUFFIXES)})")
    return results
