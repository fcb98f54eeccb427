"""Alignment databases as inputs: HH-suite ffindex, MMseqs2 databases, OpenFold alignment_db.

Each database is opened by layout (:func:`open_database`) and seen as a stream of :class:`Entry` s, one per
alignment, in data order; a reader never holds more of the index than one block of lines
(``INDEX_BLOCK_LINES``), so a database of millions of entries costs the client a few MB. Entry bytes are read
with ``os.pread`` and parsed by the same pure parsers as loose files.

* **ffindex / ffdata** (HH-suite: UniClust30, BFD): ``X.ffindex`` lines are ``name<TAB>offset<TAB>length``;
  entries in ``X.ffdata`` lie back to back, each ended by one NUL that ``length`` counts. Entries are A3M.
  Given as ``X``, ``X.ffdata`` or ``X.ffindex``.
* **MMseqs2** (``DB``, ``DB.index``, ``DB.dbtype``; the data possibly split into ``DB.0``, ``DB.1``, ... whose
  concatenation the index offsets address): numeric keys, NUL-terminated entries. MSA databases
  (``mmseqs result2msa`` with an A3M or FASTA ``--msa-format-mode``: type 11) and generic ones (type 12) are
  read; compressed databases and other types (sequences, profiles, cA3M) are refused with what to do instead.
* **OpenFold alignment_db**: ``*.db`` files of raw alignment files back to back and a super index JSON
  ``{chain: {"db": FILE, "files": [[fname, offset, length], ...]}}``. Members are A3M or Stockholm (by their
  name); chains whose entries point at the same bytes are read once, their names kept as ``aliases``.

OpenProteinSet / OpenFold alignment *directories* are not databases: they are expanded by
:mod:`msaformer.data.inputs` (records named ``chain/file``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msaformer.errors import AlignmentError

#: Bytes of index read at a time: bounds the reader's memory whatever the database's size.
INDEX_BLOCK_BYTES = 16 << 20

_MMSEQS_TYPES = {
    0: "amino-acid sequences", 1: "nucleotide sequences", 2: "HMM profiles", 5: "alignment results",
    6: "clustering results", 7: "prefilter results", 8: "taxonomy results", 9: "an index", 10: "compressed cA3M MSAs",
    11: "MSAs", 12: "generic entries", 13: "omitted", 14: "reverse prefilter results", 15: "offsets",
}  # fmt: skip
_MMSEQS_READABLE = (11, 12)


@dataclass(frozen=True)
class Entry:
    """One alignment of a database.

    Attributes:
        key: the entry's key (an ffindex name, an MMseqs2 key, ``chain/member`` of an alignment_db).
        offset, length: where its bytes are in the database's (virtual) data; ``length`` includes a
            terminating NUL where the format has one.
        fmt: ``"a3m"`` or ``"stockholm"``; None to decide from ``member``'s name.
        member: the alignment_db member file name ("" elsewhere).
        aliases: other keys whose entries are these same bytes (alignment_db duplicate chains).
        data: which data file the offset is in (alignment_db); -1 = the virtual concatenation.
        chain: the alignment_db chain the entry belongs to ("" elsewhere): ``--merge-per-chain`` joins the
            entries of one chain into one record.
    """

    key: str
    offset: int
    length: int
    fmt: str | None = "a3m"
    member: str = ""
    aliases: tuple[str, ...] = ()
    data: int = -1
    chain: str = ""


@dataclass
class Database:
    """An opened database: where its data is and how to list its entries (see the module docstring)."""

    kind: str  # "ffindex" | "mmseqs" | "alignment_db"
    path: Path  # what the user named
    label: str  # the name keys are recorded under
    data_files: list[Path]
    index_file: Path
    sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sizes = [p.stat().st_size for p in self.data_files]
        self._starts = np.concatenate(([0], np.cumsum(self.sizes))).astype(np.int64)

    @property
    def data_bytes(self) -> int:
        return int(self._starts[-1])

    @property
    def mtime_ns(self) -> int:
        """The newest modification time of the database's files (data and index)."""
        return max(p.stat().st_mtime_ns for p in [*self.data_files, self.index_file])

    def entries(self) -> Iterator[Entry]:
        """Yields the database's entries (a block of the index at a time in data order), streaming."""
        if self.kind == "alignment_db":
            yield from _alignment_db_entries(self)
        else:
            yield from _index_entries(self)

    def entry_source(self, entry: Entry) -> str:
        """Returns where an entry is, for ``Msa.source`` and messages: ``<database>::<key>``."""
        return f"{self.path}::{entry.key}"

    def parse(self, entry: Entry, data: bytes, *, dedup: bool = False) -> list:
        """Returns the alignments of one entry's bytes (its terminating NUL dropped)."""
        from msaformer.data.parsers import parse_alignment

        if data.endswith(b"\x00"):
            data = data[:-1]
        return parse_alignment(data, entry.fmt, source=self.entry_source(entry), dedup=dedup)

    def read(self, entry: Entry, handles: dict) -> bytes:
        """Returns an entry's bytes (``handles``: open file descriptors, reused across calls)."""
        if entry.data >= 0:
            return _pread(handles, self.data_files[entry.data], entry.offset, entry.length, self, entry)
        if entry.offset < 0 or entry.offset + entry.length > self.data_bytes:
            raise AlignmentError(
                f"{self.path}: entry {entry.key!r} lies at bytes {entry.offset}..{entry.offset + entry.length}, "
                f"past the end of the data ({self.data_bytes} bytes); the index does not match the data"
            )
        pieces = []
        offset, remaining = entry.offset, entry.length
        while remaining:
            i = int(np.searchsorted(self._starts, offset, side="right")) - 1
            start = offset - int(self._starts[i])
            take = min(remaining, self.sizes[i] - start)
            pieces.append(_pread(handles, self.data_files[i], start, take, self, entry))
            offset, remaining = offset + take, remaining - take
        return b"".join(pieces)

    def describe(self) -> str:
        return f"{self.kind} database {self.path}"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("super_index", None)  # workers read entries by offset; only the client lists them
        return state


