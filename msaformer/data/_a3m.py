"""Vectorised A3M / A2M / aligned-FASTA reader: one alignment block of bytes in, arrays out.

The whole block is scanned with numpy: newline offsets give the lines, the first byte of each line gives its
kind (``>`` header, ``#`` comment, sequence). Sequence bytes are classified with a few SIMD comparisons
(uppercase / ``-`` = aligned column, lowercase = insertion; anything else is checked only where it occurs,
which is rare). Aligned bytes are gathered straight into the ``[N, L]`` token matrix. A rank structure over the
bit-packed aligned mask gives every record's aligned length and, read at the start of each run of lowercase
bytes, the column that run of insertions belongs to. Records are processed in groups of about a megabyte, so
temporaries stay small whatever the file size; Python does O(1) work per record (its name).
"""

from __future__ import annotations

import numpy as np

from msaformer.errors import AlignmentError

PSEUDO_PREFIXES = ("ss_", "sa_", "aa_")  # hh-suite pseudo-sequences (>ss_pred, >ss_conf, >ss_dssp, >sa_*, >aa_*)
_CHUNK_BYTES = 1 << 20  # records are parsed in groups of about this many bytes

# Bytes allowed in sequence lines besides letters, '-' and '\n': dropped ('.', '*') or whitespace.
_ALLOWED_OTHER = np.zeros(256, dtype=bool)
_ALLOWED_OTHER[np.frombuffer(b".* \t\r\v\f", dtype=np.uint8)] = True
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


