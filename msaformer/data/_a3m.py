"""Vectorised A3M / A2M / aligned-FASTA reader: a whole file (all its NUL-separated blocks) in, arrays out.

The file is scanned with numpy, all blocks at once: newline (and NUL) offsets give the lines, the first byte of
each line gives its kind (``>`` header, ``#`` comment, sequence), NUL offsets give the block of every line. Each
block's query width is read first (from the query records only); then records are processed in groups of about
a megabyte, across block boundaries, so a file of thousands of tiny ColabFold blocks costs the same few hundred
numpy calls as one big alignment. In a group, sequence bytes are classified with a few SIMD comparisons
(uppercase / ``-`` = aligned column, lowercase = insertion; anything else is checked only where it occurs,
which is rare), aligned bytes are gathered straight into one flat token buffer in which every block's
``[N, L]`` matrix is a contiguous slice, and a rank structure over the bit-packed aligned mask gives every
record's aligned length and, read at the start of each run of lowercase bytes, the column that run of
insertions belongs to. Python does O(1) work per record (its name) and per block (its result tuple).
"""

from __future__ import annotations

import re

import numpy as np

from msaformer.errors import AlignmentError

PSEUDO_PREFIXES = ("ss_", "sa_", "aa_")  # hh-suite pseudo-sequences (>ss_pred, >ss_conf, >ss_dssp, >sa_*, >aa_*)
# Records are parsed in groups of about this many bytes (None: 1 MiB where the process keeps freed memory, see
# msaformer.allocator, else 128 KiB, so that the temporaries stay below glibc's mmap threshold and are reused).
_CHUNK_BYTES: int | None = None


def _chunk_bytes() -> int:
    from msaformer.allocator import keeps_freed_memory

    return _CHUNK_BYTES or (1 << 20 if keeps_freed_memory() else 1 << 17)
_SMALL_BYTES = 96 << 10  # plain files up to this size are read by _a3m_small (fewer calls per file)

# Bytes allowed in sequence lines besides letters, '-' and '\n': dropped ('.', '*'), whitespace, and NUL (which
# only ever occurs as the terminator of a block's last line).
_ALLOWED_OTHER = np.zeros(256, dtype=bool)
_ALLOWED_OTHER[np.frombuffer(b".* \t\r\v\f\x00", dtype=np.uint8)] = True
_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[np.frombuffer(b" \t\r\n\v\f", dtype=np.uint8)] = True
# Header edge bytes after which str.strip() might change a name (ASCII whitespace, \x1c-\x1f, non-ASCII).
_MAY_STRIP = _IS_SPACE.copy()
_MAY_STRIP[0x1C:0x20] = True
_MAY_STRIP[0x80:] = True
# Uppercase letters, turn '.' into '-', leave everything else as is (all-lowercase alignments).
TO_ALIGNED = np.arange(256, dtype=np.uint8)
TO_ALIGNED[97:123] -= 32
TO_ALIGNED[ord(".")] = ord("-")

A3mResult = tuple  # (label, names, tokens [N, L] uint8, deletions [N, L] uint8, metadata)


#: Whitespace between two line ends, at least this long, is collapsed to one line end before parsing: the
#: per-line arrays would otherwise cost tens of bytes for every blank line (a file of newlines, a padded download).
_BLANK_RUN_BYTES = 64
_BLANK_RUNS = re.compile(rb"\n[ \t\r\n\v\f]{%d,}\n" % (_BLANK_RUN_BYTES - 2))


class _LineMap:
    """Line ends removed by :func:`collapse_blank_runs`, so that line numbers still count the original file's
    lines: ``removed(pos)`` is how many line ends were removed before byte ``pos`` of the collapsed data."""

    def __init__(self, positions: np.ndarray, removed: np.ndarray, offset: int = 0, base: int = 0) -> None:
        self.positions, self.cumulative, self.offset, self.base = positions, removed, offset, base

    def removed(self, pos: int) -> int:
        k = int(np.searchsorted(self.positions, self.offset + int(pos), side="right")) - 1
        return (int(self.cumulative[k]) if k >= 0 else 0) - self.base

    def shifted(self, lo: int) -> "_LineMap":
        """The map of the collapsed data from byte ``lo`` on."""
        return _LineMap(self.positions, self.cumulative, self.offset + int(lo), self.base + self.removed(lo))


