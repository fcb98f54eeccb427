"""HDF5 shards: lossless round trip, slices, chunk packing, atomic task commits, fork-safety, index, export."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import zlib

import h5py
import numpy as np
import pytest

from msaformer.data.chunks import deflate_codec, encode_chunks, encode_record, use_deflate
from msaformer.data.msa import Msa
from msaformer.data.parsers import parse_alignment
from msaformer.data.preprocess import write_msas
from msaformer.data.shard_format import CHUNK_BYTES, FORMAT_VERSION, INDEX_COLUMNS, NAMES_CHUNK_BYTES
from msaformer.data.shard_writer import InputRow, TaskWriter
from msaformer.data.shards import ShardReader, check_shard, export_a3m, summarize
from msaformer.errors import ShardError

LETTERS = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWYX-", dtype=np.uint8)


def make_msa(rng: np.random.Generator, n_seq: int, n_res: int, tag: str) -> Msa:
    tokens = rng.choice(LETTERS, size=(n_seq, n_res)).astype(np.uint8)
    deletions = rng.integers(0, 256, size=(n_seq, n_res)).astype(np.uint8)
    deletions[rng.random((n_seq, n_res)) < 0.8] = 0
    names = [f"{tag}_row{k} desc\twith tab é" for k in range(n_seq)]
    names[min(1, n_seq - 1)] = ""  # bare '>' headers occur (fair-esm's 1a3a_1_A.a3m)
    meta = ("101,102\t1,1",) if n_seq % 2 else ()
    return Msa(names=names, tokens=tokens, deletions=deletions, source=f"dir/{tag}.a3m", metadata=meta)


@pytest.fixture
def msas() -> list[Msa]:
    rng = np.random.default_rng(13)
    shapes = [(13, 22), (1, 7), (5, 1), (31, 9), (2, 45), (17, 3), (3, 3)]
    tags = [f"m{i}" for i in range(len(shapes) - 1)] + ['q,"6']  # CSV quoting in index.csv
    return [make_msa(rng, n, l, tag) for tag, (n, l) in zip(tags, shapes)]


def write(directory, msas, **kwargs) -> list[str]:
    """Writes ``msas`` as a shard directory; returns its shard names (in order)."""
    return write_msas(directory, msas, **kwargs)


def shards(directory) -> list[str]:
    return sorted(p.name for p in directory.glob("msa-*.h5"))


def assert_same(a: Msa, b: Msa) -> None:
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.deletions, b.deletions)
    assert a.names == b.names and a.source == b.source and a.metadata == b.metadata


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_round_trip_is_lossless_across_shards(tmp_path, msas, compression):
    names = write(tmp_path, msas, shard_size_records=3, compression=compression)
    reader = ShardReader(tmp_path)
    assert len(reader) == len(msas)
    assert shards(tmp_path) == names and [n[-7:] for n in names] == ["-000.h5", "-001.h5", "-002.h5"]
    for original, stored in zip(msas, reader):
        assert_same(original, stored)
    assert list(reader.index.columns) == list(INDEX_COLUMNS)
    assert reader.index["hash"].tolist() == [m.content_hash() for m in msas]
    assert reader.index["n_seq"].tolist() == [m.depth for m in msas]
    assert reader.index["n_res"].tolist() == [m.length for m in msas]
    assert reader.index["record"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert reader.index["name"].tolist()[:2] == ["m0_row0", "m1.a3m"]  # empty query header: file name
    assert_same(reader[-1], msas[-1])
    assert reader.index["name"].iloc[-1] == 'q,"6_row0' and reader.index["source"].iloc[-1] == 'dir/q,"6.a3m'
    with pytest.raises(IndexError):
        reader[len(msas)]


def test_encode_chunks_pads_and_shares_zero_chunks():
    chunk = 1000
    data = np.zeros(10 * chunk + 17, dtype=np.uint8)
    data[3 * chunk + 5] = 7
    data[-1] = 9
    raw = encode_chunks(data, chunk, "none")
    packed = encode_chunks(data, chunk, "gzip")
    assert len(raw) == len(packed) == 11 and all(len(r) == chunk for r in raw)
    assert b"".join(raw)[: data.size] == data.tobytes() and raw[-1][18:] == bytes(chunk - 18)
    assert [zlib.decompress(p) for p in packed] == raw
    assert packed[0] is packed[1] and packed[3] is not packed[0]  # all-zero chunks: one shared encoding


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_many_tiny_records_take_about_their_own_size_on_disk(tmp_path, compression):
    rng = np.random.default_rng(5)
    msas = [make_msa(rng, 11, 53, f"t{i}") for i in range(301)]
    write(tmp_path, msas, compression=compression)
    data = sum(2 * m.tokens.size + sum(len(n.encode()) + 1 for n in m.names) for m in msas)
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.h5"))
    # per-record chunk alignment would take 301 * (2 * 64 KiB + 16 KiB) = 44 MB; packing takes ~data + index
    assert on_disk < 2 * data, (on_disk, data)
    reader = ShardReader(tmp_path)
    for k in (0, 1, 150, 300):
        assert_same(reader[k], msas[k])
        np.testing.assert_array_equal(reader.read(k, max_rows=4).tokens, msas[k].tokens[:4])


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_large_records_between_small_ones_round_trip(tmp_path, compression):
    rng = np.random.default_rng(7)
    rows_exact = CHUNK_BYTES // 128  # exactly a whole number of chunks, no tail
    shapes = [(3, 5), (131, 503), (1, 9), (rows_exact, 256), (7, 3), (2, 1), (67, 1001), (131, 503), (3, 3)]
    msas = [make_msa(rng, n, l, f"x{i}") for i, (n, l) in enumerate(shapes)]
    msas[3] = Msa(names=[f"n{k}" * 40 for k in range(rows_exact)], tokens=msas[3].tokens,
                  deletions=np.zeros_like(msas[3].deletions), source="big")  # fmt: skip  (names > 1 chunk)
    names = write(tmp_path, msas, compression=compression, shard_size_records=5)
    reader = ShardReader(tmp_path)
    for k, m in enumerate(msas):
        assert_same(reader[k], m)
        assert reader.read(k, max_rows=2).names == m.names[:2]
    for shard in names:
        with h5py.File(tmp_path / shard, "r") as f:
            rec = f["records"]
            offset, cells = rec["offset"][:], rec["n_seq"][:].astype(np.int64) * rec["n_res"][:]
            names_offset, names_length = rec["names_offset"][:], rec["names_length"][:]
            assert offset[-1] == f["tokens"].shape[0] == f["deletions"].shape[0] == offset[-2] + cells[-1]
            assert names_offset[-1] == f["row_names"].shape[0] == names_offset[-2] + names_length[-1]
            if compression == "none":  # no padding at all
                assert offset[1:].tolist() == np.cumsum(cells).tolist()
                assert names_offset[1:].tolist() == np.cumsum(names_length).tolist()
                continue
            # gzip: records of at least one chunk start on a chunk boundary; smaller ones are packed
            for starts, sizes, chunk in ((offset, cells, CHUNK_BYTES), (names_offset, names_length, NAMES_CHUNK_BYTES)):
                for k, (start, size) in enumerate(zip(starts[:-1], sizes)):
                    if size >= chunk:
                        assert start % chunk == 0
                    else:  # right after the previous record, even when that one was aligned
                        assert start == (starts[k - 1] + sizes[k - 1] if k else 0)
            assert any(names_length >= NAMES_CHUNK_BYTES) == (shard == names[0])


@pytest.mark.parametrize("codec", ["zlib", "isal"])
def test_deflate_encoders_write_standard_gzip_chunks(tmp_path, msas, codec):
    if codec == "isal":
        pytest.importorskip("isal")
    try:
        assert use_deflate(codec) == codec == deflate_codec()
        (name,) = write(tmp_path, msas, compression="gzip")
    finally:
        use_deflate()
    with h5py.File(tmp_path / name, "r") as f:  # HDF5's own gzip filter decodes the chunks
        assert f["tokens"].compression == "gzip"
        assert f["tokens"][:].tobytes() == b"".join(m.tokens.tobytes() for m in msas)
        assert f["deletions"][:].tobytes() == b"".join(m.deletions.tobytes() for m in msas)
        chunk = f["tokens"].id.read_direct_chunk((0,))[1]
        assert zlib.decompress(chunk)[: msas[0].tokens.size] == msas[0].tokens.tobytes()
    with pytest.raises(ShardError, match="MSAFORMER_DEFLATE"):
        use_deflate("lz4")


def test_deflate_falls_back_to_zlib_without_isal(tmp_path, msas, monkeypatch):
    monkeypatch.setitem(sys.modules, "isal", None)  # import isal now raises ImportError
    monkeypatch.setenv("MSAFORMER_DEFLATE", "auto")
    try:
        assert use_deflate() == "zlib"
        with pytest.raises(ShardError, match="pip install isal"):
            use_deflate("isal")
        write(tmp_path, msas[:2])
    finally:
        monkeypatch.undo()
        use_deflate()
    assert_same(ShardReader(tmp_path)[1], msas[1])


def test_shard_size_in_cells_closes_shards(tmp_path, msas):
    names = write(tmp_path, msas, shard_size_bytes=200)  # 13x22 = 286 cells: the first record fills a shard alone
    assert ShardReader(tmp_path).index["shard"].tolist()[:2] == names[:2]


def test_read_max_rows_is_the_leading_slice(tmp_path, msas):
    write(tmp_path, msas)
    reader = ShardReader(tmp_path)
    for k in (1, 4, 13, 50):
        part = reader.read(0, max_rows=k)
        rows = min(k, 13)
        assert part.depth == rows and part.length == 22
        np.testing.assert_array_equal(part.tokens, msas[0].tokens[:rows])
        np.testing.assert_array_equal(part.deletions, msas[0].deletions[:rows])
        assert part.names == msas[0].names[:rows]
    assert reader.read(3, max_rows=2, names=False).names == ["", ""]
    with pytest.raises(ValueError):
        reader.read(0, max_rows=0)


def test_plain_h5py_reads_the_documented_schema(tmp_path, msas):
    (name,) = write(tmp_path, msas[:3])
    with h5py.File(tmp_path / name, "r") as f:
        assert f.attrs["format"] == "msaformer-msa" and f.attrs["format_version"] == FORMAT_VERSION
        assert f.attrs["complete"] and f.attrs["n_records"] == 3 and f.attrs["alphabet"] == "ascii"
        rec = f["records"]
        i = 2
        start, n_seq, n_res = rec["offset"][i], rec["n_seq"][i], rec["n_res"][i]
        tokens = f["tokens"][start : start + n_seq * n_res].reshape(n_seq, n_res)
        a = rec["names_offset"][i]
        names = f["row_names"][a : a + rec["names_length"][i]].tobytes().decode().split("\n")[:-1]
        assert rec["name"].asstr()[i] == "m2_row0" and rec["hash"][i].decode() == msas[2].content_hash()
        assert rec["offset"].shape == (4,) and rec["offset"][-1] == f["tokens"].shape[0]
        # small records are packed back to back: offsets are the running sums of n_seq * n_res
        assert rec["offset"][:].tolist() == [0, 13 * 22, 13 * 22 + 7, 13 * 22 + 7 + 5]
        assert f["tokens"].compression == "gzip" and f["tokens"].chunks == (f.attrs["chunk_bytes"],)
    np.testing.assert_array_equal(tokens, msas[2].tokens)
    assert names == msas[2].names


def _read_hashes(reader: ShardReader) -> list[str]:
    return [m.content_hash() for m in reader]


def test_reader_pickles_and_reopens_per_process(tmp_path, msas):
    write(tmp_path, msas, shard_size_records=2)
    reader = ShardReader(tmp_path)
    reader[0]  # open handles in this process
    assert reader._open
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._open == {}
    assert_same(clone[5], msas[5])
    with mp.get_context("fork").Pool(1) as pool:  # inherits the open handles: must reopen, not reuse
        assert pool.apply(_read_hashes, (reader,)) == [m.content_hash() for m in msas]
    assert_same(reader[1], msas[1])  # the parent's handles still work
    reader.close()


def test_reader_refuses_bad_directories_and_shards(tmp_path, msas):
    with pytest.raises(ShardError, match="not a directory"):
        ShardReader(tmp_path / "missing")
    with pytest.raises(ShardError, match="no shards.json"):
        ShardReader(tmp_path)
    (name,) = write(tmp_path, msas[:2])
    shard = tmp_path / name
    with h5py.File(shard, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ShardError, match="format_version 2 is not supported"):
        ShardReader(tmp_path)[0]
    with h5py.File(shard, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        del f.attrs["complete"]
    with pytest.raises(ShardError, match="incomplete"):
        ShardReader(tmp_path)[0]
    shard.write_bytes(b"not hdf5")
    with pytest.raises(ShardError, match="not a readable HDF5 file"):
        check_shard(shard)
    shard.unlink()
    with pytest.raises(ShardError, match="missing"):
        ShardReader(tmp_path)[1]


def test_damaged_index_part_is_named(tmp_path, msas):
    write(tmp_path, msas[:2])
    (part,) = (tmp_path / "index").glob("*.parquet")
    part.write_bytes(part.read_bytes()[:40])
    with pytest.raises(ShardError, match=f"{part.name}: damaged index part"):
        ShardReader(tmp_path)


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from msaformer.data.chunks import encode_record
    from msaformer.data.msa import Msa
    from msaformer.data.shard_writer import TaskWriter
    w = TaskWriter(sys.argv[1], "00000000000000aa", shard_size_records=2)
    for i in range(5):
        t = np.full((3 + i, 5), ord("A"), np.uint8)
        w.add(encode_record(Msa(names=[f"r{i}"] * (3 + i), tokens=t, deletions=np.zeros_like(t), source=f"s{i}")),
              input_key="k", input_sha256="")
    w._file.flush()
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_killed_task_writer_leaves_nothing_the_reader_sees(tmp_path, msas):
    write(tmp_path, msas[:2])
    before = shards(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    debris = [n for n in os.listdir(tmp_path) if n.startswith(".msa-00000000000000aa-")]
    assert len(debris) == 3  # two finished shards and the open one, all under temporary names
    with pytest.raises(ShardError):
        check_shard(tmp_path / sorted(debris)[-1])
    assert shards(tmp_path) == before and len(ShardReader(tmp_path)) == 2  # nothing of the killed task shows


def test_failed_task_writes_nothing_and_a_rerun_replaces_only_its_own_files(tmp_path, msas):
    write(tmp_path, msas[:1])
    writer = TaskWriter(tmp_path, "00000000000000bb", shard_size_records=2)
    for m in msas[1:4]:
        writer.add(encode_record(m), input_key="k", input_sha256="")
    writer.abort()
    assert not [p for p in tmp_path.iterdir() if "00000000000000bb" in p.name]
    for attempt in range(2):  # the same task committed twice (a retry): the same files, once
        writer = TaskWriter(tmp_path, "00000000000000bb", shard_size_records=2)
        for m in msas[1 : 4 - attempt]:
            writer.add(encode_record(m), input_key="k", input_sha256="")
        writer.commit([InputRow("k", "", "", 0, 0, 3 - attempt, "ok")])
    assert len([p for p in tmp_path.glob("msa-00000000000000bb-*.h5")]) == 1  # the second run's single shard
    reader = ShardReader(tmp_path)
    assert [m.content_hash() for m in reader] == [m.content_hash() for m in msas[:3]]


def test_write_refuses_a_used_directory_and_overwrite_replaces_it(tmp_path, msas):
    write(tmp_path, msas[:2])
    with pytest.raises(ShardError, match="already holds shards; pass overwrite=True"):
        write(tmp_path, msas[2:3])
    write(tmp_path, msas[2:3], overwrite=True)
    reader = ShardReader(tmp_path)
    assert len(reader) == 1
    assert_same(reader[0], msas[2])


def test_summarize_and_export_round_trip(tmp_path, msas):
    write(tmp_path / "s", msas, shard_size_records=4)
    summary = summarize(tmp_path / "s")
    assert summary["inputs"] == 1
    assert summary["records"] == 7 and summary["shards"] == 2
    assert summary["rows"] == sum(m.depth for m in msas)
    assert summary["cells"] == sum(m.tokens.size for m in msas)
    assert summary["length"]["min"] == 1 and summary["length"]["max"] == 45 and summary["depth"]["median"] == 5
    assert summary["bytes"] == sum(p.stat().st_size for p in (tmp_path / "s").glob("*.h5"))
    out = tmp_path / "all.a3m"
    assert export_a3m(tmp_path / "s", out) == 7
    back = parse_alignment(out.read_bytes(), "a3m", source="all.a3m")
    assert [m.content_hash() for m in back] == [m.content_hash() for m in msas]
    assert [m.names for m in back] == [m.names for m in msas]
    assert export_a3m(tmp_path / "s", out, record="m3_row0") == 1
    (only,) = parse_alignment(out.read_bytes(), "a3m")
    np.testing.assert_array_equal(only.tokens, msas[3].tokens)
    with pytest.raises(ShardError, match="no record named 'nope'"):
        export_a3m(tmp_path / "s", out, record="nope")


def test_reader_bounds_open_files(tmp_path, msas, monkeypatch):
    import msaformer.data.shards as shards

    monkeypatch.setattr(shards, "MAX_OPEN_SHARDS", 2)
    write(tmp_path, msas, shard_size_records=1)
    reader = ShardReader(tmp_path)
    for i in [0, 1, 2, 0, 6, 3, 0, 5]:
        assert_same(reader[i], msas[i])
        assert len(reader._open) <= 2
    reader.close()
