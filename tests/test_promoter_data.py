"""Promoter tokenizer, readers and length-bucketed batching."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msaformer.data.promoter import (
    CLS_IDX,
    DNA_TOKENS,
    NUCLEOTIDE_IDS,
    PAD_IDX,
    SequenceError,
    collate,
    decode,
    detect_promoter_format,
    encode,
    iter_promoter_records,
    length_bucketed_batches,
    read_promoters,
)
from msaformer.errors import MsaformerError
from tests.paths import PROMOTER, needs_shared

DATA = PROMOTER


def test_token_order_and_specials():
    assert DNA_TOKENS[:4] == ("<cls>", "<pad>", "<mask>", "<unk>")
    assert [DNA_TOKENS[NUCLEOTIDE_IDS[c]] for c in "ACGTN"] == list("ACGTN")


def test_lowercase_equals_uppercase():
    assert np.array_equal(encode("acgtn"), encode("ACGTN"))
    assert decode(encode("gattaca")) == "GATTACA"


def test_iupac_ambiguity_codes_map_to_n():
    ids = encode("RYSWKMBDHVryswkmbdhv")
    assert (ids == NUCLEOTIDE_IDS["N"]).all()
    assert len(ids) == 20  # nothing dropped


@pytest.mark.parametrize("bad, pos", [("ACGU", 4), ("AC-GT", 3), ("ACG T", 4), ("X", 1), ("ACGTé", 5)])
def test_invalid_character_names_record_and_position(bad, pos):
    with pytest.raises(SequenceError, match=rf"record 'seq7'.*position {pos}\b"):
        encode(bad, record="seq7", source="in.fa")
    assert issubclass(SequenceError, MsaformerError)


@given(st.lists(st.text(alphabet="ACGTNacgtnRYSWKMBDHV", min_size=1, max_size=23), min_size=1, max_size=9))
@settings(max_examples=60, deadline=None)
def test_collate_prepends_cls_and_pads(seqs):
    batch = collate([encode(s) for s in seqs])
    assert batch.shape == (len(seqs), 1 + max(map(len, seqs)))
    assert (batch[:, 0] == CLS_IDX).all()
    for row, s in zip(batch, seqs):
        assert decode(row[1 : 1 + len(s)]) == s.upper().translate(str.maketrans("RYSWKMBDHV", "N" * 10))
        assert (row[1 + len(s) :] == PAD_IDX).all()


@needs_shared
def test_read_gue_csv():
    data = read_promoters(DATA / "gue_prom_core_tata" / "dev.csv", require_labels=True)
    assert len(data) == 613 and set(np.unique(data.labels)) == {0, 1}
    assert (data.lengths() == 70).all()
    assert data.ids[0] == "dev:1"


@needs_shared
def test_read_uci_promoters():
    data = read_promoters(DATA / "ecoli" / "uci_promoters.data")
    assert len(data) == 106 and int(data.labels.sum()) == 53
    assert data.ids[0] == "S10" and data.labels[0] == 1
    assert data.sequences[0].startswith("tactagcaatacgcttgcg") and len(data.sequences[0]) == 57


@needs_shared
def test_read_ipromoter_csv_mixed_case():
    data = read_promoters(DATA / "ecoli" / "iPromoter2L_v9d3.csv", require_labels=True)
    assert len(data) == 5720 and int(data.labels.sum()) == 2860
    tokens = data.tokens()
    assert all(len(t) == 81 for t in tokens[:50])


def test_fasta_labels_in_header_and_side_file(tmp_path):
    fa = tmp_path / "x.fasta"
    fa.write_text(">a label=1 first\nACGT\nacg\n>b|0\nTTTT\n>c some text label:0\nGGG\n")
    data = read_promoters(fa, require_labels=True)
    assert data.ids == ["a", "b|0", "c"] and data.sequences[0] == "ACGTacg"
    assert data.labels.tolist() == [1, 0, 0]

    plain = tmp_path / "y.fa"
    plain.write_text(">a\nACGT\n>b\nTT\n")
    side = tmp_path / "labels.tsv"
    side.write_text("id\tlabel\na\t0\nb\t1\n")
    assert read_promoters(plain, labels=side).labels.tolist() == [0, 1]
    assert read_promoters(plain).labels is None
    with pytest.raises(SequenceError, match="no labels"):
        read_promoters(plain, require_labels=True)
    side.write_text("a,1\n")
    with pytest.raises(SequenceError, match="record 'b' has no label"):
        read_promoters(plain, labels=side)


def test_reader_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sequence,label\nACGT,1\nACGT,maybe\n")
    with pytest.raises(SequenceError, match="label 'maybe'"):
        read_promoters(bad)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("dna,label\nACGT,1\n")
    with pytest.raises(SequenceError, match="no sequence column"):
        read_promoters(nocol)
    with pytest.raises(SequenceError, match="not found"):
        read_promoters(tmp_path / "missing.fa")
    fa = tmp_path / "bad.fa"
    fa.write_text("ACGT\n>x\nAC\n")
    with pytest.raises(SequenceError, match="line 1"):
        list(iter_promoter_records(fa))
    dots = tmp_path / "dots.fa"
    dots.write_text(">ok\nACGT\n>gap seq\nAC.GT\n")
    with pytest.raises(SequenceError, match=r"record 'gap'.*'\.'.*position 3"):
        read_promoters(dots).tokens()


def test_detect_format_by_content(tmp_path):
    (tmp_path / "a.txt").write_text(">x\nACGT\n")
    (tmp_path / "b.txt").write_text("+,S10,\t\tacgt\n")
    (tmp_path / "c.txt").write_text("sequence,label\nACGT,1\n")
    assert [detect_promoter_format(tmp_path / f) for f in ("a.txt", "b.txt", "c.txt")] == ["fasta", "uci", "csv"]


def test_length_buckets_cover_everything_once_and_respect_budget():
    rng = np.random.default_rng(3)
    lengths = rng.integers(5, 97, size=203)
    batches = length_bucketed_batches(lengths, 17, max_tokens=700, shuffle=True, seed=5)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203))
    for b in batches:
        assert len(b) <= 17 and (len(b) == 1 or len(b) * (lengths[b].max() + 1) <= 700)
    # Sorted buckets waste little padding compared with random batches.
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.2 * lengths.sum()
    again = length_bucketed_batches(lengths, 17, max_tokens=700, shuffle=True, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = length_bucketed_batches(lengths, 17, max_tokens=700, shuffle=True, seed=6)
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(batches, other))


def test_gzipped_fasta_streams(tmp_path):
    import gzip

    path = tmp_path / "reads.fa.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(">r1 label=1\nACGT\nNNRY\n>r2 label=0\ngattaca\n")
    assert detect_promoter_format(path) == "fasta"
    assert list(iter_promoter_records(path)) == [("r1", "ACGTNNRY"), ("r2", "gattaca")]
    assert read_promoters(path, require_labels=True).labels.tolist() == [1, 0]


def test_fasta_bom_whitespace_and_comments_follow_the_documented_rule(tmp_path):
    bom = tmp_path / "bom.fa"
    bom.write_bytes(b"\xef\xbb\xbf>a label=1\nACGT\n")  # as Windows editors save it
    assert read_promoters(bom).sequences == ["ACGT"]
    top = tmp_path / "top.fa"
    top.write_text(";a comment before the first record\n>a label=1\nACGT  \r\n\nAAA\n")
    assert read_promoters(top).sequences == ["ACGTAAA"]  # line ends and blank lines are not sequence
    spaced = tmp_path / "spaced.fa"
    spaced.write_text(">a label=1\nACGT\n>b label=0\nACG\nAC GT\n")
    with pytest.raises(SequenceError, match=r"line 5: record 'b' has whitespace at position 6$"):
        read_promoters(spaced)
    tab = tmp_path / "tab.fa"
    tab.write_text(">a label=1\nAC\tGT\n")
    with pytest.raises(SequenceError, match="position 3"):
        list(iter_promoter_records(tab))
    inside = tmp_path / "inside.fa"
    inside.write_text(">a label=1\nACGT\n;note\nAAA\n")
    with pytest.raises(SequenceError, match=r"line 3: a ';' comment line inside record 'a'"):
        read_promoters(inside)
