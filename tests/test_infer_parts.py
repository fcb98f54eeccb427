"""Building blocks of batch inference: input streaming, row subsampling, token batching, contact ranking,
the atomic writer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError
from msaformer.infer.batching import batch_indices, msa_tokens, stream_batches
from msaformer.infer.contacts import rank_contacts, write_ranked_contacts
from msaformer.infer.inputs import UniqueNames, display_name, expand_inputs, iter_inputs
from msaformer.infer.subsample import select_rows, subsample
from msaformer.infer.writer import ResultWriter

DATA = Path(__file__).resolve().parent.parent / "datasets" / "msa"


# ---------------------------------------------------------------- inputs
def test_directory_inputs_are_streamed_in_order_with_errors_as_items():
    items = list(iter_inputs([DATA / "colabfold", DATA / "biopython" / "flowers.pro.gz"]))
    assert [(i.ordinal, i.name) for i in items] == [(0, "5AWL1"), (1, "6A5J"), (2, "empty"), (3, "flowers")]
    assert items[0].msa.tokens.shape == (1, 10) and items[0].error is None
    assert items[2].msa is None and "empty" in items[2].error
    assert items[3].msa is None and "304" in items[3].error  # ragged: the parser's reason
    assert not items[3].error.startswith(str(DATA))  # source is not repeated in the reason


def test_archive_members_and_blocks_get_their_own_names(tmp_path):
    import tarfile

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.a3m").write_text(">q\nMKV\n")
    (tmp_path / "a" / "two.a3m.gz").write_bytes(__import__("gzip").compress(b">q\nMKVW\n"))
    with tarfile.open(tmp_path / "run.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "a", arcname="a")
    (tmp_path / "blocks.a3m").write_bytes(b">q\nMKV\n\x00>r\nACDE\n")
    items = list(iter_inputs([tmp_path / "run.tar.gz", tmp_path / "blocks.a3m"]))
    assert sorted(i.name for i in items[:2]) == ["one", "two"]
    assert [i.name for i in items[2:]] == ["blocks#0", "blocks#1"]
    assert [i.msa.length for i in items[2:]] == [3, 4]


def test_parser_errors_name_the_file_once(tmp_path):
    # a file that is not an alignment, and one whose NUL-separated block is bad: the reason must not
    # repeat the path (the index and the error line prefix it with the source)
    (tmp_path / "junk.a3m").write_bytes(b"\x01\x02\x03")
    (tmp_path / "blocks.a3m").write_bytes(b">q\nMKV\n\x00>r\nAC1E\n")
    (tmp_path / "junk.ali").write_bytes(b"CLUSTAL W\n")
    items = list(iter_inputs([tmp_path / "junk.a3m", tmp_path / "blocks.a3m", tmp_path / "junk.ali"]))
    for item in items:
        assert item.msa is None and str(tmp_path) not in item.error, item.error
    assert items[1].source == f"{tmp_path / 'blocks.a3m'}#1" and items[1].error.startswith("line 4: ")
    assert items[2].source == str(tmp_path / "junk.ali") and items[2].error.startswith("unknown alignment format")


def test_expand_inputs_errors_and_names(tmp_path):
    with pytest.raises(MsaformerError, match="input not found"):
        expand_inputs([tmp_path / "nope.a3m"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MsaformerError, match="no alignment files"):
        expand_inputs([tmp_path])
    assert display_name(Path("a/x.a3m.gz")) == "x" and display_name(Path("b/y.sto")) == "y"
    assert display_name(Path("c/run.tar.gz")) == "run"


def test_unique_names():
    names = UniqueNames()
    assert [names(n) for n in ["a b/c", "a b/c", "", "a_b_c_2", "sp|P1|X"]] == [
        "a_b_c", "a_b_c_2", "msa", "a_b_c_2_2", "sp_P1_X"
    ]  # fmt: skip


# ---------------------------------------------------------------- subsampling
def _fair_esm_greedy_select(array: np.ndarray, num_seqs: int) -> tuple[list[int], bool]:
    """fair-esm's examples/contact_prediction.ipynb ``greedy_select`` (mode="max"); also returns whether a
    step had a tie (float rounding then decides fair-esm's pick, integer order decides ours)."""
    from scipy.spatial.distance import cdist

    all_indices = np.arange(len(array))
    indices = [0]
    tie = False
    pairwise_distances = np.zeros((0, len(array)))
    for _ in range(num_seqs - 1):
        dist = cdist(array[indices[-1:]], array, "hamming")
        pairwise_distances = np.concatenate([pairwise_distances, dist])
        shifted_distance = np.delete(pairwise_distances, indices, axis=1).mean(0)
        shifted_index = np.argmax(shifted_distance)
        tie |= int(np.sum(np.isclose(shifted_distance, shifted_distance[shifted_index], rtol=0, atol=1e-9))) > 1
        index = np.delete(all_indices, indices)[shifted_index]
        indices.append(int(index))
    return sorted(indices), tie


@pytest.mark.parametrize("seed", range(4))
def test_greedy_diverse_matches_fair_esm(seed):
    rng = np.random.default_rng(seed)
    n, length = 23 + seed, 1001
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY-", dtype=np.uint8)
    tokens = np.repeat(rng.choice(letters, size=(1, length)), n, axis=0)
    # each row mutated at its own rate: widely spread distances, few exact ties at the top
    mutate = rng.random((n, length)) < rng.uniform(0.05, 0.9, size=(n, 1))
    mutate[0] = False
    tokens[mutate] = rng.choice(letters, size=int(mutate.sum()))
    checked = 0
    for k in (2, 3, 5, 7, 11, n - 1):
        expected, tie = _fair_esm_greedy_select(tokens, k)
        if not tie:
            assert select_rows(tokens, k, "greedy_diverse").tolist() == expected
            checked += 1
    assert checked >= 2  # most cases have no tie at the top
    assert select_rows(tokens, n + 3, "greedy_diverse").tolist() == list(range(n))
    closest = np.argsort((tokens != tokens[0]).sum(1))[1:4]  # near-copies of the query are avoided
    assert not set(select_rows(tokens, 7, "greedy_diverse").tolist()) & set(closest.tolist())


def test_subsample_modes_keep_query_first_and_are_deterministic():
    rng = np.random.default_rng(0)
    tokens = rng.choice(np.frombuffer(b"ACDEFG-", dtype=np.uint8), size=(29, 11))
    msa = Msa([f"s{i}" for i in range(29)], tokens, np.zeros_like(tokens))
    first = subsample(msa, 7, "first")
    assert first.names == [f"s{i}" for i in range(7)]
    r1, r2 = subsample(msa, 7, "random", seed=5), subsample(msa, 7, "random", seed=5)
    assert r1.names == r2.names and r1.names[0] == "s0" and len(set(r1.names)) == 7
    assert any(subsample(msa, 7, "random", seed=s).names != r1.names for s in range(6, 10))
    assert select_rows(tokens, 7, "random", seed=5).tolist() == sorted(int(n[1:]) for n in r1.names)
    assert subsample(msa, None, "greedy_diverse") is msa
    with pytest.raises(MsaformerError, match="unknown subsample"):
        subsample(msa, 3, "best")
    with pytest.raises(MsaformerError, match="at least 1"):
        subsample(msa, 0, "first")


# ---------------------------------------------------------------- batching
@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 60)), min_size=1, max_size=30),
       st.integers(1, 5000), st.booleans())  # fmt: skip
