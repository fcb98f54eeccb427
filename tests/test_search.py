"""``msaformer search`` (pyhmmer jackhmmer) and the FASTA inputs of embed / score-variants (--db, --single-sequence)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data import read_alignments
from msaformer.errors import MsaformerError
from msaformer.infer.search import SearchOptions, neff, read_fasta, sample_database, search, to_a3m_rows
from msaformer.search_sample import write_planted

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("planted"), families=4, members=5, decoys=150, seed=3)


@pytest.fixture(scope="module")
def searched(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "msas"
    return search(planted.queries, planted.targets, out, SearchOptions(cpus=2))


def test_search_finds_the_planted_homologs_and_writes_parsable_a3m(planted, searched):
    queries = {ident: seq for ident, _, seq in read_fasta(planted.queries)}
    for result in searched.results:
        msa = read_alignments(searched.out / result.file)[0]
        assert msa.query == queries[result.query]  # query first, every residue a column
        assert msa.length == len(queries[result.query])
        found = {name.split("/")[0] for name in msa.names[1:]}
        if result.query == planted.orphan:
            assert msa.depth == 1 and result.hits == 0 and "no hits" in result.note
            continue
        assert found == set(planted.families[result.query]), result.query
        assert result.hits == len(planted.families[result.query]) and result.depth == msa.depth
        assert 1.0 <= result.neff <= msa.depth
        text = (searched.out / result.file).read_text().splitlines()
        rows = text[1::2]
        # match columns: upper case or '-', as many as the query; insertions lower case
        assert all(sum(1 for c in row if c.isupper() or c == "-") == msa.length for row in rows)
        assert any(c.islower() for row in rows[1:] for c in row)  # the planted insertions
    with open(searched.summary_csv) as fh:
        summary = list(csv.DictReader(fh))
    assert list(summary[0]) == ["query", "file", "length", "hits", "depth", "neff", "time", "note"]
    assert [r["query"] for r in summary] == list(queries)


def test_a3m_rows_from_an_alignment_with_inserts_and_an_uncovered_query_end():
    # query residues 'AC' not in the alignment: padded; column 3 is an insert (query gap)
    rows = to_a3m_rows("ACDEFG", ["DE-FG", "DEKF-", "-ELFG"])
    assert rows == ["ACDEFG", "--DEkF-", "---ElFG"]
    msa = read_alignments_text(rows)
    assert msa.length == 6 and msa.deletions[1, 4] == 1


def read_alignments_text(rows):
    from msaformer.data.parsers import parse_alignment

    text = "".join(f">r{i}\n{r}\n" for i, r in enumerate(rows))
    return parse_alignment(text.encode(), "a3m")[0]


def test_neff_counts_clusters_at_80_percent_identity():
    assert neff(["ACDEFGHIKL"] * 4) == pytest.approx(1.0)
    assert neff(["ACDEFGHIKL", "ACDEFGHIKW", "WWWWWWWWWW"]) == pytest.approx(2.0)  # 90 % identical: one cluster
    assert neff(["ACDEFGHIKL", "ACDEFGHIKW", "ACDEFGHWWW"]) == pytest.approx(1 / 2 + 1 / 3 + 1 / 2)


def test_fasta_errors_name_the_file_and_record(tmp_path):
    bad = tmp_path / "q.fasta"
    bad.write_text(">a\nACDE\n>b\nAC-DE\n")
    with pytest.raises(MsaformerError, match=r"q.fasta, record 2 \(b\).*'-'"):
        read_fasta(bad)
    bad.write_text("")
    with pytest.raises(MsaformerError, match="no FASTA records"):
        read_fasta(bad)
    with pytest.raises(MsaformerError, match="--inc-e-value"):
        SearchOptions(e_value=1e-5, inc_e_value=1e-3)


def test_search_command_on_the_sample_proteome(tmp_path):
    db = sample_database()
    records = read_fasta(db)[:2]
    queries = tmp_path / "q.fasta"
    queries.write_text("".join(f">{i}\n{s}\n" for i, _, s in records))
    result = _invoke("search", queries, "--db", "sample", "-o", tmp_path / "out", "--cpus", "2", "-q",
                     "--iterations", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    for ident, _, seq in records:
        msa = read_alignments(tmp_path / "out" / f"{ident}.a3m")[0]
        assert msa.query == seq.rstrip("*") and msa.depth >= 1
    assert "2 A3M files" in result.output


def test_embed_and_score_variants_take_fasta_with_db_or_single_sequence(planted, tmp_path):
    from msaformer.model import MSALanguageModel, MsaModelConfig, save_model

    torch.manual_seed(2)
    model = save_model(MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=101)), tmp_path / "m.pt")
    out = tmp_path / "e.h5"
    result = _invoke("embed", planted.queries, "--db", planted.targets, "-c", model, "-o", out, "--window", "100",
                     "--include", "mean,contacts", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    with h5py.File(out) as h5:
        assert set(h5) == {"fam00_query", "fam01_query", "fam02_query", "fam03_query", "orphan_query"}
        assert h5["fam00_query"].attrs["depth"] == 6 and h5["orphan_query"].attrs["depth"] == 1
        longest = max(h5, key=lambda g: h5[g].attrs["length"])
        length = h5[longest].attrs["length"]
        assert length > 100 and h5[longest]["contacts"].shape == (length, length)  # windowed
    assert sorted(p.name for p in (tmp_path / "e_msas").iterdir())[0] == "fam00_query.a3m"
    single = tmp_path / "s.h5"
    result = _invoke("embed", planted.queries, "--single-sequence", "-c", model, "-o", single, "--window", "100",
                     "--include", "mean", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    with h5py.File(single) as h5:
        assert {int(g.attrs["rows_used"]) for g in h5.values()} == {1}
        assert not np.allclose(h5["fam00_query/mean"][()], h5["fam01_query/mean"][()])
    one = tmp_path / "one.fasta"
    name, _, seq = min(read_fasta(planted.queries)[:-1], key=lambda r: len(r[2]))
    assert len(seq) <= 100
    one.write_text(f">{name}\n{seq}\n")
    (tmp_path / "muts.txt").write_text(f"{seq[0]}1A\n{seq[1]}2W\n")
    result = _invoke("score-variants", "--msa", one, "--db", planted.targets, "--mutations", tmp_path / "muts.txt",
                     "-c", model, "-o", tmp_path / "scores.csv", "--max-seqs", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 3
    assert read_alignments(tmp_path / "scores_msas" / f"{name}.a3m")[0].depth == 6
    result = _invoke("embed", planted.queries, "--db", planted.targets, "--single-sequence", "-c", model, "-o", out)
    assert result.exit_code == 1 and "not both" in result.output


def test_cli_search_without_db_is_one_line(tmp_path):
    q = tmp_path / "q.fasta"
    q.write_text(">a\nACDEFGHIK\n")
    result = _invoke("search", q, "-o", tmp_path / "o")
    assert result.exit_code == 1 and "--db" in result.output and "Traceback" not in result.output
    result = _invoke("search", q, "--db", tmp_path / "missing.fasta", "-o", tmp_path / "o")
    assert result.exit_code == 1 and "missing.fasta" in result.output
    assert not (tmp_path / "o").exists()


def test_paths_are_safe_and_unique(tmp_path):
    q = tmp_path / "q.fasta"
    q.write_text(">sp|P1|X desc\nACDEFGHIKLMNPQRSTVWY\n>sp|P1|X again\nACDEFGHIKLMNPQRSTVWY\n")
    db = tmp_path / "db.fasta.gz"
    with gzip.open(db, "wt") as fh:  # a gzipped database
        fh.write(">t1 one target\nACDEFGHIKLMNPQRSTVWY\n")
    summary = search(q, db, tmp_path / "o", SearchOptions(cpus=1, iterations=1))
    assert summary.targets == 1
    assert [p.name for p in summary.files] == ["sp_P1_X.a3m", "sp_P1_X_2.a3m"]
    assert Path(summary.files[0]).read_text().startswith(">sp|P1|X desc\nACDEFGHIKLMNPQRSTVWY\n")
