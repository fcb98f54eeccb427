"""Alignment databases as preprocess inputs: the writers in tools/make_databases.py against the format rules, every
golden hash through each layout, refusals, damage, aliases, --merge-per-chain and resume."""

from __future__ import annotations

import csv
import importlib.util
import json
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest

from msaformer.data import parsers
from msaformer.data.databases import count_entries, open_database
from msaformer.data.inputs import expand_inputs, iter_inputs
from msaformer.data.preprocess import preprocess
from msaformer.data.shards import ShardReader
from msaformer.errors import AlignmentError, MsaformerError
from tests.paths import MSA, REPO, needs_shared

_spec = importlib.util.spec_from_file_location("make_databases", REPO / "tools" / "make_databases.py")
mk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mk)

EXPECTED = list(csv.DictReader(open(MSA / "expected.tsv", newline=""), delimiter="\t")) if MSA.is_dir() else []
GOOD = [row for row in EXPECTED if row["status"] == "OK"]
A3M_GOOD = [row for row in GOOD if row["format"] == "a3m" and not row["file"].endswith(".gz")]


def entry_name(row: dict) -> str:
    """The member name of a golden file in an OpenFold layout: its path flattened, with the extension OpenFold
    would give it (.a3m or .sto)."""
    stem = row["file"].rsplit(".", 1)[0].replace("/", "_")
    return f"{stem}.{'sto' if row['format'] == 'stockholm' else 'a3m'}"


def by_name(out) -> dict[str, tuple[str, int]]:
    index = ShardReader(out).index
    return {n: (h, int(d)) for n, h, d in zip(index["name"], index["hash"], index["n_seq"])}


# ------------------------------------------------------------------------------------------ format rules


def test_ffindex_writer_follows_the_format(tmp_path):
    base = mk.write_ffindex(tmp_path / "db", [("b", b">q\nAC\n"), ("a", b">q\nMKV\n")])
    data = (tmp_path / "db.ffdata").read_bytes()
    lines = [line.split("\t") for line in (tmp_path / "db.ffindex").read_text().splitlines()]
    assert [name for name, *_ in lines] == ["a", "b"]  # sorted by name; data in writing order
    for name, offset, length in lines:
        offset, length = int(offset), int(length)
        assert data[offset + length - 1] == 0 and b"\x00" not in data[offset : offset + length - 1]
    assert sum(int(length) for *_, length in lines) == len(data)  # back to back
    db = open_database(base)
    assert db.kind == "ffindex" and open_database(f"{base}.ffdata").kind == open_database(f"{base}.ffindex").kind
    assert [e.key for e in db.entries()] == ["b", "a"]  # read in data order
    assert count_entries(db) == 2


def test_mmseqs_writer_and_split_data(tmp_path):
    payloads = [f">q{i}\n{'ACDEFGHIKL'[: 3 + i]}\n".encode() for i in range(7)]
    base = mk.write_mmseqs(tmp_path / "msa", payloads, split=3)
    assert not (tmp_path / "msa").exists() and (tmp_path / "msa.2").is_file()
    assert struct.unpack("<i", (tmp_path / "msa.dbtype").read_bytes())[0] == mk.MMSEQS_MSA
    joined = b"".join((tmp_path / f"msa.{k}").read_bytes() for k in range(3))
    for line in (tmp_path / "msa.index").read_text().splitlines():
        key, offset, length = map(int, line.split("\t"))
        assert joined[offset : offset + length] == payloads[key] + b"\x00"
    items = list(iter_inputs([base]))
    assert [i.name for i in items] == [str(k) for k in range(7)] and [i.msa.length for i in items] == list(range(3, 10))
    assert items[0].source == f"{base}::0"


def test_alignment_db_writer_and_aliases(tmp_path):
    index = mk.write_alignment_db(tmp_path / "adb", {"1abc_A": [("bfd_uniclust_hits.a3m", b">q\nMKV\n"),
                                                                ("pdb70_hits.hhr", b"Query 1abc_A\n")],
                                                     "2xyz_B": [("mgnify_hits.a3m", b">r\nACDE\n")]},
                                  duplicates={"1abc_B": "1abc_A"})  # fmt: skip
    sup = json.loads(index.read_text())
    assert sup["1abc_B"] == sup["1abc_A"] and sup["1abc_A"]["db"].endswith(".db")
    entries = list(open_database(tmp_path / "adb").entries())
    assert [(e.key, e.aliases) for e in entries] == [("1abc_A/bfd_uniclust_hits.a3m", ("1abc_B/bfd_uniclust_hits.a3m",)),
                                                     ("2xyz_B/mgnify_hits.a3m", ())]  # .hhr ignored, read once
    out = tmp_path / "out"
    preprocess([index], out)
    table = pq.read_table(next((out / "index").glob("*.parquet")))
    assert table.column("name").to_pylist() == ["1abc_A/bfd_uniclust_hits.a3m", "2xyz_B/mgnify_hits.a3m"]
    assert table.column("aliases").to_pylist() == [["1abc_B/bfd_uniclust_hits.a3m"], []]


