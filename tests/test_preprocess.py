"""preprocess(): input expansion, filters, error policy, task commits, resume, Dask workers, lock, kill -9."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import msaformer.data.preprocess as pp
from msaformer.data.inputs import expand_inputs
from msaformer.data.preprocess import plan_tasks, preprocess
from msaformer.data.shard_format import LOCK_FILE, committed_tasks
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
    """in/a.a3m (5 rows), in/sub/b.fasta, in/sub/c.a3m.gz, in/.hidden.a3m, in/notes.txt, bad.a3m."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.a3m").write_text(a3m(5, tag="a"))
    (root / "sub" / "b.fasta").write_text(a3m(3, 7, tag="b", dup=2))
    (root / "sub" / "c.a3m.gz").write_bytes(gzip.compress(a3m(9, 13, tag="c").encode()))
    (root / ".hidden.a3m").write_text(a3m(2))
    (root / "notes.txt").write_text("not an alignment")
    (tmp_path / "bad.a3m").write_text(">q\nACDE\n>r\nACD\n")
    return tmp_path


@pytest.fixture
def many(tmp_path):
    """40 small alignment files in corpus/ (about 1.2 KB each), for runs of many tasks."""
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(40):
        (root / f"f{i:02d}.a3m").write_text(a3m(30 + i % 7, 23, tag=f"f{i:02d}"))
    return root


def names(out) -> list[str]:
    return ShardReader(out).index["name"].tolist()


def test_expand_inputs_directories_globs_files_and_keys(tree, monkeypatch):
    root = tree / "in"
    found = expand_inputs([root])
    assert [s.path.relative_to(tree).as_posix() for s in found] == ["in/a.a3m", "in/sub/b.fasta", "in/sub/c.a3m.gz"]
    assert [s.key for s in found] == ["in/a.a3m", "in/sub/b.fasta", "in/sub/c.a3m.gz"]
    # explicit files are taken whatever their name, keyed by their name; a path reached twice is used once
    found = expand_inputs([root / "notes.txt", root / "a.a3m", root])
    assert [s.key for s in found] == ["notes.txt", "a.a3m", "in/sub/b.fasta", "in/sub/c.a3m.gz"]
    monkeypatch.chdir(tree)
    found = expand_inputs(["in/**/*.a3m*"])
    assert [str(s.path) for s in found] == ["in/a.a3m", "in/sub/c.a3m.gz"]
    assert [s.key for s in found] == ["in/a.a3m", "in/sub/c.a3m.gz"]  # below the pattern's fixed part
    assert [s.path.name for s in expand_inputs([root], exclude=root / "sub")] == ["a.a3m"]
    with pytest.raises(AlignmentError, match="input not found: nope.a3m"):
        expand_inputs(["nope.a3m"])
    with pytest.raises(AlignmentError, match="matches no files"):
        expand_inputs(["in/*.sto"])
    (tree / "other").mkdir()
    (tree / "other" / "a.a3m").write_text(a3m(2))
    with pytest.raises(AlignmentError, match="would both be recorded as 'a.a3m'"):  # keys are resume keys
        preprocess(["in/a.a3m", "other/a.a3m"], tree / "out")


def test_filters_max_min_seqs_and_dedup(tree):
    out = tree / "out"
    result = preprocess([tree / "in"], out, max_seqs=4, min_seqs=4, dedup=True)  # b: 3 unique rows
    reader = ShardReader(out)
    assert result.records == 2 and result.filtered == 1 and result.parsed == 3
    assert names(out) == ["a", "c"]
    assert reader.index["n_seq"].tolist() == [4, 4]
    c = reader[1]
    assert c.names == ["c", "c_1", "c_2", "c_3"] and c.length == 13
    assert c.deletions[1:, 3].tolist() == [2, 2, 2] and int(c.deletions.sum()) == 6
    (part,) = (out / "inputs").glob("*.parquet")
    assert pq.read_table(part).column("status").to_pylist() == ["ok", "filtered", "ok"]
    preprocess([tree / "in" / "sub" / "b.fasta"], out, min_seqs=4, overwrite=True)
    assert ShardReader(out).index["n_seq"].tolist() == [5]  # duplicates are kept by default


