"""Tests of msaformer.data.parsers: golden files, format semantics, archives and error messages."""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from msaformer.data import parse_alignment, read_alignments
from msaformer.data.parsers import ALIGNMENT_SUFFIXES, detect_format, is_alignment_path
from msaformer.errors import AlignmentError, MsaformerError
from tests.paths import MSA, needs_shared

DATA = MSA
EXPECTED = list(csv.DictReader((DATA / "expected.tsv").read_text().splitlines(), delimiter="\t")) if DATA.is_dir() else []
OK_ROWS = [row for row in EXPECTED if row["status"] == "OK"]
BAD_ROWS = [row for row in EXPECTED if row["status"] != "OK"]


def parse_one(text: str | bytes, fmt: str | None = "a3m", **kwargs):
    data = text.encode() if isinstance(text, str) else text
    msas = parse_alignment(data, fmt, source="t.a3m", **kwargs)
    assert len(msas) == 1
    return msas[0]


# ------------------------------------------------------------------------------------------- golden files
@needs_shared
@pytest.mark.parametrize("row", OK_ROWS, ids=[row["file"] for row in OK_ROWS])
def test_expected_tsv_row_reproduced_exactly(row):
    msas = read_alignments(DATA / row["file"])
    if row["block"]:
        msa = msas[int(row["block"])]
        assert msa.source.endswith(f"#{row['block']}")
    else:
        [msa] = msas
    assert msa.depth == int(row["n_seqs"])
    assert msa.length == int(row["query_len"])
    assert msa.content_hash() == row["sha256"]
    assert len(set(msa.sequences)) == int(row["n_unique"])
    assert int(msa.deletions.sum(dtype=np.int64)) == int(row["sum_deletions"])
    assert int(msa.deletions.max(initial=0)) == int(row["max_deletion"])
    if row["format"] == "stockholm":
        assert int(msa.deletions.sum(dtype=np.int64)) == int(row["insert_residues"])
    else:  # insertions after the last column are dropped: count them independently, line by line
        inserted, trailing = _lowercase_counts(DATA / row["file"])
        assert inserted == int(row["insert_residues"])
        assert int(msa.deletions.sum(dtype=np.int64)) == inserted - trailing
    assert msa.tokens.dtype == np.uint8 and msa.deletions.dtype == np.uint8
    assert msa.source.split("#")[0] == str(DATA / row["file"])
    assert len(msa.names) == msa.depth
    allowed = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
    assert set(np.unique(msa.tokens).tolist()) <= allowed


def _lowercase_counts(path: Path) -> tuple[int, int]:
    """Return (lowercase letters in sequence lines, those after the last column of their row) of an A3M file."""
    rows: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            rows.append("")
        elif rows and not line.startswith("#"):
            rows[-1] += "".join(line.split())
    inserted = sum(c.islower() for row in rows for c in row)
    tails = [row[len(row.rstrip("abcdefghijklmnopqrstuvwxyz.*")) :] for row in rows]
    return inserted, sum(c.islower() for tail in tails for c in tail)


@needs_shared
def test_expected_tsv_covers_every_sample_file():
    files = {str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.name not in ("SOURCES.md", "expected.tsv")}
    assert files == {row["file"] for row in EXPECTED}


@needs_shared
@pytest.mark.parametrize("row", BAD_ROWS, ids=[row["file"] for row in BAD_ROWS])
def test_negative_sample_files_raise_one_line_alignment_error(row):
    with pytest.raises(AlignmentError) as info:
        read_alignments(DATA / row["file"])
    message = str(info.value)
    assert message.startswith(str(DATA / row["file"]) + ": ") and "\n" not in message
    assert ("empty file" in message) == (row["status"] == "EMPTY")


@needs_shared
def test_empty_file_is_rejected():
    with pytest.raises(AlignmentError, match=r"empty\.a3m: empty file"):
        read_alignments(DATA / "colabfold/empty.a3m")


