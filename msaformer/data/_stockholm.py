"""Stockholm reader: one alignment (``# STOCKHOLM`` ... ``//``) in, arrays out.

Sequence lines are ``name<whitespace>aligned-text``; lines of the same name in later blocks are appended
(interleaved files). The raw ``[N, W]`` matrix is then reduced with numpy: the aligned columns are those where
the query (first sequence) has a residue, both ``-`` and ``.`` are gaps, rows are uppercased, and residues of
other rows in the query's gap columns are counted as deletions on the next kept column.
"""

from __future__ import annotations

import numpy as np

from msaformer.data._a3m import _is_letter, _Rank, decode_text, describe_byte
from msaformer.errors import AlignmentError

_DELETE_WS = b" \t\r\v\f"
_ROW_CHUNK_BYTES = 4 << 20


def split_stockholm(data: bytes) -> list[tuple[bytes, int]]:
    """Return the alignments of a Stockholm file as ``(text, first_line)`` pairs (split at ``//`` lines)."""
    pieces = []
    start = pos = 0
    line = 1
    while True:
        if data.startswith(b"//", pos):  # pos is always the start of a line
            at = pos
        else:
            found = data.find(b"\n//", pos)
            if found == -1:
                break
            at = found + 1
        pieces.append((data[start:at], line))
        newline = data.find(b"\n", at)
        stop = len(data) if newline == -1 else newline + 1
        line += data.count(b"\n", start, stop)
        start = pos = stop
    rest = data[start:]
    if rest.strip() or not pieces:
        pieces.append((rest, line))
    return pieces


def parse_stockholm(data: bytes, where: str, first_line: int = 1):
    """Return ``(names, tokens [N, L] uint8, deletions [N, L] uint8, metadata)`` of one Stockholm alignment."""
    rows = _rows_vectorised(data, where, first_line)
    if rows is None:  # irregular layout (rows missing from a block, reordered, indented lines)
        rows = _rows_by_line(data, where, first_line)
    names, raw, metadata = rows
    letter = _is_letter(raw)
    valid = letter | (raw == 45) | (raw == 46) | (raw == 42)
    if not valid.all():
        r, c = (int(v[0]) for v in np.nonzero(~valid))
        raise AlignmentError(
            f"{where}: record {r + 1} ('{names[r]}'): invalid character {describe_byte(raw[r, c])} "
            "in the aligned sequence (allowed: letters, '-', '.', '*')"
        )
    columns = np.flatnonzero(letter[0])
    if columns.size == 0:
        raise AlignmentError(f"{where}: the query ('{names[0]}') has no residues")

    tokens = raw[:, columns]  # a copy: uppercase it, and make '.' and '*' gaps
    np.subtract(tokens, 32, out=tokens, where=(tokens - np.uint8(97)) < 26)
    np.putmask(tokens, (tokens == 46) | (tokens == 42), 45)
    deletions = np.zeros(tokens.shape, dtype=np.uint8)
    # Residues in the query's gap columns count on the next kept column; those after the last are dropped.
    # Summing over [columns[j - 1], columns[j]) (kept columns masked out) gives column j's deletions.
    if columns.size < raw.shape[1]:
        last = int(columns[-1]) + 1
        bounds = np.concatenate(([0], columns[:-1]))
        outside = np.ones(last, dtype=bool)
        outside[columns] = False
        step = max(1, _ROW_CHUNK_BYTES // last)  # bound the temporaries
        for r0 in range(0, raw.shape[0], step):
            inserted = letter[r0 : r0 + step, :last] & outside
            if inserted.any():
                counts = np.add.reduceat(inserted, bounds, axis=1, dtype=np.int32)
                np.minimum(counts, 255, out=counts)
                deletions[r0 : r0 + step] = counts
    return names, tokens, deletions, metadata


def _ragged(where: str, record: int, name: str, line: int, found: int, width: int) -> AlignmentError:
    return AlignmentError(
        f"{where}: record {record + 1} ('{name}', line {line}) is {found} characters wide, expected {width} like "
        "the query; Stockholm rows must all have the same width"
    )


def _no_sequence(where: str, line: int, name: bytes) -> AlignmentError:
    return AlignmentError(
        f"{where}: line {line}: Stockholm sequence line {decode_text(name[:40])!r} has a name but no aligned sequence"
    )


def _rows_by_line(data: bytes, where: str, first_line: int):
    """Return ``(names, raw [N, W] uint8, metadata)``, reading line by line (any valid layout)."""
    order: dict[bytes, list[bytes]] = {}
    first_seen: dict[bytes, int] = {}
    metadata: list[str] = []
    for number, line in enumerate(data.split(b"\n"), start=first_line):
        if not line or line[0] == 35:  # '#': header, #=GF/#=GS/#=GR/#=GC markup
            if not order and line.startswith((b"# ", b"#=GF")):
                metadata.append(decode_text(line[1:]).strip())
            continue
        parts = line.split(None, 1)
        if not parts:
            continue  # blank line between blocks
        if len(parts) == 1:
            raise _no_sequence(where, number, parts[0])
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
    keys = list(order)
    names = [decode_text(key).strip() for key in keys]
    rows = [b"".join(order[key]) for key in keys]
    width = len(rows[0])
    for k, text in enumerate(rows):
        if len(text) != width:
            raise _ragged(where, k, names[k], first_seen[keys[k]], len(text), width)
    raw = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width)
    return names, raw, tuple(metadata)