def test_batches_cover_everything_once_within_budget(shapes, budget, same_depth):
    batches = batch_indices(shapes, budget, same_depth=same_depth)
    assert sorted(i for b in batches for i in b) == list(range(len(shapes)))
    for b in batches:
        cost = len(b) * msa_tokens(max(shapes[i][0] for i in b), max(shapes[i][1] for i in b))
        assert cost <= budget or len(b) == 1
        assert cost - sum(msa_tokens(*shapes[i]) for i in b) <= 0.25 * cost  # little padding
        if same_depth:
            assert len({shapes[i][0] for i in b}) == 1


def test_stream_batches_windows():
    items = list(range(10))
    got = list(stream_batches(items, lambda x: (3, 5), 10**6, window=4))  # windows bound what is held
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    got = list(stream_batches(items, lambda x: (10 - x, 5), 13 * 6, window=10))  # depth 10-x, 6 tokens a row
    assert sorted(sum(got, [])) == items
    assert all(len(b) * max(10 - x for x in b) <= 13 for b in got)
    assert got[:3] == [[9, 8], [7, 6], [5, 4]]  # shallowest first; 3 rows + 5 rows would be 40% padding
    assert [len(b) for b in stream_batches([5] * 7, lambda x: (x, 5), 6 * 5 * 3)] == [3, 3, 1]  # budget only


