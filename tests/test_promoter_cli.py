"""``msaformer promoter`` end to end on the bundled data: the tiny config's MCC floor, predict, explain, evaluate.

One tiny training run (configs/promoter/tiny.yaml on GUE prom_core_tata) is shared by the tests of this module.
"""

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from msaformer.cli.main import app
from tests.paths import PROMOTER, needs_shared

ROOT = Path(__file__).resolve().parents[1]
TATA = PROMOTER / "gue_prom_core_tata"
TINY_TEST_MCC_FLOOR = 0.50

runner = CliRunner()
pytestmark = needs_shared


def _invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("promoter") / "tiny"
    result = _invoke("promoter", "train", "--config", ROOT / "configs/promoter/tiny.yaml", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_tiny_config_beats_its_floor(trained):
    rows = list(csv.DictReader(open(trained / "results.csv")))
    test = next(r for r in rows if r["split"] == "test")
    assert int(test["n"]) == 613
    assert float(test["mcc"]) >= TINY_TEST_MCC_FLOOR, test
    for name in ("model.pt", "metrics.csv", "confusion_matrix.png", "roc.png", "dev_roc.png", "config.yaml"):
        assert (trained / name).is_file(), name
    metrics = list(csv.DictReader(open(trained / "metrics.csv")))
    assert any(r.get("dev_mcc") for r in metrics)


@pytest.mark.slow
def test_predict_matches_training_scores_and_windows(trained, tmp_path):
    out = tmp_path / "preds.csv"
    result = _invoke("promoter", "predict", TATA / "test.csv", "--checkpoint", trained / "model.pt", "--out", out)
    assert result.exit_code == 0, result.output
    preds = list(csv.DictReader(open(out)))
    assert len(preds) == 613 and preds[0]["id"] == "test:1"
    reference = list(csv.DictReader(open(trained / "test_predictions.csv")))
    np.testing.assert_allclose([float(p["probability"]) for p in preds],
                               [float(r["probability"]) for r in reference], atol=2e-5)
    assert all(p["label"] == str(int(float(p["probability"]) >= 0.5)) for p in preds)

    # Longer than the 70-nt window: scored by sliding windows, per-window scores on request.
    fa = tmp_path / "long.fa"
    seq = "".join(r["sequence"] for r in list(csv.DictReader(open(TATA / "test.csv")))[:3])  # 210 nt
    fa.write_text(f">long\n{seq}\n>short\n{seq[:50].lower()}\n")
    wins = tmp_path / "windows.csv"
    result = _invoke("promoter", "predict", fa, "--checkpoint", trained / "model.pt", "--out", out,
                     "--stride", 35, "--windows-out", wins)
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in csv.DictReader(open(out))}
    assert rows["long"]["n_windows"] == "5" and rows["short"]["n_windows"] == "1"
    per_window = [r for r in csv.DictReader(open(wins)) if r["id"] == "long"]
    assert [int(r["start"]) for r in per_window] == [1, 36, 71, 106, 141]
    assert float(rows["long"]["probability"]) == pytest.approx(max(float(r["probability"]) for r in per_window),
                                                               abs=1e-6)


