"""Golden test: every row of ../shared/datasets/msa/expected.tsv through preprocess -> HDF5 shards -> ShardReader."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from msaformer.data.preprocess import preprocess
from msaformer.data.shards import ShardReader
from msaformer.errors import AlignmentError
from tests.paths import MSA, needs_shared

DATA = MSA
pytestmark = needs_shared
EXPECTED = list(csv.DictReader(open(DATA / "expected.tsv", newline=""), delimiter="\t")) if DATA.is_dir() else []
GOOD = [row for row in EXPECTED if row["status"] == "OK"]
BAD = [row for row in EXPECTED if row["status"] != "OK"]


def _key(row: dict) -> tuple[str, str]:
    return row["file"], row["block"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[ShardReader, object]:
    out = tmp_path_factory.mktemp("golden") / "shards"
    result = preprocess([DATA], out, on_error="skip", workers=1, shard_size=7, task_bytes=1 << 30)  # one task
    return ShardReader(out), result


@pytest.fixture(scope="module")
def stored(shards) -> dict[tuple[str, str], int]:
    reader, _ = shards
    by_key = {}
    for i, (inp, source) in enumerate(zip(reader.index["input"], reader.index["source"])):
        label, rel = inp.split("/", 1)  # the key: the path below the input directory, under its name
        assert label == DATA.name
        block = source.rsplit("#", 1)[1] if "#" in Path(source).name else ""
        by_key[(rel, block)] = i
    return by_key


def test_every_good_file_is_stored_once(shards, stored):
    reader, result = shards
    assert sorted(stored) == sorted(_key(row) for row in GOOD)
    assert len(reader) == len(GOOD) == result.records
    assert result.rows == sum(int(row["n_seqs"]) for row in GOOD)
    assert reader.index["shard"].nunique() == -(-len(GOOD) // 7)


@pytest.mark.parametrize("row", GOOD, ids=[r["file"] + r["block"] for r in GOOD])
def test_golden_row(shards, stored, row):
    reader, _ = shards
    i = stored[_key(row)]
    msa = reader[i]
    assert msa.depth == int(row["n_seqs"])
    assert msa.length == int(row["query_len"])
    assert msa.content_hash() == row["sha256"]
    assert reader.index["hash"].iloc[i] == row["sha256"]
    assert int(msa.deletions.sum(dtype=np.int64)) == int(row["sum_deletions"])
    assert int(msa.deletions.max(initial=0)) == int(row["max_deletion"])
    head = reader.read(i, max_rows=3)
    assert head.depth == min(3, int(row["n_seqs"])) and head.sequences == msa.sequences[:3]


def test_negative_files_are_rejected_with_reasons(shards):
    _, result = shards
    report = list(csv.DictReader(open(result.report, newline="")))
    rejected = {Path(r["input"]).resolve().relative_to(DATA).as_posix(): r["reason"] for r in report}
    assert result.rejected == len(BAD)
    assert sorted(rejected) == sorted(row["file"] for row in BAD)
    assert "empty" in rejected["colabfold/empty.a3m"]
    for row in BAD:
        if row["status"].startswith("ERR_RAGGED"):
            assert "aligned columns" in rejected[row["file"]] and row["query_len"] in rejected[row["file"]]
    assert all(r["reason"] for r in report)


@pytest.mark.parametrize("row", BAD, ids=[r["file"] for r in BAD])
def test_negative_file_fails_the_run(tmp_path, row):
    with pytest.raises(AlignmentError, match=row["file"].split("/")[-1]):
        preprocess([DATA / row["file"]], tmp_path / "out", on_error="fail")


def test_dedup_keeps_the_unique_rows(tmp_path):
    with_dups = [row for row in GOOD if row["n_unique"] != row["n_seqs"]]
    assert with_dups  # P62593, the two Stockholm files, 6A5J
    result = preprocess([DATA / row["file"] for row in with_dups], tmp_path / "d", dedup=True)
    reader = ShardReader(tmp_path / "d")
    assert result.records == len(with_dups)
    for row, depth in zip(with_dups, reader.index["n_seq"]):
        assert depth == int(row["n_unique"]), row["file"]
