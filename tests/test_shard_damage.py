"""Damaged shard directories: every read refuses them in one line, ``verify`` finds them, and ``preprocess
--resume`` repairs them by parsing the damaged tasks' inputs again, or fails in one line; it never reports
success on a directory the reader refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data.shard_format import INDEX_DIR
from msaformer.data.shards import ShardReader
from msaformer.data.verify import verify_directory
from msaformer.errors import ShardError
from tests.paths import MSA, needs_shared

pytestmark = needs_shared
INPUTS = [str(MSA / f) for f in ("esm/UniRef50_E9K9Y4.a3m", "openfold/2q2k_A_bfd_uniclust_hits.a3m",
                                 "hmmer/fn3.sto", "colabfold/6A5J.a3m")]  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """One shard directory per compression, written once (tests copy them)."""
    runner = CliRunner()
    made = {}
    for compression in ("gzip", "none"):
        out = tmp_path_factory.mktemp("pristine") / compression
        result = runner.invoke(app, ["preprocess", *INPUTS, "--out", str(out), "-q", "--compression", compression,
                                     "--task-size", "100K"])  # fmt: skip
        assert result.exit_code == 0, result.output
        made[compression] = out
    return made


def _copy(pristine: dict, compression: str, tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    shutil.copytree(pristine[compression], out)
    return out


def _first_shard(out: Path) -> Path:
    return sorted(out.glob("msa-*.h5"))[0]


def _flip_token_bytes(out: Path) -> None:
    shard = _first_shard(out)
    with h5py.File(shard, "r") as f:
        start = f["tokens"].id.get_chunk_info(0).byte_offset
    data = bytearray(shard.read_bytes())
    for k in range(start + 100, start + 110):
        data[k] ^= 0xFF
    shard.write_bytes(bytes(data))


def _set_attr(name, value):
    def damage(out: Path) -> None:
        with h5py.File(_first_shard(out), "r+") as f:
            f.attrs[name] = value
    return damage


def _truncate_shard(out: Path) -> None:
    shard = _first_shard(out)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def _rewrite_index(change):
    def damage(out: Path) -> None:
        part = sorted((out / INDEX_DIR).glob("*.parquet"))[0]
        table = pq.read_table(part)
        column = table.schema.names.index(change[0])
        values = table.column(change[0]).to_pylist()
        values[0] = change[1](values[0])
        table = table.set_column(column, change[0], pa.array(values, type=table.schema.field(change[0]).type))
        pq.write_table(table, part)
    return damage


def _shrink_record(out: Path) -> None:
    with h5py.File(_first_shard(out), "r+") as f:
        n_seq = f["records/n_seq"]
        n_seq[0] = n_seq[0] + 10_000  # the record's rows now reach past the next record


DAMAGE = {
    "missing shard": lambda out: _first_shard(out).unlink(),
    "truncated shard": _truncate_shard,
    "incomplete shard": _set_attr("complete", False),
    "unknown format_version": _set_attr("format_version", 99),
    "record past the shard's end": _rewrite_index(("record", lambda r: r + 1000)),
    "index names a path outside": _rewrite_index(("shard", lambda s: "../other/x.h5")),
    "record table out of bounds": _shrink_record,
    "truncated index part": lambda out: (p := sorted((out / INDEX_DIR).glob("*.parquet"))[0]).write_bytes(
        p.read_bytes()[:100]),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damage_is_one_line_everywhere_and_resume_repairs_it(pristine, tmp_path, case):
    out = _copy(pristine, "gzip", tmp_path)
    DAMAGE[case](out)
    runner = CliRunner()

    with pytest.raises(ShardError) as err:  # the reader: on opening, or at the latest on reading every record
        reader = ShardReader(out)
        for i in range(len(reader)):
            reader.read(i)
    assert "\n" not in str(err.value) and str(out) in str(err.value)

    for args in (["verify", str(out), "-q"], ["inspect", str(out), "--verify"], ["export", str(out), "-o", "/dev/null"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output and "error:" in result.output, result.output

    # the inputs given again: the damaged task is parsed again, the directory reads and verifies
    resumed = runner.invoke(app, ["preprocess", *INPUTS, "--out", str(out), "-q", "--resume", "--task-size", "100K"])
    assert resumed.exit_code == 0, resumed.output
    report = verify_directory(out)
    assert report.ok and report.verified == len(ShardReader(out)) == len(ShardReader(pristine["gzip"]))


def test_resume_without_the_damaged_tasks_inputs_fails_in_one_line(tmp_path):
    runner = CliRunner()
    out = tmp_path / "shards"
    for given in (INPUTS[:1], INPUTS[1:2]):  # two runs: two tasks, each of its own input
        result = runner.invoke(app, ["preprocess", *given, "--out", str(out), "-q", "--resume"])
        assert result.exit_code == 0, result.output
    index = ShardReader(out).index
    (out / index["shard"][index["input"].str.endswith(Path(INPUTS[0]).name)].iloc[0]).unlink()
    result = runner.invoke(app, ["preprocess", INPUTS[1], "--out", str(out), "-q", "--resume"])
    assert result.exit_code == 1, result.output
    assert "shard file is missing" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["preprocess", *INPUTS[:2], "--out", str(out), "-q", "--resume"])
    assert result.exit_code == 0 and verify_directory(out).ok, result.output


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_flipped_bytes_are_found_and_repaired(pristine, tmp_path, compression):
    out = _copy(pristine, compression, tmp_path)
    _flip_token_bytes(out)
    report = verify_directory(out)
    assert len(report.problems) == 1 and "record 0" in report.problems[0]
    expected = "unreadable shard data" if compression == "gzip" else "content hash mismatch"
    assert expected in report.problems[0]
    reader = ShardReader(out)
    if compression == "gzip":  # deflate's own checksum: any read refuses it
        with pytest.raises(ShardError, match="record 0: unreadable shard data"):
            reader.read(reader.index["shard"].tolist().index(_first_shard(out).name))
    else:  # uncompressed data carries no checksum: only the content hash (verify, on request) tells
        with pytest.raises(ShardError, match="content hash mismatch"):
            for i in range(len(reader)):
                reader.verify(i)
    result = CliRunner().invoke(app, ["preprocess", *INPUTS, "--out", str(out), "-q", "--resume",
                                      "--compression", compression, "--task-size", "100K"])  # fmt: skip
    assert result.exit_code == 0 and "repaired" in result.output, result.output
    assert verify_directory(out).ok


def test_verify_reports_counts_on_an_intact_directory(pristine):
    report = verify_directory(pristine["none"])
    n = len(ShardReader(pristine["none"]))
    assert report.ok and report.records == report.verified == n and report.tasks >= 1
    result = CliRunner().invoke(app, ["verify", str(pristine["none"]), "-q"])
    assert result.exit_code == 0 and f"{n} records" in result.output
    reader = ShardReader(pristine["none"])
    for i in range(n):
        reader.verify(i)
    assert np.all(reader.n_seq >= 1)
