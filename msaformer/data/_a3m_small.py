"""The A3M reader for small files: a few C-level ``bytes`` calls per record instead of numpy calls per file.

The vectorised reader (:mod:`msaformer.data._a3m`) costs a few hundred numpy calls whatever the file's size:
most of the time of a 20 KB file (and of a database entry of a few hundred bytes). This reader splits lines,
deletes insertions and padding with ``bytes.translate`` and finds insertion runs only in rows that have any,
so its cost is a few microseconds per record. It takes only plain files -- one alignment (no NUL), a query with
uppercase columns (hh-suite pseudo-sequences are skipped), every byte of a sequence line allowed, every row of the
query's width -- and gives exactly the vectorised reader's result for them; for anything else (including every
error) it returns None and the vectorised reader runs, so messages are the same whichever reader would have
been used.
"""

from __future__ import annotations

import re

import numpy as np

from msaformer.data._a3m import PSEUDO_PREFIXES, decode_text

_LOWER = bytes(range(97, 123))
_PADDING = b".* \t\r\n\v\f"  # dropped from sequence lines: not columns, not insertions
_COLUMN_BYTES = bytes(range(65, 91)) + b"-"
_PSEUDO = tuple(p.encode() for p in PSEUDO_PREFIXES)
_SPACE = (b" ", b"\t", b"\r", b"\v", b"\f")
_RUN = re.compile(rb"[a-z]+")
_LOOP_BYTES = 4096  # below this, insertion counts come from a loop over runs (fewer calls than numpy's way)


def parse_plain(data: bytes, source: str) -> list[tuple] | None:
    """Returns ``[(source, names, tokens, deletions, metadata)]`` for a plain A3M / FASTA file, or None when the
    file needs the vectorised reader (see the module docstring)."""
    if b"\x00" in data or b"\x01" in data:
        return None
    if data[:1] == b">":
        preamble, records = b"", data[1:].split(b"\n>")
    else:
        preamble, _, rest = data.partition(b"\n>")
        if not rest:
            return None  # no header: the error path
        records = rest.split(b"\n>")
    metadata = []
    for line in preamble.split(b"\n") if preamble else ():
        if line[:1] == b"#":
            metadata.append(decode_text(line[1:]).strip())
        elif line.strip(b" \t\r\n\v\f"):
            return None  # sequence data before the first header: the error path
    names, sequences = [], []
    for record in records:
        header, _, sequence = record.partition(b"\n")
        if header[:3] in _PSEUDO:
            continue  # an hh-suite pseudo-sequence (>ss_pred, >ss_conf, ...): skipped, wherever it is
        name = decode_text(header).strip()
        if header[:1] in _SPACE and name.startswith(PSEUDO_PREFIXES):
            continue  # '> ss_pred'
        names.append(name)
        sequences.append(sequence)
    if not names:
        return None  # only pseudo-sequences: the error path
    # all records at once: padding out, then insertions out; \x01 separates the records (it is refused above)
    joined = b"\x01".join(sequences).translate(None, _PADDING)
    aligned = joined.translate(None, _LOWER)
    if aligned.translate(None, _COLUMN_BYTES + b"\x01"):
        return None  # a comment line inside a record, or a byte that is not allowed: the vectorised reader
    n = len(names)
    width = aligned.find(b"\x01") if n > 1 else len(aligned)
    if width <= 0 or len(aligned) != n * (width + 1) - 1 or aligned[:width].translate(None, b"-") == b"":
        return None  # an empty or all-lowercase query, or (perhaps) ragged rows: the vectorised reader
    grid = np.frombuffer(aligned + b"\x01", dtype=np.uint8).reshape(n, width + 1)
    if n > 1 and not (grid[:, width] == 1).all():
        return None  # ragged rows that happen to add up
    tokens = np.array(grid[:, :width])  # a writable copy
    if len(aligned) == len(joined):
        deletions = np.zeros((n, width), dtype=np.uint8)
    elif len(joined) < _LOOP_BYTES:
        deletions = deletions_by_runs(joined, n, width)
    else:
        deletions = deletions_vectorised(joined, n, width)
    return [(source, names, tokens, deletions, tuple(metadata))]


def deletions_by_runs(joined: bytes, n: int, width: int) -> np.ndarray:
    """The insertion counts of ``joined`` (the records' columns and lowercase insertions, ``\\x01`` between
    records) by a loop over its runs of lowercase letters: cheapest for a small file."""
    counts = [0] * (n * width)
    row, row_start, inserted = 0, 0, 0
    for run in _RUN.finditer(joined):
        start, end = run.span()
        while True:  # the record the run is in
            boundary = joined.find(b"\x01", row_start, start)
            if boundary < 0:
                break
            row, row_start, inserted = row + 1, boundary + 1, 0
        column = start - row_start - inserted  # the aligned byte the run comes before
        inserted += end - start
        if column < width:  # insertions after the last column are dropped
            counts[row * width + column] = min(counts[row * width + column] + end - start, 255)
    return np.array(counts, dtype=np.uint8).reshape(n, width)


def deletions_vectorised(joined: bytes, n: int, width: int) -> np.ndarray:
    """The same as :func:`deletions_by_runs`, all lowercase bytes at once: a byte's column is its offset in its
    record minus the lowercase bytes before it in the record; bytes after the last column are dropped."""
    flat = np.frombuffer(joined, dtype=np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(flat == 1) + 1))
    lower = np.flatnonzero((flat - np.uint8(97)) < 26)
    row = np.searchsorted(starts, lower, side="right") - 1
    before = np.arange(lower.size) - np.searchsorted(lower, starts)[row]
    column = lower - starts[row] - before
    keep = column < width
    counts = np.bincount(row[keep] * width + column[keep], minlength=n * width)
    return np.minimum(counts, 255).astype(np.uint8).reshape(n, width)
