"""``msaformer evaluate`` (msaformer.infer.masked_lm): the column profile by hand, the model's numbers against an
independent forward pass on the same masked positions, the CSV and the fixed seed."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data.alphabet import TOKEN_TO_ID, encode_msa
from msaformer.data.collate import IGNORE_INDEX, mask_tokens
from msaformer.infer.masked_lm import profile_predictions

runner = CliRunner()


def test_column_profile_by_hand():
    A, C, D = TOKEN_TO_ID["A"], TOKEN_TO_ID["C"], TOKEN_TO_ID["D"]
    ids = np.array([[A, C], [A, C], [D, C], [A, D]])
    targets = np.full_like(ids, IGNORE_INDEX)
    targets[0, 0] = A  # column 0 seen elsewhere: A, D, A  -> p(A) = (2 + 1/27) / 4
    targets[3, 1] = D  # column 1 seen elsewhere: C, C, C  -> p(D) = (0 + 1/27) / 4, prediction C
    predicted, log_p = profile_predictions(ids, targets)
    assert predicted.tolist() == [A, C]
    np.testing.assert_allclose(np.exp(log_p), [(2 + 1 / 27) / 4, (1 / 27) / 4])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from msaformer.demo import make_demo
    from msaformer.model import MSALanguageModel, MsaModelConfig, save_model

    root = tmp_path_factory.mktemp("lm")
    make_demo(root / "demo")
    torch.manual_seed(1)
    model = MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=140, max_rows=64))
    return root, save_model(model, root / "tiny.pt")


def test_evaluate_matches_an_independent_forward_pass(setup, tmp_path):
    from msaformer.data.parsers import read_alignments
    from msaformer.data.sampling import content_rng
    from msaformer.model import load_model

    root, checkpoint = setup
    msa_file = root / "demo" / "msa" / "demo_fam5_fam6.a3m"
    out = tmp_path / "lm.csv"
    result = runner.invoke(app, ["evaluate", str(msa_file), "-c", str(checkpoint), "-o", str(out), "--max-seqs", "30",
                                 "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "column profile accuracy" in result.output
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["demo_fam5_fam6#0", "demo_fam5_fam6#1", "all"]
    assert int(rows[2]["masked"]) == int(rows[0]["masked"]) + int(rows[1]["masked"])
    model = load_model(checkpoint)
    msa = read_alignments(msa_file)[1]
    tokens = msa.tokens[:30]
    ids = encode_msa(tokens)
    inputs, targets = mask_tokens(ids, content_rng(tokens, 0))
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)[None])["logits"][0]
    chosen = torch.from_numpy(targets != IGNORE_INDEX)
    nll = torch.nn.functional.cross_entropy(logits[chosen], torch.from_numpy(targets)[chosen])
    assert int(rows[1]["masked"]) == int(chosen.sum())
    assert float(rows[1]["model_perplexity"]) == pytest.approx(math.exp(nll.item()), abs=1e-3)
    accuracy = (logits[chosen].argmax(-1) == torch.from_numpy(targets)[chosen]).float().mean().item()
    assert float(rows[1]["model_accuracy"]) == pytest.approx(accuracy, abs=1e-4)
    again = tmp_path / "again.csv"
    runner.invoke(app, ["evaluate", str(msa_file), "-c", str(checkpoint), "-o", str(again), "--max-seqs", "30", "-q"])
    assert again.read_text() == out.read_text()  # the fixed seed masks the same positions