@needs_shared
@pytest.mark.parametrize(
    "name, record, header, expected, found",
    [
        ("biopython/fa01.fasta", 2, "AKH_HAEIN/1-382", 378, 382),
        ("biopython/flowers.pro.gz", 2, "gi|4959044|gb|AAD34209.1|AF069992_1", 304, 600),
    ],
)
def test_ragged_files_name_file_record_header_and_lengths(name, record, header, expected, found):
    with pytest.raises(AlignmentError) as info:
        read_alignments(DATA / name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(DATA / name))
    assert f"record {record} " in message and header in message
    assert f"has {found} aligned columns, expected {expected}" in message


@needs_shared
def test_named_details_of_sample_files():
    one = read_alignments(DATA / "esm/1a3a_1_A.a3m")[0]
    assert one.names == [""] * 1024  # bare '>' headers
    tabs = read_alignments(DATA / "boltz/seq1.a3m")[0]
    assert tabs.names[1].startswith("UniRef100_A0A0D4WTP2\t338\t")
    sto = read_alignments(DATA / "openfold/6KWC_1_mgnify_hits.sto")[0]
    assert sto.names[0] == "6KWC_1" and sto.names[1] == "MGYP000510094044/36-224"
    assert sto.metadata[0] == "STOCKHOLM 1.0"
    crlf = read_alignments(DATA / "biopython/loveliesbleeding.pro")[0]
    assert not crlf.names[0].endswith("\r")


# ------------------------------------------------------------------------------------------ A3M semantics
def test_a3m_insertions_counted_on_next_column_and_trailing_dropped():
    msa = parse_one(">q\nACDEF\n>s\naaA-cD.E*Fgg\n")
    assert msa.sequences == ["ACDEF", "A-DEF"]
    assert msa.deletions.tolist() == [[0] * 5, [2, 0, 1, 0, 0]]


def test_a3m_wrapped_crlf_whitespace_and_no_final_newline():
    text = "#101\t1\r\n>query one \r\nAC D\r\nEF\r\n\r\n>  s2\t x\r\n\tA-\r\nD\r\nE\tF"
    msa = parse_one(text)
    assert msa.sequences == ["ACDEF", "A-DEF"]
    assert msa.names == ["query one", "s2\t x"]
    assert msa.metadata == ("101\t1",)


def test_pseudo_sequences_skipped_even_before_query():
    text = ">ss_pred\nCCHHHEE\n>ss_conf\n1234567\n>q\nMKV\n>sa_x\n---\n>aa_seq\nmmm\n>t\nM-V\n"
    msa = parse_one(text)
    assert msa.names == ["q", "t"] and msa.sequences == ["MKV", "M-V"]


def test_comment_lines_after_records_are_skipped():
    msa = parse_one(">q\nMKV\n# a note\n>t\nMKV\n")
    assert msa.depth == 2 and msa.metadata == ()


def test_nul_separated_blocks_each_become_an_msa():
    data = b"#3\t1\n>101\nMKV\n>x\nM-V\n\x00#2\t1\n>102\nAC\n\x00"
    msas = parse_alignment(data, None, source="f.a3m")
    assert [m.source for m in msas] == ["f.a3m#0", "f.a3m#1"]
    assert [m.sequences for m in msas] == [["MKV", "M-V"], ["AC"]]
    assert msas[1].metadata == ("2\t1",)


def test_deletions_clip_at_255():
    msa = parse_one(">q\nAC\n>s\n" + "a" * 300 + "A" + "c" * 7 + "C\n")
    assert msa.deletions[1].tolist() == [255, 7]


def test_all_lowercase_fasta_reads_every_character_as_a_column():
    msa = parse_one(">q\nacg.t*\n>s\nac-tt\n", fmt="fasta")
    assert msa.sequences == ["ACG-T", "AC-TT"]
    assert not msa.deletions.any()


def test_dedup_keeps_first_occurrence_and_query():
    text = ">q\nMKV\n>a\nM-V\n>b\nMKV\n>c\nM-V\n>d\nmMKV\n>e\nA-V\n"
    msa = parse_one(text, dedup=True)
    assert msa.names == ["q", "a", "e"]
    assert parse_one(text).depth == 6
    assert msa.deletions.shape == (3, 3)