# ------------------------------------------------------------------------------------ golden hashes


@needs_shared
@pytest.mark.parametrize("layout", ["ffindex", "mmseqs", "alignment_db", "openfold_dir", "openproteinset_dir"])
def test_every_golden_hash_through_each_layout(tmp_path, layout):
    rows = A3M_GOOD if layout in ("ffindex", "mmseqs") else GOOD
    payload = {row["file"]: (MSA / row["file"]).read_bytes() for row in rows}
    if layout == "ffindex":
        source = mk.write_ffindex(tmp_path / "db" / "uniclust_a3m", ((f, payload[f]) for f in payload))
        names = {row["file"]: row["file"] for row in rows}
    elif layout == "mmseqs":
        source = mk.write_mmseqs(tmp_path / "db" / "res.a3m", (payload[r["file"]] for r in rows), split=2)
        names = {row["file"]: str(k) for k, row in enumerate(rows)}
    else:
        chains = {row["file"].replace("/", "_"): [(entry_name(row), payload[row["file"]])] for row in rows}
        names = {row["file"]: f"{row['file'].replace('/', '_')}/{entry_name(row)}" for row in rows}
        if layout == "alignment_db":
            source = mk.write_alignment_db(tmp_path / "db", chains, n_files=3).parent
        else:
            source = mk.write_openfold_dir(tmp_path / "db", chains, a3m_subdir=layout == "openproteinset_dir")
    result = preprocess([source], tmp_path / "out", workers=1, task_bytes=200_000)
    stored = by_name(tmp_path / "out")
    assert result.records == len(rows) and result.rejected == 0
    assert {names[row["file"]]: (row["sha256"], int(row["n_seqs"])) for row in rows} == stored


@needs_shared
def test_databases_and_loose_files_mix_in_one_directory(tmp_path):
    rows = A3M_GOOD[:4]
    root = tmp_path / "corpus"
    mk.write_ffindex(root / "hh" / "uniclust_a3m", [(r["file"], (MSA / r["file"]).read_bytes()) for r in rows[:2]])
    mk.write_ffindex(root / "hh" / "uniclust_hhm", [("x", b"HHsearch 1.5\n")])  # a profile companion: skipped
    mk.write_mmseqs(root / "cf" / "res", [(MSA / rows[2]["file"]).read_bytes()])
    mk.write_mmseqs(root / "cf" / "qdb", [b"MKV\n"], dbtype=mk.MMSEQS_SEQUENCES)  # a sequence db beside it: skipped
    (root / "loose.a3m").write_bytes((MSA / rows[3]["file"]).read_bytes())
    sources = expand_inputs([root])
    assert [(s.kind, s.key) for s in sources] == [("file", "corpus/loose.a3m"), ("database", "corpus/cf/res"),
                                                  ("database", "corpus/hh/uniclust_a3m")]  # fmt: skip
    preprocess([root], tmp_path / "out", workers=2)
    assert sorted(h for h, _ in by_name(tmp_path / "out").values()) == sorted(r["sha256"] for r in rows)


# ---------------------------------------------------------------------------------- refusals, damage