class A3mBlock:
    """The parse of one A3M / FASTA block (see :meth:`parse`).

    Args:
        data: the block's bytes (no NUL bytes).
        where: the file (and block) for error messages.
        first_line: 1-based line number of the block's first line within the file, for error messages.
    """

    def __init__(self, data: bytes, where: str, first_line: int = 1) -> None:
        self.data = data
        self.where = where
        self.first_line = first_line
        self.arr = np.frombuffer(data, dtype=np.uint8)
        n = self.arr.size
        newlines = np.flatnonzero(self.arr == 10)
        starts = np.empty(newlines.size + 1, dtype=np.int64)
        starts[0] = 0
        starts[1:] = newlines + 1
        if starts[-1] == n:  # a final newline ends the last line; it does not start another
            starts = starts[:-1]
        self.starts = starts
        self.bounds = np.append(starts, n)  # line i spans [bounds[i], bounds[i + 1]), newline included
        self.line_lengths = np.diff(self.bounds)
        first_byte = self.arr[starts] if n else np.empty(0, np.uint8)
        self.is_header = first_byte == ord(">")
        self.is_comment = first_byte == ord("#")

    # ----------------------------------------------------------------------------------------- helpers
    def line_number(self, byte_offset: int) -> int:
        """Return the 1-based file line number that contains ``byte_offset`` of the block."""
        return int(np.searchsorted(self.starts, byte_offset, side="right")) - 1 + self.first_line

    def _raise_invalid(self, pos: int) -> None:
        raise AlignmentError(
            f"{self.where}: line {self.line_number(pos)}: invalid character {describe_byte(self.arr[pos])} in a "
            "sequence line (allowed: letters, '-', '.', '*'); is this really an alignment file?"
        )

    def _lines(self, lo: int, hi: int, keep_lines: np.ndarray, all_columns: bool = False) -> _Masks:
        """Return the byte masks of lines [lo, hi) (see :class:`_Masks`).

        Raises AlignmentError at the first byte of a sequence line that is not allowed there.
        """
        masks = _Masks(self.arr, int(self.bounds[lo]), int(self.bounds[hi]), keep_lines[lo:hi],
                       self.line_lengths[lo:hi], all_columns)
        if masks.bad is not None:
            self._raise_invalid(masks.byte0 + masks.bad)
        return masks

    # ------------------------------------------------------------------------------------------- parse
    def parse(self) -> tuple[list[str], np.ndarray, np.ndarray, tuple[str, ...]]:
        """Return ``(names, tokens [N, L] uint8, deletions [N, L] uint8, metadata)``."""
        headers = np.flatnonzero(self.is_header)
        n_lines = self.starts.size
        first = int(headers[0]) if headers.size else n_lines
        metadata = self._preamble(first)
        if not headers.size:
            raise AlignmentError(f"{self.where}: no sequences found (no '>' header line)")

        header_starts = self.bounds[headers]
        names, header_text = self._names(headers)
        pseudo = self._pseudo(header_starts, names, header_text)
        if pseudo.all():
            raise AlignmentError(f"{self.where}: no sequences found (only hh-suite pseudo-sequences such as >ss_pred)")

        keep_lines = ~(self.is_header | self.is_comment)
        keep_lines[:first] = False
        if pseudo.any():
            record_of_line = np.cumsum(self.is_header) - 1
            keep_lines[first:] &= ~pseudo[record_of_line[first:]]
        record_lines = np.append(headers, n_lines)  # record r spans lines [record_lines[r], record_lines[r + 1])
        kept = np.flatnonzero(~pseudo)

        # The query decides the column rule: a query without uppercase letters makes every character a column.
        q = int(kept[0])
        query = self._lines(int(record_lines[q]), int(record_lines[q + 1]), keep_lines)
        all_columns = not np.any(_is_upper(query.sub) & query.keep)
        if all_columns:
            query = self._lines(int(record_lines[q]), int(record_lines[q + 1]), keep_lines, all_columns=True)
            if not np.any(_is_letter(query.sub) & query.keep):
                raise AlignmentError(
                    f"{self.where}: the query (record {q + 1}, '{names[q]}', line "
                    f"{self.line_number(header_starts[q])}) has no residues"
                )
        width = int(np.count_nonzero(query.aligned))

        n_rows = kept.size
        tokens = np.empty((n_rows, width), dtype=np.uint8)
        deletions = np.zeros((n_rows, width), dtype=np.uint8)
        # Group records into chunks of about _CHUNK_BYTES; each chunk is a contiguous byte range.
        marks = np.arange(int(header_starts[0]), self.arr.size, _CHUNK_BYTES)
        cuts = np.unique(np.append(np.searchsorted(header_starts, marks, side="left"), headers.size))
        cuts = cuts[cuts > 0]
        row, r0 = 0, 0
        for r1 in cuts.tolist():
            row = self._parse_chunk(r0, r1, record_lines, header_starts, keep_lines, pseudo, names, all_columns,
                                    tokens, deletions, row)
            r0 = r1
        kept_names = [names[i] for i in kept.tolist()] if pseudo.any() else names
        return kept_names, tokens, deletions, metadata

    def _names(self, headers: np.ndarray) -> tuple[list[str], bytes]:
        """Return the stripped header text after '>' of every header line (one decode for the whole block),
        and the raw header bytes joined by newlines."""
        starts = (self.bounds[headers] + 1).tolist()
        ends = (self.bounds[headers + 1] - (self.arr[self.bounds[headers + 1] - 1] == 10)).tolist()
        data = self.data
        joined = b"\n".join([data[s:e] for s, e in zip(starts, ends)])
        names = decode_text(joined).split("\n")
        # Strip only if some header starts or ends with whitespace (CRLF files, '> name', trailing tabs).
        first = self.arr[np.minimum(self.bounds[headers] + 1, self.arr.size - 1)]
        last = self.arr[np.asarray(ends) - 1]
        for i in np.flatnonzero(_MAY_STRIP[first] | _MAY_STRIP[last]).tolist():
            names[i] = names[i].strip()
        return names, joined

    def _pseudo(self, header_starts: np.ndarray, names: list[str], header_text: bytes) -> np.ndarray:
        """Return a mask of hh-suite pseudo-sequence records (names starting with ss_, sa_ or aa_)."""
        if not any(prefix.encode() in header_text for prefix in PSEUDO_PREFIXES):
            return np.zeros(header_starts.size, dtype=bool)
        at = np.minimum(header_starts[:, None] + np.arange(1, 4), self.arr.size - 1)
        b1, b2, b3 = self.arr[at].T
        s, a = ord("s"), ord("a")
        pseudo = (b3 == ord("_")) & (((b1 == s) & ((b2 == s) | (b2 == a))) | ((b1 == a) & (b2 == a)))
        for i in np.flatnonzero(_IS_SPACE[b1]).tolist():  # '> ss_pred': fall back to the stripped name
            pseudo[i] = names[i].startswith(PSEUDO_PREFIXES)
        return pseudo

    def _preamble(self, first: int) -> tuple[str, ...]:
        """Return the ``#`` comment lines before the first header; reject sequence data there."""
        if first == 0:
            return ()
        comment = self.is_comment[:first]
        masks = self._lines(0, first, ~comment)
        data = masks.keep & ~_IS_SPACE[masks.sub]
        if data.any():
            pos = int(np.flatnonzero(data)[0])
            raise AlignmentError(
                f"{self.where}: line {self.line_number(pos)}: sequence data before the first '>' header; "
                "is this an A3M/FASTA file?"
            )
        return tuple(
            decode_text(self.data[self.bounds[i] + 1 : self.bounds[i + 1]]).strip()
            for i in np.flatnonzero(comment).tolist()
        )

    def _parse_chunk(self, r0, r1, record_lines, header_starts, keep_lines, pseudo, names, all_columns,
                     tokens, deletions, row) -> int:
        """Fill the rows of records [r0, r1) into ``tokens``/``deletions`` from ``row``; return the next row."""
        masks = self._lines(int(record_lines[r0]), int(record_lines[r1]), keep_lines, all_columns)
        sub, aligned = masks.sub, masks.aligned
        width = tokens.shape[1]
        rank = _Rank(aligned)
        starts = header_starts[r0:r1] - masks.byte0
        ends = np.append(starts[1:], sub.size)
        keep_records = ~pseudo[r0:r1]
        if not keep_records.all():
            starts, ends = starts[keep_records], ends[keep_records]
        if starts.size == 0:
            return row
        counts = rank(ends) - rank(starts)
        bad = np.flatnonzero(counts != width)
        if bad.size:
            record = int(np.flatnonzero(keep_records)[bad[0]]) + r0
            raise AlignmentError(
                f"{self.where}: record {record + 1} ('{names[record]}', line "
                f"{self.line_number(header_starts[record])}) has {int(counts[bad[0]])} aligned columns, expected "
                f"{width} like the query; every row of an alignment must have the query's aligned length"
            )
        n = starts.size
        flat = sub[aligned]
        tokens[row : row + n] = (TO_ALIGNED[flat] if all_columns else flat).reshape(n, width)
        if all_columns or not masks.insert.any():
            return row + n
        # Runs of inserted (lowercase) bytes: each belongs to the next aligned byte, i.e. flat column
        # rank(run start) of the chunk. Runs after a row's last column point at the next row's first column
        # but lie before that row starts: dropped. Runs split by a line break add up on their column.
        insert = masks.insert
        change = np.flatnonzero(insert[1:] != insert[:-1]) + 1
        if change.size % 2:
            change = np.append(change, insert.size)
        run_starts, run_ends = change[0::2], change[1::2]
        column = rank(run_starts)
        row_of = np.minimum(column // width, n - 1)
        own = (column < n * width) & (run_starts >= starts[row_of])
        column, lengths = column[own], (run_ends - run_starts)[own]
        if column.size:
            new = np.empty(column.size, dtype=bool)
            new[0] = True
            np.not_equal(column[1:], column[:-1], out=new[1:])
            first = np.flatnonzero(new)
            total = np.add.reduceat(lengths, first)
            deletions[row : row + n].reshape(-1)[column[first]] = np.minimum(total, 255)
        return row + n


class _Masks:
    """Byte masks of a range of lines: ``keep`` (bytes of sequence lines), ``aligned`` (column bytes),
    ``insert`` (lowercase insertion bytes, A3M rule only); ``bad`` is the offset of the first byte that is
    not allowed in a sequence line, or None.
    """

    def __init__(self, arr, byte0, byte1, keep_lines, line_lengths, all_columns: bool) -> None:
        self.byte0 = byte0
        self.sub = sub = arr[byte0:byte1]
        self.keep = keep = np.repeat(keep_lines, line_lengths)
        scratch = np.empty(sub.size, dtype=np.uint8)
        upper = np.less(np.subtract(sub, 65, out=scratch), 26)  # uint8 wraps: one test for 'A' <= b <= 'Z'
        letter = np.less(np.subtract(np.bitwise_or(sub, 32, out=scratch), 97, out=scratch), 26)
        dash = np.equal(sub, 45)
        # Anything else than letters, '-' and '\n' in a sequence line is rare: check it sparsely.
        ok = np.logical_or(letter, dash)
        ok |= np.equal(sub, 10, out=np.empty(sub.size, dtype=bool))
        other = np.greater(keep, ok, out=ok)
        self.bad = None
        if other.any():
            where = np.flatnonzero(other)
            bad = where[~_ALLOWED_OTHER[sub[where]]]
            if bad.size:
                self.bad = int(bad[0])
        if all_columns:
            aligned = np.logical_or(letter, dash, out=dash)
            aligned |= np.equal(sub, 46, out=upper)
            aligned &= keep
            self.aligned, self.insert = aligned, None
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