@pytest.mark.slow
def test_bf16_predict_and_evaluate_stay_close_to_fp32(trained, tmp_path):
    """--precision bf16 (autocast) moves probabilities by ~1e-3 on average (this small <cls>-head model: one of
    613 by 0.11) and the metrics by little; a precision outside fp32 / bf16 is refused."""
    out = tmp_path / "bf16.csv"
    result = _invoke("promoter", "predict", TATA / "test.csv", "-c", trained / "model.pt", "-o", out,
                     "--precision", "bf16", "-q")
    assert result.exit_code == 0, result.output
    bf16 = np.array([float(p["probability"]) for p in csv.DictReader(open(out))])
    fp32 = np.array([float(r["probability"]) for r in csv.DictReader(open(trained / "test_predictions.csv"))])
    assert len(bf16) == len(fp32) == 613
    assert np.abs(bf16 - fp32).mean() < 3e-3 and (np.abs(bf16 - fp32) > 2e-2).mean() < 0.01
    assert ((bf16 >= 0.5) != (fp32 >= 0.5)).sum() <= 3
    assert np.abs(bf16 - fp32).max() > 0  # it did run in bfloat16
    metrics = {}
    for precision in ("fp32", "bf16"):
        result = _invoke("promoter", "evaluate", TATA / "test.csv", "-c", trained / "model.pt",
                         "-o", tmp_path / precision, "--precision", precision)
        assert result.exit_code == 0, result.output
        metrics[precision] = next(csv.DictReader(open(tmp_path / precision / "metrics.csv")))
    assert abs(float(metrics["bf16"]["auroc"]) - float(metrics["fp32"]["auroc"])) < 5e-3
    result = _invoke("promoter", "predict", TATA / "test.csv", "-c", trained / "model.pt", "-o", out,
                     "--precision", "fp16")
    assert result.exit_code != 0 and "fp16" in result.output


@pytest.mark.slow
def test_explain_writes_scores_heatmaps_and_profile(trained, tmp_path):
    out = tmp_path / "explain"
    result = _invoke("promoter", "explain", TATA / "test.csv", "--checkpoint", trained / "model.pt", "--out", out,
                     "--max-plots", 3, "--max-records", 40, "--tss", 34)
    assert result.exit_code == 0, result.output
    scores = list(csv.DictReader(open(out / "scores.csv")))
    assert len(scores) == 40 * 70
    first = [float(r["relevance"]) for r in scores if r["id"] == "test:1"]
    assert len(first) == 70 and 0 < sum(first) <= 1 + 1e-4
    assert len(list((out / "heatmaps").glob("*.png"))) == 3
    assert (out / "positional_relevance.png").stat().st_size > 10_000
    profile = [r for r in csv.DictReader(open(out / "positional_relevance.csv")) if r["group"] == "all"]
    assert len(profile) == 70 and all(r["n"] == "40" for r in profile)


@pytest.mark.slow
def test_evaluate_labelled_fasta(trained, tmp_path):
    rows = list(csv.DictReader(open(TATA / "dev.csv")))[:60]
    fa = tmp_path / "dev.fa"
    fa.write_text("".join(f">d{i} label={r['label']}\n{r['sequence']}\n" for i, r in enumerate(rows)))
    out = tmp_path / "eval"
    result = _invoke("promoter", "evaluate", fa, "--checkpoint", trained / "model.pt", "--out", out)
    assert result.exit_code == 0, result.output
    assert "MCC" in result.output
    assert (out / "confusion_matrix.png").is_file() and (out / "roc.png").is_file()
    metrics = next(csv.DictReader(open(out / "metrics.csv")))
    assert int(metrics["n"]) == 60


def test_user_mistakes_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.fa"
    bad.write_text(">ok\nACGT\n>broken\nACGTXACGT\n")
    ckpt = tmp_path / "none.pt"
    result = _invoke("promoter", "predict", bad, "--checkpoint", ckpt, "--out", tmp_path / "o.csv")
    assert result.exit_code == 1 and result.output == f"error: model file not found: {ckpt}\n"
    assert "Traceback" not in result.output

    from msaformer.model.promoter import PromoterClassifier, PromoterModelConfig, save_promoter_model

    save_promoter_model(PromoterClassifier(PromoterModelConfig(embed_dim=8, num_heads=2, ffn_dim=8, num_layers=1)),
                        ckpt)
    result = _invoke("promoter", "predict", bad, "--checkpoint", ckpt, "--out", tmp_path / "o.csv")
    assert result.exit_code == 1
    assert "record 'broken'" in result.output and "position 5" in result.output
    assert len(result.output.strip().splitlines()) == 1

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  embed_dims: 8\n")
    result = _invoke("promoter", "train", "--config", cfg)
    assert result.exit_code == 1 and "embed_dims" in result.output