# ------------------------------------------------------------------------------------ Stockholm semantics
STO = """# STOCKHOLM 1.0
#=GF ID test
#=GS q DE query

q    AC.DE-
s1   acgD.E
#=GR q SS  HHH..H
#=GC RF    xx.xxx

q    FG
s1   f.
//
"""


def test_stockholm_interleaved_query_columns_and_gaps():
    # raw rows: q = "AC.DE-FG", s1 = "acgD.Ef."; query columns are 0, 1, 3, 4, 6, 7 (2 and 5 are query gaps)
    msa = parse_one(STO, fmt=None)
    assert msa.sequences == ["ACDEFG", "ACD-F-"]  # uppercased, '.' in a kept column is a gap
    # s1's 'g' (column 2) is a deletion before D, its 'E' (column 5) one before F
    assert msa.deletions.tolist() == [[0] * 6, [0, 0, 1, 0, 1, 0]]
    assert msa.names == ["q", "s1"]
    assert msa.metadata == ("STOCKHOLM 1.0", "=GF ID test")  # file-level markup only, not #=GS


def test_stockholm_multiple_alignments_and_ragged_rows():
    one = "# STOCKHOLM 1.0\nq MKV\nt M-V\n//\n"
    msas = parse_alignment((one + one.replace("MKV", "ACDE").replace("M-V", "A-DE")).encode(), None, source="f.sto")
    assert [m.sequences for m in msas] == [["MKV", "M-V"], ["ACDE", "A-DE"]]
    assert [m.source for m in msas] == ["f.sto#0", "f.sto#1"]
    with pytest.raises(AlignmentError, match=r"f\.sto: record 2 \('t', line 3\) is 2 characters wide, expected 3"):
        parse_alignment(b"# STOCKHOLM 1.0\nq MKV\nt MV\n//\n", None, source="f.sto")


# ---------------------------------------------------------------------------- detection and archives
def test_detect_format_by_content_and_extension():
    assert detect_format("x.txt", b"# STOCKHOLM 1.0\n") == "stockholm"
    assert detect_format("x.a3m", b"\xef\xbb\xbf# STOCKHOLM 1.0\n") == "stockholm"
    assert detect_format("x.ali", b"\n>q\nMKV\n") in ("a3m", "fasta")
    assert detect_format("x.sto.gz", b"q MKV\n") == "stockholm"
    assert detect_format("x.pro", b"#101\n>q\n") == "a3m"
    with pytest.raises(AlignmentError, match="unknown alignment format"):
        detect_format("x.txt", b"hello")
    assert is_alignment_path("a/B.A3M.gz") and is_alignment_path("x.tar.gz") and not is_alignment_path("x.m8")
    assert ".a3m" in ALIGNMENT_SUFFIXES and ".sto" in ALIGNMENT_SUFFIXES