def _pread(handles: dict, path: Path, offset: int, length: int, db: Database, entry: Entry) -> bytes:
    fd = handles.get(path)
    if fd is None:
        fd = handles[path] = os.open(path, os.O_RDONLY)
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise AlignmentError(f"{db.path}: entry {entry.key!r} is cut short in {path} (the data file is truncated)")
    return data


def close_handles(handles: dict) -> None:
    for fd in handles.values():
        os.close(fd)
    handles.clear()


# ------------------------------------------------------------------------------------------- detection


def _strip(path: Path, suffixes: tuple[str, ...]) -> Path:
    for suffix in suffixes:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def open_database(path: str | os.PathLike) -> Database | None:
    """Returns the database at ``path`` if its layout is one of the three (see the module docstring), else None.

    Raises:
        AlignmentError: a database that is recognised but cannot be read (a refused MMseqs2 type, a missing data
            file, an unreadable super index).
    """
    path = Path(path)
    base = _strip(path, (".ffindex", ".ffdata"))
    if Path(f"{base}.ffindex").is_file() and Path(f"{base}.ffdata").is_file():
        if is_profile_ffindex(base.name):
            raise AlignmentError(f"{base}: an HH-suite database of profiles, not of A3M alignments; give its _a3m "
                                 f"database ({base.name.rsplit('_', 1)[0]}_a3m)")
        return Database("ffindex", path, base.name, [Path(f"{base}.ffdata")], Path(f"{base}.ffindex"))
    base = _strip(path, (".index", ".dbtype"))
    if Path(f"{base}.dbtype").is_file() and Path(f"{base}.index").is_file():
        return _open_mmseqs(path, base)
    if path.is_dir():
        indexes = sorted(p for p in path.glob("*.index") if p.is_file() and _is_super_index(p))
        if indexes and any(path.glob("*.db")):
            if len(indexes) > 1:
                raise AlignmentError(f"{path}: holds several super index files ({', '.join(p.name for p in indexes)}); "
                                     "give the one to read")
            return _open_alignment_db(path, indexes[0])
    elif path.suffix in (".index", ".json") and path.is_file() and _is_super_index(path):
        return _open_alignment_db(path, path)
    return None


def is_profile_ffindex(name: str) -> bool:
    """Returns whether an ffindex database name is one of HH-suite's profile companions of an A3M database
    (``X_hhm``, ``X_cs219``), which hold HMMs and column states rather than alignments."""
    return name.endswith(("_hhm", "_cs219", "_hhm_db", "_cs219_db"))


