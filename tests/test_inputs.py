"""msaformer.data.inputs: the one input expander, and streaming the alignments of files and shard directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from msaformer.data.inputs import UniqueNames, display_name, expand_inputs, iter_inputs
from msaformer.errors import MsaformerError
from tests.paths import MSA, needs_shared

DATA = MSA


@needs_shared
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