def test_on_error_fail_names_the_file_and_keeps_finished_tasks(tree, many):
    (many / "f25.a3m").write_text(">q\nACDE\n>r\nACD\n")
    with pytest.raises(AlignmentError, match=r"f25\.a3m.*record 2.*--on-error skip"):
        preprocess([many], tree / "out", task_bytes=4000)
    kept = names(tree / "out")  # the tasks before the bad one committed: --resume goes on from there
    assert kept and kept == [f"f{i:02d}" for i in range(len(kept))] and len(kept) <= 25


def test_a_run_that_commits_nothing_leaves_no_directory(tree):
    with pytest.raises(AlignmentError, match="bad.a3m"):
        preprocess([tree / "bad.a3m"], tree / "out")
    assert not (tree / "out").exists()
    assert preprocess([tree / "in"], tree / "out").records == 3  # nothing blocks the next run


def test_on_error_skip_writes_the_report(tree):
    report = tree / "rep" / "rejected.csv"
    result = preprocess([tree / "bad.a3m", tree / "in"], tree / "out", on_error="skip", report=report)
    assert result.records == 3 and result.rejected == 1 and result.report == report
    lines = report.read_text().splitlines()
    assert lines[0] == "input,reason" and lines[1].startswith(f"{tree / 'bad.a3m'},")
    assert "aligned columns" in lines[1] and "\r" not in report.read_text()
    # a later run without rejects removes the stale report
    preprocess([tree / "in"], tree / "out", on_error="skip", report=report, overwrite=True)
    assert not report.exists()


def test_option_errors(tree):
    with pytest.raises(MsaformerError, match="--on-error"):
        preprocess(["x"], "o", on_error="ignore")
    with pytest.raises(MsaformerError, match="--max-seqs"):
        preprocess(["x"], "o", max_seqs=0)
    with pytest.raises(MsaformerError, match="exclude each other"):
        preprocess(["x"], "o", resume=True, overwrite=True)
    target = next((tree / "in").rglob("*.a3m"))
    with pytest.raises(ShardError, match="is a file"):
        preprocess([target], target)
    preprocess([tree / "in"], tree / "out")
    with pytest.raises(ShardError, match="already holds shards"):
        preprocess([tree / "in"], tree / "out")
    with pytest.raises(ShardError, match=r"other options \(max_seqs None -> 2\)"):
        preprocess([tree / "in"], tree / "out", resume=True, max_seqs=2)


def test_tasks_are_content_defined(many):
    from msaformer.data.preprocess import TaskOptions, _file_ref

    def refs():
        return [_file_ref(s) for s in expand_inputs([many])]

    options = TaskOptions("o", None, 1, False, "gzip", "fail", 4096, 1 << 30, False)
    before = list(plan_tasks(refs(), 3000, options))
    assert len(before) > 4 and sum(len(t.inputs) for t in before) == 40
    (many / "f17b.a3m").write_text(a3m(3, 23, tag="new"))
    after = list(plan_tasks(refs(), 3000, options))
    changed = {t.task for t in after} - {t.task for t in before}
    assert 1 <= len(changed) <= 2  # only the tasks around the new input are re-planned