def test_refused_databases_say_what_to_do(tmp_path):
    mk.write_mmseqs(tmp_path / "seqs", [b"MKV\n"], dbtype=mk.MMSEQS_SEQUENCES)
    with pytest.raises(AlignmentError, match="amino-acid sequences, not of MSAs"):
        preprocess([tmp_path / "seqs"], tmp_path / "out")
    mk.write_mmseqs(tmp_path / "packed", [b">q\nMKV\n"], compressed=True)
    with pytest.raises(AlignmentError, match="compressed MMseqs2 database.*mmseqs decompress"):
        preprocess([tmp_path / "packed.index"], tmp_path / "out")
    mk.write_ffindex(tmp_path / "uc_hhm", [("x", b"HHsearch 1.5\n")])
    with pytest.raises(AlignmentError, match="profiles, not of A3M.*uc_a3m"):
        preprocess([tmp_path / "uc_hhm.ffdata"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_damaged_databases_name_the_database_and_entry(tmp_path):
    base = mk.write_ffindex(tmp_path / "db", [("good", b">q\nMKV\n"), ("last", b">q\nMKVW\n")])
    data = tmp_path / "db.ffdata"
    data.write_bytes(data.read_bytes()[:-3])  # cut the last entry
    with pytest.raises(AlignmentError, match=r"db.*'last'.*past the end of the data"):
        preprocess([base], tmp_path / "out")
    result = preprocess([base], tmp_path / "out", on_error="skip")
    assert result.records == 1 and result.rejected == 1
    (tmp_path / "db.ffindex").write_text("good\t0\n")
    with pytest.raises(AlignmentError, match=r"db.ffindex: line 1 is not 'key<TAB>offset<TAB>length'"):
        preprocess([base], tmp_path / "o2")
    base = mk.write_ffindex(tmp_path / "bad", [("broken", b">q\nMKV\n>r\nMK\n")])
    with pytest.raises(AlignmentError, match=r"bad::broken.*2 aligned columns"):
        preprocess([base], tmp_path / "o3")
    (tmp_path / "adb").mkdir()
    (tmp_path / "adb" / "x.db").write_bytes(b">q\nMKV\n")
    (tmp_path / "adb" / "x.index").write_text('{"c": {"db": "x.db", "files": [["a.a3m", 0, 99]]}}')
    with pytest.raises(AlignmentError, match=r"'c/a.a3m' is cut short"):
        preprocess([tmp_path / "adb"], tmp_path / "o4")


# ------------------------------------------------------------------------------------- merge, resume


@needs_shared
def test_merge_per_chain_joins_a_chains_alignments(tmp_path):
    a3m = (MSA / "openfold" / "2q2k_A_bfd_uniclust_hits.a3m").read_bytes()
    sto = (MSA / "openfold" / "2q2k_A_uniprot_hits.sto").read_bytes()
    other = (MSA / "openfold" / "bfd_uniclust_hits.a3m").read_bytes()
    chains = {"2q2k_A": [("bfd_uniclust_hits.a3m", a3m), ("uniprot_hits.sto", sto)],
              "3abc_A": [("bfd_uniclust_hits.a3m", other)]}  # fmt: skip
    root = mk.write_openfold_dir(tmp_path / "alignments", chains, a3m_subdir=True)
    preprocess([root], tmp_path / "split")
    assert sorted(by_name(tmp_path / "split")) == ["2q2k_A/bfd_uniclust_hits.a3m", "2q2k_A/uniprot_hits.sto",
                                                    "3abc_A/bfd_uniclust_hits.a3m"]  # fmt: skip
    preprocess([root], tmp_path / "merged", merge_per_chain=True, workers=1)
    reader = ShardReader(tmp_path / "merged")
    assert reader.index["name"].tolist() == ["2q2k_A", "3abc_A"]
    merged = reader[0]
    parts = parsers.parse_alignment(a3m, "a3m") + parsers.parse_alignment(sto, "stockholm")
    rows = np.concatenate([m.tokens for m in parts])
    unique = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).ravel())
    assert merged.depth == unique.size < rows.shape[0]  # exact duplicate rows dropped
    assert merged.sequences[0] == parts[0].query and merged.names[: parts[0].depth] == parts[0].names
    inputs = pq.read_table(next((tmp_path / "merged" / "inputs").glob("*.parquet"))).to_pylist()
    assert [r["status"] for r in inputs] == ["ok", "merged", "ok"] and [r["n_records"] for r in inputs] == [1, 0, 1]
    # an alignment of another query in a chain is rejected, naming both
    (root / "2q2k_A" / "a3m" / "uniref90_hits.a3m").write_bytes(b">q\nMKV\n")
    with pytest.raises(AlignmentError, match=r"uniref90_hits.a3m: its query has 3 columns.*70"):
        preprocess([root], tmp_path / "m2", merge_per_chain=True)


def test_merge_per_chain_in_an_alignment_db_keeps_alias_chains(tmp_path):
    chains = {"1abc_A": [("a.a3m", b">q\nMKV\n>h1\nMKI\n"), ("b.sto", b"# STOCKHOLM 1.0\nq MKV\nh1 MKI\nh2 MRV\n//\n")]}
    index = mk.write_alignment_db(tmp_path / "adb", chains, duplicates={"1abc_B": "1abc_A"}, n_files=1)
    preprocess([index], tmp_path / "out", merge_per_chain=True)
    table = pq.read_table(next((tmp_path / "out" / "index").glob("*.parquet")))
    assert table.column("name").to_pylist() == ["1abc_A"] and table.column("aliases").to_pylist() == [["1abc_B"]]
    assert ShardReader(tmp_path / "out")[0].sequences == ["MKV", "MKI", "MRV"]


