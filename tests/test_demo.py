"""The synthetic demo corpus (msaformer.demo): reproducible, parseable in every format, with real signal."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from msaformer.demo import FAMILIES, TSS, DemoSummary, make_demo
from msaformer.errors import MsaformerError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, DemoSummary]:
    out = tmp_path_factory.mktemp("demo") / "corpus"
    return out, make_demo(out, seed=0)


@pytest.fixture(scope="module")
def parsed(corpus):
    """Every alignment file under msa/ (not broken/), parsed: {relative path: [Msa, ...]}."""
    from msaformer.data.parsers import read_alignments

    out, _ = corpus
    files = sorted(p for p in (out / "msa").iterdir() if p.is_file())
    return {p.name: read_alignments(p) for p in files}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _first_word(msa) -> str:
    return msa.names[0].split()[0]


def test_same_seed_is_byte_identical_other_seed_differs(corpus, tmp_path):
    out, summary = corpus
    first = _tree(out)
    assert sorted(first) == list(summary.files)  # no temporary or stray files
    assert summary.families == len(FAMILIES) and summary.alignment_files == 6 and summary.broken_files == 3
    assert summary.promoter_records == 5000 and summary.seconds < 20  # ~2 s; generous for loaded CI machines
    again = tmp_path / "again"
    again.mkdir()
    (again / "README.md").write_text("stale\n")  # an existing folder is fine; its files are replaced
    make_demo(again, seed=0)
    second = _tree(again)
    assert sorted(second) == sorted(first)
    assert [name for name in first if first[name] != second[name]] == []
    other = _tree(make_demo(tmp_path / "other", seed=1).out_dir)
    for name in first:
        if name.startswith("msa/demo_"):
            assert other[name] != first[name], name


def test_bad_out_dir_and_seed(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for target in (blocker, blocker / "sub"):
        with pytest.raises(MsaformerError) as info:
            make_demo(target)
        assert "\n" not in str(info.value)
    with pytest.raises(MsaformerError):
        make_demo(tmp_path / "ok", seed=-1)


def test_every_alignment_parses_with_the_generated_queries(corpus, parsed):
    _, summary = corpus
    queries = dict(summary.queries)
    lengths = {name: length for name, length, _ in FAMILIES}
    depths = {name: depth for name, _, depth in FAMILIES}
    assert sorted(parsed) == ["demo_fam1.a3m", "demo_fam2.a3m.gz", "demo_fam3.sto", "demo_fam4.fasta",
                              "demo_fam5_fam6.a3m", "demo_subsets.tar.gz"]
    assert len(parsed["demo_fam5_fam6.a3m"]) == 2  # NUL-separated blocks
    tar = parsed["demo_subsets.tar.gz"]
    assert len(tar) == 2 and all("msa.sh" not in m.source for m in tar)
    seen_names: list[str] = []
    for msas in parsed.values():
        for msa in msas:
            family = _first_word(msa).removesuffix("_sub")
            assert msa.query == queries[family] and len(queries[family]) == lengths[family]
            assert "-" not in msa.query
            assert msa.depth == (40 if _first_word(msa).endswith("_sub") else depths[family])
            seen_names += [name.split()[0] for name in msa.names]
    assert len(seen_names) == len(set(seen_names))  # record names are unique across the corpus
    assert sorted({n.split("_s")[0] for n in seen_names if not n.endswith("_sub")}) == sorted(lengths)

    fam1 = parsed["demo_fam1.a3m"][0]
    assert not any(name.startswith("ss_") for name in fam1.names)  # hh-suite pseudo-sequences skipped
    assert fam1.metadata == ("64\t1",)
    gaps = fam1.tokens == ord("-")
    assert gaps[:, 0].any() and gaps[:, -1].any()  # N- and C-terminal fragments
    for name in ("demo_fam1.a3m", "demo_fam2.a3m.gz", "demo_fam3.sto"):
        assert (parsed[name][0].deletions > 0).any(), name  # insertions are kept as deletion counts
    assert not parsed["demo_fam4.fasta"][0].deletions.any()

    # The same rows written in two formats parse to the same matrices (insertions included).
    by_member = {m.source.rsplit("::", 1)[1]: m for m in tar}
    for sub, full in ((by_member["demo_fam1_sub.sto"], fam1), (by_member["demo_fam3_sub.a3m"],
                                                                parsed["demo_fam3.sto"][0])):
        assert np.array_equal(sub.tokens, full.tokens[:40])
        assert np.array_equal(sub.deletions, full.deletions[:40])
        assert sub.deletions.any()


def test_broken_files_are_rejected(corpus):
    from msaformer.data.parsers import read_alignments
    from msaformer.errors import AlignmentError

    out, _ = corpus
    broken = sorted((out / "msa" / "broken").iterdir())
    assert [p.name for p in broken] == ["empty.a3m", "not_an_alignment.a3m", "ragged.fasta"]
    for path in broken:
        with pytest.raises(AlignmentError) as info:
            read_alignments(path)
        assert "\n" not in str(info.value)


def test_truth_contacts_and_pairs(corpus):
    out, _ = corpus
    lengths = {name: length for name, length, _ in FAMILIES}
    for name, length in lengths.items():
        text = (out / "truth" / f"{name}_contacts.csv").read_bytes()
        assert text.startswith(b"i,j\n") and b"\r" not in text
        ij = np.loadtxt(out / "truth" / f"{name}_contacts.csv", delimiter=",", skiprows=1, dtype=int)
        i, j = ij[:, 0], ij[:, 1]
        assert i.min() >= 1 and j.max() <= length and (i < j).all() and (j - i >= 6).all()
        assert len(ij) >= length / 2 and (j - i >= 24).sum() >= 3, name
        assert len({(a, b) for a, b in ij.tolist()}) == len(ij)
    with open(out / "truth" / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == list(lengths)
    from msaformer.data.parsers import read_alignments

    for row in rows:
        msa_path, truth_path = out / "truth" / row["msa"], out / "truth" / row["truth"]
        assert msa_path.is_file() and truth_path.is_file()
        msa = read_alignments(msa_path)[int(row["block"]) if row["block"] else 0]
        assert _first_word(msa) == row["name"] and msa.length == lengths[row["name"]]
    assert [r["block"] for r in rows] == ["", "", "", "", "0", "1"]


def _apc_mutual_information(tokens: np.ndarray) -> np.ndarray:
    """Average-product-corrected mutual information [L, L] of an alignment (gaps are a 21st state)."""
    n, length = tokens.shape
    states, index = np.unique(tokens, return_inverse=True)
    q = states.size
    onehot = np.zeros((n, length * q))
    onehot[np.arange(n)[:, None], np.arange(length) * q + index.reshape(n, length)] = 1.0
    pseudo = 0.5
    single = ((onehot.sum(axis=0) + pseudo / q) / (n + pseudo)).reshape(length, q)
    pair = ((onehot.T @ onehot + pseudo / q**2) / (n + pseudo)).reshape(length, q, length, q)
    expected = single[:, :, None, None] * single[None, None, :, :]
    mi = (pair * np.log(pair / expected)).sum(axis=(1, 3))
    np.fill_diagonal(mi, 0.0)
    mean = mi.sum(axis=1) / (length - 1)
    return mi - np.outer(mean, mean) / mean.mean()


def test_planted_contacts_coevolve(corpus, parsed):
    out, _ = corpus
    msa = parsed["demo_fam1.a3m"][0]
    length = msa.length
    ij = np.loadtxt(out / "truth" / "demo_fam1_contacts.csv", delimiter=",", skiprows=1, dtype=int) - 1
    truth = np.zeros((length, length), dtype=bool)
    truth[ij[:, 0], ij[:, 1]] = True
    score = _apc_mutual_information(msa.tokens)
    i, j = np.triu_indices(length, 6)
    is_contact = truth[i, j]
    assert score[i, j][is_contact].mean() > score[i, j][~is_contact].mean() + 0.05
    top = np.argsort(-score[i, j], kind="stable")[:length]
    precision, random_rate = is_contact[top].mean(), is_contact.mean()
    assert precision >= max(0.3, 4 * random_rate), (precision, random_rate)


def _read_split(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["sequence", "label"]
    return [r[0] for r in rows[1:]], np.array([int(r[1]) for r in rows[1:]])


def test_promoter_sets(corpus):
    from msaformer.data.promoter import read_promoters

    out, _ = corpus
    splits = {}
    for split, size in (("train", 4000), ("dev", 500), ("test", 500)):
        path = out / "promoter" / f"{split}.csv"
        assert b"\r" not in path.read_bytes()
        seqs, labels = _read_split(path)
        assert len(seqs) == size and set(labels.tolist()) == {0, 1} and labels.sum() == size // 2
        assert all(len(s) == 70 and set(s) <= set("ACGT") for s in seqs)
        splits[split] = (seqs, labels)
    seqs, labels = splits["train"]
    # TATA box at -31..-26 (positions 3-8, +-1 nt) in positives; decoys elsewhere in negatives.
    tata = np.array([bool(re.search("TATA[AT]A", s[1:10])) for s in seqs])
    assert tata[labels == 1].mean() > 0.1 and tata[labels == 1].mean() > 5 * tata[labels == 0].mean()
    # Initiator YYANWYY with its A on the TSS.
    inr = np.array([bool(re.fullmatch("[CT][CT]A.[AT][CT][CT]", s[TSS - 3 : TSS + 4])) for s in seqs])
    assert inr[labels == 1].mean() > 5 * inr[labels == 0].mean()

    test = read_promoters(out / "promoter" / "test.fa", require_labels=True)
    assert test.ids[:2] == ["test_1", "test_2"]
    assert test.sequences == splits["test"][0] and np.array_equal(test.labels, splits["test"][1])
    long = read_promoters(out / "promoter" / "long.fa")
    assert len(long) == 20 and long.labels is None and all(len(s) == 300 for s in long.sequences)
    readme = (out / "README.md").read_text()
    assert "seed 0" in readme and "synthetic" in readme.lower()
