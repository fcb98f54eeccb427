"""The inputs named on a command line: the one expander of ``preprocess``, ``embed``, ``contacts`` and friends.

:func:`expand_inputs` turns arguments into :class:`InputSource` s by one set of rules:

* a shard directory (written by ``msaformer preprocess``) is one source of many records;
* another directory is searched recursively, in sorted order, for alignment files (:func:`is_alignment_path`:
  ``.a3m .a2m .fasta .fa .fas .afa .afasta .sto .stk .stockholm .ali .pro``, each also ``.gz``, and ``.tar`` /
  ``.tar.gz`` / ``.tgz`` archives) and shard directories; hidden files and folders are skipped, and so is
  ``exclude`` (the output directory);
* a file is read whatever its name (the format is detected from the content when the name does not decide it);
* a glob pattern (``*``, ``?``, ``[``; ``**`` recursive; quote it) stands for its matches;
* an argument that does not exist, a pattern that matches nothing and a directory without alignments are
  errors; a path reached twice is used once (the first time).

:func:`iter_inputs` then streams every alignment of the sources as an :class:`InputItem`, one file (or shard
record) at a time, in order. A file that cannot be read is not an exception there: it becomes an item whose
``error`` says why, so a batch job can record it and carry on (``--on-error skip``) or stop naming it.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from msaformer.data.msa import Msa
from msaformer.data.parsers import ALIGNMENT_SUFFIXES, is_alignment_path
from msaformer.errors import AlignmentError, MsaformerError

#: Archive / compression wrappers that may surround an alignment file name.
_WRAPPERS = (".tar.gz", ".tgz", ".tar", ".gz")


@dataclass(frozen=True)
class InputItem:
    """One alignment to process, or the reason it could not be read.

    Attributes:
        ordinal: position in the whole input stream (0-based); output indexes are sorted by it.
        name: a human name: the file name without alignment suffixes (``1a3a_1_A``; for an archive member,
            the member's), plus ``#k`` for the k-th block of a multi-block file, or the shard record's name.
        source: where it came from: the file path, or for a shard record its original source followed by
            ``(shard_dir/msa-<task>-000.h5[record])``; for a database entry ``database::key``.
        msa: the alignment; ``None`` when ``error`` is set.
        error: one line saying why the alignment cannot be used (without the source, which the caller
            prefixes); ``None`` when it is fine.
    """

    ordinal: int
    name: str
    source: str
    msa: Msa | None = None
    error: str | None = None


@dataclass(frozen=True)
class InputSource:
    """One thing to read: an alignment file (``kind="file"``), a shard directory (``"shards"``) or an alignment
    database (``"database"``: ffindex, MMseqs2 or alignment_db, see :mod:`msaformer.data.databases`).

    ``key`` names it relative to the command-line argument it came from, with ``/`` separators: a file given
    directly is its file name (``x.a3m``), a file found in a directory ``d`` is ``d``'s name and the path below
    it (``msa/esm/1a3a.a3m``), a match of a pattern is its path below the pattern's fixed part
    (``alignments/1abc_A/uniref90_hits.sto`` for ``'alignments/*/*.sto'``), a database is its base name (and the
    path below the directory it was found in). Keys stay the same when the whole corpus moves, so
    ``preprocess --resume`` keys on them (with the content's SHA-256); a database's entries are keyed
    ``<key>::<entry key>``.

    ``record`` and ``chain`` are set for the files of an OpenFold / OpenProteinSet chain directory
    (:func:`is_chain_dir`): the record is named ``chain/file`` and ``--merge-per-chain`` joins a chain's files.
    """

    kind: str
    path: Path
    key: str
    record: str = ""
    chain: str = ""


#: File names OpenFold and OpenProteinSet give the alignments of a chain (besides ``*_hits.a3m`` / ``.sto``).
OPENFOLD_NAMES = frozenset({"uniclust30.a3m", "bfd_uniclust_hits.a3m", "bfd_uniref_hits.a3m", "mgnify_hits.a3m",
                            "uniref90_hits.a3m", "small_bfd_hits.sto", "uniprot_hits.sto", "pdb70_hits.hhr"})


def is_chain_dir(files: Sequence[str], subdirs: Sequence[str] = (), a3m_files: Sequence[str] = ()) -> bool:
    """Returns whether a directory is one chain of an OpenFold / OpenProteinSet alignment directory: it holds
    (directly or in its ``a3m/`` folder) an alignment named as OpenFold names them (``<db>_hits.a3m``,
    ``<db>_hits.sto``, ``uniclust30.a3m``, see ``OPENFOLD_NAMES``) or hhsearch output (``*.hhr``), or it has
    OpenProteinSet's ``a3m/`` and ``hhr/`` folders."""

    def openfold(name: str) -> bool:
        return name in OPENFOLD_NAMES or name.endswith(("_hits.a3m", "_hits.sto", ".hhr"))

    if "a3m" in subdirs and ("hhr" in subdirs or any(openfold(n) for n in a3m_files)):
        return True  # OpenProteinSet: <chain>/a3m/ and <chain>/hhr/
    return any(openfold(n) for n in files)


def alignment_suffixes() -> tuple[str, ...]:
    """Returns the file extensions recognised as alignments (the parser's list)."""
    return tuple(x.lower() for x in ALIGNMENT_SUFFIXES)


def display_name(path: Path) -> str:
    """Returns a file's name without its archive and alignment suffixes (``x.a3m.gz`` -> ``x``)."""
    base = path.name
    for wrapper in _WRAPPERS:
        if base.lower().endswith(wrapper):
            base = base[: -len(wrapper)]
            break
    stem, dot, ext = base.rpartition(".")
    if dot and stem and ("." + ext.lower()) in alignment_suffixes():
        return stem
    return base


def is_shard_dir(path: Path) -> bool:
    """Returns whether ``path`` is a directory written by ``msaformer preprocess``."""
    from msaformer.data.shards import is_shard_dir as check

    return check(path)


def _item_name(base: str, msa: Msa, path: Path) -> str:
    """Returns the name of one alignment of a file holding several: an archive member's own name
    (``run.tar.gz::a/x.a3m`` -> ``x``), and ``#k`` for the k-th block of a multi-block file."""
    tail = msa.source[len(str(path)) :] if msa.source.startswith(str(path)) else ""
    if not tail:
        return f"{base}#{msa.source or '?'}"
    if tail.startswith("::"):
        member, hash_, block = tail[2:].rpartition("#") if "#" in tail else (tail[2:], "", "")
        return display_name(Path(member)) + (f"#{block}" if hash_ else "")
    return base + tail


def _read_file(path: Path) -> list[tuple[str, str, Msa | None, str | None]]:
    """Returns (name, source, msa, error) for each alignment of one file."""
    from msaformer.data import read_alignments

    base = display_name(path)
    try:
        msas = read_alignments(path)
    except MsaformerError as exc:
        where, reason = _split_location(_one_line(exc), str(path))
        return [(base, where, None, reason)]
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:  # unreadable / corrupt files
        return [(base, str(path), None, f"cannot read ({type(exc).__name__}: {_one_line(exc)})")]
    if not msas:
        return [(base, str(path), None, "no alignment found (empty file)")]
    out = []
    for k, msa in enumerate(msas):
        name = base if len(msas) == 1 else _item_name(base, msa, path)
        if msa.depth == 0 or msa.length == 0:
            out.append((name, msa.source or str(path), None, "empty alignment"))
        else:
            out.append((name, msa.source or str(path), msa, None))
    return out


def _one_line(exc: BaseException, where: str = "") -> str:
    """Returns the first line of an error message, without a leading ``where: `` (the index names it)."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    if where and text.startswith(where + ": "):
        text = text[len(where) + 2 :]
    return text


def _split_location(text: str, path: str) -> tuple[str, str]:
    """Splits a parser message ``"<path>[#k | ::member]: reason"`` into (location, reason), so the caller's
    ``source: reason`` does not name the file twice; a message that does not start with ``path`` is kept."""
    if text.startswith(path + ": "):
        return path, text[len(path) + 2 :]
    if text.startswith((path + "#", path + "::")):
        head, sep, reason = text[len(path) :].partition(": ")
        if sep:
            return path + head, reason
    return path, text


def _iter_shard_dir(path: Path, positions=None) -> Iterator[tuple[str, str, Msa | None, str | None]]:
    """The records of a shard directory (only those at ``positions``, in order, when given)."""
    from msaformer.data import ShardReader

    reader = ShardReader(path)
    try:
        index = reader.index
        for i in range(len(reader)) if positions is None else sorted(positions):
            row = index.iloc[i]
            name = str(row.get("name", "") or f"record{i}")
            where = f"{path}/{row.get('shard', '?')}[{row.get('record', i)}]"
            original = row.get("source", "")
            source = f"{original} ({where})" if isinstance(original, str) and original else where
            try:
                msa = reader[i]
            except MsaformerError as exc:
                yield name, source, None, _one_line(exc, str(path))
                continue
            if msa.depth == 0 or msa.length == 0:
                yield name, source, None, "empty alignment"
            else:
                yield name, source, msa, None
    finally:
        reader.close()


def _label(directory: Path) -> str:
    return directory.name or directory.resolve().name or "root"


def _fixed_prefix(pattern: str) -> Path:
    """Returns the directory part of a glob pattern before its first wildcard (``.`` when there is none)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _database_files(names: set[str]) -> tuple[list[str], set[str]]:
    """Returns the database base names among a folder's file names (ffindex pairs, MMseqs2 databases; not the
    profile companions of HH-suite databases) and the file names they consume."""
    from msaformer.data.databases import is_profile_ffindex

    bases, used = [], set()
    for name in sorted(names):
        if name.endswith(".ffindex") and name[: -len(".ffindex")] + ".ffdata" in names:
            base = name[: -len(".ffindex")]
            used.update((name, base + ".ffdata"))
            if not is_profile_ffindex(base):
                bases.append(base)
        elif name.endswith(".dbtype") and name[: -len(".dbtype")] + ".index" in names:
            base = name[: -len(".dbtype")]
            used.update((name, base, base + ".index", base + ".lookup", base + ".source"))
            bases.append(base)
            k = 0
            while f"{base}.{k}" in names:
                used.add(f"{base}.{k}")
                k += 1
    return bases, used


class _Expander:
    """The state of one expansion: what has been taken so far, at the cost of the arguments (not the files)."""

    def __init__(self, exclude, unique_keys: bool) -> None:
        self.unique_keys = unique_keys
        self.excluded = os.path.realpath(exclude) if exclude is not None else None
        self.roots: list[str] = []  # directories scanned by earlier arguments (real paths)
        self.files: set[str] = set()  # files named by earlier arguments and patterns (real paths)
        self.keys: dict[str, str] = {}  # keys of files given directly -> path (two with one name are an error)

    def claim(self, label: str, real: str) -> str:
        """Returns ``label``, the key prefix of an argument's records, after checking that no other argument
        has it (its keys would collide with ours: resume could not tell them apart)."""
        other = self.keys.setdefault(label + "/", real)
        if other != real and self.unique_keys:
            raise AlignmentError(
                f"inputs {other} and {real} would both be recorded as {label!r}; rename one, or give their "
                "common parent directory"
            )
        return label

    def _under_root(self, real: str) -> bool:
        return any(real == root or real.startswith(root + os.sep) for root in self.roots)

    def take(self, path: Path, text: str, base: Path | None = None, label: str | None = None) -> Iterator[InputSource]:
        """The sources of one argument (or of one match of a pattern, keyed under ``base``)."""
        from msaformer.data.databases import open_database

        real = os.path.realpath(path)
        if self._under_root(real) or real in self.files:
            return  # reached twice: used the first time
        database = open_database(path)
        if database is not None:
            self.files.add(real)
            yield InputSource("database", path, self.claim(database.label, real) if base is None else
                              f"{label}/{_strip_db(path).relative_to(base).as_posix()}")
        elif path.is_dir():
            if self.excluded is not None and real == self.excluded:
                raise AlignmentError(f"input {text} is the output directory")
            if base is None:
                base, label = path, self.claim(_label(path), real)
            if is_shard_dir(path):
                self.files.add(real)
                yield InputSource("shards", path, label if path == base else f"{label}/{path.relative_to(base).as_posix()}")
                return
            count = 0
            for source in self.scan(path, real, base, label):
                count += 1
                yield source
            self.roots.append(real)
            if count == 0:
                raise AlignmentError(
                    f"{text}: no alignment files in this directory (looked for {', '.join(alignment_suffixes())}, "
                    "optionally .gz, .tar / .tar.gz archives, and alignment databases)"
                )
        elif path.is_file():
            self.files.add(real)
            key = path.name if base is None else f"{label}/{path.relative_to(base).as_posix()}"
            other = self.keys.setdefault(key, os.fspath(path))
            if other != os.fspath(path) and self.unique_keys:
                raise AlignmentError(
                    f"inputs {other} and {path} would both be recorded as {key!r}; give their directories instead"
                )
            yield InputSource("file", path, key)
        else:
            raise AlignmentError(f"input not found: {text} (give alignment files, directories or glob patterns)")

    def scan(self, directory: Path, real_dir: str, base: Path, label: str) -> Iterator[InputSource]:
        """Yields what a directory holds, in sorted order, keyed relative to ``base`` under ``label``."""
        from msaformer.data.databases import is_msa_database, open_database

        def key(path: Path) -> str:
            return f"{label}/{path.relative_to(base).as_posix()}"

        def real(path: Path) -> str:
            return real_dir + os.fspath(path)[len(os.fspath(directory)):]

        for top, dirs, files in os.walk(directory):
            here = Path(top)
            kept = []
            for name in sorted(dirs):
                child = here / name
                child_real = real(child)
                if name.startswith(".") or child_real == self.excluded or self._under_root(child_real):
                    continue
                if is_shard_dir(child):
                    yield InputSource("shards", child, key(child))
                else:
                    kept.append(name)
            dirs[:] = kept
            names = {n for n in files if not n.startswith(".")}
            bases, used = _database_files(names)
            if any(n.endswith(".db") for n in names):
                database = open_database(here)  # an OpenFold alignment_db: *.db + super index
                if database is not None:
                    yield InputSource("database", here, key(here) if here != base else label)
                    used.update(p.name for p in database.data_files + [database.index_file])
            for name in bases:
                if is_msa_database(here / name):  # not the sequence / profile databases beside it
                    yield InputSource("database", here / name, key(here / name))
            a3m = sorted(e.name for e in os.scandir(here / "a3m") if e.is_file()) if "a3m" in kept else []
            chain = here.name if is_chain_dir(sorted(names), kept, a3m) else ""
            if chain:
                dirs[:] = [d for d in kept if d != "a3m"]  # its a3m/ folder is read here, with the chain's name
            listing = [(here / n, n) for n in sorted(names - used)]
            listing += [(here / "a3m" / n, n) for n in a3m if not n.startswith(".")] if chain else []
            for path, name in listing:
                if not is_alignment_path(name) or real(path) in self.files:
                    continue
                if chain:
                    yield InputSource("file", path, key(path), record=f"{chain}/{name}",
                                      chain=key(here) if here != base else label)
                else:
                    yield InputSource("file", path, key(path))


def _strip_db(path: Path) -> Path:
    for suffix in (".ffindex", ".ffdata", ".index", ".dbtype"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def iter_sources(inputs: Sequence[str | os.PathLike], *, exclude: str | os.PathLike | None = None,
                 unique_keys: bool = False) -> Iterator[InputSource]:
    """Yields the sources named by ``inputs`` (see the module docstring for the rules), in argument order
    (directories in sorted order), streaming: what it keeps grows with the arguments, not with the files.

    Raises:
        AlignmentError: an input that does not exist, a pattern that matches nothing, a directory with no
            alignment files, no inputs at all; with ``unique_keys`` (``preprocess``: keys are resume keys),
            two inputs with one key.
    """
    expander = _Expander(exclude, unique_keys)
    count = 0
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if not path.exists() and glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise AlignmentError(f"input pattern {text!r} matches no files")
            base = _fixed_prefix(text)
            for hit in matches:
                for source in expander.take(Path(hit), hit, base, _label(base)):
                    count += 1
                    yield source
        else:
            for source in expander.take(path, text):
                count += 1
                yield source
    if not count:
        raise AlignmentError("no inputs given: name alignment files, directories or shard directories")


def expand_inputs(inputs: Sequence[str | os.PathLike], *, exclude: str | os.PathLike | None = None,
                  unique_keys: bool = False) -> list[InputSource]:
    """Returns :func:`iter_sources` as a list."""
    return list(iter_sources(inputs, exclude=exclude, unique_keys=unique_keys))


def _iter_database(path: Path) -> Iterator[tuple[str, str, Msa | None, str | None]]:
    from msaformer.data.databases import close_handles, open_database

    try:
        db = open_database(path)
    except MsaformerError as exc:
        yield _label(path), str(path), None, _one_line(exc, str(path))
        return
    handles: dict = {}
    try:
        for entry in db.entries():
            where = db.entry_source(entry)
            try:
                msas = db.parse(entry, db.read(entry, handles))
            except MsaformerError as exc:
                yield entry.key, where, None, _one_line(exc, where)
                continue
            for k, msa in enumerate(msas):
                name = entry.key if len(msas) == 1 else f"{entry.key}#{k}"
                if msa.depth == 0 or msa.length == 0:
                    yield name, msa.source, None, "empty alignment"
                else:
                    yield name, msa.source, msa, None
    finally:
        close_handles(handles)


def source_records(source: InputSource, positions=None) -> Iterator[tuple[int, str, str, Msa | None, str | None]]:
    """Yields ``(position, name, where, msa or None, error or None)`` for the alignments of one input source, as
    :func:`iter_inputs` names them; with ``positions`` (a set) only those (a shard directory then reads only
    those records)."""
    path = source.path
    if source.kind == "shards":
        order = sorted(positions) if positions is not None else itertools.count()
        for i, record in zip(order, _iter_shard_dir(path, positions)):
            yield (i, *record)
        return
    if source.kind == "database":
        records = _iter_database(path)
    else:
        records = _read_file(path)
        if source.record:
            records = ((source.record + name[len(display_name(path)):], *rest) for name, *rest in records)
    for i, record in enumerate(records):
        if positions is None or i in positions:
            yield (i, *record)


def iter_inputs(inputs: Sequence[str | Path], *, exclude: str | os.PathLike | None = None) -> Iterator[InputItem]:
    """Yields every alignment of the inputs, in order, one file (shard record, database entry) at a time."""
    ordinal = 0
    for source in iter_sources(inputs, exclude=exclude):
        for _, name, where, msa, error in source_records(source):
            yield InputItem(ordinal, name, where, msa, error)
            ordinal += 1


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


class UniqueNames:
    """Turns record names into HDF5 / file-system safe names, unique within one output."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, name: str) -> str:
        """Returns ``name`` with unsafe characters replaced by ``_`` and a ``_2``, ``_3``... suffix if taken."""
        safe = _UNSAFE.sub("_", name).strip("._") or "msa"
        candidate, k = safe, 1
        while candidate in self._seen:
            k += 1
            candidate = f"{safe}_{k}"
        self._seen.add(candidate)
        return candidate
