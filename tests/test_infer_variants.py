"""Variant effect scores (msaformer.infer.variants): parsing, wild-type checks, parity with a two-pass computation."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from msaformer.data import read_alignments
from msaformer.data.alphabet import MASK_IDX, TOKEN_TO_ID, encode_msa
from msaformer.errors import MsaformerError
from msaformer.infer.msa import MsaInference
from msaformer.infer.variants import Substitution, parse_mutation, read_mutations, score_mutations, score_variants
from msaformer.model import MSALanguageModel, MsaModelConfig, save_model
from tests.paths import MSA, needs_shared

MSA_FILE = MSA / "esm" / "UniRef50_E9K9Y4.a3m"  # 17 x 98
pytestmark = needs_shared
ROWS = 11


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(11)
    return MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=101)).eval()


@pytest.fixture(scope="module")
def msa():
    (full,) = read_alignments(MSA_FILE)
    from msaformer.data.sampling import subsample

    return subsample(full, ROWS, "first")


def _two_pass(model, msa, wt: str, pos: int, mt: str) -> float:
    """log p(mt) - log p(wt) with the query token at 1-based column ``pos`` masked: written independently."""
    tokens = torch.from_numpy(encode_msa(msa.tokens))[None].clone()
    tokens[0, 0, pos] = MASK_IDX
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens)["logits"][0, 0, pos], dim=-1)
    return float(logp[TOKEN_TO_ID[mt]] - logp[TOKEN_TO_ID[wt]])


def _mutations(query: str) -> list[str]:
    p1, p2, p3 = 3, 41, 97
    return [
        f"{query[p1 - 1]}{p1}W",
        f"{query[p2 - 1]}{p2}{'A' if query[p2 - 1] != 'A' else 'G'}",
        f"{query[p3 - 1]}{p3}C:{query[p1 - 1]}{p1}W",
        f"{query[p2 - 1]}{p2}{query[p2 - 1]}",  # synonymous: exactly 0
    ]


@pytest.mark.parametrize("toks_per_batch", [1100, 10_000])  # one masked copy per forward / several per forward
def test_scores_equal_direct_two_pass_computation(model, msa, toks_per_batch):
    runner = MsaInference(model, device="cpu", toks_per_batch=toks_per_batch)
    muts = _mutations(msa.query)
    scores = score_mutations(runner, msa, muts)
    expected = []
    for text in muts:
        total = 0.0
        for part in text.split(":"):
            total += _two_pass(model, msa, part[0], int(part[1:-1]), part[-1])
        expected.append(total)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert scores[3] == 0.0
    assert abs(scores[2] - (expected[0] + _two_pass(model, msa, muts[2][0], 97, "C"))) < 1e-5


def test_parse_mutation():
    assert parse_mutation("A23V") == (Substitution("A", 23, "V"),)
    assert parse_mutation(" a23v:G40W ") == (Substitution("A", 23, "V"), Substitution("G", 40, "W"))
    for bad, match in [("A23", "wild type"), ("23V", "wild type"), ("A0V", "1-based"), ("A2V:", "expected"),
                       ("J5V", "amino-acid"), ("A2V:A2G", "more than once"), ("", "expected")]:  # fmt: skip
        with pytest.raises(MsaformerError, match=match):
            parse_mutation(bad)


def test_wild_type_mismatch_names_mutation_and_found_residue(model, msa):
    runner = MsaInference(model, device="cpu")
    found = msa.query[9]
    wrong = "W" if found != "W" else "A"
    with pytest.raises(MsaformerError, match=rf"{wrong}10A.*has {found} at column 10"):
        score_mutations(runner, msa, [f"{wrong}10A"])
    with pytest.raises(MsaformerError, match="past the query's 98 columns"):
        score_mutations(runner, msa, ["A99V"])


def test_score_variants_file_round_trip(model, tmp_path):
    ckpt = save_model(model, tmp_path / "m.pt")
    (full,) = read_alignments(MSA_FILE)
    muts = _mutations(full.query)
    table = tmp_path / "muts.csv"
    table.write_text("id,mutant,assay\n" + "".join(f"v{i},{m},{i * 0.5}\n" for i, m in enumerate(muts)))
    rows = score_variants(MSA_FILE, table, ckpt, tmp_path / "scores.csv", max_seqs=ROWS, device="cpu")
    with open(tmp_path / "scores.csv") as fh:
        written = list(csv.DictReader(fh))
    assert [r["id"] for r in written] == ["v0", "v1", "v2", "v3"]
    assert list(written[0]) == ["id", "mutant", "assay", "score"]
    assert float(written[3]["score"]) == 0.0
    assert len(rows) == 4

    plain = tmp_path / "muts.txt"
    plain.write_text("\n".join(muts[:2]) + "\n")
    columns, rows, col = read_mutations(plain)
    assert (columns, col, [r["mutation"] for r in rows]) == (["mutation"], "mutation", muts[:2])

    garbage = tmp_path / "g.csv"
    garbage.write_text("foo,bar\n1,2\n")
    with pytest.raises(MsaformerError, match="neither a header"):
        read_mutations(garbage)
    with pytest.raises(MsaformerError, match="not found"):
        score_variants(tmp_path / "nope.a3m", table, ckpt, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_mutation_file_errors_name_file_and_line(model, tmp_path):
    ckpt = save_model(model, tmp_path / "m.pt")
    (full,) = read_alignments(MSA_FILE)
    ok = f"{full.query[0]}1A"
    wrong = "W" if full.query[1] != "W" else "A"
    cases = {
        "syntax.csv": (f"mutation,x\n{ok},1\n\nfoo,2\n", r"syntax.csv, line 4: mutation 'foo'"),
        "wt.csv": (f"# comment\nmutation\n{ok}\n{wrong}2A\n", rf"wt.csv, line 4: mutation {wrong}2A: wild type"),
        "range.csv": (f"{ok}\nA999V\n", r"range.csv, line 2: .*past the query's 98 columns"),
        "ragged.csv": (f"mutation,x\n{ok},1,extra\n", r"ragged.csv, line 2: 3 fields, but the header has 2"),
        "header_only.csv": ("mutation,x\n", "a header but no mutations"),
    }
    for name, (text, pattern) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(MsaformerError, match=pattern):
            score_variants(MSA_FILE, tmp_path / name, ckpt, tmp_path / "o.csv", max_seqs=ROWS, device="cpu")
    (tmp_path / "binary.csv").write_bytes(b"\x9f\x00\xff" * 50)  # not text: one line, not UnicodeDecodeError
    with pytest.raises(MsaformerError, match="binary.csv is not a text file"):
        read_mutations(tmp_path / "binary.csv")
    assert not (tmp_path / "o.csv").exists()
