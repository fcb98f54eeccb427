"""Property tests of the alignment parsers: generate MSAs, write them in every format, parse, compare.

Random MSAs (odd sizes, insertions, gaps) are written as A3M, A2M (insert columns padded with '.'), aligned
FASTA and interleaved Stockholm, with random line wrapping, CRLF, '#' comments, NUL-separated blocks and hh-suite
pseudo-sequences; parsing must give back exactly the original rows, names and insertion counts. Random and
damaged bytes must only ever raise AlignmentError.
"""

from __future__ import annotations

import gzip

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from msaformer.data import parse_alignment, read_alignments
from msaformer.data.msa import Msa
from msaformer.errors import AlignmentError

RESIDUES = "ACDEFGHIKLMNPQRSTVWYXBZUO"
NAME_CHARS = "ABCXYZabcxyz0129_|/-. \t"
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def alignments(draw, query_gaps: bool = True):
    """Return ``(names, rows, insertions)``: rows [N] of length L, insertions [N][L + 1] lowercase strings."""
    n = draw(st.integers(1, 6))
    length = draw(st.integers(1, 11))
    names = draw(st.lists(st.text(NAME_CHARS, min_size=1, max_size=8), min_size=n, max_size=n, unique=True))
    # never ss_/sa_/aa_, never empty; whitespace inside is kept, at the end it is stripped by the parser
    names = [(("q" if i == 0 else "t") + name).rstrip() for i, name in enumerate(names)]
    query = draw(st.text(RESIDUES + ("-" if query_gaps else ""), min_size=length, max_size=length))
    assume(any(c != "-" for c in query))
    rows = [query] + [draw(st.text(RESIDUES + "--", min_size=length, max_size=length)) for _ in range(n - 1)]
    insert = st.text(RESIDUES.lower(), max_size=3)
    insertions = [[draw(insert) if draw(st.integers(0, 3)) == 0 else "" for _ in range(length + 1)] for _ in range(n)]
    return names, rows, insertions


def expected_deletions(insertions):
    """Return the insertion counts before each column; the last slot (after the last column) is dropped."""
    return np.array([[len(s) for s in row[:-1]] for row in insertions], dtype=np.uint8)


def wrap(text: str, width: int | None) -> list[str]:
    if not width or not text:
        return [text]
    return [text[i : i + width] for i in range(0, len(text), width)]


@st.composite
def a3m_files(draw):
    """Return ``(bytes, [(names, rows, deletions, metadata)])`` for an A3M / A2M / FASTA file of NUL blocks."""
    n_blocks = draw(st.integers(1, 3))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    a2m = draw(st.booleans())
    blocks, expected = [], []
    for _ in range(n_blocks):
        names, rows, insertions = draw(alignments())
        metadata = draw(st.lists(st.text("0123456789,ABC\t", max_size=6).map(str.strip), max_size=2))
        if a2m:  # pad every insert slot to the widest insertion with '.'
            widths = [max(len(row[p]) for row in insertions) for p in range(len(rows[0]) + 1)]
            padded = [[s + "." * (w - len(s)) for s, w in zip(row, widths)] for row in insertions]
        else:
            padded = insertions
        lines = ["#" + m for m in metadata]
        records = []
        for name, row, inserts in zip(names, rows, padded):
            text = "".join(ins + tok for ins, tok in zip(inserts, row)) + inserts[-1]
            if draw(st.integers(0, 5)) == 0:
                text += "*"
            records.append([">" + draw(st.sampled_from(["", " "])) + name] + wrap(text, draw(st.sampled_from([None, 1, 4, 7, 60]))))
        for _ in range(draw(st.integers(0, 2))):  # hh-suite pseudo-sequences anywhere, also before the query
            pseudo = ">" + draw(st.sampled_from(["ss_pred", "ss_conf", "sa_x", "aa_seq", "ss_dssp"]))
            records.insert(draw(st.integers(0, len(records))), [pseudo, draw(st.text("CHE0123456789", max_size=9))])
        for record in records:
            lines.extend(record)
            if draw(st.integers(0, 4)) == 0:
                lines.append(draw(st.sampled_from(["", " ", "\t"])))
        text = newline.join(lines) + (newline if draw(st.booleans()) else "")
        blocks.append(text)
        expected.append((names, rows, expected_deletions(insertions), tuple(metadata)))
    data = "\x00".join(blocks) + ("\x00" if draw(st.booleans()) else "")
    return data.encode(), expected