def collapse_blank_runs(data: bytes) -> tuple[bytes, "_LineMap | None"]:
    """Returns ``data`` with long runs of blank lines collapsed to one line end (they hold nothing an A3M
    reader keeps), and the map that restores line numbers (None when nothing was collapsed)."""
    if b"\n\n" not in data and b"\n\r\n" not in data and b"\n " not in data and b"\n\t" not in data:
        return data, None
    pieces, positions, removed = [], [], []
    at = kept = gone = 0
    for match in _BLANK_RUNS.finditer(data):
        start, end = match.span()
        pieces.append(data[at : start + 1])  # up to and including the run's first line end
        kept += start + 1 - at
        gone += data.count(b"\n", start + 1, end)
        positions.append(kept)
        removed.append(gone)
        at = end
    if not positions:
        return data, None
    pieces.append(data[at:])
    return b"".join(pieces), _LineMap(np.array(positions, dtype=np.int64), np.array(removed, dtype=np.int64))


class BlockError(AlignmentError):
    """An :class:`AlignmentError` that knows which NUL-separated block it is in (``block``: the 0-based index of
    the raw block, blank blocks counted)."""

    def __init__(self, message: str, block: int) -> None:
        super().__init__(message)
        self.block = block

    def __reduce__(self):
        return (BlockError, (str(self), self.block))


def describe_byte(value: int) -> str:
    """Return a printable description of one byte for error messages."""
    value = int(value)
    return repr(chr(value)) if 32 <= value < 127 else f"byte 0x{value:02x}"


def decode_text(raw: bytes) -> str:
    """Decode header / comment bytes; undecodable bytes become U+FFFD instead of raising."""
    return raw.decode("utf-8", errors="replace")


def _is_upper(sub: np.ndarray) -> np.ndarray:
    return (sub - np.uint8(65)) < 26  # uint8 arithmetic wraps, so one comparison checks 'A' <= b <= 'Z'


def _is_letter(sub: np.ndarray) -> np.ndarray:
    return ((sub | np.uint8(32)) - np.uint8(97)) < 26


def _first_invalid(sub: np.ndarray, keep: np.ndarray, letter: np.ndarray, dash: np.ndarray) -> int | None:
    """Return the offset of the first kept byte that is not allowed in a sequence line, or None."""
    ok = np.logical_or(letter, dash)
    ok |= np.equal(sub, 10, out=np.empty(sub.size, dtype=bool))
    other = np.greater(keep, ok, out=ok)  # anything else is rare: check it sparsely
    if other.any():
        where = np.flatnonzero(other)
        bad = where[~_ALLOWED_OTHER[sub[where]]]
        if bad.size:
            return int(bad[0])
    return None