def is_msa_database(path: str | os.PathLike) -> bool:
    """Returns whether a database found in a directory holds alignments (an MSA-type MMseqs2 database, an
    ffindex database that is not an HH-suite profile companion): directory scans take these and skip the
    sequence, profile and result databases that usually lie beside them."""
    path = Path(path)
    if Path(f"{path}.ffindex").is_file():
        return not is_profile_ffindex(path.name)
    try:
        raw = Path(f"{path}.dbtype").read_bytes()[:4]
    except OSError:
        return False
    return len(raw) == 4 and struct.unpack("<i", raw)[0] & 0xFFFF in _MMSEQS_READABLE


def _is_super_index(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(64).lstrip()[:1] == b"{"


def _open_mmseqs(path: Path, base: Path) -> Database:
    raw = Path(f"{base}.dbtype").read_bytes()
    if len(raw) < 4:
        raise AlignmentError(f"{base}.dbtype: not an MMseqs2 dbtype file (expected 4 bytes, found {len(raw)})")
    value = struct.unpack("<i", raw[:4])[0]
    kind, extended = value & 0xFFFF, (value & 0xFFFFFFFF) >> 16
    name = _MMSEQS_TYPES.get(kind, f"type {kind}")
    if extended & 1:
        raise AlignmentError(f"{base}: a compressed MMseqs2 database of {name}; decompress it first "
                             f"(`mmseqs decompress {base} {base}_plain`)")
    if kind not in _MMSEQS_READABLE:
        hint = (" (write A3M with `mmseqs result2msa ... --msa-format-mode 6`, or unpack it with "
                "`mmseqs convertalis`/`unpackdb`)") if kind in (5, 10) else ""
        raise AlignmentError(f"{base}: an MMseqs2 database of {name}, not of MSAs{hint}")
    if base.is_file():
        data = [base]
    else:
        data, k = [], 0
        while Path(f"{base}.{k}").is_file():
            data.append(Path(f"{base}.{k}"))
            k += 1
        if not data:
            raise AlignmentError(f"{base}: MMseqs2 data file missing (neither {base} nor {base}.0 exists)")
    return Database("mmseqs", path, base.name, data, Path(f"{base}.index"))


def _open_alignment_db(path: Path, super_index: Path) -> Database:
    try:
        index = json.loads(super_index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlignmentError(f"{super_index}: unreadable alignment_db super index ({exc})") from None
    if not isinstance(index, dict):
        raise AlignmentError(f"{super_index}: an alignment_db super index is a JSON object of chains")
    files = sorted({str(v.get("db", "")) for v in index.values() if isinstance(v, dict)})
    folder = super_index.parent
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise AlignmentError(f"{super_index}: names database file {missing[0]}, which is not in {folder}")
    label = path.name if path.is_dir() else super_index.stem
    db = Database("alignment_db", path, label, [folder / f for f in files], super_index)
    db.super_index = index  # type: ignore[attr-defined]
    return db


# -------------------------------------------------------------------------------------------- entries


def _parse_index_line(raw: bytes, db: Database, line_no: int) -> tuple[bytes, int, int] | None:
    """Returns (key, offset, length) of one ffindex / MMseqs2 index line, None for a blank line."""
    text = raw.rstrip(b"\r\n")
    if not text:
        return None
    parts = text.split(b"\t")
    if len(parts) < 3:
        raise AlignmentError(f"{db.index_file}: line {line_no} is not 'key<TAB>offset<TAB>length' ({text[:60]!r})")
    try:
        offset, length = int(parts[1]), int(parts[2])
    except ValueError:
        raise AlignmentError(f"{db.index_file}: line {line_no}: offset and length must be numbers") from None
    if offset < 0 or length < 0:
        raise AlignmentError(f"{db.index_file}: line {line_no}: negative offset or length")
    return parts[0], offset, length


def _index_lines(db: Database, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """Yields (line number within the range, end position in the index file, raw line) for the index bytes
    [start, end), a block at a time (``start`` and ``end`` fall on line starts)."""
    with open(db.index_file, "rb") as fh:
        fh.seek(start)
        position, line_no = start, 0
        while end is None or position < end:
            lines = fh.readlines(INDEX_BLOCK_BYTES)
            if not lines:
                break
            for raw in lines:
                position += len(raw)
                line_no += 1
                yield line_no, position, raw
                if end is not None and position >= end:
                    return


def scan_index(db: Database) -> Iterator[tuple[str, int, int]]:
    """Yields (key, length, end position in the index file) for every line of an ffindex / MMseqs2 index, in
    index order: what the client needs to cut the database into tasks, without holding any of it."""
    for line_no, position, raw in _index_lines(db):
        parsed = _parse_index_line(raw, db, line_no)
        if parsed is not None:
            yield parsed[0].decode("utf-8", "replace"), parsed[2], position


def _index_entries(db: Database, start: int = 0, end: int | None = None) -> Iterator[Entry]:
    """ffindex / MMseqs2: the entries of index bytes [start, end), a block at a time, each block in data order."""
    block: list[tuple[int, int, bytes]] = []
    for line_no, _, raw in _index_lines(db, start, end):
        parsed = _parse_index_line(raw, db, line_no)
        if parsed is not None:
            key, offset, length = parsed
            block.append((offset, length, key))
        if len(block) >= 65536:
            yield from _sorted_entries(block)
            block = []
    yield from _sorted_entries(block)


def _sorted_entries(block: list[tuple[int, int, bytes]]) -> Iterator[Entry]:
    block.sort()
    for offset, length, key in block:
        yield Entry(key.decode("utf-8", "replace"), offset, length)


def _alignment_db_entries(db: Database) -> Iterator[Entry]:
    """alignment_db: every (database file, member) once, its chains as key and aliases; chains in data order of
    their first member, a chain's members together (``--merge-per-chain`` needs them in one task)."""
    index = db.super_index  # type: ignore[attr-defined]
    order = {str(p.name): i for i, p in enumerate(db.data_files)}
    groups: dict[tuple, list[str]] = {}
    for chain, value in index.items():
        if not isinstance(value, dict) or "files" not in value or "db" not in value:
            raise AlignmentError(f"{db.index_file}: chain {chain!r} has no 'db' and 'files'")
        try:
            members = tuple((str(name), int(off), int(size)) for name, off, size in value["files"])
        except (TypeError, ValueError):
            raise AlignmentError(f"{db.index_file}: chain {chain!r}: files must be [name, offset, length] triples") from None
        if any(off < 0 or size < 0 for _, off, size in members):
            raise AlignmentError(f"{db.index_file}: chain {chain!r}: negative offset or length")
        groups.setdefault((str(value["db"]), members), []).append(str(chain))
    chains = []
    for (file, members), names in groups.items():
        kept = [(off, size, name) for name, off, size in members if _member_format(name) is not None]
        if kept:
            chains.append((order[file], min(kept)[0], names[0], tuple(names[1:]), kept))
    chains.sort(key=lambda c: c[:2])
    for data, _, chain, aliases, members in chains:
        for off, size, name in members:
            yield Entry(f"{chain}/{name}", off, size, _member_format(name), name,
                        tuple(f"{a}/{name}" for a in aliases), data, chain)


def _member_format(name: str) -> str | None:
    """The format of an alignment_db member by its name; None for members that are not alignments (``.hhr``)."""
    lower = name.lower()
    if lower.endswith((".sto", ".stk", ".stockholm")):
        return "stockholm"
    if lower.endswith((".a3m", ".a2m")):
        return "a3m"
    if lower.endswith((".fasta", ".fa", ".afa", ".fas")):
        return "fasta"
    return None


def count_entries(db: Database) -> int:
    """Returns the number of entries of a database (counting index lines; alignment_db: alignment members)."""
    if db.kind == "alignment_db":
        return sum(1 for _ in _alignment_db_entries(db))
    count = 0
    with open(db.index_file, "rb") as fh:
        last = b"\n"
        for block in iter(lambda: fh.read(INDEX_BLOCK_BYTES), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


@dataclass(frozen=True)
class DatabaseSlice:
    """A bounded run of a database's entries, the unit of a preprocess task: index bytes ``[start, end)`` of an
    ffindex / MMseqs2 database (the worker reads that part of the index itself), or the ``entries`` of an
    alignment_db (listed by the client, which alone reads the super index)."""

    db: Database
    start: int = 0
    end: int = 0
    entries: tuple[Entry, ...] = ()

    def iter_entries(self) -> Iterator[Entry]:
        if self.db.kind == "alignment_db":
            return iter(self.entries)
        return _index_entries(self.db, self.start, self.end)