def test_database_resume_skips_unchanged_tasks_and_redoes_changed_ones(tmp_path):
    entries = list(mk.synthetic_entries(300, 4, 40, seed=1))
    base = mk.write_ffindex(tmp_path / "db" / "uc_a3m", entries)
    out = tmp_path / "out"
    first = preprocess([base], out, task_bytes=4000)
    assert first.records == 300 and first.tasks > 5
    again = preprocess([base], out, resume=True, task_bytes=4000)
    assert again.skipped == 300 and again.parsed == 0
    # the database moved and one entry changed: only its task is parsed again
    entries[150] = (entries[150][0], entries[150][1].replace(b"kl", b"mn", 1))
    moved = mk.write_ffindex(tmp_path / "elsewhere" / "uc_a3m", entries)
    third = preprocess([moved], out, resume=True, task_bytes=4000)
    assert 0 < third.parsed < 60 and third.skipped == 300 - third.parsed
    fresh = tmp_path / "fresh"
    preprocess([moved], fresh, task_bytes=4000)
    assert ShardReader(out).index["hash"].tolist() == ShardReader(fresh).index["hash"].tolist()
    assert ShardReader(out).index["input"].tolist()[0] == "uc_a3m::uc00000000"


# ------------------------------------------------------------------------------------------- faults


def test_a_killed_dask_worker_still_gives_the_exact_record_set(tmp_path):
    """SIGKILL one of 2 local Dask workers mid-run: its tasks run again elsewhere; no record lost or doubled."""
    import os
    import signal
    import threading

    import psutil

    base = mk.write_ffindex(tmp_path / "db" / "uc_a3m", mk.synthetic_entries(6000, 6, 80, seed=3))
    killed: list[int] = []

    def kill_a_worker(update) -> None:
        if killed or update.done < 200:
            return
        workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
        if workers:  # a worker process (its nanny, in this process, starts a new one)
            killed.append(workers[0].pid)
            os.kill(workers[0].pid, signal.SIGKILL)

    out = tmp_path / "out"
    timer = threading.Timer(120, lambda: os.kill(os.getpid(), signal.SIGINT))  # never hang CI
    timer.start()
    try:
        result = preprocess([base], out, workers=2, task_bytes=20_000, progress=kill_a_worker)
    finally:
        timer.cancel()
    assert killed, "no worker was killed: the run ended too soon"
    assert result.records == 6000
    clean = preprocess([base], tmp_path / "clean", workers=1, task_bytes=20_000)
    index, expected = ShardReader(out).index, ShardReader(tmp_path / "clean").index
    assert index["name"].tolist() == expected["name"].tolist() and index["hash"].tolist() == expected["hash"].tolist()
    assert clean.tasks == result.tasks and not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_an_existing_dask_cluster_by_address_and_by_scheduler_file(tmp_path, monkeypatch):
    """--scheduler: a cluster started outside msaformer (here a 2-process LocalCluster, as `dask scheduler` +
    `dask worker` would be), given by its tcp:// address and by a scheduler file."""
    from distributed import LocalCluster

    base = mk.write_ffindex(tmp_path / "db" / "uc_a3m", mk.synthetic_entries(400, 4, 30, seed=5))
    clean = preprocess([base], tmp_path / "clean", task_bytes=5000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        by_address = preprocess([base], tmp_path / "a", scheduler=cluster.scheduler_address, task_bytes=5000)
        # what `dask scheduler --scheduler-file` writes (and dask-jobqueue's scheduler.write_scheduler_file): its address
        (tmp_path / "sched.json").write_text(json.dumps({"type": "Scheduler", "address": cluster.scheduler_address}))
        by_file = preprocess([base], tmp_path / "f", scheduler=str(tmp_path / "sched.json"), task_bytes=5000)
    expected = ShardReader(tmp_path / "clean").index["hash"].tolist()
    for out, result in ((tmp_path / "a", by_address), (tmp_path / "f", by_file)):
        assert result.records == clean.records == 400 and result.tasks == clean.tasks
        assert ShardReader(out).index["hash"].tolist() == expected
    monkeypatch.setattr("msaformer.data.engine.CONNECT_TIMEOUT", "2s")
    with pytest.raises(MsaformerError, match="--scheduler tcp://127.0.0.1:9: cannot reach the Dask scheduler"):
        preprocess([base], tmp_path / "x", scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "x").exists()