def _rows_vectorised(data: bytes, where: str, first_line: int):
    """Return ``(names, raw [N, W] uint8, metadata)`` with numpy, or None if the layout is not the regular one.

    Regular: every block lists the same names in the same order, which is how HMMER, Pfam and most tools write
    Stockholm. Each block is then a ``[N, w_b]`` slab of the sequence bytes, and the rows are the slabs side by
    side. Python touches each row of the first block once (a dict lookup of its name); the names of later
    blocks are compared with numpy.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    n = arr.size
    if n == 0:
        raise AlignmentError(f"{where}: no sequences found in the Stockholm alignment")
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.append(newlines, n)  # line i is arr[starts[i]:ends[i]], without its newline
    if starts[-1] == n:
        starts, ends = starts[:-1], ends[:-1]
    first = arr[np.minimum(starts, n - 1)]
    first[starts == ends] = 10
    space = (arr == 32) | (arr == 9) | (arr == 13) | (arr == 11) | (arr == 12)
    blank_start = space[np.minimum(starts, n - 1)] | (first == 10)
    sequence = ~blank_start & (first != 35)
    blank = np.flatnonzero(blank_start)
    if blank.size:  # lines that start with whitespace must be blank
        lengths = ends[blank] - starts[blank]
        spaces = _Rank(space)
        if np.any(spaces(ends[blank]) - spaces(starts[blank]) != lengths):
            return None
    lines = np.flatnonzero(sequence)
    if lines.size == 0:
        raise AlignmentError(f"{where}: no sequences found in the Stockholm alignment")
    line_starts, line_ends = starts[lines], ends[lines]
    gaps = np.append(np.flatnonzero(space), n)  # a name ends at the first whitespace after the line start
    name_ends = np.minimum(gaps[np.searchsorted(gaps, line_starts)], line_ends)

    # Rows by name: the first block in Python (until a name repeats), then every later line is checked, with
    # numpy, to carry the name of the line N places before it.
    index: dict[bytes, int] = {}
    for s, e in zip(line_starts.tolist(), name_ends.tolist()):
        key = data[s:e]
        if key in index:
            break
        index[key] = len(index)
    n_rows = len(index)
    if lines.size % n_rows:
        return None
    name_lengths = name_ends - line_starts
    if lines.size > n_rows:
        if np.any(name_lengths.reshape(-1, n_rows) != name_lengths[:n_rows]):
            return None
        span = np.arange(int(name_lengths.max()))
        name_bytes = arr[np.minimum(line_starts[:, None] + span, n - 1)]
        name_bytes[span >= name_lengths[:, None]] = 0
        name_bytes = name_bytes.reshape(-1, n_rows, span.size)
        if np.any(name_bytes != name_bytes[:1]):
            return None

    # Sequence bytes: after the name, up to the end of the line, whitespace removed.
    flags = np.zeros((starts.size, 2), dtype=bool)
    flags[lines, 1] = True
    bounds = np.zeros((starts.size, 2), dtype=np.int64)
    bounds[:, 0] = starts
    bounds[lines, 0] = name_ends
    segment = np.diff(np.append(np.column_stack((starts, bounds[:, 0])).ravel(), n))
    content = np.repeat(flags.ravel(), segment)
    content &= ~space
    content &= arr != 10
    rank = _Rank(content)
    counts = rank(line_ends) - rank(name_ends)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        k = int(lines[empty[0]])
        raise _no_sequence(where, k + first_line, data[starts[k] : name_ends[empty[0]]])
    keys = list(index)
    names = [decode_text(key).strip() for key in keys]
    per_block = counts.reshape(-1, n_rows)  # [blocks, rows]
    totals = per_block.sum(axis=0)
    bad = np.flatnonzero(totals != totals[0])
    if bad.size:
        k = int(bad[0])
        raise _ragged(where, k, names[k], int(lines[k]) + first_line, int(totals[k]), int(totals[0]))
    if np.any(per_block != per_block[:, :1]):
        return None  # equal totals but uneven blocks: let the line reader join them
    flat = arr[content]
    widths = per_block[:, 0]
    offsets = np.concatenate(([0], np.cumsum(widths * n_rows)))
    raw = np.concatenate(
        [flat[o : o + n_rows * w].reshape(n_rows, w) for o, w in zip(offsets.tolist(), widths.tolist())], axis=1
    )
    # File-level markup before the first sequence: the '# STOCKHOLM' header and #=GF lines (not #=GS).
    head = starts[: int(lines[0])]
    after = arr[np.minimum(head[:, None] + np.arange(1, 4), n - 1)]  # the 3 bytes after '#'
    gf = (after[:, 0] == ord("=")) & (after[:, 1] == ord("G")) & (after[:, 2] == ord("F"))
    marked = (first[: head.size] == ord("#")) & ((after[:, 0] == ord(" ")) | gf)
    metadata = tuple(decode_text(data[starts[i] + 1 : ends[i]]).strip() for i in np.flatnonzero(marked).tolist())
    return names, raw, metadata
