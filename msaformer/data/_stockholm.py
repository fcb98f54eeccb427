"""Stockholm reader: one alignment (``# STOCKHOLM`` ... ``//``) in, arrays out.

Sequence lines are ``name<whitespace>aligned-text``; lines of the same name in later blocks are appended
(interleaved files). The raw ``[N, W]`` matrix is then reduced with numpy: the aligned columns are those where
the query (first sequence) has a residue, both ``-`` and ``.`` are gaps, rows are uppercased, and residues of
other rows in the query's gap columns are counted as deletions on the next kept column.
"""

from __future__ import annotations

import re

import numpy as np

from msaformer.data._a3m import TO_ALIGNED, decode_text, describe_byte
from msaformer.errors import AlignmentError

_UPPER = np.frombuffer(bytes(range(65, 91)), dtype=np.uint8)
_LOWER = np.frombuffer(bytes(range(97, 123)), dtype=np.uint8)
_IS_RESIDUE = np.zeros(256, dtype=bool)
_IS_RESIDUE[_UPPER] = True
_IS_RESIDUE[_LOWER] = True
_IS_VALID = _IS_RESIDUE.copy()
_IS_VALID[np.frombuffer(b"-.*", dtype=np.uint8)] = True
_TO_TOKEN = TO_ALIGNED.copy()
_TO_TOKEN[ord("*")] = ord("-")  # a stop in a gap-like position: not a residue, so a gap
_DELETE_WS = b" \t\r\v\f"
_ROW_CHUNK_BYTES = 4 << 20
_END = re.compile(rb"^//[^\n]*", re.M)  # the end-of-alignment line


def split_stockholm(data: bytes) -> list[tuple[bytes, int]]:
    """Return the alignments of a Stockholm file as ``(text, first_line)`` pairs (split at ``//`` lines)."""
    pieces = []
    start, line = 0, 1
    for match in _END.finditer(data):
        pieces.append((data[start : match.start()], line))
        line += data.count(b"\n", start, match.end()) + 1
        start = match.end() + 1
    rest = data[start:]
    if rest.strip() or not pieces:
        pieces.append((rest, line))
    return pieces


def parse_stockholm(data: bytes, where: str, first_line: int = 1):
    """Return ``(names, tokens [N, L] uint8, deletions [N, L] uint8, metadata)`` of one Stockholm alignment."""
    order: dict[bytes, list[bytes]] = {}
    first_seen: dict[bytes, int] = {}
    metadata: list[str] = []
    for number, line in enumerate(data.split(b"\n"), start=first_line):
        if not line or line[0] == 35:  # '#': header, #=GF/#=GS/#=GR/#=GC markup
            if line and not order:
                metadata.append(decode_text(line[1:]).strip())
            continue
        parts = line.split(None, 1)
        if not parts:
            continue  # blank line between blocks
        if len(parts) == 1:
            raise AlignmentError(
                f"{where}: line {number}: Stockholm sequence line {decode_text(parts[0][:40])!r} has a name "
                "but no aligned sequence"
            )
        name, text = parts
        text = text.translate(None, _DELETE_WS)
        segments = order.get(name)
        if segments is None:
            order[name] = [text]
            first_seen[name] = number
        else:
            segments.append(text)
    if not order:
        raise AlignmentError(f"{where}: no sequences found in the Stockholm alignment")

    names = list(order)
    rows = [b"".join(order[name]) for name in names]
    width = len(rows[0])
    for k, text in enumerate(rows):
        if len(text) != width:
            raise AlignmentError(
                f"{where}: record {k + 1} ('{decode_text(names[k])}', line {first_seen[names[k]]}) is "
                f"{len(text)} characters wide, expected {width} like the query; Stockholm rows must all have "
                "the same width"
            )
    raw = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width)
    valid = _IS_VALID[raw]
    if not valid.all():
        r, c = (int(v[0]) for v in np.nonzero(~valid))
        raise AlignmentError(
            f"{where}: record {r + 1} ('{decode_text(names[r])}'): invalid character {describe_byte(raw[r, c])} "
            "in the aligned sequence (allowed: letters, '-', '.', '*')"
        )
    columns = np.flatnonzero(_IS_RESIDUE[raw[0]])
    if columns.size == 0:
        raise AlignmentError(f"{where}: the query ('{decode_text(names[0])}') has no residues")

    tokens = _TO_TOKEN[raw[:, columns]]
    deletions = np.zeros(tokens.shape, dtype=np.uint8)
    if columns.size < width:
        # Residues outside the query's columns: running count per row, read at the kept columns.
        step = max(1, _ROW_CHUNK_BYTES // width)
        gap_columns = np.ones(width, dtype=bool)
        gap_columns[columns] = False
        for r0 in range(0, raw.shape[0], step):
            block = raw[r0 : r0 + step]
            inserted = _IS_RESIDUE[block] & gap_columns
            if not inserted.any():
                continue
            seen = np.cumsum(inserted, axis=1, dtype=np.int32)[:, columns]
            gaps = np.diff(seen, axis=1, prepend=0)
            np.minimum(gaps, 255, out=gaps)
            deletions[r0 : r0 + step] = gaps
    return [decode_text(name).strip() for name in names], tokens, deletions, tuple(metadata)
