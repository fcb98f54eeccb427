"""Building blocks of batch inference: token batching, contact ranking, the all-or-nothing writer."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msaformer.errors import MsaformerError
from msaformer.infer.batching import batch_indices, msa_tokens, stream_batches
from msaformer.infer.contacts import rank_contacts, write_ranked_contacts
from msaformer.infer.writer import ResultWriter


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
