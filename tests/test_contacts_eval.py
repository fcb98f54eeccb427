"""Precision at L (msaformer.contacts.precision) by hand; ``msaformer contacts --method``, ``contacts evaluate``
on the shipped structure pairs and on the demo's planted contacts; ``contacts fit`` then ``evaluate`` through the
model file."""

from __future__ import annotations

import csv
import math

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.contacts.precision import precisions
from tests.paths import STRUCTURES, needs_shared

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _read(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_precision_equals_a_hand_count():
    length = 30
    predicted = np.zeros((length, length))
    for (i, j), score in {(0, 24): 0.9, (1, 26): 0.8, (2, 28): 0.7, (3, 27): 0.7}.items():
        predicted[i, j] = score
    truth = np.zeros((length, length), dtype=bool)
    for i, j in [(0, 24), (2, 28), (0, 25), (5, 29), (10, 16)]:
        truth[i, j] = truth[j, i] = True
    p = precisions(predicted, truth)
    # long range (s >= 24): 21 pairs. Ranked: (0,24) T, (1,26) F, then the tie at 0.7: (2,28) T before (3,27) F
    # (i ascending), then the zeros in (i, j) order: (0,25) T, (0,26), (0,27), (0,28), (0,29), (1,25), ...
    assert p["long_P@L/5"] == pytest.approx(3 / 6)  # top 30 // 5 = 6
    assert p["long_P@L/2"] == pytest.approx(3 / 15)  # (5,29) is 21st: outside the top 15
    assert p["long_P@L"] == pytest.approx(4 / 30)  # only 21 pairs exist: the 9 missing count as wrong
    assert p["long_true"] == 4 and math.isnan(p["medium_P@L"])  # no medium-range contact: no precision
    assert p["short_P@L/5"] == 0.0 and p["short_true"] == 1  # (10,16) ranks after (0,6) .. (0,11)
    valid = np.ones_like(truth)
    valid[5, :] = valid[:, 5] = False  # residue 6 without coordinates: its pairs are not ranked at all
    masked = precisions(predicted, truth, valid)
    assert masked["long_P@L"] == pytest.approx(3 / 30) and masked["long_true"] == 3
    swapped = predicted.copy()
    swapped[3, 27], swapped[2, 28] = 0.75, 0.7  # the tie resolved the other way: (3,27) F now ranks third
    assert precisions(swapped, truth, length=10)["long_P@L/5"] == pytest.approx(1 / 2)  # top 10 // 5 = 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from msaformer.demo import make_demo

    out = tmp_path_factory.mktemp("demo")
    make_demo(out)
    return out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from msaformer.model import MSALanguageModel, MsaModelConfig, save_model

    torch.manual_seed(3)
    model = MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=260, max_rows=64))
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.pt")


