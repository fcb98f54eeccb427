"""`msaformer preprocess / inspect / export` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data.parsers import parse_alignment
from msaformer.data.shards import ShardReader
from tests.paths import MSA, needs_shared

DATA = MSA
pytestmark = needs_shared
SMALL = ["esm/UniRef50_E9K9Y4.a3m", "openfold/2q2k_A_bfd_uniclust_hits.a3m", "hmmer/fn3.sto", "colabfold/6A5J.a3m"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def shard_dir(tmp_path, runner) -> Path:
    out = tmp_path / "shards"
    result = runner.invoke(app, ["preprocess", *[str(DATA / f) for f in SMALL], "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_help_lists_the_data_commands(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("preprocess", "inspect", "export"):
        assert command in result.output
    result = runner.invoke(app, ["preprocess", "--help"])
    for option in ("--workers", "--shard-size", "--max-seqs", "--min-seqs", "--dedup", "--on-error", "--resume"):
        assert option in result.output


def test_preprocess_summary_resume_and_errors(tmp_path, runner, shard_dir):
    assert len(ShardReader(shard_dir)) == 4
    again = runner.invoke(app, ["preprocess", str(DATA / SMALL[0]), "--out", str(shard_dir)])
    assert again.exit_code == 1 and "already holds shards" in again.output and "Traceback" not in again.output
    resumed = runner.invoke(app, ["preprocess", *[str(DATA / f) for f in SMALL], "--out", str(shard_dir), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "skipped (--resume)" in resumed.output and len(ShardReader(shard_dir)) == 4

    bad = [str(DATA / "colabfold/empty.a3m"), str(DATA / SMALL[0])]
    failed = runner.invoke(app, ["preprocess", *bad, "--out", str(tmp_path / "f")])
    assert failed.exit_code == 1
    assert "empty.a3m" in failed.output and "empty file" in failed.output and "Traceback" not in failed.output
    skipped = runner.invoke(app, ["preprocess", *bad, "--out", str(tmp_path / "s"), "--on-error", "skip"])
    assert skipped.exit_code == 0, skipped.output
    assert "1 input(s) rejected" in skipped.output and (tmp_path / "s" / "rejected.csv").is_file()
    missing = runner.invoke(app, ["preprocess", "no/such/file.a3m", "--out", str(tmp_path / "m")])
    assert missing.exit_code == 1 and "input not found: no/such/file.a3m" in missing.output
    wrong = runner.invoke(app, ["preprocess", str(DATA / SMALL[0]), "--out", str(tmp_path / "w"), "--on-error", "x"])
    assert wrong.exit_code == 1 and "--on-error" in wrong.output and len(wrong.output.strip().splitlines()) == 1


def test_preprocess_max_seqs_dedup(tmp_path, runner):
    out = tmp_path / "o"
    args = [str(DATA / "colabfold/6A5J.a3m"), str(DATA / "openfold/2q2k_A_uniprot_hits.sto"), "--out", str(out)]
    result = runner.invoke(app, ["preprocess", *args, "--dedup", "--max-seqs", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert ShardReader(out).index["n_seq"].tolist() == [1, 3]  # 2 -> 1 unique; 21 -> 4 unique -> 3


def test_inspect_table_json_and_records(runner, shard_dir):
    table = runner.invoke(app, ["inspect", str(shard_dir)])
    assert table.exit_code == 0, table.output
    assert "records" in table.stdout and "length (columns)" in table.stdout and "bytes on disk" in table.stdout
    summary = json.loads(runner.invoke(app, ["inspect", str(shard_dir), "--json"]).stdout)
    assert summary["records"] == 4 and summary["rows"] == 17 + 4 + 98 + 2 and summary["shards"] == 1
    assert summary["length"]["min"] == 13 and summary["length"]["max"] == 98
    listing = runner.invoke(app, ["inspect", str(shard_dir), "--records"]).stdout.splitlines()
    assert listing[0].split("\t")[:4] == ["name", "source", "n_seq", "n_res"] and len(listing) == 5
    missing = runner.invoke(app, ["inspect", str(shard_dir / "nope")])
    assert missing.exit_code == 1 and "not a directory" in missing.output


def test_export_round_trips_records(tmp_path, runner, shard_dir):
    out = tmp_path / "all.a3m"
    result = runner.invoke(app, ["export", str(shard_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = parse_alignment(out.read_bytes(), "a3m")
    reader = ShardReader(shard_dir)
    assert [m.content_hash() for m in back] == reader.index["hash"].tolist()
    assert back[0].names == reader[0].names
    one = runner.invoke(app, ["export", str(shard_dir), "--out", "-", "--record", "LAR_DROME/418-503"])
    assert one.exit_code == 0
    (fn3,) = parse_alignment(one.stdout_bytes, "a3m")
    assert fn3.depth == 98 and fn3.length == 86 and fn3.names[0].startswith("LAR_DROME/418-503")
    nope = runner.invoke(app, ["export", str(shard_dir), "--out", str(out), "--record", "nope"])
    assert nope.exit_code == 1 and "no record named 'nope'" in nope.output