@st.composite
def stockholm_files(draw):
    """Return ``(bytes, [(names, rows, deletions)])`` for an interleaved Stockholm file (query without gaps)."""
    names, rows, insertions = draw(alignments(query_gaps=False))
    names = [name.replace(" ", "_").replace("\t", "_") for name in names]
    assume(len(set(names)) == len(names))  # Stockholm rows are keyed by name
    insertions[0] = [""] * len(insertions[0])  # the query's residues define the columns
    length = len(rows[0])
    widths = [max(len(row[p]) for row in insertions) for p in range(length + 1)]
    raw = []
    for i, (row, inserts) in enumerate(zip(rows, insertions)):
        parts = []
        for p in range(length + 1):
            pad = "".join(draw(st.sampled_from(".-")) for _ in range(widths[p] - len(inserts[p])))
            parts.append(inserts[p] + pad)
            if p < length:
                tok = row[p]
                if tok == "-":
                    tok = draw(st.sampled_from("-."))
                elif draw(st.booleans()):
                    tok = tok.lower()  # rows are uppercased
                parts.append(tok)
        raw.append("".join(parts))
    block = draw(st.integers(1, len(raw[0])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    shuffle = draw(st.booleans())  # later blocks list the rows in another order: the line-by-line reader
    lines = ["# STOCKHOLM 1.0", "#=GF ID test", ""]
    lines += [f"#=GS {name} DE something" for name in names]
    pad = max(len(name) for name in names) + draw(st.integers(1, 3))
    for start in range(0, len(raw[0]), block):
        order = list(zip(names, raw))
        if shuffle and start:
            order = draw(st.permutations(order))
        for name, text in order:
            lines.append(name.ljust(pad) + text[start : start + block])
            if draw(st.integers(0, 4)) == 0:
                lines.append(f"#=GR {name} PP " + "9" * len(text[start : start + block]))
        lines.append("#=GC RF ".ljust(pad) + "x" * len(raw[0][start : start + block]))
        lines.append("")
    lines.append("//")
    data = newline.join(lines) + newline
    return data.encode(), [(names, rows, expected_deletions(insertions))]


def test_stockholm_fast_and_line_readers_agree_on_irregular_and_regular_layouts():
    from msaformer.data import _stockholm

    regular = b"# STOCKHOLM 1.0\n#=GF ID x\n\nq  AC.D\nt1 ac-D\nt2 A.kD\n\nq  E-\nt1 Ee\nt2 -e\n"
    shuffled = regular.replace(b"q  E-\nt1 Ee\nt2 -e", b"t2 -e\nq  E-\nt1 Ee")
    indented = regular.replace(b"t2 -e", b"  t2 -e")
    fast = _stockholm._rows_vectorised(regular, "x", 1)
    slow = _stockholm._rows_by_line(regular, "x", 1)
    assert fast[0] == slow[0] == ["q", "t1", "t2"] and fast[2] == slow[2] == ("STOCKHOLM 1.0", "=GF ID x")
    np.testing.assert_array_equal(fast[1], slow[1])
    assert _stockholm._rows_vectorised(shuffled, "x", 1) is None
    assert _stockholm._rows_vectorised(indented, "x", 1) is None
    for data in (regular, shuffled, indented):
        [msa] = parse_alignment(data + b"//\n", "stockholm")
        assert msa.sequences == ["ACDE", "ACDE", "A-D-"]  # q's '.' and '-' columns are not columns
        assert msa.deletions.tolist() == [[0] * 4, [0] * 4, [0, 0, 1, 0]]  # t2's 'k'; t1's trailing 'e' dropped


def check_msa(msa: Msa, names, rows, deletions):
    assert msa.names == names
    assert msa.sequences == rows
    np.testing.assert_array_equal(msa.deletions, deletions)
    assert msa.tokens.dtype == np.uint8 and msa.tokens.shape == (len(rows), len(rows[0]))


@settings(max_examples=200, **SETTINGS)
@given(a3m_files(), st.sampled_from(["a3m", "fasta", None]))
def test_a3m_and_fasta_round_trip(file, fmt):
    data, expected = file
    msas = parse_alignment(data, fmt, source="gen.a3m")
    assert len(msas) == len(expected)
    for k, (msa, (names, rows, deletions, metadata)) in enumerate(zip(msas, expected)):
        check_msa(msa, names, rows, deletions)
        assert msa.metadata == metadata
        assert msa.source == ("gen.a3m" if len(expected) == 1 else f"gen.a3m#{k}")


@settings(max_examples=100, **SETTINGS)
@given(stockholm_files())
def test_stockholm_round_trip(file):
    data, [(names, rows, deletions)] = file
    [msa] = parse_alignment(data, None, source="gen.sto")
    check_msa(msa, names, rows, deletions)
    assert msa.metadata == ("STOCKHOLM 1.0", "=GF ID test")


@settings(max_examples=40, **SETTINGS)
@given(a3m_files())
def test_dedup_keeps_first_of_each_distinct_row(file):
    data, expected = file
    for msa, (names, rows, _, _) in zip(parse_alignment(data, "a3m", dedup=True), expected):
        first = {}
        for name, row in zip(names, rows):
            first.setdefault(row, name)
        assert msa.sequences == list(first) and msa.names == list(first.values())


def _only_alignment_error(data: bytes, fmt):
    try:
        msas = parse_alignment(data, fmt, source="fuzz")
    except AlignmentError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz")
        return
    for msa in msas:  # a success must be a well-formed alignment
        assert msa.depth >= 1 and msa.length >= 1
        assert msa.tokens.shape == msa.deletions.shape


@settings(max_examples=250, **SETTINGS)
@given(st.binary(max_size=300), st.sampled_from(["a3m", "fasta", "stockholm", None]))
def test_random_bytes_only_raise_alignment_error(data, fmt):
    _only_alignment_error(data, fmt)


ALPHABET = b">#\n\r\x00 \t.-*ACDMKVacdmk/STOCKHOLM\xff\xc3"


@settings(max_examples=250, **SETTINGS)
@given(st.lists(st.sampled_from([bytes([c]) for c in ALPHABET]) | st.sampled_from([b"# STOCKHOLM 1.0\n", b"//\n", b">ss_pred\n", b"#=GR q SS"]), max_size=60),
       st.sampled_from(["a3m", "stockholm", None]))
def test_alignment_like_bytes_only_raise_alignment_error(pieces, fmt):
    _only_alignment_error(b"".join(pieces), fmt)


@settings(max_examples=150, **SETTINGS)
@given(st.one_of(a3m_files(), stockholm_files()), st.data())
def test_damaged_files_only_raise_alignment_error(file, data):
    raw = bytearray(file[0])
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        if action == "cut":
            raw = raw[:where]
        elif action == "flip" and where < len(raw):
            raw[where] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[where:where] = data.draw(st.binary(min_size=1, max_size=3))
        elif where < len(raw):
            del raw[where]
    _only_alignment_error(bytes(raw), data.draw(st.sampled_from(["a3m", "stockholm", None])))


@settings(max_examples=20, **SETTINGS)
@given(st.binary(max_size=200), st.integers(0, 60), st.sampled_from(["x.a3m.gz", "x.txt", "x.sto", "x.tar.gz"]))
def test_random_or_truncated_files_on_disk_only_raise_alignment_error(tmp_path_factory, payload, cut, name):
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(gzip.compress(payload)[:cut] if name.endswith(".gz") and cut else payload)
    try:
        read_alignments(path)
    except AlignmentError as exc:
        assert "\n" not in str(exc)


def _both_readers(data: bytes):
    """(small reader's result or None, vectorised reader's result or its error message)."""
    from msaformer.data._a3m import A3mFile
    from msaformer.data._a3m_small import parse_plain

    small = parse_plain(data, "f.a3m")
    parser = A3mFile(data)
    try:
        full = parser.parse(["f.a3m"] if parser.n_blocks < 2 else [f"f.a3m#{k}" for k in range(parser.n_blocks)], "f")
    except AlignmentError as exc:
        full = str(exc)
    return small, full


def _same(small, full) -> None:
    assert not isinstance(full, str), f"the small reader accepted what the vectorised one refuses: {full}"
    assert len(small) == len(full) == 1
    (label, names, tokens, deletions, metadata), (label2, names2, tokens2, deletions2, metadata2) = small[0], full[0]
    assert (label, names, metadata) == (label2, names2, metadata2)
    assert np.array_equal(tokens, tokens2) and np.array_equal(deletions, deletions2)
    assert tokens.flags.writeable and deletions.flags.writeable


@settings(max_examples=300, **SETTINGS)
@given(a3m_files())
def test_small_and_vectorised_readers_agree_on_valid_files(file):
    data, _ = file
    small, full = _both_readers(data)
    if small is not None:
        _same(small, full)


@settings(max_examples=400, **SETTINGS)
@given(st.one_of(a3m_files(), st.just((b"", None))), st.data())
def test_small_reader_declines_whatever_the_vectorised_reader_refuses(file, data):
    raw = bytearray(file[0] or b">q\nACDE\n>r\nAC-E\n")
    for _ in range(data.draw(st.integers(0, 3))):  # damage: insert, delete or replace a byte
        pos = data.draw(st.integers(0, len(raw)))
        byte = data.draw(st.sampled_from(list(b">#-.*\t\r\n aZ9\x00\xff") + [ord("s"), ord("_")]))
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            raw.insert(pos, byte)
        elif raw:
            pos = min(pos, len(raw) - 1)
            if op == "delete":
                del raw[pos]
            else:
                raw[pos] = byte
    small, full = _both_readers(bytes(raw))
    if small is not None:
        _same(small, full)


@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.text("ACDE-acde", min_size=0, max_size=12), min_size=1, max_size=6), st.integers(1, 12))
def test_both_ways_of_counting_insertions_agree(rows, width):
    from msaformer.data._a3m_small import deletions_by_runs, deletions_vectorised

    joined = "\x01".join(rows).encode()
    assert np.array_equal(deletions_by_runs(joined, len(rows), width), deletions_vectorised(joined, len(rows), width))
