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
            ``(shard_dir/msa-00000.h5[record])``.
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
    """One thing to read: an alignment file (``kind="file"``) or a shard directory (``kind="shards"``).

    ``key`` names it relative to the command-line argument it came from, with ``/`` separators: a file given
    directly is its file name (``x.a3m``), a file found in a directory ``d`` is ``d``'s name and the path below
    it (``msa/esm/1a3a.a3m``), a match of a pattern is its path below the pattern's fixed part
    (``alignments/1abc_A/uniref90_hits.sto`` for ``'alignments/*/*.sto'``). Keys stay the same when the whole
    corpus moves, so ``preprocess --resume`` keys on them (with the content's SHA-256).
    """

    kind: str
    path: Path
    key: str


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


def _iter_shard_dir(path: Path) -> Iterator[tuple[str, str, Msa | None, str | None]]:
    from msaformer.data import ShardReader

    reader = ShardReader(path)
    try:
        index = reader.index
        for i in range(len(reader)):
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


def expand_inputs(inputs: Sequence[str | os.PathLike], *, exclude: str | os.PathLike | None = None) -> list[InputSource]:
    """Returns the sources named by ``inputs`` (see the module docstring for the rules), in argument order
    (directories in sorted order).

    Raises:
        AlignmentError: an input that does not exist, a pattern that matches nothing, a directory with no
            alignment files, or no inputs at all.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: dict[Path, InputSource] = {}

    def add(kind: str, path: Path, key: str) -> None:
        found.setdefault(path.resolve(), InputSource(kind, path, key))

    def scan(directory: Path, base: Path, label: str) -> int:
        """Adds what a directory holds, keyed relative to ``base`` under ``label``."""
        count = 0
        for top, dirs, files in os.walk(directory):
            here = Path(top)
            kept = []
            for name in sorted(dirs):
                child = here / name
                if name.startswith(".") or child.resolve() == excluded:
                    continue
                if is_shard_dir(child):
                    add("shards", child, f"{label}/{child.relative_to(base).as_posix()}")
                    count += 1
                else:
                    kept.append(name)
            dirs[:] = kept
            for name in sorted(files):
                if not name.startswith(".") and is_alignment_path(name):
                    add("file", here / name, f"{label}/{(here / name).relative_to(base).as_posix()}")
                    count += 1
        return count

    def take(path: Path, text: str, base: Path | None = None, label: str | None = None) -> None:
        """Adds one argument (or one match of a pattern, keyed under ``base``)."""
        if path.is_dir():
            if excluded is not None and path.resolve() == excluded:
                raise AlignmentError(f"input {text} is the output directory")
            if base is None:
                base, label = path, _label(path)
            if is_shard_dir(path):
                add("shards", path, label if path == base else f"{label}/{path.relative_to(base).as_posix()}")
            elif scan(path, base, label) == 0:
                raise AlignmentError(
                    f"{text}: no alignment files in this directory (looked for {', '.join(alignment_suffixes())}, "
                    "optionally .gz, and .tar / .tar.gz archives)"
                )
        elif path.is_file():
            add("file", path, path.name if base is None else f"{label}/{path.relative_to(base).as_posix()}")
        else:
            raise AlignmentError(f"input not found: {text} (give alignment files, directories or glob patterns)")

    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if not path.exists() and glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise AlignmentError(f"input pattern {text!r} matches no files")
            base = _fixed_prefix(text)
            for hit in matches:
                take(Path(hit), hit, base, _label(base))
        else:
            take(path, text)
    if not found:
        raise AlignmentError("no inputs given: name alignment files, directories or shard directories")
    return list(found.values())


def iter_inputs(inputs: Sequence[str | Path], *, exclude: str | os.PathLike | None = None) -> Iterator[InputItem]:
    """Yields every alignment of the inputs, in order, one file (or shard record) read at a time."""
    ordinal = 0
    for source in expand_inputs(inputs, exclude=exclude):
        path = source.path
        records = _iter_shard_dir(path) if source.kind == "shards" else _read_file(path)
        for name, source, msa, error in records:
            yield InputItem(ordinal, name, source, msa, error)
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
