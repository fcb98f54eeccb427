"""The bundled GUE prom_core_all model: the README's two promoter commands, and its benchmark score."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.metrics import matthews_corrcoef
from typer.testing import CliRunner

from msaformer.cli.main import app
from tests.paths import PROMOTER, needs_shared

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "datasets" / "models" / "gue_prom_core_all.pt"
GUE = PROMOTER / "gue_prom_core_all"


@needs_shared
def test_bundled_model_predicts_the_gue_test_set_at_its_recorded_mcc(tmp_path):
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["promoter", "predict", str(GUE / "test.csv"), "--checkpoint", str(MODEL),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(out)
    truth = pd.read_csv(GUE / "test.csv")
    assert len(preds) == len(truth) == 5920
    mcc = matthews_corrcoef(truth["label"], preds["label"])
    assert abs(mcc - 0.7048) < 0.002  # datasets/README.md and BENCHMARKS.md record 0.705


@needs_shared
def test_bundled_model_explains_with_plots(tmp_path):
    out = tmp_path / "explain"
    tata = PROMOTER / "gue_prom_core_tata" / "test.csv"
    result = CliRunner().invoke(app, ["promoter", "explain", str(tata), "--checkpoint", str(MODEL), "--out", str(out),
                                      "--max-plots", "3", "--tss", "34"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "heatmaps").glob("*.png"))) == 3
    assert (out / "positional_relevance.png").stat().st_size > 0
    scores = pd.read_csv(out / "scores.csv")
    per_sequence = scores.groupby("id")["relevance"].sum()
    # a rollout row is a distribution over <cls> and the nucleotides; scores.csv holds the nucleotides' share
    assert len(per_sequence) == 613 and per_sequence.between(0.5, 1.0 + 1e-6).all()
