"""preprocess(): input expansion, filters, error policy, resume, worker pool, progress."""

from __future__ import annotations

import gzip
import os

import pandas as pd
import pytest

import msaformer.data.preprocess as pp
from msaformer.data.preprocess import expand_inputs, preprocess
from msaformer.data.shards import ShardReader
from msaformer.errors import AlignmentError, MsaformerError, ShardError


def a3m(n_rows: int, width: int = 11, tag: str = "q", dup: int = 0) -> str:
    letters = "ACDEFGHIKLMNPQRSTVWY"
    rows = [f">{tag}\n" + "".join(letters[(j * 3) % 20] for j in range(width))]
    for i in range(1, n_rows):
        seq = "".join(letters[(i + j) % 20] for j in range(width))
        rows.append(f">{tag}_{i}\n{seq[:3]}ka{seq[3:]}")  # one insertion of 2 residues before column 4
    rows += [rows[-1]] * dup
    return "\n".join(rows) + "\n"


@pytest.fixture
def tree(tmp_path):
    """in/a.a3m (5 rows), in/sub/b.sto-like FASTA, in/sub/c.a3m.gz, in/.hidden.a3m, in/notes.txt, bad.a3m."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.a3m").write_text(a3m(5, tag="a"))
    (root / "sub" / "b.fasta").write_text(a3m(3, 7, tag="b", dup=2))
    (root / "sub" / "c.a3m.gz").write_bytes(gzip.compress(a3m(9, 13, tag="c").encode()))
    (root / ".hidden.a3m").write_text(a3m(2))
    (root / "notes.txt").write_text("not an alignment")
    (tmp_path / "bad.a3m").write_text(">q\nACDE\n>r\nACD\n")
    return tmp_path


def test_expand_inputs_directories_globs_files(tree, monkeypatch):
    root = tree / "in"
    found = [p.relative_to(tree).as_posix() for p in expand_inputs([root])]
    assert found == ["in/a.a3m", "in/sub/b.fasta", "in/sub/c.a3m.gz"]
    # explicit files are taken whatever their name; duplicates are dropped
    found = expand_inputs([root / "notes.txt", root / "a.a3m", root])
    assert [p.name for p in found] == ["notes.txt", "a.a3m", "b.fasta", "c.a3m.gz"]
    monkeypatch.chdir(tree)
    assert [str(p) for p in expand_inputs(["in/**/*.a3m*"])] == ["in/a.a3m", "in/sub/c.a3m.gz"]
    assert [p.name for p in expand_inputs([root], exclude=root / "sub")] == ["a.a3m"]
    with pytest.raises(AlignmentError, match="input not found: nope.a3m"):
        expand_inputs(["nope.a3m"])
    with pytest.raises(AlignmentError, match="matches no files"):
        expand_inputs(["in/*.sto"])


def test_filters_max_min_seqs_and_dedup(tree):
    out = tree / "out"
    result = preprocess([tree / "in"], out, max_seqs=4, min_seqs=4, dedup=True)  # b: 3 unique rows
    reader = ShardReader(out)
    assert result.records == 2 and result.filtered == 1 and result.parsed == 3
    assert reader.index["name"].tolist() == ["a", "c"]
    assert reader.index["n_seq"].tolist() == [4, 4]
    c = reader[1]
    assert c.names == ["c", "c_1", "c_2", "c_3"] and c.length == 13
    assert c.deletions[1:, 3].tolist() == [2, 2, 2] and int(c.deletions.sum()) == 6
    inputs = pd.read_csv(out / "inputs.csv", keep_default_na=False)
    assert inputs["status"].tolist() == ["ok", "filtered", "ok"]
    preprocess([tree / "in" / "sub" / "b.fasta"], out, min_seqs=4, overwrite=True)
    assert ShardReader(out).index["n_seq"].tolist() == [5]  # duplicates are kept by default


def test_on_error_fail_names_the_file_and_keeps_finished_work(tree):
    with pytest.raises(AlignmentError, match=r"bad\.a3m.*record 2.*--on-error skip"):
        preprocess([tree / "in" / "a.a3m", tree / "bad.a3m", tree / "in" / "sub"], tree / "out")
    # the input parsed before the failure is committed, so --resume goes on from there
    assert ShardReader(tree / "out").index["name"].tolist() == ["a"]


def test_on_error_skip_writes_the_report(tree):
    report = tree / "rep" / "rejected.csv"
    result = preprocess([tree / "bad.a3m", tree / "in"], tree / "out", on_error="skip", report=report)
    assert result.records == 3 and result.report == report
    rows = pd.read_csv(report)
    assert rows["input"].tolist() == [str(tree / "bad.a3m")]
    assert "aligned columns" in rows["reason"][0]
    # a later run without rejects removes the stale report
    preprocess([tree / "in"], tree / "out", on_error="skip", report=report, overwrite=True)
    assert not report.exists()


def test_option_errors():
    with pytest.raises(MsaformerError, match="--on-error"):
        preprocess(["x"], "o", on_error="ignore")
    with pytest.raises(MsaformerError, match="--max-seqs"):
        preprocess(["x"], "o", max_seqs=0)
    with pytest.raises(MsaformerError, match="exclude each other"):
        preprocess(["x"], "o", resume=True, overwrite=True)


def test_output_that_is_a_file_is_refused_up_front(tree):
    target = next((tree / "in").rglob("*.a3m"))
    with pytest.raises(ShardError, match="is a file"):
        preprocess([target], target)


def test_existing_output_needs_resume_or_overwrite(tree):
    preprocess([tree / "in"], tree / "out")
    with pytest.raises(ShardError, match="already holds shards"):
        preprocess([tree / "in"], tree / "out")


def test_resume_does_no_parsing_work_twice(tree, monkeypatch):
    out = tree / "out"
    first = preprocess([tree / "in"], out, shard_size=2)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    index = pd.read_csv(out / "index.csv")

    def no_parse(*args, **kwargs):
        raise AssertionError("resume parsed an input again")

    monkeypatch.setattr(pp, "_parse_file", no_parse)
    second = preprocess([tree / "in"], out, resume=True)
    assert (second.parsed, second.skipped, second.records, second.bytes_out) == (0, 3, 0, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == before
    pd.testing.assert_frame_equal(pd.read_csv(out / "index.csv"), index)
    monkeypatch.undo()

    # a changed file is parsed again and replaces its old records; a new file is added
    (tree / "in" / "a.a3m").write_text(a3m(6, tag="a"))
    (tree / "in" / "d.a3m").write_text(a3m(2, tag="d"))
    third = preprocess([tree / "in"], out, resume=True)
    assert (third.parsed, third.skipped) == (2, 2)
    reader = ShardReader(out)
    assert sorted(reader.index["name"]) == ["a", "b", "c", "d"]
    assert reader[reader.index.index[reader.index["name"] == "a"][0]].depth == 6
    assert first.records == 3 and len(reader) == 4


def test_workers_give_the_same_shards_and_progress(tree):
    seen = []
    one = preprocess([tree / "in", tree / "bad.a3m"], tree / "w1", workers=1, on_error="skip")
    two = preprocess(
        [tree / "in", tree / "bad.a3m"], tree / "w2", workers=2, on_error="skip",
        progress=lambda s: seen.append((s.files_done, s.records, s.rejected)),
    )  # fmt: skip
    assert (one.records, one.rows, len(one.rejected)) == (two.records, two.rows, len(two.rejected)) == (3, 19, 1)
    pd.testing.assert_frame_equal(pd.read_csv(tree / "w1" / "index.csv"), pd.read_csv(tree / "w2" / "index.csv"))
    assert seen == [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 3, 1)]
    assert two.bytes_in == sum(os.path.getsize(p) for p in expand_inputs([tree / "in", tree / "bad.a3m"]))
