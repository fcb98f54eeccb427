"""Streams the alignments named on a command line: files, directories of files, and shard directories.

Every input becomes a sequence of :class:`InputItem`, one per alignment, in command-line order. A file that
cannot be read is not an exception here: it becomes an item whose ``error`` says why, so a batch job can
record it in its index and carry on (``--on-error skip``) or stop naming it (``--on-error fail``).
Alignments are read one file (or one shard record) at a time, so memory does not grow with the input count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError

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


def alignment_suffixes() -> tuple[str, ...]:
    """Returns the file extensions recognised as alignments (the parser's list)."""
    from msaformer.data.parsers import ALIGNMENT_SUFFIXES

    return tuple(s.lower() for s in ALIGNMENT_SUFFIXES)


def is_alignment_file(path: Path) -> bool:
    """Returns whether a file name looks like an alignment (possibly gzipped or in a tar archive)."""
    from msaformer.data.parsers import is_alignment_path

    return is_alignment_path(path.name)


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
    """Returns whether a directory holds msaformer shards (an ``index.csv`` next to ``msa-*.h5`` files)."""
    return path.is_dir() and (path / "index.csv").is_file() and any(path.glob("msa-*.h5"))


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


def expand_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """Returns ``("file" | "shards", path)`` for each thing to read, directories expanded (sorted, recursive).

    Raises:
        MsaformerError: an input that does not exist, or a directory with no alignment files in it.
    """
    out: list[tuple[str, Path]] = []
    for raw in inputs:
        path = Path(raw)
        if is_shard_dir(path):
            out.append(("shards", path))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_alignment_file(p))
            if not files:
                raise MsaformerError(
                    f"{path}: no alignment files in this directory (looked for {', '.join(alignment_suffixes())}, "
                    "optionally .gz / .tar.gz)"
                )
            out.extend(("file", p) for p in files)
        elif path.is_file():
            out.append(("file", path))
        else:
            raise MsaformerError(f"input not found: {path}")
    if not out:
        raise MsaformerError("no inputs given: name alignment files, directories or shard directories")
    return out


def iter_inputs(inputs: Sequence[str | Path]) -> Iterator[InputItem]:
    """Yields every alignment of the inputs, in order, one file (or shard record) read at a time."""
    ordinal = 0
    for kind, path in expand_inputs(inputs):
        records = _iter_shard_dir(path) if kind == "shards" else _read_file(path)
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