def test_evaluate_against_planted_contacts_potts_beats_chance(demo, tmp_path):
    with open(demo / "truth" / "pairs.csv") as fh:
        lines = fh.read().splitlines()
    subset = demo / "truth" / "three.csv"  # fam1 (A3M), fam3 (Stockholm), fam5 (block 0 of a NUL-separated file)
    subset.write_text("\n".join([lines[0], lines[1], lines[3], lines[5]]) + "\n")
    out = tmp_path / "potts"
    result = _invoke("contacts", "evaluate", "--pairs", subset, "--method", "potts", "--potts-iterations", "15",
                     "--max-seqs", "150", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    rows = _read(out / "precision.csv")
    assert [r["name"] for r in rows] == ["demo_fam1", "demo_fam3", "demo_fam5", "mean"]
    assert rows[2]["rows"] == "120" and rows[0]["rows"] == "150" and rows[2]["L"] == "48"
    # chance is the contact density (~0.02 at long range); planted couplings are found
    assert float(rows[-1]["long_P@L/5"]) > 0.5, rows[-1]
    assert "long P@L" in result.output and "demo_fam3" in result.output
    with h5py.File(out / "maps.h5") as h5:
        assert h5["demo_fam3"].shape == (82, 82) and h5["demo_fam3"].dtype == np.float32
        assert h5["true/demo_fam3"][()].sum() == 2 * len(_read(demo / "truth" / "demo_fam3_contacts.csv"))


def test_contacts_method_mi_writes_the_model_layout(demo, tmp_path):
    out = tmp_path / "mi.h5"
    result = _invoke("contacts", demo / "msa" / "demo_fam5_fam6.a3m", "--method", "mi", "-o", out, "--top", "4",
                     "--plot", "-q")
    assert result.exit_code == 0, result.output
    with h5py.File(out) as h5:
        assert set(h5) == {"demo_fam5_fam6_0", "demo_fam5_fam6_1"} and h5.attrs["method"] == "mi"
        assert h5["demo_fam5_fam6_0/contacts"].shape == (48, 48)
    ranked = _read(tmp_path / "mi_contacts" / "demo_fam5_fam6_0.csv")
    assert list(ranked[0]) == ["i", "j", "score", "separation", "range"] and len(ranked) == 12
    assert sorted(p.name for p in (tmp_path / "mi_plots").iterdir()) == ["demo_fam5_fam6_0.png",
                                                                         "demo_fam5_fam6_1.png"]
    bad = _invoke("contacts", demo / "msa" / "demo_fam5_fam6.a3m", "-o", tmp_path / "m.h5")
    assert bad.exit_code == 1 and "--method model needs --checkpoint" in bad.output


def test_fit_then_evaluate_round_trips_through_the_model_file(demo, model_file, tmp_path):
    fitted = tmp_path / "fitted.pt"
    pairs = demo / "truth" / "pairs.csv"
    result = _invoke("contacts", "fit", "--pairs", pairs, "-c", model_file, "-o", fitted, "--max-seqs", "24", "-q")
    assert result.exit_code == 0, result.output
    from msaformer.contacts.fit import fit_contact_head
    from msaformer.contacts.predictors import PredictOptions
    from msaformer.model import load_model

    again = fit_contact_head(pairs, model_file, None, options=PredictOptions(max_seqs=24, device="cpu"))
    model = load_model(fitted)
    np.testing.assert_allclose(model.contact_head.regression.weight.detach().numpy().ravel(), again.weight,
                               rtol=1e-5, atol=1e-6)
    assert model.contact_head.regression.bias.item() == pytest.approx(again.bias, rel=1e-5)
    original = load_model(model_file)
    for key, value in original.state_dict().items():  # nothing but the head changed
        if not key.startswith("contact_head"):
            torch.testing.assert_close(model.state_dict()[key], value)
    out = tmp_path / "eval"
    result = _invoke("contacts", "evaluate", "--pairs", pairs, "-c", fitted, "--max-seqs", "24", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    rows = _read(out / "precision.csv")
    for row, expected in zip(rows, again.train):
        for metric in ("long_P@L", "long_P@L/5", "short_P@L/2"):
            assert float(row[metric] or "nan") == pytest.approx(expected[metric], abs=6e-5, nan_ok=True), (row["name"], metric)  # noqa: E501  CSV: 4 decimals


@needs_shared
def test_evaluate_the_shipped_pairs_and_fail_without_touching_the_output(tmp_path):
    out = tmp_path / "shipped"
    result = _invoke("contacts", "evaluate", "--pairs", STRUCTURES / "pairs.tsv", "--method", "mi",
                     "--max-seqs", "300", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in _read(out / "precision.csv")}
    assert list(rows) == ["1A3A_A", "2Q2K_A", "2QKE_E_afcluster", "4QHF_A_afcluster", "1K0N_A_afcluster", "mean"]
    assert (rows["1A3A_A"]["L"], rows["1A3A_A"]["long_true"], rows["1K0N_A_afcluster"]["observed"]) == ("145", "229", "226")
    assert rows["2Q2K_A"]["long_P@L"] == "" and rows["2Q2K_A"]["rows"] == "4"  # no long-range contact at all
    values = [float(r["long_P@L/5"]) for name, r in rows.items() if name not in ("mean", "2Q2K_A")]
    assert float(rows["mean"]["long_P@L/5"]) == pytest.approx(np.mean(values), abs=1e-4)
    assert float(rows["1A3A_A"]["long_P@L/5"]) > 0.2  # MI finds 1A3A's contacts (chance: ~0.02)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{n}.png" for n in rows if n != "mean")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.csv"
    bad.write_text(f"name,msa,structure,chain\nx,{STRUCTURES.parent / 'msa/esm/1a3a_1_A.a3m'},"
                   f"{STRUCTURES / '1a3a.pdb.gz'},Q\n")
    failed = _invoke("contacts", "evaluate", "--pairs", bad, "--method", "mi", "-o", out, "-q")
    assert failed.exit_code == 1 and "1a3a.pdb.gz: no chain 'Q' (chains: A, B, C, D)" in failed.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_contacts_group_help_and_default_command():
    text = " ".join(runner.invoke(app, ["contacts", "--help"], env={"COLUMNS": "200"}).output.split())
    assert all(name in text for name in ("predict", "evaluate", "fit")) and "runs 'contacts predict'" in text
    for command in (["contacts", "predict"], ["contacts", "evaluate"], ["contacts", "fit"], ["evaluate"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        if command[-1] != "fit" and command != ["evaluate"]:
            assert "[model|potts|mi]" in " ".join(result.output.split()), command
    missing = runner.invoke(app, ["contacts", "nope.a3m", "--method", "mi", "-o", "x.h5"])
    assert missing.exit_code == 1 and "input not found: nope.a3m" in missing.output  # ran `contacts predict`


def test_pairs_file_and_fit_errors_are_one_line(demo, model_file, tmp_path):
    from msaformer.contacts.evaluate import read_pairs
    from msaformer.errors import MsaformerError

    bad = tmp_path / "pairs.csv"
    bad.write_text("name,msa\nx,a.a3m\n")
    with pytest.raises(MsaformerError, match="pairs.csv: the header needs columns name, msa and either"):
        read_pairs(bad)
    bad.write_text("name,msa,truth\nx,a.a3m,t.csv\nx,b.a3m,t.csv\n")
    with pytest.raises(MsaformerError, match=r"pairs.csv: line 3: name 'x' is used twice"):
        read_pairs(bad)
    empty_truth = tmp_path / "none.csv"
    empty_truth.write_text("i,j\n")
    msa = demo / "msa" / "demo_fam1.a3m"
    bad.write_text(f"name,msa,truth\nx,{msa},{empty_truth}\n")
    result = _invoke("contacts", "fit", "--pairs", bad, "-c", model_file, "-o", tmp_path / "f.pt", "--max-seqs", "8")
    assert result.exit_code == 1 and "no true contact" in result.output and not (tmp_path / "f.pt").exists()
    bad.write_text(f"name,msa,truth,block\nx,{demo / 'msa' / 'demo_fam5_fam6.a3m'},{empty_truth},\n")
    result = _invoke("contacts", "evaluate", "--pairs", bad, "--method", "mi", "-o", tmp_path / "e")
    assert result.exit_code == 1 and "holds 2 alignments; say which in the pairs file's block column" in result.output
