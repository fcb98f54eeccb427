"""``msaformer embed`` / ``contacts`` / ``score-variants`` through typer's CliRunner."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.model import MSALanguageModel, MsaModelConfig, save_model
from tests.paths import MSA, needs_shared

DATA = MSA
pytestmark = needs_shared
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    return save_model(MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=101)),
                      tmp_path_factory.mktemp("cli") / "tiny.pt")  # fmt: skip


def _invoke(args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_embed_directory_with_plots_and_skip(checkpoint, tmp_path):
    out = tmp_path / "res.h5"
    result = _invoke(["embed", DATA / "colabfold", DATA / "openfold" / "2q2k_A_bfd_uniclust_hits.a3m",
                      "-c", checkpoint, "-o", out, "--plot", "--on-error", "skip", "--max-seqs", "9",
                      "--repr-layers", "-1,0", "--include", "per_tok,mean,contacts"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(tmp_path / "res.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["status"] == "ok") for r in rows] == [
        ("5AWL1", True), ("6A5J", True), ("empty", False), ("2q2k_A_bfd_uniclust_hits", True)
    ]  # fmt: skip
    with h5py.File(out) as h5:
        assert set(h5["6A5J"]) == {"per_tok_layer3", "per_tok_layer0", "mean_layer3", "mean_layer0", "contacts"}
        assert h5["6A5J/per_tok_layer0"].shape == (13, 30)
    assert sorted(p.name for p in (tmp_path / "res_plots").iterdir()) == [
        "2q2k_A_bfd_uniclust_hits.png", "5AWL1.png", "6A5J.png"
    ]  # fmt: skip


def test_embed_fail_is_one_line_exit_1_and_no_output(checkpoint, tmp_path):
    result = _invoke(["embed", DATA / "colabfold" / "empty.a3m", "-c", checkpoint, "-o", tmp_path / "r.h5", "-q"])
    assert result.exit_code == 1
    assert "empty.a3m" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
    result = _invoke(["embed", DATA / "hmmer" / "fn3.sto", "-c", checkpoint, "-o", tmp_path / "r.h5",
                      "--repr-layers", "x"])  # fmt: skip
    assert result.exit_code == 1 and "--repr-layers" in result.output


def test_contacts_command_writes_ranked_csv(checkpoint, tmp_path):
    out = tmp_path / "c.h5"
    result = _invoke(["contacts", DATA / "hmmer" / "fn3.sto", "-c", checkpoint, "-o", out, "--top", "3", "-q"])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as h5:
        assert set(h5["fn3"]) == {"contacts"} and h5["fn3/contacts"].shape == (86, 86)
        assert h5["fn3"].attrs["rows_used"] == 37  # default --max-seqs: min(256, the model's max_rows)
    with open(tmp_path / "c_contacts" / "fn3.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["range"] for r in rows] == ["long"] * 3 + ["medium"] * 3 + ["short"] * 3
    assert int(rows[0]["separation"]) >= 24 and float(rows[0]["probability"]) >= float(rows[1]["probability"])


def test_score_variants_command(checkpoint, tmp_path):
    msa = DATA / "esm" / "UniRef50_E9K9Y4.a3m"
    query = next(line for line in msa.read_text().splitlines()[1:] if line and not line.startswith(">"))
    first = query[0]
    muts = tmp_path / "m.csv"
    muts.write_text(f"mutation\n{first}1A\n{first}1A:{query[4]}5W\n")
    result = _invoke(["score-variants", "--msa", msa, "--mutations", muts, "-c", checkpoint,
                      "-o", tmp_path / "s.csv", "--max-seqs", "7"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(tmp_path / "s.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["mutation"] for r in rows] == [f"{first}1A", f"{first}1A:{query[4]}5W"]
    wrong = "W" if first != "W" else "A"
    muts.write_text(f"mutation\n{wrong}1A\n")
    result = _invoke(["score-variants", "--msa", msa, "--mutations", muts, "-c", checkpoint, "-o", tmp_path / "t.csv"])
    assert result.exit_code == 1
    assert f"{wrong}1A" in result.output and f"has {first} at column 1" in result.output
    assert not (tmp_path / "t.csv").exists()