def _concat_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(indices of all ranges [lo, hi) concatenated, offsets of each range in them)``."""
    lengths = hi - lo
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.arange(offsets[-1]) + np.repeat(lo - offsets[:-1], lengths), offsets


def parse_a3m(data: bytes, source: str = "", where: str = "input") -> list[A3mResult]:
    """Return ``(label, names, tokens, deletions, metadata)`` for every NUL-separated block of an A3M/FASTA file.

    ``label`` is ``source`` plus ``#k`` (0-based, blank blocks not counted) when the file holds more than one
    block. Raises AlignmentError with the first error of the first bad block, as if that block were a file of
    its own (``where`` names the input in messages when ``source`` is empty). Time is linear in the file, the
    error path included.
    """
    if len(data) <= _SMALL_BYTES:
        from msaformer.data._a3m_small import parse_plain

        plain = parse_plain(data, source)
        if plain is not None:
            return plain
    parser = A3mFile.of_file(data)
    n = parser.n_blocks
    labels = [f"{source}#{k}" if n > 1 else source for k in range(n)]
    try:
        return parser.parse(labels, where)
    except BlockError as exc:
        if n < 2:
            raise
        raise _first_error(parser, labels, where, exc) from None


def iter_a3m_groups(data: bytes, source: str, where: str, *, group_bytes: int = 4 << 20,
                    group_blocks: int = 16384):
    """Yields the results of :func:`parse_a3m` for ``data`` (a file of NUL-separated blocks, labelled
    ``source#k`` throughout) group by group: consecutive blocks of about ``group_bytes`` bytes and at most
    ``group_blocks`` blocks, so that the objects of one group are held at a time. Errors are those of
    :func:`parse_a3m`: the first bad block, with the file's line numbers."""
    collapsed, line_map = collapse_blank_runs(data)
    nul = np.flatnonzero(np.frombuffer(collapsed, dtype=np.uint8) == 0)
    by_bytes = np.searchsorted(nul, np.arange(group_bytes, len(collapsed), group_bytes))
    cuts = np.unique(np.concatenate([by_bytes, np.arange(group_blocks, nul.size, group_blocks)]))
    ends = (nul[cuts[cuts < nul.size]] + 1).tolist() + [len(collapsed)]
    lo, lines_before, k = 0, 0, 0
    for hi in ends:
        if hi <= lo:
            continue
        first_line = 1 + lines_before + (line_map.removed(lo) if line_map is not None else 0)
        part = A3mFile(collapsed[lo:hi], first_line=first_line,
                       line_map=line_map.shifted(lo) if line_map is not None else None)  # fmt: skip
        labels = [f"{source}#{k + j}" for j in range(part.n_blocks)]
        try:
            results = part.parse(labels, where)
        except BlockError as exc:
            raise (_first_error(part, labels, where, exc) if part.n_blocks > 1 else exc) from None
        yield results
        k += part.n_blocks
        lines_before += collapsed.count(b"\n", lo, hi)
        lo = hi


def _first_error(parser: "A3mFile", labels: list[str], where: str, exc: BlockError) -> BlockError:
    """Returns the error of the first bad block, as a file holding that block alone would report it.

    The vectorised pass reports *a* bad block (its checks run in a fixed order over all blocks at once). The
    first one is found by halving: blocks are independent, so a range of them parses alone; each step parses
    the first half of the blocks still in doubt, which at least halves them. The bytes parsed add up to about
    twice the file, whatever the number and position of the bad blocks: linear time on the error path.
    """
    lo, hi = 0, exc.block  # every raw block before lo is good; block hi is bad
    while lo < hi:
        mid = (lo + hi) // 2
        found = _bad_block_in(parser, labels, where, lo, mid)
        if found is None:
            lo = mid + 1
        else:
            hi = found
    bad = hi
    lo, hi = int(parser.block_starts[bad]), int(parser.block_ends[bad])
    label = labels[int(parser.label_index[bad])] if parser.kept_blocks[bad] else where
    try:
        parser.sub(lo, hi).parse([label], where)
    except BlockError as alone:
        return BlockError(str(alone), bad)
    return exc  # (the block parses alone: keep the pass's own message)


def _bad_block_in(parser: "A3mFile", labels: list[str], where: str, first: int, last: int) -> int | None:
    """Returns the raw index of a bad block among raw blocks ``first..last`` (parsed alone), or None."""
    sub = parser.sub(int(parser.block_starts[first]), int(parser.block_ends[last]))
    kept = [labels[int(k)] for k in parser.label_index[first : last + 1][parser.kept_blocks[first : last + 1]]]
    try:
        sub.parse(kept, where)
    except BlockError as inner:
        return first + inner.block
    return None


def parse_a3m_blocks(data: bytes, labels: list[str], where: str = "input", max_failures: int = 8):
    """Return ``(raw block index, result or AlignmentError)`` for every non-blank NUL-separated block: a bad block
    gives its error (the message a file holding it alone would give) and does not stop the others.

    ``labels`` name every raw block (blank ones included): database entries, each ended by a NUL. Good blocks
    are parsed together in vectorised passes; after ``max_failures`` bad blocks the rest is parsed block by block,
    so the time stays linear however damaged the data.
    """
    out: list = []
    parser = A3mFile.of_file(data)
    data = parser.data
    starts, ends = parser.block_starts, parser.block_ends
    first = 0  # raw block where the unparsed rest begins
    failures = 0
    while first < starts.size:
        lo = int(starts[first])
        rest = parser.sub(lo) if first else parser
        kept = np.flatnonzero(rest.kept_blocks)
        if not kept.size:
            break
        if failures >= max_failures:
            for k in kept.tolist():
                b = first + k
                one = parser.sub(int(starts[b]), int(ends[b]))
                try:
                    out.extend((b, r) for r in one.parse([labels[b]], where))
                except AlignmentError as exc:
                    out.append((b, exc))
            break
        try:
            results = rest.parse([labels[first + k] for k in kept.tolist()], where)
        except BlockError as exc:
            sub_labels = [labels[first + k] for k in kept.tolist()]
            error = _first_error(rest, sub_labels, where, exc) if rest.n_blocks > 1 else exc
            bad = first + error.block
            if bad > first:  # the blocks before the bad one, together
                head = parser.sub(lo, int(ends[bad - 1]))
                head_kept = np.flatnonzero(head.kept_blocks)
                parsed = head.parse([labels[first + k] for k in head_kept.tolist()], where)
                blocks = first + head.result_blocks
                out.extend(zip(blocks.tolist(), parsed))
            out.append((bad, AlignmentError(str(error))))
            failures += 1
            first = bad + 1
            continue
        out.extend(zip((first + rest.result_blocks).tolist(), results))
        break
    return out


class A3mFile:
    """Line and block structure of an A3M / FASTA file (see :meth:`parse`).

    Args:
        data: the file's bytes; NUL bytes separate independent alignments.
        first_line: 1-based line number of the first line, for error messages.
    """

    def __init__(self, data: bytes, first_line: int = 1, line_map: _LineMap | None = None) -> None:
        self.data = data
        self.first_line = first_line
        self.line_map = line_map
        self.arr = arr = np.frombuffer(data, dtype=np.uint8)
        n = arr.size
        if b"\x00" in data:
            candidates = np.flatnonzero(arr <= 10)
            value = arr[candidates]
            line_ends = candidates[(value == 10) | (value == 0)]
            nul = candidates[value == 0]
        else:
            line_ends = np.flatnonzero(arr == 10)
            nul = np.empty(0, dtype=np.int64)
        starts = np.empty(line_ends.size + 1, dtype=np.int64)
        starts[0] = 0
        starts[1:] = line_ends + 1
        if starts[-1] == n:  # a final terminator ends the last line; it does not start another
            starts = starts[:-1]
        self.n_lines = starts.size
        self.bounds = np.append(starts, n)  # line i spans [bounds[i], bounds[i + 1]), terminator included
        self.line_lengths = np.diff(self.bounds)
        first_byte = arr[starts]
        self.is_header = first_byte == ord(">")
        self.is_comment = first_byte == ord("#")
        self.headers = np.flatnonzero(self.is_header)
        self.header_bytes = starts[self.headers]

        # Raw blocks are the NUL-separated pieces; the kept ones hold a header or any non-whitespace byte.
        self.block_starts = np.append(0, nul + 1)
        self.block_ends = np.append(nul, n)
        n_raw = nul.size + 1
        self.block_of_line = np.searchsorted(nul, starts) if nul.size else np.zeros(self.n_lines, dtype=np.int64)
        self.block_of_header = self.block_of_line[self.headers]
        self.header_count = np.bincount(self.block_of_header, minlength=n_raw)
        kept = self.header_count > 0
        for r in np.flatnonzero(~kept).tolist():
            piece = data[self.block_starts[r] : self.block_ends[r]]
            kept[r] = bool(piece) and not piece.isspace()
        self.kept_blocks = kept
        self.label_index = np.cumsum(kept) - 1
        self.n_blocks = int(np.count_nonzero(kept))

    def block_spans(self) -> list[tuple[int, int]]:
        """Return the byte range of every kept block."""
        keep = np.flatnonzero(self.kept_blocks)
        return list(zip(self.block_starts[keep].tolist(), self.block_ends[keep].tolist()))

    # ----------------------------------------------------------------------------------------- helpers
    @classmethod
    def of_file(cls, data: bytes) -> "A3mFile":
        """The parser of a whole file's bytes, long runs of blank lines collapsed first (line numbers kept)."""
        collapsed, line_map = collapse_blank_runs(data)
        return cls(collapsed, line_map=line_map)

    def sub(self, lo: int, hi: int | None = None) -> "A3mFile":
        """The parser of bytes ``[lo, hi)`` of this one's data, with this file's line numbers."""
        lo = int(lo)
        data = self.data[lo:] if hi is None else self.data[lo : int(hi)]
        line_map = self.line_map.shifted(lo) if self.line_map is not None else None
        return A3mFile(data, first_line=self.line_number(lo), line_map=line_map)

    def line_number(self, byte_offset: int) -> int:
        """Return the 1-based file line number that contains ``byte_offset``."""
        number = self.first_line + self.data.count(b"\n", 0, int(byte_offset))
        return number + self.line_map.removed(byte_offset) if self.line_map is not None else number

    def _where(self, raw_block: int) -> str:
        return self.labels[int(self.label_index[raw_block])] or self.default_where

    def _block_of_byte(self, pos: int) -> int:
        line = int(np.searchsorted(self.bounds, pos, side="right")) - 1
        return int(self.block_of_line[line])

    def _raise_invalid(self, pos: int) -> None:
        block = self._block_of_byte(pos)
        raise BlockError(
            f"{self._where(block)}: line {self.line_number(pos)}: invalid character "
            f"{describe_byte(self.arr[pos])} in a sequence line (allowed: letters, '-', '.', '*'); is this really "
            "an alignment file?",
            block,
        )

    def _record(self, h: int) -> str:
        """Describe header ``h`` as "record k ('name', line n)", k counting the records of its block from 1."""
        r = int(self.block_of_header[h])
        first = int(np.searchsorted(self.block_of_header, r))
        return f"record {h - first + 1} ('{self.names[h]}', line {self.line_number(self.header_bytes[h])})"

    def _check_preamble(self, r: int) -> None:
        """Raise the error of the text before the first header of raw block ``r`` (or of a header-less block)."""
        lo = int(self.block_starts[r])
        if self.header_count[r]:
            hi = int(self.header_bytes[np.searchsorted(self.block_of_header, r)])
        else:
            hi = int(self.block_ends[r])
        l0, l1 = np.searchsorted(self.bounds, [lo, hi])
        sub = self.arr[lo:hi]
        keep = np.repeat(~self.is_comment[l0:l1], self.line_lengths[l0:l1])[: sub.size]
        bad = _first_invalid(sub, keep, _is_letter(sub), sub == 45)
        if bad is not None:
            self._raise_invalid(lo + bad)
        data = keep & ~_IS_SPACE[sub]
        if data.any():
            pos = lo + int(np.flatnonzero(data)[0])
            raise BlockError(
                f"{self._where(r)}: line {self.line_number(pos)}: sequence data before the first '>' header; "
                "is this an A3M/FASTA file?",
                r,
            )
        if not self.header_count[r]:
            raise BlockError(f"{self._where(r)}: no sequences found (no '>' header line)", r)

    # ------------------------------------------------------------------------------------------- parse
    def parse(self, labels: list[str], where: str) -> list[A3mResult]:
        """Return ``(label, names, tokens [N, L] uint8, deletions [N, L] uint8, metadata)`` per kept block.

        Args:
            labels: the label of every kept block (``Msa.source``), also used in error messages.
            where: names the input in error messages of blocks whose label is empty.
        """
        self.labels, self.default_where = labels, where
        if not self.n_blocks:
            return []
        blocks = np.flatnonzero(self.header_count > 0)  # the blocks that give an Msa, in order
        self.result_blocks = blocks
        for r in np.flatnonzero(self.kept_blocks & (self.header_count == 0)).tolist():
            self._check_preamble(r)  # always raises
        data, bounds, n_lines = self.data, self.bounds, self.n_lines

        # Preamble: the lines of a block before its first header. Comments there are metadata; anything but
        # whitespace is an error.
        first_header_line = np.full(self.header_count.size, n_lines, dtype=np.int64)
        first_header = np.searchsorted(self.block_of_header, blocks)  # header index of each block's first record
        first_header_line[blocks] = self.headers[first_header]
        preamble = np.arange(n_lines) < first_header_line[self.block_of_line]
        for line in np.flatnonzero(preamble & ~self.is_comment).tolist():
            if data[bounds[line] : bounds[line + 1]].strip(b" \t\r\n\v\f\x00"):  # NUL: a block's last terminator
                self._check_preamble(int(self.block_of_line[line]))
        comments = np.flatnonzero(preamble & self.is_comment)
        metadata_text = self._line_texts(comments, skip=1)

        self.names, header_text = self._names()
        pseudo = self._pseudo(header_text)
        kept_headers = np.flatnonzero(~pseudo)
        kept_block = self.block_of_header[kept_headers]
        rows_per_block = np.bincount(kept_block, minlength=self.header_count.size)[blocks]
        if not rows_per_block.all():
            block = int(blocks[np.flatnonzero(rows_per_block == 0)[0]])
            raise BlockError(
                f"{self._where(block)}: no sequences found (only hh-suite pseudo-sequences such as >ss_pred)", block
            )
        keep_lines = ~(self.is_header | self.is_comment | preamble)
        if pseudo.any():
            record_of_line = np.maximum(np.cumsum(self.is_header) - 1, 0)
            keep_lines &= ~pseudo[record_of_line]
        self.keep_lines = keep_lines
        # Every header's record ends where the next header starts (or at the end of the file): the bytes in
        # between that belong to the next block (NUL, its preamble) are never kept.
        self.record_ends = np.append(self.header_bytes[1:], self.arr.size)

        first_row = np.zeros(blocks.size + 1, dtype=np.int64)  # kept record index of each block's query
        np.cumsum(rows_per_block, out=first_row[1:])
        widths, all_columns = self._query_widths(kept_headers[first_row[:-1]])

        # One flat output buffer; block b's [N_b, L_b] matrix is a contiguous slice of it.
        sizes = rows_per_block * widths
        block_offset = np.zeros(blocks.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=block_offset[1:])
        block_of_row = np.repeat(np.arange(blocks.size), rows_per_block)
        row_width = widths[block_of_row]
        row_offset = block_offset[block_of_row] + (np.arange(kept_headers.size) - first_row[block_of_row]) * row_width
        total = int(block_offset[-1])
        tokens = np.empty(total, dtype=np.uint8)
        deletions = np.zeros(total, dtype=np.uint8)
        all_columns_line = None
        if all_columns.any():
            per_raw = np.zeros(self.header_count.size, dtype=bool)
            per_raw[blocks] = all_columns
            all_columns_line = per_raw[self.block_of_line]

        # Group records into chunks of about _CHUNK_BYTES; each chunk is a contiguous byte range.
        header_bytes = self.header_bytes
        marks = np.arange(int(header_bytes[0]), self.arr.size, _chunk_bytes())
        cuts = np.unique(np.append(np.searchsorted(header_bytes, marks, side="left"), header_bytes.size))
        cuts = cuts[cuts > 0]
        row_cuts = np.searchsorted(kept_headers, cuts)
        j0 = 0
        for h1, j1 in zip(cuts.tolist(), row_cuts.tolist()):
            if j1 > j0:
                self._parse_chunk(kept_headers[j0:j1], row_offset, row_width, j0, j1, all_columns_line,
                                  tokens, deletions)
            j0 = j1

        for b in np.flatnonzero(all_columns).tolist():
            part = tokens[block_offset[b] : block_offset[b + 1]]
            part[:] = TO_ALIGNED[part]
        kept_names = [self.names[i] for i in kept_headers.tolist()] if pseudo.any() else self.names
        comment_block = self.block_of_line[comments]
        comment_cuts = np.searchsorted(comment_block, blocks, side="left").tolist() + [comments.size]
        results = []
        offsets, rows, cols = block_offset.tolist(), first_row.tolist(), widths.tolist()
        label_index = self.label_index[blocks].tolist()
        for b in range(blocks.size):
            shape = (rows[b + 1] - rows[b], cols[b])
            lo, hi = offsets[b], offsets[b + 1]
            results.append((
                labels[label_index[b]],
                kept_names[rows[b] : rows[b + 1]],
                tokens[lo:hi].reshape(shape),
                deletions[lo:hi].reshape(shape),
                tuple(metadata_text[comment_cuts[b] : comment_cuts[b + 1]]),
            ))
        return results

    def _line_texts(self, lines: np.ndarray, skip: int) -> list[str]:
        """Return the decoded, stripped text of ``lines`` without their first ``skip`` bytes and terminator."""
        if not lines.size:
            return []
        starts = (self.bounds[lines] + skip).tolist()
        ends = self.bounds[lines + 1]
        ends = (ends - ((self.arr[ends - 1] == 10) | (self.arr[ends - 1] == 0))).tolist()
        data = self.data
        return [text.strip() for text in decode_text(b"\n".join([data[s:e] for s, e in zip(starts, ends)])).split("\n")]

    def _names(self) -> tuple[list[str], None]:
        """Return the stripped header text after '>' of every header line (one decode for the whole file)."""
        headers, arr = self.headers, self.arr
        starts = (self.bounds[headers] + 1).tolist()
        ends = self.bounds[headers + 1]
        last = arr[ends - 1]
        ends = ends - ((last == 10) | (last == 0))
        data = self.data
        if data.isascii():  # byte offsets are character offsets: slice the decoded file, no join and split
            text = data.decode("ascii")
            names = [text[s:e] for s, e in zip(starts, ends.tolist())]
        else:
            names = decode_text(b"\n".join([data[s:e] for s, e in zip(starts, ends.tolist())])).split("\n")
        # Strip only if some header starts or ends with whitespace (CRLF files, '> name', trailing tabs).
        first = arr[np.minimum(self.bounds[headers] + 1, arr.size - 1)]
        last = arr[ends - 1]
        strip = np.flatnonzero(_MAY_STRIP[first] | _MAY_STRIP[last])
        if strip.size > len(names) // 4:
            names = [name.strip() for name in names]
        else:
            for i in strip.tolist():
                names[i] = names[i].strip()
        return names, None

    def _pseudo(self, header_text: None = None) -> np.ndarray:
        """Return a mask of hh-suite pseudo-sequence records (names starting with ss_, sa_ or aa_)."""
        at = np.minimum(self.header_bytes[:, None] + np.arange(1, 4), self.arr.size - 1)
        b1, b2, b3 = self.arr[at].T
        s, a = ord("s"), ord("a")
        pseudo = (b3 == ord("_")) & (((b1 == s) & ((b2 == s) | (b2 == a))) | ((b1 == a) & (b2 == a)))
        spaced = np.flatnonzero(_IS_SPACE[b1])  # '> ss_pred': the stripped name decides
        if spaced.size:
            names = self.names
            pseudo[spaced] = [names[i].startswith(PSEUDO_PREFIXES) for i in spaced.tolist()]
        return pseudo

    def _query_widths(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(aligned width, all-columns flag)`` of every block from its query record (header indices).

        A query without uppercase letters makes every character of its block a column (all-lowercase files).
        The query records are gathered (in groups of about _CHUNK_BYTES) and classified together.
        """
        next_header = np.append(self.headers, self.n_lines)
        line_lo, line_hi = self.headers[queries], next_header[queries + 1]
        byte_lo, byte_hi = self.bounds[line_lo], self.bounds[line_hi]
        group = np.cumsum(byte_hi - byte_lo) // _chunk_bytes()
        cuts = np.append(np.flatnonzero(group[1:] != group[:-1]) + 1, queries.size)
        widths = np.empty(queries.size, dtype=np.int64)
        all_columns = np.empty(queries.size, dtype=bool)
        q0 = 0
        for q1 in cuts.tolist():
            if q1 - q0 == 1 and byte_hi[q0] - byte_lo[q0] > _chunk_bytes():  # one large query: piece by piece
                n_upper, n_letter, n_gap, n_dot = self._large_query_counts(int(byte_lo[q0]), int(byte_hi[q0]))
            else:
                where, offsets = _concat_ranges(byte_lo[q0:q1], byte_hi[q0:q1])
                lines, _ = _concat_ranges(line_lo[q0:q1], line_hi[q0:q1])
                sub = self.arr[where]
                keep = np.repeat(self.keep_lines[lines], self.line_lengths[lines])
                letter, dash = _is_letter(sub), sub == 45
                bad = _first_invalid(sub, keep, letter, dash)
                if bad is not None:
                    self._raise_invalid(int(where[bad]))
                starts = offsets[:-1]  # every query range holds its header line, so no range is empty
                n_upper = np.add.reduceat(_is_upper(sub) & keep, starts, dtype=np.int64)
                n_letter = np.add.reduceat(letter & keep, starts, dtype=np.int64)
                n_gap = np.add.reduceat(dash & keep, starts, dtype=np.int64)
                n_dot = np.add.reduceat((sub == 46) & keep, starts, dtype=np.int64)
            lower_only = n_upper == 0
            empty = np.flatnonzero(lower_only & (n_letter == 0))
            if empty.size:
                h = int(queries[q0 + empty[0]])
                r = int(self.block_of_header[h])
                raise BlockError(
                    f"{self._where(r)}: the query (record {h - int(np.searchsorted(self.block_of_header, r)) + 1}, "
                    f"'{self.names[h]}', line {self.line_number(self.header_bytes[h])}) has no residues",
                    r,
                )
            widths[q0:q1] = np.where(lower_only, n_letter + n_gap + n_dot, n_upper + n_gap)
            all_columns[q0:q1] = lower_only
            q0 = q1
        return widths, all_columns

    def _large_query_counts(self, lo: int, hi: int) -> tuple[np.ndarray, ...]:
        """``(uppercase, letters, '-', '.')`` kept bytes of one query spanning bytes ``[lo, hi)``, counted in
        pieces of about _CHUNK_BYTES, so that its temporaries stay that size however long its lines are."""
        totals = np.zeros(4, dtype=np.int64)
        step = _chunk_bytes()
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            la = int(np.searchsorted(self.bounds, a, side="right")) - 1
            lb = int(np.searchsorted(self.bounds, b, side="left"))
            lengths = np.minimum(self.bounds[la + 1 : lb + 1], b) - np.maximum(self.bounds[la:lb], a)
            keep = np.repeat(self.keep_lines[la:lb], lengths)  # the lines' bytes inside [a, b) only
            sub = self.arr[a:b]
            letter, dash = _is_letter(sub), sub == 45
            bad = _first_invalid(sub, keep, letter, dash)
            if bad is not None:
                self._raise_invalid(a + bad)
            totals += [np.count_nonzero(_is_upper(sub) & keep), np.count_nonzero(letter & keep),
                       np.count_nonzero(dash & keep), np.count_nonzero((sub == 46) & keep)]  # fmt: skip
        return tuple(totals[k : k + 1] for k in range(4))

    def _parse_chunk(self, records, row_offset, row_width, j0, j1, all_columns_line, tokens, deletions) -> None:
        """Fill rows [j0, j1) (kept records ``records``, contiguous in the file) into the flat outputs."""
        h0, h1 = int(records[0]), int(records[-1])
        byte0, byte1 = int(self.header_bytes[h0]), int(self.record_ends[h1])
        line0 = int(self.headers[h0])
        line1 = int(np.searchsorted(self.bounds, byte1))
        sub = self.arr[byte0:byte1]
        keep = np.repeat(self.keep_lines[line0:line1], self.line_lengths[line0:line1])
        column_rule = None
        if all_columns_line is not None and all_columns_line[line0:line1].any():
            column_rule = np.repeat(all_columns_line[line0:line1], self.line_lengths[line0:line1])
        masks = _Masks(sub, keep, column_rule)
        if masks.bad is not None:
            self._raise_invalid(byte0 + masks.bad)
        aligned = masks.aligned
        rank = _Rank(aligned)
        starts = self.header_bytes[records] - byte0
        counts = rank(self.record_ends[records] - byte0) - rank(starts)
        widths = row_width[j0:j1]
        bad = np.flatnonzero(counts != widths)
        if bad.size:
            h = int(records[bad[0]])
            block = int(self.block_of_header[h])
            raise BlockError(
                f"{self._where(block)}: {self._record(h)} has {int(counts[bad[0]])} aligned "
                f"columns, expected {int(widths[bad[0]])} like the query; every row of an alignment must have the "
                "query's aligned length",
                block,
            )
        n = records.size
        p0 = int(row_offset[j0])
        size = int(counts.sum())
        tokens[p0 : p0 + size] = sub[aligned]
        insert = masks.insert
        if insert is None or not insert.any():
            return
        # Runs of inserted (lowercase) bytes: each belongs to the next aligned byte, i.e. flat column
        # rank(run start) of the chunk. Runs after a row's last column point at the next row's first column
        # but lie before that row starts: dropped. Runs split by a line break add up on their column.
        change = np.flatnonzero(insert[1:] != insert[:-1]) + 1
        if insert[0]:
            change = np.append(0, change)
        if change.size % 2:
            change = np.append(change, insert.size)
        run_starts, run_ends = change[0::2], change[1::2]
        column = rank(run_starts)
        width = int(widths[0])
        if widths[-1] == width and (widths == width).all():
            row_of = np.minimum(column // width, n - 1)
        else:
            row_of = np.searchsorted(row_offset[j0:j1] - p0, column, side="right") - 1
        own = (column < size) & (run_starts >= starts[row_of])
        column, lengths = column[own], (run_ends - run_starts)[own]
        if column.size:
            new = np.empty(column.size, dtype=bool)
            new[0] = True
            np.not_equal(column[1:], column[:-1], out=new[1:])
            first = np.flatnonzero(new)
            total = np.add.reduceat(lengths, first)
            deletions[p0 + column[first]] = np.minimum(total, 255)


class _Masks:
    """Byte masks of a range of lines: ``aligned`` (column bytes) and ``insert`` (lowercase insertion bytes
    under the A3M rule, or None); ``bad`` is the offset of the first byte that is not allowed in a sequence
    line, or None. ``column_rule`` (per byte, or None) marks bytes of all-lowercase blocks, where every letter,
    ``-`` and ``.`` is a column.
    """

    def __init__(self, sub: np.ndarray, keep: np.ndarray, column_rule: np.ndarray | None) -> None:
        scratch = np.empty(sub.size, dtype=np.uint8)
        upper = np.less(np.subtract(sub, 65, out=scratch), 26)  # uint8 wraps: one test for 'A' <= b <= 'Z'
        letter = np.less(np.subtract(np.bitwise_or(sub, 32, out=scratch), 97, out=scratch), 26)
        dash = np.equal(sub, 45)
        self.bad = _first_invalid(sub, keep, letter, dash)
        if column_rule is not None:
            every = np.logical_or(letter, dash)
            every |= np.equal(sub, 46)
            aligned = np.where(column_rule, every, upper | dash)
            aligned &= keep
            insert = np.greater(letter, upper, out=letter)
            insert &= keep
            insert &= ~column_rule
            self.aligned, self.insert = aligned, insert
        else:
            aligned = np.logical_or(upper, dash, out=dash)
            aligned &= keep
            insert = np.greater(letter, upper, out=letter)
            insert &= keep
            self.aligned, self.insert = aligned, insert


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_LOW_BITS = np.array([(1 << r) - 1 for r in range(8)], dtype=np.uint8)


class _Rank:
    """``rank(p)`` = number of True values in ``mask[:p]``, for arrays of positions, from packed bits.

    A cumulative popcount over the bit-packed mask is 32x smaller than a cumulative sum over the mask.
    """

    def __init__(self, mask: np.ndarray) -> None:
        self.packed = np.append(np.packbits(mask, bitorder="little"), np.uint8(0))
        counts = np.bitwise_count(self.packed) if hasattr(np, "bitwise_count") else _POPCOUNT[self.packed]
        self.before = np.zeros(self.packed.size + 1, dtype=np.int64)
        np.cumsum(counts, out=self.before[1:])

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        byte = positions >> 3
        partial = self.packed[byte] & _LOW_BITS[positions & 7]  # the bits of mask[8 * byte : p]
        return self.before[byte] + (np.bitwise_count(partial) if hasattr(np, "bitwise_count") else _POPCOUNT[partial])