def test_gzip_and_tar_archives(tmp_path):
    a3m = b">q\nMKV\n>t\nm-KV\n"
    (tmp_path / "one.a3m.gz").write_bytes(gzip.compress(a3m))
    [msa] = read_alignments(tmp_path / "one.a3m.gz")
    assert msa.source == str(tmp_path / "one.a3m.gz") and msa.sequences == ["MKV", "-KV"]

    archive = tmp_path / "job.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in [("job/uniref.a3m", a3m), ("job/pdb70.m8", b"garbage\t1\n"), ("job/msa.sh", b"#!/bin/sh\n"),
                              ("job/bfd.a3m.gz", gzip.compress(b"#1\n>q2\nAC\x00>q3\nDE\n")),
                              ("job/hits.sto", b"# STOCKHOLM 1.0\nq MKV\n//\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    msas = read_alignments(archive)
    assert [m.source.split("::")[1] for m in msas] == ["job/uniref.a3m", "job/bfd.a3m.gz#0", "job/bfd.a3m.gz#1", "job/hits.sto"]
    assert [m.query for m in msas] == ["MKV", "AC", "DE", "MKV"]


def test_damaged_archives_and_missing_files_raise_alignment_error(tmp_path):
    packed = gzip.compress(b"".join(b">q%d\nMKV\n" % i for i in range(500)))
    (tmp_path / "bad.a3m.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b\x08\x00junk")
    (tmp_path / "bad.tar").write_bytes(b"x" * 100 + b"\0" * 157 + b"ustar" + b"\0" * 100)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        info = tarfile.TarInfo("notes.txt")
        tar.addfile(info, io.BytesIO(b""))
    for name, pattern in [("bad.a3m.gz", "cannot decompress"), ("bad.tar.gz", "cannot decompress gzip"), ("bad.tar", "cannot read tar"),
                          ("empty.tar", "holds no alignment files"), ("missing.a3m", "cannot read file")]:
        with pytest.raises(AlignmentError, match=pattern):
            read_alignments(tmp_path / name)



def test_unknown_format_error_names_the_full_path_and_archive_member(tmp_path):
    # the message must name the file as given (directory included) and an archive member as archive::member
    sub = tmp_path / "job"
    sub.mkdir()
    (sub / "junk.txt").write_bytes(b"\x01\x02 not an alignment\n")
    with pytest.raises(AlignmentError) as info:
        read_alignments(sub / "junk.txt")
    assert str(info.value).startswith(f"{sub / 'junk.txt'}: unknown alignment format")
    archive = tmp_path / "run.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"CLUSTAL W\n"
        info_ = tarfile.TarInfo("x/hits.ali")
        info_.size = len(data)
        tar.addfile(info_, io.BytesIO(data))
    with pytest.raises(AlignmentError) as info:
        read_alignments(archive)
    assert str(info.value).startswith(f"{archive}::x/hits.ali: unknown alignment format")


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", "empty file"),
        ("\n \n\x00\n", "empty file"),
        ("#only a comment\n", "no sequences found"),
        ("MKV\n>q\nMKV\n", r"line 1: sequence data before the first '>' header"),
        (">q\nMKV\n>t\nM1V\n", r"line 4: invalid character '1'"),
        (">q\nMKV\n>t\nM\xe9V\n", r"line 4: invalid character byte 0xc3"),
        (">ss_pred\nCCH\n", "only hh-suite pseudo-sequences"),
        (">q\n---\n", r"the query \(record 1, 'q', line 1\) has no residues"),
        (">q\nMKV\n>t\nMK\n", r"record 2 \('t', line 3\) has 2 aligned columns, expected 3"),
        ("# STOCKHOLM 1.0\nq\n//\n", r"line 2: Stockholm sequence line 'q' has a name but no aligned sequence"),
        ("# STOCKHOLM 1.0\nq MK1\n//\n", r"record 1 \('q'\): invalid character '1'"),
        ("# STOCKHOLM 1.0\n#=GF ID x\n//\n", "no sequences found"),
        ("# STOCKHOLM 1.0\nq ..--\n//\n", "has no residues"),
    ],
)
def test_bad_input_raises_one_line_alignment_error(text, pattern):
    with pytest.raises(AlignmentError, match=pattern) as info:
        parse_alignment(text.encode(), None, source="bad.a3m")
    assert "\n" not in str(info.value) and isinstance(info.value, MsaformerError)
    assert str(info.value).startswith("bad.a3m")


def test_utf16_file_is_named_as_such():
    for fmt in (None, "a3m", "stockholm"):
        with pytest.raises(AlignmentError, match="UTF-16 encoded"):
            parse_alignment(">q\nMKV\n".encode("utf-16"), fmt, source="u.a3m")


def test_error_line_numbers_count_across_nul_blocks():
    data = b">a\nMKV\n\x00>b\nAC\n>c\nA\n"
    with pytest.raises(AlignmentError, match=r"f\.a3m#1: record 2 \('c', line 5\)"):
        parse_alignment(data, None, source="f.a3m")


def test_unknown_format_argument():
    with pytest.raises(AlignmentError, match="unknown alignment format 'clustal'"):
        parse_alignment(b">q\nMKV\n", "clustal")