def test_resume_redoes_only_changed_and_new_inputs(tree, many, monkeypatch):
    out = tree / "out"
    first = preprocess([many], out, task_bytes=3000)
    assert first.tasks > 4 and first.records == 40
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}

    def no_parse(*args, **kwargs):
        raise AssertionError("resume parsed an input again")

    monkeypatch.setattr(pp, "_parse_file", no_parse)
    second = preprocess([many], out, resume=True, task_bytes=3000)
    assert (second.parsed, second.skipped, second.records, second.bytes_out) == (0, 40, 40, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == before
    monkeypatch.undo()

    # a changed file is parsed again with its task; a new file makes a new task; the rest is skipped
    (many / "f05.a3m").write_text(a3m(11, 23, tag="f05"))
    (many / "f40.a3m").write_text(a3m(4, 23, tag="f40"))
    third = preprocess([many], out, resume=True, task_bytes=3000)
    assert 2 <= third.parsed <= 20 and third.parsed + third.skipped == 41  # two tasks of ~7 inputs redone
    reader = ShardReader(out)
    assert names(out) == [f"f{i:02d}" for i in range(41)]  # in input order, each once
    assert reader[5].depth == 11

    # the corpus moved: same keys, same content, nothing to redo
    moved = tree / "elsewhere" / "corpus"
    moved.parent.mkdir()
    shutil.move(many, moved)
    fourth = preprocess([moved], out, resume=True, task_bytes=3000)
    assert (fourth.parsed, fourth.skipped) == (0, 41)


def test_dask_workers_give_the_same_records_and_report_progress(tree, many):
    seen = []
    one = preprocess([many, tree / "bad.a3m"], tree / "w1", workers=1, on_error="skip", task_bytes=3000)
    two = preprocess([many, tree / "bad.a3m"], tree / "w2", workers=2, on_error="skip", task_bytes=3000,
                     progress=seen.append)  # fmt: skip
    assert (one.records, one.rows, one.rejected, one.tasks) == (two.records, two.rows, two.rejected, two.tasks)
    assert (two.records, two.rejected) == (40, 1)
    r1, r2 = ShardReader(tree / "w1"), ShardReader(tree / "w2")
    assert r1.index["hash"].tolist() == r2.index["hash"].tolist()
    assert r1.shards == r2.shards  # shards are named after their tasks, whatever ran them
    assert seen[-1].done == seen[-1].total == 41 and seen[-1].unit == "inputs" and "records" in seen[-1].detail


def test_a_second_run_into_the_same_directory_is_refused(tree):
    out = tree / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")  # this process is alive
    with pytest.raises(ShardError, match="being written by another msaformer preprocess"):
        preprocess([tree / "in"], out)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_FILE).write_text(f"{socket.gethostname()} {dead.stdout.strip()}\n")  # a lock left by a dead run
    assert preprocess([tree / "in"], out).records == 3
    assert not (out / LOCK_FILE).exists()


_SLOW_RUN = """
import sys, time
import msaformer.data.preprocess as pp
plain = pp._parse_file
def slow(*args, **kwargs):
    time.sleep(0.15)
    return plain(*args, **kwargs)
pp._parse_file = slow
pp.preprocess([sys.argv[1]], sys.argv[2], task_bytes=3000)
"""


def test_killed_run_resumes_with_only_unfinished_tasks(tree, many):
    out = tree / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(many), str(out)])
    try:
        deadline = time.time() + 60
        while len(committed_tasks(out)) < 3 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = committed_tasks(out)
    assert len(done) >= 3
    kept = len(names(out))
    assert 0 < kept < 40  # the reader sees exactly the committed tasks
    resumed = preprocess([many], out, resume=True, task_bytes=3000)  # the dead run's lock is taken over
    assert resumed.skipped == kept and resumed.parsed == 40 - kept
    clean = preprocess([many], tree / "clean", task_bytes=3000)
    assert ShardReader(out).index["hash"].tolist() == ShardReader(tree / "clean").index["hash"].tolist()
    assert clean.records == 40 and not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_default_task_size_depends_on_the_corpus_not_the_workers(tree, many):
    from msaformer.data.preprocess import MIN_TASK_BYTES, TASK_BYTES, auto_task_bytes

    assert auto_task_bytes(0) == auto_task_bytes(50 << 20) == MIN_TASK_BYTES
    assert auto_task_bytes(1 << 40) == TASK_BYTES and auto_task_bytes(200 << 20) == 2 << 20
    assert auto_task_bytes(130 << 20) == auto_task_bytes(150 << 20)  # a corpus that grows a little keeps its plan
    one = preprocess([many], tree / "w1", workers=1)
    two = preprocess([many], tree / "w1", workers=2, resume=True)
    assert two.skipped == 40 and two.tasks == one.tasks


def test_resume_with_on_error_fail_stops_at_inputs_an_earlier_run_skipped(tree):
    preprocess([tree / "in", tree / "bad.a3m"], tree / "out", on_error="skip")
    with pytest.raises(AlignmentError, match="bad.a3m"):
        preprocess([tree / "in", tree / "bad.a3m"], tree / "out", resume=True)


def test_overwrite_clears_a_directory_of_the_earlier_layout(tree):
    old = tree / "old"
    old.mkdir()
    for name in ("index.csv", "inputs.csv", "msa-00000.h5"):
        (old / name).write_text("x")
    with pytest.raises(ShardError, match="holds other files"):
        preprocess([tree / "in"], old)
    assert preprocess([tree / "in"], old, overwrite=True).records == 3
    assert sorted(p.name for p in old.iterdir() if p.suffix == ".csv") == []
