"""Promoter ensembles (probabilities averaged over checkpoints), the moving average of the weights, the
dev-chosen threshold."""

import csv

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data.promoter import encode
from msaformer.errors import MsaformerError
from msaformer.model.promoter import (
    PromoterClassifier,
    PromoterModelConfig,
    load_promoter_models,
    promoter_probabilities,
    save_promoter_model,
)
from msaformer.train.promoter import _WeightAverage, tune_threshold


def _model(seed, **kw) -> PromoterClassifier:
    torch.manual_seed(seed)
    cfg = dict(embed_dim=16, num_layers=1, num_heads=2, ffn_dim=16, max_length=30, dropout=0.0, conv_stem=5,
               pooling="mean")
    cfg.update(kw)
    model = PromoterClassifier(PromoterModelConfig(**cfg)).eval()
    with torch.no_grad():  # spread the outputs: a freshly initialised model says ~0.5 for everything
        model.head[-1].weight.mul_(200.0)
    return model


def _seqs(n, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), size=rng.integers(12, 30))) for _ in range(n)]


def test_ensemble_probability_is_the_mean_of_its_members(tmp_path):
    seqs = _seqs(40)
    tokens = [encode(s) for s in seqs]
    singles = []
    for k in range(3):
        model = _model(k)
        save_promoter_model(model, tmp_path / f"m{k}.pt", metadata={"threshold": 0.3 + 0.1 * k})
        singles.append(promoter_probabilities(model, tokens))
    assert np.ptp(singles[0]) > 0.2 and not np.allclose(singles[0], singles[1], atol=1e-3)
    ensemble, meta = load_promoter_models([tmp_path / f"m{k}.pt" for k in range(3)])
    np.testing.assert_allclose(promoter_probabilities(ensemble, tokens, batch_size=7), np.mean(singles, axis=0),
                               atol=1e-6)
    assert meta["threshold"] == pytest.approx(0.4) and len(meta["members"]) == 3
    one, meta1 = load_promoter_models([tmp_path / "m1.pt"])
    np.testing.assert_allclose(promoter_probabilities(one, tokens), singles[1], atol=1e-7)
    assert meta1["threshold"] == pytest.approx(0.4)

    # The CLI: predict and evaluate take -c several times; the output is the ensemble's.
    fa = tmp_path / "in.fa"
    fa.write_text("".join(f">s{i} label={i % 2}\n{s}\n" for i, s in enumerate(seqs)))
    runner = CliRunner()
    args = ["-c", str(tmp_path / "m0.pt"), "-c", str(tmp_path / "m2.pt")]
    result = runner.invoke(app, ["promoter", "predict", str(fa), *args, "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    got = [float(r["probability"]) for r in csv.DictReader(open(tmp_path / "p.csv"))]
    np.testing.assert_allclose(got, (singles[0] + singles[2]) / 2, atol=2e-6)
    result = runner.invoke(app, ["promoter", "evaluate", str(fa), *args, "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert float(next(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))["threshold"]) == pytest.approx(0.4)

    save_promoter_model(_model(5, max_length=40), tmp_path / "wide.pt")
    with pytest.raises(MsaformerError, match="max_length"):
        load_promoter_models([tmp_path / "m0.pt", tmp_path / "wide.pt"])


def test_weight_average_follows_the_ema_formula():
    model = _model(0)
    ema = _WeightAverage(model, 0.9)
    w0 = model.stem.weight.detach().clone()
    with torch.no_grad():
        model.stem.weight.add_(1.0)
    ema.update(model)
    with torch.no_grad():
        model.stem.weight.add_(1.0)
    ema.update(model)
    # d0 = min(0.9, 1/10) = 0.1: avg1 = 0.1 w0 + 0.9 (w0 + 1) = w0 + 0.9
    # d1 = min(0.9, 2/11): avg2 = d1 avg1 + (1 - d1) (w0 + 2) = w0 + 1.8
    torch.testing.assert_close(ema.state(model)["stem.weight"], w0 + 1.8)
    for _ in range(200):
        ema.update(model)
    assert ema.updates == 202 and min(0.9, 203 / 212) == 0.9  # the decay has reached its set value
    torch.testing.assert_close(ema.state(model)["stem.weight"], w0 + 2.0, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.stem.weight.detach(), w0 + 2.0)  # the live weights are not touched


def test_tuned_threshold_maximises_mcc_on_the_given_split():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    probs = np.array([0.1, 0.2, 0.65, 0.7, 0.8, 0.9, 0.3, 0.66])
    t = tune_threshold(labels, probs)
    assert 0.65 < t <= 0.66  # the only cut that separates the classes: MCC 1
    assert tune_threshold(np.array([0, 1]), np.array([0.2, 0.8])) == pytest.approx(0.5)  # ties: nearest 0.5