# ---------------------------------------------------------------- contacts
def test_ranked_contacts_order_and_content(tmp_path):
    length = 31
    rng = np.random.default_rng(1)
    c = rng.random((length, length)).astype(np.float32)
    c = (c + c.T) / 2
    rows = rank_contacts(c)
    ranges = [r[4] for r in rows]
    n_long = sum(length - s for s in range(24, length))
    n_medium = sum(length - s for s in range(12, 24))
    n_short = sum(length - s for s in range(6, 12))
    assert ranges == ["long"] * n_long + ["medium"] * n_medium + ["short"] * n_short
    for name in ("long", "medium", "short"):
        probs = [r[2] for r in rows if r[4] == name]
        assert probs == sorted(probs, reverse=True)
    for i, j, p, s, _ in rows:
        assert 1 <= i < j <= length and s == j - i and p == pytest.approx(float(c[i - 1, j - 1]))
    top = rank_contacts(c, top=3)
    assert [r[4] for r in top] == ["long"] * 3 + ["medium"] * 3 + ["short"] * 3
    assert write_ranked_contacts(tmp_path / "c.csv", c, top=2) == 6
    with open(tmp_path / "c.csv") as fh:
        assert next(csv.reader(fh)) == ["i", "j", "probability", "separation", "range"]


# ---------------------------------------------------------------- writer
def test_writer_is_atomic_and_sorts_index(tmp_path):
    out = tmp_path / "r.h5"
    with ResultWriter(out, root_attrs={"options": {"a": 1}}, side_dirs={"plots": tmp_path / "r_plots"}) as w:
        w.write("g", {"name": "x"}, {"mean": np.ones(3, dtype=np.float32)})
        w.side["plots"].path("g.png").write_bytes(b"png")
        w.record(1, {"name": "second", "status": "ok"})
        w.record(0, {"name": "first", "status": "bad file"})
        assert not out.exists() and not (tmp_path / "r_plots").exists()
    with open(tmp_path / "r.csv") as fh:
        assert [r["name"] for r in csv.DictReader(fh)] == ["first", "second"]
    assert (tmp_path / "r_plots" / "g.png").read_bytes() == b"png"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RuntimeError):
        with ResultWriter(out, side_dirs={"plots": tmp_path / "r_plots"}) as w:
            w.write("h", {}, {"mean": np.zeros(2)})
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    import h5py

    with h5py.File(out) as h5:
        assert list(h5) == ["g"] and h5.attrs["n_records"] == 1


def test_writer_refuses_a_directory_as_output_before_any_work(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(MsaformerError, match="--out .* is a directory"):
        ResultWriter(tmp_path / "d")
    with pytest.raises(MsaformerError, match="--index .* is a directory"):
        ResultWriter(tmp_path / "r.h5", index=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