# ------------------------------------------------------------------------------ synthetic cross-check
def _load_generator():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "tools" / "make_synthetic_a3m.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_a3m", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("chunk_bytes", [1, 4096, 4 << 20])
def test_synthetic_a3m_matches_generator_across_chunk_boundaries(monkeypatch, chunk_bytes):
    from msaformer.data import _a3m

    monkeypatch.setattr(_a3m, "_CHUNK_BYTES", chunk_bytes)
    data, tokens, deletions = _load_generator().make_synthetic(rows=2003 if chunk_bytes > 1 else 53, length=97, seed=1, chunk=300)
    [msa] = parse_alignment(data, "a3m", source="synthetic.a3m")
    np.testing.assert_array_equal(msa.tokens, tokens)
    np.testing.assert_array_equal(msa.deletions, deletions)
    assert msa.names[0] == "101" and msa.names[1].startswith("UniRef100_A0A0000001\t")
    assert msa.metadata == ("97\t1",)
    assert deletions.max() == 255 or chunk_bytes == 1


def test_archives_recognised_by_content_not_only_by_name(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        payload = b">q\nMKV\n"
        info = tarfile.TarInfo("a/b.a3m")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (tmp_path / "results.gz").write_bytes(gzip.compress(buffer.getvalue()))  # a gzipped tar without .tar
    (tmp_path / "results.bin.a3m").write_bytes(gzip.compress(b">q\nAC\n"))  # gzip without .gz
    [msa] = read_alignments(tmp_path / "results.gz")
    assert msa.source == f"{tmp_path / 'results.gz'}::a/b.a3m" and msa.query == "MKV"
    assert read_alignments(tmp_path / "results.bin.a3m")[0].query == "AC"


@pytest.mark.parametrize("chunk_bytes", [1, 777, 1 << 20])
def test_many_nul_blocks_of_varying_shapes_match_generator(monkeypatch, chunk_bytes):
    from msaformer.data import _a3m

    monkeypatch.setattr(_a3m, "_CHUNK_BYTES", chunk_bytes)
    data, expected = _load_generator().make_blocks(29, rows=3, length=7, seed=5, vary=True)
    msas = parse_alignment(data, None, source="server.a3m")
    assert [m.source for m in msas] == [f"server.a3m#{k}" for k in range(29)]
    assert len({m.length for m in msas}) > 3 and len({m.depth for m in msas}) > 2
    for msa, (tokens, deletions) in zip(msas, expected):
        np.testing.assert_array_equal(msa.tokens, tokens)
        np.testing.assert_array_equal(msa.deletions, deletions)
        assert msa.metadata == (f"{tokens.shape[1]}\t1",) and msa.names[0] == "101"


def test_all_lowercase_block_between_a3m_blocks_keeps_its_own_column_rule():
    data = b">q\nMKv\n>s\nMaa-v\n\x00\n>q\nacg.t*\n>s\nac-tt\n\x00 \n\x00#c\n>r\nAc\n>s\nwAcc\n"
    first, lower, last = parse_alignment(data, "fasta", source="m.fa")
    assert first.sequences == ["MK", "M-"] and first.deletions.tolist() == [[0, 0], [0, 2]]
    assert lower.sequences == ["ACG-T", "AC-TT"] and not lower.deletions.any()
    assert last.source == "m.fa#2" and last.metadata == ("c",)
    assert last.sequences == ["A", "A"] and last.deletions.tolist() == [[0], [1]]


def test_first_error_of_the_first_bad_block_is_reported():
    good = b">q\nMKV\n>s\nM-V\n"
    ragged, invalid = b">q\nMKV\n>s\nMV\n", b">q\nMK1\n"
    with pytest.raises(AlignmentError, match=r"^f\.a3m#1: record 2 \('s', line 7\) has 2 aligned columns"):
        parse_alignment(good + b"\x00" + ragged + b"\x00" + invalid, None, source="f.a3m")
    with pytest.raises(AlignmentError, match=r"^f\.a3m#1: line 6: invalid character '1'"):
        parse_alignment(good + b"\x00" + invalid + b"\x00" + ragged, None, source="f.a3m")
    with pytest.raises(AlignmentError, match=r"^f\.a3m#2: line 10: sequence data before the first '>' header"):
        parse_alignment(good + b"\x00\n\x00" + good + b"\x00MKV\n" + good, None, source="f.a3m")


def test_a_decompression_bomb_is_refused_before_it_fills_the_memory(tmp_path):
    import gzip as gz
    import resource

    from msaformer.data import parsers

    bomb = tmp_path / "bomb.a3m.gz"
    bomb.write_bytes(gz.compress(b"\x00" * (200 << 20), 9))  # 200 MB of NULs in about 200 KB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AlignmentError, match=r"bomb.a3m.gz: decompresses to more than .* decompression bomb"):
        read_alignments(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 400 << 10  # KiB: well under 400 MB
    # real files, and concatenated gzip members (bgzip), still read; a small, very redundant file is allowed
    (tmp_path / "two.a3m.gz").write_bytes(gz.compress(b">q\nMKV\n") + gz.compress(b">r\nMKI\n"))
    assert read_alignments(tmp_path / "two.a3m.gz")[0].sequences == ["MKV", "MKI"]
    redundant = b">q\nMKV\n" + b">r\nMKV\n" * 200_000
    (tmp_path / "redundant.a3m.gz").write_bytes(gz.compress(redundant, 9))
    assert len(redundant) > parsers.MAX_EXPANSION * (tmp_path / "redundant.a3m.gz").stat().st_size
    assert read_alignments(tmp_path / "redundant.a3m.gz")[0].depth == 200_001


def test_decompression_limits_are_options(tmp_path):
    import gzip as gz

    from typer.testing import CliRunner

    from msaformer.cli.main import app

    redundant = tmp_path / "redundant.a3m.gz"
    redundant.write_bytes(gz.compress(b">q\nMKV\n" + b">r\nMKV\n" * 20_000, 9))  # 160 KB in about 1 KB
    runner = CliRunner()
    result = runner.invoke(app, ["preprocess", str(redundant), "-o", str(tmp_path / "a"), "-q",
                                 "--max-decompressed", "100K"])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "redundant.a3m.gz: decompresses to more than 102,400 bytes" in result.output
    assert "--max-decompressed" in result.output
    from msaformer.data import parsers

    assert parsers.decompressed_limit(1 << 30) == parsers.MAX_DECOMPRESSED_BYTES  # the run's limits ended with it
    result = runner.invoke(app, ["preprocess", str(redundant), "-o", str(tmp_path / "b"), "-q", "--max-expansion", "2"])
    assert result.exit_code == 0, result.output  # 64 MiB are always allowed
    result = runner.invoke(app, ["preprocess", str(redundant), "-o", str(tmp_path / "c"), "--max-expansion", "0"])
    assert result.exit_code == 1 and "--max-expansion must be at least 1" in result.output


def test_runs_of_nul_bytes_cost_nothing():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    msas = parse_alignment(b">q\nMKV\n" + b"\x00" * (50 << 20) + b">r\nACDE\n", "a3m", source="x.a3m")
    assert [m.source for m in msas] == ["x.a3m#0", "x.a3m#1"] and msas[1].length == 4
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 << 10  # the input is 50 MB


def test_blank_lines_cost_nothing_and_keep_their_line_numbers(monkeypatch):
    import re
    import resource

    from msaformer.data import _a3m

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    [msa] = parse_alignment(b">q\nMKV\n" + b"\n" * (50 << 20) + b">r\nMKI\n", "a3m", source="x.a3m")
    assert msa.sequences == ["MKV", "MKI"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 << 10  # the input is 50 MB

    pad = b"#" + b"x" * (_a3m._SMALL_BYTES + 10) + b"\n"  # above the small-file reader's size
    good = b">q\nMKV\n>r\nMKV\n"
    files = [
        b">q\nMKV\n" + b"\n" * 1000 + b">r\nMK\n" + pad,
        b">q\nMKV\n" + b" \r\n\t\n" * 500 + b">r\nMKV\n>s\nMK1\n" + pad,
        good + b"\x00" + b"\n" * 300 + good + b"\x00" + good + b"\n" * 200 + b">s\nMK\n" + pad,
        b"\n" * 500 + b"MKV\n" + pad,
    ]

    def message(data):
        with pytest.raises(AlignmentError) as err:
            parse_alignment(data, "a3m", source="x.a3m")
        return str(err.value)

    collapsed = [message(data) for data in files]
    monkeypatch.setattr(_a3m, "_BLANK_RUNS", re.compile(rb"(?!)"))  # the same files, nothing collapsed
    assert collapsed == [message(data) for data in files]
    assert "line 1003" in collapsed[0] and "line 1006" in collapsed[1] and "line 513" in collapsed[2]


@pytest.mark.parametrize("bad", [9_999, 5_000, 0])
def test_a_bad_block_is_found_in_linear_work(monkeypatch, bad):
    """A truncated ColabFold download: 10,000 NUL-separated blocks, one bad. The work is counted (bytes handed to
    the vectorised reader), not timed: at most a few times the file, wherever the bad block is."""
    from msaformer.data import _a3m

    blocks = [b">q%d\nMKVL\n>h\nMK-L\n" % k for k in range(10_000)]
    blocks[bad] = b">q\nMKVL\n>h\nMK\n"
    data = b"\x00".join(blocks)
    seen = []
    real = _a3m.A3mFile

    class Counting(real):
        def __init__(self, chunk, *args, **kwargs):
            seen.append(len(chunk))
            super().__init__(chunk, *args, **kwargs)

    monkeypatch.setattr(_a3m, "A3mFile", Counting)
    with pytest.raises(AlignmentError, match=rf"x.a3m#{bad}: record 2 \('h', line {4 * bad + 3}\) has 2 aligned columns"):
        parse_alignment(data, "a3m", source="x.a3m")
    assert sum(seen) <= 3 * len(data) and len(seen) <= 20


def _dense_file(n: int, bad_at: int | None = None) -> bytes:
    blocks = []
    for i in range(n):
        rows = b">q%d desc\nMKV\n>r\nMkKI\n" % i if i != bad_at else b">q\nMKV\n>r\nMK\n"
        blocks.append((b"\n" * 70 if i % 5 == 0 else b"") + rows)  # some blocks start with blank-line runs
    return b"\x00".join(blocks)


@pytest.mark.parametrize("bad_at", [None, 0, 137, 299])
def test_groups_of_blocks_parse_as_the_whole_file(bad_at):
    from msaformer.data import _a3m

    data = _dense_file(300, bad_at)
    try:
        whole = _a3m.parse_a3m(data, "x.a3m", "x.a3m")
    except AlignmentError as exc:
        whole = str(exc)
    try:
        groups = [r for group in _a3m.iter_a3m_groups(data, "x.a3m", "x.a3m", group_bytes=500, group_blocks=7)
                  for r in group]  # fmt: skip
    except AlignmentError as exc:
        groups = str(exc)
    if bad_at is None:
        assert [r[0] for r in groups] == [r[0] for r in whole] == [f"x.a3m#{k}" for k in range(300)]
        for a, b in zip(groups, whole):
            assert a[1] == b[1] and (a[2] == b[2]).all() and (a[3] == b[3]).all()
    else:
        assert isinstance(groups, str) and groups == whole and f"x.a3m#{bad_at}" in groups


def test_a_dense_file_is_read_lazily_and_preprocessed_the_same(tmp_path, monkeypatch):
    from msaformer.data import parsers
    from msaformer.data.parsers import parse_file_bytes
    from msaformer.data.preprocess import preprocess
    from msaformer.data.shards import ShardReader

    path = tmp_path / "dense.a3m"
    path.write_bytes(_dense_file(2000))
    eager = parse_file_bytes(path.read_bytes(), str(path))
    monkeypatch.setattr(parsers, "DENSE_FILE_BYTES", 1000)
    lazy = parse_file_bytes(path.read_bytes(), str(path), lazy=True)
    assert isinstance(lazy, parsers.DenseAlignments) and len(lazy) == len(eager) == 2000
    assert [(m.source, m.names, m.sequences) for m in lazy] == [(m.source, m.names, m.sequences) for m in eager]
    preprocess([str(path)], tmp_path / "s", shard_size=300)
    reader = ShardReader(tmp_path / "s")
    assert len(reader) == 2000 and len(reader.shards) == 7
    for i in (0, 1234, 1999):
        assert reader.read(i).sequences == eager[i].sequences and reader.name(i) == f"q{i}"
